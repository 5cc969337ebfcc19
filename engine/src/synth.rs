//! A synthetic continual-learning suite: seven small TRACE-format tasks mirroring the study's,
//! plus an old-knowledge multiple-choice set, generated from a seed (no downloads).
//!
//! Each task's rule can be read off its prompt (keywords decide a label, a template decides a
//! summary), so a tiny model can learn it; classification prompts stay under about 120 bytes so
//! byte-level models can train on them. The same seed writes byte-identical files.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::data::split::{below, shuffle};
use crate::error::FormatError;
use crate::tiny::SplitMix64;

/// Examples per task and split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteSizes {
    pub train: usize,
    pub eval: usize,
    pub test: usize,
}

/// One task of a written suite; paths are relative to the suite's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteTask {
    pub name: String,
    pub kind: String,
    pub metric: String,
    pub train: String,
    pub eval: String,
    pub test: String,
    pub counts: SuiteSizes,
}

/// The old-knowledge set scored before and after training to measure forgetting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldKnowledge {
    pub name: String,
    pub metric: String,
    pub test: String,
}

/// What `suite.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    pub seed: u64,
    pub tasks: Vec<SuiteTask>,
    pub old_knowledge: OldKnowledge,
}

/// A task: its name, kind, metric and generator.
struct TaskSpec {
    name: &'static str,
    kind: &'static str,
    metric: &'static str,
    generate: fn(&mut SplitMix64) -> Example,
}

/// The tasks in training order.
const TASKS: [TaskSpec; 7] = [
    TaskSpec {
        name: "cstance",
        kind: "classification",
        metric: "exact",
        generate: cstance,
    },
    TaskSpec {
        name: "fomc",
        kind: "classification",
        metric: "exact",
        generate: fomc,
    },
    TaskSpec {
        name: "meetingbank",
        kind: "summarization",
        metric: "rouge_l",
        generate: meetingbank,
    },
    TaskSpec {
        name: "py150",
        kind: "code_completion",
        metric: "edit_sim",
        generate: py150,
    },
    TaskSpec {
        name: "scienceqa",
        kind: "multiple_choice",
        metric: "first_char",
        generate: scienceqa,
    },
    TaskSpec {
        name: "20minuten",
        kind: "simplification",
        metric: "sari",
        generate: minuten,
    },
    TaskSpec {
        name: "metamath",
        kind: "math",
        metric: "final_number",
        generate: metamath,
    },
];

/// Writes the suite into `dir`: `<task>/{train,eval,test}.json` for the seven tasks (in the
/// study's order), `facts/test.json`, and `suite.json` describing them. Examples are distinct
/// within a task (no prompt appears twice across its splits).
pub fn write_suite(dir: &Path, seed: u64, sizes: SuiteSizes) -> Result<Suite, FormatError> {
    let manifest = dir.join("suite.json");
    if sizes.train == 0 || sizes.eval == 0 || sizes.test == 0 {
        return Err(FormatError::dataset(
            &manifest.display().to_string(),
            format!(
                "sizes {}/{}/{} (train/eval/test): every split needs at least one example",
                sizes.train, sizes.eval, sizes.test
            ),
        ));
    }
    let mut tasks = Vec::new();
    for spec in &TASKS {
        let mut rng = SplitMix64::new(task_seed(seed, spec.name));
        let total = sizes.train + sizes.eval + sizes.test;
        let mut examples = unique(&mut rng, spec.generate, total).ok_or_else(|| {
            FormatError::dataset(
                &dir.join(spec.name).display().to_string(),
                format!(
                    "the `{}` templates cannot make {total} distinct examples; ask for fewer",
                    spec.name
                ),
            )
        })?;
        let test = examples.split_off(sizes.train + sizes.eval);
        let eval = examples.split_off(sizes.train);
        let folder = dir.join(spec.name);
        let rel = |split: &str| format!("{}/{split}.json", spec.name);
        for (split, part) in [("train", &examples), ("eval", &eval), ("test", &test)] {
            write_examples(&folder, &format!("{split}.json"), part)?;
        }
        tasks.push(SuiteTask {
            name: spec.name.to_string(),
            kind: spec.kind.to_string(),
            metric: spec.metric.to_string(),
            train: rel("train"),
            eval: rel("eval"),
            test: rel("test"),
            counts: sizes,
        });
    }
    let mut rng = SplitMix64::new(task_seed(seed, "facts"));
    write_examples(&dir.join("facts"), "test.json", &facts(&mut rng))?;
    let suite = Suite {
        seed,
        tasks,
        old_knowledge: OldKnowledge {
            name: "facts".to_string(),
            metric: "mc".to_string(),
            test: "facts/test.json".to_string(),
        },
    };
    let text = serde_json::to_string_pretty(&suite).map_err(|e| io(&manifest, e))?;
    std::fs::write(&manifest, text + "\n").map_err(|e| io(&manifest, e))?;
    Ok(suite)
}

