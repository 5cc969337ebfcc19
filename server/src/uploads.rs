//! Resumable upload sessions that any replica can continue.
//!
//! Nothing of a session lives in a server process. The `uploads` row holds the committed offset
//! and the running checks as of that offset ([`Checks`]: the sha256 state, serialised through
//! RustCrypto's `SerializableState`, and the NaN / infinity scan of safetensors weights); each
//! chunk's bytes are one object, `uploads/<id>/<start>-<attempt>`, listed in `upload_chunks`. So
//! a chunk may reach any replica, and a replica may die between chunks or in the middle of one:
//! the client asks where the upload stands (any replica answers) and sends from there.
//!
//! A chunk commits in one transaction: its `upload_chunks` row (primary key: upload and start)
//! and the session's new offset and checks, on condition that the offset is still the one the
//! chunk started at. Two requests racing for the same bytes (a client that gave up on a slow
//! replica and retried elsewhere) both stream; one commits, the other deletes its object and
//! answers `409 conflict`. There is no lock for a dead replica to leave behind.
//!
//! Finishing checks the digest from the stored state, then assembles the blob at its key: a
//! one-chunk upload is renamed (a server-side copy on S3); chunks of a larger one are copied in
//! order into one new object (in the kernel on a local store, `copy_file_range`; streamed
//! through this process into a multipart write on S3). That second pass over a multi-chunk
//! blob's bytes at finish is the price of replica independence; each byte is still hashed once.

use axum::body::Body;
use chrono::Utc;
use clreg_engine::finite_scan::FiniteScan;
use clreg_types::{Digest, ErrorCode};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, WriteMultipart};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::blobs::{blob_key, grant, record};
use crate::db::entities::{blob, upload, upload_chunk};
use crate::error::ApiError;
use crate::state::AppState;

/// Part size of multipart writes (S3 needs at least 5 MiB per part but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight per write before more bytes wait.
pub const PARTS_IN_FLIGHT: usize = 4;

/// The running checks of an upload as of its committed offset, stored with the session.
#[derive(Serialize, Deserialize)]
pub struct Checks {
    /// The sha256 state (RustCrypto's serialised form), hex.
    sha256: String,
    /// The NaN / infinity scan of safetensors weights, fed the same bytes.
    scan: FiniteScan,
}

impl Checks {
    fn new() -> Self {
        Self::pack(&Sha256::new(), FiniteScan::new())
    }

    fn pack(hasher: &Sha256, scan: FiniteScan) -> Self {
        Self {
            sha256: hex::encode(hasher.serialize()),
            scan,
        }
    }

    /// The hasher and the scan, as they were after the committed bytes.
    fn unpack(self) -> Option<(Sha256, FiniteScan)> {
        let bytes = hex::decode(&self.sha256).ok()?;
        let state = bytes.as_slice().try_into().ok()?;
        Some((Sha256::deserialize(state).ok()?, self.scan))
    }

    fn to_json(&self) -> String {
        // A derived Serialize of strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The folder of a session's chunk objects.
fn chunk_dir(id: Uuid) -> StorePath {
    StorePath::from(format!("uploads/{id}"))
}

fn chunk_key(id: Uuid, start: i64, attempt: Uuid) -> StorePath {
    StorePath::from(format!("uploads/{id}/{start:020}-{attempt}"))
}

/// When a session that last received data now expires: after `upload_idle_secs` of silence,
/// and never later than `upload_ttl_secs` after it opened.
fn expiry(state: &AppState, created_at: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2));
    (Utc::now() + secs(state.config.upload_idle_secs))
        .min(created_at + secs(state.config.upload_ttl_secs))
}

/// Opens an upload session, within the caps on open sessions per user and in all.
pub async fn open(state: &AppState, user_id: i64) -> Result<upload::Model, ApiError> {
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
    let now = Utc::now();
    let row = upload::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        offset: Set(0),
        parts: Set(0),
        created_at: Set(now),
        expires_at: Set(expiry(state, now)),
        instance: Set(None),
        state: Set(Some(Checks::new().to_json())),
    }
    .insert(&state.db)
    .await?;
    Ok(row)
}

/// The caller's live session row, or `upload_unknown`.
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

fn lost(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::UploadLost,
        format!(
            "upload {id} was opened by an older server version and cannot go on; start this blob again with a new upload"
        ),
    )
}

