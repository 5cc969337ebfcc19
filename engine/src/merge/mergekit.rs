//! The mergekit flavour of task arithmetic, TIES, DARE-TIES and DARE-linear, one fused
//! multi-threaded pass per tensor (arcee-ai/mergekit: merge_methods/generalized_task_arithmetic.py,
//! sparsify.py).
//!
//! Per tensor: sparsify each δᵢ at its density (magnitude top-k, k = ⌊density·numel⌋, or
//! Bernoulli); with `rescale` multiply the kept entries by ‖δᵢ‖₁/‖kept‖₁ (skipped when either is
//! below 1e-7); weight: vᵢ = wᵢ·δᵢ; with sign election keep vᵢ whose sign equals the elected sign
//! (`sum`: sign of Σvᵢ, `count`: sign of Σ sign(vᵢ), ties → +; zeros never agree), mixed = Σ kept
//! vᵢ, divisor Σ wᵢ over kept (0 → 1); without election mixed = Σvᵢ, divisor Σwᵢ; when
//! `normalize` divide; multiply by λ; add to the base.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::merge::sparsify::{self, CHUNK, Keep};
use crate::merge::task::{SignMethod, Sparsify, TaskVector, keep_rule, sign};

/// The parameters of one mergekit-flavour merge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MergekitParams {
    pub sparsify: Option<Sparsify>,
    /// `None`: no sign election (task arithmetic, DARE-linear).
    pub consensus: Option<SignMethod>,
    pub normalize: bool,
    pub rescale: bool,
    pub lambda: f64,
    pub seed: u64,
}

/// Merges the task vectors of tensor `tensor` into `base`.
pub fn merge(tensor: &str, base: &[f32], tvs: &[TaskVector], p: &MergekitParams) -> Vec<f32> {
    let mut scratch = Vec::new();
    let mut keeps = Vec::with_capacity(tvs.len());
    let mut factors = Vec::with_capacity(tvs.len());
    for tv in tvs {
        let keep = keep_rule(p.sparsify, tv, tensor, p.seed, &mut scratch);
        let factor = match (&tv.delta, p.rescale) {
            (Some(d), true) => sparsify::l1_rescale(d, &keep),
            _ => 1.0,
        };
        keeps.push(keep);
        factors.push(factor);
    }
    drop(scratch);
    let total_weight: f64 = tvs.iter().map(|t| t.weight).sum();
    let global_div = if total_weight.abs() < 1e-8 {
        1.0
    } else {
        total_weight
    };
    let mut out = vec![0f32; base.len()];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let mut v = vec![0f64; tvs.len()];
            for (i, o) in chunk.iter_mut().enumerate() {
                let j = start + i;
                *o = element(j, base[j], tvs, &keeps, &factors, p, global_div, &mut v);
            }
        });
    out
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn element(
    j: usize,
    base: f32,
    tvs: &[TaskVector],
    keeps: &[Keep],
    factors: &[f64],
    p: &MergekitParams,
    global_div: f64,
    v: &mut [f64],
) -> f32 {
    for (i, tv) in tvs.iter().enumerate() {
        v[i] = match &tv.delta {
            Some(d) if keeps[i].keep(j, d[j]) => tv.weight * factors[i] * f64::from(d[j]),
            _ => 0.0,
        };
    }
    let (mixed, div) = match p.consensus {
        None => (v.iter().sum::<f64>(), global_div),
        Some(method) => {
            let score = match method {
                SignMethod::Sum => v.iter().sum::<f64>(),
                SignMethod::Count => v.iter().map(|x| f64::from(sign(*x))).sum(),
            };
            let elected = if score >= 0.0 { 1 } else { -1 };
            let (mut mixed, mut div) = (0f64, 0f64);
            for (x, tv) in v.iter().zip(tvs) {
                if sign(*x) == elected {
                    mixed += x;
                    div += tv.weight;
                }
            }
            (mixed, if div == 0.0 { 1.0 } else { div })
        }
    };
    let mixed = if p.normalize { mixed / div } else { mixed };
    (f64::from(base) + p.lambda * mixed) as f32
}
