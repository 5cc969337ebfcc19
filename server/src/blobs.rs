//! Blob storage: resumable upload sessions (hashing as bytes arrive), and ranged reads.
//!
//! An upload streams its chunks, in order, straight into one multipart write at the staging key
//! `uploads/<id>` while a running sha256 and the NaN / infinity scan of safetensors weights
//! (`clreg_engine::finite_scan`) follow them; finishing checks the digest and moves the staging
//! object to `blobs/sha256/<aa>/<digest>`. So each byte is read once, hashed once and written
//! once. The multipart writer and hasher live in this process: a chunk that reaches another
//! replica answers `upload_lost`, and a restarted server aborts the sessions it held
//! (`upload_unknown`); either way the client starts that blob again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clreg_engine::finite_scan::{FiniteScan, Outcome};
use clreg_types::{Digest, ErrorCode};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, WriteMultipart,
};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::db::entities::{blob, blob_grant, upload};
use crate::error::ApiError;
use crate::state::AppState;

/// Part size of the multipart writes (S3 needs at least 5 MiB per part but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight per upload before a chunk waits.
const PARTS_IN_FLIGHT: usize = 4;

pub type UploadSessions = Arc<Mutex<HashMap<Uuid, Arc<Session>>>>;

/// One upload in progress in this process.
pub struct Session {
    user_id: i64,
    /// Bytes received, hashed and handed to the writer: the truth about where the upload stands,
    /// readable while a chunk is arriving. It moves together with the hasher and the writer (no
    /// await between the three), so a request dropped mid-chunk (the client died) leaves them
    /// consistent, and the next client resumes from here. The database's `offset` column lags
    /// behind it and is only a hint for other processes.
    offset: AtomicU64,
    writing: tokio::sync::Mutex<Writing>,
}

struct Writing {
    hasher: Sha256,
    /// The NaN / infinity check of a safetensors file, fed the same bytes as the hasher.
    scan: FiniteScan,
    writer: Option<WriteMultipart>,
}

pub fn staging_key(id: Uuid) -> StorePath {
    StorePath::from(format!("uploads/{id}"))
}

pub fn blob_key(digest: &Digest) -> StorePath {
    StorePath::from(digest.object_key())
}

/// When a session that last received data at `now` expires: after `upload_idle_secs` of
/// silence, and never later than `upload_ttl_secs` after it opened.
fn expiry(state: &AppState, created_at: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2));
    (Utc::now() + secs(state.config.upload_idle_secs))
        .min(created_at + secs(state.config.upload_ttl_secs))
}

/// Opens an upload session, within the caps on open sessions per user and in all.
pub async fn open(state: &AppState, user_id: i64) -> Result<upload::Model, ApiError> {
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    let live = upload::Entity::find().filter(upload::Column::ExpiresAt.gt(Utc::now()));
    let mine = live
        .clone()
        .filter(upload::Column::UserId.eq(user_id))
        .count(&state.db)
        .await?;
    if mine >= state.config.max_uploads_per_user {
        return Err(ApiError::new(
            ErrorCode::TooManyUploads,
            format!(
                "you have {mine} open uploads, the most one user may have; finish or abort \
                 some (DELETE /api/v1/blobs/uploads/ID) and try again"
            ),
        ));
    }
    if live.count(&state.db).await? >= state.config.max_uploads {
        return Err(ApiError::new(
            ErrorCode::TooManyUploads,
            "the server holds as many open uploads as it allows; try again in a few minutes",
        ));
    }
    let id = Uuid::new_v4();
    let multipart = state.store.put_multipart(&staging_key(id)).await?;
    let now = Utc::now();
    let row = upload::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        offset: Set(0),
        parts: Set(0),
        created_at: Set(now),
        expires_at: Set(expiry(state, now)),
        instance: Set(Some(state.config.instance())),
    }
    .insert(&state.db)
    .await?;
    let session = Session {
        user_id,
        offset: AtomicU64::new(0),
        writing: tokio::sync::Mutex::new(Writing {
            hasher: Sha256::new(),
            scan: FiniteScan::new(),
            writer: Some(WriteMultipart::new_with_chunk_size(multipart, PART_SIZE)),
        }),
    };
    lock_sessions(state).insert(id, Arc::new(session));
    Ok(row)
}

