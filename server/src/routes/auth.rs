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
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    // Per client address, then per key (by its hash: the key itself is never kept).
    let limited = |retry: u64| {
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!("too many token requests; retry in {retry} s (a token lasts, reuse it)"),
        )
    };
    if let Some(axum::Extension(axum::extract::ConnectInfo(addr))) = peer {
        state
            .token_limits
            .0
            .hit(&addr.ip().to_string())
            .map_err(limited)?;
    }
    state
        .token_limits
        .1
        .hit(&crate::auth::hash_api_key(req.api_key.trim()))
        .map_err(limited)?;
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
