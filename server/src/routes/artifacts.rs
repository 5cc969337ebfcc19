//! Artifact routes: commit a manifest, list, show, lineage and file download.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clreg_types::{Artifact, CommitArtifact, CommitResult, ErrorBody, ErrorCode, Lineage};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::artifacts;
use crate::auth::Caller;
use crate::db::entities::{artifact, artifact_file};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, commit))
        .routes(routes!(by_version))
        .routes(routes!(show))
        .routes(routes!(lineage))
        .routes(routes!(collab_lineage))
        .routes(routes!(file))
        .routes(routes!(holding))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    name: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/artifacts", params(("c" = String, Path), ("name" = Option<String>, Query)),
    responses((status = 200, body = Vec<Artifact>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<Artifact>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(list_in(&state, &access, query.name).await?))
}

/// A collaboration's artifacts (only those named `name`, when given), by name and version.
pub(crate) async fn list_in(
    state: &AppState,
    access: &crate::authz::Access,
    name: Option<String>,
) -> Result<Vec<Artifact>, ApiError> {
    let mut select =
        artifact::Entity::find().filter(artifact::Column::CollabId.eq(access.collab.id));
    if let Some(name) = name {
        select = select.filter(artifact::Column::Name.eq(name));
    }
    let rows = select
        .order_by_asc(artifact::Column::Name)
        .order_by_asc(artifact::Column::Version)
        .all(&state.db)
        .await?;
    artifacts::to_wire_all(state, rows).await
}

/// Commit a manifest whose blobs are all uploaded. Identical manifests are idempotent (200).
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/artifacts", params(("c" = String, Path)), request_body = CommitArtifact,
    responses((status = 201, body = CommitResult), (status = 200, body = CommitResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<CommitArtifact>,
) -> Result<(StatusCode, ApiJson<CommitResult>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let (created, model) = artifacts::commit(&state, &caller, &access, req).await?;
    let artifact = artifacts::to_wire(&state, model).await?;
    if created {
        tracing::info!(artifact = %artifact.reference(), id = %artifact.id, user = %caller.name, "artifact committed");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ApiJson(CommitResult { created, artifact })))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/artifacts/{name}/{version}",
    params(("c" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "a number or `latest`")),
    responses((status = 200, body = Artifact), (status = 404, body = ErrorBody)))]
async fn by_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, name, version)): ApiPath<(String, String, String)>,
) -> Result<ApiJson<Artifact>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let found = artifacts::by_name(&state, access.collab.id, &name, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("artifact `{c}/{name}:{version}`")))?;
    Ok(ApiJson(artifacts::to_wire(&state, found).await?))
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}", params(("id" = String, Path, description = "id or unique prefix (8+ hex)")),
    responses((status = 200, body = Artifact), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Artifact>, ApiError> {
    let (found, access) = artifacts::find_for(&state, &caller, &id).await?;
    Ok(ApiJson(
        artifacts::to_wire_in(&state, found, &access.collab).await?,
    ))
}

/// Ancestors and descendants as a DAG (only collaborations the caller can read).
#[utoipa::path(get, path = "/api/v1/artifacts/{id}/lineage", params(("id" = String, Path)),
    responses((status = 200, body = Lineage), (status = 404, body = ErrorBody)))]
async fn lineage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Lineage>, ApiError> {
    let (found, _) = artifacts::find_for(&state, &caller, &id).await?;
    Ok(ApiJson(
        crate::lineage::of_artifact(&state, &caller, &found).await?,
    ))
}

/// The collaboration's whole lineage DAG: its artifacts, the edges into them and the parents
/// (in collaborations the caller can read) they come from. `root` is the collaboration's name.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/lineage", params(("c" = String, Path)),
    responses((status = 200, body = Lineage), (status = 404, body = ErrorBody)))]
async fn collab_lineage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Lineage>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(
        crate::lineage::of_collab(&state, &caller, &access.collab).await?,
    ))
}

/// One file of an artifact; `path` is percent-encoded (`/` as `%2F`). Range supported.
#[utoipa::path(get, path = "/api/v1/artifacts/{id}/files/{path}", params(("id" = String, Path), ("path" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 206), (status = 404, body = ErrorBody)))]
async fn file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, path)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_file(&state, &caller, &id, &path, &headers).await
}

/// One file of an artifact the caller may download (the API's and the web UI's download).
pub(crate) async fn serve_file(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (found, _) = artifacts::find_for(state, caller, id).await?;
    let entry = artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.eq(&found.id))
        .filter(artifact_file::Column::Path.eq(path))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("file `{path}` in artifact {}", found.id)))?;
    let digest = clreg_types::Digest::parse_lenient(&entry.digest)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    crate::blobs::serve(
        state,
        &digest,
        u64::try_from(entry.size).unwrap_or(0),
        headers,
    )
    .await
}

/// The artifacts holding a blob, among those the caller may read, newest first: how `clreg
/// push` finds the registry artifacts a local run's record names (by the sha256 of their files).
#[utoipa::path(get, path = "/api/v1/blobs/{digest}/artifacts", params(("digest" = String, Path)),
    responses((status = 200, body = Vec<Artifact>), (status = 422, body = ErrorBody)))]
async fn holding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(digest): ApiPath<String>,
) -> Result<ApiJson<Vec<Artifact>>, ApiError> {
    let digest = crate::blobs::parse_digest(&digest)?;
    let readable = artifacts::member_collabs(&state, caller.id, crate::authz::Action::Read).await?;
    let rows = artifacts::holding(&state, &digest, readable).await?;
    Ok(ApiJson(artifacts::to_wire_all(&state, rows).await?))
}
