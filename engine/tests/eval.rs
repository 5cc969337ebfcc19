//! Evaluation metrics against the reference Python packages, multiple-choice log-likelihoods and
//! batched left-padded generation against one-row runs of the tiny Llama, the runner, the result
//! importers, and BWT/FWT/gain against the study's published tables.
//!
//! Expected metric values were computed once with the reference packages and pasted here
//! (Python 3.11.7):
//!
//! ```text
//! python3 -m venv /tmp/metrics-venv
//! /tmp/metrics-venv/bin/pip install rouge-score fuzzywuzzy python-Levenshtein sacrebleu \
//!     sacremoses packaging
//! # rouge-score 0.1.2, fuzzywuzzy 0.18.0, python-Levenshtein 0.27.5, sacrebleu 2.6.0
//! from rouge_score import rouge_scorer
//! rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
//! from fuzzywuzzy import fuzz
//! fuzz.ratio(postprocess(prediction), postprocess(reference))  # TRACE evaluations/eval_Py150.py
//! # SARI: `pip install easse` finds no distribution, and evaluate.load("sari") needs the HF hub.
//! # SARIngram, SARIsent and normalize were copied verbatim from huggingface/evaluate
//! # metrics/sari/sari.py (the metric TRACE's caculate_sari loads) into /tmp/ref/sari_hf.py
//! # and run with sacrebleu 2.6.0; the copy reproduces the docstring's example, 26.953601953601954.
//! sari_hf.compute([source], [prediction], [references])["sari"] / 100
//! sari_hf.normalize(text)  # lowercase + sacrebleu's 13a tokenizer
//! ```
//!
//! `exact`, `first_char` and `final_number` follow clreg's own definitions (no package
//! implements them); their expected values are worked out by hand from those definitions.
// 0.3927 in Table 3 is a score, not an approximation of π/8.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::approx_constant)]

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, IndexOp, Tensor};
use clreg_engine::bwt::{BwtError, ScoreMatrix, transfer};
use clreg_engine::data::Example;
use clreg_engine::eval::{
    self, EvalOptions, Metric, edit_sim, exact, final_number, first_char, import_harness,
    import_trace, rouge_l, sari, score_choices,
};
use clreg_engine::model::{self, GenerateOptions, Llama, OpsMode};
use clreg_engine::tiny::{TinyConfig, tiny_word, write_tiny_llama, write_tiny_tokenizer};

const CPU: Device = Device::Cpu;

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (tolerance {tol})"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn rouge_l_matches_rouge_score() {
    // (prediction, reference, rouge-score 0.1.2 rougeL fmeasure)
    let cases: [(&str, &str, f64); 9] = [
        (
            "the cat sat on the mat",
            "the cat was on the mat",
            0.8333333333333334,
        ),
        ("", "a reference summary", 0.0),
        ("Identical text here.", "Identical text here.", 1.0),
        // Non-ASCII letters become spaces: "caf", "cr", "me", "br", "l", "e" …
        (
            "Café crème brûlée is sweet",
            "cafe creme brulee is sweet",
            0.3076923076923077,
        ),
        (
            "The council approved the budget of $5,000 for 2024.",
            "Council approves 2024 budget: 5000 dollars",
            0.25,
        ),
        ("police police police", "police officers", 0.4),
        // No ASCII alphanumerics at all: no tokens, score 0.
        ("日本語のテキスト", "日本語", 0.0),
        ("A B C D E F", "F E D C B A", 0.16666666666666666),
        (
            "Motion passed 7-2; staff will report back in March.",
            "The motion passed seven to two and staff will report in march",
            0.6363636363636365,
        ),
    ];
    for (p, r, want) in cases {
        close(
            rouge_l(p, r),
            want,
            1e-12,
            &format!("rouge_l({p:?}, {r:?})"),
        );
    }
}

#[test]
fn edit_sim_matches_fuzzywuzzy_ratio() {
    // (prediction, reference, fuzz.ratio after TRACE's postprocess; fuzzywuzzy 0.18.0 with
    // python-Levenshtein 0.27.5)
    let cases: [(&str, &str, u32); 11] = [
        ("kitten", "sitting", 62),
        ("", "abc", 0),
        ("", "", 100),
        ("def foo(x):\n    return x", "def foo(y):\n    return y", 92),
        ("x = <NUM_LIT>", "x = 0", 100),
        ("print(<STR_LIT:hello>)", "print(hello)", 100),
        ("return <STR_LIT>", "return ''", 88),
        ("naïve café", "naive cafe", 80),
        // 100 · (1 − 6/16) = 62.5 exactly: Python's round() goes to the even 62, not 63.
        ("abcdefgh", "abcdexyz", 62),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbb",
            92,
        ),
        (
            "self . assertEqual ( <NUM_LIT:3> , len ( x ) )",
            "self . assertEqual ( <NUM_LIT:4> , len ( y ) )",
            94,
        ),
    ];
    for (p, r, want) in cases {
        close(
            edit_sim(p, r),
            f64::from(want) / 100.0,
            1e-12,
            &format!("edit_sim({p:?}, {r:?})"),
        );
    }
}

