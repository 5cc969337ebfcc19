//! Downloads into a partial file in a private staging directory (resumed with `Range`), hashing
//! on a blocking thread while writing, and renames into place only once size and digest match.
//!
//! The staging directory, `<output>/.clreg-pull/<name>`, is created mode 0700 and refused if it
//! is a symbolic link or open to others: nobody else can plant or swap a partial file, and a
//! destination or one of its directories that is a symbolic link is replaced or refused, never
//! written through.

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

/// Name of the directory, inside a pull's output, that holds downloads in progress.
pub const STAGING_DIR: &str = ".clreg-pull";

/// The private directory for the downloads in progress of `name` (an artifact id, a dataset
/// digest) under `output`: created mode 0700, and refused when it exists as a symbolic link, as
/// something other than a directory, or open to other users. Stable per `name`, so an interrupted
/// pull resumes from its partial files.
pub fn staging_dir(output: &Path, name: &str) -> Result<PathBuf> {
    let mut dir = output.to_path_buf();
    for part in [STAGING_DIR, name] {
        dir.push(part);
        private_dir(&dir)?;
    }
    Ok(dir)
}

fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    #[cfg(unix)]
    let open_to_others = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0;
    #[cfg(not(unix))]
    let open_to_others = false;
    if !meta.is_dir() || open_to_others {
        return Err(LocalError::verify(
            "unsafe_path",
            format!(
                "{} must be a private directory (mode 0700, not a symbolic link); remove it and \
                 run the command again",
                dir.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// Creates the directories of `relative` under `root`, refusing any that exists as a symbolic
/// link (a download must never land outside the output directory).
pub fn create_parents(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(LocalError::verify(
                        "unsafe_path",
                        format!(
                            "{} is in the way (a symbolic link or a file where the artifact has a \
                             directory); move it away and run the command again",
                            dir.display()
                        ),
                    )
                    .into());
                }
                Err(_) => std::fs::create_dir(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?,
            }
        }
    }
    Ok(root.join(relative))
}

/// Removes a staging directory once every download in it has landed (and `.clreg-pull` when
/// nothing else is in progress there).
pub fn remove_staging(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// Whether `dest` already holds `digest` (asks the digest cache before hashing). A symbolic link
/// never does: it is replaced.
pub async fn already_there(dest: &Path, digest: &Digest, size: u64, cache: &Cache) -> Result<bool> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
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

/// Fetches `api_path` into `dest` by way of the partial file `partial` (in a staging directory),
/// verifying `size` and `digest`. `dest`'s directory must exist.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    client: &Client,
    api_path: &str,
    dest: &Path,
    partial: &Path,
    digest: &Digest,
    size: u64,
    cache: &Cache,
    bar: &Tracker,
) -> Result<Fetched> {
    if already_there(dest, digest, size, cache).await? {
        bar.inc(size);
        return Ok(Fetched::Present);
    }
    let partial = partial.to_path_buf();
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
    // `rename` replaces a symbolic link at `dest` itself, never what it points to.
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
    async fn presence() -> Result<()> {
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

    #[cfg(unix)]
    #[tokio::test]
    async fn staging_is_private_and_links_are_refused() -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("out");
        std::fs::create_dir(&out)?;
        let staging = staging_dir(&out, "abc")?;
        assert_eq!(staging, out.join(".clreg-pull/abc"));
        let mode = std::fs::metadata(&staging)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(staging_dir(&out, "abc")?, staging, "reused to resume");

        // A staging directory someone else could write into, or a link, is refused.
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o777))?;
        assert!(staging_dir(&out, "abc").is_err());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere)?;
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::symlink(&elsewhere, out.join(".clreg-pull/linked"))?;
        assert!(staging_dir(&out, "linked").is_err());

        // Parents: created when missing, refused when one is a link.
        let dest = create_parents(&out, Path::new("a/b/w.bin"))?;
        assert_eq!(dest, out.join("a/b/w.bin"));
        assert!(out.join("a/b").is_dir());
        std::os::unix::fs::symlink(&elsewhere, out.join("sub"))?;
        assert!(create_parents(&out, Path::new("sub/w.bin")).is_err());
        assert!(create_parents(&out, Path::new("w.bin")).is_ok());

        // A link where the file goes is never "already there".
        std::fs::write(elsewhere.join("f"), b"hello")?;
        std::os::unix::fs::symlink(elsewhere.join("f"), out.join("f"))?;
        let cache = Cache::open(dir.path().join("cache"));
        let digest = hashing::digest_bytes(b"hello");
        let f = out.join("f");
        assert!(!already_there(&f, &digest, 5, &cache).await?);
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
