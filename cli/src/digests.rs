//! The CLI's digest cache as the engine's digest source: a merge or mix records the sha256 of
//! every input, and files this machine already hashed (pushed, pulled and verified, or used as
//! an input before) are not read again while their path, size, mtime and inode are unchanged.

use std::path::Path;
use std::sync::Arc;

use clreg_engine::FormatError;
use clreg_engine::merge::record::{DigestSource, Digests, sha256_file};
use clreg_types::Digest;

use crate::cache::{Cache, FileStamp};

struct CachedDigests(Arc<Cache>);

impl DigestSource for CachedDigests {
    fn sha256(&self, path: &Path) -> Result<String, FormatError> {
        // Stamped before hashing: a file changed meanwhile gets a new stamp and a miss next time.
        let stamp = FileStamp::of(path).ok();
        if let Some(digest) = stamp.as_ref().and_then(|s| self.0.digest(s)) {
            return Ok(digest.hex());
        }
        let hex = sha256_file(path)?;
        let bytes = hex::decode(&hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if let (Some(stamp), Some(bytes)) = (stamp, bytes) {
            // Only a cache: a failure to remember costs a re-hash next time, nothing else.
            let _ = self.0.put_digest(&stamp, &Digest::from_bytes(bytes));
        }
        Ok(hex)
    }
}

/// The engine's digest source backed by `cache`.
pub fn cached(cache: Arc<Cache>) -> Digests {
    Digests(Arc::new(CachedDigests(cache)))
}
