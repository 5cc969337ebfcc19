//! ROUGE-L F1 as Google's `rouge-score` package computes it (summarisation, MeetingBank style).

/// ROUGE-L F1 of `pred` against `reference`, as `rouge_score.rouge_scorer.RougeScorer(["rougeL"])`
/// without stemming: both texts are lowercased (Unicode), every run of characters other than
/// ASCII `a-z0-9` becomes a space (so accented and non-Latin letters vanish), and the words are
/// what remains between spaces. With `L` the longest common subsequence of the two word lists,
/// precision = L / |pred|, recall = L / |reference|, F1 = 2PR / (P + R); 0 when either list is
/// empty or nothing is shared.
pub fn rouge_l(pred: &str, reference: &str) -> f64 {
    let (p, r) = (tokens(pred), tokens(reference));
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(&r, &p) as f64;
    let precision = lcs / p.len() as f64;
    let recall = lcs / r.len() as f64;
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// rouge-score's default tokenizer (`tokenize.tokenize` with no stemmer).
fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The length of the longest common subsequence, one row of the table at a time.
fn lcs_len(a: &[String], b: &[String]) -> usize {
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
    prev[b.len()]
}
