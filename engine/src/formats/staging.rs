//! All-or-nothing output directories: everything is written to `DIR.partial-<pid>-<n>` (unique
//! per output of this process, so two jobs in one process never share one) and renamed to `DIR`
//! at the end; dropped before that, the partial directory is removed.

use std::path::{Path, PathBuf};

use crate::error::FormatError;

/// A staging directory for one output.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    partial: PathBuf,
    committed: bool,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

impl Staging {
    /// Creates `target.partial-<pid>-<n>`. Refuses a `target` that exists and is not an empty
    /// directory, so that nothing is ever overwritten.
    pub fn new(target: &Path) -> Result<Self, FormatError> {
        if target.exists() {
            let empty = std::fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(FormatError::OutputExists {
                    file: target.display().to_string(),
                    reason:
                        "the output directory already exists and is not empty; choose a new one"
                            .to_string(),
                });
            }
        }
        let mut name = target
            .file_name()
            .map(|n| n.to_os_string())
            .ok_or_else(|| io_err(target, "the output path has no directory name"))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        name.push(format!(".partial-{}-{n}", std::process::id()));
        let partial = target.with_file_name(name);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            committed: false,
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// The final directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the partial directory to the target.
    pub fn commit(mut self) -> Result<PathBuf, FormatError> {
        if self.target.is_dir() {
            // Checked empty in `new`; an empty directory someone made meanwhile is replaced.
            std::fs::remove_dir(&self.target).map_err(|e| io_err(&self.target, e))?;
        }
        std::fs::rename(&self.partial, &self.target).map_err(|e| io_err(&self.target, e))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a failed clean-up leaves only the `.partial-<pid>` directory.
            let _ = std::fs::remove_dir_all(&self.partial);
        }
    }
}
