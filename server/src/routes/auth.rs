//! `POST /auth/token`: an API key for a short-lived JWT.

use axum::extract::State;
use clreg_types::{ErrorBody, ErrorCode, TokenRequest, TokenResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::user_of_api_key;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(token))
}

/// Exchange an API key for a JWT.
#[utoipa::path(post, path = "/api/v1/auth/token", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody)))]
async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidApiKey,
            "unknown or revoked API key; ask a server admin for a new one",
        )
    };
    let owner = user_of_api_key(&state.db, &req.api_key)
        .await?
        .ok_or_else(invalid)?;
    let (token, expires_at) = state.keys.issue(&owner.name, owner.id)?;
    tracing::info!(user = %owner.name, "token issued");
    Ok(ApiJson(TokenResponse {
        token,
        expires_at,
        user: owner.name,
    }))
}
