//! `POST /auth/token`: an API key for a short-lived JWT.

use axum::extract::State;
use chrono::Utc;
use clreg_types::{ErrorBody, ErrorCode, TokenRequest, TokenResponse};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::hash_api_key;
use crate::db::entities::{api_key, user};
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
    let key = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash_api_key(req.api_key.trim())))
        .one(&state.db)
        .await?
        .filter(|k| k.revoked_at.is_none_or(|t| t > Utc::now()))
        .ok_or_else(invalid)?;
    let owner = user::Entity::find_by_id(key.user_id)
        .one(&state.db)
        .await?
        .ok_or_else(invalid)?;
    let (token, expires_at) = state.keys.issue(&owner.name, owner.id)?;
    tracing::info!(user = %owner.name, key_id = key.id, "token issued");
    Ok(ApiJson(TokenResponse {
        token,
        expires_at,
        user: owner.name,
    }))
}
