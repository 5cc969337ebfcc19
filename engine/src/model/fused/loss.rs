//! Weighted cross-entropy over a large vocabulary in one pass per row, with a backward that
//! writes `(softmax − onehot)·wᵢ·g` straight into the one gradient buffer.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp3, D, DType, Layout, Result, Shape, Tensor, WithDType, bail,
};
use rayon::prelude::*;

use super::{Real, Rows, contiguous, on_cpu, rows_per_task, same_dtype, with_float};

/// `Σᵢ wᵢ · (−log softmax(logitsᵢ)[tᵢ])` as a scalar, for `logits` `[n, vocab]` (f32 or f64),
/// `targets` `[n]` u32 and `weights` `[n]` of the logits' dtype. A zero weight skips its row
/// (padding and prompt tokens cost nothing). The gradient reaches the logits only; targets
/// and weights are constants.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if targets.dims() != [n] || weights.dims() != [n] {
        bail!(
            "cross_entropy: targets {:?} and weights {:?} must both be [{n}] for logits {:?}",
            targets.dims(),
            weights.dims(),
            logits.dims()
        );
    }
    if targets.dtype() != DType::U32 {
        bail!(
            "cross_entropy: targets must be u32, got {:?}",
            targets.dtype()
        );
    }
    if !on_cpu(logits) {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        return (picked * weights.to_dtype(logits.dtype())?)?
            .sum_all()?
            .neg();
    }
    // Weights are constants: detached, they never wait for a gradient in the backward pass.
    logits.apply_op3(targets, &weights.detach(), CrossEntropy::default())
}

/// The forward pass keeps each row's log-sum-exp so the backward needs one pass, not two.
#[derive(Default)]
struct CrossEntropy {
    lse: Arc<Mutex<Option<Vec<f64>>>>,
}

struct Inputs<'a, T: Copy> {
    logits: Rows<'a, T>,
    targets: std::borrow::Cow<'a, [u32]>,
    weights: std::borrow::Cow<'a, [T]>,
}

impl<'a, T: Real> Inputs<'a, T> {
    fn new(
        logits: &'a [T],
        l1: &Layout,
        s2: &'a CpuStorage,
        l2: &Layout,
        s3: &'a CpuStorage,
        l3: &Layout,
    ) -> Result<Self> {
        let logits = Rows::new(logits, l1);
        let CpuStorage::U32(t) = s2 else {
            bail!(
                "cross_entropy: targets must be u32, got {:?}",
                candle_core::backend::BackendStorage::dtype(s2)
            );
        };
        let targets = contiguous(t, l2);
        let weights = contiguous(same_dtype::<T>(s3, "cross_entropy")?, l3);
        let (n, vocab) = (logits.count(), logits.len);
        if targets.len() != n || weights.len() != n {
            bail!("cross_entropy: targets and weights need one entry per row of the logits");
        }
        if let Some((i, t)) = targets
            .iter()
            .enumerate()
            .find(|(_, t)| **t as usize >= vocab)
        {
            bail!("cross_entropy: target {t} of row {i} is outside the vocabulary of {vocab}");
        }
        Ok(Self {
            logits,
            targets,
            weights,
        })
    }

    /// `log Σ exp(row)`.
    fn lse(&self, i: usize) -> f64 {
        let row = self.logits.row(i);
        let max = row
            .iter()
            .fold(T::from_f64(f64::NEG_INFINITY), |m, &v| m.maximum(v));
        let mut acc = [T::ZERO; 8];
        let chunks = row.chunks_exact(8);
        let mut sum = T::ZERO;
        for &v in chunks.remainder() {
            sum += (v - max).exp();
        }
        for c in chunks {
            for k in 0..8 {
                acc[k] += (c[k] - max).exp();
            }
        }
        for a in acc {
            sum += a;
        }
        max.to_f64() + sum.to_f64().ln()
    }
}

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "cross_entropy", |logits: T| {
            let inputs = Inputs::<T>::new(logits, l1, s2, l2, s3, l3)?;
            let lse: Vec<f64> = (0..inputs.logits.count())
                .into_par_iter()
                .map(|i| {
                    if inputs.weights[i] == T::ZERO {
                        0.0
                    } else {
                        inputs.lse(i)
                    }
                })
                .collect();
            let total: f64 = lse
                .iter()
                .enumerate()
                .filter(|(i, _)| inputs.weights[*i] != T::ZERO)
                .map(|(i, lse)| {
                    let picked = inputs.logits.row(i)[inputs.targets[i] as usize].to_f64();
                    inputs.weights[i].to_f64() * (lse - picked)
                })
                .sum();
            if let Ok(mut slot) = self.lse.lock() {
                *slot = Some(lse);
            }
            Ok((
                T::to_cpu_storage_owned(vec![T::from_f64(total)]),
                Shape::from(()),
            ))
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = grad.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let lse = self.lse.lock().ok().and_then(|slot| slot.clone());
        let op = CrossEntropyGrad {
            lse,
            scale: scale.first().copied().unwrap_or(0.0),
        };
        Ok((
            Some(logits.apply_op3_no_bwd(targets, weights, &op)?),
            None,
            None,
        ))
    }
}

/// `(softmax(logitsᵢ) − onehot(tᵢ)) · wᵢ · scale`, `[n, vocab]`.
struct CrossEntropyGrad {
    lse: Option<Vec<f64>>,
    scale: f64,
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "cross_entropy backward", |logits: T| {
            let inputs = Inputs::<T>::new(logits, l1, s2, l2, s3, l3)?;
            let vocab = inputs.logits.len;
            let cached = self
                .lse
                .as_ref()
                .filter(|lse| lse.len() == inputs.logits.count());
            let mut out = vec![T::ZERO; inputs.logits.count() * vocab];
            if vocab > 0 {
                out.par_chunks_mut(vocab)
                    .with_min_len(rows_per_task(vocab))
                    .enumerate()
                    .for_each(|(i, o)| {
                        let w = inputs.weights[i];
                        if w == T::ZERO {
                            return;
                        }
                        let lse = match cached {
                            Some(lse) => lse[i],
                            None => inputs.lse(i),
                        };
                        let (lse, a) = (T::from_f64(lse), w * T::from_f64(self.scale));
                        for (o, &x) in o.iter_mut().zip(inputs.logits.row(i)) {
                            *o = (x - lse).exp() * a;
                        }
                        o[inputs.targets[i] as usize] -= a;
                    });
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }
}
