//! The error body every refusal carries, and the stable codes it may hold.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{code, message}`: `code` is stable and machine-readable, `message` says what to change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

macro_rules! codes {
    ($($variant:ident => ($text:literal, $status:literal)),+ $(,)?) => {
        /// Every error code the API returns, with its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant),+ }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),+ }
            }

            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),+ }
            }
        }
    };
}

codes! {
    BadRequest => ("bad_request", 400),
    InvalidName => ("invalid_name", 400),
    InvalidPath => ("invalid_path", 400),
    InvalidDigest => ("invalid_digest", 400),
    Unauthenticated => ("unauthenticated", 401),
    InvalidToken => ("invalid_token", 401),
    InvalidApiKey => ("invalid_api_key", 401),
    Forbidden => ("forbidden", 403),
    CsrfRejected => ("csrf_rejected", 403),
    PolicyForbids => ("policy_forbids", 403),
    NotFound => ("not_found", 404),
    BlobUnknown => ("blob_unknown", 404),
    UploadUnknown => ("upload_unknown", 404),
    MethodNotAllowed => ("method_not_allowed", 405),
    Conflict => ("conflict", 409),
    PolicyLoosening => ("policy_loosening", 409),
    UploadLost => ("upload_lost", 409),
    AmbiguousRef => ("ambiguous_ref", 409),
    TooLarge => ("too_large", 413),
    QuotaExceeded => ("quota_exceeded", 413),
    RangeNotSatisfiable => ("range_not_satisfiable", 416),
    TooManyUploads => ("too_many_uploads", 429),
    TooManyRequests => ("too_many_requests", 429),
    UploadOutOfOrder => ("upload_out_of_order", 416),
    DigestMismatch => ("digest_mismatch", 422),
    InvalidSafetensors => ("invalid_safetensors", 422),
    NonFiniteWeights => ("non_finite_weights", 422),
    InvalidModel => ("invalid_model", 422),
    InvalidAdapter => ("invalid_adapter", 422),
    AdapterMismatch => ("adapter_mismatch", 422),
    InvalidDataset => ("invalid_dataset", 422),
    InvalidResults => ("invalid_results", 422),
    Internal => ("internal", 500),
    ExecutorFailed => ("executor_failed", 502),
    Busy => ("busy", 503),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
