//! The collaboration's ledger, oldest event first.

use axum::extract::State;
use clreg_types::LedgerEvent;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/ledger", params(("c" = String, Path)),
    responses((status = 200, body = Vec<LedgerEvent>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<LedgerEvent>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let events =
        crate::ledger::list(&state.db, Some((access.collab.id, &access.collab.name))).await?;
    Ok(ApiJson(events))
}
