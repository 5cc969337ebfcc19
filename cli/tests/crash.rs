//! Crash safety of the server process: `clreg-server serve` is killed (SIGKILL) at many points
//! of pushes (mid-upload, mid-finish, mid-commit) and started again. Afterwards nothing partial
//! is visible, nothing committed is lost, each push committed once, the ledger verifies, and
//! `admin gc` collects what the dead sessions left. Runs on both backends (SQLite + local
//! store; PostgreSQL + S3 in `scripts/test`'s second pass).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use clreg_tests::TestServer;
use common::{Cli, same_tree};

/// `clreg-server ARGS` on `server`'s database and store (its configuration, as environment).
fn registry(server: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut command =
        clreg_tests::server_process(&clreg_tests::server_binary(), &server.state.config);
    command.args(args).env("CLREG_WORKERS", "0");
    command
}

async fn start(server: &TestServer, port: u16) -> tokio::process::Child {
    let addr = format!("127.0.0.1:{port}");
    let child = registry(server, &["serve", "--addr", &addr])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await
            && r.status().is_success()
        {
            return child;
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn model_args<'a>(dir: &'a Path, seed: &'a str) -> Vec<&'a str> {
    vec![
        "local",
        "tiny",
        "-o",
        dir.to_str().unwrap(),
        "--seed",
        seed,
        "--hidden",
        "512",
        "--intermediate",
        "1024",
        "--layers",
        "2",
        "--heads",
        "8",
        "--kv-heads",
        "8",
        "--vocab",
        "4000",
    ]
}

#[tokio::test]
async fn a_server_killed_at_many_points_of_pushes_loses_nothing_and_commits_each_once() {
    // The in-process server only provides the database and store (and, in the second pass,
    // the S3 server); the registry under test runs as a process of its own.
    let server = TestServer::start().await;
    let root = server.dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut process = start(&server, port).await;
    let cli = Cli::alice_in_lab(&server, &url, "semi").await;

    let delays = [0u64, 40, 120, 250, 400, 600, 900];
    let mut crashes = 0;
    for (i, delay) in delays.into_iter().enumerate() {
        let name = format!("m{i}");
        let dir = root.join(&name);
        cli.ok(&model_args(&dir, &(100 + i).to_string())).await;
        let args = [
            "push",
            dir.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            &name,
        ];
        let mut push = cli
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mid_push = push.try_wait().unwrap().is_none();
        process.start_kill().unwrap();
        process.wait().await.unwrap();
        // Started again at once: the push may go on by itself (the CLI retries network errors),
        // or fail and be run again below.
        process = start(&server, port).await;
        let first = push.wait_with_output().await.unwrap();
        crashes += usize::from(mid_push);
        eprintln!(
            "push {i}: server killed after {delay} ms ({}); the first try {}",
            if mid_push {
                "mid-push"
            } else {
                "after the push"
            },
            if first.status.success() {
                "completed"
            } else {
                "failed"
            }
        );
        if !first.status.success() {
            let again = cli.run(&args).await;
            assert_eq!(
                again.code,
                0,
                "push {i} (server killed after {delay} ms) failed again\nfirst: {}\nagain: {}",
                String::from_utf8_lossy(&first.stderr),
                again.stderr
            );
        }
    }

    assert!(crashes >= 3, "only {crashes} kills hit a push in flight");

    // Every push is there once, whole, and pulls back byte for byte.
    let listed = cli.ok(&["--json", "ls", "--collab", "lab"]).await.json();
    let mut names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}:{}", a["name"].as_str().unwrap(), a["version"]))
        .collect();
    names.sort();
    let expected: Vec<String> = (0..delays.len()).map(|i| format!("m{i}:1")).collect();
    assert_eq!(names, expected);
    for i in 0..delays.len() {
        let pulled = root.join(format!("pulled-{i}"));
        cli.ok(&["pull", &format!("lab/m{i}"), "-o", pulled.to_str().unwrap()])
            .await;
        same_tree(&root.join(format!("m{i}")), &pulled);
    }
    cli.ok(&["audit", "verify", "--collab", "lab"]).await;

    // What dead sessions left (rows of uploads no client finished, their chunks): gc with no
    // grace removes the chunks of sessions without rows; the rows expire on their own.
    let out = registry(&server, &["admin", "gc", "--apply", "--grace-secs", "0"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: std::collections::HashSet<uuid::Uuid> = {
        use sea_orm::EntityTrait as _;
        clreg_server::db::entities::upload::Entity::find()
            .all(&server.state.db)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect()
    };
    let left = clreg_server::uploads::orphaned(&server.state, &live, chrono::Duration::zero())
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "gc left chunks of ended sessions: {left:?}"
    );
    // And everything pulled above is still there after gc.
    cli.ok(&[
        "pull",
        "lab/m0",
        "-o",
        root.join("after-gc").to_str().unwrap(),
    ])
    .await;
    process.start_kill().unwrap();
}
