//! A full fine-tune's weight delta as a LoRA expert: the rank-r truncated SVD of
//! ΔW = W_ft − W_base, B = U_r S_r, A = V_rᵀ (moetify's decompose option), in f64.

use crate::merge::svd::truncated_svd;

/// The rank-`rank` LoRA factors `(a [rank, inp], b [out, rank])` of `delta` (`[out, inp]`,
/// row-major) with scale 1: B·A is the best rank-`rank` approximation of the delta, and the
/// delta itself when `rank ≥ min(out, inp)`.
pub fn decompose_delta(delta: &[f32], out: usize, inp: usize, rank: usize) -> (Vec<f32>, Vec<f32>) {
    let d: Vec<f64> = delta.iter().map(|x| f64::from(*x)).collect();
    // ΔW = ΔW · I or I · ΔW: the identity on the smaller side keeps the core k × k small.
    let t = if inp <= out {
        let eye = identity(inp);
        truncated_svd(&d, &eye, out, inp, inp, rank)
    } else {
        let eye = identity(out);
        truncated_svd(&eye, &d, out, out, inp, rank)
    };
    (
        t.a.iter().map(|x| *x as f32).collect(),
        t.b.iter().map(|x| *x as f32).collect(),
    )
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0f64; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}
