//! Blob routes: existence, ranged download, and the resumable upload protocol.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clreg_types::{BlobInfo, ErrorBody, ErrorCode, UploadStatus};
use sea_orm::EntityTrait;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::blobs::{self, parse_digest};
use crate::db::entities::{blob, upload};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::uploads;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(head_blob, get_blob))
        .routes(routes!(open_upload))
        .routes(routes!(
            upload_status,
            upload_chunk,
            finish_upload,
            abort_upload
        ))
}

/// Whether the caller may name a blob it has (so a client can skip uploading it): 200 with its
/// size for a blob the caller uploaded or may read, 404 otherwise, whether or not it exists.
#[utoipa::path(head, path = "/api/v1/blobs/{digest}", params(("digest" = String, Path)),
    responses((status = 200, description = "present; Content-Length is its size"), (status = 404)))]
async fn head_blob(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(digest): ApiPath<String>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    // Only to those who hold the bytes or may read them: to anyone else a blob's existence and
    // size are not to be learnt from its digest.
    if !blobs::may_name(&state, caller.id, &digest).await? {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    let Some(found) = blob::Entity::find_by_id(digest.hex())
        .one(&state.db)
        .await?
    else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(found.size.max(0)));
    Ok(response)
}

/// Blob content (Range supported) for callers allowed to download an artifact or dataset holding it.
#[utoipa::path(get, path = "/api/v1/blobs/{digest}", params(("digest" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 206), (status = 404, body = ErrorBody)))]
async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(digest): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    let not_found = || ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} not found"));
    if !blobs::may_read(&state, caller.id, &digest).await? {
        return Err(not_found());
    }
    let found = blob::Entity::find_by_id(digest.hex())
        .one(&state.db)
        .await?
        .ok_or_else(not_found)?;
    blobs::serve(
        &state,
        &digest,
        u64::try_from(found.size).unwrap_or(0),
        &headers,
    )
    .await
}

fn status_of(state: &AppState, row: &upload::Model) -> UploadStatus {
    UploadStatus {
        id: row.id,
        offset: u64::try_from(row.offset).unwrap_or(0),
        max_size: state.config.max_blob_size,
        expires_at: row.expires_at,
    }
}

/// Open a resumable upload session.
#[utoipa::path(post, path = "/api/v1/blobs/uploads", responses((status = 201, body = UploadStatus)))]
async fn open_upload(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let row = uploads::open(&state, caller.id).await?;
    let mut response = (StatusCode::CREATED, ApiJson(status_of(&state, &row))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/blobs/uploads/{}", row.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/blobs/uploads/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = UploadStatus), (status = 404, body = ErrorBody)))]
async fn upload_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<UploadStatus>, ApiError> {
    let row = uploads::row(&state, id, caller.id).await?;
    Ok(ApiJson(status_of(&state, &row)))
}

/// Append a chunk; `Upload-Offset` must equal the bytes received so far (else 416, whose
/// `Upload-Offset` header says where the upload stands).
#[utoipa::path(patch, path = "/api/v1/blobs/uploads/{id}", params(("id" = Uuid, Path), ("upload-offset" = u64, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = UploadStatus), (status = 413, body = ErrorBody), (status = 416, body = ErrorBody)))]
async fn upload_chunk(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let offset = headers
        .get(clreg_types::UPLOAD_OFFSET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| clreg_types::parse_digits::<u64>(v.trim()))
        .ok_or_else(|| ApiError::bad_request("missing or invalid `Upload-Offset` header: send the byte offset this chunk starts at"))?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match uploads::append(&state, id, caller.id, offset, length, body).await {
        Ok(_) => {
            let row = uploads::row(&state, id, caller.id).await?;
            Ok((StatusCode::ACCEPTED, ApiJson(status_of(&state, &row))).into_response())
        }
        // A refused chunk says where the upload stands, so the client can go on from there.
        Err(e) if matches!(e.code, ErrorCode::UploadOutOfOrder | ErrorCode::Conflict) => {
            let mut response = e.into_response();
            if let Some(held) = uploads::offset(&state, id).await {
                response
                    .headers_mut()
                    .insert(clreg_types::UPLOAD_OFFSET_HEADER, HeaderValue::from(held));
            }
            Ok(response)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, Deserialize)]
struct FinishQuery {
    digest: String,
}

/// Finish: the server checks the sha256 of what arrived before the blob becomes visible.
#[utoipa::path(put, path = "/api/v1/blobs/uploads/{id}", params(("id" = Uuid, Path), ("digest" = String, Query)),
    responses((status = 201, body = BlobInfo), (status = 422, body = ErrorBody)))]
async fn finish_upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<FinishQuery>,
) -> Result<(StatusCode, ApiJson<BlobInfo>), ApiError> {
    let expected = parse_digest(&query.digest)?;
    let (digest, size) = uploads::finish(&state, id, caller.id, &expected).await?;
    tracing::info!(%digest, size, user = %caller.name, "blob stored");
    Ok((StatusCode::CREATED, ApiJson(BlobInfo { digest, size })))
}

#[utoipa::path(delete, path = "/api/v1/blobs/uploads/{id}", params(("id" = Uuid, Path)), responses((status = 204)))]
async fn abort_upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    uploads::row(&state, id, caller.id).await?;
    uploads::abort(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
