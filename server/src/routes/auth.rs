//! `POST /auth/token`: an API key for a short-lived JWT.

use axum::extract::State;
use clreg_types::{ErrorBody, TokenRequest, TokenResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr);
    let owner = crate::auth::user_for_login(&state, peer, &req.api_key).await?;
    let (token, expires_at) = state.keys.issue(&owner.name, owner.id)?;
    tracing::info!(user = %owner.name, "token issued");
    Ok(ApiJson(TokenResponse {
        token,
        expires_at,
        user: owner.name,
    }))
}
