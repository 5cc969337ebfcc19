//! Evaluations: scores of artifacts on tasks, recorded by eval jobs or imported.

use axum::extract::State;
use axum::http::StatusCode;
use clreg_types::{ErrorBody, Evaluation, ImportEvaluations};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::artifacts;
use crate::auth::Caller;
use crate::db::entities::evaluation;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::evaluations;
use crate::state::AppState;

/// The largest results file an import carries (TRACE outputs hold every generation).
const MAX_IMPORT: usize = 64 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, import))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only this artifact's (any reference).
    artifact: Option<String>,
}

/// The collaboration's evaluations (scores only; auditors see them too), oldest first.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/evaluations", params(("c" = String, Path), ("artifact" = Option<String>, Query)),
    responses((status = 200, body = Vec<Evaluation>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<Evaluation>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(
        list_in(&state, &caller, &access, query.artifact.as_deref()).await?,
    ))
}

/// A collaboration's evaluations, oldest first (only those of `artifact`, any reference, when
/// given).
pub(crate) async fn list_in(
    state: &AppState,
    caller: &Caller,
    access: &crate::authz::Access,
    artifact: Option<&str>,
) -> Result<Vec<Evaluation>, ApiError> {
    let mut select =
        evaluation::Entity::find().filter(evaluation::Column::CollabId.eq(access.collab.id));
    if let Some(reference) = artifact {
        // Only artifacts the caller can read: others are not found, whether they exist or not.
        let readable =
            artifacts::member_collabs(state, caller.id, crate::authz::Action::Read).await?;
        let found = artifacts::find(state, reference, &readable).await?;
        select = select.filter(evaluation::Column::ArtifactId.eq(found.id));
    }
    let rows = select
        .order_by_asc(evaluation::Column::Id)
        .all(&state.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for e in rows {
        out.push(evaluations::to_wire(&state.db, &access.collab, e).await?);
    }
    Ok(out)
}

/// Import scores computed elsewhere: an lm-evaluation-harness `results*.json` (one evaluation
/// per task) or a TRACE inference output (one task; only the score is kept).
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/evaluations", params(("c" = String, Path)), request_body = ImportEvaluations,
    responses((status = 201, body = Vec<Evaluation>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<ImportEvaluations>,
) -> Result<(StatusCode, ApiJson<Vec<Evaluation>>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let imported = evaluations::import(&state, &caller, &access, req).await?;
    Ok((StatusCode::CREATED, ApiJson(imported)))
}
