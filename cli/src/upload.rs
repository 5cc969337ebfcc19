//! Blob uploads: skip what the server has, otherwise hash while uploading (one read pass on a
//! blocking thread, chunks handed to the network through a channel), resume interrupted sessions.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clreg_types::{BlobInfo, Digest, ErrorCode, UPLOAD_OFFSET_HEADER, UploadStatus};
use reqwest::{Method, StatusCode, header};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::cache::{Cache, FileStamp};
use crate::client::{Client, api_error, json_body};
use crate::error::{ApiError, LocalError};
use crate::hashing;
use crate::progress::Tracker;

/// Bytes read, hashed and sent as one unit.
pub const CHUNK: usize = 16 << 20;
/// The smallest `PATCH` body tried when the server says a chunk is too large.
const MIN_PATCH: usize = 4 << 10;
/// Retries of one chunk after a network error or a busy session.
const RETRIES: u32 = 4;

/// What pushing one file did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
    /// Bytes sent over the network by this run.
    pub sent: u64,
}

/// Uploads files as blobs for one command; shared by its parallel tasks.
pub struct Uploader {
    client: Arc<Client>,
    cache: Arc<Cache>,
    /// The largest `PATCH` body the server took; halves on each `413`.
    patch_size: AtomicUsize,
}

enum Piece {
    Chunk(Bytes),
    Done(Digest, u64),
}

impl Uploader {
    pub fn new(client: Arc<Client>, cache: Arc<Cache>) -> Self {
        Uploader {
            client,
            cache,
            patch_size: AtomicUsize::new(CHUNK),
        }
    }

    /// The blob's size if the server has it.
    pub async fn head(&self, digest: &Digest) -> Result<Option<u64>> {
        let req = self
            .client
            .request(Method::HEAD, &format!("/blobs/{digest}"));
        let resp = self.client.send_raw(req).await?;
        match resp.status() {
            // The header, not `content_length()`: a HEAD answer has an empty body.
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(api_error(resp).await.into()),
        }
    }

    /// Makes the content of `path` a blob on the server, sending as little as possible.
    pub async fn push_file(&self, path: &Path, bar: &Tracker) -> Result<Pushed> {
        let stamp = FileStamp::of(path)?;
        if let Some(digest) = self.cache.digest(&stamp)
            && self.head(&digest).await? == Some(stamp.size)
        {
            bar.inc(stamp.size);
            return Ok(Pushed {
                digest,
                size: stamp.size,
                sent: 0,
            });
        }
        match self.upload(path, &stamp, bar, true).await {
            // The resumed prefix no longer matches what the server holds, or the session cannot
            // go on (expired, lost in a server restart, finished by another process): once more,
            // from what the server has now.
            Err(e) if is_code(&e, ErrorCode::DigestMismatch) || session_gone(&e) => {
                bar.set(0);
                if let Some(digest) = self.cache.digest(&stamp)
                    && self.head(&digest).await? == Some(stamp.size)
                {
                    bar.set(stamp.size);
                    return Ok(Pushed {
                        digest,
                        size: stamp.size,
                        sent: 0,
                    });
                }
                self.upload(path, &stamp, bar, false).await
            }
            other => other,
        }
    }

    async fn upload(
        &self,
        path: &Path,
        stamp: &FileStamp,
        bar: &Tracker,
        resume: bool,
    ) -> Result<Pushed> {
        let server = self.client.server().to_string();
        let (id, offset) = match resume.then(|| self.cache.upload(&server, stamp)).flatten() {
            Some(id) => match self.status(id).await {
                Ok(status) if status.offset <= stamp.size => (id, status.offset),
                Ok(_) => {
                    self.abort(id).await;
                    self.open(stamp).await?
                }
                Err(e) if session_gone(&e) => self.open(stamp).await?,
                Err(e) => return Err(e),
            },
            None => self.open(stamp).await?,
        };
        let mut result = self.send_file(path, stamp, id, offset, bar).await;
        // The server holds fewer bytes than this run had sent (the session was replaced under
        // it): go on from the server's offset, re-reading the file up to there. Bounded.
        for _ in 0..RETRIES {
            let Some(held) = result.as_ref().err().and_then(resync_offset) else {
                break;
            };
            result = self.send_file(path, stamp, id, held, bar).await;
        }
        if let Err(e) = &result
            && (session_gone(e) || is_code(e, ErrorCode::DigestMismatch))
        {
            self.cache.forget_upload(&server, stamp)?;
        }
        let pushed = result?;
        self.cache.forget_upload(&server, stamp)?;
        self.cache.put_digest(stamp, &pushed.digest)?;
        Ok(pushed)
    }