#[test]
fn sari_matches_hf_evaluate_sari() {
    // (source, prediction, references, evaluate's sari / 100)
    let cases: [(&str, &str, &[&str], f64); 8] = [
        (
            "About 95 species are currently accepted .",
            "About 95 you now get in .",
            &[
                "About 95 species are currently known .",
                "About 95 species are now accepted .",
                "95 species are now accepted .",
            ],
            0.2695360195360195,
        ),
        (
            "The cat perched upon the mat, purring contentedly.",
            "The cat sat on the mat.",
            &["The cat sat on the mat."],
            1.0,
        ),
        (
            "The cat perched upon the mat, purring contentedly.",
            "",
            &["The cat sat on the mat."],
            0.4444444444444445,
        ),
        (
            "The cat perched upon the mat, purring contentedly.",
            "The cat perched upon the mat, purring contentedly.",
            &["The cat sat on the mat."],
            0.4149184149184149,
        ),
        (
            "Die Bundesräte haben am Mittwoch beschlossen, die Maßnahmen zu verlängern.",
            "Der Bundesrat verlängert die Maßnahmen.",
            &["Der Bundesrat hat die Maßnahmen verlängert."],
            0.7473544973544973,
        ),
        (
            "Prices rose 3.5% in 2020-2021 &amp; fell.",
            "Prices rose 3.5% &amp; fell, again.",
            &["Prices rose by 3.5%, then fell."],
            0.4773199023199024,
        ),
        (
            "ÜBER 1,000 Menschen kamen (laut Polizei).",
            "Über 1000 Menschen kamen.",
            &[
                "Mehr als 1000 Menschen kamen.",
                "Über tausend Menschen kamen laut Polizei.",
            ],
            0.7226077299606711,
        ),
        ("a b c d e", "a b c d e", &["a b c d e"], 1.0),
    ];
    for (s, p, r, want) in cases {
        close(sari(s, p, r), want, 1e-12, &format!("sari({s:?}, {p:?})"));
    }
}

#[test]
fn tokenize_13a_matches_sacrebleu() {
    // sari_hf.normalize (lowercase + sacrebleu 2.6.0 Tokenizer13a)
    let cases = [
        (
            "Prices rose 3.5% in 2020-2021 &amp; fell.",
            "prices rose 3.5 % in 2020 - 2021 & fell .",
        ),
        (
            "ÜBER 1,000 Menschen kamen (laut Polizei).",
            "über 1,000 menschen kamen ( laut polizei ) .",
        ),
        (
            "e.g. x,y 1.5,2 a-b 3-4 {x}[y]`z` <skipped>q",
            "e . g . x , y 1.5,2 a-b 3 - 4 { x } [ y ] ` z ` q",
        ),
        (
            "line-\nbreak\nnext\u{1c}sep\u{a0}nb",
            "linebreak next sep nb",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(eval::sari::normalize(text), want, "{text:?}");
    }
}

#[test]
fn exact_and_first_char_by_their_definitions() {
    let exact_cases = [
        ("positive", "positive", 1.0),
        ("  positive\n", "positive", 1.0),
        ("Positive", "positive", 0.0), // case counts
        ("positive.", "positive", 0.0),
        ("", "positive", 0.0),
        ("", "", 0.0), // empty pairs score 0, as TRACE's caculate_accuracy
        ("naïve", "naïve", 1.0),
    ];
    for (p, a, want) in exact_cases {
        assert_eq!(exact(p, a), want, "exact({p:?}, {a:?})");
    }
    let first_cases = [
        ("A", "A", 1.0),
        ("  B because of …", "B", 1.0),
        ("b", "B", 0.0),
        ("", "A", 0.0),
        ("A", "", 0.0),
        ("Ü-Bahn", "Über", 1.0),
        ("C", "D", 0.0),
    ];
    for (p, a, want) in first_cases {
        assert_eq!(first_char(p, a), want, "first_char({p:?}, {a:?})");
    }
}

#[test]
fn final_number_by_its_definition() {
    let cases = [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", 1.0),
        (
            "She has 1,234 apples. The answer is: 1234",
            "#### 1234",
            1.0,
        ),
        ("The answer is 18. It took 3 steps.", "18", 1.0),
        ("so 5 + 13 = 18", "18.00", 1.0),
        ("The temperature fell to -3 degrees", "-3", 1.0),
        ("x-3", "-3", 0.0), // a minus glued to a word is not a sign
        ("no number here", "5", 0.0),
        ("", "5", 0.0),
        ("The answer is 17", "18", 0.0),
        ("costs $0.5 in total", "0.50", 1.0),
    ];
    for (p, a, want) in cases {
        assert_eq!(final_number(p, a), want, "final_number({p:?}, {a:?})");
    }
}

#[test]
fn metric_names_parse_and_serialise() {
    let names = [
        "exact",
        "first_char",
        "rouge_l",
        "edit_sim",
        "sari",
        "final_number",
        "mc",
    ];
    for (m, name) in Metric::ALL.iter().zip(names) {
        assert_eq!(name.parse::<Metric>().unwrap(), *m);
        assert_eq!(serde_json::to_string(m).unwrap(), format!("\"{name}\""));
        assert_eq!(m.to_string(), name);
    }
    let err = "rouge-l".parse::<Metric>().unwrap_err();
    assert_eq!(err.code(), "unknown_metric");
    assert!(err.to_string().contains("rouge_l, edit_sim"), "{err}");
    // `score` dispatches on the metric; SARI reads the source.
    let s = "The cat perched upon the mat, purring contentedly.";
    assert_eq!(
        eval::score(
            Metric::Sari,
            "The cat sat on the mat.",
            "The cat sat on the mat.",
            s
        ),
        1.0
    );
    assert_eq!(eval::score(Metric::FirstChar, "A)", "A", ""), 1.0);
    assert_eq!(eval::score(Metric::EditSim, "kitten", "sitting", ""), 0.62);
}

// ---------------------------------------------------------------------------------------------
// Tiny model: left-padded forward, batched generation, multiple choice, the runner
// ---------------------------------------------------------------------------------------------

fn tiny(dir: &Path, seed: u64) -> (Llama, tokenizers::Tokenizer) {
    let t = TinyConfig::default();
    write_tiny_llama(dir, &t, seed, None).unwrap();
    write_tiny_tokenizer(dir, &t).unwrap();
    let (model, _) = model::load(dir, &CPU, DType::F32).unwrap();
    let tok = model::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
    (model, tok)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Rows of different lengths, left-padded with `pad_id` to the longest.
fn padded(rows: &[Vec<u32>], pad_id: u32) -> (Tensor, Vec<usize>) {
    let width = rows.iter().map(Vec::len).max().unwrap();
    let pads: Vec<usize> = rows.iter().map(|r| width - r.len()).collect();
    let ids: Vec<u32> = rows
        .iter()
        .zip(&pads)
        .flat_map(|(r, p)| std::iter::repeat_n(pad_id, *p).chain(r.iter().copied()))
        .collect();
    (
        Tensor::from_vec(ids, (rows.len(), width), &CPU).unwrap(),
        pads,
    )
}

#[test]
fn forward_padded_rows_equal_unpadded_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = tiny(tmp.path(), 7);
    let rows: Vec<Vec<u32>> = vec![
        vec![10, 20, 30, 40, 50],
        vec![60, 70],
        vec![3, 5, 7, 11, 13, 17, 19],
    ];
    for mode in [OpsMode::Differentiable, OpsMode::Fast] {
        // Without the cache: every real position of every row.
        let (ids, pads) = padded(&rows, 9);
        let logits = model.forward_padded(&ids, 0, None, &pads, mode).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let alone = model
                .forward_with(
                    &Tensor::new(row.as_slice(), &CPU)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    0,
                    None,
                    mode,
                )
                .unwrap()
                .i(0)
                .unwrap();
            let got = logits.i((i, pads[i]..)).unwrap();
            let d = max_diff(&got, &alone);
            assert!(d <= 1e-5, "{mode:?} row {i}: max |Δ| {d}");
        }

        // With the cache: prefill, then four decoding steps with the same tokens per row.
        let steps: [[u32; 3]; 4] = [[21, 22, 23], [31, 32, 33], [41, 42, 43], [51, 52, 53]];
        let mut cache = model.new_cache();
        let mut batch_last = vec![
            Llama::last_logits(
                &model
                    .forward_padded(&ids, 0, Some(&mut cache), &pads, mode)
                    .unwrap(),
            )
            .unwrap(),
        ];
        for (offset, step) in (ids.dim(1).unwrap()..).zip(&steps) {
            let input = Tensor::new(step.as_slice(), &CPU)
                .unwrap()
                .unsqueeze(1)
                .unwrap();
            let l = model
                .forward_padded(&input, offset, Some(&mut cache), &pads, mode)
                .unwrap();
            batch_last.push(Llama::last_logits(&l).unwrap());
        }
        for (i, row) in rows.iter().enumerate() {
            let mut c = model.new_cache();
            let first = model
                .forward_with(
                    &Tensor::new(row.as_slice(), &CPU)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    0,
                    Some(&mut c),
                    mode,
                )
                .unwrap();
            let mut alone = vec![Llama::last_logits(&first).unwrap()];
            for (off, step) in (row.len()..).zip(&steps) {
                let input = Tensor::new(&[step[i]], &CPU).unwrap().unsqueeze(0).unwrap();
                let l = model.forward_with(&input, off, Some(&mut c), mode).unwrap();
                alone.push(Llama::last_logits(&l).unwrap());
            }
            for (s, (b, a)) in batch_last.iter().zip(&alone).enumerate() {
                let d = max_diff(&b.i(i).unwrap(), &a.i(0).unwrap());
                assert!(d <= 1e-5, "{mode:?} row {i} step {s}: max |Δ| {d}");
            }
        }
    }
}

