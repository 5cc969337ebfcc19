//! Fused, differentiable CPU kernels for training: RMSNorm, RoPE, softmax, SwiGLU, a weighted
//! cross-entropy and a matmul against a frozen weight, each a candle custom op with a
//! hand-written backward pass.
//!
//! candle's own fused kernels have no backward (they silently cut the gradient graph), its
//! built-in cross-entropy materialises several `[n, vocab]` intermediates, and its matmul
//! backward also computes the gradient of frozen weights. These ops avoid all three. They run
//! on the CPU only: on any other device every function here falls back to the composed,
//! differentiable candle ops, so the same code builds and runs with the `cuda` feature.
//!
//! Every kernel accepts f32 and f64 (f64 is what the gradient checks use) and inputs of any
//! layout; inputs whose last dimension is unit-strided are read in place without a copy.

mod linear;
mod loss;
mod norm;
mod rope;
mod softmax;
mod swiglu;

use std::borrow::Cow;

use candle_core::{CpuStorage, Layout, Result, Tensor, WithDType};

pub use linear::{linear, linear_frozen};
pub use loss::cross_entropy;
pub use norm::rms_norm;
pub use rope::rope;
pub use softmax::softmax_last_dim;
pub use swiglu::swiglu;

/// The float types the kernels are written for.
trait Real: WithDType {
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn maximum(self, other: Self) -> Self;
    const ZERO: Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn maximum(self, other: Self) -> Self {
        f32::max(self, other)
    }
    const ZERO: Self = 0.0;
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn maximum(self, other: Self) -> Self {
        f64::max(self, other)
    }
    const ZERO: Self = 0.0;
}

/// The elements of a strided tensor in row-major order.
fn gather<T: Copy>(data: &[T], l: &Layout) -> Vec<T> {
    let (dims, stride) = (l.dims(), l.stride());
    let n = l.shape().elem_count();
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; dims.len()];
    let mut offset = l.start_offset();
    for _ in 0..n {
        out.push(data[offset]);
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            offset += stride[d];
            if index[d] < dims[d] {
                break;
            }
            offset -= stride[d] * dims[d];
            index[d] = 0;
        }
    }
    out
}

/// The elements of a tensor in row-major order, borrowed when already contiguous.
fn contiguous<'a, T: Copy>(data: &'a [T], l: &Layout) -> Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Cow::Borrowed(&data[start..end]),
        None => Cow::Owned(gather(data, l)),
    }
}

/// A tensor seen as rows along its last dimension: rows whose elements are adjacent are read in
/// place (a transposed `[b, s, h, d]` → `[b, h, s, d]` view needs no copy); any other layout is
/// gathered once.
struct Rows<'a, T: Copy> {
    data: Cow<'a, [T]>,
    offsets: Vec<usize>,
    len: usize,
}

impl<'a, T: Copy> Rows<'a, T> {
    fn new(data: &'a [T], l: &Layout) -> Self {
        let dims = l.dims();
        let len = dims.last().copied().unwrap_or(1);
        let unit = len <= 1 || l.stride().last().copied() == Some(1);
        if !unit {
            let data = gather(data, l);
            let offsets = (0..data.len() / len.max(1)).map(|r| r * len).collect();
            return Self {
                data: Cow::Owned(data),
                offsets,
                len,
            };
        }
        if let Some((start, _)) = l.contiguous_offsets() {
            let rows = l.shape().elem_count() / len.max(1);
            return Self {
                data: Cow::Borrowed(data),
                offsets: (0..rows).map(|r| start + r * len).collect(),
                len,
            };
        }
        let outer = &dims[..dims.len().saturating_sub(1)];
        let stride = &l.stride()[..outer.len()];
        let rows: usize = outer.iter().product();
        let mut offsets = Vec::with_capacity(rows);
        let mut index = vec![0usize; outer.len()];
        let mut offset = l.start_offset();
        for _ in 0..rows {
            offsets.push(offset);
            for d in (0..outer.len()).rev() {
                index[d] += 1;
                offset += stride[d];
                if index[d] < outer[d] {
                    break;
                }
                offset -= stride[d] * outer[d];
                index[d] = 0;
            }
        }
        Self {
            data: Cow::Borrowed(data),
            offsets,
            len,
        }
    }

    fn count(&self) -> usize {
        self.offsets.len()
    }

    fn row(&self, i: usize) -> &[T] {
        let start = self.offsets[i];
        &self.data[start..start + self.len]
    }
}

/// Rows handed to one rayon task: enough work to pay for the task, few enough to balance.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// Runs `$body` with `$t` bound to the element type of the float storage `$s` and `$v` to its
/// data; other dtypes are an error naming `$op`.
macro_rules! with_float {
    ($s:expr, $op:expr, |$v:ident: $t:ident| $body:expr) => {
        match $s {
            candle_core::CpuStorage::F32($v) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64($v) => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!(
                "{} runs on f32 or f64 tensors, not {:?}: convert the input first",
                $op,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
use with_float;

/// The slice of `T` in `s`, or an error saying the dtypes of an op's inputs differ.
fn same_dtype<'a, T: WithDType>(s: &'a CpuStorage, op: &str) -> Result<&'a [T]> {
    T::cpu_storage_as_slice(s).map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: all float inputs must have dtype {:?}, got {:?}",
            T::DTYPE,
            candle_core::backend::BackendStorage::dtype(s)
        ))
    })
}

/// Whether the fused kernels can run on `t`'s device.
fn on_cpu(t: &Tensor) -> bool {
    t.device().is_cpu()
}
