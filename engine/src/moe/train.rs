//! Router training: only the routers of a mixture learn — the gates of a Mixtral checkpoint's
//! MoE layers, or the per-module routers of a LoRA-MoE bundle — on a calibration set, with
//! next-token cross-entropy plus Mixtral's load-balancing auxiliary loss over every router's
//! logits (coefficient default 0.01); AdamW, a progress callback (step, loss, tokens/s) and a
//! cancel flag. Experts and stem stay frozen.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::model::{FeedForward, LINEAR_MODULES, Llama, OpsMode};
use crate::moe::build::check_cancel;
use crate::moe::error::MoeError;
use crate::moe::record::TrainingRecord;
use crate::tiny::SplitMix64;

/// Mixtral's load-balancing loss coefficient clreg uses unless told otherwise.
pub const DEFAULT_AUX_COEF: f64 = 0.01;

/// The settings of router training, without its data: what a mix job's `config` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    /// Steps of one calibration sequence each.
    pub steps: usize,
    pub learning_rate: f64,
    pub aux_loss_coef: f64,
    /// Shuffles the order of the sequences.
    pub seed: u64,
    /// Sequences are cut to this many tokens.
    pub max_len: usize,
}

impl Default for RouterSettings {
    /// 100 steps, learning rate 1e-3, aux coefficient 0.01, seed 0, 256 tokens.
    fn default() -> Self {
        Self {
            steps: 100,
            learning_rate: 1e-3,
            aux_loss_coef: DEFAULT_AUX_COEF,
            seed: 0,
            max_len: 256,
        }
    }
}

impl RouterSettings {
    /// Refuses settings no training could use.
    pub fn check(&self) -> Result<(), MoeError> {
        if self.steps == 0 {
            return Err(MoeError::recipe(
                "router training needs `steps` of 1 or more",
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(MoeError::recipe(format!(
                "learning rate {} must be a positive number",
                self.learning_rate
            )));
        }
        if !(self.aux_loss_coef >= 0.0 && self.aux_loss_coef.is_finite()) {
            return Err(MoeError::recipe(format!(
                "aux_loss_coef {} must be zero or a positive number",
                self.aux_loss_coef
            )));
        }
        if self.max_len < 2 {
            return Err(MoeError::recipe(format!(
                "max_len {} must be 2 or more tokens",
                self.max_len
            )));
        }
        Ok(())
    }

    /// These settings on the calibration set at `data`.
    pub fn with_data(self, data: impl Into<PathBuf>) -> RouterTraining {
        RouterTraining {
            data: data.into(),
            steps: self.steps,
            learning_rate: self.learning_rate,
            aux_loss_coef: self.aux_loss_coef,
            seed: self.seed,
            max_len: self.max_len,
        }
    }
}

/// How to train the routers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterTraining {
    /// The calibration set: a TRACE file (a JSON array of `prompt`/`answer` objects), JSON
    /// lines with `text` (or `prompt` and `answer`), or plain lines.
    pub data: PathBuf,
    pub steps: usize,
    pub learning_rate: f64,
    pub aux_loss_coef: f64,
    /// Shuffles the order of the sequences.
    pub seed: u64,
    /// Sequences are cut to this many tokens.
    pub max_len: usize,
}

impl RouterTraining {
    /// [`RouterSettings::default`] on `data`.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        RouterSettings::default().with_data(data)
    }

    /// The settings without the data.
    pub fn settings(&self) -> RouterSettings {
        RouterSettings {
            steps: self.steps,
            learning_rate: self.learning_rate,
            aux_loss_coef: self.aux_loss_coef,
            seed: self.seed,
            max_len: self.max_len,
        }
    }
}

/// Where training stands, after each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    pub step: usize,
    pub steps: usize,
    /// Cross-entropy + coefficient · auxiliary loss.
    pub loss: f64,
    pub aux_loss: f64,
    pub tokens_per_s: f64,
}

/// The trained routers (per layer, `[experts, hidden]` row-major) and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub routers: Vec<Vec<f32>>,
    pub losses: Vec<f64>,
    pub record: TrainingRecord,
}