/// The hasher and scan stored with `row`.
fn checks_of(row: &upload::Model) -> Result<(Sha256, FiniteScan), ApiError> {
    row.state
        .as_deref()
        .and_then(|s| serde_json::from_str::<Checks>(s).ok())
        .and_then(Checks::unpack)
        .ok_or_else(|| lost(row.id))
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

fn out_of_order(id: Uuid, start: u64, held: i64) -> ApiError {
    ApiError::new(
        ErrorCode::UploadOutOfOrder,
        format!(
            "chunk starts at byte {start} but upload {id} has {held} bytes; send the chunk that starts at {held}"
        ),
    )
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
    let max_chunk = state.config.max_chunk_size;
    if i64::try_from(start).ok() != Some(row.offset) {
        drain(body, max_chunk).await;
        return Err(out_of_order(id, start, row.offset));
    }
    if content_length.is_some_and(|n| n > max_chunk) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "chunk is larger than the server's limit of {max_chunk} bytes; send smaller chunks"
            ),
        ));
    }
    let (hasher, scan) = checks_of(&row)?;
    // The rest runs as a task of its own: when the client goes away mid-body, the request is
    // dropped but the task sees the body end, and commits the bytes that did arrive.
    let state = state.clone();
    tokio::spawn(async move { receive(&state, row, start, hasher, scan, body).await })
        .await
        .map_err(ApiError::internal)?
}

/// Why a chunk stopped before its body ended.
enum Stop {
    /// Past a size limit: the upload is aborted.
    TooLarge(String),
    /// The store refused the bytes.
    Store(object_store::Error),
}

/// Streams one chunk into its object while the checks follow it, then commits it.
async fn receive(
    state: &AppState,
    row: upload::Model,
    start: u64,
    mut hasher: Sha256,
    mut scan: FiniteScan,
    body: Body,
) -> Result<u64, ApiError> {
    let id = row.id;
    let max_chunk = state.config.max_chunk_size;
    let attempt = Uuid::new_v4();
    let key = chunk_key(id, row.offset, attempt);
    let mut writer =
        WriteMultipart::new_with_chunk_size(state.store.put_multipart(&key).await?, PART_SIZE);
    let max_blob = state.config.max_blob_size;
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    let mut stop = None;
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
        if start + received + len > max_blob {
            stop = Some(Stop::TooLarge(format!(
                "blob is larger than the server's limit of {max_blob} bytes; the upload was aborted"
            )));
            break;
        }
        if received + len > max_chunk {
            stop = Some(Stop::TooLarge(format!(
                "chunk is larger than the server's limit of {max_chunk} bytes; the upload was aborted, send smaller chunks"
            )));
            break;
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            stop = Some(Stop::Store(e));
            break;
        }
        hasher.update(&bytes);
        scan.update(&bytes);
        // `put` keeps the received buffer as is: no copy, one write per frame.
        writer.put(bytes);
        received += len;
    }
    if let Some(stop) = stop {
        if let Err(e) = writer.abort().await {
            tracing::warn!(upload = %id, error = %e, "aborting a chunk's write failed");
        }
        return Err(match stop {
            // The session stands where it stood: the client may send the chunk again.
            Stop::Store(e) => e.into(),
            Stop::TooLarge(message) => {
                abort(state, id).await?;
                ApiError::new(ErrorCode::TooLarge, message)
            }
        });
    }
    if received == 0 {
        writer.abort().await.ok();
        return Ok(start);
    }
    writer.finish().await?;
    let len = i64::try_from(received).unwrap_or(i64::MAX);
    let offset = row.offset + len;
    let committed = commit_chunk(state, &row, attempt, len, &hasher, scan).await;
    match committed {
        Ok(true) => Ok(u64::try_from(offset).unwrap_or(0)),
        other => {
            // Another request committed these bytes first, or the commit failed: this copy
            // is not part of the upload.
            if let Err(e) = state.store.delete(&key).await {
                tracing::warn!(upload = %id, error = %e, "removing an unused chunk failed");
            }
            other?;
            let held = row_offset(state, id).await?;
            Err(ApiError::conflict(format!(
                "another request committed bytes of upload {id} first; it now has {held} bytes, send from there"
            )))
        }
    }
}

/// Records a chunk and the session's new offset and checks, if the session still stands where
/// the chunk started. Returns whether it did.
async fn commit_chunk(
    state: &AppState,
    row: &upload::Model,
    attempt: Uuid,
    len: i64,
    hasher: &Sha256,
    scan: FiniteScan,
) -> Result<bool, ApiError> {
    use sea_orm::sea_query::Expr;
    let state_json = Checks::pack(hasher, scan).to_json();
    let expires = expiry(state, row.created_at);
    let (id, from) = (row.id, row.offset);
    crate::db::write(&state.db, |txn| {
        let state_json = state_json.clone();
        Box::pin(async move {
            let moved = upload::Entity::update_many()
                .col_expr(upload::Column::Offset, Expr::value(from + len))
                .col_expr(upload::Column::State, Expr::value(state_json))
                // Activity keeps a session alive (up to its lifetime); silence ends it.
                .col_expr(upload::Column::ExpiresAt, Expr::value(expires))
                .filter(upload::Column::Id.eq(id))
                .filter(upload::Column::Offset.eq(from))
                .exec(txn)
                .await?;
            if moved.rows_affected != 1 {
                return Ok(false);
            }
            // One chunk per start: with the condition above, a second commit of the same
            // bytes cannot pass (the key makes it certain whatever the isolation level).
            upload_chunk::ActiveModel {
                upload_id: Set(id),
                start: Set(from),
                len: Set(len),
                attempt: Set(attempt),
            }
            .insert(txn)
            .await?;
            Ok(true)
        })
    })
    .await
}