fn lock_sessions(state: &AppState) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Session>>> {
    // A poisoned map only means a panic elsewhere mid-insert; the map itself is still valid.
    state.uploads.lock().unwrap_or_else(|p| p.into_inner())
}

/// The caller's session row, or `upload_unknown`.
pub async fn row(state: &AppState, id: Uuid, user_id: i64) -> Result<upload::Model, ApiError> {
    upload::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|u| u.user_id == user_id && u.expires_at > Utc::now())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UploadUnknown,
                format!("upload {id} does not exist or has expired; open a new one"),
            )
        })
}

/// The caller's session row with its live offset: what a client resumes from.
pub async fn status(state: &AppState, id: Uuid, user_id: i64) -> Result<upload::Model, ApiError> {
    let mut row = row(state, id, user_id).await?;
    if let Some(live) = live_offset(state, id) {
        row.offset = i64::try_from(live).unwrap_or(i64::MAX);
    }
    Ok(row)
}

/// Bytes this process holds of upload `id`, if the session lives here.
pub fn live_offset(state: &AppState, id: Uuid) -> Option<u64> {
    lock_sessions(state)
        .get(&id)
        .map(|s| s.offset.load(Ordering::Acquire))
}

fn session(state: &AppState, id: Uuid) -> Result<Arc<Session>, ApiError> {
    lock_sessions(state)
        .get(&id)
        .cloned()
        .ok_or_else(|| lost(id))
}

/// Reads and drops what is left of a refused chunk (at most `limit` bytes), so the client, still
/// sending, reads the refusal instead of a broken connection.
async fn drain(body: Body, limit: u64) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(bytes)) = stream.next().await {
        seen += bytes.len() as u64;
        if seen > limit {
            break;
        }
    }
}

/// Appends one chunk that must start at `start`. Returns the new offset.
pub async fn append(
    state: &AppState,
    id: Uuid,
    user_id: i64,
    start: u64,
    content_length: Option<u64>,
    body: Body,
) -> Result<u64, ApiError> {
    let row = row(state, id, user_id).await?;
    let session = session(state, id)?;
    if session.user_id != user_id {
        return Err(ApiError::new(
            ErrorCode::UploadUnknown,
            format!("upload {id} does not exist"),
        ));
    }
    let max_chunk = state.config.max_chunk_size;
    let Ok(mut w) = session.writing.try_lock() else {
        drain(body, max_chunk).await;
        return Err(ApiError::conflict(format!(
            "another chunk of upload {id} is still being received; ask where the upload stands (GET) and send from there"
        )));
    };
    let held = session.offset.load(Ordering::Acquire);
    if start != held {
        drop(w);
        drain(body, max_chunk).await;
        return Err(ApiError::new(
            ErrorCode::UploadOutOfOrder,
            format!(
                "chunk starts at byte {start} but upload {id} has {held} bytes; send the chunk that starts at {held}"
            ),
        ));
    }
    if content_length.is_some_and(|n| n > max_chunk) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "chunk is larger than the server's limit of {max_chunk} bytes; send smaller chunks"
            ),
        ));
    }
    let max_blob = state.config.max_blob_size;
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    let mut failure = None;
    while let Some(frame) = stream.next().await {
        let bytes = match frame {
            Ok(b) => b,
            Err(e) => {
                // The client went away: keep what arrived, so it can resume from the new offset.
                tracing::debug!(upload = %id, error = %e, "chunk body ended early");
                break;
            }
        };
        let len = bytes.len() as u64;
        let offset = session.offset.load(Ordering::Acquire);
        if offset + len > max_blob || received + len > max_chunk {
            failure = Some(if offset + len > max_blob {
                format!(
                    "blob is larger than the server's limit of {max_blob} bytes; the upload was aborted"
                )
            } else {
                format!(
                    "chunk is larger than the server's limit of {max_chunk} bytes; the upload was aborted, send smaller chunks"
                )
            });
            break;
        }
        let Writing {
            writer,
            hasher,
            scan,
        } = &mut *w;
        let Some(writer) = writer.as_mut() else {
            return Err(lost(id));
        };
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        // No await from here to the offset's update: the three move together.
        hasher.update(&bytes);
        scan.update(&bytes);
        // `put` keeps the received buffer as is: no copy, one write per frame.
        writer.put(bytes);
        session.offset.store(offset + len, Ordering::Release);
        received += len;
    }
    if let Some(message) = failure {
        drop(w);
        abort(state, id).await?;
        return Err(ApiError::new(ErrorCode::TooLarge, message));
    }
    let offset = session.offset.load(Ordering::Acquire);
    drop(w);
    let created_at = row.created_at;
    let mut active = row.into_active_model();
    active.offset = Set(i64::try_from(offset).unwrap_or(i64::MAX));
    // Activity keeps a session alive (up to its lifetime); silence ends it.
    active.expires_at = Set(expiry(state, created_at));
    active.update(&state.db).await?;
    Ok(offset)
}

