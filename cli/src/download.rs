//! Downloads into `path.partial` (resumed with `Range`), hashing on a blocking thread while
//! writing, and renames only once size and digest match.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clreg_types::Digest;
use futures::StreamExt as _;
use reqwest::{Method, StatusCode, header};
use sha2::{Digest as _, Sha256};

use crate::cache::{Cache, FileStamp};
use crate::client::{Client, api_error};
use crate::error::LocalError;
use crate::hashing;
use crate::progress::Tracker;

/// What fetching one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The destination already held the right content.
    Present,
    /// Bytes received over the network (after any resumed part).
    Downloaded(u64),
}

/// `dest` plus `.partial`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

/// Whether `dest` already holds `digest` (asks the digest cache before hashing).
pub async fn already_there(dest: &Path, digest: &Digest, size: u64, cache: &Cache) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() != size {
        return Ok(false);
    }
    let stamp = FileStamp::of(dest)?;
    if cache.digest(&stamp).as_ref() == Some(digest) {
        return Ok(true);
    }
    let path = dest.to_path_buf();
    let (found, _) = tokio::task::spawn_blocking(move || hashing::hash_file(&path))
        .await?
        .with_context(|| format!("reading {}", dest.display()))?;
    if &found == digest {
        cache.put_digest(&stamp, digest)?;
    }
    Ok(&found == digest)
}

/// Fetches `api_path` into `dest`, verifying `size` and `digest`.
pub async fn fetch(
    client: &Client,
    api_path: &str,
    dest: &Path,
    digest: &Digest,
    size: u64,
    cache: &Cache,
    bar: &Tracker,
) -> Result<Fetched> {
    if already_there(dest, digest, size, cache).await? {
        bar.inc(size);
        return Ok(Fetched::Present);
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = partial_path(dest);
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if have > size {
        have = 0;
    }
    let mut received = 0;
    let (hasher, written) = if have == size {
        let (hasher, file) = open_partial(&partial, have).await?;
        drop(file);
        (hasher, have)
    } else {
        let mut req = client.request(Method::GET, api_path);
        if have > 0 {
            req = req.header(header::RANGE, format!("bytes={have}-"));
        }
        let resp = client.send_raw(req).await?;
        let resp = match resp.status() {
            StatusCode::PARTIAL_CONTENT if have > 0 => resp,
            StatusCode::OK => {
                have = 0;
                resp
            }
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                have = 0;
                client.send(client.request(Method::GET, api_path)).await?
            }
            _ => return Err(api_error(resp).await.into()),
        };
        let (mut hasher, file) = open_partial(&partial, have).await?;
        bar.inc(have);
        // Hashing happens here, frame by frame, and writing on a blocking thread: the two are
        // the largest costs of a download and run on different cores.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let writer = {
            let partial = partial.clone();
            tokio::task::spawn_blocking(move || -> Result<u64> {
                let mut file = file;
                let mut written = have;
                while let Some(bytes) = rx.blocking_recv() {
                    file.write_all(&bytes)
                        .with_context(|| format!("writing {}", partial.display()))?;
                    written += bytes.len() as u64;
                }
                file.flush()
                    .with_context(|| format!("writing {}", partial.display()))?;
                Ok(written)
            })
        };
        let mut stream = resp.bytes_stream();
        let mut failure = None;
        // Frames go to the writer as received (hundreds of KiB each on a fast link): no copy.
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => {
                    let n = bytes.len() as u64;
                    if have + received + n > size {
                        failure = Some(anyhow::Error::new(LocalError::verify(
                            "size_mismatch",
                            format!(
                                "the server sent more than the {size} bytes of {}",
                                dest.display()
                            ),
                        )));
                        break;
                    }
                    received += n;
                    bar.inc(n);
                    hasher.update(&bytes);
                    if tx.send(bytes).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context(format!(
                        "the download of {} was interrupted; run the command again to resume",
                        dest.display()
                    )));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await??;
        if let Some(e) = failure {
            return Err(e);
        }
        (hasher, written)
    };
    if written != size {
        return Err(LocalError::verify(
            "size_mismatch",
            format!(
                "{} has {written} bytes, the artifact says {size}; run again to resume",
                dest.display()
            ),
        )
        .into());
    }
    let found = hashing::finish(hasher);
    if &found != digest {
        let _ = std::fs::remove_file(&partial);
        return Err(LocalError::verify(
            "digest_mismatch",
            format!(
                "{} hashes to {found}, not {digest}; the partial file was deleted",
                dest.display()
            ),
        )
        .into());
    }
    std::fs::rename(&partial, dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
    if let Ok(stamp) = FileStamp::of(dest) {
        let _ = cache.put_digest(&stamp, digest);
    }
    Ok(Fetched::Downloaded(received))
}

/// Opens `partial` for appending after its first `have` bytes (truncating anything beyond),
/// with a hasher that has seen those bytes.
async fn open_partial(partial: &Path, have: u64) -> Result<(Sha256, std::fs::File)> {
    let path = partial.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<(Sha256, std::fs::File)> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(have)
            .with_context(|| format!("truncating {}", path.display()))?;
        let mut hasher = Sha256::new();
        hashing::hash_prefix(&mut file, have, &mut hasher)
            .with_context(|| format!("reading {}", path.display()))?;
        file.seek(SeekFrom::Start(have))?;
        Ok((hasher, file))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_paths_and_presence() -> Result<()> {
        assert_eq!(
            partial_path(Path::new("a/b.bin")),
            PathBuf::from("a/b.bin.partial")
        );
        let dir = tempfile::tempdir()?;
        let cache = Cache::open(dir.path().join("cache"));
        let dest = dir.path().join("f");
        let digest = hashing::digest_bytes(b"hello");
        assert!(!already_there(&dest, &digest, 5, &cache).await?);
        std::fs::write(&dest, b"hello")?;
        assert!(already_there(&dest, &digest, 5, &cache).await?);
        assert!(!already_there(&dest, &digest, 6, &cache).await?);
        std::fs::write(&dest, b"hellO")?;
        assert!(!already_there(&dest, &digest, 5, &cache).await?);
        Ok(())
    }

    #[tokio::test]
    async fn partials_reopen_with_their_hash() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.partial");
        std::fs::write(&p, b"abcdef")?;
        let (hasher, _file) = open_partial(&p, 3).await?;
        assert_eq!(hashing::finish(hasher), hashing::digest_bytes(b"abc"));
        assert_eq!(std::fs::read(&p)?, b"abc");
        Ok(())
    }
}
