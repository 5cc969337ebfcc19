//! Mixture-of-experts blocks: Mixtral's sparse feed-forward (router → softmax → top-k →
//! renormalise over SwiGLU experts) and LoRA-MoE (routed LoRA experts on one linear module,
//! y = W x + Σ_{e∈top-k} g_e(x) · s_e · B_e A_e x).

use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Module, Result, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::llama::Mlp;
use super::lora::LoraLinear;
use super::ops::{self, OpsMode};
use crate::config::LlamaConfig;

/// How router logits become expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateNorm {
    /// Softmax over all experts, keep the top k, renormalise them to sum to 1 (Mixtral).
    #[default]
    Softmax,
    /// Each expert's weight is sigmoid(logit), every expert active (dense).
    Sigmoid,
}

/// Router logits of every MoE layer seen since the last `take`, for the load-balancing loss.
pub type RouterLog = Arc<Mutex<Vec<Tensor>>>;

/// The expert weights `[tokens, experts]` (zero outside the chosen experts) for router logits
/// `[tokens, experts]`, and for each expert the rows (tokens) routed to it.
///
/// Top-k picks the largest probabilities; ties go to the lower expert index, as
/// candle-transformers' Mixtral does (a stable sort). The weights stay differentiable with
/// respect to the logits; the choice of experts does not.
pub fn route(
    logits: &Tensor,
    top_k: usize,
    norm: GateNorm,
    mode: OpsMode,
) -> Result<(Tensor, Vec<Vec<u32>>)> {
    let logits = logits.to_dtype(DType::F32)?;
    let (tokens, experts) = logits.dims2()?;
    if norm == GateNorm::Sigmoid {
        let w = candle_nn::ops::sigmoid(&logits)?;
        let rows = vec![(0..tokens as u32).collect(); experts];
        return Ok((w, rows));
    }
    let probs = ops::softmax_last_dim(&logits, mode)?;
    let values = probs.to_vec2::<f32>()?;
    let mut mask = vec![0f32; tokens * experts];
    let mut rows = vec![Vec::new(); experts];
    let k = top_k.min(experts);
    for (t, row) in values.iter().enumerate() {
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        for &e in order.iter().take(k) {
            mask[t * experts + e] = 1.0;
            rows[e].push(t as u32);
        }
    }
    if k == experts {
        return Ok((probs, rows));
    }
    let mask = Tensor::from_vec(mask, (tokens, experts), logits.device())?;
    let kept = (probs * mask)?;
    let w = kept.broadcast_div(&kept.sum_keepdim(D::Minus1)?)?;
    Ok((w, rows))
}

/// Mixtral's sparse MoE feed-forward: a router `[experts, hidden]` and SwiGLU experts
/// (`w1` = gate, `w3` = up, `w2` = down).
#[derive(Debug, Clone)]
pub struct SparseMoe {
    /// The router weight `[experts, hidden]`.
    pub gate: Tensor,
    gate_var: Option<Var>,
    pub experts: Vec<Mlp>,
    pub top_k: usize,
    log: Option<RouterLog>,
}

