//! sha256 of local files and byte streams (the sha2 crate picks SHA-NI / ARMv8 SHA at run time).

use std::io::Read as _;
use std::path::Path;

use clreg_types::Digest;
use sha2::{Digest as _, Sha256};

/// Read size of whole-file hashing: large enough that syscalls do not matter.
const BUF: usize = 4 << 20;

pub fn finish(hasher: Sha256) -> Digest {
    Digest::from_bytes(hasher.finalize().into())
}

pub fn digest_bytes(bytes: &[u8]) -> Digest {
    finish(Sha256::new_with_prefix(bytes))
}

/// Feeds the next `len` bytes of `reader` to `hasher`; fewer means the file shrank.
pub fn hash_prefix(
    reader: &mut impl std::io::Read,
    len: u64,
    hasher: &mut Sha256,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(BUF).min(BUF);
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than expected (it changed while clreg read it)",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The digest and size of a whole file (blocking).
pub fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((finish(hasher), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() -> anyhow::Result<()> {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(digest_bytes(b"").to_string(), empty);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data)?;
        let (d, size) = hash_file(&path)?;
        assert_eq!((d, size), (digest_bytes(&data), data.len() as u64));
        let mut h = Sha256::new();
        hash_prefix(&mut std::fs::File::open(&path)?, 5 << 20, &mut h)?;
        assert_eq!(finish(h), digest_bytes(&data[..5 << 20]));
        let mut h = Sha256::new();
        assert!(hash_prefix(&mut &data[..10], 11, &mut h).is_err());
        Ok(())
    }
}