#[test]
fn forward_padded_stays_finite_for_all_padding_and_checks_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = tiny(tmp.path(), 8);
    // Row 1 is nothing but padding: its queries see only masked keys.
    let ids = Tensor::new(&[[10u32, 20, 30, 40], [0, 0, 0, 0]], &CPU).unwrap();
    for mode in [OpsMode::Differentiable, OpsMode::Fast] {
        let logits = model.forward_padded(&ids, 0, None, &[0, 4], mode).unwrap();
        let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{mode:?}: non-finite logits"
        );
        // Padding must change nothing for row 0, which has none.
        let alone = model
            .forward_with(&ids.i(0..1).unwrap(), 0, None, mode)
            .unwrap();
        assert!(max_diff(&logits.i(0..1).unwrap(), &alone) <= 1e-5);
    }
    let err = model
        .forward_padded(&ids, 0, None, &[0], OpsMode::Fast)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_option");
    let err = model
        .forward_padded(&ids, 0, None, &[0, 5], OpsMode::Fast)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_option");
}

fn greedy(max_new_tokens: usize, eos: &[u32]) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        eos_token_ids: Some(eos.to_vec()),
        ..GenerateOptions::default()
    }
}

#[test]
fn batched_greedy_generation_equals_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = tiny(tmp.path(), 41);
    let prompts: Vec<Vec<u32>> = vec![
        vec![10, 20, 30],
        vec![99],
        vec![5, 6, 7, 8, 9, 10],
        vec![200, 100, 50, 25],
    ];
    let never = AtomicBool::new(false);
    let one_by_one = |eos: &[u32]| -> Vec<Vec<u32>> {
        prompts
            .iter()
            .map(|p| model::generate_ids(&model, p, &greedy(8, eos)).unwrap())
            .collect()
    };
    let free = one_by_one(&[]);
    assert!(free.iter().all(|o| o.len() == 8));
    let got = eval::run::generate_batch(&model, &prompts, &[], 8, &never).unwrap();
    assert_eq!(got, free);

    // A stop token that row 0 produces first: row 0 stops after it, the others as alone.
    let eos = [free[0][0], free[2][3]];
    let want = one_by_one(&eos);
    assert_eq!(want[0], [free[0][0]]);
    let got = eval::run::generate_batch(&model, &prompts, &eos, 8, &never).unwrap();
    assert_eq!(got, want);

    let err = eval::run::generate_batch(&model, &[vec![]], &[], 4, &never).unwrap_err();
    assert_eq!(err.code(), "invalid_option");
    let stop = AtomicBool::new(true);
    let err = eval::run::generate_batch(&model, &prompts, &[], 4, &stop).unwrap_err();
    assert_eq!(err.code(), "cancelled");
}

