//! Rotary position embedding in the Hugging Face half-split layout (dimension `i` pairs with
//! `i + d/2`); its backward is the same rotation by −θ.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType, bail};
use rayon::prelude::*;

use super::{Rows, contiguous, on_cpu, rows_per_task, same_dtype, with_float};
use crate::model::ops::{self, OpsMode};

/// RoPE of `x` (`[batch, heads, seq, d]`, any strides) with `cos`/`sin` tables `[seq, d/2]`.
/// The result is contiguous; gradients reach `x` only (the tables are constants).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
        return ops::rope(x, cos, sin, OpsMode::Differentiable);
    }
    // The tables are constants: detached, they never wait for a gradient in the backward pass.
    x.apply_op3(&cos.detach(), &sin.detach(), Rope { inverse: false })
}

/// Rotates by θ, or by −θ when `inverse` (the backward pass).
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        if self.inverse {
            "fused-rope-inverse"
        } else {
            "fused-rope"
        }
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
        let &[_, _, seq, d] = l1.dims() else {
            bail!(
                "rope expects x as [batch, heads, seq, head_dim], got shape {:?}",
                l1.dims()
            );
        };
        let half = d / 2;
        if d % 2 != 0 || l2.dims() != [seq, half] || l3.dims() != [seq, half] {
            bail!(
                "rope: cos/sin must be [seq, head_dim/2] = [{seq}, {half}] with an even head_dim, \
                 got {:?} and {:?} for x {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        with_float!(s1, "rope", |x: T| {
            let rows = Rows::new(x, l1);
            let cos = contiguous(same_dtype::<T>(s2, "rope")?, l2);
            let sin = contiguous(same_dtype::<T>(s3, "rope")?, l3);
            let inverse = self.inverse;
            let mut out = vec![T::from_f64(0.0); rows.count() * d];
            if d > 0 {
                out.par_chunks_mut(d)
                    .with_min_len(rows_per_task(d))
                    .enumerate()
                    .for_each(|(i, o)| {
                        let x = rows.row(i);
                        let p = (i % seq) * half;
                        let (c, s) = (&cos[p..p + half], &sin[p..p + half]);
                        let (x1, x2) = x.split_at(half);
                        let (o1, o2) = o.split_at_mut(half);
                        for j in 0..half {
                            let (a, b) = (x1[j], x2[j]);
                            let (c, s) = (c[j], s[j]);
                            if inverse {
                                o1[j] = a * c + b * s;
                                o2[j] = b * c - a * s;
                            } else {
                                o1[j] = a * c - b * s;
                                o2[j] = b * c + a * s;
                            }
                        }
                    });
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inverse = Rope {
            inverse: !self.inverse,
        };
        Ok((Some(grad.apply_op3_no_bwd(cos, sin, &inverse)?), None, None))
    }
}