fn io(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

fn write_examples(folder: &Path, name: &str, examples: &[Example]) -> Result<(), FormatError> {
    std::fs::create_dir_all(folder).map_err(|e| io(folder, e))?;
    let path = folder.join(name);
    let text = serde_json::to_string_pretty(examples).map_err(|e| io(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| io(&path, e))
}

/// The seed of one task: the suite seed mixed with the FNV-1a hash of the task's name, so the
/// tasks do not depend on each other.
fn task_seed(seed: u64, name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    SplitMix64::new(seed ^ h).next_u64()
}

/// `n` examples with distinct prompts, or `None` when the templates run dry.
fn unique(
    rng: &mut SplitMix64,
    generate: fn(&mut SplitMix64) -> Example,
    n: usize,
) -> Option<Vec<Example>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    // Misses in a row: a template space close to exhausted still finds its last examples well
    // within this many draws, an exhausted one gives up quickly.
    let mut misses = 0usize;
    while out.len() < n {
        let ex = generate(rng);
        if seen.insert(ex.prompt.clone()) {
            out.push(ex);
            misses = 0;
        } else {
            misses += 1;
            if misses > 20_000 {
                return None;
            }
        }
    }
    Some(out)
}

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[below(rng, items.len())]
}

/// A number in `lo..=hi`.
fn num(rng: &mut SplitMix64, lo: usize, hi: usize) -> usize {
    lo + below(rng, hi - lo + 1)
}

fn plain(prompt: String, answer: String) -> Example {
    Example {
        prompt,
        answer,
        choices: None,
        source: None,
    }
}

const NAMES: [&str; 12] = [
    "Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea",
];

/// Stance toward a target: the verb decides (support/love → A, oppose/hate → B, mention → C).
fn cstance(rng: &mut SplitMix64) -> Example {
    const TARGETS: [&str; 10] = [
        "the new park",
        "school uniforms",
        "the tax plan",
        "bike lanes",
        "remote work",
        "the stadium",
        "nuclear power",
        "the curfew",
        "free transit",
        "the bridge",
    ];
    const FAVOR: [&str; 4] = [
        "I fully support {}.",
        "I love {}.",
        "We should back {}.",
        "{} is a great idea.",
    ];
    const AGAINST: [&str; 4] = [
        "I strongly oppose {}.",
        "I hate {}.",
        "We must stop {}.",
        "{} is a terrible idea.",
    ];
    const NEUTRAL: [&str; 4] = [
        "{} was discussed today.",
        "The report mentions {}.",
        "A vote on {} is next week.",
        "People talk about {}.",
    ];
    let target = pick(rng, &TARGETS);
    let label = below(rng, 3);
    let template = pick(rng, [&FAVOR, &AGAINST, &NEUTRAL][label]);
    let mut sentence = template.replace("{}", target);
    if let Some(first) = sentence.get(..1) {
        sentence = first.to_uppercase() + &sentence[1..];
    }
    let name = pick(rng, &NAMES);
    plain(
        format!(
            "Stance toward {target}? A favor, B against, C neutral.\n{name}: {sentence}\nAnswer:"
        ),
        ["A", "B", "C"][label].to_string(),
    )
}

