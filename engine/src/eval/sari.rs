//! SARI for simplification (20Minuten style), as the Hugging Face `evaluate` "sari" metric that
//! TRACE (and so the study) calls.
//!
//! That implementation is tensor2tensor's `sari_hook.py` (itself Xu et al. 2016's `SARI.py`) with
//! two documented changes: 0/0 counts as 1, and the keep recall divides by the summed counts
//! (cocoxu/simplification issue 6). Sentences are lowercased and tokenised with sacreBLEU's
//! `13a` tokenizer first (`normalize` in the metric script). n-grams are 1..4; the score is the
//! mean over n of keep F1, delete precision and add F1, averaged over the three.

use std::collections::{HashMap, HashSet};

/// SARI / 100 of `prediction`, a simplification of `source`, against `references` (at least one;
/// with none every reference n-gram set is empty). Equals `evaluate`'s
/// `sari.compute(sources=[source], predictions=[prediction], references=[references])["sari"]
/// / 100`.
pub fn sari(source: &str, prediction: &str, references: &[&str]) -> f64 {
    let s = normalize(source);
    let c = normalize(prediction);
    let refs: Vec<String> = references.iter().map(|r| normalize(r)).collect();
    let s1: Vec<&str> = s.split(' ').collect();
    let c1: Vec<&str> = c.split(' ').collect();
    let r1: Vec<Vec<&str>> = refs.iter().map(|r| r.split(' ').collect()).collect();
    let (mut keep, mut del, mut add) = (0.0, 0.0, 0.0);
    for n in 1..=4 {
        let rgrams: Vec<Vec<String>> = r1.iter().map(|r| ngrams(r, n)).collect();
        let (k, d, a) = sari_ngram(&ngrams(&s1, n), &ngrams(&c1, n), &rgrams, refs.len());
        keep += k;
        del += d;
        add += a;
    }
    (keep / 4.0 + del / 4.0 + add / 4.0) / 3.0
}

/// `normalize(sentence)` of the metric script: lowercase, then sacreBLEU's 13a tokenizer.
pub fn normalize(sentence: &str) -> String {
    tokenize_13a(&sentence.to_lowercase())
}

/// sacreBLEU 2.x `Tokenizer13a`: mteval-v13a's language-independent clean-up, then
/// `TokenizerRegexp`'s four substitutions, then whitespace collapsed to single spaces.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();

    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) → " \1 "
    let mut a = Vec::with_capacity(chars.len() * 2);
    for c in chars {
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    // ([^0-9])([\.,]) → "\1 \2 "
    let a = substitute(
        &a,
        |x, y| !x.is_ascii_digit() && matches!(y, '.' | ','),
        |x, y| vec![x, ' ', y, ' '],
    );
    // ([\.,])([^0-9]) → " \1 \2"
    let a = substitute(
        &a,
        |x, y| matches!(x, '.' | ',') && !y.is_ascii_digit(),
        |x, y| vec![' ', x, ' ', y],
    );
    // ([0-9])(-) → "\1 \2 "
    let a = substitute(
        &a,
        |x, y| x.is_ascii_digit() && y == '-',
        |x, y| vec![x, ' ', y, ' '],
    );

    let text: String = a.into_iter().collect();
    text.split(is_python_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `re.sub` of a two-character pattern: matches are found left to right and do not overlap.
fn substitute(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Python's `str.split()` whitespace: Rust's plus the four separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The n-grams of `tokens`, words joined by one space, in order.
fn ngrams(tokens: &[&str], n: usize) -> Vec<String> {
    if tokens.len() < n {
        return Vec::new();
    }
    tokens.windows(n).map(|w| w.join(" ")).collect()
}

/// A multiset that remembers first-insertion order, so sums run in the order Python's `Counter`
/// iterates (and the floating-point result matches to the last bit in practice).
#[derive(Default)]
struct Counter {
    order: Vec<String>,
    counts: HashMap<String, usize>,
}

impl Counter {
    fn from_iter<'a>(items: impl IntoIterator<Item = &'a String>, times: usize) -> Self {
        let mut c = Counter::default();
        for item in items {
            c.add(item, times);
        }
        c
    }

    fn add(&mut self, key: &str, n: usize) {
        if n == 0 {
            return;
        }
        match self.counts.get_mut(key) {
            Some(v) => *v += n,
            None => {
                self.order.push(key.to_string());
                self.counts.insert(key.to_string(), n);
            }
        }
    }

    fn get(&self, key: &str) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn items(&self) -> impl Iterator<Item = (&str, usize)> {
        self.order.iter().map(|k| (k.as_str(), self.get(k)))
    }

    /// Python's `self & other`: the minimum count, positive ones only, in `self`'s order.
    fn and(&self, other: &Counter) -> Counter {
        let mut c = Counter::default();
        for (k, v) in self.items() {
            c.add(k, v.min(other.get(k)));
        }
        c
    }

    /// Python's `self - other`: the difference, positive ones only, in `self`'s order.
    fn minus(&self, other: &Counter) -> Counter {
        let mut c = Counter::default();
        for (k, v) in self.items() {
            c.add(k, v.saturating_sub(other.get(k)));
        }
        c
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p > 0.0 || r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// `SARIngram`: (keep F1, delete precision, add F1) for one n.
fn sari_ngram(
    sgrams: &[String],
    cgrams: &[String],
    rgrams: &[Vec<String>],
    numref: usize,
) -> (f64, f64, f64) {
    let r = Counter::from_iter(rgrams.iter().flatten(), 1);
    let s_rep = Counter::from_iter(sgrams, numref);
    let c_rep = Counter::from_iter(cgrams, numref);

    let keep = s_rep.and(&c_rep);
    let keep_good = keep.and(&r);
    let keep_all = s_rep.and(&r);
    let mut tmp1 = 0.0;
    let mut tmp2 = 0usize;
    for (g, v) in keep_good.items() {
        tmp1 += v as f64 / keep.get(g) as f64;
        tmp2 += v;
    }
    let keep_p = if keep.len() > 0 {
        tmp1 / keep.len() as f64
    } else {
        1.0
    };
    let keep_r = if keep_all.len() > 0 {
        tmp2 as f64 / keep_all.items().map(|(_, v)| v).sum::<usize>() as f64
    } else {
        1.0
    };
    let keep_score = f1(keep_p, keep_r);

    let del = s_rep.minus(&c_rep);
    let del_good = del.minus(&r);
    let mut del_tmp = 0.0;
    for (g, v) in del_good.items() {
        del_tmp += v as f64 / del.get(g) as f64;
    }
    let del_p = if del.len() > 0 {
        del_tmp / del.len() as f64
    } else {
        1.0
    };

    let s_set: HashSet<&String> = sgrams.iter().collect();
    let c_set: HashSet<&String> = cgrams.iter().collect();
    let r_set: HashSet<&String> = rgrams.iter().flatten().collect();
    let added = c_set.difference(&s_set).count();
    let added_good = c_set
        .iter()
        .filter(|g| !s_set.contains(*g) && r_set.contains(*g))
        .count();
    let added_all = r_set.difference(&s_set).count();
    let add_p = if added > 0 {
        added_good as f64 / added as f64
    } else {
        1.0
    };
    let add_r = if added_all > 0 {
        added_good as f64 / added_all as f64
    } else {
        1.0
    };
    (keep_score, del_p, f1(add_p, add_r))
}