/// Σ log p(choice | prompt) from one unpadded full forward per choice, log-softmax in f64.
fn reference_loglikelihood(model: &Llama, context: &[u32], cont: &[u32]) -> f64 {
    let seq: Vec<u32> = context.iter().chain(cont).copied().collect();
    let logits = model
        .forward_with(
            &Tensor::new(seq.as_slice(), &CPU)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            0,
            None,
            OpsMode::Differentiable,
        )
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    (context.len()..seq.len())
        .map(|t| {
            let row: Vec<f64> = logits[t - 1].iter().map(|v| f64::from(*v)).collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            row[seq[t] as usize] - lse
        })
        .sum()
}

fn first_argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

#[test]
fn multiple_choice_loglikelihoods_match_one_row_forwards() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(tmp.path(), 5);
    let prompt = "w10 w11 w12 w13";
    let context = [10u32, 11, 12, 13];
    let choices: Vec<String> = ["w5", "w100 w101 w102", "w40 w41", "w7 w8 w9 w10 w11"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got = score_choices(&model, &tok, prompt, &choices).unwrap();
    let want: Vec<f64> = choices
        .iter()
        .map(|c| {
            let ids: Vec<u32> = tok.encode(c.as_str(), false).unwrap().get_ids().to_vec();
            reference_loglikelihood(&model, &context, &ids)
        })
        .collect();
    for (g, w) in got.loglikelihoods.iter().zip(&want) {
        close(*g, *w, 1e-4, "log-likelihood");
    }
    assert_eq!(got.chars, [2, 14, 7, 16]);
    assert_eq!(got.acc_pick, first_argmax(&want));
    let normed: Vec<f64> = want
        .iter()
        .zip(&got.chars)
        .map(|(l, n)| l / *n as f64)
        .collect();
    assert_eq!(got.acc_norm_pick, first_argmax(&normed));
    // Near-uniform tiny logits: ~−ln 256 per token, so raw likelihood favours the one-token
    // choice and the per-character one a long choice.
    assert_eq!(got.acc_pick, 0);
    assert_ne!(got.acc_norm_pick, 0);

    // acc_norm divides by characters, not bytes: both choices are one <unk> token (equal
    // log-likelihoods); per character "abcdefg" (7) beats "ééééé" (5), per byte it would not (10).
    let uni: Vec<String> = vec!["ééééé".into(), "abcdefg".into()];
    let got = score_choices(&model, &tok, prompt, &uni).unwrap();
    assert_eq!(got.chars, [5, 7]);
    close(
        got.loglikelihoods[0],
        got.loglikelihoods[1],
        1e-5,
        "same token",
    );
    assert_eq!(got.acc_norm_pick, 1);

    let err = score_choices(&model, &tok, prompt, &["   ".to_string()]).unwrap_err();
    assert_eq!(err.code(), "invalid_option");
    let err = score_choices(&model, &tok, "", &choices).unwrap_err();
    assert_eq!(err.code(), "invalid_option");
}

fn example(prompt: &str, answer: &str) -> Example {
    Example {
        prompt: prompt.to_string(),
        answer: answer.to_string(),
        choices: None,
        source: None,
    }
}

#[test]
fn evaluate_task_generates_in_batches_and_scores_like_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(tmp.path(), 11);
    let examples = vec![
        example("w10 w20 w30", "w5 w6 w7"),
        example("w99", "w12"),
        example("w5 w6 w7 w8 w9 w10", "w40 w41 w42 w43"),
        example("w200 w100", "w7"),
        example("w3 w4 w5 w6", "w100 w100"),
    ];
    let eos = [2u32];
    let opts = EvalOptions {
        batch_size: 2,
        max_new_tokens: 5,
        report_examples: 3,
        limit: None,
    };
    // One by one with the model's own generate_ids, decoded without the stop token.
    let mut want_scores = Vec::new();
    let mut want_texts = Vec::new();
    let mut want_tokens = 0;
    for ex in &examples {
        let ids = tok
            .encode(ex.prompt.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        let out = model::generate_ids(&model, &ids, &greedy(5, &eos)).unwrap();
        want_tokens += out.len();
        let kept: Vec<u32> = out.iter().copied().filter(|t| *t != 2).collect();
        let text: Vec<String> = kept.iter().map(|t| tiny_word(*t as usize)).collect();
        let text = text.join(" ");
        want_scores.push(edit_sim(&text, &ex.answer));
        want_texts.push(text);
    }
    let mut calls = Vec::new();
    let never = AtomicBool::new(false);
    let report = eval::evaluate_task(
        &model,
        &tok,
        "toy",
        &examples,
        Metric::EditSim,
        &eos,
        &opts,
        &mut |d, t| calls.push((d, t)),
        &never,
    )
    .unwrap();
    assert_eq!(calls, [(2, 5), (4, 5), (5, 5)]);
    assert_eq!(report.n, 5);
    assert_eq!(report.task, "toy");
    assert_eq!(report.metric, Metric::EditSim);
    close(
        report.score,
        want_scores.iter().sum::<f64>() / 5.0,
        1e-12,
        "mean edit similarity",
    );
    assert_eq!(report.generated_tokens, want_tokens);
    assert_eq!(report.examples.len(), 3);
    for (i, ex) in report.examples.iter().enumerate() {
        assert_eq!(ex.prediction, want_texts[i]);
        assert_eq!(ex.prompt, examples[i].prompt);
        assert_eq!(ex.answer, examples[i].answer);
        assert_eq!(ex.score, want_scores[i]);
    }
    assert_eq!((report.acc, report.acc_norm), (None, None));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["metric"], "edit_sim");

    // limit, and an exact match by construction: the answer is what the model says.
    let mut first = examples[..2].to_vec();
    first[1].answer = want_texts[1].clone();
    let limited = EvalOptions {
        limit: Some(2),
        ..opts.clone()
    };
    let report = eval::evaluate_task(
        &model,
        &tok,
        "toy",
        &first,
        Metric::Exact,
        &eos,
        &limited,
        &mut |_, _| {},
        &never,
    )
    .unwrap();
    assert_eq!(report.n, 2);
    close(
        report.score,
        (exact(&want_texts[0], &first[0].answer) + 1.0) / 2.0,
        1e-12,
        "exact",
    );

    let stop = AtomicBool::new(true);
    let err = eval::evaluate_task(
        &model,
        &tok,
        "toy",
        &examples,
        Metric::Exact,
        &eos,
        &opts,
        &mut |_, _| {},
        &stop,
    )
    .unwrap_err();
    assert_eq!(err.code(), "cancelled");
    let err = eval::evaluate_task(
        &model,
        &tok,
        "toy",
        &[],
        Metric::Exact,
        &eos,
        &opts,
        &mut |_, _| {},
        &never,
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_option");
}

