//! Lists the files of a directory to push: regular files under relative `/` paths, hidden files
//! and `*.partial` downloads left out, symlinks followed only while they stay inside.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::error::LocalError;

/// One file to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// The artifact path: relative, `/`-separated.
    pub rel: String,
    /// Where to read it.
    pub abs: PathBuf,
    pub size: u64,
}

/// Whether a directory entry is left out of a push.
fn skipped(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".partial")
}

/// The files under `root`, sorted by path. Symlinked directories are not followed (their content
/// is reachable in `root` already, and this cannot loop); a symlink whose target is outside
/// `root` is refused.
pub fn walk(root: &Path) -> Result<Vec<LocalFile>> {
    let meta = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        return Err(LocalError::usage(format!("{} is not a directory", root.display())).into());
    }
    let canonical_root =
        std::fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(invalid(format!(
                    "file name {:?} in {} is not UTF-8; rename it",
                    entry.file_name(),
                    dir.display()
                )));
            };
            if skipped(name) {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let file_type = entry
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            if file_type.is_dir() {
                stack.push((path, rel));
                continue;
            }
            let meta = if file_type.is_symlink() {
                let target = std::fs::canonicalize(&path)
                    .with_context(|| format!("{} is a broken symlink", path.display()))?;
                if !target.starts_with(&canonical_root) {
                    return Err(invalid(format!(
                        "{} is a symlink to {}, outside {}; copy the file in instead",
                        path.display(),
                        target.display(),
                        root.display()
                    )));
                }
                let meta = std::fs::metadata(&target)
                    .with_context(|| format!("reading {}", target.display()))?;
                if meta.is_dir() {
                    continue;
                }
                meta
            } else {
                entry
                    .metadata()
                    .with_context(|| format!("reading {}", path.display()))?
            };
            if !meta.is_file() {
                continue;
            }
            clreg_types::check_file_path(&rel).map_err(invalid)?;
            out.push(LocalFile {
                rel,
                abs: path,
                size: meta.len(),
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn invalid(message: String) -> anyhow::Error {
    LocalError::verify("invalid_file", message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(files: &[LocalFile]) -> Vec<&str> {
        files.iter().map(|f| f.rel.as_str()).collect()
    }

    #[test]
    fn walks_regular_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("model");
        std::fs::create_dir_all(root.join("sub/deeper"))?;
        std::fs::create_dir_all(root.join(".git"))?;
        std::fs::write(root.join("config.json"), b"{}")?;
        std::fs::write(root.join("sub/deeper/w.safetensors"), b"1234")?;
        std::fs::write(root.join(".hidden"), b"x")?;
        std::fs::write(root.join(".git/HEAD"), b"x")?;
        std::fs::write(root.join("big.bin.partial"), b"x")?;
        let files = walk(&root)?;
        assert_eq!(rels(&files), ["config.json", "sub/deeper/w.safetensors"]);
        assert_eq!(files[1].size, 4);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_stay_inside() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("model");
        std::fs::create_dir_all(root.join("sub"))?;
        std::fs::write(root.join("a.json"), b"{}")?;
        std::os::unix::fs::symlink(root.join("a.json"), root.join("b.json"))?;
        std::os::unix::fs::symlink(root.join("sub"), root.join("loop"))?;
        assert_eq!(rels(&walk(&root)?), ["a.json", "b.json"]);

        std::fs::write(dir.path().join("outside"), b"secret")?;
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("leak"))?;
        let err = walk(&root).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("outside"), "{err}");
        Ok(())
    }

    #[test]
    fn not_a_directory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f");
        std::fs::write(&file, b"x")?;
        assert!(walk(&file).is_err());
        Ok(())
    }
}
