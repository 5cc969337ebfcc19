//! SwiGLU's gate, `silu(g) ⊙ u`, in one pass forward and one pass backward (candle's composed
//! silu and product take some sixteen passes over the `[tokens, intermediate]` activations).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType, bail,
};
use rayon::prelude::*;

use super::{Real, contiguous, on_cpu, same_dtype, with_float};

/// `silu(gate) ⊙ up` for two tensors of one shape; gradients reach both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        bail!(
            "swiglu: gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        );
    }
    if !on_cpu(gate) || !matches!(gate.dtype(), DType::F32 | DType::F64) {
        return gate.silu()? * up;
    }
    gate.apply_op2(up, SwiGlu)
}

struct SwiGlu;

/// Elements handed to one rayon task.
const CHUNK: usize = 16 * 1024;

fn sigmoid<T: Real>(x: T) -> T {
    let one = T::from_f64(1.0);
    one / (one + (T::ZERO - x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        with_float!(s1, "swiglu", |g: T| {
            let g = contiguous(g, l1);
            let u = contiguous(same_dtype::<T>(s2, "swiglu")?, l2);
            let mut out = vec![T::ZERO; g.len()];
            out.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
                .for_each(|(o, (g, u))| {
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        *o = g * sigmoid(g) * u;
                    }
                });
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both gradients come from one pass, stacked in one buffer; each is a view of its half.
        let stacked = gate.apply_op3_no_bwd(up, grad, &SwiGluGrad)?;
        let n = gate.elem_count();
        let dg = stacked.narrow(0, 0, n)?.reshape(gate.shape())?;
        let du = stacked.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((gate.track_op().then_some(dg), up.track_op().then_some(du)))
    }
}

/// `[dgate, dup]` flattened into one `[2n]` buffer: `dgate = g·u·silu'(gate)`,
/// `dup = g·silu(gate)`, with `silu'(x) = σ(x)·(1 + x·(1 − σ(x)))`.
struct SwiGluGrad;

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "fused-swiglu-grad"
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
        with_float!(s1, "swiglu backward", |gate: T| {
            let gate = contiguous(gate, l1);
            let up = contiguous(same_dtype::<T>(s2, "swiglu backward")?, l2);
            let grad = contiguous(same_dtype::<T>(s3, "swiglu backward")?, l3);
            let n = gate.len();
            if up.len() != n || grad.len() != n {
                bail!("swiglu backward: gate, up and gradient differ in size");
            }
            let mut out = vec![T::ZERO; 2 * n];
            let (dg, du) = out.split_at_mut(n);
            let one = T::from_f64(1.0);
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(gate.par_chunks(CHUNK))
                .zip(up.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
                .for_each(|(((dg, du), x), (u, g))| {
                    for i in 0..x.len() {
                        let s = sigmoid(x[i]);
                        let silu = x[i] * s;
                        dg[i] = g[i] * u[i] * (s * (one + x[i] * (one - s)));
                        du[i] = g[i] * silu;
                    }
                });
            Ok((T::to_cpu_storage_owned(out), Shape::from(2 * n)))
        })
    }
}
