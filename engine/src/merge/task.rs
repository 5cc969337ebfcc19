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
pub fn keep_rule(
    sparsify: Option<Sparsify>,
    tv: &TaskVector,
    tensor: &str,
    seed: u64,
    scratch: &mut Vec<f32>,
) -> Keep {
    match (sparsify, &tv.delta) {
        (None, _) | (_, None) => Keep::All,
        (Some(_), Some(_)) if tv.density >= 1.0 => Keep::All,
        (Some(Sparsify::Magnitude), Some(d)) => sparsify::magnitude_keep(d, tv.density, scratch),
        (Some(Sparsify::Bernoulli), Some(_)) => Keep::Bernoulli {
            key: sparsify::dare_key(seed, tensor, tv.model),
            density: tv.density,
        },
    }
}

#[inline]
pub(crate) fn sign(x: f64) -> i32 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}
