//! Liveness and readiness probes.

use axum::extract::State;
use clreg_types::Health;
use object_store::ObjectStore as _;

use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

pub async fn healthz() -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Ready when the database and the object store answer (a load balancer takes a replica out of
/// rotation on `503 busy`). The store is asked for an object that need not exist: an answer,
/// found or not, is reachability.
pub async fn readyz(State(state): State<AppState>) -> Result<ApiJson<Health>, ApiError> {
    if let Err(e) = state.db.ping().await {
        return Err(unready("database", e));
    }
    match state
        .store
        .head(&object_store::path::Path::from("readyz"))
        .await
    {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(unready("object store", e)),
    }
    Ok(ApiJson(Health {
        status: "ready".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

fn unready(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "readiness: the {what} does not answer");
    ApiError::new(
        clreg_types::ErrorCode::Busy,
        format!("the {what} does not answer; this replica is not ready"),
    )
}