/// FOMC tone: raise/hike/tighten → hawkish, lower/cut/ease → dovish, hold/keep → neutral.
fn fomc(rng: &mut SplitMix64) -> Example {
    const SUBJECTS: [&str; 8] = [
        "The Committee",
        "Officials",
        "Members",
        "The Chair",
        "Participants",
        "Many members",
        "Most officials",
        "The Board",
    ];
    const VERBS: [[&str; 4]; 3] = [
        [
            "plan to raise rates",
            "support a rate hike",
            "favor tighter policy",
            "want to tighten policy",
        ],
        [
            "plan to lower rates",
            "support a rate cut",
            "favor easier policy",
            "want to ease policy",
        ],
        [
            "plan to hold rates",
            "support steady rates",
            "favor no change",
            "want to keep policy as is",
        ],
    ];
    const TAILS: [&str; 10] = [
        "this year",
        "soon",
        "in March",
        "given the data",
        "for now",
        "at the next meeting",
        "in June",
        "this fall",
        "over time",
        "in the near term",
    ];
    let label = below(rng, 3);
    let sentence = format!(
        "{} {} {}.",
        pick(rng, &SUBJECTS),
        pick(rng, &VERBS[label]),
        pick(rng, &TAILS)
    );
    plain(
        format!("Is this FOMC sentence hawkish, dovish or neutral?\n{sentence}\nAnswer:"),
        ["hawkish", "dovish", "neutral"][label].to_string(),
    )
}

/// A templated council meeting; the summary restates the motion and the vote.
fn meetingbank(rng: &mut SplitMix64) -> Example {
    const ACTIONS: [&str; 6] = ["approve", "reject", "delay", "fund", "amend", "repeal"];
    const ITEMS: [&str; 8] = [
        "park budget",
        "bus contract",
        "zoning plan",
        "library hours",
        "water rates",
        "street repairs",
        "housing bill",
        "police budget",
    ];
    const FILLERS: [&str; 4] = [
        "I have a question about the {}.",
        "The public asked about the {}.",
        "Staff reviewed the {}.",
        "Thank you. Any comments on the {}?",
    ];
    let (mover, other) = (pick(rng, &NAMES), pick(rng, &NAMES));
    let (action, item) = (pick(rng, &ACTIONS), pick(rng, &ITEMS));
    let yes = num(rng, 3, 9);
    let no = num(rng, 0, yes - 1);
    let mut transcript = format!("{mover}: I move to {action} the {item}.\n");
    if below(rng, 2) == 1 {
        let filler = pick(rng, &FILLERS).replace("{}", item);
        transcript.push_str(&format!("{other}: {filler}\n"));
    }
    transcript.push_str(&format!("Clerk: The motion passed {yes} to {no}.\n"));
    plain(
        format!("Summarize the meeting.\n{transcript}Summary:"),
        format!("The council voted {yes} to {no} to {action} the {item}."),
    )
}

