//! Login state (`credentials.json`, mode 0600) and where the config and cache directories are.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const CREDENTIALS_FILE: &str = "credentials.json";

/// `$CLREG_CONFIG_DIR`, else the platform config directory + `clreg`.
pub fn config_dir() -> Result<PathBuf> {
    dir_from("CLREG_CONFIG_DIR", dirs::config_dir, "config")
}

/// `$CLREG_CACHE_DIR`, else the platform cache directory + `clreg`.
pub fn cache_dir() -> Result<PathBuf> {
    dir_from("CLREG_CACHE_DIR", dirs::cache_dir, "cache")
}

fn dir_from(var: &str, platform: fn() -> Option<PathBuf>, what: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    platform()
        .map(|d| d.join("clreg"))
        .with_context(|| format!("no {what} directory on this platform; set {var}"))
}

/// Trailing slashes do not make a different server.
pub fn normalize_server(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

/// What `clreg login` stores. The API key stays so an expired token can be renewed.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub user: String,
    pub api_key: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("api_key", &"<redacted>")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Credentials {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CREDENTIALS_FILE)
    }

    /// The stored login, `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let creds = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid login state; run `clreg login` again",
                path.display()
            )
        })?;
        Ok(Some(creds))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_private(&Self::path(dir), &bytes)
    }

    /// Removes the stored login; whether there was one.
    pub fn remove(dir: &Path) -> Result<bool> {
        let path = Self::path(dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename), readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("state file without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_private() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(Credentials::load(dir.path())?.is_none());
        let creds = Credentials {
            server: "http://x".into(),
            user: "alice".into(),
            api_key: "secret-key".into(),
            token: "secret-token".into(),
            expires_at: Utc::now(),
        };
        creds.save(dir.path())?;
        let back = Credentials::load(dir.path())?.context("saved")?;
        assert_eq!(back.user, "alice");
        assert!(!format!("{back:?}").contains("secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(Credentials::path(dir.path()))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Credentials::remove(dir.path())?);
        assert!(!Credentials::remove(dir.path())?);
        Ok(())
    }

    #[test]
    fn servers_normalize() {
        assert_eq!(normalize_server("http://h:1/ "), "http://h:1");
    }
}
