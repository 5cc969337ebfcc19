//! Evaluations: scores of artifacts on tasks, as eval jobs recorded them.

use axum::extract::State;
use clreg_types::Evaluation;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::artifacts;
use crate::auth::Caller;
use crate::db::entities::{evaluation, user};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
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
    let mut select =
        evaluation::Entity::find().filter(evaluation::Column::CollabId.eq(access.collab.id));
    if let Some(reference) = &query.artifact {
        // Only artifacts the caller can read: others are not found, whether they exist or not.
        let readable =
            artifacts::member_collabs(&state, caller.id, crate::authz::Action::Read).await?;
        let found = artifacts::find(&state, reference)
            .await
            .ok()
            .filter(|a| readable.contains(&a.collab_id))
            .ok_or_else(|| ApiError::not_found(format!("artifact `{reference}`")))?;
        select = select.filter(evaluation::Column::ArtifactId.eq(found.id));
    }
    let rows = select
        .order_by_asc(evaluation::Column::Id)
        .all(&state.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for e in rows {
        let created_by = user::Entity::find_by_id(e.created_by)
            .one(&state.db)
            .await?
            .map(|u| u.name)
            .unwrap_or_default();
        out.push(Evaluation {
            id: e.id,
            collab: access.collab.name.clone(),
            artifact: e.artifact_id,
            task: e.task,
            metric: e.metric,
            score: e.score,
            n: u64::try_from(e.n).unwrap_or(0),
            job: e.job_id,
            created_by,
            created_at: e.created_at,
        });
    }
    Ok(ApiJson(out))
}
