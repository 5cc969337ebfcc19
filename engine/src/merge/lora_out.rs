//! LoRA → LoRA merges whose output stays an adapter: `cat`, `svd`, and PEFT's A/B-wise
//! `add_weighted_adapter` path (`peft_ab`), one module at a time.
//!
//! Every output adapter has `lora_alpha = r` and no rsLoRA, so its scale is exactly 1 and the
//! input scales sᵢ are folded into the matrices, as PEFT's `add_weighted_adapter` does.

use crate::formats::lora::{LoraPair, a_key, b_key};
use crate::merge::peft::{self, PeftCombination, PeftParams};
use crate::merge::svd;
use crate::merge::task::{SignMethod, TaskVector};

/// One adapter's contribution to one module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleInput {
    /// `None` when this adapter does not touch the module.
    pub pair: Option<LoraPair>,
    pub weight: f64,
    /// The adapter's LoRA scale on this module.
    pub scale: f64,
    pub density: f64,
    /// 0-based position in the recipe (seeds DARE masks).
    pub model: usize,
}

fn dims(inputs: &[ModuleInput]) -> (usize, usize) {
    inputs
        .iter()
        .find_map(|m| m.pair.as_ref().map(|p| (p.out, p.inp)))
        .unwrap_or((0, 0))
}

/// `cat`: A = rows wᵢ·sᵢ·Aᵢ stacked, B = columns Bᵢ side by side, zero-padded to `rank` (the sum
/// of the input ranks) like PEFT; B·A = Σ wᵢ sᵢ Bᵢ Aᵢ exactly.
pub fn cat(inputs: &[ModuleInput], rank: usize) -> LoraPair {
    let (out, inp) = dims(inputs);
    let mut a = vec![0f32; rank * inp];
    let mut b = vec![0f32; out * rank];
    let mut row = 0usize;
    for m in inputs {
        let Some(p) = &m.pair else { continue };
        let c = m.weight * m.scale;
        for k in 0..p.r {
            if row + k >= rank {
                break;
            }
            for j in 0..inp {
                a[(row + k) * inp + j] = (c * f64::from(p.a[k * inp + j])) as f32;
            }
            for o in 0..out {
                b[o * rank + row + k] = p.b[o * p.r + k];
            }
        }
        row += p.r;
    }
    LoraPair {
        a,
        b,
        r: rank,
        inp,
        out,
    }
}

/// `svd`: ΔW = Σ wᵢ sᵢ Bᵢ Aᵢ truncated to `rank`: B = U_r S_r, A = V_rᵀ.
pub fn svd(inputs: &[ModuleInput], rank: usize) -> LoraPair {
    let (out, inp) = dims(inputs);
    let present: Vec<&ModuleInput> = inputs.iter().filter(|m| m.pair.is_some()).collect();
    let k: usize = present
        .iter()
        .filter_map(|m| m.pair.as_ref())
        .map(|p| p.r)
        .sum();
    let mut bc = vec![0f64; out * k];
    let mut ac = vec![0f64; k * inp];
    let mut col = 0usize;
    for m in present {
        let Some(p) = &m.pair else { continue };
        let c = m.weight * m.scale;
        for kk in 0..p.r {
            for o in 0..out {
                bc[o * k + col + kk] = f64::from(p.b[o * p.r + kk]);
            }
            for j in 0..inp {
                ac[(col + kk) * inp + j] = c * f64::from(p.a[kk * inp + j]);
            }
        }
        col += p.r;
    }
    let t = svd::truncated_svd(&bc, &ac, out, k, inp, rank);
    LoraPair {
        a: t.a.iter().map(|x| *x as f32).collect(),
        b: t.b.iter().map(|x| *x as f32).collect(),
        r: rank,
        inp,
        out,
    }
}

/// PEFT's `_generalized_task_arithmetic_weighted_adapter`: A and B merged separately with the
/// PEFT-flavour `combination`, A weighted by sign(wᵢsᵢ)·√|wᵢsᵢ| and B by √|wᵢsᵢ|. The DARE
/// masks of A and B are keyed by their tensor names (`base_model.model.<module>.lora_A.weight`).
pub fn peft_ab(
    module: &str,
    inputs: &[ModuleInput],
    combination: PeftCombination,
    sign: SignMethod,
    seed: u64,
) -> LoraPair {
    let (out, inp) = dims(inputs);
    let r = inputs
        .iter()
        .find_map(|m| m.pair.as_ref().map(|p| p.r))
        .unwrap_or(0);
    let mut tv_a = Vec::new();
    let mut tv_b = Vec::new();
    for m in inputs {
        let Some(p) = &m.pair else { continue };
        let ws = m.weight * m.scale;
        let root = ws.abs().sqrt();
        tv_a.push(TaskVector {
            delta: Some(p.a.clone()),
            weight: if ws >= 0.0 { root } else { -root },
            density: m.density,
            model: m.model,
        });
        tv_b.push(TaskVector {
            delta: Some(p.b.clone()),
            weight: root,
            density: m.density,
            model: m.model,
        });
    }
    let params = PeftParams {
        combination,
        sign,
        lambda: 1.0,
        seed,
    };
    let a = peft::merge(&a_key(module), None, r * inp, &tv_a, &params);
    let b = peft::merge(&b_key(module), None, out * r, &tv_b, &params);
    LoraPair { a, b, r, inp, out }
}
