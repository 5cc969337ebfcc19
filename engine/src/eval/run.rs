//! The evaluation runner: scores a model on one task's examples, generating answers greedily in
//! left-padded batches with the KV cache, or scoring choices by log-likelihood.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::{Metric, score, score_choices};
use crate::data::Example;
use crate::model::{Llama, ModelError, OpsMode};

/// How to run an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalOptions {
    /// Prompts generated together (default 8).
    pub batch_size: usize,
    /// The most tokens generated per answer (default 64).
    pub max_new_tokens: usize,
    /// How many examples (the first ones) the report shows in full (default 3).
    pub report_examples: usize,
    /// Evaluate only the first `limit` examples.
    pub limit: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            max_new_tokens: 64,
            report_examples: 3,
            limit: None,
        }
    }
}

/// What the submitter of an eval job may set (its `config`); the registry decides the rest
/// (its reports keep no examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    /// Prompts generated together [default: 8].
    pub batch_size: Option<usize>,
    /// The most tokens generated per answer [default: 64].
    pub max_new_tokens: Option<usize>,
    /// Score only the first `limit` examples of each task.
    pub limit: Option<usize>,
}

impl EvalSettings {
    /// The largest `batch_size` and `max_new_tokens` accepted.
    pub const MAX_BATCH: usize = 256;
    pub const MAX_NEW_TOKENS: usize = 4096;

    /// Refuses settings no evaluation could use, saying what to change.
    pub fn check(&self) -> Result<(), String> {
        let within = |v: Option<usize>, max: usize, name: &str| match v {
            Some(v) if v == 0 || v > max => Err(format!("`{name}` is {v}: use 1 to {max}")),
            _ => Ok(()),
        };
        within(self.batch_size, Self::MAX_BATCH, "batch_size")?;
        within(self.max_new_tokens, Self::MAX_NEW_TOKENS, "max_new_tokens")?;
        within(self.limit, usize::MAX, "limit")
    }

    /// The options of a run with these settings that shows `report_examples` examples.
    pub fn options(&self, report_examples: usize) -> EvalOptions {
        let d = EvalOptions::default();
        EvalOptions {
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            max_new_tokens: self.max_new_tokens.unwrap_or(d.max_new_tokens),
            report_examples,
            limit: self.limit,
        }
    }
}

/// One example as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportExample {
    pub prompt: String,
    pub answer: String,
    /// The generated text (special tokens and the stop token removed), or for multiple choice
    /// the choice picked by `acc_norm`.
    pub prediction: String,
    pub score: f64,
}

/// A model's score on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: String,
    pub metric: Metric,
    /// The mean per-example score in [0, 1] (`acc_norm` for [`Metric::Mc`]).
    pub score: f64,
    /// Examples evaluated.
    pub n: usize,
    /// Multiple choice only: the fraction whose most likely choice is the answer.
    pub acc: Option<f64>,
    /// Multiple choice only: the same per character of the choice.
    pub acc_norm: Option<f64>,
    pub examples: Vec<ReportExample>,
    pub seconds: f64,
    /// Tokens generated, stop tokens included (0 for multiple choice).
    pub generated_tokens: usize,
}