#[test]
fn evaluate_task_multiple_choice_reports_acc_and_acc_norm() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(tmp.path(), 13);
    let mc = |prompt: &str, choices: &[&str], answer: &str| Example {
        prompt: prompt.to_string(),
        answer: answer.to_string(),
        choices: Some(choices.iter().map(|s| s.to_string()).collect()),
        source: None,
    };
    let examples = vec![
        mc("w10 w11", &["w5", "w100 w101 w102"], "w5"),
        mc("w12 w13 w14", &["w5", "w100 w101 w102"], "w100 w101 w102"),
        mc("w20", &["w30", "w31", "w32"], "w31"),
        mc("w21 w22", &["w30 w31", "w31", "w32 w33 w34"], "w32 w33 w34"),
    ];
    let (mut acc, mut acc_norm) = (0.0, 0.0);
    for ex in &examples {
        let ctx: Vec<u32> = tok
            .encode(ex.prompt.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        let choices = ex.choices.as_ref().unwrap();
        let lls: Vec<f64> = choices
            .iter()
            .map(|c| {
                let ids = tok.encode(c.as_str(), false).unwrap().get_ids().to_vec();
                reference_loglikelihood(&model, &ctx, &ids)
            })
            .collect();
        let normed: Vec<f64> = lls
            .iter()
            .zip(choices)
            .map(|(l, c)| l / c.chars().count() as f64)
            .collect();
        let gold = choices.iter().position(|c| *c == ex.answer).unwrap();
        acc += f64::from(u8::from(first_argmax(&lls) == gold)) / 4.0;
        acc_norm += f64::from(u8::from(first_argmax(&normed) == gold)) / 4.0;
    }
    let never = AtomicBool::new(false);
    let mut calls = 0;
    let report = eval::evaluate_task(
        &model,
        &tok,
        "mc",
        &examples,
        Metric::Mc,
        &[2],
        &EvalOptions::default(),
        &mut |_, _| calls += 1,
        &never,
    )
    .unwrap();
    assert_eq!(calls, 4);
    close(report.acc.unwrap(), acc, 1e-12, "acc");
    close(report.acc_norm.unwrap(), acc_norm, 1e-12, "acc_norm");
    assert_eq!(report.score, report.acc_norm.unwrap());
    // Examples 0 and 1 share their choices: raw likelihood picks "w5" for both, per character
    // the long one, so acc and acc_norm each get one of the two right.
    assert!(report.acc.unwrap() >= 0.25 && report.acc_norm.unwrap() >= 0.25);
    assert_eq!(report.generated_tokens, 0);

    let bad = vec![example("w1", "w2")];
    let err = eval::evaluate_task(
        &model,
        &tok,
        "mc",
        &bad,
        Metric::Mc,
        &[2],
        &EvalOptions::default(),
        &mut |_, _| {},
        &never,
    )
    .unwrap_err();
    assert!(err.to_string().contains("choices"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Importers
// ---------------------------------------------------------------------------------------------

/// lm-evaluation-harness 0.4 `results_<date>.json`, trimmed to the keys clreg reads plus a few
/// it must ignore (stderr "N/A", alias, groups, configs).
const HARNESS_04: &str = r#"{
  "results": {
    "arc_challenge": {
      "alias": "arc_challenge",
      "acc,none": 0.5017064846416383,
      "acc_stderr,none": 0.014611390804670088,
      "acc_norm,none": 0.5349829351535836,
      "acc_norm_stderr,none": 0.014575583922019669
    },
    "gsm8k": {
      "alias": "gsm8k",
      "exact_match,strict-match": 0.4981046247156937,
      "exact_match_stderr,strict-match": 0.013772385765569753,
      "exact_match,flexible-extract": 0.5049279757391963,
      "exact_match_stderr,flexible-extract": 0.013771815775470578
    },
    "mmlu": {"acc,none": 0.6223, "acc_stderr,none": 0.0038, "alias": "mmlu"},
    "wikitext": {
      "alias": "wikitext",
      "word_perplexity,none": 9.1,
      "word_perplexity_stderr,none": "N/A",
      "bits_per_byte,none": 0.55,
      "bits_per_byte_stderr,none": "N/A"
    }
  },
  "groups": {"mmlu": {"acc,none": 0.6223, "acc_stderr,none": 0.0038, "alias": "mmlu"}},
  "group_subtasks": {"arc_challenge": [], "gsm8k": [], "mmlu": ["mmlu_stem"]},
  "configs": {"arc_challenge": {"task": "arc_challenge", "output_type": "multiple_choice"}},
  "versions": {"arc_challenge": 1.0, "gsm8k": 3.0, "mmlu": 1, "wikitext": 2.0},
  "n-shot": {"arc_challenge": 0, "gsm8k": 5},
  "higher_is_better": {"arc_challenge": {"acc": true, "acc_norm": true}},
  "n-samples": {
    "gsm8k": {"original": 1319, "effective": 1319},
    "arc_challenge": {"original": 1172, "effective": 1172}
  },
  "config": {"model": "hf", "batch_size": "auto"},
  "git_hash": "4600d6bf"
}"#;

/// The pre-0.4 layout: bare metric names.
const HARNESS_03: &str = r#"{
  "results": {
    "hellaswag": {"acc": 0.6011, "acc_stderr": 0.0049, "acc_norm": 0.7920, "acc_norm_stderr": 0.0040},
    "piqa": {"acc": 0.8063, "acc_stderr": 0.0092}
  },
  "versions": {"hellaswag": 0, "piqa": 0}
}"#;

#[test]
fn imports_harness_results_preferring_acc_norm_then_acc_then_exact_match() {
    let got = import_harness(HARNESS_04.as_bytes(), "results.json").unwrap();
    let rows: Vec<(&str, &str, &str, f64, Option<usize>)> = got
        .tasks
        .iter()
        .map(|t| {
            (
                t.task.as_str(),
                t.metric.as_str(),
                t.key.as_str(),
                t.score,
                t.n,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "arc_challenge",
                "acc_norm",
                "acc_norm,none",
                0.5349829351535836,
                Some(1172)
            ),
            (
                "gsm8k",
                "exact_match",
                "exact_match,strict-match",
                0.4981046247156937,
                Some(1319)
            ),
            ("mmlu", "acc", "acc,none", 0.6223, None),
        ]
    );
    assert_eq!(got.skipped, ["wikitext"]);

    let old = import_harness(HARNESS_03.as_bytes(), "old.json").unwrap();
    let rows: Vec<(&str, &str, f64)> = old
        .tasks
        .iter()
        .map(|t| (t.task.as_str(), t.key.as_str(), t.score))
        .collect();
    assert_eq!(
        rows,
        [("hellaswag", "acc_norm", 0.7920), ("piqa", "acc", 0.8063)]
    );

    let err = import_harness(br#"{"versions": {}}"#, "x.json").unwrap_err();
    assert_eq!(err.code(), "invalid_results");
    assert!(err.to_string().contains("results"), "{err}");
    assert!(import_harness(b"not json", "x.json").is_err());
}

#[test]
fn imports_trace_inference_outputs() {
    // infer_single.py's save_inference_results for Py150: eval = {"similarity": Σ fuzz / n}.
    let py150 = r#"{"eval": {"similarity": 75.5},
        "prompts": ["<s> def f ( x ) :", "<s> import"],
        "results": ["return x <NUM_LIT>", "os"],
        "labels": ["return x + <NUM_LIT>", "sys"]}"#;
    let got = import_trace(py150.as_bytes(), "Py150.json").unwrap();
    assert_eq!(got.score(), Some(("similarity", 0.755)));
    let want =
        (edit_sim("return x <NUM_LIT>", "return x + <NUM_LIT>") + edit_sim("os", "sys")) / 2.0;
    close(
        got.rescore(Metric::EditSim).unwrap(),
        want,
        1e-12,
        "rescore",
    );
    assert_eq!(got.rescore(Metric::Mc), None);

    // 20Minuten: caculate_sari returns a one-element tuple of evaluate's dict, on 0..100.
    let minuten = r#"{"eval": {"bleu-1": 0.21, "bleu-4": 0.05, "rouge-L": 0.3, "sari": [{"sari": 41.2}]},
        "prompts": ["Die Bundesräte haben beschlossen."], "results": ["Der Bundesrat hat beschlossen."],
        "labels": ["Der Bundesrat hat es beschlossen."]}"#;
    let got = import_trace(minuten.as_bytes(), "20Minuten.json").unwrap();
    assert_eq!(got.eval["sari"], 41.2);
    let (key, value) = got.score().unwrap();
    assert_eq!(key, "sari");
    close(value, 0.412, 1e-12, "sari / 100");

    // ScienceQA: accuracy wins over rouge-L.
    let sci = r#"{"eval": {"bleu-1": 0.4, "rouge-L": 0.5, "accuracy": 0.9},
        "prompts": ["q"], "results": ["Answer: A"], "labels": ["Answer: A"]}"#;
    assert_eq!(
        import_trace(sci.as_bytes(), "s.json").unwrap().score(),
        Some(("accuracy", 0.9))
    );

    let ragged = r#"{"eval": {}, "prompts": ["a", "b"], "results": ["a"], "labels": ["a", "b"]}"#;
    let err = import_trace(ragged.as_bytes(), "r.json").unwrap_err();
    assert_eq!(err.code(), "invalid_results");
    let missing = r#"{"eval": {}, "prompts": [], "labels": []}"#;
    assert!(
        import_trace(missing.as_bytes(), "m.json")
            .unwrap_err()
            .to_string()
            .contains("results")
    );
    let bad_eval = r#"{"eval": {"accuracy": "high"}, "prompts": [], "results": [], "labels": []}"#;
    assert!(import_trace(bad_eval.as_bytes(), "b.json").is_err());
}

