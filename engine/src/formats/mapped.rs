//! Read-only memory maps of input weight files: the one module of the workspace that uses
//! `unsafe` (everywhere else `unsafe_code` is denied).
//!
//! A merge reads every input tensor once. Through `pread` each byte was copied from the page
//! cache into a buffer, decoded into a freshly allocated (kernel-zeroed) `f32` vector, and only
//! then used; mapped, the merge reads the page cache's pages where they are, and an aligned
//! little-endian `F32` tensor is used as `&[f32]` without any copy
//! ([`super::stfile::StFile::f32_slice`]). Once a tensor is consumed its pages leave the
//! process's resident set again ([`Mapped::release`]), so the peak stays a few tensors per input
//! whatever the models' size.
//!
//! # Safety
//!
//! A map is sound as long as nobody changes the file while it is mapped: Rust assumes the
//! bytes behind a `&[u8]` do not change, and truncating a mapped file makes reads past its new
//! end fault (`SIGBUS`). The files mapped here are
//! - the registry's staged inputs (`<data_dir>/cache`): content-addressed, written under a
//!   temporary name, renamed into place and never written again (a later rename replaces the
//!   directory entry, not the mapped inode), and
//! - the files a user names to `clreg local …`, which the user must not rewrite while the
//!   command runs, as with candle's and safetensors' own mapped loaders, which clreg also uses;
//! - a model's weights while it is loaded ([`crate::model::read_tensors`]): each tensor is
//!   copied out of the map once, so the map lives only for the load.
//!
//! A change that breaks that rule can make a merge read other bytes than the file had when it
//! was hashed; the record's sha256 is then not the input's (the registry hashes what it
//! stores). Truncation kills the process with `SIGBUS` instead of an error.

#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Range;

use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

/// A whole file mapped read-only.
#[derive(Debug)]
pub struct Mapped {
    map: Mmap,
}

impl Mapped {
    /// Maps `file` (its current length; an empty file maps to no bytes).
    pub fn new(file: &File) -> std::io::Result<Self> {
        // SAFETY: read-only map of a file nobody writes while it is mapped (the module's
        // Safety section says which files these are and what a violation costs).
        let map = unsafe { MmapOptions::new().map(file)? };
        Ok(Self { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Drops the pages of `range` from this process's resident set (they stay in the page
    /// cache; touching them again maps them back). Advice only: failures are ignored.
    pub fn release(&self, range: Range<usize>) {
        if range.is_empty() || range.end > self.map.len() {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only shared file mapping unmaps the pages; a later
        // read faults the same file bytes back in from the page cache. No byte any reference
        // points at changes, so borrowed slices stay valid (the hazard memmap2 documents is
        // for private or anonymous maps, whose pages come back zeroed).
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, range.len())
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;

    #[test]
    fn released_pages_read_back_the_files_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        let map = Mapped::new(&f).unwrap();
        assert_eq!(map.bytes(), &bytes[..]);
        // Unaligned on both ends, and the whole map.
        map.release(100..5000);
        assert_eq!(map.bytes(), &bytes[..]);
        map.release(0..bytes.len());
        map.release(10..usize::MAX);
        assert_eq!(map.bytes(), &bytes[..]);
        let empty = Mapped::new(&tempfile::tempfile().unwrap()).unwrap();
        assert!(empty.bytes().is_empty());
    }

    /// `unsafe_code` is denied in the workspace; this module is the one place that allows it.
    #[test]
    fn this_is_the_only_module_that_allows_unsafe() {
        fn walk(dir: &Path, found: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !name.starts_with('.') && name != "target" && name != "node_modules" {
                        walk(&path, found);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains(concat!("allow(", "unsafe_code)")) {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut found = Vec::new();
        walk(root, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].ends_with("engine/src/formats/mapped.rs"),
            "{found:?}"
        );
    }
}
