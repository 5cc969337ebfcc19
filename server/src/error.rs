//! `ApiError`: every refusal as `{code, message}` with its HTTP status; 5xx bodies stay generic.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clreg_engine::Code;
use clreg_engine::error::FormatError;
use clreg_types::{ErrorBody, ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An unexpected failure: the detail is logged once here, the client sees a generic body.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code.as_str().to_string(),
            message: self.message,
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self.code, ErrorCode::TooManyRequests) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("60"),
            );
        }
        if self.code == ErrorCode::Busy {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        if crate::db::write::is_transient(&e) {
            tracing::debug!(error = %e, "transient database conflict");
            return ApiError::new(
                ErrorCode::Busy,
                "the registry is busy with concurrent changes; retry in a moment",
            );
        }
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<sea_orm::TransactionError<ApiError>> for ApiError {
    fn from(e: sea_orm::TransactionError<ApiError>) -> Self {
        match e {
            sea_orm::TransactionError::Connection(e) => e.into(),
            sea_orm::TransactionError::Transaction(e) => e,
        }
    }
}

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        ApiError::internal(format!("object store: {e}"))
    }
}

impl From<FormatError> for ApiError {
    fn from(e: FormatError) -> Self {
        match wire_code(e.code()) {
            ErrorCode::Internal => ApiError::internal(e),
            code => ApiError::new(code, e.to_string()),
        }
    }
}

/// The wire code of an engine failure: every engine code listed, so a new one cannot slip
/// through as a 500 unnoticed.
pub fn wire_code(code: Code) -> ErrorCode {
    match code {
        Code::InvalidSafetensors => ErrorCode::InvalidSafetensors,
        Code::InvalidModel
        | Code::InvalidTokenizer
        | Code::InvalidGguf
        | Code::UnsupportedGgufType
        | Code::IncompatibleModel
        | Code::ShapeMismatch
        | Code::MissingTensor
        | Code::UnsupportedDtype
        | Code::IncompatibleExpert
        | Code::BaseMismatch => ErrorCode::InvalidModel,
        Code::InvalidAdapter => ErrorCode::InvalidAdapter,
        Code::NonFiniteWeights => ErrorCode::NonFiniteWeights,
        Code::AdapterMismatch => ErrorCode::AdapterMismatch,
        Code::InvalidDataset | Code::EmptyTask => ErrorCode::InvalidDataset,
        Code::InvalidResults => ErrorCode::InvalidResults,
        Code::InvalidOption
        | Code::InvalidRecipe
        | Code::InvalidInput
        | Code::UnknownMetric
        | Code::ResumeMismatch
        | Code::NoPastData
        | Code::BadReplayFraction
        | Code::BadSplitFraction
        | Code::SplitTooSmall
        | Code::NoTasks
        | Code::TooFewRounds
        | Code::RaggedMatrix
        | Code::BaseLength
        | Code::NotFinite
        | Code::InvalidRoundOfTask
        | Code::NoEarlierTask => ErrorCode::BadRequest,
        Code::OutputExists => ErrorCode::Conflict,
        Code::Cancelled => ErrorCode::Conflict,
        Code::IoError | Code::ComputeError | Code::NonFiniteLoss => ErrorCode::Internal,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", e.body_text()))
    }
}

/// `Json` whose rejection is an `ApiError`, so malformed input gets the same error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Query` with an `ApiError` rejection.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` with an `ApiError` rejection.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
