//! Round series: create, add rounds, list, show, and the report (score matrix, BWT, FWT, gain,
//! and the BWT history).

use axum::extract::State;
use axum::http::StatusCode;
use clreg_types::{AddRound, CreateSeries, ErrorBody, Series, SeriesReport};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::entities::series as entity;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::series;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(add_round))
        .routes(routes!(report))
}

/// The collaboration's series, by name.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/series", params(("c" = String, Path)),
    responses((status = 200, body = Vec<Series>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<Series>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(list_in(&state, &access).await?))
}

/// A collaboration's series, by name.
pub(crate) async fn list_in(
    state: &AppState,
    access: &crate::authz::Access,
) -> Result<Vec<Series>, ApiError> {
    let rows = entity::Entity::find()
        .filter(entity::Column::CollabId.eq(access.collab.id))
        .order_by_asc(entity::Column::Name)
        .all(&state.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for s in rows {
        out.push(series::to_wire(&state.db, &access.collab, &s).await?);
    }
    Ok(out)
}

/// Create a series: a base model and the tasks in training order.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/series", params(("c" = String, Path)), request_body = CreateSeries,
    responses((status = 201, body = Series), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<CreateSeries>,
) -> Result<(StatusCode, ApiJson<Series>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let created = series::create(&state, &caller, &access, req).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/series/{s}", params(("c" = String, Path), ("s" = String, Path)),
    responses((status = 200, body = Series), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, s)): ApiPath<(String, String)>,
) -> Result<ApiJson<Series>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let found = series::find_in(&state.db, access.collab.id, &s).await?;
    Ok(ApiJson(
        series::to_wire(&state.db, &access.collab, &found).await?,
    ))
}

/// Append the next round.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/series/{s}/rounds", params(("c" = String, Path), ("s" = String, Path)), request_body = AddRound,
    responses((status = 201, body = Series), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn add_round(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, s)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<AddRound>,
) -> Result<(StatusCode, ApiJson<Series>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let updated = series::add_round(&state, &caller, &access, &s, req).await?;
    Ok((StatusCode::CREATED, ApiJson(updated)))
}

/// The score matrix (rounds × tasks and the base row), BWT, FWT, relative BWT and gains over
/// the base, the missing cells by name, and the BWT history of snapshots.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/series/{s}/report", params(("c" = String, Path), ("s" = String, Path)),
    responses((status = 200, body = SeriesReport), (status = 404, body = ErrorBody)))]
async fn report(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, s)): ApiPath<(String, String)>,
) -> Result<ApiJson<SeriesReport>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let found = series::find_in(&state.db, access.collab.id, &s).await?;
    Ok(ApiJson(
        series::report_with_history(&state.db, &access.collab, &found).await?,
    ))
}
