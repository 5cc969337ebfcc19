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
use crate::merge::task::{BLOCK, Block, SignMethod, Sparsify, TaskVector, keep_rule};

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
    let mut out = Vec::new();
    merge_into(tensor, base, len, tvs, p, &mut out);
    out
}

/// [`merge`] into `out`, resized to `len` (a buffer kept across tensors is not allocated
/// again).
pub fn merge_into(
    tensor: &str,
    base: Option<&[f32]>,
    len: usize,
    tvs: &[TaskVector],
    p: &PeftParams,
    out: &mut Vec<f32>,
) {
    let prune = p.combination.prune();
    let keeps: Vec<Keep> = tvs
        .iter()
        .map(|tv| keep_rule(prune, tv, tensor, p.seed))
        .collect();
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
    let elect = p.combination.elects();
    out.truncate(len);
    out.resize(len, 0.0);
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut block = Block::new(tvs.len());
            for (b, o) in chunk.chunks_mut(BLOCK).enumerate() {
                let (start, n) = (c * CHUNK + b * BLOCK, o.len());
                for (i, tv) in tvs.iter().enumerate() {
                    let divisor = divisors[i];
                    block.set_values(i, &keeps[i], tv.delta.as_deref(), start, n, |x| x / divisor);
                }
                if elect {
                    block.elect(p.sign, tvs.len(), n);
                }
                block.combine(tvs.len(), n, elect, |i, x| tvs[i].weight * x, |_| 1.0);
                for (j, o) in o.iter_mut().enumerate() {
                    let mixed = if elect {
                        block.mixed[j] / block.div[j].max(1.0)
                    } else {
                        block.mixed[j]
                    };
                    let b = base.map_or(0.0, |b| f64::from(b[start + j]));
                    *o = (b + p.lambda * mixed) as f32;
                }
            }
        });
}
