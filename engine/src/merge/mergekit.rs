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

use crate::merge::sparsify::{self, CHUNK};
use crate::merge::task::{BLOCK, Block, SignMethod, Sparsify, TaskVector, keep_rule};

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
    let mut out = Vec::new();
    merge_into(tensor, base, tvs, p, &mut out);
    out
}

/// [`merge`] into `out`, resized to the tensor's length (a buffer kept across tensors is not
/// allocated again).
pub fn merge_into(
    tensor: &str,
    base: &[f32],
    tvs: &[TaskVector],
    p: &MergekitParams,
    out: &mut Vec<f32>,
) {
    let mut coefs = Vec::with_capacity(tvs.len());
    let mut keeps = Vec::with_capacity(tvs.len());
    for tv in tvs {
        let keep = keep_rule(p.sparsify, tv, tensor, p.seed);
        let factor = match (&tv.delta, p.rescale) {
            (Some(d), true) => sparsify::l1_rescale(d, &keep),
            _ => 1.0,
        };
        keeps.push(keep);
        coefs.push(tv.weight * factor);
    }
    let total_weight: f64 = tvs.iter().map(|t| t.weight).sum();
    let global_div = if total_weight.abs() < 1e-8 {
        1.0
    } else {
        total_weight
    };
    out.truncate(base.len());
    out.resize(base.len(), 0.0);
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut block = Block::new(tvs.len());
            for (b, o) in chunk.chunks_mut(BLOCK).enumerate() {
                let (start, n) = (c * CHUNK + b * BLOCK, o.len());
                for (i, tv) in tvs.iter().enumerate() {
                    let coef = coefs[i];
                    block.set_values(i, &keeps[i], tv.delta.as_deref(), start, n, |x| coef * x);
                }
                if let Some(method) = p.consensus {
                    block.elect(method, tvs.len(), n);
                }
                let elect = p.consensus.is_some();
                block.combine(tvs.len(), n, elect, |_, x| x, |i| tvs[i].weight);
                let base = &base[start..start + n];
                let rows = o.iter_mut().zip(base).zip(&block.mixed[..n]);
                match (p.normalize, elect) {
                    (true, true) => rows.zip(&block.div[..n]).for_each(|(((o, b), m), d)| {
                        let div = if *d == 0.0 { 1.0 } else { *d };
                        *o = (f64::from(*b) + p.lambda * (m / div)) as f32;
                    }),
                    (true, false) => rows.for_each(|((o, b), m)| {
                        *o = (f64::from(*b) + p.lambda * (m / global_div)) as f32;
                    }),
                    (false, _) => rows.for_each(|((o, b), m)| {
                        *o = (f64::from(*b) + p.lambda * m) as f32;
                    }),
                }
            }
        });
}
