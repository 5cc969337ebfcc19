//! The error type of merges: what is wrong, naming the tensor, file or recipe key.

use crate::error::FormatError;

/// A merge that cannot run, or stopped. Every variant names what to look at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    /// An input that is not a readable checkpoint or adapter.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A recipe that cannot be run: unknown key or method, density out of range, ...
    #[error("invalid merge recipe: {reason}")]
    InvalidRecipe { reason: String },
    /// One tensor has different shapes in two inputs.
    #[error(
        "tensor `{tensor}` has shape {shape:?} in `{file}` but {other_shape:?} in `{other}`; \
         merge models of the same architecture and size"
    )]
    ShapeMismatch {
        tensor: String,
        file: String,
        shape: Vec<usize>,
        other: String,
        other_shape: Vec<usize>,
    },
    /// A tensor one input has and another lacks.
    #[error(
        "tensor `{tensor}` is missing from `{file}` but present in `{other}`; every input must hold the same tensors"
    )]
    MissingTensor {
        tensor: String,
        file: String,
        other: String,
    },
    /// An input whose config does not match the base's.
    #[error("`{file}` does not match the base model: {reason}")]
    IncompatibleModel { file: String, reason: String },
    /// A tensor in a dtype clreg does not compute on.
    #[error("tensor `{tensor}` in `{file}` has dtype {dtype}; merges read F32, F16 and BF16 only")]
    UnsupportedDtype {
        tensor: String,
        file: String,
        dtype: String,
    },
    /// The cancel flag was set; no output was left behind.
    #[error("the merge was cancelled; no output was written")]
    Cancelled,
}

impl MergeError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::Format(e) => e.code(),
            Self::InvalidRecipe { .. } => crate::code::Code::InvalidRecipe,
            Self::ShapeMismatch { .. } => crate::code::Code::ShapeMismatch,
            Self::MissingTensor { .. } => crate::code::Code::MissingTensor,
            Self::IncompatibleModel { .. } => crate::code::Code::IncompatibleModel,
            Self::UnsupportedDtype { .. } => crate::code::Code::UnsupportedDtype,
            Self::Cancelled => crate::code::Code::Cancelled,
        }
    }

    pub(crate) fn recipe(reason: impl Into<String>) -> Self {
        Self::InvalidRecipe {
            reason: reason.into(),
        }
    }
}
