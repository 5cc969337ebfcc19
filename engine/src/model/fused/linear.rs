//! `x · wᵀ` against a weight that is not trained: the backward pass computes the gradient of
//! `x` only, where candle's matmul would also compute (and store) the weight's.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::on_cpu;

/// `x · wᵀ` for `x` `[.., in]` and `w` `[out, in]`. Gradients flow to `x` only: the weight's
/// gradient is never computed and the weight gets no entry in the gradient store, even when
/// it is a variable.
pub fn linear_frozen(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (_, k) = w.dims2()?;
    if x.dims().last() != Some(&k) {
        bail!(
            "linear: input {:?} does not end in the weight's {k} input features (weight {:?})",
            x.dims(),
            w.dims()
        );
    }
    if !on_cpu(x) {
        return plain(x, &w.detach());
    }
    // Detached, the weight is a constant to the graph: no gradient slot is ever made for it.
    let w = w.detach();
    if x.is_contiguous() {
        x.apply_op2(&w, FrozenLinear)
    } else {
        x.contiguous()?.apply_op2(&w, FrozenLinear)
    }
}

/// `x · wᵀ`, skipping the weight's gradient when the weight is frozen (neither a variable nor
/// computed from one) and `x` tracks gradients; a plain matmul otherwise, so inference pays
/// nothing extra and a trained weight gets its gradient.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.track_op() && !w.track_op() {
        linear_frozen(x, w)
    } else {
        plain(x, w)
    }
}

/// candle's matmul, with the leading dimensions of a contiguous `x` folded into one so no
/// broadcast copy of `w` is made.
fn plain(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() > 2 && x.is_contiguous() {
        let k = dims[dims.len() - 1];
        let m = x.elem_count() / k.max(1);
        let mut out = dims.to_vec();
        let last = out.len() - 1;
        out[last] = w.dim(0)?;
        x.reshape((m, k))?.matmul(&w.t()?)?.reshape(out)
    } else {
        x.broadcast_matmul(&w.t()?)
    }
}

struct FrozenLinear;

impl CustomOp2 for FrozenLinear {
    fn name(&self) -> &'static str {
        "fused-linear-frozen"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Some((start, _)) = l1.contiguous_offsets() else {
            bail!("linear_frozen: the input must be contiguous");
        };
        let &[n, k] = l2.dims() else {
            bail!(
                "linear_frozen: the weight must be [out, in], got {:?}",
                l2.dims()
            );
        };
        let m = l1.shape().elem_count() / k.max(1);
        let lhs = Layout::contiguous_with_offset((m, k), start);
        let (ws0, ws1) = (l2.stride()[0], l2.stride()[1]);
        let rhs = Layout::new(Shape::from((k, n)), vec![ws1, ws0], l2.start_offset());
        let out = s1.matmul(s2, (1, m, n, k), &lhs, &rhs)?;
        let mut dims = l1.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let m = x.elem_count() / k.max(1);
        let gx = grad.reshape((m, n))?.matmul(w)?.reshape(x.shape())?;
        Ok((Some(gx), None))
    }
}