// ---------------------------------------------------------------------------------------------
// BWT, FWT, gain: the study's Tables 3, 4 and 6 (/work/shared/PAPER_TABLES.md)
// ---------------------------------------------------------------------------------------------

const TASKS: [&str; 8] = [
    "cstan", "fomc", "meet", "py150", "sci", "20min", "gsm8k", "gsmcot",
];
/// Table 6, base row.
const BASE: [f64; 8] = [0.218, 0.256, 0.167, 0.045, 0.726, 0.351, 0.505, 0.550];

/// Table 3, sequential FFT: rows after rounds 1..7.
const FFT: [[f64; 8]; 7] = [
    [0.511, 0.4839, 0.0444, 0.3033, 0.115, 0.3709, 0.0008, 0.0713],
    [0.444, 0.7157, 0.0073, 0.0032, 0.1265, 0.3701, 0.0, 0.0],
    [0.457, 0.6109, 0.39, 0.2256, 0.217, 0.3608, 0.1812, 0.2714],
    [0.459, 0.619, 0.3709, 0.5238, 0.2185, 0.3651, 0.1099, 0.232],
    [0.448, 0.4657, 0.4013, 0.5248, 0.922, 0.3512, 0.0857, 0.1296],
    [
        0.461, 0.4657, 0.3927, 0.5211, 0.9255, 0.4078, 0.1266, 0.1357,
    ],
    [0.457, 0.4133, 0.3651, 0.4924, 0.917, 0.3896, 0.7293, 0.7384],
];
const FFT_RELATIVE: [f64; 6] = [-11.0, -42.0, -6.0, -6.0, -1.0, -4.0];
const FFT_GAIN: [f64; 8] = [110.0, 61.0, 119.0, 985.0, 26.0, 11.0, 44.0, 34.0];

