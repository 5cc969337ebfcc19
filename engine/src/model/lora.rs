//! A linear layer with a frozen base weight and any number of stacked LoRA adapters:
//! y = W x + Σ sᵢ · Bᵢ(Aᵢ x). The base output is not scaled (unlike candle-lora).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use rayon::prelude::*;

use crate::tiny::SplitMix64;

/// Where the dropout masks of a forward pass come from: the micro-batch's key and the first
/// token of the micro-batch this pass sees. A trainer that splits a micro-batch into shards
/// (one forward pass each) gives every shard its own stream with its first token, so the shards
/// draw exactly the masks one pass over the whole micro-batch would.
#[derive(Debug, Default)]
pub struct DropoutStream {
    key: AtomicU64,
    first_token: AtomicU64,
}

impl DropoutStream {
    pub fn new(key: u64) -> Self {
        Self {
            key: AtomicU64::new(key),
            first_token: AtomicU64::new(0),
        }
    }

    /// The key of the next forward passes and the micro-batch token (row of the flattened
    /// `[tokens, in]` input) they start at.
    pub fn set(&self, key: u64, first_token: usize) {
        self.key.store(key, Ordering::Relaxed);
        self.first_token
            .store(first_token as u64, Ordering::Relaxed);
    }
}

/// LoRA dropout for training, PEFT's `lora_dropout`: the adapter sees `x · mask / (1 − p)`.
/// Masks are not drawn from a thread RNG: element j of a micro-batch's input `[tokens, in]` is
/// kept iff `splitmix64(key ^ module·0x9e3779b97f4a7c15)` output j+1 (>> 11, / 2⁵³) ≥ p, where
/// the trainer sets `key` for every micro-batch, so a run and its resumed copy draw the same
/// masks, however the micro-batch is split into shards.
#[derive(Debug)]
pub struct LoraDropout {
    pub p: f64,
    pub module: u64,
    pub stream: Arc<DropoutStream>,
}

impl LoraDropout {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let n = x.elem_count();
        let width = x.dims().last().copied().unwrap_or(1) as u64;
        let key = self.stream.key.load(Ordering::Relaxed)
            ^ self.module.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let first = self
            .stream
            .first_token
            .load(Ordering::Relaxed)
            .wrapping_mul(width);
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let p = self.p;
        // Chunks of 4096 start from their own position in the stream (a SplitMix64 seeded at
        // key + i·γ yields output i+1 first), so threads and shards agree.
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(4096)
            .enumerate()
            .for_each(|(c, chunk)| {
                let at = first.wrapping_add(c as u64 * 4096);
                let mut rng =
                    SplitMix64::new(key.wrapping_add(at.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                for m in chunk.iter_mut() {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    *m = if u >= p { keep } else { 0.0 };
                }
            });
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

/// One LoRA adapter on one linear module: `a` is `[r, in]`, `b` is `[out, r]`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// The variables behind `a` and `b` when the adapter is trainable.
    vars: Option<(Var, Var)>,
    /// Dropout on the adapter's input while training.
    pub dropout: Option<Arc<LoraDropout>>,
}

impl LoraAdapter {
    /// A frozen adapter from loaded tensors.
    pub fn new(a: Tensor, b: Tensor, scale: f64) -> Self {
        Self {
            a,
            b,
            scale,
            vars: None,
            dropout: None,
        }
    }

    /// A trainable adapter backed by candle variables: gradients of a loss reach `a` and `b`.
    pub fn from_vars(a: Var, b: Var, scale: f64) -> Self {
        Self {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale,
            vars: Some((a, b)),
            dropout: None,
        }
    }

    /// A fresh trainable adapter initialised as PEFT does: A Kaiming-uniform (a = √5, so
    /// U(−1/√in, 1/√in)) from `seed`, B zero, so it leaves the model unchanged until trained.
    pub fn init_trainable(
        in_features: usize,
        out_features: usize,
        r: usize,
        scale: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_features.max(1) as f64).sqrt();
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..r * in_features)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                ((2.0 * u - 1.0) * bound) as f32
            })
            .collect();
        let a = Tensor::from_vec(values, (r, in_features), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_features, r), dtype, device)?;
        Ok(Self::from_vars(
            Var::from_tensor(&a)?,
            Var::from_tensor(&b)?,
            scale,
        ))
    }

    /// The variables `(a, b)` when the adapter is trainable.
    pub fn vars(&self) -> Option<(&Var, &Var)> {
        self.vars.as_ref().map(|(a, b)| (a, b))
    }

    /// The rank r.
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// ΔW = s · B·A, `[out, in]`.
    pub fn delta_weight(&self) -> Result<Tensor> {
        self.b.matmul(&self.a)? * self.scale
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // `fused::linear` skips the gradient of a frozen A or B (earlier, stacked adapters).
        // Scaling the rank-r activations costs a pass over `[.., r]`, not over `[.., out]`.
        let h = match &self.dropout {
            Some(d) => super::fused::linear(&d.apply(x)?, &self.a)?,
            None => super::fused::linear(x, &self.a)?,
        };
        let h = (h * self.scale)?;
        super::fused::linear(&h, &self.b)
    }
}

/// A linear layer without bias whose weight stays frozen, with stacked LoRA adapters.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// The frozen base weight `[out, in]`.
    pub base: candle_nn::Linear,
    pub adapters: Vec<LoraAdapter>,
    /// Routed LoRA experts (LoRA-MoE) added on top of the adapters.
    pub moe: Option<super::moe::LoraMoe>,
}

impl LoraLinear {
    pub fn new(weight: Tensor) -> Self {
        Self {
            base: candle_nn::Linear::new(weight, None),
            adapters: Vec::new(),
            moe: None,
        }
    }

    /// `(out, in)` of the base weight.
    pub fn shape(&self) -> (usize, usize) {
        let dims = self.base.weight().dims();
        (
            dims.first().copied().unwrap_or(0),
            dims.get(1).copied().unwrap_or(0),
        )
    }

    /// The base weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.base.weight()
    }
}

impl Module for LoraLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The base weight is frozen unless full fine-tuning made it a variable: its gradient is
        // never computed then, which candle's matmul backward would do.
        let mut y = super::fused::linear(x, self.base.weight())?;
        for adapter in &self.adapters {
            y = (y + adapter.forward(x)?)?;
        }
        if let Some(moe) = &self.moe {
            y = (y + moe.forward(x)?)?;
        }
        Ok(y)
    }
}