/// Finishes an upload: the digest must match what arrived, then the blob becomes visible.
pub async fn finish(
    state: &AppState,
    id: Uuid,
    user_id: i64,
    expected: &Digest,
) -> Result<(Digest, u64), ApiError> {
    row(state, id, user_id).await?;
    let session = session(state, id)?;
    let mut w = session.writing.try_lock().map_err(|_| {
        ApiError::conflict(format!("a chunk of upload {id} is still being received"))
    })?;
    let actual = Digest::from_bytes(w.hasher.clone().finalize().into());
    let scanned = w.scan.outcome();
    let size = session.offset.load(Ordering::Acquire);
    if &actual != expected {
        drop(w);
        abort(state, id).await?;
        return Err(ApiError::new(
            ErrorCode::DigestMismatch,
            format!(
                "the uploaded bytes hash to {actual}, not {expected}; the upload was discarded, upload the file again"
            ),
        ));
    }
    let writer = w.writer.take().ok_or_else(|| lost(id))?;
    // From here the upload is finishing: out of the map at once, and the rest runs as a task of
    // its own, so a client that goes away mid-request cannot leave it half done.
    lock_sessions(state).remove(&id);
    drop(w);
    let state = state.clone();
    tokio::spawn(async move {
        writer.finish().await?;
        let staging = staging_key(id);
        if blob::Entity::find_by_id(actual.hex())
            .one(&state.db)
            .await?
            .is_some()
        {
            state.store.delete(&staging).await?;
        } else {
            promote(&state, &staging, &blob_key(&actual), size).await?;
        }
        record(&state.db, &actual, size, &scanned).await?;
        // Whether the bytes were new or already stored, this user has shown they hold them.
        grant(&state.db, user_id, &actual).await?;
        upload::Entity::delete_by_id(id).exec(&state.db).await?;
        Ok((actual, size))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Moves a finished upload from its staging key to its blob key. A local store renames the
/// file; S3 copies server-side (one CopyObject) and deletes, but CopyObject stops at 5 GiB
/// (`s3.max_copy_size`), so a larger blob is streamed back through this process into a
/// multipart upload at its blob key (one part in flight per `PART_SIZE`, memory stays bounded).
async fn promote(
    state: &AppState,
    staging: &StorePath,
    target: &StorePath,
    size: u64,
) -> Result<(), ApiError> {
    if state.local_store_dir().is_some() || size <= state.config.s3.max_copy_size() {
        state.store.rename(staging, target).await?;
        return Ok(());
    }
    let mut stream = state.store.get(staging).await?.into_stream();
    let mut writer =
        WriteMultipart::new_with_chunk_size(state.store.put_multipart(target).await?, PART_SIZE);
    let copied: Result<(), ApiError> = async {
        while let Some(bytes) = stream.next().await {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(bytes?);
        }
        Ok(())
    }
    .await;
    match copied {
        Ok(()) => writer.finish().await.map(|_| ())?,
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting a streamed copy failed");
            }
            return Err(e);
        }
    }
    state.store.delete(staging).await?;
    Ok(())
}

fn lost(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::UploadLost,
        format!(
            "upload {id} cannot go on (a server restart or an interrupted finish); start this blob again with a new upload"
        ),
    )
}

/// Drops a session and everything it wrote.
pub async fn abort(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let session = lock_sessions(state).remove(&id);
    let writer = match session {
        Some(session) => session.writing.lock().await.writer.take(),
        None => None,
    };
    match writer {
        Some(writer) => {
            if let Err(e) = writer.abort().await {
                tracing::warn!(upload = %id, error = %e, "aborting multipart upload failed");
            }
        }
        // Not (or no longer) written by this process: remove whatever reached the staging key,
        // and the parts a local store stages beside it (`uploads/<id>#<n>`, left by a crash).
        None => {
            match state.store.delete(&staging_key(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "removing a staged upload failed")
                }
            }
            if let Some(dir) = state.local_store_dir() {
                remove_local_parts(&dir.join("uploads"), |name| name == id.to_string());
            }
        }
    }
    upload::Entity::delete_by_id(id).exec(&state.db).await?;
    Ok(())
}