/// Table 4, sequential LoRA.
const LORA: [[f64; 8]; 7] = [
    [
        0.535, 0.5081, 0.1783, 0.0585, 0.7545, 0.3556, 0.5133, 0.5656,
    ],
    [
        0.5175, 0.7036, 0.1745, 0.063, 0.7615, 0.3624, 0.5171, 0.5618,
    ],
    [0.532, 0.6915, 0.3771, 0.067, 0.749, 0.3515, 0.5034, 0.5444],
    [
        0.515, 0.6815, 0.3463, 0.5438, 0.7065, 0.3641, 0.4882, 0.5625,
    ],
    [
        0.497, 0.6613, 0.3415, 0.5324, 0.8975, 0.3538, 0.3434, 0.4018,
    ],
    [
        0.5205, 0.6331, 0.3329, 0.5351, 0.8895, 0.4068, 0.4117, 0.3973,
    ],
    [0.508, 0.5988, 0.348, 0.5437, 0.531, 0.3903, 0.7096, 0.7104],
];
const LORA_RELATIVE: [f64; 6] = [-5.0, -15.0, -8.0, 0.0, -41.0, -4.0];
const LORA_GAIN: [f64; 8] = [133.0, 134.0, 109.0, 1098.0, -27.0, 11.0, 41.0, 29.0];

fn study_matrix(rounds: &[[f64; 8]; 7], base: [f64; 8]) -> ScoreMatrix {
    ScoreMatrix {
        tasks: TASKS.iter().map(|s| s.to_string()).collect(),
        rounds: rounds.iter().map(|r| r.to_vec()).collect(),
        base: Some(base.to_vec()),
        // MetaMath (round 7) is tested on gsm8k and gsmcot.
        round_of_task: Some(vec![1, 2, 3, 4, 5, 6, 7, 7]),
    }
}

/// Checks one table: relative BWT rounded to whole percent equals the printed row exactly (its
/// scores have four decimals, so nothing is sensitive); each printed gain lies within what the
/// base row allows, since Table 6 rounds base scores to three decimals (b ± 0.0005) and the
/// printed percentages are rounded (± 0.5). Py150's base 0.045 stretches that interval to
/// roughly ±25 points, so its gain is only checked to lie inside it (printed 985 %/1098 % vs
/// 994 %/1108 % from the rounded base).
fn check_table(rounds: &[[f64; 8]; 7], relative: [f64; 6], gains: [f64; 8], ave_gain: f64) {
    let report = transfer(&study_matrix(rounds, BASE)).unwrap();
    let rel: Vec<f64> = report.relative_bwt[..6]
        .iter()
        .map(|r| (100.0 * r.unwrap()).round() + 0.0)
        .collect();
    assert_eq!(rel, relative);
    assert_eq!(report.relative_bwt[6..], [None, None]);

    let lo = transfer(&study_matrix(rounds, BASE.map(|b| b + 0.0005))).unwrap();
    let hi = transfer(&study_matrix(rounds, BASE.map(|b| b - 0.0005))).unwrap();
    let (g, lo, hi) = (report.gain.unwrap(), lo.gain.unwrap(), hi.gain.unwrap());
    for j in 0..8 {
        let printed = gains[j] / 100.0;
        let (a, b) = (lo[j].unwrap() - 0.005, hi[j].unwrap() + 0.005);
        assert!(
            a <= printed && printed <= b,
            "{}: printed gain {printed} outside [{a}, {b}]",
            TASKS[j]
        );
        if TASKS[j] != "py150" {
            close(g[j].unwrap(), printed, 0.015, TASKS[j]);
        }
    }
    // The AVE column: the gain of the averages.
    assert_eq!((100.0 * report.average_gain.unwrap()).round(), ave_gain);

    // BWT and FWT against a straight transcription of REFERENCE.md's formulas (T = 7 rounds; the
    // round-7 task has two columns, so FWT averages over 7 columns and BWT over 6).
    let r = |t: usize, j: usize| rounds[t - 1][j];
    let bwt: f64 = (0..6).map(|j| r(7, j) - r(j + 1, j)).sum::<f64>() / 6.0;
    close(report.bwt, bwt, 1e-12, "bwt");
    let fwt = ((1..6).map(|j| r(j, j) - BASE[j]).sum::<f64>()
        + (r(6, 6) - BASE[6])
        + (r(6, 7) - BASE[7]))
        / 7.0;
    close(report.fwt.unwrap(), fwt, 1e-12, "fwt");
    close(
        report.final_average,
        rounds[6].iter().sum::<f64>() / 8.0,
        1e-12,
        "final",
    );
    assert!(report.normalisation.contains("R[j][j]"));
}