    async fn open(&self, stamp: &FileStamp) -> Result<(Uuid, u64)> {
        let resp = self
            .client
            .send(self.client.request(Method::POST, "/blobs/uploads"))
            .await?;
        let status: UploadStatus = json_body(resp).await?;
        if stamp.size > status.max_size {
            self.abort(status.id).await;
            return Err(LocalError::refused(
                "too_large",
                format!(
                    "{} is {} bytes; the server accepts blobs up to {} bytes",
                    stamp.path.display(),
                    stamp.size,
                    status.max_size
                ),
            )
            .into());
        }
        // Saved before any byte is sent, so an interrupted push resumes this session.
        self.cache
            .put_upload(self.client.server(), stamp, status.id)?;
        Ok((status.id, 0))
    }

    async fn status(&self, id: Uuid) -> Result<UploadStatus> {
        self.client.get(&format!("/blobs/uploads/{id}")).await
    }

    async fn abort(&self, id: Uuid) {
        // Best effort: an abandoned session expires on its own.
        let _ = self.client.delete(&format!("/blobs/uploads/{id}")).await;
    }

    /// Streams the file from `offset` (re-hashing the first `offset` bytes) and finishes.
    async fn send_file(
        &self,
        path: &Path,
        stamp: &FileStamp,
        id: Uuid,
        mut offset: u64,
        bar: &Tracker,
    ) -> Result<Pushed> {
        bar.set(offset);
        let start = offset;
        // One slot: at most one chunk waits while one is on the wire.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Piece>>(1);
        let reader = {
            let path = path.to_path_buf();
            let size = stamp.size;
            std::thread::Builder::new()
                .name("clreg-read".into())
                .spawn(move || read_chunks(path, offset, size, tx))
                .context("starting a reader thread")?
        };
        let result: Result<Pushed> = async {
            // Where the next chunk from the reader starts; `offset` is where the server stands,
            // which another process pushing the same file may move ahead of it.
            let mut read = offset;
            loop {
                let piece = rx.recv().await.context("the reader thread stopped")??;
                match piece {
                    Piece::Chunk(chunk) => {
                        let chunk_start = read;
                        read += chunk.len() as u64;
                        if offset < read {
                            self.send_chunk(id, &mut offset, chunk_start, chunk, bar)
                                .await?;
                        }
                    }
                    Piece::Done(digest, size) => {
                        if offset != size {
                            return Err(LocalError::protocol(format!(
                                "upload {id} holds {offset} bytes, the file {size}"
                            ))
                            .into());
                        }
                        let info = match self.finish(id, &digest).await {
                            Ok(info) => info,
                            // Finished by another process pushing the same file?
                            Err(e)
                                if session_gone(&e) && self.head(&digest).await? == Some(size) =>
                            {
                                BlobInfo {
                                    digest: digest.clone(),
                                    size,
                                }
                            }
                            Err(e) => return Err(e),
                        };
                        if info.digest != digest || info.size != size {
                            return Err(LocalError::protocol(format!(
                                "the server stored {} ({} bytes) for {digest} ({size} bytes)",
                                info.digest, info.size
                            ))
                            .into());
                        }
                        return Ok(Pushed {
                            digest,
                            size,
                            sent: offset - start,
                        });
                    }
                }
            }
        }
        .await;
        drop(rx);
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        result.with_context(|| format!("uploading {}", path.display()))
    }

