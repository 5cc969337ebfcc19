//! What the CLI's end-to-end tests share: the `clreg` binary cargo built from this source, run
//! with a private home, config and cache directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The `clreg` binary cargo built from this source for these tests.
pub fn clreg_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clreg"))
}

pub struct Cli {
    pub home: tempfile::TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `clreg ARGS` with this user's private directories, not started yet.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(clreg_bin());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("CLREG_CONFIG_DIR", self.home.path().join("config"))
            .env("CLREG_CACHE_DIR", self.home.path().join("cache"))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().await.unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A new user `alice` on `server`, logged in through `url` (the server's, or a proxy in
    /// front of it), owner of a new collaboration `lab` with `policy`.
    pub async fn alice_in_lab(server: &clreg_tests::TestServer, url: &str, policy: &str) -> Cli {
        let key = clreg_server::admin::create_user(&server.state.db, "alice", false)
            .await
            .unwrap();
        let cli = Cli::new();
        cli.ok(&["login", "--server", url, "--api-key", &key]).await;
        cli.ok(&["collab", "create", "lab", "--policy", policy])
            .await;
        cli
    }

    pub async fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args).await;
        assert_eq!(
            out.code, 0,
            "clreg {args:?} failed\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out
    }
}

pub fn same_tree(a: &Path, b: &Path) {
    let files_a = clreg_tests::walk(a);
    let files_b = clreg_tests::walk(b);
    assert_eq!(files_a.len(), files_b.len(), "{files_a:?} vs {files_b:?}");
    for (x, y) in files_a.iter().zip(&files_b) {
        assert_eq!(x.strip_prefix(a).unwrap(), y.strip_prefix(b).unwrap());
        assert_eq!(
            std::fs::read(x).unwrap(),
            std::fs::read(y).unwrap(),
            "{}",
            x.display()
        );
    }
}
