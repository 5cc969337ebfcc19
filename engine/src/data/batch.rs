//! Batches of encoded examples: next-token inputs, targets and the answer-only loss mask.
//!
//! Two layouts:
//! - [`pad_batch`]: one example per row, right-padded to the longest row;
//! - [`pack_batches`]: examples concatenated into one stream cut into rows of `len` tokens, as
//!   Hugging Face's packing does: attention is *not* masked between examples packed into the same
//!   row (a later example can attend to an earlier one), and the row boundaries fall anywhere.
//!   The loss mask still counts only answer targets, so the prediction of an example's first
//!   token from the previous example never counts (it is a prompt token), unless the prompt had
//!   no tokens at all.

use super::Encoded;

/// Model inputs, targets and loss mask, row-major `[rows, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    /// `[rows·len]` model input.
    pub input: Vec<u32>,
    /// `[rows·len]` next-token targets.
    pub targets: Vec<u32>,
    /// `[rows·len]` 1.0 where the target is an answer token or the eos (the loss counts it),
    /// else 0.0; padding is 0.0.
    pub mask: Vec<f32>,
    /// Input positions holding a real token (not padding).
    pub tokens: usize,
    /// Positions whose mask is 1.
    pub answer_tokens: usize,
}

/// One example per row: input = `ids[..n-1]`, targets = `ids[1..]`, right-padded with `pad` to
/// the longest row; the mask is 1 exactly where the target is at or after `answer_start`.
pub fn pad_batch(items: &[&Encoded], pad: u32) -> Batch {
    let len = items
        .iter()
        .map(|e| e.ids.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let rows = items.len();
    let mut b = Batch {
        rows,
        len,
        input: vec![pad; rows * len],
        targets: vec![pad; rows * len],
        mask: vec![0.0; rows * len],
        tokens: 0,
        answer_tokens: 0,
    };
    for (r, e) in items.iter().enumerate() {
        let n = e.ids.len().saturating_sub(1);
        let row = r * len;
        b.input[row..row + n].copy_from_slice(&e.ids[..n]);
        b.targets[row..row + n].copy_from_slice(&e.ids[1..=n]);
        for t in 0..n {
            if t + 1 >= e.answer_start {
                b.mask[row + t] = 1.0;
                b.answer_tokens += 1;
            }
        }
        b.tokens += n;
    }
    b
}

/// Concatenates the examples into one stream and cuts it into rows of `len` tokens (row `k`
/// holds stream positions `k·len .. (k+1)·len`, its targets the positions one further), grouped
/// `rows` rows to a batch; the last row is right-padded with `pad` and the last batch may have
/// fewer rows. No row is masked against another example (see the module doc). `rows` and `len`
/// of 0 give no batches.
pub fn pack_batches(items: &[&Encoded], rows: usize, len: usize, pad: u32) -> Vec<Batch> {
    if rows == 0 || len == 0 {
        return Vec::new();
    }
    let mut stream: Vec<u32> = Vec::new();
    let mut answer: Vec<bool> = Vec::new();
    for e in items {
        stream.extend_from_slice(&e.ids);
        answer.extend((0..e.ids.len()).map(|i| i >= e.answer_start));
    }
    // The last token has no target, so it is never an input either.
    let inputs = stream.len().saturating_sub(1);
    let total_rows = inputs.div_ceil(len);
    let mut out = Vec::with_capacity(total_rows.div_ceil(rows));
    let mut row = 0;
    while row < total_rows {
        let n_rows = rows.min(total_rows - row);
        let mut b = Batch {
            rows: n_rows,
            len,
            input: vec![pad; n_rows * len],
            targets: vec![pad; n_rows * len],
            mask: vec![0.0; n_rows * len],
            tokens: 0,
            answer_tokens: 0,
        };
        for r in 0..n_rows {
            let start = (row + r) * len;
            let n = len.min(inputs - start);
            let at = r * len;
            b.input[at..at + n].copy_from_slice(&stream[start..start + n]);
            b.targets[at..at + n].copy_from_slice(&stream[start + 1..start + 1 + n]);
            for t in 0..n {
                if answer[start + 1 + t] {
                    b.mask[at + t] = 1.0;
                    b.answer_tokens += 1;
                }
            }
            b.tokens += n;
        }
        out.push(b);
        row += n_rows;
    }
    out
}
