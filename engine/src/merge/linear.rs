//! Linear merging: Σ wᵢ θᵢ, divided by Σ wᵢ when normalising, one fused pass per tensor.

use rayon::prelude::*;

use crate::merge::sparsify::CHUNK;

/// Σ wᵢ θᵢ (÷ Σ wᵢ when `normalize`), accumulated in `f64`. The caller refuses Σ wᵢ = 0 with
/// `normalize`.
pub fn merge(thetas: &[&[f32]], weights: &[f64], normalize: bool) -> Vec<f32> {
    let mut out = Vec::new();
    merge_into(thetas, weights, normalize, &mut out);
    out
}

/// [`merge`] into `out`, resized to the tensor's length. A buffer kept across tensors is
/// neither reallocated nor zeroed again (every element is overwritten).
pub fn merge_into(thetas: &[&[f32]], weights: &[f64], normalize: bool, out: &mut Vec<f32>) {
    let len = thetas.first().map_or(0, |t| t.len());
    let total: f64 = weights.iter().sum();
    let div = if normalize { total } else { 1.0 };
    out.truncate(len);
    out.resize(len, 0.0);
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let end = start + chunk.len();
            let parts: Vec<&[f32]> = thetas.iter().map(|t| &t[start..end]).collect();
            for (i, o) in chunk.iter_mut().enumerate() {
                let acc: f64 = parts
                    .iter()
                    .zip(weights)
                    .map(|(t, w)| w * f64::from(t[i]))
                    .sum();
                *o = (acc / div) as f32;
            }
        });
}