#[test]
fn transfer_reproduces_table_3_fft() {
    check_table(&FFT, FFT_RELATIVE, FFT_GAIN, 60.0);
    // The printed AVE after round 7.
    let report = transfer(&study_matrix(&FFT, BASE)).unwrap();
    close(report.final_average, 0.5628, 5e-5, "AVE");
}

#[test]
fn transfer_reproduces_table_4_lora() {
    check_table(&LORA, LORA_RELATIVE, LORA_GAIN, 54.0);
    let report = transfer(&study_matrix(&LORA, BASE)).unwrap();
    // Printed 0.543; the mean of the printed row is 0.542475, so the table averaged unrounded
    // scores: agree to the printed precision plus that rounding.
    close(report.final_average, 0.543, 1e-3, "AVE");
}

#[test]
fn transfer_square_matrix_and_errors() {
    // One column per round, no base: R = [[0.5, 0.1, 0.0], [0.4, 0.6, 0.2], [0.3, 0.5, 0.9]].
    let m = ScoreMatrix {
        tasks: vec!["a".into(), "b".into(), "c".into()],
        rounds: vec![
            vec![0.5, 0.1, 0.0],
            vec![0.4, 0.6, 0.2],
            vec![0.3, 0.5, 0.9],
        ],
        base: None,
        round_of_task: None,
    };
    let r = transfer(&m).unwrap();
    close(r.bwt, ((0.3 - 0.5) + (0.5 - 0.6)) / 2.0, 1e-15, "bwt");
    assert_eq!(r.fwt, None);
    assert_eq!(r.gain, None);
    assert_eq!(r.average_gain, None);
    close(r.relative_bwt[0].unwrap(), -0.4, 1e-15, "rel a");
    close(r.relative_bwt[1].unwrap(), -1.0 / 6.0, 1e-15, "rel b");
    assert_eq!(r.relative_bwt[2], None);

    // With a base: FWT = mean of R[j−1][j] − b_j over j ≥ 2; a zero base gives no gain.
    let with_base = ScoreMatrix {
        base: Some(vec![0.2, 0.0, 0.1]),
        ..m.clone()
    };
    let r = transfer(&with_base).unwrap();
    close(
        r.fwt.unwrap(),
        ((0.1 - 0.0) + (0.2 - 0.1)) / 2.0,
        1e-15,
        "fwt",
    );
    let g = r.gain.unwrap();
    close(g[0].unwrap(), 0.5, 1e-15, "gain a");
    assert_eq!(g[1], None);
    close(g[2].unwrap(), 8.0, 1e-12, "gain c");
    close(
        r.average_gain.unwrap(),
        (1.7 / 3.0 - 0.1) / 0.1,
        1e-12,
        "average gain",
    );
    // A zero score when learned gives no relative BWT rather than a division by zero.
    let zero = ScoreMatrix {
        rounds: vec![
            vec![0.0, 0.1, 0.0],
            vec![0.4, 0.6, 0.2],
            vec![0.3, 0.5, 0.9],
        ],
        ..m.clone()
    };
    assert_eq!(transfer(&zero).unwrap().relative_bwt[0], None);

    let code = |m: ScoreMatrix| transfer(&m).unwrap_err().code();
    assert_eq!(
        code(ScoreMatrix {
            rounds: vec![vec![0.5, 0.1, 0.0]],
            ..m.clone()
        }),
        "too_few_rounds"
    );
    assert_eq!(
        code(ScoreMatrix {
            rounds: vec![vec![0.5, 0.1], vec![0.4, 0.6, 0.2], vec![0.3, 0.5, 0.9]],
            ..m.clone()
        }),
        "ragged_matrix"
    );
    assert_eq!(
        code(ScoreMatrix {
            rounds: vec![
                vec![0.5, f64::NAN, 0.0],
                vec![0.4, 0.6, 0.2],
                vec![0.3, 0.5, 0.9]
            ],
            ..m.clone()
        }),
        "not_finite"
    );
    assert_eq!(
        code(ScoreMatrix {
            base: Some(vec![0.1, f64::INFINITY, 0.1]),
            ..m.clone()
        }),
        "not_finite"
    );
    assert_eq!(
        code(ScoreMatrix {
            base: Some(vec![0.1]),
            ..m.clone()
        }),
        "base_length"
    );
    assert_eq!(
        code(ScoreMatrix {
            tasks: vec!["a".into(), "b".into()],
            rounds: vec![vec![0.5, 0.1], vec![0.4, 0.6], vec![0.3, 0.5]],
            ..m.clone()
        }),
        "invalid_round_of_task"
    );
    assert_eq!(
        code(ScoreMatrix {
            round_of_task: Some(vec![1, 2, 4]),
            ..m.clone()
        }),
        "invalid_round_of_task"
    );
    assert_eq!(
        code(ScoreMatrix {
            round_of_task: Some(vec![3, 3, 3]),
            ..m.clone()
        }),
        "no_earlier_task"
    );
    let json = serde_json::to_string(&m).unwrap();
    let back: ScoreMatrix = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let err: BwtError = transfer(&ScoreMatrix {
        rounds: vec![],
        ..m
    })
    .unwrap_err();
    assert!(err.to_string().contains("at least 2 rounds"), "{err}");
}
