//! The few tensor ops of a Llama layer in three flavours: composed from differentiable candle
//! ops, fused CPU kernels with hand-written backward passes (the training path, see
//! [`super::fused`]), and candle's fused kernels (inference only: they have no backward and
//! silently cut the gradient graph).

use candle_core::{D, DType, Device, Result, Tensor};

/// Which implementation of RMSNorm, RoPE and softmax a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpsMode {
    /// Composed from differentiable ops: gradients reach every LoRA parameter.
    #[default]
    Differentiable,
    /// candle's fused kernels: faster, but no gradients. For inference only.
    Fast,
    /// The fused, differentiable kernels of [`super::fused`]: the same gradients as
    /// `Differentiable`, several times fewer passes over memory. They exist for f32/f64 on the
    /// CPU only: on any other device (CUDA) or dtype this mode runs the `Differentiable` ops.
    Train,
}

/// Whether the fused training kernels can take `x`.
fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// RMSNorm computed in f32: `x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: OpsMode) -> Result<Tensor> {
    let dtype = x.dtype();
    match mode {
        OpsMode::Fast => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32),
        OpsMode::Train if fused_ok(x) && weight.dtype() == dtype => {
            super::fused::rms_norm(x, weight, eps)
        }
        OpsMode::Differentiable | OpsMode::Train => {
            let x32 = x.to_dtype(DType::F32)?;
            let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
                .sqrt()?
                .recip()?;
            x32.broadcast_mul(&inv)?
                .to_dtype(dtype)?
                .broadcast_mul(weight)
        }
    }
}

/// Rotary position embedding in the Hugging Face half-split layout: dimension `i` pairs with
/// `i + head_dim/2`. `x` is `[batch, heads, seq, head_dim]`; `cos`/`sin` are `[seq, head_dim/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: OpsMode) -> Result<Tensor> {
    match mode {
        OpsMode::Fast => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        OpsMode::Train if fused_ok(x) => super::fused::rope(x, cos, sin),
        OpsMode::Differentiable | OpsMode::Train => {
            let half = x.dim(D::Minus1)? / 2;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, mode: OpsMode) -> Result<Tensor> {
    match mode {
        OpsMode::Fast => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        OpsMode::Train if fused_ok(x) => super::fused::softmax_last_dim(x),
        OpsMode::Differentiable | OpsMode::Train => {
            // Softmax is invariant to the shift, so the max needs no gradient.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// The cos/sin tables of RoPE for positions `0..max_pos`, each `[max_pos, head_dim/2]`, f32.
pub fn rope_tables(
    head_dim: usize,
    theta: f64,
    max_pos: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| (1.0 / theta.powf(i as f64 / head_dim as f64)) as f32)
        .collect();
    let n = inv_freq.len();
    let inv_freq = Tensor::from_vec(inv_freq, (1, n), device)?;
    let pos = Tensor::arange(0u32, max_pos as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?;
    let angles = pos.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// The additive causal mask `[seq, offset + seq]`: 0 where query `i` may see key `j`
/// (`j <= offset + i`), −∞ elsewhere.
pub fn causal_mask(seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let kv = offset + seq;
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..kv).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (seq, kv), device)
}

/// Repeats key/value heads `n_rep` times for grouped-query attention:
/// `[b, kv_heads, s, d]` → `[b, kv_heads · n_rep, s, d]`, head `h` using kv head `h / n_rep`.
pub fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, kv_heads, s, d) = x.dims4()?;
    Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, kv_heads * n_rep, s, d))
}
