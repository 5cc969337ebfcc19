//! Dataset routes: manifests always; content only in `full` collaborations.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use clreg_types::{Dataset, Digest, ErrorBody, ErrorCode, RegisterDataset};
use futures::TryStreamExt as _;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::authz::Access;
use crate::db::entities::{blob, collaboration, dataset, user};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::policy::{self, DataUse};
use crate::state::AppState;
use crate::{blobs, ledger};

/// Datasets whose content the server validates are read into memory; larger ones are refused.
const MAX_STORED_DATASET: i64 = 1 << 30;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(show))
        .routes(routes!(content))
}

async fn to_wire(state: &AppState, d: dataset::Model) -> Result<Dataset, ApiError> {
    let by = user::Entity::find_by_id(d.registered_by)
        .one(&state.db)
        .await?;
    Ok(Dataset {
        digest: Digest::parse_lenient(&d.digest).map_err(ApiError::internal)?,
        name: d.name,
        task: d.task,
        metric: d.metric,
        size: u64::try_from(d.size).unwrap_or(0),
        examples: u64::try_from(d.examples).unwrap_or(0),
        license: d.license,
        content_stored: d.content_stored,
        registered_by: by.map(|u| u.name).unwrap_or_default(),
        created_at: d.created_at,
    })
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/datasets", params(("c" = String, Path)),
    responses((status = 200, body = Vec<Dataset>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<Dataset>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(list_in(&state, &access).await?))
}

/// A collaboration's dataset manifests, in registration order.
pub(crate) async fn list_in(state: &AppState, access: &Access) -> Result<Vec<Dataset>, ApiError> {
    let rows = dataset::Entity::find()
        .filter(dataset::Column::CollabId.eq(access.collab.id))
        .order_by_asc(dataset::Column::Id)
        .all(&state.db)
        .await?;
    let mut out = Vec::new();
    for d in rows {
        out.push(to_wire(state, d).await?);
    }
    Ok(out)
}

/// Register a dataset manifest. In a `semi` collaboration the content is refused; in a `full` one
/// `store_content` keeps the uploaded blob after validating it as TRACE JSON.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/datasets", params(("c" = String, Path)), request_body = RegisterDataset,
    responses((status = 201, body = Dataset), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterDataset>,
) -> Result<(StatusCode, ApiJson<Dataset>), ApiError> {
    let access = caller.access(&state, &c).await?;
    let registered = register_in(&state, &caller, &access, req).await?;
    Ok((StatusCode::CREATED, ApiJson(registered)))
}

/// Registers a dataset manifest (and keeps its content, where the policy and the request say
/// so) in the collaboration `access` holds: the API's and `clreg-server demo`'s.
pub(crate) async fn register_in(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    mut req: RegisterDataset,
) -> Result<Dataset, ApiError> {
    clreg_types::check_name(&req.name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
    // Stored as signed 64-bit integers: larger values would be changed, so they are refused.
    for (field, value) in [("size", req.size), ("examples", req.examples)] {
        if i64::try_from(value).is_err() {
            return Err(ApiError::bad_request(format!(
                "`{field}` {value} is out of range (at most {})",
                i64::MAX
            )));
        }
    }
    for (field, value) in [("task", &req.task), ("metric", &req.metric)] {
        if value.trim().is_empty() || value.len() > 128 {
            return Err(ApiError::bad_request(format!(
                "`{field}` must be 1-128 characters"
            )));
        }
    }
    let data_use = if req.store_content {
        DataUse::StoreContent
    } else {
        DataUse::RegisterManifest
    };
    policy::decide(
        &access.collab.name,
        access.policy(),
        &access.roles,
        data_use,
    )?;
    // A duplicate is refused before any content is read (the transaction checks again).
    if registered(&state.db, access.collab.id, &req.digest).await? {
        return Err(duplicate(&req.digest, &access.collab.name));
    }
    if req.store_content {
        let unknown = || {
            ApiError::new(
                ErrorCode::BlobUnknown,
                format!(
                    "you have not uploaded dataset content {}; upload it first",
                    req.digest
                ),
            )
        };
        if !blobs::may_name(state, caller.id, &req.digest).await? {
            return Err(unknown());
        }
        let stored = blob::Entity::find_by_id(req.digest.hex())
            .one(&state.db)
            .await?
            .ok_or_else(unknown)?;
        if stored.size > MAX_STORED_DATASET {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                "datasets over 1 GiB cannot be stored; split the dataset",
            ));
        }
        // Validated as it streams from the store, one example in memory at a time, under the
        // permit that bounds CPU-heavy work.
        let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
        let stream = state
            .store
            .get(&blobs::blob_key(&req.digest))
            .await?
            .into_stream()
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let file = req.name.clone();
        let examples = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(1 << 20, reader);
            clreg_engine::trace::validate_trace_stream(reader, &file)
        })
        .await
        .map_err(ApiError::internal)??;
        // The server's own counts win over what the client declared.
        req.examples = examples as u64;
        req.size = u64::try_from(stored.size).unwrap_or(0);
    }
    store(state, caller, access, req).await
}