/// Python next-line completion with py150's literal placeholders.
fn py150(rng: &mut SplitMix64) -> Example {
    const VARS: [&str; 8] = [
        "data", "items", "values", "result", "rows", "names", "keys", "parts",
    ];
    const LOOP: [&str; 5] = ["x", "item", "v", "row", "n"];
    const ATTRS: [&str; 8] = [
        "name", "size", "path", "value", "count", "user", "mode", "limit",
    ];
    const MODULES: [&str; 4] = ["os", "json", "re", "sys"];
    const CLASSES: [&str; 6] = ["Parser", "Client", "Model", "Cache", "Reader", "Writer"];
    let (v, a) = (pick(rng, &VARS), pick(rng, &ATTRS));
    let k = num(rng, 0, 9);
    let (prompt, answer) = match below(rng, 5) {
        0 => {
            let i = pick(rng, &LOOP);
            (
                format!("{v} = [<NUM_LIT>, <NUM_LIT:{k}>]\nfor {i} in {v}:\n"),
                format!("    print({i})"),
            )
        }
        1 => (
            format!(
                "class {}(object):\n    def get_{a}(self):\n",
                pick(rng, &CLASSES)
            ),
            format!("        return self.{a}"),
        ),
        2 => (
            format!("{v} = {{}}\n{v}[<STR_LIT>] = <NUM_LIT:{k}>\n"),
            format!("return {v}"),
        ),
        3 => {
            let m = pick(rng, &MODULES);
            (
                format!("import {m}\n{v} = {m}.load(<STR_LIT>, <NUM_LIT:{k}>)\nif {v} is None:\n"),
                "    raise ValueError(<STR_LIT>)".to_string(),
            )
        }
        _ => (
            format!(
                "class {}(object):\n    def __init__(self, {a}):\n",
                pick(rng, &CLASSES)
            ),
            format!("        self.{a} = {a}"),
        ),
    };
    plain(prompt, answer)
}

/// Which option belongs to a category; the answer is its letter.
fn scienceqa(rng: &mut SplitMix64) -> Example {
    const CATEGORIES: [(&str, [&str; 5]); 8] = [
        ("mammal", ["dog", "whale", "horse", "bat", "cow"]),
        ("bird", ["eagle", "sparrow", "penguin", "owl", "duck"]),
        ("fish", ["shark", "salmon", "trout", "tuna", "cod"]),
        (
            "reptile",
            ["snake", "lizard", "turtle", "crocodile", "gecko"],
        ),
        ("insect", ["ant", "bee", "beetle", "fly", "moth"]),
        ("metal", ["iron", "copper", "gold", "silver", "zinc"]),
        ("gas", ["oxygen", "helium", "nitrogen", "neon", "argon"]),
        ("planet", ["Mars", "Venus", "Jupiter", "Saturn", "Mercury"]),
    ];
    let cat = below(rng, CATEGORIES.len());
    let (name, members) = CATEGORIES[cat];
    let mut options = vec![pick(rng, &members)];
    let mut used = vec![cat];
    while options.len() < 4 {
        let other = below(rng, CATEGORIES.len());
        if !used.contains(&other) {
            used.push(other);
            options.push(pick(rng, &CATEGORIES[other].1));
        }
    }
    let right = below(rng, 4);
    options.swap(0, right);
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    plain(
        format!(
            "Question: Which of these is {article} {name}?\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
            options[0], options[1], options[2], options[3]
        ),
        ["A", "B", "C", "D"][right].to_string(),
    )
}

/// Sentence simplification: fixed complex phrases become plain ones; `source` is the complex
/// sentence.
fn minuten(rng: &mut SplitMix64) -> Example {
    const SUBJECTS: [(&str, &str); 6] = [
        ("Numerous residents", "Many people"),
        ("The municipal authorities", "The city"),
        ("Approximately forty workers", "About forty workers"),
        ("The local council", "The council"),
        ("The majority of pupils", "Most pupils"),
        ("Several enterprises", "Some firms"),
    ];
    const VERBS: [(&str, &str); 6] = [
        ("purchase", "buy"),
        ("construct", "build"),
        ("utilize", "use"),
        ("require", "need"),
        ("terminate", "end"),
        ("commence work on", "start work on"),
    ];
    const OBJECTS: [&str; 8] = [
        "a new school",
        "the old bridge",
        "more buses",
        "the city park",
        "a bike path",
        "the town hall",
        "a water tank",
        "the sports hall",
    ];
    const WHEN: [(&str, &str); 5] = [
        ("in the forthcoming weeks", "in the next weeks"),
        ("at the present time", "now"),
        ("on a daily basis", "every day"),
        ("prior to the summer", "before summer"),
        ("subsequent to the vote", "after the vote"),
    ];
    let (s, v, o, w) = (
        pick(rng, &SUBJECTS),
        pick(rng, &VERBS),
        pick(rng, &OBJECTS),
        pick(rng, &WHEN),
    );
    let complex = format!("{} will {} {o} {}.", s.0, v.0, w.0);
    let simple = format!("{} will {} {o} {}.", s.1, v.1, w.1);
    Example {
        prompt: format!("Simplify: {complex}\nSimple:"),
        answer: simple,
        choices: None,
        source: Some(complex),
    }
}

