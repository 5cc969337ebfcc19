//! Task vectors (δᵢ = θᵢ − θ_base) and the choices shared by the TIES/DARE families.

use serde::{Deserialize, Serialize};

use crate::merge::sparsify::{self, Keep};

/// One input's task vector on one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskVector {
    /// δᵢ; `None` when the input leaves the tensor unchanged (an adapter without this module).
    pub delta: Option<Vec<f32>>,
    pub weight: f64,
    pub density: f64,
    /// The input's 0-based position in the recipe, which seeds its DARE mask.
    pub model: usize,
}

/// How a task vector is sparsified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sparsify {
    /// Keep the top-k by magnitude (TIES).
    Magnitude,
    /// Keep each entry with probability `density` (DARE).
    Bernoulli,
}

/// How the sign is elected. mergekit calls them `sum` and `count`, PEFT `total` and
/// `frequency`; the flavour decides whether weighted or unweighted values vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignMethod {
    /// The sign of the sum of values (ties count as +).
    #[default]
    #[serde(alias = "total")]
    Sum,
    /// The sign of the sum of signs (ties count as +).
    #[serde(alias = "frequency")]
    Count,
}

/// The keep rule of one task vector on tensor `tensor`.
pub fn keep_rule(sparsify: Option<Sparsify>, tv: &TaskVector, tensor: &str, seed: u64) -> Keep {
    match (sparsify, &tv.delta) {
        (None, _) | (_, None) => Keep::All,
        (Some(_), Some(_)) if tv.density >= 1.0 => Keep::All,
        (Some(Sparsify::Magnitude), Some(d)) => sparsify::magnitude_keep(d, tv.density),
        (Some(Sparsify::Bernoulli), Some(_)) => Keep::Bernoulli {
            key: sparsify::dare_key(seed, tensor, tv.model),
            density: tv.density,
        },
    }
}

/// Entries per block of the element passes. Each input's values for a block lie contiguously,
/// so every loop over a block is a straight loop over `f64` arrays that the compiler vectorises.
pub(crate) const BLOCK: usize = 1024;

/// The working arrays of one block: every input's values, and three per-entry accumulators.
pub(crate) struct Block {
    values: Vec<f64>,
    elected: Vec<f64>,
    pub(crate) mixed: Vec<f64>,
    pub(crate) div: Vec<f64>,
}

impl Block {
    pub(crate) fn new(inputs: usize) -> Self {
        Self {
            values: vec![0.0; inputs * BLOCK],
            elected: vec![0.0; BLOCK],
            mixed: vec![0.0; BLOCK],
            div: vec![0.0; BLOCK],
        }
    }

    /// Sets input `i`'s values on entries `start..start + n`: `f(δ)` where `keep` keeps the
    /// entry, 0 where it prunes it, 0 everywhere for an input without this tensor.
    pub(crate) fn set_values(
        &mut self,
        i: usize,
        keep: &Keep,
        delta: Option<&[f32]>,
        start: usize,
        n: usize,
        f: impl Fn(f64) -> f64,
    ) {
        let out = &mut self.values[i * BLOCK..i * BLOCK + n];
        let Some(delta) = delta else {
            out.fill(0.0);
            return;
        };
        let d = &delta[start..start + n];
        // Each rule gets its own monomorphic loop; those without an index test vectorise.
        match *keep {
            Keep::All => fill(out, d, |_, _| true, f),
            Keep::Nothing => out.fill(0.0),
            Keep::Magnitude { t, last_tie: None } => fill(out, d, |_, x| x.abs() > t, f),
            // Ties at t are kept up to index `last`: only the block holding it tests indices.
            Keep::Magnitude {
                t,
                last_tie: Some(last),
            } if start + n - 1 <= last => fill(out, d, |_, x| x.abs() >= t, f),
            Keep::Magnitude {
                t,
                last_tie: Some(last),
            } if start > last => fill(out, d, |_, x| x.abs() > t, f),
            _ => fill(out, d, |j, x| keep.keep(start + j, x), f),
        }
    }

    /// Elects each entry's sign over the first `inputs` inputs' values: +1 or −1 (ties → +).
    pub(crate) fn elect(&mut self, method: SignMethod, inputs: usize, n: usize) {
        let elected = &mut self.elected[..n];
        elected.fill(0.0);
        for i in 0..inputs {
            let v = &self.values[i * BLOCK..i * BLOCK + n];
            match method {
                SignMethod::Sum => elected.iter_mut().zip(v).for_each(|(e, x)| *e += x),
                SignMethod::Count => elected
                    .iter_mut()
                    .zip(v)
                    .for_each(|(e, x)| *e += f64::from(i8::from(*x > 0.0) - i8::from(*x < 0.0))),
            }
        }
        elected
            .iter_mut()
            .for_each(|e| *e = if *e >= 0.0 { 1.0 } else { -1.0 });
    }

    /// `mixed` = Σᵢ g(i, vᵢ) and `div` = Σᵢ h(i) over the inputs whose value has the elected sign
    /// (zeros never do); with `elect` false, over every input.
    pub(crate) fn combine(
        &mut self,
        inputs: usize,
        n: usize,
        elect: bool,
        g: impl Fn(usize, f64) -> f64,
        h: impl Fn(usize) -> f64,
    ) {
        let (mixed, div) = (&mut self.mixed[..n], &mut self.div[..n]);
        mixed.fill(0.0);
        div.fill(0.0);
        for i in 0..inputs {
            let v = &self.values[i * BLOCK..i * BLOCK + n];
            let hi = h(i);
            if elect {
                let e = &self.elected[..n];
                for ((m, dv), (x, s)) in mixed.iter_mut().zip(div.iter_mut()).zip(v.iter().zip(e)) {
                    let agree = x * s > 0.0;
                    *m += if agree { g(i, *x) } else { 0.0 };
                    *dv += if agree { hi } else { 0.0 };
                }
            } else {
                for ((m, dv), x) in mixed.iter_mut().zip(div.iter_mut()).zip(v) {
                    *m += g(i, *x);
                    *dv += hi;
                }
            }
        }
    }
}

/// `out[j] = f(d[j])` where `kept(j, d[j])`, else 0.
#[inline]
fn fill(out: &mut [f64], d: &[f32], kept: impl Fn(usize, f32) -> bool, f: impl Fn(f64) -> f64) {
    for (j, (o, x)) in out.iter_mut().zip(d).enumerate() {
        *o = if kept(j, *x) { f(f64::from(*x)) } else { 0.0 };
    }
}