async fn store(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: RegisterDataset,
) -> Result<Dataset, ApiError> {
    let quota = state.config.collab_quota_bytes;
    let row = crate::db::write(&state.db, |txn| {
            let (collab, req) = (access.collab.clone(), req.clone());
            let (actor, user_id) = (caller.name.clone(), caller.id);
            Box::pin(async move {
                crate::db::lock_collab(txn, collab.id).await?;
                if registered(txn, collab.id, &req.digest).await? {
                    return Err(duplicate(&req.digest, &collab.name));
                }
                if req.store_content {
                    crate::quota::check(txn, &collab, [(req.digest.hex(), req.size)], quota).await?;
                }
                // The policy as it stands now, under the lock a tightening also takes: content
                // checked against `full` above is not stored if the collaboration became `semi`.
                if req.store_content {
                    let now = collaboration::Entity::find_by_id(collab.id)
                        .one(txn)
                        .await?
                        .ok_or_else(|| ApiError::not_found(format!("collaboration `{}`", collab.name)))?;
                    if now.policy != collaboration::PolicyValue::Full {
                        return Err(ApiError::new(
                            ErrorCode::PolicyForbids,
                            format!("`{}` became semi-cooperative meanwhile: register the manifest only", collab.name),
                        ));
                    }
                }
                let row = dataset::ActiveModel {
                    collab_id: Set(collab.id),
                    digest: Set(req.digest.hex()),
                    name: Set(req.name.clone()),
                    task: Set(req.task.clone()),
                    metric: Set(req.metric.clone()),
                    size: Set(i64::try_from(req.size).unwrap_or(i64::MAX)),
                    examples: Set(i64::try_from(req.examples).unwrap_or(i64::MAX)),
                    license: Set(req.license.clone()),
                    content_stored: Set(req.store_content),
                    registered_by: Set(user_id),
                    created_at: Set(Utc::now()),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
                ledger::append(
                    txn,
                    Some((collab.id, &collab.name)),
                    "dataset.registered",
                    &actor,
                    json!({"digest": req.digest, "name": req.name, "task": req.task, "metric": req.metric,
                           "size": req.size, "examples": req.examples, "license": req.license, "content_stored": req.store_content}),
                )
                .await?;
                Ok(row)
            })
        })
    .await?;
    to_wire(state, row).await
}

/// Whether `digest` is registered in the collaboration.
async fn registered<C: sea_orm::ConnectionTrait>(
    db: &C,
    collab_id: i64,
    digest: &Digest,
) -> Result<bool, ApiError> {
    Ok(dataset::Entity::find()
        .filter(dataset::Column::CollabId.eq(collab_id))
        .filter(dataset::Column::Digest.eq(digest.hex()))
        .one(db)
        .await?
        .is_some())
}

fn duplicate(digest: &Digest, collab: &str) -> ApiError {
    ApiError::conflict(format!(
        "dataset {digest} is already registered in `{collab}`"
    ))
}

async fn find(state: &AppState, access: &Access, digest: &str) -> Result<dataset::Model, ApiError> {
    let digest = Digest::parse_lenient(digest)
        .map_err(|e| ApiError::new(ErrorCode::InvalidDigest, e.to_string()))?;
    dataset::Entity::find()
        .filter(dataset::Column::CollabId.eq(access.collab.id))
        .filter(dataset::Column::Digest.eq(digest.hex()))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("dataset {digest} in `{}`", access.collab.name)))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/datasets/{digest}", params(("c" = String, Path), ("digest" = String, Path)),
    responses((status = 200, body = Dataset), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, digest)): ApiPath<(String, String)>,
) -> Result<ApiJson<Dataset>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(
        to_wire(&state, find(&state, &access, &digest).await?).await?,
    ))
}

/// Dataset content: `full` collaborations only, owners and contributors only.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/datasets/{digest}/content", params(("c" = String, Path), ("digest" = String, Path)),
    responses((status = 200, content_type = "application/json"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn content(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, digest)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = caller.access(&state, &c).await?;
    let d = find(&state, &access, &digest).await?;
    policy::decide(
        &access.collab.name,
        access.policy(),
        &access.roles,
        DataUse::ReadContent,
    )?;
    if !d.content_stored {
        return Err(ApiError::not_found(format!(
            "content of dataset {digest} (only its manifest was registered)"
        )));
    }
    let digest = Digest::parse_lenient(&d.digest).map_err(ApiError::internal)?;
    blobs::serve(
        &state,
        &digest,
        u64::try_from(d.size).unwrap_or(0),
        &headers,
    )
    .await
}
