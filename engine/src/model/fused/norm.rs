//! RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) · w`, with gradients for both `x`
//! and `w` (full fine-tuning trains the norms).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, bail,
};
use rayon::prelude::*;

use super::{Real, Rows, contiguous, on_cpu, rows_per_task, same_dtype, with_float};
use crate::model::ops::{self, OpsMode};

/// RMSNorm of `x` (`[.., d]`) with weight `w` (`d` elements), computed in `x`'s dtype (f32 or
/// f64). Gradients reach `x` and, when it tracks gradients, `w`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !on_cpu(x) {
        return ops::rms_norm(x, weight, eps, OpsMode::Differentiable);
    }
    x.apply_op2(weight, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

/// `1 / sqrt(mean(x²) + eps)`.
fn inv_rms<T: Real>(x: &[T], eps: f64) -> T {
    let ss = dot(x, x);
    T::from_f64(1.0) / (ss / T::from_f64(x.len() as f64) + T::from_f64(eps)).sqrt()
}

/// `Σ a·b`, in eight independent sums so the loop vectorises.
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = T::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    for v in acc {
        s += v;
    }
    s
}

fn weight_of<'a, T: Real>(
    w: &'a CpuStorage,
    l: &Layout,
    d: usize,
) -> Result<std::borrow::Cow<'a, [T]>> {
    let w = contiguous(same_dtype::<T>(w, "rms_norm")?, l);
    if w.len() != d {
        bail!(
            "rms_norm: the weight has {} elements but rows have {d}",
            w.len()
        );
    }
    Ok(w)
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "rms_norm", |x: T| {
            let rows = Rows::new(x, l1);
            let d = rows.len;
            let w = weight_of::<T>(s2, l2, d)?;
            let mut out = vec![T::from_f64(0.0); rows.count() * d];
            if d > 0 {
                out.par_chunks_mut(d)
                    .with_min_len(rows_per_task(d))
                    .enumerate()
                    .for_each(|(i, o)| {
                        let x = rows.row(i);
                        let inv = inv_rms(x, self.eps);
                        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w.iter()) {
                            *o = x * inv * w;
                        }
                    });
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(x.apply_op3_no_bwd(w, grad, &RmsNormGradX { eps: self.eps })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(
                x.apply_op2_no_bwd(grad, &RmsNormGradW { eps: self.eps })?
                    .reshape(w.shape())?,
            )
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `dx = inv·(g⊙w) − inv³/d · Σ(g⊙w⊙x) · x`, one row at a time.
struct RmsNormGradX {
    eps: f64,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad-x"
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
        with_float!(s1, "rms_norm backward", |x: T| {
            let rows = Rows::new(x, l1);
            let d = rows.len;
            let w = weight_of::<T>(s2, l2, d)?;
            let g = Rows::new(same_dtype::<T>(s3, "rms_norm backward")?, l3);
            if g.count() != rows.count() || g.len != d {
                bail!("rms_norm backward: the gradient's shape differs from the input's");
            }
            let mut out = vec![T::from_f64(0.0); rows.count() * d];
            if d > 0 {
                out.par_chunks_mut(d)
                    .with_min_len(rows_per_task(d))
                    .enumerate()
                    .for_each(|(i, o)| {
                        let (x, g) = (rows.row(i), g.row(i));
                        let inv = inv_rms(x, self.eps);
                        for ((o, &g), &w) in o.iter_mut().zip(g).zip(w.iter()) {
                            *o = g * w;
                        }
                        let c = dot(o, x) * inv * inv * inv / T::from_f64(d as f64);
                        for (o, &x) in o.iter_mut().zip(x) {
                            *o = *o * inv - c * x;
                        }
                    });
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }
}

/// `dw = Σ_rows g⊙x·inv`, summed in parallel over blocks of rows.
struct RmsNormGradW {
    eps: f64,
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "rms_norm backward", |x: T| {
            let rows = Rows::new(x, l1);
            let d = rows.len;
            let g = Rows::new(same_dtype::<T>(s2, "rms_norm backward")?, l2);
            if g.count() != rows.count() || g.len != d {
                bail!("rms_norm backward: the gradient's shape differs from the input's");
            }
            let zero = || vec![T::from_f64(0.0); d];
            let out = (0..rows.count())
                .into_par_iter()
                .with_min_len(rows_per_task(d).max(8))
                .fold(zero, |mut acc, i| {
                    let (x, g) = (rows.row(i), g.row(i));
                    let inv = inv_rms(x, self.eps);
                    for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                        *a += g * x * inv;
                    }
                    acc
                })
                .reduce(zero, |mut a, b| {
                    for (a, b) in a.iter_mut().zip(b) {
                        *a += b;
                    }
                    a
                });
            Ok((T::to_cpu_storage_owned(out), Shape::from(d)))
        })
    }
}
