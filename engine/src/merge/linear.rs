//! Linear merging: Σ wᵢ θᵢ, divided by Σ wᵢ when normalising, one fused pass per tensor.

use rayon::prelude::*;

use crate::merge::sparsify::CHUNK;

/// Σ wᵢ θᵢ (÷ Σ wᵢ when `normalize`), accumulated in `f64`. The caller refuses Σ wᵢ = 0 with
/// `normalize`.
pub fn merge(thetas: &[&[f32]], weights: &[f64], normalize: bool) -> Vec<f32> {
    let len = thetas.first().map_or(0, |t| t.len());
    let total: f64 = weights.iter().sum();
    let div = if normalize { total } else { 1.0 };
    let mut out = vec![0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            for (i, o) in chunk.iter_mut().enumerate() {
                let j = start + i;
                let acc: f64 = thetas
                    .iter()
                    .zip(weights)
                    .map(|(t, w)| w * f64::from(t[j]))
                    .sum();
                *o = (acc / div) as f32;
            }
        });
    out
}
