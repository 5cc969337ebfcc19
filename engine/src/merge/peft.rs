//! The PEFT flavour of TIES, DARE-TIES, DARE-linear, magnitude pruning and task arithmetic
//! (huggingface/peft: src/peft/utils/merge_utils.py), one fused multi-threaded pass per tensor.
//!
//! Per tensor: prune each δᵢ without its weight (magnitude top-k, or Bernoulli then ÷density;
//! density ≥ 1 prunes nothing); elect the sign on the unweighted pruned values (`total`: sign of
//! Σpᵢ, `frequency`: sign of Σ sign(pᵢ), ties → +); the entries that agree (zeros never do)
//! contribute wᵢ·pᵢ, summed and divided by their COUNT (at least 1); without election the
//! weighted pruned values are summed. The result times λ is added to the base (λ = 1 is PEFT).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::merge::sparsify::{CHUNK, Keep};
use crate::merge::task::{SignMethod, Sparsify, TaskVector, keep_rule, sign};

/// PEFT's combination types on task vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeftCombination {
    /// PEFT's `linear` on A/B, `task_arithmetic` in merge_utils: Σ wᵢ δᵢ.
    #[serde(alias = "task_arithmetic")]
    Linear,
    Ties,
    DareTies,
    DareLinear,
    MagnitudePrune,
}

impl PeftCombination {
    fn prune(self) -> Option<Sparsify> {
        match self {
            Self::Linear => None,
            Self::Ties | Self::MagnitudePrune => Some(Sparsify::Magnitude),
            Self::DareTies | Self::DareLinear => Some(Sparsify::Bernoulli),
        }
    }

    fn elects(self) -> bool {
        matches!(self, Self::Ties | Self::DareTies)
    }
}

/// The parameters of one PEFT-flavour merge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeftParams {
    pub combination: PeftCombination,
    pub sign: SignMethod,
    pub lambda: f64,
    pub seed: u64,
}

/// Merges the task vectors of tensor `tensor`; adds the result to `base` when given, else
/// returns the mixed task vector (as `add_weighted_adapter` does for A and B).
pub fn merge(
    tensor: &str,
    base: Option<&[f32]>,
    len: usize,
    tvs: &[TaskVector],
    p: &PeftParams,
) -> Vec<f32> {
    let prune = p.combination.prune();
    let mut scratch = Vec::new();
    let keeps: Vec<Keep> = tvs
        .iter()
        .map(|tv| keep_rule(prune, tv, tensor, p.seed, &mut scratch))
        .collect();
    drop(scratch);
    // DARE rescales by 1/density whenever it prunes.
    let dare = prune == Some(Sparsify::Bernoulli);
    let divisors: Vec<f64> = tvs
        .iter()
        .map(|tv| {
            if dare && tv.density < 1.0 {
                tv.density
            } else {
                1.0
            }
        })
        .collect();
    let mut out = vec![0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let mut v = vec![0f64; tvs.len()];
            for (i, o) in chunk.iter_mut().enumerate() {
                let j = start + i;
                for (k, tv) in tvs.iter().enumerate() {
                    v[k] = match &tv.delta {
                        Some(d) if keeps[k].keep(j, d[j]) => f64::from(d[j]) / divisors[k],
                        _ => 0.0,
                    };
                }
                let mixed = if p.combination.elects() {
                    let score = match p.sign {
                        SignMethod::Sum => v.iter().sum::<f64>(),
                        SignMethod::Count => v.iter().map(|x| f64::from(sign(*x))).sum(),
                    };
                    let elected = if score >= 0.0 { 1 } else { -1 };
                    let (mut sum, mut count) = (0f64, 0usize);
                    for (x, tv) in v.iter().zip(tvs) {
                        if sign(*x) == elected {
                            sum += tv.weight * x;
                            count += 1;
                        }
                    }
                    sum / count.max(1) as f64
                } else {
                    v.iter().zip(tvs).map(|(x, tv)| tv.weight * x).sum()
                };
                let b = base.map_or(0.0, |b| f64::from(b[j]));
                *o = (b + p.lambda * mixed) as f32;
            }
        });
    out
}