/// Reads and tokenizes a calibration file (a bos token first when the model has one), keeping
/// sequences of at least two tokens, cut to `max_len`.
pub fn read_calibration(
    path: &Path,
    tokenizer: &tokenizers::Tokenizer,
    bos: Option<u32>,
    max_len: usize,
) -> Result<Vec<Vec<u32>>, MoeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MoeError::input(path.display(), format!("cannot read: {e}")))?;
    // (where, text): where names the example or line in errors.
    let samples: Vec<(String, String)> = if text.trim_start().starts_with('[') {
        // A TRACE file: each example's prompt and answer, as the JSON-lines form joins them.
        crate::data::parse_trace(text.as_bytes(), &path.display().to_string())
            .map_err(|e| MoeError::input(path.display(), e.to_string()))?
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("example {i}"), format!("{} {}", e.prompt, e.answer)))
            .collect()
    } else {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() {
                samples.push((format!("line {}", i + 1), calibration_line(path, i, line)?));
            }
        }
        samples
    };
    let mut out = Vec::new();
    for (at, sample) in samples {
        let enc = tokenizer
            .encode(sample.as_str(), false)
            .map_err(|e| MoeError::input(path.display(), format!("{at}: cannot tokenize: {e}")))?;
        let mut ids: Vec<u32> = bos
            .into_iter()
            .chain(enc.get_ids().iter().copied())
            .collect();
        ids.truncate(max_len.max(2));
        if ids.len() >= 2 {
            out.push(ids);
        }
    }
    if out.is_empty() {
        return Err(MoeError::input(
            path.display(),
            "holds no sequence of two or more tokens to train on",
        ));
    }
    Ok(out)
}

