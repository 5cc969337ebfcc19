//! Text generation with the KV cache: greedy or sampled (temperature, top-p, seed), stopping at
//! an end-of-sequence token or after `max_new_tokens`.

use std::path::Path;

use candle_core::{IndexOp, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokenizers::Tokenizer;

use super::ops::OpsMode;
use super::{Llama, ModelError};

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 (the default) is greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Stop tokens; `None` takes `eos_token_id` of the model's config.
    pub eos_token_ids: Option<Vec<u32>>,
    /// Let the tokenizer add its special tokens (BOS …) to the prompt.
    pub add_special_tokens: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: None,
            seed: 0,
            eos_token_ids: None,
            add_special_tokens: true,
        }
    }
}

impl GenerateOptions {
    fn check(&self) -> Result<(), ModelError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(ModelError::InvalidOption(format!(
                "temperature {} must be a finite number ≥ 0",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::InvalidOption(format!(
                "top_p {p} must be in (0, 1]"
            )));
        }
        Ok(())
    }

    fn sampler(&self) -> LogitsProcessor {
        let sampling = match (self.temperature, self.top_p) {
            (0.0, _) => Sampling::ArgMax,
            (temperature, Some(p)) if p < 1.0 => Sampling::TopP { p, temperature },
            (temperature, _) => Sampling::All { temperature },
        };
        LogitsProcessor::from_sampling(self.seed, sampling)
    }
}

/// Reads a Hugging Face `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::tokenizer(path.display(), e))
}

/// Generates up to `max_new_tokens` token ids after `prompt` (which must not be empty); the
/// returned ids exclude the prompt and include the stop token when one was produced.
pub fn generate_ids(
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<Vec<u32>, ModelError> {
    opts.check()?;
    if prompt.is_empty() {
        return Err(ModelError::InvalidOption(
            "the prompt is empty: generation needs at least one token".into(),
        ));
    }
    let vocab = model.config().vocab_size;
    if let Some(bad) = prompt.iter().find(|t| **t as usize >= vocab) {
        return Err(ModelError::InvalidOption(format!(
            "prompt token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let eos = opts
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    let max_pos = model.config().max_position_embeddings;
    let mut sampler = opts.sampler();
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    let mut input = Tensor::new(prompt, model.device())?.unsqueeze(0)?;
    let mut offset = 0;
    while out.len() < opts.max_new_tokens {
        let len = input.dim(1)?;
        if offset + len > max_pos {
            break;
        }
        let logits = model.forward_with(&input, offset, Some(&mut cache), OpsMode::Fast)?;
        let last = logits.i((0, len - 1))?;
        let next = sampler.sample(&last)?;
        offset += len;
        out.push(next);
        if eos.contains(&next) {
            break;
        }
        input = Tensor::new(&[next], model.device())?.unsqueeze(0)?;
    }
    Ok(out)
}

/// Generates a continuation of `prompt` and returns it as text (special tokens skipped).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: GenerateOptions,
) -> Result<String, ModelError> {
    let encoding = tokenizer
        .encode(prompt, opts.add_special_tokens)
        .map_err(|e| ModelError::tokenizer("tokenizer.json", e))?;
    let ids = generate_ids(model, encoding.get_ids(), &opts)?;
    tokenizer
        .decode(&ids, true)
        .map_err(|e| ModelError::tokenizer("tokenizer.json", e))
}
