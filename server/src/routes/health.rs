//! Liveness and readiness probes.

use axum::extract::State;
use clreg_types::Health;

use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

pub async fn healthz() -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Ready when the database answers.
pub async fn readyz(State(state): State<AppState>) -> Result<ApiJson<Health>, ApiError> {
    state.db.ping().await?;
    Ok(ApiJson(Health {
        status: "ready".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}
