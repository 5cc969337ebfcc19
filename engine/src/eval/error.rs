//! The error type of evaluation input that clreg refuses: unknown metric names and result files
//! it cannot import.

/// What is wrong and what to change; `code()` is stable on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A metric name that is not one of clreg's.
    #[error("unknown metric `{name}`: use one of {known}")]
    UnknownMetric { name: String, known: String },
    /// A results file that is not in the format its importer reads.
    #[error("`{file}`: cannot import the results: {reason}")]
    InvalidResults { file: String, reason: String },
}

impl EvalError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::UnknownMetric { .. } => crate::code::Code::UnknownMetric,
            Self::InvalidResults { .. } => crate::code::Code::InvalidResults,
        }
    }

    pub(crate) fn results(file: &str, reason: impl Into<String>) -> Self {
        Self::InvalidResults {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}