async fn row_offset(state: &AppState, id: Uuid) -> Result<i64, ApiError> {
    Ok(upload::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .map_or(0, |r| r.offset))
}

/// The committed offset of upload `id`, for the `Upload-Offset` header of a refusal.
pub async fn offset(state: &AppState, id: Uuid) -> Option<u64> {
    row_offset(state, id)
        .await
        .ok()
        .and_then(|o| u64::try_from(o).ok())
}

/// Finishes an upload: the digest must match what arrived, then the blob becomes visible.
/// Safe to repeat, on any replica, after a failure or a crash half way.
pub async fn finish(
    state: &AppState,
    id: Uuid,
    user_id: i64,
    expected: &Digest,
) -> Result<(Digest, u64), ApiError> {
    let row = row(state, id, user_id).await?;
    let (hasher, scan) = checks_of(&row)?;
    let actual = Digest::from_bytes(hasher.finalize().into());
    let size = u64::try_from(row.offset).unwrap_or(0);
    if &actual != expected {
        abort(state, id).await?;
        return Err(ApiError::new(
            ErrorCode::DigestMismatch,
            format!(
                "the uploaded bytes hash to {actual}, not {expected}; the upload was discarded, upload the file again"
            ),
        ));
    }
    let scanned = scan.outcome();
    let chunks = upload_chunk::Entity::find()
        .filter(upload_chunk::Column::UploadId.eq(id))
        .order_by_asc(upload_chunk::Column::Start)
        .all(&state.db)
        .await?;
    // The rest runs as a task of its own, so a client that goes away mid-request cannot leave
    // it half done (and a crash half way is repeated by the client's next try).
    let state = state.clone();
    tokio::spawn(async move {
        if blob::Entity::find_by_id(actual.hex())
            .one(&state.db)
            .await?
            .is_none()
        {
            assemble(&state, id, &chunks, &blob_key(&actual)).await?;
        }
        record(&state.db, &actual, size, &scanned).await?;
        // Whether the bytes were new or already stored, this user has shown they hold them.
        grant(&state.db, user_id, &actual).await?;
        forget(&state, id).await?;
        Ok((actual, size))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Writes the chunks, in order, as the object `target`.
async fn assemble(
    state: &AppState,
    id: Uuid,
    chunks: &[upload_chunk::Model],
    target: &StorePath,
) -> Result<(), ApiError> {
    let keys: Vec<StorePath> = chunks
        .iter()
        .map(|c| chunk_key(id, c.start, c.attempt))
        .collect();
    match keys.as_slice() {
        [] => {
            state.store.put(target, Default::default()).await?;
            return Ok(());
        }
        [one] => return rename(state, one, target, chunks[0].len).await,
        _ => {}
    }
    if let Some(root) = state.local_store_dir() {
        // In the kernel: std::io::copy between files is copy_file_range on Linux. Written
        // beside the chunks, then renamed into place, so a crash leaves no partial blob.
        let joined = StorePath::from(format!("uploads/{id}/joined-{}", Uuid::new_v4()));
        let files: Vec<_> = keys.iter().map(|k| root.join(k.as_ref())).collect();
        let out = root.join(joined.as_ref());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::fs::File::create(out)?;
            for f in files {
                std::io::copy(&mut std::fs::File::open(f)?, &mut out)?;
            }
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        state.store.rename(&joined, target).await?;
        return Ok(());
    }
    stream_into(state, &keys, target).await
}

/// Writes the objects `from`, in order, as one object `target`, streamed through this process
/// into a multipart write (one part in flight per `PART_SIZE`: memory stays bounded). A failure
/// aborts the write, so nothing appears at `target`.
async fn stream_into(
    state: &AppState,
    from: &[StorePath],
    target: &StorePath,
) -> Result<(), ApiError> {
    let mut writer =
        WriteMultipart::new_with_chunk_size(state.store.put_multipart(target).await?, PART_SIZE);
    let copied: Result<(), ApiError> = async {
        for key in from {
            let mut stream = state.store.get(key).await?.into_stream();
            while let Some(bytes) = stream.try_next().await? {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(bytes);
            }
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
    Ok(())
}

/// Moves one object to `target`. A local store renames the file; S3 copies server-side (one
/// CopyObject) and deletes, but CopyObject stops at 5 GiB (`s3.max_copy_size`), so a larger
/// object is streamed back through this process into a multipart write at `target`.
async fn rename(
    state: &AppState,
    from: &StorePath,
    target: &StorePath,
    size: i64,
) -> Result<(), ApiError> {
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    if state.local_store_dir().is_some() || size <= state.config.s3.max_copy_size() {
        state.store.rename(from, target).await?;
        return Ok(());
    }
    stream_into(state, std::slice::from_ref(from), target).await?;
    state.store.delete(from).await?;
    Ok(())
}

/// Drops a session and everything it wrote.
pub async fn abort(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    forget(state, id).await
}

/// Deletes the session's rows, then its objects (a crash between the two leaves objects that
/// `admin gc` collects).
async fn forget(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    crate::db::write(&state.db, |txn| {
        Box::pin(async move {
            upload_chunk::Entity::delete_many()
                .filter(upload_chunk::Column::UploadId.eq(id))
                .exec(txn)
                .await?;
            upload::Entity::delete_by_id(id).exec(txn).await?;
            Ok(())
        })
    })
    .await?;
    remove_objects(state, id).await;
    Ok(())
}

/// Removes every object of session `id` (chunks, a half-joined blob, and on a local store the
/// part files of interrupted writes). Failures are logged: gc collects what is left.
pub async fn remove_objects(state: &AppState, id: Uuid) {
    if let Some(root) = state.local_store_dir() {
        let dir = root.join(chunk_dir(id).as_ref());
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
            tracing::warn!(upload = %id, error = %e, "removing an upload's chunks failed");
        }
        // Part files of the single staging object sessions used before they had folders.
        crate::blobs::remove_local_parts(&root.join("uploads"), |key| key == id.to_string());
        return;
    }
    let prefix = chunk_dir(id);
    let keys = state
        .store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .boxed();
    let mut deleted = state.store.delete_stream(keys);
    while let Some(result) = deleted.next().await {
        if let Err(e) = result {
            tracing::warn!(upload = %id, error = %e, "removing an upload's chunk failed");
        }
    }
}

/// Removes expired sessions (past their lifetime, or idle too long), with their chunks; run
/// periodically.
pub async fn sweep_expired(state: &AppState) -> Result<usize, ApiError> {
    let expired = upload::Entity::find()
        .filter(upload::Column::ExpiresAt.lt(Utc::now()))
        .all(&state.db)
        .await?;
    for row in &expired {
        forget(state, row.id).await?;
    }
    Ok(expired.len())
}

/// Sessions that left objects in the store but have no row (finished, aborted or expired while
/// a write of theirs was still landing, or a crash between a session's rows and its objects),
/// untouched for `age`. [`remove_objects`] removes them; `admin gc` does both.
pub async fn orphaned(
    state: &AppState,
    live: &std::collections::HashSet<Uuid>,
    age: chrono::Duration,
) -> Result<Vec<Uuid>, ApiError> {
    let cutoff = Utc::now() - age;
    let mut newest: std::collections::HashMap<Uuid, chrono::DateTime<Utc>> = Default::default();
    let mut note = |id: Uuid, at: chrono::DateTime<Utc>| {
        let t = newest.entry(id).or_insert(at);
        *t = (*t).max(at);
    };
    if let Some(root) = state.local_store_dir() {
        // Listed by hand: a local store's listing hides the part files of interrupted writes
        // (`<key>#<n>`), which are what a crash leaves. A session's folder, or (before sessions
        // had folders) its part files `uploads/<id>#<n>`.
        if let Ok(entries) = std::fs::read_dir(root.join("uploads")) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let id = name.split_once('#').map_or(name, |(id, _)| id);
                let modified = entry.metadata().and_then(|m| m.modified());
                if let (Ok(id), Ok(modified)) = (Uuid::parse_str(id), modified) {
                    note(id, modified.into());
                }
            }
        }
    } else {
        let mut listing = state.store.list(Some(&StorePath::from("uploads")));
        while let Some(meta) = listing.try_next().await? {
            let id = meta.location.parts().nth(1);
            if let Some(id) = id.and_then(|p| Uuid::parse_str(p.as_ref()).ok()) {
                note(id, meta.last_modified);
            }
        }
    }
    Ok(newest
        .into_iter()
        .filter(|(id, at)| !live.contains(id) && *at <= cutoff)
        .map(|(id, _)| id)
        .collect())
}
