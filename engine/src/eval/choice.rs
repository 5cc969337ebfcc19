//! Multiple-choice scoring by log-likelihood, as lm-evaluation-harness's `multiple_choice`
//! tasks: `acc` picks the most likely choice, `acc_norm` the most likely per character.

use candle_core::{D, Tensor};
use tokenizers::Tokenizer;

use crate::model::{Llama, ModelError, OpsMode};

/// The log-likelihoods of the choices of one example and the picks they lead to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceScores {
    /// Σ log p(token | everything before it) over each choice's tokens, given the prompt.
    pub loglikelihoods: Vec<f64>,
    /// Each choice's length in characters (Unicode code points, Python's `len`), the
    /// denominator of `acc_norm`.
    pub chars: Vec<usize>,
    /// The choice with the highest log-likelihood (the first one on a tie, as `np.argmax`).
    pub acc_pick: usize,
    /// The choice with the highest log-likelihood per character (first one on a tie).
    pub acc_norm_pick: usize,
}

/// Scores every choice as a continuation of `prompt` in one batched forward pass.
///
/// The context is `tok.encode(prompt, true)` (special tokens such as BOS added), each
/// continuation `tok.encode(choice, false)`; the harness instead encodes context + continuation
/// together and splits, which differs only where a tokenizer merges across the boundary. As in
/// the harness, a row longer than the model's `max_position_embeddings` loses tokens from the
/// left of the context. Rows are right-padded: causal attention never looks at later positions,
/// so padding needs no mask.
pub fn score_choices(
    model: &Llama,
    tok: &Tokenizer,
    prompt: &str,
    choices: &[String],
) -> Result<ChoiceScores, ModelError> {
    if choices.is_empty() {
        return Err(ModelError::InvalidOption(
            "a multiple-choice example needs at least one choice".into(),
        ));
    }
    let encode = |text: &str, special: bool| {
        tok.encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::tokenizer("tokenizer.json", e))
    };
    let context = encode(prompt, true)?;
    if context.is_empty() {
        return Err(ModelError::InvalidOption(
            "the prompt encodes to no tokens, so the first token of a choice has nothing to be \
             predicted from; give a non-empty prompt or a tokenizer that adds BOS"
                .into(),
        ));
    }
    let max_pos = model.config().max_position_embeddings;
    let vocab = model.config().vocab_size;
    // Each row: the model's input (all but the last token) and how many trailing targets belong
    // to the choice.
    let mut rows: Vec<(Vec<u32>, usize)> = Vec::with_capacity(choices.len());
    for (i, choice) in choices.iter().enumerate() {
        let cont = encode(choice, false)?;
        if cont.is_empty() {
            return Err(ModelError::InvalidOption(format!(
                "choice {i} ({choice:?}) encodes to no tokens; remove it or give it text"
            )));
        }
        if cont.len() > max_pos {
            return Err(ModelError::InvalidOption(format!(
                "choice {i} has {} tokens, more than the model's {max_pos} positions",
                cont.len()
            )));
        }
        let mut whole: Vec<u32> = context.iter().chain(&cont).copied().collect();
        if let Some(bad) = whole.iter().find(|t| **t as usize >= vocab) {
            return Err(ModelError::InvalidOption(format!(
                "token {bad} is outside the model's vocabulary of {vocab}: the tokenizer does \
                 not belong to this model"
            )));
        }
        if whole.len() > max_pos + 1 {
            whole.drain(..whole.len() - (max_pos + 1));
        }
        rows.push((whole, cont.len()));
    }
    let width = rows.iter().map(|(w, _)| w.len() - 1).max().unwrap_or(1);
    let mut inputs = Vec::with_capacity(rows.len() * width);
    let mut targets = Vec::with_capacity(rows.len() * width);
    for (whole, _) in &rows {
        let n = whole.len() - 1;
        inputs.extend_from_slice(&whole[..n]);
        targets.extend_from_slice(&whole[1..]);
        inputs.extend(std::iter::repeat_n(0u32, width - n));
        targets.extend(std::iter::repeat_n(0u32, width - n));
    }
    let device = model.device();
    let ids = Tensor::from_vec(inputs, (rows.len(), width), device)?;
    let targets = Tensor::from_vec(targets, (rows.len(), width, 1), device)?;
    // Positions before the earliest choice token are never read; skip their softmax.
    let first = rows.iter().map(|(w, k)| w.len() - 1 - k).min().unwrap_or(0);
    let logits =
        model
            .forward_with(&ids, 0, None, OpsMode::Fast)?
            .narrow(1, first, width - first)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .gather(
            &targets.narrow(1, first, width - first)?.contiguous()?,
            D::Minus1,
        )?
        .squeeze(D::Minus1)?
        .to_vec2::<f32>()?;
    let loglikelihoods: Vec<f64> = rows
        .iter()
        .zip(&logp)
        .map(|((whole, k), row)| {
            let end = whole.len() - 1 - first;
            row[end - k..end].iter().map(|v| f64::from(*v)).sum()
        })
        .collect();
    let chars: Vec<usize> = choices.iter().map(|c| c.chars().count()).collect();
    let normed: Vec<f64> = loglikelihoods
        .iter()
        .zip(&chars)
        .map(|(ll, n)| ll / *n as f64)
        .collect();
    Ok(ChoiceScores {
        acc_pick: first_argmax(&loglikelihoods),
        acc_norm_pick: first_argmax(&normed),
        loglikelihoods,
        chars,
    })
}

/// The index of the first maximum (`np.argmax`); NaN never wins.
fn first_argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}
