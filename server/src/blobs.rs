//! Blobs: content-addressed objects (`blobs/sha256/<aa>/<digest>`), who may name and read them,
//! their records, and ranged reads. Upload sessions that create them are in `uploads`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clreg_engine::finite_scan::Outcome;
use clreg_types::{Digest, ErrorCode};
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set};

use crate::db::entities::{blob, blob_grant};
use crate::error::ApiError;
use crate::state::AppState;

pub fn blob_key(digest: &Digest) -> StorePath {
    StorePath::from(digest.object_key())
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
