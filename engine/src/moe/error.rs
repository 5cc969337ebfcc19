//! The error type of MoE mixing: what is wrong, naming the expert, file or recipe key.

use crate::error::FormatError;
use crate::model::ModelError;

/// A mixture that cannot be built, loaded or trained, or a run that stopped.
#[derive(Debug, thiserror::Error)]
pub enum MoeError {
    /// An input that is not a readable checkpoint or adapter.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A model that cannot be loaded or run (the base, for hidden-state routers).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A recipe that cannot be run: unknown key or gate mode, too few experts, top-k too large,
    /// missing or identical prompts, ...
    #[error("invalid MoE recipe: {reason}")]
    InvalidRecipe { reason: String },
    /// An expert that does not fit the base or the other experts.
    #[error("expert `{file}` cannot join the mixture: {reason}")]
    IncompatibleExpert { file: String, reason: String },
    /// A LoRA-MoE bundle or calibration file that cannot be used.
    #[error("`{file}`: {reason}")]
    InvalidInput { file: String, reason: String },
    /// A tensor computation failed (a bug or an exhausted device, not bad input).
    #[error("tensor computation failed: {0}")]
    Compute(String),
    /// The cancel flag was set; no output was left behind.
    #[error("the mix was cancelled; no output was written")]
    Cancelled,
}

impl MoeError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::Format(e) => e.code(),
            Self::Model(e) => e.code(),
            Self::InvalidRecipe { .. } => crate::code::Code::InvalidRecipe,
            Self::IncompatibleExpert { .. } => crate::code::Code::IncompatibleExpert,
            Self::InvalidInput { .. } => crate::code::Code::InvalidInput,
            Self::Compute(_) => crate::code::Code::ComputeError,
            Self::Cancelled => crate::code::Code::Cancelled,
        }
    }

    pub(crate) fn recipe(reason: impl Into<String>) -> Self {
        Self::InvalidRecipe {
            reason: reason.into(),
        }
    }

    pub(crate) fn expert(file: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::IncompatibleExpert {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(file: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<candle_core::Error> for MoeError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(e.to_string())
    }
}