impl SparseMoe {
    /// Builds the block from `vb` at `model.layers.{l}.block_sparse_moe`.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let n = cfg.num_local_experts().unwrap_or(0);
        let gate = vb.pp("gate").get((n, h), "weight")?;
        let experts = (0..n)
            .map(|e| {
                let vb = vb.pp("experts").pp(e);
                Ok(Mlp {
                    gate_proj: LoraLinear::new(vb.pp("w1").get((i, h), "weight")?),
                    up_proj: LoraLinear::new(vb.pp("w3").get((i, h), "weight")?),
                    down_proj: LoraLinear::new(vb.pp("w2").get((h, i), "weight")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gate,
            gate_var: None,
            experts,
            top_k: cfg.num_experts_per_tok(),
            log: None,
        })
    }

    /// Makes the router trainable and returns its variable (the experts stay frozen).
    pub fn trainable_gate(&mut self) -> Result<Var> {
        if let Some(v) = &self.gate_var {
            return Ok(v.clone());
        }
        let var = Var::from_tensor(&self.gate.to_dtype(DType::F32)?)?;
        self.gate = var.as_tensor().clone();
        self.gate_var = Some(var.clone());
        Ok(var)
    }

    /// Replaces the router weight (`[experts, hidden]`).
    pub fn set_gate(&mut self, gate: Tensor) -> Result<()> {
        if gate.dims() != self.gate.dims() {
            candle_core::bail!(
                "router of shape {:?} where {:?} is needed",
                gate.dims(),
                self.gate.dims()
            );
        }
        self.gate = gate;
        self.gate_var = None;
        Ok(())
    }

    /// Appends this block's router logits to `log` on every forward pass (`None` stops it).
    pub fn set_router_log(&mut self, log: Option<RouterLog>) {
        self.log = log;
    }

    /// The output for `x` (`[batch, seq, hidden]`).
    pub fn forward(&self, x: &Tensor, mode: OpsMode) -> Result<Tensor> {
        let (b, seq, h) = x.dims3()?;
        let xs = x.reshape((b * seq, h))?;
        let logits = xs
            .to_dtype(DType::F32)?
            .matmul(&self.gate.to_dtype(DType::F32)?.t()?)?;
        if let Some(log) = &self.log
            && let Ok(mut l) = log.lock()
        {
            l.push(logits.clone());
        }
        let (weights, rows) = route(&logits, self.top_k, GateNorm::Softmax, mode)?;
        let weights = weights.to_dtype(x.dtype())?;
        let mut ys = xs.zeros_like()?;
        for (e, expert) in self.experts.iter().enumerate() {
            let Some(r) = rows.get(e).filter(|r| !r.is_empty()) else {
                continue;
            };
            let idx = Tensor::new(r.as_slice(), x.device())?;
            let w = weights
                .narrow(1, e, 1)?
                .contiguous()?
                .index_select(&idx, 0)?;
            let out = expert.forward(&xs.index_select(&idx, 0)?)?;
            ys = ys.index_add(&idx, &out.broadcast_mul(&w)?, 0)?;
        }
        ys.reshape((b, seq, h))
    }
}

/// The feed-forward part of a decoder layer: a dense SwiGLU MLP or a sparse MoE.
#[derive(Debug, Clone)]
pub enum FeedForward {
    Dense(Box<Mlp>),
    Moe(SparseMoe),
}

impl FeedForward {
    pub fn forward(&self, x: &Tensor, mode: OpsMode) -> Result<Tensor> {
        match self {
            Self::Dense(m) => m.forward(x),
            Self::Moe(m) => m.forward(x, mode),
        }
    }
}

/// LoRA experts routed per token on one linear module: adds
/// Σ_{e∈top-k} g_e(x) · s_e · B_e A_e x to the module's output.
///
/// Experts of lower rank are zero-padded to the largest rank (exact: the padded rows of A and
/// columns of B are zero), so all experts run as one `[N·r, in]` and one `[out, N·r]` matmul.
#[derive(Debug, Clone)]
pub struct LoraMoe {
    /// The router `[experts, in]`.
    pub router: Tensor,
    router_var: Option<Var>,
    /// Every expert's A stacked, `[experts · rank, in]`.
    a: Tensor,
    /// Every expert's s·B side by side, `[out, experts · rank]`.
    b: Tensor,
    pub num_experts: usize,
    pub rank: usize,
    pub top_k: usize,
    pub norm: GateNorm,
    log: Option<RouterLog>,
}

impl LoraMoe {
    /// `experts` are `(A [r_e, in], B [out, r_e], scale)`; `router` is `[experts, in]`.
    pub fn new(
        router: Tensor,
        experts: &[(Tensor, Tensor, f64)],
        top_k: usize,
        norm: GateNorm,
    ) -> Result<Self> {
        let n = experts.len();
        let Some((a0, b0, _)) = experts.first() else {
            candle_core::bail!("a LoRA-MoE module needs at least one expert");
        };
        let (inp, out) = (a0.dim(1)?, b0.dim(0)?);
        let rank = experts
            .iter()
            .map(|(a, _, _)| a.dim(0))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        if router.dims() != [n, inp] {
            candle_core::bail!(
                "router of shape {:?} where [{n}, {inp}] is needed",
                router.dims()
            );
        }
        let mut a_parts = Vec::with_capacity(n);
        let mut b_parts = Vec::with_capacity(n);
        for (a, b, scale) in experts {
            let r = a.dim(0)?;
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                candle_core::bail!(
                    "expert with A {:?} and B {:?} where [r, {inp}] and [{out}, r] are needed",
                    a.dims(),
                    b.dims()
                );
            }
            let (a, b) = if r < rank {
                (
                    Tensor::cat(
                        &[a, &Tensor::zeros((rank - r, inp), a.dtype(), a.device())?],
                        0,
                    )?,
                    Tensor::cat(
                        &[b, &Tensor::zeros((out, rank - r), b.dtype(), b.device())?],
                        1,
                    )?,
                )
            } else {
                (a.clone(), b.clone())
            };
            a_parts.push(a);
            b_parts.push((b * *scale)?);
        }
        Ok(Self {
            router,
            router_var: None,
            a: Tensor::cat(&a_parts, 0)?,
            b: Tensor::cat(&b_parts, 1)?,
            num_experts: n,
            rank,
            top_k: top_k.clamp(1, n.max(1)),
            norm,
            log: None,
        })
    }

    /// Makes the router trainable and returns its variable.
    pub fn trainable_router(&mut self) -> Result<Var> {
        if let Some(v) = &self.router_var {
            return Ok(v.clone());
        }
        let var = Var::from_tensor(&self.router.to_dtype(DType::F32)?)?;
        self.router = var.as_tensor().clone();
        self.router_var = Some(var.clone());
        Ok(var)
    }

    /// Appends this module's router logits to `log` on every forward pass (`None` stops it).
    pub fn set_router_log(&mut self, log: Option<RouterLog>) {
        self.log = log;
    }

    /// The expert weights `[tokens, experts]` for inputs `x` (`[…, in]`).
    pub fn gates(&self, x: &Tensor) -> Result<Tensor> {
        let inp = x.dim(D::Minus1)?;
        let xs = x.reshape(((), inp))?.to_dtype(DType::F32)?;
        let logits = xs.matmul(&self.router.to_dtype(DType::F32)?.t()?)?;
        if let Some(log) = &self.log
            && let Ok(mut l) = log.lock()
        {
            l.push(logits.clone());
        }
        Ok(route(&logits, self.top_k, self.norm, OpsMode::Differentiable)?.0)
    }

    /// The mixture's contribution for `x` (`[…, in]`), shaped `[…, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let inp = dims.pop().unwrap_or(0);
        let xs = x.reshape(((), inp))?;
        let tokens = xs.dim(0)?;
        let g = self.gates(&xs)?.to_dtype(x.dtype())?;
        let g = g
            .unsqueeze(2)?
            .broadcast_as((tokens, self.num_experts, self.rank))?
            .reshape((tokens, self.num_experts * self.rank))?;
        let h = xs.matmul(&self.a.t()?)?;
        let y = (h * g)?.matmul(&self.b.t()?)?;
        dims.push(y.dim(1)?);
        y.reshape(dims)
    }
}

impl Module for LoraMoe {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        LoraMoe::forward(self, x)
    }
}