/// One-step arithmetic word problems; the answer shows the step and ends "The answer is N".
fn metamath(rng: &mut SplitMix64) -> Example {
    const THINGS: [&str; 8] = [
        "apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles",
    ];
    let name = pick(rng, &NAMES);
    let thing = pick(rng, &THINGS);
    let (question, step, result) = match below(rng, 3) {
        0 => {
            let (a, b) = (num(rng, 2, 30), num(rng, 2, 30));
            (
                format!("{name} has {a} {thing} and gets {b} more."),
                format!("{a} + {b} = {}", a + b),
                a + b,
            )
        }
        1 => {
            let a = num(rng, 5, 40);
            let b = num(rng, 1, a - 1);
            (
                format!("{name} has {a} {thing} and gives away {b}."),
                format!("{a} - {b} = {}", a - b),
                a - b,
            )
        }
        _ => {
            let (a, b) = (num(rng, 2, 9), num(rng, 2, 9));
            (
                format!("{name} has {a} boxes with {b} {thing} each."),
                format!("{a} * {b} = {}", a * b),
                a * b,
            )
        }
    };
    plain(
        format!("{question} How many {thing} does {name} have now?\nAnswer:"),
        format!("{step}. The answer is {result}"),
    )
}

/// General facts a pretrained small model knows, as multiple choice: (prompt, answer, three
/// wrong choices). Choices carry a leading space, as a continuation of the prompt.
const FACTS: [(&str, &str, [&str; 3]); 46] = [
    (
        "The capital of France is",
        "Paris",
        ["Berlin", "Madrid", "Rome"],
    ),
    (
        "The capital of Germany is",
        "Berlin",
        ["Paris", "Vienna", "Warsaw"],
    ),
    (
        "The capital of Italy is",
        "Rome",
        ["Milan", "Athens", "Madrid"],
    ),
    (
        "The capital of Spain is",
        "Madrid",
        ["Lisbon", "Rome", "Paris"],
    ),
    (
        "The capital of Japan is",
        "Tokyo",
        ["Beijing", "Seoul", "Osaka"],
    ),
    (
        "The capital of Russia is",
        "Moscow",
        ["Kyiv", "Warsaw", "Berlin"],
    ),
    (
        "The capital of China is",
        "Beijing",
        ["Tokyo", "Shanghai", "Seoul"],
    ),
    (
        "The capital of the United Kingdom is",
        "London",
        ["Dublin", "Paris", "Edinburgh"],
    ),
    (
        "The capital of Egypt is",
        "Cairo",
        ["Nairobi", "Tunis", "Rabat"],
    ),
    (
        "The capital of Greece is",
        "Athens",
        ["Rome", "Sofia", "Ankara"],
    ),
    (
        "The capital of Portugal is",
        "Lisbon",
        ["Madrid", "Porto", "Rome"],
    ),
    (
        "The capital of Canada is",
        "Ottawa",
        ["Toronto", "Vancouver", "Montreal"],
    ),
    (
        "The capital of Austria is",
        "Vienna",
        ["Berlin", "Prague", "Zurich"],
    ),
    (
        "The capital of Ireland is",
        "Dublin",
        ["London", "Cork", "Belfast"],
    ),
    (
        "The capital of Norway is",
        "Oslo",
        ["Stockholm", "Bergen", "Helsinki"],
    ),
    (
        "The capital of Sweden is",
        "Stockholm",
        ["Oslo", "Copenhagen", "Helsinki"],
    ),
    (
        "The capital of Poland is",
        "Warsaw",
        ["Krakow", "Prague", "Berlin"],
    ),
    (
        "The capital of Belgium is",
        "Brussels",
        ["Amsterdam", "Paris", "Antwerp"],
    ),
    (
        "The capital of Kenya is",
        "Nairobi",
        ["Cairo", "Lagos", "Mombasa"],
    ),
    (
        "The capital of Australia is",
        "Canberra",
        ["Sydney", "Melbourne", "Perth"],
    ),
    (
        "The day after Monday is",
        "Tuesday",
        ["Friday", "Sunday", "Thursday"],
    ),
    (
        "The day after Tuesday is",
        "Wednesday",
        ["Monday", "Saturday", "Friday"],
    ),
    (
        "The day after Wednesday is",
        "Thursday",
        ["Tuesday", "Sunday", "Monday"],
    ),
    (
        "The day after Thursday is",
        "Friday",
        ["Wednesday", "Monday", "Tuesday"],
    ),
    (
        "The day after Friday is",
        "Saturday",
        ["Thursday", "Tuesday", "Monday"],
    ),
    (
        "The day after Saturday is",
        "Sunday",
        ["Friday", "Wednesday", "Tuesday"],
    ),
    (
        "The day after Sunday is",
        "Monday",
        ["Saturday", "Thursday", "Friday"],
    ),
    (
        "The month after January is",
        "February",
        ["March", "June", "December"],
    ),
    (
        "The month after March is",
        "April",
        ["February", "July", "October"],
    ),
    (
        "The month after June is",
        "July",
        ["May", "September", "January"],
    ),
    (
        "The month after November is",
        "December",
        ["October", "March", "August"],
    ),
    (
        "Water is made of hydrogen and",
        "oxygen",
        ["helium", "carbon", "iron"],
    ),
    (
        "The largest planet in the solar system is",
        "Jupiter",
        ["Mars", "Venus", "Mercury"],
    ),
    (
        "The planet closest to the Sun is",
        "Mercury",
        ["Jupiter", "Saturn", "Neptune"],
    ),
    ("The Earth orbits the", "Sun", ["Moon", "Mars", "Jupiter"]),
    (
        "Plants make food from sunlight by",
        "photosynthesis",
        ["digestion", "erosion", "evaporation"],
    ),
    ("The chemical symbol for gold is", "Au", ["Ag", "Fe", "Go"]),
    ("The chemical symbol for iron is", "Fe", ["Ir", "Au", "In"]),
    (
        "Water freezes at a temperature in degrees Celsius of",
        "0",
        ["100", "50", "37"],
    ),
    (
        "Water boils at sea level at a temperature in degrees Celsius of",
        "100",
        ["0", "50", "212"],
    ),
    (
        "A triangle has a number of sides equal to",
        "three",
        ["four", "five", "six"],
    ),
    (
        "A week has a number of days equal to",
        "seven",
        ["five", "ten", "twelve"],
    ),
    (
        "The gas that humans need to breathe is",
        "oxygen",
        ["helium", "neon", "argon"],
    ),
    ("Ice is the solid form of", "water", ["air", "salt", "sand"]),
    ("The opposite of hot is", "cold", ["warm", "big", "fast"]),
    ("Two plus two equals", "four", ["three", "five", "six"]),
];

/// The facts set, choices in a seeded order.
fn facts(rng: &mut SplitMix64) -> Vec<Example> {
    FACTS
        .iter()
        .map(|(prompt, answer, wrong)| {
            let mut choices: Vec<String> = std::iter::once(answer)
                .chain(wrong.iter())
                .map(|c| format!(" {c}"))
                .collect();
            shuffle(&mut choices, rng);
            Example {
                prompt: (*prompt).to_string(),
                answer: format!(" {answer}"),
                choices: Some(choices),
                source: None,
            }
        })
        .collect()
}
