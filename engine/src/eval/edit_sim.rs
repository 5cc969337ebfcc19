//! Edit similarity for code completion (Py150 style): fuzzywuzzy's `fuzz.ratio` / 100 after
//! TRACE's literal post-processing.

/// `fuzz.ratio(pred, reference) / 100` (fuzzywuzzy 0.18 with python-Levenshtein) after replacing,
/// in both strings, `<NUM_LIT>` → `0`, `<STR_LIT>` and `<CHAR_LIT>` → nothing, and
/// `<STR_LIT:v>`, `<NUM_LIT:v>`, `<CHAR_LIT:v>` → `v` (TRACE's `eval_Py150.postprocess`).
///
/// `fuzz.ratio` is 100 for equal strings (two empty ones included), 0 when exactly one is empty,
/// else `int(round(100 · r))` with Python's round-half-to-even and
/// r = 1 − d / (|a| + |b|), d the Levenshtein distance with substitutions costing 2 (the indel
/// distance), lengths in Unicode code points. The result is a multiple of 0.01.
pub fn edit_sim(pred: &str, reference: &str) -> f64 {
    let (a, b) = (postprocess(pred), postprocess(reference));
    if a == b {
        return 1.0;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let lensum = (a.len() + b.len()) as f64;
    let ratio = 1.0 - indel_distance(&a, &b) as f64 / lensum;
    (100.0 * ratio).round_ties_even() / 100.0
}

/// TRACE's `postprocess`: bare literal tokens first, then `<KIND_LIT:value>` → `value` (the
/// shortest match up to the next `>`, as the non-greedy regex `<(STR|NUM|CHAR)_LIT:(.*?)>`).
pub fn postprocess(code: &str) -> String {
    let code = code
        .replace("<NUM_LIT>", "0")
        .replace("<STR_LIT>", "")
        .replace("<CHAR_LIT>", "");
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    'scan: while let Some(at) = rest.find('<') {
        for kind in ["<STR_LIT:", "<NUM_LIT:", "<CHAR_LIT:"] {
            if let Some(tail) = rest[at..].strip_prefix(kind)
                && let Some(end) = tail.find('>')
            {
                out.push_str(&rest[..at]);
                out.push_str(&tail[..end]);
                rest = &tail[end + 1..];
                continue 'scan;
            }
        }
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

/// Insertions and deletions cost 1, substitutions 2: |a| + |b| − 2 · LCS(a, b).
fn indel_distance(a: &[char], b: &[char]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    a.len() + b.len() - 2 * prev[b.len()]
}
