//! Sparsifiers of task vectors: magnitude top-k by selection and seeded Bernoulli (DARE) masks.
//!
//! **The DARE random generator.** PyTorch's Bernoulli stream cannot be reproduced bit for bit, so
//! clreg documents its own: for model index `m` (0-based, in recipe order) and tensor name `t`,
//! `key = splitmix64_next(seed ^ fnv1a64(t) ^ ((m + 1) · 0x9e3779b97f4a7c15))` ([`dare_key`]);
//! element `j` (row-major) is kept iff `u_j < density`, where `u_j` is the top 53 bits of the
//! `(j + 1)`-th output of a splitmix64 generator started at `key`, divided by 2⁵³
//! ([`dare_keep`]). Splitmix64's `n`-th output is a pure function of `key + n · γ`, so elements
//! are drawn in parallel yet equal the sequential stream.

use rayon::prelude::*;

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The DARE mask key of model `model` (0-based) on tensor `tensor` (see the module docs).
pub fn dare_key(seed: u64, tensor: &str, model: usize) -> u64 {
    let m = (model as u64).wrapping_add(1).wrapping_mul(GAMMA);
    mix((seed ^ fnv1a64(tensor) ^ m).wrapping_add(GAMMA))
}

/// The uniform draw in [0, 1) of element `j` under `key`.
#[inline]
pub fn dare_uniform(key: u64, j: usize) -> f64 {
    let z = mix(key.wrapping_add((j as u64).wrapping_add(1).wrapping_mul(GAMMA)));
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether DARE keeps element `j` at `density`.
#[inline]
pub fn dare_keep(key: u64, j: usize, density: f64) -> bool {
    dare_uniform(key, j) < density
}

/// Which entries of one task vector survive sparsification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// No sparsification (density ≥ 1).
    All,
    /// Magnitude top-k: `|δ| > t`, or `|δ| == t` at an index ≤ `last_tie` (ties at the threshold
    /// are kept in index order until k entries are kept).
    Magnitude { t: f32, last_tie: Option<usize> },
    /// Nothing survives (k = 0).
    Nothing,
    /// DARE: [`dare_keep`] with this key and density.
    Bernoulli { key: u64, density: f64 },
}

impl Keep {
    #[inline]
    pub fn keep(&self, j: usize, d: f32) -> bool {
        match *self {
            Self::All => true,
            Self::Nothing => false,
            Self::Magnitude { t, last_tie } => {
                let a = d.abs();
                a > t || (a == t && last_tie.is_some_and(|l| j <= l))
            }
            Self::Bernoulli { key, density } => dare_keep(key, j, density),
        }
    }
}

/// Elements per rayon task in the per-element passes.
pub(crate) const CHUNK: usize = 1 << 15;

/// The top-k mask of `delta` by magnitude, k = ⌊density · numel⌋, found by selection
/// (`select_nth_unstable`), not by sorting. `scratch` is reused between calls.
pub fn magnitude_keep(delta: &[f32], density: f64, scratch: &mut Vec<f32>) -> Keep {
    let n = delta.len();
    if density >= 1.0 {
        return Keep::All;
    }
    let k = (density * n as f64).floor() as usize;
    if k == 0 {
        return Keep::Nothing;
    }
    if k >= n {
        return Keep::All;
    }
    scratch.clear();
    scratch.extend(delta.iter().map(|d| d.abs()));
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let t = *kth;
    let (greater, equal) = delta
        .par_chunks(CHUNK)
        .map(|c| {
            c.iter().fold((0usize, 0usize), |(g, e), d| {
                let a = d.abs();
                (g + usize::from(a > t), e + usize::from(a == t))
            })
        })
        .reduce(|| (0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
    let need = k.saturating_sub(greater);
    let last_tie = if need == 0 {
        None
    } else if need >= equal {
        Some(usize::MAX)
    } else {
        delta
            .iter()
            .enumerate()
            .filter(|(_, d)| d.abs() == t)
            .nth(need - 1)
            .map(|(j, _)| j)
    };
    Keep::Magnitude { t, last_tie }
}

/// Σ|δ| and Σ|δ| over kept entries, in `f64`.
pub fn l1_norms(delta: &[f32], keep: &Keep) -> (f64, f64) {
    delta
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let base = c * CHUNK;
            chunk
                .iter()
                .enumerate()
                .fold((0f64, 0f64), |(all, kept), (i, d)| {
                    let a = f64::from(d.abs());
                    (
                        all + a,
                        if keep.keep(base + i, *d) {
                            kept + a
                        } else {
                            kept
                        },
                    )
                })
        })
        .reduce(|| (0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1))
}

/// mergekit's L1 rescale factor ‖δ‖₁ / ‖kept‖₁, or 1 when either norm is below 1e-7.
pub fn l1_rescale(delta: &[f32], keep: &Keep) -> f64 {
    if matches!(keep, Keep::All) {
        return 1.0;
    }
    let (before, after) = l1_norms(delta, keep);
    if before < 1e-7 || after < 1e-7 {
        1.0
    } else {
        before / after
    }
}
