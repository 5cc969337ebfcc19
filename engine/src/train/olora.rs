//! The O-LoRA regulariser: λ · Σ_modules Σ_{i<t} L_orth(A_i, A_t) with O = A_t · A_iᵀ, `l1` = Σ|O|
//! or `sq` = Σ O², plus cmnfriend/O-LoRA's optional λ₂ · Σ‖new LoRA parameter‖₂.

use candle_core::{DType, Result, Tensor};

use super::config::OrthVariant;

/// The orthogonality term for one module: Σ over the earlier `a_old` (`[r_i, in]` each, frozen)
/// of L_orth(A_i, `a_new`) (`[r, in]`). Zero when there are no earlier adapters.
pub fn orth_loss(a_new: &Tensor, a_old: &[Tensor], variant: OrthVariant) -> Result<Tensor> {
    let mut total = Tensor::zeros((), a_new.dtype(), a_new.device())?;
    for a in a_old {
        let o = a_new.matmul(&a.detach().t()?)?;
        let term = match variant {
            OrthVariant::L1 => o.abs()?.sum_all()?,
            OrthVariant::Sq => o.sqr()?.sum_all()?,
        };
        total = (total + term)?;
    }
    Ok(total)
}

/// Σ‖p‖₂ over `params`. A parameter whose norm is zero (a fresh B) contributes neither value nor
/// gradient, as PyTorch's norm backward defines it at zero.
pub fn l2_loss(params: &[Tensor]) -> Result<Tensor> {
    let Some(first) = params.first() else {
        candle_core::bail!("l2_loss needs at least one parameter");
    };
    let mut total = Tensor::zeros((), first.dtype(), first.device())?;
    for p in params {
        let sq = p.sqr()?.sum_all()?;
        if sq.to_dtype(DType::F64)?.to_scalar::<f64>()? > 0.0 {
            total = (total + sq.sqrt()?)?;
        }
    }
    Ok(total)
}
