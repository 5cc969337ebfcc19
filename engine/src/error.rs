//! The one error type of format checks: what is wrong with which file, and what to change.

/// A refusal of user input (or a failure to read it). Every variant names the file; `reason`
/// says what is wrong (naming the tensor, example or key) and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A `.safetensors` file that is corrupt, truncated or whose header lies.
    #[error("`{file}` is not a valid safetensors file: {reason}")]
    InvalidSafetensors { file: String, reason: String },
    /// A model whose config.json, index.json or tensor set is wrong.
    #[error("`{file}`: not a valid model: {reason}")]
    InvalidModel { file: String, reason: String },
    /// An adapter whose adapter_config.json or tensor names are wrong.
    #[error("`{file}`: not a valid LoRA adapter: {reason}")]
    InvalidAdapter { file: String, reason: String },
    /// An adapter that does not fit its base model.
    #[error("`{file}`: the adapter does not fit its base model: {reason}")]
    AdapterMismatch { file: String, reason: String },
    /// A dataset that is not TRACE JSON.
    #[error("`{file}` is not a valid TRACE dataset: {reason}")]
    InvalidDataset { file: String, reason: String },
    /// A file that could not be read.
    #[error("cannot read `{file}`: {reason}")]
    Io { file: String, reason: String },
    /// An output that would overwrite something.
    #[error("`{file}`: {reason}")]
    OutputExists { file: String, reason: String },
    /// A weight that is NaN or infinite.
    #[error("`{file}`: {reason}")]
    NonFiniteWeights { file: String, reason: String },
}

impl FormatError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::InvalidSafetensors { .. } => crate::code::Code::InvalidSafetensors,
            Self::InvalidModel { .. } => crate::code::Code::InvalidModel,
            Self::InvalidAdapter { .. } => crate::code::Code::InvalidAdapter,
            Self::AdapterMismatch { .. } => crate::code::Code::AdapterMismatch,
            Self::InvalidDataset { .. } => crate::code::Code::InvalidDataset,
            Self::Io { .. } => crate::code::Code::IoError,
            Self::OutputExists { .. } => crate::code::Code::OutputExists,
            Self::NonFiniteWeights { .. } => crate::code::Code::NonFiniteWeights,
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            Self::InvalidSafetensors { file, .. }
            | Self::InvalidModel { file, .. }
            | Self::InvalidAdapter { file, .. }
            | Self::AdapterMismatch { file, .. }
            | Self::InvalidDataset { file, .. }
            | Self::Io { file, .. }
            | Self::OutputExists { file, .. }
            | Self::NonFiniteWeights { file, .. } => file,
        }
    }

    /// What is wrong and what to change, without the file name.
    pub fn reason(&self) -> &str {
        match self {
            Self::InvalidSafetensors { reason, .. }
            | Self::InvalidModel { reason, .. }
            | Self::InvalidAdapter { reason, .. }
            | Self::AdapterMismatch { reason, .. }
            | Self::InvalidDataset { reason, .. }
            | Self::Io { reason, .. }
            | Self::OutputExists { reason, .. }
            | Self::NonFiniteWeights { reason, .. } => reason,
        }
    }

    pub(crate) fn safetensors(file: &str, reason: impl Into<String>) -> Self {
        Self::InvalidSafetensors {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn model(file: &str, reason: impl Into<String>) -> Self {
        Self::InvalidModel {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn adapter(file: &str, reason: impl Into<String>) -> Self {
        Self::InvalidAdapter {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn mismatch(file: &str, reason: impl Into<String>) -> Self {
        Self::AdapterMismatch {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(file: &str, reason: impl Into<String>) -> Self {
        Self::InvalidDataset {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(file: &str, reason: impl Into<String>) -> Self {
        Self::Io {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}