/// Records a stored blob with what the NaN / infinity scan of its bytes found. A blob already
/// recorded (two uploads of the same bytes race, or dedup) keeps its row; only a check it lacks
/// (stored before the scan existed) is filled in.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    digest: &Digest,
    size: u64,
    scanned: &Outcome,
) -> Result<(), ApiError> {
    use blob::WeightsCheck;
    let (check, tensor, element) = match scanned {
        Outcome::NotSafetensors => (WeightsCheck::NotSafetensors, None, None),
        Outcome::Unscanned => (WeightsCheck::Unscanned, None, None),
        Outcome::Finite => (WeightsCheck::Finite, None, None),
        Outcome::NonFinite { tensor, element } => (
            WeightsCheck::NonFinite,
            Some(tensor.clone()),
            Some(i64::try_from(*element).unwrap_or(i64::MAX)),
        ),
    };
    match blob::Entity::find_by_id(digest.hex()).one(db).await? {
        Some(row) if row.weights_check.is_some() => {}
        Some(row) => {
            let mut active = row.into_active_model();
            active.weights_check = Set(Some(check));
            active.non_finite_tensor = Set(tensor);
            active.non_finite_element = Set(element);
            active.update(db).await?;
        }
        None => {
            let inserted = blob::ActiveModel {
                digest: Set(digest.hex()),
                size: Set(i64::try_from(size).unwrap_or(i64::MAX)),
                created_at: Set(Utc::now()),
                weights_check: Set(Some(check)),
                non_finite_tensor: Set(tensor),
                non_finite_element: Set(element),
            }
            .insert(db)
            .await;
            if let Err(e) = inserted
                && !crate::ledger::is_unique_violation(&e)
            {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Records that `user_id` holds the bytes of `digest` (they uploaded them), so a manifest or
/// dataset registration of theirs may name it. Idempotent.
pub async fn grant<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    digest: &Digest,
) -> Result<(), ApiError> {
    use sea_orm::sea_query::OnConflict;
    blob_grant::Entity::insert(blob_grant::ActiveModel {
        user_id: Set(user_id),
        digest: Set(digest.hex()),
        granted_at: Set(Some(Utc::now())),
    })
    .on_conflict(
        OnConflict::columns([blob_grant::Column::UserId, blob_grant::Column::Digest])
            .update_column(blob_grant::Column::GrantedAt)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Whether `user_id` may name `digest` in a manifest or a dataset registration: proof of
/// possession (they uploaded the bytes) or the right to read them already. Knowing a digest is
/// not enough: digests are shown to auditors and consumers. The one place that decides it.
pub async fn may_name(state: &AppState, user_id: i64, digest: &Digest) -> Result<bool, ApiError> {
    let granted = blob_grant::Entity::find_by_id((user_id, digest.hex()))
        .one(&state.db)
        .await?
        .is_some();
    Ok(granted || may_read(state, user_id, digest).await?)
}

/// A digest from a request path: `invalid_digest` when it is not `sha256:<64 hex>`.
pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|e: clreg_types::DigestError| {
        ApiError::new(clreg_types::ErrorCode::InvalidDigest, e.to_string())
    })
}

/// A blob is readable by members who may download an artifact containing it, or who may read the
/// stored content of a dataset with that digest in a `full` collaboration.
pub async fn may_read(state: &AppState, user_id: i64, digest: &Digest) -> Result<bool, ApiError> {
    use crate::artifacts::member_collabs;
    use crate::authz::Action;
    use crate::db::entities::{collaboration, dataset};
    use sea_orm::{ColumnTrait, QueryFilter};

    let downloadable = member_collabs(state, user_id, Action::Download).await?;
    if !crate::artifacts::holding(state, digest, downloadable)
        .await?
        .is_empty()
    {
        return Ok(true);
    }
    let dataset_readers = member_collabs(state, user_id, Action::Datasets).await?;
    let stored = dataset::Entity::find()
        .filter(dataset::Column::Digest.eq(digest.hex()))
        .filter(dataset::Column::ContentStored.eq(true))
        .filter(dataset::Column::CollabId.is_in(dataset_readers))
        .all(&state.db)
        .await?;
    for d in stored {
        let full = collaboration::Entity::find_by_id(d.collab_id)
            .one(&state.db)
            .await?
            .is_some_and(|c| c.policy == collaboration::PolicyValue::Full);
        if full {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the part files a local store stages for multipart writes (`<key>#<n>`) in `dir`
/// whose key's name satisfies `owned`; returns how many were removed.
pub fn remove_local_parts(dir: &std::path::Path, owned: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((key, _)) = name.to_str().and_then(|n| n.split_once('#')) else {
            continue;
        };
        if owned(key) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Aborts the upload sessions this process (its `instance`) held before it restarted: their
/// writers and running hashes died with it, so they can only answer `upload_lost`. Run at
/// start, before serving. Sessions of other replicas are left to them (or to expiry).
pub async fn abort_orphans(state: &AppState) -> Result<usize, ApiError> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let orphans = upload::Entity::find()
        .filter(upload::Column::Instance.eq(state.config.instance()))
        .all(&state.db)
        .await?;
    for row in &orphans {
        abort(state, row.id).await?;
    }
    Ok(orphans.len())
}

/// Removes expired sessions (past their lifetime, or idle too long), with their staged
/// bytes; run periodically.
pub async fn sweep_expired(state: &AppState) -> Result<usize, ApiError> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let expired = upload::Entity::find()
        .filter(upload::Column::ExpiresAt.lt(Utc::now()))
        .all(&state.db)
        .await?;
    for row in &expired {
        abort(state, row.id).await?;
    }
    Ok(expired.len())
}

/// Parses a single `Range: bytes=…` header into an object-store range.
pub fn parse_range(headers: &HeaderMap) -> Result<Option<GetRange>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            "unsupported Range: use `bytes=START-`, `bytes=START-END` or `bytes=-SUFFIX`",
        )
    };
    let spec = value
        .to_str()
        .map_err(|_| bad())?
        .strip_prefix("bytes=")
        .ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| clreg_types::parse_digits::<u64>(s.trim()).ok_or_else(bad);
    Ok(Some(match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, true) => GetRange::Offset(num(a)?),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(bad());
            }
            // An inclusive end; u64::MAX (or any end past the blob) means "to the end".
            GetRange::Bounded(start..end.saturating_add(1))
        }
        (true, false) => GetRange::Suffix(num(b)?),
        (true, true) => return Err(bad()),
    }))
}

