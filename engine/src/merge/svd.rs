//! Truncated SVD of a low-rank product ΔW = Bc·Ac in `f64`, for LoRA → LoRA `svd` merges.
//!
//! ΔW = Σ wᵢ sᵢ Bᵢ Aᵢ is never formed: with Bc = [B₁ … Bₙ] (`[m, k]`) and Ac the stacked
//! wᵢ sᵢ Aᵢ (`[k, n]`), thin QR factorisations Bc = Q_B R_B and Acᵀ = Q_A R_A (classical
//! Gram–Schmidt with re-orthogonalisation) reduce the problem to the `k × k` core
//! M = R_B R_Aᵀ, whose SVD comes from one-sided Jacobi rotations. Then ΔW = (Q_B U) S (Q_A V)ᵀ
//! exactly, and the rank-r truncation is B = Q_B U_r S_r, A = (Q_A V_r)ᵀ.

/// Thin QR of the `[rows, cols]` row-major matrix `x`: `q` is `[rows, cols]` with orthonormal
/// (or zero, for dependent columns) columns, `r` is `[cols, cols]` upper triangular.
fn thin_qr(x: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut q = vec![0f64; rows * cols];
    let mut r = vec![0f64; cols * cols];
    let max_norm = (0..cols)
        .map(|c| {
            (0..rows)
                .map(|i| x[i * cols + c].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .fold(0f64, f64::max);
    let tol = max_norm * 1e-13;
    let mut v = vec![0f64; rows];
    for c in 0..cols {
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = x[i * cols + c];
        }
        for _pass in 0..2 {
            for p in 0..c {
                let dot: f64 = (0..rows).map(|i| q[i * cols + p] * v[i]).sum();
                r[p * cols + c] += dot;
                for (i, vi) in v.iter_mut().enumerate() {
                    *vi -= dot * q[i * cols + p];
                }
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > tol && norm > 0.0 {
            r[c * cols + c] = norm;
            for (i, vi) in v.iter().enumerate() {
                q[i * cols + c] = vi / norm;
            }
        }
    }
    (q, r)
}

/// The SVD of a square `k × k` row-major matrix by one-sided Jacobi: `(u, s, v)` with `u`, `v`
/// `k × k` row-major (singular vectors in columns) and `s` descending.
pub fn jacobi_svd(m: &[f64], k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0f64; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..k {
            for q in p + 1..k {
                let (mut alpha, mut beta, mut gamma) = (0f64, 0f64, 0f64);
                for i in 0..k {
                    let (x, y) = (a[i * k + p], a[i * k + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for mat in [&mut a, &mut v] {
                    for i in 0..k {
                        let (x, y) = (mat[i * k + p], mat[i * k + q]);
                        mat[i * k + p] = c * x - s * y;
                        mat[i * k + q] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let sig: Vec<f64> = (0..k)
        .map(|c| (0..k).map(|i| a[i * k + c].powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|x, y| sig[*y].total_cmp(&sig[*x]));
    let mut u = vec![0f64; k * k];
    let mut vs = vec![0f64; k * k];
    let mut s = vec![0f64; k];
    for (new, &old) in order.iter().enumerate() {
        s[new] = sig[old];
        for i in 0..k {
            if sig[old] > 0.0 {
                u[i * k + new] = a[i * k + old] / sig[old];
            }
            vs[i * k + new] = v[i * k + old];
        }
    }
    (u, s, vs)
}

/// A rank-r factorisation B·A with B `[out, r]`, A `[r, inp]`, row-major, and the singular
/// values of the product it was truncated from.
#[derive(Debug, Clone, PartialEq)]
pub struct Truncated {
    pub b: Vec<f64>,
    pub a: Vec<f64>,
    pub singular_values: Vec<f64>,
}

/// The best rank-`rank` approximation of `bc · ac` (`bc` `[out, k]`, `ac` `[k, inp]`): B = U_r S_r,
/// A = V_rᵀ. Components beyond the product's rank are zero.
pub fn truncated_svd(
    bc: &[f64],
    ac: &[f64],
    out: usize,
    k: usize,
    inp: usize,
    rank: usize,
) -> Truncated {
    let (qb, rb) = thin_qr(bc, out, k);
    let mut act = vec![0f64; inp * k];
    for i in 0..k {
        for j in 0..inp {
            act[j * k + i] = ac[i * inp + j];
        }
    }
    let (qa, ra) = thin_qr(&act, inp, k);
    // M = R_B · R_Aᵀ
    let mut m = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            m[i * k + j] = (0..k).map(|l| rb[i * k + l] * ra[j * k + l]).sum();
        }
    }
    let (u, s, v) = jacobi_svd(&m, k);
    let mut b = vec![0f64; out * rank];
    let mut a = vec![0f64; rank * inp];
    for c in 0..rank.min(k) {
        for row in 0..out {
            let x: f64 = (0..k).map(|l| qb[row * k + l] * u[l * k + c]).sum();
            b[row * rank + c] = x * s[c];
        }
        for col in 0..inp {
            a[c * inp + col] = (0..k).map(|l| qa[col * k + l] * v[l * k + c]).sum();
        }
    }
    Truncated {
        b,
        a,
        singular_values: s,
    }
}
