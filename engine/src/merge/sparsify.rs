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

/// Entries sampled to bracket the threshold of a magnitude top-k.
const SAMPLE: usize = 1 << 14;

/// Consecutive entries per run of the sample.
const SAMPLE_RUN: usize = 16;

/// |x|'s bits. For non-negative floats (NaN included) the order of these integers is
/// `f32::total_cmp`'s order, so the k-th largest |δ| is the k-th largest of these bits.
#[inline]
fn abs_bits(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// Bits above +inf's are NaNs.
const INF_BITS: u32 = 0x7f80_0000;

/// The k-th largest (1-based) of `bits`, in place.
fn select_kth(bits: &mut [u32], k: usize) -> u32 {
    *bits.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1
}

/// The k-th largest |δ|'s bits, with how many entries lie above it and at it, and whether δ
/// holds a NaN; `None` when the sample's bracket missed it.
///
/// A sample of [`SAMPLE`] entries, in runs spread evenly over δ, gives two bits values that bracket the threshold with
/// a wide margin (±4σ of the sample rank plus 16 entries); one parallel pass counts the entries
/// above the bracket and collects those inside it (a few percent), and a selection over those
/// alone gives the threshold.
fn bracketed_threshold(
    delta: &[f32],
    k: usize,
    sample: usize,
) -> Option<(u32, usize, usize, bool)> {
    let n = delta.len();
    // Runs of 16 consecutive entries (one cache line each): a lone entry per stride costs a
    // cache and TLB miss for every sampled entry.
    let runs = sample.div_ceil(SAMPLE_RUN);
    let stride = n / runs;
    let mut s: Vec<u32> = (0..runs)
        .flat_map(|r| &delta[r * stride..(r * stride + SAMPLE_RUN).min(n)])
        .map(|x| abs_bits(*x))
        .collect();
    let sample = s.len();
    let p = k as f64 / n as f64;
    let rank = p * sample as f64;
    let margin = 4.0 * (sample as f64 * p * (1.0 - p)).sqrt() + 16.0;
    // The bracket [lo, hi] in bits; an end beyond the sample is open.
    let hi_rank = (rank - margin).floor();
    let lo_rank = (rank + margin).ceil();
    let hi = if hi_rank < 1.0 {
        u32::MAX
    } else {
        select_kth(&mut s, hi_rank as usize)
    };
    let lo = if lo_rank > sample as f64 {
        0
    } else {
        select_kth(&mut s, lo_rank as usize)
    };
    // `lo <= b <= hi` as one unsigned comparison: `b - lo` wraps past `width` below `lo`.
    let width = hi - lo;
    let (above, nan, mut inside) = delta
        .par_chunks(CHUNK)
        .map(move |c| {
            // One pass in groups of 16: the counts and an "any inside" flag vectorise, and only
            // the groups that hold an entry inside the bracket (a few percent of entries, so
            // about a third of the groups) are scanned again to collect it.
            let (mut above, mut nan) = (0u32, 0u32);
            let mut inside = Vec::with_capacity(c.len() / 16);
            let mut group = |g: &[f32]| {
                let mut any = false;
                for x in g {
                    let b = abs_bits(*x);
                    above += u32::from(b > hi);
                    nan += u32::from(b > INF_BITS);
                    any |= b.wrapping_sub(lo) <= width;
                }
                if any {
                    inside.extend(
                        g.iter()
                            .map(|x| abs_bits(*x))
                            .filter(|b| b.wrapping_sub(lo) <= width),
                    );
                }
            };
            let groups = c.chunks_exact(16);
            let rest = groups.remainder();
            groups.for_each(&mut group);
            group(rest);
            (above as usize, nan as usize, inside)
        })
        .reduce(
            || (0, 0, Vec::new()),
            |mut x, mut y| {
                x.2.append(&mut y.2);
                (x.0 + y.0, x.1 + y.1, x.2)
            },
        );
    if k <= above || k > above + inside.len() {
        return None;
    }
    let t = select_kth(&mut inside, k - above);
    let greater = above + inside.iter().filter(|b| **b > t).count();
    let equal = inside.iter().filter(|b| **b == t).count();
    Some((t, greater, equal, nan > 0))
}

/// [`bracketed_threshold`] by a selection over a copy of every |δ|'s bits.
fn full_threshold(delta: &[f32], k: usize) -> (u32, usize, usize, bool) {
    let mut bits: Vec<u32> = delta.par_iter().map(|x| abs_bits(*x)).collect();
    let t = select_kth(&mut bits, k);
    let (greater, equal, nan) = bits
        .par_iter()
        .map(|b| (usize::from(*b > t), usize::from(*b == t), *b > INF_BITS))
        .reduce(|| (0, 0, false), |x, y| (x.0 + y.0, x.1 + y.1, x.2 || y.2));
    (t, greater, equal, nan)
}

/// The top-k mask of `delta` by magnitude, k = ⌊density · numel⌋.
///
/// The threshold t is the k-th largest |δ| in `total_cmp` order. On large tensors it comes from
/// a sampled bracket and one pass ([`bracketed_threshold`]), with a full selection over a copy
/// as the fallback when the bracket misses (never seen on real weights; the result is the same
/// either way). Ties at t are kept in index order until k entries are kept.
pub fn magnitude_keep(delta: &[f32], density: f64) -> Keep {
    magnitude_keep_sampled(delta, density, SAMPLE)
}

fn magnitude_keep_sampled(delta: &[f32], density: f64, sample: usize) -> Keep {
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
    let found = (n >= 8 * sample)
        .then(|| bracketed_threshold(delta, k, sample))
        .flatten();
    let (t_bits, greater, equal, nan) = found.unwrap_or_else(|| full_threshold(delta, k));
    let t = f32::from_bits(t_bits);
    // The bit order ranks NaNs above every number, while the float comparison that
    // `Keep::keep` applies ranks them nowhere: with a NaN present, count as it does.
    let (greater, equal) = if nan {
        delta
            .par_chunks(CHUNK)
            .map(|c| {
                c.iter().fold((0usize, 0usize), |(g, e), d| {
                    let a = d.abs();
                    (g + usize::from(a > t), e + usize::from(a == t))
                })
            })
            .reduce(|| (0, 0), |x, y| (x.0 + y.0, x.1 + y.1))
    } else {
        (greater, equal)
    };
    let need = k.saturating_sub(greater);
    let last_tie = if need == 0 {
        None
    } else if need >= equal {
        Some(usize::MAX)
    } else {
        nth_tie(delta, t, need)
    };
    Keep::Magnitude { t, last_tie }
}

/// The index of the `nth` (1-based) entry with |δ| = t. Ties are cut on most tensors (δ of f32
/// weights repeats magnitudes), so the ties are counted per chunk in parallel and only the
/// chunk holding the cut is scanned.
fn nth_tie(delta: &[f32], t: f32, nth: usize) -> Option<usize> {
    let counts: Vec<usize> = delta
        .par_chunks(CHUNK)
        .map(|c| c.iter().filter(|d| d.abs() == t).count())
        .collect();
    let mut left = nth;
    for (c, count) in counts.into_iter().enumerate() {
        if left <= count {
            let start = c * CHUNK;
            let chunk = &delta[start..(start + CHUNK).min(delta.len())];
            return chunk
                .iter()
                .enumerate()
                .filter(|(_, d)| d.abs() == t)
                .nth(left - 1)
                .map(|(j, _)| start + j);
        }
        left -= count;
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-k mask by a stable sort on |δ| (descending, `total_cmp`): ties kept in index
    /// order, as [`Keep::Magnitude`] documents.
    fn sorted_mask(delta: &[f32], k: usize) -> Vec<bool> {
        let mut idx: Vec<usize> = (0..delta.len()).collect();
        idx.sort_by(|a, b| delta[*b].abs().total_cmp(&delta[*a].abs()));
        let mut mask = vec![false; delta.len()];
        idx[..k].iter().for_each(|i| mask[*i] = true);
        mask
    }

    fn check(delta: &[f32], density: f64) {
        let k = (density * delta.len() as f64).floor() as usize;
        let want = sorted_mask(delta, k);
        // The sampled bracket (on tensors of 8 samples or more), then the full selection.
        for sample in [SAMPLE, 64, delta.len()] {
            let keep = magnitude_keep_sampled(delta, density, sample);
            let got: Vec<bool> = delta
                .iter()
                .enumerate()
                .map(|(j, d)| keep.keep(j, *d))
                .collect();
            assert_eq!(
                got, want,
                "density {density}, sample {sample}, keep {keep:?}"
            );
        }
    }

    /// A deterministic spread of magnitudes over many binades.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|j| {
                let u = dare_uniform(seed, j);
                let e = (dare_uniform(seed ^ 1, j) * 40.0) as i32 - 30;
                let s = if u < 0.5 { -1.0 } else { 1.0 };
                s * (1.0 + u as f32) * 2f32.powi(e)
            })
            .collect()
    }

    #[test]
    fn sampled_threshold_equals_a_full_sort() {
        // Several rayon chunks, so the per-chunk candidates are joined.
        let d = values(SAMPLE * 8 + 77, 5);
        for density in [0.0, 1e-6, 0.01, 0.2, 0.5, 0.999, 1.0] {
            check(&d, density);
        }
    }

    #[test]
    fn a_bracket_the_sample_misses_falls_back_to_the_full_selection() {
        // Every sampled entry (4 runs of 16 at multiples of the stride) is huge and every
        // other one small, so the sample puts the threshold far above where it is.
        let n = 64 * 8 * 16;
        let stride = n / (64 / SAMPLE_RUN);
        let d: Vec<f32> = (0..n)
            .map(|j| {
                if j % stride < SAMPLE_RUN {
                    1e6
                } else {
                    1.0 + j as f32
                }
            })
            .collect();
        let k = n / 5;
        assert!(bracketed_threshold(&d, k, 64).is_none());
        check(&d, 0.2);
    }

    #[test]
    fn ties_at_the_threshold_are_kept_in_index_order() {
        // Magnitudes from a few values only, so k usually cuts a run of equal entries; zeros
        // of both signs tie with each other.
        // Several rayon chunks, so the cut can fall past the first.
        let d: Vec<f32> = (0..3 * CHUNK + 123)
            .map(|j| match j % 7 {
                0 => 0.0,
                1 => -0.0,
                2 | 3 => 0.5,
                4 => -0.5,
                5 => 0.25,
                _ => -1.0,
            })
            .collect();
        for density in [0.1, 0.3, 0.45, 0.6, 0.7, 0.9] {
            check(&d, density);
        }
    }

    #[test]
    fn infinities_rank_first_and_nans_are_never_kept() {
        let mut d = values(10_000, 9);
        d[3] = f32::INFINITY;
        d[4000] = f32::NEG_INFINITY;
        check(&d, 0.1);
        check(&d, 0.0002);
        // A NaN ranks above every number in the bit order but `keep` never keeps it: the mask
        // is the sort's minus the NaN (the same rule as the selection it replaced).
        d[17] = f32::NAN;
        let keep = magnitude_keep(&d, 0.1);
        let mut want = sorted_mask(&d, 1000);
        assert!(want[17]);
        want[17] = false;
        let got: Vec<bool> = d
            .iter()
            .enumerate()
            .map(|(j, x)| keep.keep(j, *x))
            .collect();
        assert_eq!(got, want);
    }
}
