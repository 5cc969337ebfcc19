//! Moving bytes between the object store and a worker's disk.
//!
//! Inputs: blobs are cached by digest under `<data_dir>/cache/blobs/<hex>` (hard links from a
//! local store, else a streamed download), and an artifact is laid out once under
//! `<data_dir>/cache/artifacts/<id>/` as hard links to them; the registry's digests go to the
//! engine, so nothing is hashed again. Outputs: each file is hashed on a blocking thread,
//! streamed to its blob key unless the blob exists, and granted to the job's submitter.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::Utc;
use clreg_types::{Digest, FileEntry};
use futures::StreamExt;
use object_store::{ObjectStore, WriteMultipart};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use sha2::{Digest as _, Sha256};

use crate::blobs::blob_key;
use crate::db::entities::{artifact_file, blob};
use crate::error::ApiError;
use crate::state::AppState;

/// Where this process keeps staged inputs.
pub fn cache_root(state: &AppState) -> PathBuf {
    state.config.data_dir.join("cache")
}

/// Scratch space of one job (outputs), removed when the job ends.
pub fn job_dir(state: &AppState, id: uuid::Uuid) -> PathBuf {
    state.config.data_dir.join("jobs").join(id.to_string())
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("{what} {}: {e}", path.display()))
}

/// The local directory of the store, when the store is one.
fn local_store_dir(state: &AppState) -> Option<PathBuf> {
    match state.config.store.as_deref() {
        None => Some(state.config.data_dir.join("store")),
        Some(s) if s.starts_with("s3://") => None,
        Some(s) => Some(PathBuf::from(s.trim_start_matches("file://"))),
    }
}

/// Makes the blob available as a local file and returns its path.
async fn cached_blob(state: &AppState, digest: &Digest) -> Result<PathBuf, ApiError> {
    let dir = cache_root(state).join("blobs");
    let path = dir.join(digest.hex());
    if path.is_file() {
        return Ok(path);
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io("creating", &dir, e))?;
    let partial = dir.join(format!("{}.partial-{}", digest.hex(), uuid::Uuid::new_v4()));
    let linked = match local_store_dir(state) {
        Some(store) => std::fs::hard_link(store.join(digest.object_key()), &partial).is_ok(),
        None => false,
    };
    if !linked {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| io("creating", &partial, e))?;
        let mut stream = state.store.get(&blob_key(digest)).await?.into_stream();
        while let Some(piece) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut file, &piece?)
                .await
                .map_err(|e| io("writing", &partial, e))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| io("writing", &partial, e))?;
    }
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| io("renaming", &partial, e))?;
    Ok(path)
}

/// Lays out artifact `id` under the cache (once) and returns its directory and the digest of
/// every file in it.
pub async fn stage_artifact(
    state: &AppState,
    id: &str,
) -> Result<(PathBuf, HashMap<PathBuf, String>), ApiError> {
    let files = artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.eq(id))
        .all(&state.db)
        .await?;
    let dir = cache_root(state).join("artifacts").join(id);
    let mut digests = HashMap::new();
    for f in &files {
        digests.insert(dir.join(&f.path), f.digest.clone());
    }
    if dir.join(".complete").is_file() {
        return Ok((dir, digests));
    }
    let partial = dir.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
    for f in &files {
        let digest = Digest::parse_lenient(&f.digest).map_err(ApiError::internal)?;
        let source = cached_blob(state, &digest).await?;
        let target = partial.join(&f.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| io("copying to", &target, e))?;
        }
    }
    std::fs::write(partial.join(".complete"), b"").map_err(|e| io("writing", &partial, e))?;
    match std::fs::rename(&partial, &dir) {
        Ok(()) => {}
        // Another job staged it meanwhile: theirs is as good.
        Err(_) if dir.join(".complete").is_file() => {
            let _ = std::fs::remove_dir_all(&partial);
        }
        Err(e) => return Err(io("renaming", &partial, e)),
    }
    // The marker is ours, not the artifact's.
    digests.retain(|p, _| !p.ends_with(".complete"));
    Ok((dir, digests))
}

/// Hashes a file on a blocking thread.
async fn hash_file(path: PathBuf) -> Result<(Digest, u64), ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| io("reading", &path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((Digest::from_bytes(hasher.finalize().into()), size))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Stores every file under `dir` as a blob the user holds (moving it into a local store,
/// streaming it to S3); returns the manifest's file map. `dir` is consumed.
pub async fn upload_dir(
    state: &AppState,
    dir: &Path,
    user_id: i64,
) -> Result<BTreeMap<String, FileEntry>, ApiError> {
    let mut files = BTreeMap::new();
    for path in walk(dir)? {
        let rel = path
            .strip_prefix(dir)
            .map_err(ApiError::internal)?
            .to_string_lossy()
            .replace('\\', "/");
        let (digest, size) = hash_file(path.clone()).await?;
        if blob::Entity::find_by_id(digest.hex())
            .one(&state.db)
            .await?
            .is_none()
        {
            match local_store_dir(state) {
                // The output is the job's own: moved into the store, not copied.
                Some(store) => {
                    let target = store.join(digest.object_key());
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
                    }
                    if std::fs::rename(&path, &target).is_err() {
                        put_file(state.store.as_ref(), &path, &digest).await?;
                    }
                }
                None => put_file(state.store.as_ref(), &path, &digest).await?,
            }
            let inserted = blob::ActiveModel {
                digest: Set(digest.hex()),
                size: Set(i64::try_from(size).unwrap_or(i64::MAX)),
                created_at: Set(Utc::now()),
            }
            .insert(&state.db)
            .await;
            if let Err(e) = inserted
                && !crate::ledger::is_unique_violation(&e)
            {
                return Err(e.into());
            }
        }
        crate::blobs::grant(&state.db, user_id, &digest).await?;
        files.insert(rel, FileEntry { digest, size });
    }
    Ok(files)
}

/// Streams a file to its blob key (written under the final key: the digest is known).
async fn put_file(store: &dyn ObjectStore, path: &Path, digest: &Digest) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io("opening", path, e))?;
    let upload = store.put_multipart(&blob_key(digest)).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    loop {
        let mut buf = vec![0u8; 8 << 20];
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
            .await
            .map_err(|e| io("reading", path, e))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        writer.wait_for_capacity(4).await?;
        writer.put(bytes::Bytes::from(buf));
    }
    writer.finish().await?;
    Ok(())
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, ApiError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io("listing", &d, e))? {
            let entry = entry.map_err(|e| io("listing", &d, e))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
