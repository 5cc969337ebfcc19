//! The error type of model loading, inference, generation and GGUF import.

use crate::error::FormatError;

/// A failure to load, run or import a model. Every variant names the file or tensor it is about;
/// `code()` is stable on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file that could not be read or written.
    #[error("cannot read or write `{file}`: {reason}")]
    Io { file: String, reason: String },
    /// A checkpoint whose files or tensors do not make the model its config describes.
    #[error("`{file}`: not a usable model: {reason}")]
    InvalidModel { file: String, reason: String },
    /// An adapter that cannot be applied to the loaded model.
    #[error("`{file}`: cannot apply the LoRA adapter: {reason}")]
    InvalidAdapter { file: String, reason: String },
    /// A tokenizer that cannot be read, built or used.
    #[error("`{file}`: tokenizer: {reason}")]
    Tokenizer { file: String, reason: String },
    /// A GGUF file that is not a Llama-family model clreg can import.
    #[error("`{file}`: cannot import the GGUF file: {reason}")]
    Gguf { file: String, reason: String },
    /// A GGUF tensor stored in a type clreg does not dequantize.
    #[error(
        "`{file}`: tensor `{tensor}` is stored as {dtype}, which clreg cannot dequantize \
         (supported: {supported}); re-quantize the model to one of these"
    )]
    UnsupportedGgufType {
        file: String,
        tensor: String,
        dtype: String,
        supported: String,
    },
    /// Options a caller passed that make no sense (empty prompt, top-p out of range, …).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A tensor computation failed (a bug or an exhausted device, not bad input).
    #[error("tensor computation failed: {0}")]
    Compute(String),
    /// The caller asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// A config that does not pass clreg's format checks.
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl ModelError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::Io { .. } => crate::code::Code::IoError,
            Self::InvalidModel { .. } => crate::code::Code::InvalidModel,
            Self::InvalidAdapter { .. } => crate::code::Code::InvalidAdapter,
            Self::Tokenizer { .. } => crate::code::Code::InvalidTokenizer,
            Self::Gguf { .. } => crate::code::Code::InvalidGguf,
            Self::UnsupportedGgufType { .. } => crate::code::Code::UnsupportedGgufType,
            Self::InvalidOption(_) => crate::code::Code::InvalidOption,
            Self::Compute(_) => crate::code::Code::ComputeError,
            Self::Cancelled => crate::code::Code::Cancelled,
            Self::Format(e) => e.code(),
        }
    }

    pub(crate) fn io(file: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::Io {
            file: file.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn model(file: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::InvalidModel {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn adapter(file: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::InvalidAdapter {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tokenizer(file: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::Tokenizer {
            file: file.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn gguf(file: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::Gguf {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(e.to_string())
    }
}
