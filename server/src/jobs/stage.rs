//! Moving bytes between the object store and a worker's disk.
//!
//! Inputs: blobs are cached by digest under `<data_dir>/cache/blobs/<hex>` (hard links from a
//! local store, else a streamed download), and an artifact is laid out once under
//! `<data_dir>/cache/artifacts/<id>/` as hard links to them; the registry's digests go to the
//! engine, so nothing is hashed again. A job holds a shared lock on each input's `.complete`
//! marker while it runs; the cache keeps at most `job_cache_bytes` beyond that, evicting the
//! least recently used artifacts (the marker's mtime is its last use) and the blobs no
//! artifact links any more. Outputs: each file is hashed on a blocking thread, streamed to its
//! blob key unless the blob exists, and granted to the job's submitter.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use clreg_engine::finite_scan::{FiniteScan, Outcome};
use clreg_types::{Digest, FileEntry};
use futures::StreamExt;
use object_store::{ObjectStore, WriteMultipart};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
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
    let linked = match state.local_store_dir() {
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

/// Staging and eviction in this process: staging reads, eviction writes (so it never removes a
/// blob between its lookup and its link into an artifact).
static CACHE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// An input in use: a shared lock on its marker, released when dropped.
#[derive(Debug)]
pub struct InUse(#[allow(dead_code)] std::fs::File);

/// Lays out artifact `id` under the cache (once), marks it used now and in use until the
/// returned guard drops, and returns its directory and the digest of every file in it; then
/// keeps the cache under its cap.
pub async fn stage_artifact(
    state: &AppState,
    id: &str,
) -> Result<(PathBuf, HashMap<PathBuf, String>, InUse), ApiError> {
    let staged = {
        let _staging = CACHE.read().await;
        lay_out(state, id).await?
    };
    if let Err(e) = evict(state, state.config.job_cache_bytes).await {
        tracing::warn!(error = %e.message, "evicting from the input cache failed");
    }
    Ok(staged)
}

async fn lay_out(
    state: &AppState,
    id: &str,
) -> Result<(PathBuf, HashMap<PathBuf, String>, InUse), ApiError> {
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
        let held = hold(&dir)?;
        return Ok((dir, digests, held));
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
    let held = hold(&dir)?;
    Ok((dir, digests, held))
}

/// Marks a staged artifact used now and holds it (shared) against eviction.
fn hold(dir: &Path) -> Result<InUse, ApiError> {
    let marker = dir.join(".complete");
    let file = std::fs::File::options()
        .write(true)
        .open(&marker)
        .map_err(|e| io("opening", &marker, e))?;
    file.lock_shared().map_err(|e| io("locking", &marker, e))?;
    file.set_modified(std::time::SystemTime::now())
        .map_err(|e| io("touching", &marker, e))?;
    Ok(InUse(file))
}

/// Bytes the cache's blobs take beyond the store (a blob hard-linked from a local store takes
/// none), and each blob file with whether an artifact still links it.
fn cache_usage(state: &AppState) -> Result<(u64, Vec<(PathBuf, bool)>), ApiError> {
    use std::os::unix::fs::MetadataExt;
    let dir = cache_root(state).join("blobs");
    let store = state.local_store_dir();
    let mut bytes = 0;
    let mut blobs = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, blobs)),
        Err(e) => return Err(io("listing", &dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io("listing", &dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(digest) = Digest::parse_lenient(&name) else {
            continue; // a download in progress
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let in_store = store
            .as_ref()
            .and_then(|s| std::fs::metadata(s.join(digest.object_key())).ok())
            .is_some_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
        if !in_store {
            bytes += meta.len();
        }
        let links = meta.nlink() - u64::from(in_store);
        blobs.push((path, links > 1));
    }
    Ok((bytes, blobs))
}

/// Keeps the cache at most `cap` bytes: removes the least recently used artifacts no job holds,
/// then the blobs no artifact links. Returns the bytes it now takes.
pub async fn evict(state: &AppState, cap: u64) -> Result<u64, ApiError> {
    let _evicting = CACHE.write().await;
    let (mut bytes, _) = cache_usage(state)?;
    if bytes <= cap {
        return Ok(bytes);
    }
    let dir = cache_root(state).join("artifacts");
    let mut staged: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))? {
        let path = entry.map_err(|e| io("listing", &dir, e))?.path();
        if let Ok(used) = std::fs::metadata(path.join(".complete")).and_then(|m| m.modified()) {
            staged.push((used, path));
        }
    }
    staged.sort();
    for (_, path) in staged {
        let marker = path.join(".complete");
        let Ok(file) = std::fs::File::open(&marker) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a running job holds it
        }
        std::fs::remove_dir_all(&path).map_err(|e| io("removing", &path, e))?;
        drop(file);
        let (_, blobs) = cache_usage(state)?;
        for (blob, linked) in blobs {
            if !linked {
                std::fs::remove_file(&blob).map_err(|e| io("removing", &blob, e))?;
            }
        }
        bytes = cache_usage(state)?.0;
        tracing::info!(artifact = %path.display(), cache_bytes = bytes, "evicted from the input cache");
        if bytes <= cap {
            break;
        }
    }
    Ok(bytes)
}

/// Hashes a file on a blocking thread, scanning it for NaN / infinite weights on the way.
async fn hash_file(path: PathBuf) -> Result<(Digest, u64, Outcome), ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
        let mut hasher = Sha256::new();
        let mut scan = FiniteScan::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| io("reading", &path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            scan.update(&buf[..n]);
            size += n as u64;
        }
        Ok((
            Digest::from_bytes(hasher.finalize().into()),
            size,
            scan.outcome(),
        ))
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
        let (digest, size, scanned) = hash_file(path.clone()).await?;
        if blob::Entity::find_by_id(digest.hex())
            .one(&state.db)
            .await?
            .is_none()
        {
            match state.local_store_dir() {
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
        }
        crate::blobs::record(&state.db, &digest, size, &scanned).await?;
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