/// The text of line `i` (0-based) of a JSON-lines or plain calibration file.
fn calibration_line(path: &Path, i: usize, line: &str) -> Result<String, MoeError> {
    if !line.starts_with('{') {
        return Ok(line.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| MoeError::input(path.display(), format!("line {}: not JSON: {e}", i + 1)))?;
    let get = |k: &str| v.get(k).and_then(|s| s.as_str());
    match (get("text"), get("prompt"), get("answer")) {
        (Some(t), _, _) => Ok(t.to_string()),
        (None, Some(p), Some(a)) => Ok(format!("{p} {a}")),
        _ => Err(MoeError::input(
            path.display(),
            format!(
                "line {}: needs a string `text`, or `prompt` and `answer`",
                i + 1
            ),
        )),
    }
}

/// Mixtral's load-balancing loss over the router logits of every layer (each `[tokens,
/// experts]`): E · Σ_e f_e · P_e, with f_e the share of top-k slots routed to e and P_e the mean
/// router probability of e (transformers' `load_balancing_loss_func`).
pub fn load_balancing_loss(logits: &[Tensor], top_k: usize) -> candle_core::Result<Tensor> {
    let all = Tensor::cat(logits, 0)?.to_dtype(DType::F32)?;
    let (tokens, experts) = all.dims2()?;
    let probs = crate::model::ops::softmax_last_dim(&all, OpsMode::Differentiable)?;
    let values = probs.to_vec2::<f32>()?;
    let mut f = vec![0f32; experts];
    for row in &values {
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        for &e in order.iter().take(top_k) {
            f[e] += 1.0 / tokens as f32;
        }
    }
    let f = Tensor::from_vec(f, experts, all.device())?;
    let p = probs.mean(0)?;
    (f * p)?.sum_all()? * experts as f64
}

/// The next-token cross-entropy of `ids` (mean over its predicted tokens).
pub fn sequence_loss(model: &Llama, ids: &[u32], mode: OpsMode) -> Result<Tensor, MoeError> {
    let input = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    let logits = model.forward_with(&input, 0, None, mode)?;
    let n = ids.len() - 1;
    let logits = logits.squeeze(0)?.narrow(0, 0, n)?;
    let targets = Tensor::new(&ids[1..], model.device())?;
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

/// The mean next-token cross-entropy over `data`, per sequence, without gradients.
pub fn mean_loss(model: &Llama, data: &[Vec<u32>]) -> Result<f64, MoeError> {
    let mut total = 0f64;
    for ids in data {
        total += f64::from(sequence_loss(model, ids, OpsMode::Fast)?.to_scalar::<f32>()?);
    }
    Ok(total / data.len().max(1) as f64)
}

/// Trains every router of `model` — its Mixtral layers' gates and its LoRA-MoE modules'
/// routers — on `data` for `opts.steps` steps of one sequence each; the experts and the stem
/// stay frozen. The model keeps the trained routers; the outcome lists them in the order the
/// model holds them (by layer; within a layer, the gate, then the modules in
/// [`LINEAR_MODULES`] order).
pub fn train_routers(
    model: &mut Llama,
    data: &[Vec<u32>],
    opts: &RouterTraining,
    progress: &dyn Fn(TrainProgress),
    cancel: &AtomicBool,
) -> Result<TrainOutcome, MoeError> {
    if data.is_empty() {
        return Err(MoeError::input(
            opts.data.display(),
            "no training sequences",
        ));
    }
    opts.settings().check()?;
    let log: Arc<Mutex<Vec<Tensor>>> = Arc::new(Mutex::new(Vec::new()));
    let mut vars: Vec<Var> = Vec::new();
    let mut top_k = 2;
    for layer in &mut model.layers {
        if let FeedForward::Moe(moe) = &mut layer.mlp {
            vars.push(moe.trainable_gate()?);
            moe.set_router_log(Some(log.clone()));
            top_k = moe.top_k;
        }
        for m in LINEAR_MODULES {
            if let Some(moe) = layer.linear_mut(m).and_then(|l| l.moe.as_mut()) {
                vars.push(moe.trainable_router()?);
                moe.set_router_log(Some(log.clone()));
                top_k = moe.top_k;
            }
        }
    }
    if vars.is_empty() {
        return Err(MoeError::input(
            opts.data.display(),
            "the model has no router that could train (no MoE layer, no LoRA-MoE module)",
        ));
    }
    let params = ParamsAdamW {
        lr: opts.learning_rate,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::new(vars.clone(), params)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = SplitMix64::new(opts.seed);
    let mut losses = Vec::with_capacity(opts.steps);
    let result = (|| -> Result<(), MoeError> {
        for step in 0..opts.steps {
            check_cancel(cancel)?;
            if step % order.len() == 0 {
                // Fisher–Yates with the seeded generator: a fresh order each epoch.
                for i in (1..order.len()).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
            let ids = &data[order[step % order.len()]];
            let started = Instant::now();
            if let Ok(mut l) = log.lock() {
                l.clear();
            }
            let ce = sequence_loss(model, ids, OpsMode::Differentiable)?;
            let logits: Vec<Tensor> = log
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            let aux = load_balancing_loss(&logits, top_k)?;
            let loss = (ce + (&aux * opts.aux_loss_coef)?)?;
            opt.backward_step(&loss)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            losses.push(value);
            progress(TrainProgress {
                step: step + 1,
                steps: opts.steps,
                loss: value,
                aux_loss: f64::from(aux.to_scalar::<f32>()?),
                tokens_per_s: ids.len() as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
        }
        Ok(())
    })();
    for layer in &mut model.layers {
        if let FeedForward::Moe(moe) = &mut layer.mlp {
            moe.set_router_log(None);
        }
        for m in LINEAR_MODULES {
            if let Some(moe) = layer.linear_mut(m).and_then(|l| l.moe.as_mut()) {
                moe.set_router_log(None);
            }
        }
    }
    result?;
    let routers = vars
        .iter()
        .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let data_sha256 = crate::merge::record::sha256_file(&opts.data).unwrap_or_default();
    Ok(TrainOutcome {
        routers,
        record: TrainingRecord {
            data: opts.data.clone(),
            data_sha256,
            steps: opts.steps,
            learning_rate: opts.learning_rate,
            aux_loss_coef: opts.aux_loss_coef,
            seed: opts.seed,
            sequences: data.len(),
            first_loss: losses.first().copied().unwrap_or(f64::NAN),
            last_loss: losses.last().copied().unwrap_or(f64::NAN),
        },
        losses,
    })
}
