//! Job routes: submit, list, show, log, cancel.

use axum::extract::State;
use axum::http::StatusCode;
use clreg_types::{ErrorBody, Job, SubmitJob};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::authz::Access;
use crate::db::entities::{collaboration, job};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::jobs;
use crate::state::AppState;

/// The largest job request: data carried with a job travels in its JSON body.
pub const MAX_JOB_REQUEST: usize = 256 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, submit))
        .routes(routes!(show))
        .routes(routes!(log))
        .routes(routes!(cancel))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JOB_REQUEST))
}

/// Submit a job: the policy and the submitter's rights are checked now and again when a worker
/// claims it.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/jobs", params(("c" = String, Path)), request_body = SubmitJob,
    responses((status = 201, body = Job), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<SubmitJob>,
) -> Result<(StatusCode, ApiJson<Job>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let row = jobs::submit(&state, &caller, &access, req).await?;
    tracing::info!(job = %row.id, user = %caller.name, "job submitted");
    Ok((
        StatusCode::CREATED,
        ApiJson(jobs::to_wire(&state, row).await?),
    ))
}

/// The collaboration's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/jobs", params(("c" = String, Path)),
    responses((status = 200, body = Vec<Job>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<Job>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(list_in(&state, &access, None).await?))
}

/// A collaboration's jobs, newest first (the `limit` newest, when given).
pub(crate) async fn list_in(
    state: &AppState,
    access: &Access,
    limit: Option<u64>,
) -> Result<Vec<Job>, ApiError> {
    let rows = job::Entity::find()
        .filter(job::Column::CollabId.eq(access.collab.id))
        .order_by_desc(job::Column::CreatedAt)
        .limit(limit)
        .all(&state.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(jobs::to_wire(state, row).await?);
    }
    Ok(out)
}

/// A job and the caller's access to its collaboration (`not_found` for non-members).
pub(crate) async fn find(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(job::Model, Access), ApiError> {
    let not_found = || ApiError::not_found(format!("job {id}"));
    let row = job::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(not_found)?;
    let collab = collaboration::Entity::find_by_id(row.collab_id)
        .one(&state.db)
        .await?
        .ok_or_else(not_found)?;
    let access = caller.access_to(state, collab).await.map_err(|e| {
        if e.code == clreg_types::ErrorCode::NotFound {
            not_found()
        } else {
            e
        }
    })?;
    Ok((row, access))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Job>, ApiError> {
    let (row, _) = find(&state, &caller, id).await?;
    Ok(ApiJson(jobs::to_wire(&state, row).await?))
}

/// The job's log: progress lines and notes, newest last (at most 64 KiB).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
async fn log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<String, ApiError> {
    let (row, _) = find(&state, &caller, id).await?;
    Ok(row.log)
}

/// Cancel: a queued job at once, a running one between its steps.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Job>, ApiError> {
    let (_, access) = find(&state, &caller, id).await?;
    let row = jobs::cancel(&state, &caller, &access, id).await?;
    Ok(ApiJson(jobs::to_wire(&state, row).await?))
}