/// Evaluates `model` on `examples` (the first `opts.limit` of them) with `metric`.
///
/// Generation is greedy, `opts.batch_size` prompts at a time, each prompt encoded with special
/// tokens (`tok.encode(prompt, true)`); it stops per row at a token of `eos` or after
/// `max_new_tokens` (see [`generate_batch`]). SARI reads `source`, or the prompt when an example
/// has none. [`Metric::Mc`] needs `choices` on every example and scores them with
/// [`score_choices`]; its score is `acc_norm`. `progress(done, total)` is called after every
/// batch (every example for multiple choice); setting `cancel` stops with
/// [`ModelError::Cancelled`] at the next batch or token.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_task(
    model: &Llama,
    tok: &Tokenizer,
    task: &str,
    examples: &[Example],
    metric: Metric,
    eos: &[u32],
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<TaskReport, ModelError> {
    let started = Instant::now();
    let examples = &examples[..opts.limit.unwrap_or(usize::MAX).min(examples.len())];
    if examples.is_empty() {
        return Err(ModelError::InvalidOption(format!(
            "task `{task}` has no examples to evaluate (is --limit 0?)"
        )));
    }
    if opts.batch_size == 0 {
        return Err(ModelError::InvalidOption(
            "batch size 0: evaluate at least one example at a time".into(),
        ));
    }
    let total = examples.len();
    let mut scores = Vec::with_capacity(total);
    let mut predictions = Vec::with_capacity(opts.report_examples.min(total));
    let mut generated_tokens = 0;
    let (mut acc, mut acc_norm) = (None, None);

    if metric == Metric::Mc {
        let (mut right, mut right_norm) = (0usize, 0usize);
        for (i, ex) in examples.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let choices = ex.choices.as_deref().ok_or_else(|| {
                ModelError::InvalidOption(format!(
                    "example {i} of `{task}` has no `choices`; metric mc needs them"
                ))
            })?;
            let gold = choices
                .iter()
                .position(|c| *c == ex.answer)
                .ok_or_else(|| {
                    ModelError::InvalidOption(format!(
                        "example {i} of `{task}`: the answer {:?} is not one of its choices",
                        ex.answer
                    ))
                })?;
            let picks = score_choices(model, tok, &ex.prompt, choices)?;
            right += usize::from(picks.acc_pick == gold);
            let hit = picks.acc_norm_pick == gold;
            right_norm += usize::from(hit);
            scores.push(f64::from(u8::from(hit)));
            if predictions.len() < opts.report_examples {
                predictions.push(choices[picks.acc_norm_pick].clone());
            }
            progress(i + 1, total);
        }
        acc = Some(right as f64 / total as f64);
        acc_norm = Some(right_norm as f64 / total as f64);
    } else {
        let mut done = 0;
        for batch in examples.chunks(opts.batch_size) {
            if cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            let prompts = batch
                .iter()
                .map(|ex| {
                    tok.encode(ex.prompt.as_str(), true)
                        .map(|e| e.get_ids().to_vec())
                        .map_err(|e| ModelError::tokenizer("tokenizer.json", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let outputs = generate_batch(model, &prompts, eos, opts.max_new_tokens, cancel)
                .map_err(|e| match e {
                    ModelError::InvalidOption(m) => ModelError::InvalidOption(format!(
                        "task `{task}`, examples {done}..{}: {m}",
                        done + batch.len()
                    )),
                    other => other,
                })?;
            for (ex, ids) in batch.iter().zip(outputs) {
                generated_tokens += ids.len();
                let kept = match ids.last() {
                    Some(last) if eos.contains(last) => &ids[..ids.len() - 1],
                    _ => &ids[..],
                };
                let text = tok
                    .decode(kept, true)
                    .map_err(|e| ModelError::tokenizer("tokenizer.json", e))?;
                let source = ex.source.as_deref().unwrap_or(&ex.prompt);
                scores.push(score(metric, &text, &ex.answer, source));
                if predictions.len() < opts.report_examples {
                    predictions.push(text);
                }
            }
            done += batch.len();
            progress(done, total);
        }
    }

    let mean = scores.iter().sum::<f64>() / total as f64;
    let report = examples
        .iter()
        .zip(predictions)
        .zip(&scores)
        .map(|((ex, prediction), s)| ReportExample {
            prompt: ex.prompt.clone(),
            answer: ex.answer.clone(),
            prediction,
            score: *s,
        })
        .collect();
    Ok(TaskReport {
        task: task.to_string(),
        metric,
        score: mean,
        n: total,
        acc,
        acc_norm,
        examples: report,
        seconds: started.elapsed().as_secs_f64(),
        generated_tokens,
    })
}

/// Greedy generation for a batch of prompts, left-padded and decoded together with one KV cache.
///
/// Returns, per prompt, the generated ids (prompt excluded), ending with the stop token when one
/// was produced — what [`crate::model::generate_ids`] returns for that prompt alone with greedy
/// options. A row stops at a token of `eos` or after `max_new_tokens`; finished rows keep
/// decoding with the batch but their tokens are dropped. A prompt longer than
/// `max_position_embeddings − max_new_tokens` (at least 1) keeps only its last tokens, so every
/// row has room to generate; generation also ends when positions run out.
pub fn generate_batch(
    model: &Llama,
    prompts: &[Vec<u32>],
    eos: &[u32],
    max_new_tokens: usize,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let mut outs = vec![Vec::new(); prompts.len()];
    if prompts.is_empty() || max_new_tokens == 0 {
        return Ok(outs);
    }
    let vocab = model.config().vocab_size;
    let max_pos = model.config().max_position_embeddings;
    let keep = max_pos.saturating_sub(max_new_tokens).max(1);
    let mut rows = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(ModelError::InvalidOption(format!(
                "prompt {i} encodes to no tokens; generation needs at least one"
            )));
        }
        if let Some(bad) = p.iter().find(|t| **t as usize >= vocab) {
            return Err(ModelError::InvalidOption(format!(
                "prompt {i}: token {bad} is outside the model's vocabulary of {vocab}"
            )));
        }
        rows.push(&p[p.len().saturating_sub(keep)..]);
    }
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let left_pad: Vec<usize> = rows.iter().map(|r| width - r.len()).collect();
    let mut ids = Vec::with_capacity(rows.len() * width);
    for (row, pad) in rows.iter().zip(&left_pad) {
        // The padding id is masked out; 0 is in every vocabulary.
        ids.extend(std::iter::repeat_n(0u32, *pad));
        ids.extend_from_slice(row);
    }
    let device = model.device();
    let input = Tensor::from_vec(ids, (rows.len(), width), device)?;
    let mut cache = model.new_cache();
    let mut logits = model.forward_padded(&input, 0, Some(&mut cache), &left_pad, OpsMode::Fast)?;
    let mut offset = width;
    let mut finished = vec![false; rows.len()];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(ModelError::Cancelled);
        }
        let next = Llama::last_logits(&logits)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        for ((out, done), token) in outs.iter_mut().zip(&mut finished).zip(&next) {
            if !*done {
                out.push(*token);
                *done = eos.contains(token) || out.len() >= max_new_tokens;
            }
        }
        if finished.iter().all(|d| *d) || offset + 1 > max_pos {
            return Ok(outs);
        }
        let input = Tensor::from_vec(next, (rows.len(), 1), device)?;
        logits =
            model.forward_padded(&input, offset, Some(&mut cache), &left_pad, OpsMode::Fast)?;
        offset += 1;
    }
}