/// Streams blob content, honouring `Range`.
pub async fn serve(
    state: &AppState,
    digest: &Digest,
    size: u64,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range = parse_range(headers)?;
    let (start, end) = match &range {
        None => (0, size),
        Some(GetRange::Offset(s)) => (*s, size),
        Some(GetRange::Bounded(r)) => (r.start, r.end.min(size)),
        Some(GetRange::Suffix(n)) => (size.saturating_sub(*n), size),
    };
    if range.is_some() && (start >= size || start >= end) && size > 0 {
        let mut response = ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("range is outside the blob's {size} bytes"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(response);
    }
    let options = GetOptions {
        range: range.as_ref().map(|_| GetRange::Bounded(start..end)),
        ..Default::default()
    };
    let result = if size == 0 {
        None
    } else {
        Some(state.store.get_opts(&blob_key(digest), options).await?)
    };
    let body = match result {
        Some(r) => body_of(r),
        None => Body::empty(),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, etag);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1)))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// Bytes per read when streaming a local file: object_store's own stream reads 8 KiB at a time,
/// one blocking task each, which caps a download far below disk and network speed.
const READ_SIZE: usize = 4 << 20;

/// The response body for a get: local files are read in large pieces on one blocking thread
/// (at most two pieces queued), other stores stream as they answer.
fn body_of(result: GetResult) -> Body {
    let range = result.range.clone();
    let file = match result.payload {
        GetResultPayload::File(file, _) => file,
        GetResultPayload::Stream(stream) => return Body::from_stream(stream),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = file;
        let mut left = range.end - range.start;
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(READ_SIZE).min(READ_SIZE);
            let mut buf = vec![0u8; want];
            let piece = file.read_exact(&mut buf).map(|()| bytes::Bytes::from(buf));
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return; // the client went away, or the read failed and was reported
            }
            left -= want as u64;
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    }))
}
