//! The local cache: known file digests (so a re-push only asks `HEAD`) and open upload sessions
//! (so an interrupted push resumes). Both are small JSON files written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use clreg_types::Digest;
use serde::{Deserialize, Serialize};

use crate::config::write_private;

const DIGESTS_FILE: &str = "digests.json";
const UPLOADS_FILE: &str = "uploads.json";

/// What identifies one version of a file: a change of any field means the content may differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Canonical absolute path.
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

impl FileStamp {
    /// Stamps the file at `path` (following symlinks).
    pub fn of(path: &Path) -> Result<Self> {
        let canonical =
            std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        let meta = std::fs::metadata(&canonical)
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        Ok(Self::from_meta(canonical, &meta))
    }

    pub fn from_meta(canonical: PathBuf, meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (mtime_ns, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            (
                i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                meta.ino(),
            )
        };
        #[cfg(not(unix))]
        let (mtime_ns, inode) = {
            let ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            (ns, 0)
        };
        FileStamp {
            path: canonical,
            size: meta.len(),
            mtime_ns,
            inode,
        }
    }

    fn key(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Key of an upload session: the server, the file, its size and mtime.
    fn upload_key(&self, server: &str) -> String {
        format!("{server}\n{}\n{}\n{}", self.key(), self.size, self.mtime_ns)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DigestEntry {
    digest: Digest,
    size: u64,
    mtime_ns: i128,
    inode: u64,
}

#[derive(Default)]
struct State {
    digests: BTreeMap<String, DigestEntry>,
    uploads: BTreeMap<String, uuid::Uuid>,
}

/// Shared by the parallel uploads of one command; every change is written through at once.
pub struct Cache {
    dir: PathBuf,
    state: Mutex<State>,
}

impl Cache {
    /// Opens the cache in `dir`; unreadable or corrupt files count as empty (it is only a cache).
    pub fn open(dir: PathBuf) -> Self {
        let digests = read_json(&dir.join(DIGESTS_FILE)).unwrap_or_default();
        let uploads = read_json(&dir.join(UPLOADS_FILE)).unwrap_or_default();
        Cache {
            dir,
            state: Mutex::new(State { digests, uploads }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked; the maps are still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest recorded for exactly this version of the file.
    pub fn digest(&self, stamp: &FileStamp) -> Option<Digest> {
        let state = self.lock();
        let e = state.digests.get(&stamp.key())?;
        (e.size == stamp.size && e.mtime_ns == stamp.mtime_ns && e.inode == stamp.inode)
            .then(|| e.digest.clone())
    }

    pub fn put_digest(&self, stamp: &FileStamp, digest: &Digest) -> Result<()> {
        let entry = DigestEntry {
            digest: digest.clone(),
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            inode: stamp.inode,
        };
        let mut state = self.lock();
        state.digests.insert(stamp.key(), entry);
        self.write(DIGESTS_FILE, &state.digests)
    }

    /// The upload session opened earlier for this file on `server`.
    pub fn upload(&self, server: &str, stamp: &FileStamp) -> Option<uuid::Uuid> {
        self.lock().uploads.get(&stamp.upload_key(server)).copied()
    }

    pub fn put_upload(&self, server: &str, stamp: &FileStamp, id: uuid::Uuid) -> Result<()> {
        let mut state = self.lock();
        state.uploads.insert(stamp.upload_key(server), id);
        self.write(UPLOADS_FILE, &state.uploads)
    }

    pub fn forget_upload(&self, server: &str, stamp: &FileStamp) -> Result<()> {
        let mut state = self.lock();
        if state.uploads.remove(&stamp.upload_key(server)).is_some() {
            self.write(UPLOADS_FILE, &state.uploads)?;
        }
        Ok(())
    }

    fn write<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        write_private(&self.dir.join(file), &serde_json::to_vec(value)?)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_by_stamp() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"hello")?;
        let stamp = FileStamp::of(&file)?;
        let digest: Digest =
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?;
        let cache = Cache::open(dir.path().join("cache"));
        assert!(cache.digest(&stamp).is_none());
        cache.put_digest(&stamp, &digest)?;
        // A fresh process sees it.
        let cache = Cache::open(dir.path().join("cache"));
        assert_eq!(cache.digest(&stamp), Some(digest.clone()));
        // Any change of the file's stamp misses.
        let changed = FileStamp {
            size: 6,
            ..stamp.clone()
        };
        assert!(cache.digest(&changed).is_none());
        let touched = FileStamp {
            mtime_ns: stamp.mtime_ns + 1,
            ..stamp.clone()
        };
        assert!(cache.digest(&touched).is_none());

        let id = uuid::Uuid::new_v4();
        cache.put_upload("http://s", &stamp, id)?;
        assert_eq!(
            Cache::open(dir.path().join("cache")).upload("http://s", &stamp),
            Some(id)
        );
        assert!(cache.upload("http://other", &stamp).is_none());
        cache.forget_upload("http://s", &stamp)?;
        assert!(
            Cache::open(dir.path().join("cache"))
                .upload("http://s", &stamp)
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn corrupt_cache_is_empty() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(DIGESTS_FILE), b"{not json")?;
        let cache = Cache::open(dir.path().to_path_buf());
        let stamp = FileStamp {
            path: "/x".into(),
            size: 1,
            mtime_ns: 1,
            inode: 1,
        };
        assert!(cache.digest(&stamp).is_none());
        Ok(())
    }
}