    /// Finishes the upload; waits out a chunk still being received (another process's), and
    /// tries again after a network error (finishing is safe to repeat, on any replica).
    async fn finish(&self, id: Uuid, digest: &Digest) -> Result<BlobInfo> {
        let mut tries = 0;
        loop {
            let req = self
                .client
                .request(Method::PUT, &format!("/blobs/uploads/{id}"))
                .query(&[("digest", digest.to_string())]);
            match self.client.send(req).await {
                Err(e)
                    if (is_code(&e, ErrorCode::Conflict) || transient(&e)) && tries < RETRIES =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250 << tries)).await;
                }
                other => return json_body(other?).await,
            }
        }
    }

    /// Sends what the server lacks of one chunk (file bytes `chunk_start..` of `chunk`; the
    /// server holds `*offset` bytes, somewhere in the chunk), in `PATCH`es the server accepts.
    /// After any refusal or network error it asks the server where the upload stands and goes
    /// on from there: the server keeps whatever part of a chunk arrived, and another process
    /// may be pushing the same file.
    async fn send_chunk(
        &self,
        id: Uuid,
        offset: &mut u64,
        chunk_start: u64,
        chunk: Bytes,
        bar: &Tracker,
    ) -> Result<()> {
        let chunk_end = chunk_start + chunk.len() as u64;
        let mut tries = 0;
        while *offset < chunk_end {
            let pos = usize::try_from(*offset - chunk_start).unwrap_or(usize::MAX);
            let n = self
                .patch_size
                .load(Ordering::Relaxed)
                .min(chunk.len() - pos);
            let req = self
                .client
                .request(Method::PATCH, &format!("/blobs/uploads/{id}"))
                .header(UPLOAD_OFFSET_HEADER, offset.to_string())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(chunk.slice(pos..pos + n));
            let failure: anyhow::Error = match self.client.send_raw(req).await {
                Ok(resp) if resp.status().is_success() => {
                    let status: UploadStatus = json_body(resp).await?;
                    if status.offset <= *offset {
                        return Err(LocalError::protocol(format!(
                            "upload {id}: sent bytes {}..{} but the server holds {}",
                            *offset,
                            *offset + n as u64,
                            status.offset
                        ))
                        .into());
                    }
                    // Past the chunk when another process sent the next bytes meanwhile.
                    bar.inc(status.offset - *offset);
                    *offset = status.offset;
                    tries = 0;
                    continue;
                }
                Ok(resp) => {
                    let err = api_error(resp).await;
                    if err.is(ErrorCode::TooLarge) && n > MIN_PATCH {
                        self.patch_size
                            .fetch_min((n / 2).max(MIN_PATCH), Ordering::Relaxed);
                        continue;
                    }
                    let retry = err.is(ErrorCode::UploadOutOfOrder)
                        || err.is(ErrorCode::Conflict)
                        || gateway_failed(&err);
                    if !retry {
                        return Err(err.into());
                    }
                    err.into()
                }
                Err(e) if e.chain().any(|c| c.is::<reqwest::Error>()) => e,
                Err(e) => return Err(e),
            };
            tries += 1;
            if tries > RETRIES {
                return Err(failure.context(format!(
                    "upload {id} made no progress at byte {} after {RETRIES} retries; run the command again to resume",
                    *offset
                )));
            }
            tokio::time::sleep(Duration::from_millis(250 << tries)).await;
            let held = self.status(id).await?.offset;
            if held < chunk_start {
                // Behind bytes this run counted as sent: only a fresh pass can fill the gap.
                return Err(Resync(held).into());
            }
            bar.set(held);
            *offset = held;
        }
        Ok(())
    }
}

/// The server holds fewer bytes than this run assumed; go on from `.0`.
#[derive(Debug)]
struct Resync(u64);

impl std::fmt::Display for Resync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upload holds {} bytes, fewer than were sent", self.0)
    }
}

impl std::error::Error for Resync {}

fn resync_offset(e: &anyhow::Error) -> Option<u64> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Resync>().map(|r| r.0))
}

/// A proxy in front of several replicas answers 502-504 when the one it chose died or is
/// stopping: another try reaches another replica.
fn gateway_failed(e: &ApiError) -> bool {
    matches!(e.status, 502..=504)
}

/// A failure another try may not meet: the network, or a proxy whose replica went away.
fn transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<reqwest::Error>() || c.downcast_ref::<ApiError>().is_some_and(gateway_failed)
    })
}

fn is_code(e: &anyhow::Error, code: ErrorCode) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<ApiError>().is_some_and(|a| a.is(code)))
}

/// The saved session cannot continue: start a new one from byte 0.
fn session_gone(e: &anyhow::Error) -> bool {
    is_code(e, ErrorCode::UploadUnknown) || is_code(e, ErrorCode::UploadLost)
}

/// The reader thread: hashes the first `offset` bytes, then reads, hashes and hands over chunks.
fn read_chunks(
    path: PathBuf,
    offset: u64,
    size: u64,
    tx: tokio::sync::mpsc::Sender<Result<Piece>>,
) {
    let result = (|| -> Result<()> {
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        hashing::hash_prefix(&mut file, offset, &mut hasher)
            .with_context(|| format!("re-reading the uploaded part of {}", path.display()))?;
        let mut total = offset;
        loop {
            // Wait for a free slot before reading, so at most two chunks are in memory.
            let Ok(permit) = futures::executor::block_on(tx.reserve()) else {
                return Ok(());
            };
            let mut buf = Vec::with_capacity(CHUNK);
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if buf.is_empty() {
                if total != size {
                    return Err(changed(&path));
                }
                permit.send(Ok(Piece::Done(hashing::finish(hasher), total)));
                return Ok(());
            }
            hasher.update(&buf);
            total += buf.len() as u64;
            if total > size {
                return Err(changed(&path));
            }
            permit.send(Ok(Piece::Chunk(Bytes::from(buf))));
        }
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e));
    }
}

fn changed(path: &Path) -> anyhow::Error {
    LocalError::verify(
        "file_changed",
        format!(
            "{} changed while it was being pushed; push again",
            path.display()
        ),
    )
    .into()
}
