//! Blob storage: resumable upload sessions (hashing as bytes arrive), and ranged reads.
//!
//! An upload streams its chunks, in order, straight into one multipart write at the staging key
//! `uploads/<id>` while a running sha256 follows them; finishing checks the digest and renames
//! the staging object to `blobs/sha256/<aa>/<digest>`. So each byte is read once, hashed once
//! and written once. The multipart writer and hasher live in this process: if the server
//! restarts mid-upload the session answers `upload_lost` and the client starts that blob again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clreg_types::{Digest, ErrorCode};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, WriteMultipart,
};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::db::entities::{blob, upload};
use crate::error::ApiError;
use crate::state::AppState;

/// Part size of the multipart writes (S3 needs at least 5 MiB per part but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight per upload before a chunk waits.
const PARTS_IN_FLIGHT: usize = 4;

pub type UploadSessions = Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Session>>>>>;

pub struct Session {
    pub user_id: i64,
    pub offset: u64,
    hasher: Sha256,
    writer: Option<WriteMultipart>,
}

pub fn staging_key(id: Uuid) -> StorePath {
    StorePath::from(format!("uploads/{id}"))
}

pub fn blob_key(digest: &Digest) -> StorePath {
    StorePath::from(digest.object_key())
}

pub async fn open(state: &AppState, user_id: i64) -> Result<upload::Model, ApiError> {
    let id = Uuid::new_v4();
    let multipart = state.store.put_multipart(&staging_key(id)).await?;
    let now = Utc::now();
    let ttl =
        chrono::Duration::seconds(i64::try_from(state.config.upload_ttl_secs).unwrap_or(86400));
    let row = upload::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        offset: Set(0),
        parts: Set(0),
        created_at: Set(now),
        expires_at: Set(now + ttl),
    }
    .insert(&state.db)
    .await?;
    let session = Session {
        user_id,
        offset: 0,
        hasher: Sha256::new(),
        writer: Some(WriteMultipart::new_with_chunk_size(multipart, PART_SIZE)),
    };
    lock_sessions(state).insert(id, Arc::new(tokio::sync::Mutex::new(session)));
    Ok(row)
}

fn lock_sessions(
    state: &AppState,
) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<tokio::sync::Mutex<Session>>>> {
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

fn session(state: &AppState, id: Uuid) -> Result<Arc<tokio::sync::Mutex<Session>>, ApiError> {
    lock_sessions(state).get(&id).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::UploadLost,
            format!("upload {id} was interrupted by a server restart; start this blob again with a new upload"),
        )
    })
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
    let mut s = session.try_lock().map_err(|_| {
        ApiError::conflict(format!(
            "another chunk of upload {id} is still being received; send chunks one at a time"
        ))
    })?;
    if s.user_id != user_id {
        return Err(ApiError::new(
            ErrorCode::UploadUnknown,
            format!("upload {id} does not exist"),
        ));
    }
    if start != s.offset {
        return Err(ApiError::new(
            ErrorCode::UploadOutOfOrder,
            format!(
                "chunk starts at byte {start} but upload {id} has {} bytes; send the chunk that starts at {}",
                s.offset, s.offset
            ),
        ));
    }
    let max_chunk = state.config.max_chunk_size;
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
        if s.offset + len > max_blob || received + len > max_chunk {
            failure = Some(if s.offset + len > max_blob {
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
        let Session {
            writer,
            hasher,
            offset,
            ..
        } = &mut *s;
        let Some(writer) = writer.as_mut() else {
            return Err(ApiError::internal("upload session without writer"));
        };
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        hasher.update(&bytes);
        // `put` keeps the received buffer as is: no copy, one write per frame.
        writer.put(bytes);
        *offset += len;
        received += len;
    }
    if let Some(message) = failure {
        drop(s);
        abort(state, id).await?;
        return Err(ApiError::new(ErrorCode::TooLarge, message));
    }
    let offset = s.offset;
    let mut active = row.into_active_model();
    active.offset = Set(i64::try_from(offset).unwrap_or(i64::MAX));
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
    let mut s = session.try_lock().map_err(|_| {
        ApiError::conflict(format!("a chunk of upload {id} is still being received"))
    })?;
    let actual = Digest::from_bytes(s.hasher.clone().finalize().into());
    let size = s.offset;
    if &actual != expected {
        drop(s);
        abort(state, id).await?;
        return Err(ApiError::new(
            ErrorCode::DigestMismatch,
            format!(
                "the uploaded bytes hash to {actual}, not {expected}; the upload was discarded, upload the file again"
            ),
        ));
    }
    let writer = s
        .writer
        .take()
        .ok_or_else(|| ApiError::internal("upload session without writer"))?;
    writer.finish().await?;
    drop(s);
    lock_sessions(state).remove(&id);
    let staging = staging_key(id);
    if blob::Entity::find_by_id(actual.hex())
        .one(&state.db)
        .await?
        .is_some()
    {
        state.store.delete(&staging).await?;
    } else {
        state.store.rename(&staging, &blob_key(&actual)).await?;
        let inserted = blob::ActiveModel {
            digest: Set(actual.hex()),
            size: Set(i64::try_from(size).unwrap_or(i64::MAX)),
            created_at: Set(Utc::now()),
        }
        .insert(&state.db)
        .await;
        if let Err(e) = inserted {
            // Two uploads of the same content may race; both wrote the same bytes.
            if !crate::ledger::is_unique_violation(&e) {
                return Err(e.into());
            }
        }
    }
    upload::Entity::delete_by_id(id).exec(&state.db).await?;
    Ok((actual, size))
}

/// Drops a session and everything it wrote.
pub async fn abort(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let session = lock_sessions(state).remove(&id);
    if let Some(session) = session {
        let mut s = session.lock().await;
        if let Some(writer) = s.writer.take()
            && let Err(e) = writer.abort().await
        {
            tracing::warn!(upload = %id, error = %e, "aborting multipart upload failed");
        }
    }
    upload::Entity::delete_by_id(id).exec(&state.db).await?;
    Ok(())
}

/// Removes expired sessions; run periodically.
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
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    Ok(Some(match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, true) => GetRange::Offset(num(a)?),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(bad());
            }
            GetRange::Bounded(start..end + 1)
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

/// Reads a whole blob into memory (small files only: configs, datasets up to a cap).
pub async fn read_all(store: &dyn ObjectStore, digest: &Digest) -> Result<bytes::Bytes, ApiError> {
    Ok(store.get(&blob_key(digest)).await?.bytes().await?)
}
