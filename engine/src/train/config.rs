//! The settings of one continue-training run, as recorded in `clreg_train.json` and compared
//! when a run resumes from a checkpoint.

use serde::{Deserialize, Serialize};

use super::TrainError;

/// What trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A fresh LoRA adapter on the targeted modules.
    Lora,
    /// Full fine-tuning: every parameter, or those matching `fft_params`.
    Fft,
    /// LoRA plus the O-LoRA orthogonality penalty against the earlier adapters.
    Olora,
}

impl Method {
    pub fn trains_adapter(self) -> bool {
        matches!(self, Self::Lora | Self::Olora)
    }
}

/// What happens to the earlier rounds' adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequentialMode {
    /// The study's: earlier adapters are merged into the weights, a fresh LoRA trains on top.
    Merged,
    /// Earlier adapters stay separate and frozen; only the new one trains.
    Stacked,
}

/// The O-LoRA penalty on Oᵢ = A_t · A_iᵀ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrthVariant {
    /// Σ|O| (RhuiDih/cl and cmnfriend/O-LoRA code).
    L1,
    /// Σ O² (the study's equation 2).
    Sq,
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    Linear,
    Cosine,
}

/// How the examples of one run are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataSchedule {
    /// The current task only.
    Plain,
    /// The current task whole plus round(fraction · |current|) examples of each earlier task.
    Replay { fraction: f64 },
    /// Every task at once, smaller ones upsampled.
    Joint,
}

/// LoRA settings of the new adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    /// Module names as PEFT's `target_modules` list (`q_proj`, `mlp.down_proj`, …).
    pub targets: Vec<String>,
}

impl Default for LoraOptions {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            rslora: false,
            targets: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl LoraOptions {
    /// s = alpha / r, or alpha / √r with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// O-LoRA settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OloraOptions {
    pub lambda: f64,
    pub variant: OrthVariant,
    /// cmnfriend/O-LoRA's λ₂ · Σ‖new LoRA parameter‖₂.
    pub lambda2: f64,
}

impl Default for OloraOptions {
    fn default() -> Self {
        Self {
            lambda: 0.5,
            variant: OrthVariant::L1,
            lambda2: 0.0,
        }
    }
}

/// Every setting of a run. Serialised into `clreg_train.json`; a resumed run must match it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    pub mode: SequentialMode,
    pub lora: LoraOptions,
    /// FFT: names (or `.`-suffixes / substrings) of the parameters that train; empty = all.
    pub fft_params: Vec<String>,
    pub olora: OloraOptions,
    pub schedule: DataSchedule,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub epochs: usize,
    /// Stop after this many optimizer steps (before the epochs run out).
    pub max_steps: Option<usize>,
    /// Tokens per example after truncation.
    pub max_len: usize,
    /// Concatenate examples into rows of `max_len` instead of padding each.
    pub packing: bool,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
    /// Seeds everything random: data order, replay sampling, LoRA init, dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Lora,
            mode: SequentialMode::Merged,
            lora: LoraOptions::default(),
            fft_params: Vec::new(),
            olora: OloraOptions::default(),
            schedule: DataSchedule::Plain,
            lr: 2e-5,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            batch_size: 4,
            grad_accum: 4,
            epochs: 1,
            max_steps: None,
            max_len: 512,
            packing: false,
            clip_grad: Some(1.0),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Refuses settings that cannot train, naming the setting and what to change.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::InvalidConfig(msg));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "learning rate {} must be a positive number",
                self.lr
            ));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be at least 1".into());
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("epochs must be at least 1 (or set max_steps)".into());
        }
        if self.max_steps == Some(0) {
            return bad("max_steps must be at least 1".into());
        }
        if self.max_len < 2 {
            return bad(format!(
                "max_len {} must be at least 2 tokens",
                self.max_len
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("Adam betas must be in [0, 1)".into());
        }
        if !(self.weight_decay >= 0.0 && self.adam_eps > 0.0) {
            return bad("weight decay must be ≥ 0 and the Adam epsilon > 0".into());
        }
        if let Some(c) = self.clip_grad
            && !(c.is_finite() && c > 0.0)
        {
            return bad(format!("clip_grad {c} must be a positive number"));
        }
        if let DataSchedule::Replay { fraction } = self.schedule
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return bad(format!("replay fraction {fraction} must be in (0, 1]"));
        }
        if self.method.trains_adapter() {
            let l = &self.lora;
            if l.r == 0 {
                return bad("LoRA rank r must be at least 1".into());
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                return bad(format!("lora alpha {} must be positive", l.alpha));
            }
            if !(0.0..1.0).contains(&l.dropout) {
                return bad(format!("lora dropout {} must be in [0, 1)", l.dropout));
            }
            if l.targets.is_empty() {
                return bad("LoRA needs at least one target module".into());
            }
        }
        if self.method == Method::Olora {
            let o = &self.olora;
            if !(o.lambda.is_finite()
                && o.lambda >= 0.0
                && o.lambda2.is_finite()
                && o.lambda2 >= 0.0)
            {
                return bad("O-LoRA lambda and lambda2 must be ≥ 0".into());
            }
        }
        Ok(())
    }
}
