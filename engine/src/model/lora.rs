//! A linear layer with a frozen base weight and any number of stacked LoRA adapters:
//! y = W x + Σ sᵢ · Bᵢ(Aᵢ x). The base output is not scaled (unlike candle-lora).

use candle_core::{DType, Device, Module, Result, Tensor, Var};

use crate::tiny::SplitMix64;

/// One LoRA adapter on one linear module: `a` is `[r, in]`, `b` is `[out, r]`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// The variables behind `a` and `b` when the adapter is trainable.
    vars: Option<(Var, Var)>,
}

impl LoraAdapter {
    /// A frozen adapter from loaded tensors.
    pub fn new(a: Tensor, b: Tensor, scale: f64) -> Self {
        Self {
            a,
            b,
            scale,
            vars: None,
        }
    }

    /// A trainable adapter backed by candle variables: gradients of a loss reach `a` and `b`.
    pub fn from_vars(a: Var, b: Var, scale: f64) -> Self {
        Self {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale,
            vars: Some((a, b)),
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
        let h = (super::fused::linear(x, &self.a)? * self.scale)?;
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
