//! Softmax over the last dimension; backward `y ⊙ (g − Σ g⊙y)`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType, bail,
};
use rayon::prelude::*;

use super::norm::dot;
use super::{Real, Rows, on_cpu, rows_per_task, same_dtype, with_float};
use crate::model::ops::{self, OpsMode};

/// Softmax of `x` (any shape, any strides) over its last dimension; the result is contiguous.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
        return ops::softmax_last_dim(x, OpsMode::Differentiable);
    }
    x.apply_op1(Softmax)
}

struct Softmax;

/// Writes the softmax of `x` into `o`.
fn softmax_row<T: Real>(x: &[T], o: &mut [T]) {
    let max = x
        .iter()
        .fold(T::from_f64(f64::NEG_INFINITY), |m, &v| m.maximum(v));
    let mut sum = T::ZERO;
    for (o, &x) in o.iter_mut().zip(x) {
        *o = (x - max).exp();
        sum += *o;
    }
    let inv = T::from_f64(1.0) / sum;
    for o in o.iter_mut() {
        *o *= inv;
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        with_float!(s, "softmax_last_dim", |x: T| {
            let rows = Rows::new(x, l);
            let d = rows.len;
            let mut out = vec![T::ZERO; rows.count() * d];
            if d > 0 {
                out.par_chunks_mut(d)
                    .with_min_len(rows_per_task(d))
                    .enumerate()
                    .for_each(|(i, o)| softmax_row(rows.row(i), o));
            }
            Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
        })
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(grad, &SoftmaxGrad)?))
    }
}

/// `dx = y ⊙ (g − Σ g⊙y)` from the softmax `y` and the gradient `g`.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "softmax backward", |y: T| {
            let y = Rows::new(y, l1);
            let g = Rows::new(same_dtype::<T>(s2, "softmax backward")?, l2);
            let d = y.len;
            if g.count() != y.count() || g.len != d {
                bail!("softmax backward: the gradient's shape differs from the output's");
            }
            let mut out = vec![T::ZERO; y.count() * d];
            if d > 0 {
                out.par_chunks_mut(d)
                    .with_min_len(rows_per_task(d))
                    .enumerate()
                    .for_each(|(i, o)| {
                        let (y, g) = (y.row(i), g.row(i));
                        let s = dot(y, g);
                        for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                            *o = y * (g - s);
                        }
                    });
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }
}
