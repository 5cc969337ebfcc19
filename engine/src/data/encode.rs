//! Tokenising TRACE examples for answer-only loss, with a fixed truncation rule.
//!
//! The sequence is `tokens(prompt)` (with the tokenizer's special tokens, e.g. a BOS) followed by
//! `tokens(answer)` (without them) and the eos id; the loss counts the answer tokens and the eos.
//!
//! Truncation, when prompt + answer + eos is longer than `max_len`:
//! 1. the answer part (answer tokens + eos) keeps at most `max(max_len − len(prompt),
//!    max_len / 2)` tokens, cut from the right; when it is cut the eos goes first, because a cut
//!    answer must not teach the model to stop there;
//! 2. the prompt then keeps its *last* `max_len − len(answer part)` tokens (TRACE prompts end
//!    with the question), except that the special tokens the tokenizer put in front (a BOS) stay
//!    in front.
//!
//! Every cut is counted in [`EncodeStats`]. An answer with no tokens is an error.

use tokenizers::Tokenizer;

use crate::error::FormatError;

use super::Example;

/// Options of [`encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The longest sequence kept, in tokens (at least 4).
    pub max_len: usize,
}

/// What truncation did to an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    None,
    Prompt,
    Answer,
    Both,
}

/// One tokenised example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Index of the first answer token in `ids`; everything from here on (answer tokens and the
    /// eos, when kept) is trained on.
    pub answer_start: usize,
    pub truncated: Truncation,
}

/// Counts over a dataset, reported before training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncodeStats {
    pub examples: usize,
    /// Examples whose prompt was cut (alone or with the answer).
    pub truncated_prompt: usize,
    /// Examples whose answer part was cut (alone or with the prompt).
    pub truncated_answer: usize,
    /// All tokens kept.
    pub tokens: usize,
    /// Tokens the loss counts (answer tokens and eos).
    pub answer_tokens: usize,
}

/// Tokenises one example. Errors name no file (see [`encode_all`]).
pub fn encode(
    tok: &Tokenizer,
    ex: &Example,
    eos: u32,
    opts: &EncodeOptions,
) -> Result<Encoded, FormatError> {
    encode_one(tok, ex, eos, opts).map_err(|reason| FormatError::dataset("<example>", reason))
}

/// Tokenises every example of `file`; errors name the file and the 0-based example.
pub fn encode_all(
    tok: &Tokenizer,
    examples: &[Example],
    eos: u32,
    opts: &EncodeOptions,
    file: &str,
) -> Result<(Vec<Encoded>, EncodeStats), FormatError> {
    let mut stats = EncodeStats::default();
    let mut out = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let enc = encode_one(tok, ex, eos, opts)
            .map_err(|reason| FormatError::dataset(file, format!("example {i}: {reason}")))?;
        stats.examples += 1;
        if matches!(enc.truncated, Truncation::Prompt | Truncation::Both) {
            stats.truncated_prompt += 1;
        }
        if matches!(enc.truncated, Truncation::Answer | Truncation::Both) {
            stats.truncated_answer += 1;
        }
        stats.tokens += enc.ids.len();
        stats.answer_tokens += enc.ids.len() - enc.answer_start;
        out.push(enc);
    }
    Ok((out, stats))
}

fn encode_one(
    tok: &Tokenizer,
    ex: &Example,
    eos: u32,
    opts: &EncodeOptions,
) -> Result<Encoded, String> {
    let max_len = opts.max_len;
    if max_len < 4 {
        return Err(format!(
            "max_len is {max_len}; give a maximum sequence length of at least 4 tokens"
        ));
    }
    let prompt = tok
        .encode(ex.prompt.as_str(), true)
        .map_err(|e| format!("the tokenizer failed on the prompt: {e}"))?;
    let answer = tok
        .encode(ex.answer.as_str(), false)
        .map_err(|e| format!("the tokenizer failed on the answer: {e}"))?;
    let answer = answer.get_ids();
    if answer.is_empty() {
        return Err(format!(
            "the answer {:?} has no tokens; give every example a non-empty answer",
            ex.answer
        ));
    }
    let p = prompt.get_ids();
    // Special tokens the tokenizer put before the text (a BOS) stay in front when the prompt is
    // cut.
    let front = prompt
        .get_special_tokens_mask()
        .iter()
        .take_while(|m| **m == 1)
        .count()
        .min(p.len());

    let mut answer_part: Vec<u32> = answer.to_vec();
    answer_part.push(eos);
    let (mut cut_prompt, mut cut_answer) = (false, false);
    if p.len() + answer_part.len() > max_len {
        let cap = max_len.saturating_sub(p.len()).max(max_len / 2);
        if answer_part.len() > cap {
            // Dropping from the right removes the eos first.
            answer_part.truncate(cap);
            cut_answer = true;
        }
    }
    let budget = max_len - answer_part.len();
    let mut ids: Vec<u32> = Vec::with_capacity(max_len);
    if p.len() > budget {
        cut_prompt = true;
        let keep_front = front.min(budget);
        ids.extend_from_slice(&p[..keep_front]);
        let tail = budget - keep_front;
        ids.extend_from_slice(&p[p.len() - tail..]);
    } else {
        ids.extend_from_slice(p);
    }
    let answer_start = ids.len();
    ids.extend_from_slice(&answer_part);
    let truncated = match (cut_prompt, cut_answer) {
        (false, false) => Truncation::None,
        (true, false) => Truncation::Prompt,
        (false, true) => Truncation::Answer,
        (true, true) => Truncation::Both,
    };
    Ok(Encoded {
        ids,
        answer_start,
        truncated,
    })
}

/// The end-of-sequence id: the config's first eos id, else the first of `</s>`,
/// `<|endoftext|>`, `<|im_end|>`, `<eos>` the tokenizer knows.
pub fn eos_id(tok: &Tokenizer, config_eos: &[u32]) -> Result<u32, FormatError> {
    if let Some(id) = config_eos.first() {
        return Ok(*id);
    }
    ["</s>", "<|endoftext|>", "<|im_end|>", "<eos>"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .ok_or_else(|| {
            FormatError::model(
                "tokenizer.json",
                "the tokenizer has no end-of-sequence token; set eos_token_id in config.json",
            )
        })
}
