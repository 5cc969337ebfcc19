//! The error type of a training run; `code()` is stable on the wire.

use std::path::PathBuf;

use crate::error::FormatError;
use crate::model::ModelError;

/// Why a training run stopped without an output.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Settings that cannot train.
    #[error("invalid training option: {0}")]
    InvalidConfig(String),
    /// A dataset, adapter or checkpoint file that fails clreg's format checks.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The model or an adapter could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An earlier adapter was trained on a different base model.
    #[error("`{adapter}` was trained on a different base: {reason}")]
    BaseMismatch { adapter: String, reason: String },
    /// A data schedule that cannot be built (replay or joint without earlier data, …).
    #[error(transparent)]
    Schedule(#[from] crate::data::ScheduleError),
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {loss} at step {step}; lower the learning rate (--lr), keep gradient \
         clipping on (--clip-grad), or check the data.{}",
        match checkpoint {
            Some(p) => format!(" The last good checkpoint is {}; resume from it with --resume.", p.display()),
            None => " No checkpoint was written before it (see --checkpoint-every).".to_string(),
        }
    )]
    NonFiniteLoss {
        step: usize,
        loss: f64,
        checkpoint: Option<PathBuf>,
    },
    /// A checkpoint that does not belong to this run.
    #[error("cannot resume from `{checkpoint}`: {reason}")]
    Resume { checkpoint: String, reason: String },
    /// The caller asked to stop; checkpoints written so far are kept.
    #[error("cancelled at step {step}")]
    Cancelled { step: usize },
    /// A tensor computation failed (a bug or an exhausted device, not bad input).
    #[error("tensor computation failed: {0}")]
    Compute(String),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(e.to_string())
    }
}

impl TrainError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::InvalidConfig(_) => crate::code::Code::InvalidOption,
            Self::Format(e) => e.code(),
            Self::Model(e) => e.code(),
            Self::BaseMismatch { .. } => crate::code::Code::BaseMismatch,
            Self::Schedule(e) => e.code(),
            Self::NonFiniteLoss { .. } => crate::code::Code::NonFiniteLoss,
            Self::Resume { .. } => crate::code::Code::ResumeMismatch,
            Self::Cancelled { .. } => crate::code::Code::Cancelled,
            Self::Compute(_) => crate::code::Code::ComputeError,
        }
    }
}
