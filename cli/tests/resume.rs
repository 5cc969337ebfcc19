//! Pushes interrupted by a crash (`kill -9` of a real `clreg push`) resume and complete on the
//! next try, whatever the moment of the crash; two processes pushing one directory both finish.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clreg_tests::TestServer;
use common::{Cli, same_tree};
use sea_orm::EntityTrait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The CLI's chunk: a partial chunk on the server is one that stopped between two multiples.
const CHUNK: u64 = 16 << 20;

/// A TCP proxy in front of the server that, once `cut_after` bytes went from clients to the
/// server, stops forwarding (a client frozen mid-body), tells the test, and on release drops
/// every frozen connection, so the server sees a chunk end early.
struct CutProxy {
    url: String,
    cut_after: Arc<AtomicU64>,
    frozen: Arc<tokio::sync::Notify>,
    release: tokio::sync::watch::Sender<bool>,
}

impl CutProxy {
    async fn start(server_url: &str, cut_after: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = server_url.trim_start_matches("http://").to_string();
        let cut_after = Arc::new(AtomicU64::new(cut_after));
        let forwarded = Arc::new(AtomicU64::new(0));
        let frozen = Arc::new(tokio::sync::Notify::new());
        let (release, released) = tokio::sync::watch::channel(false);
        {
            let (cut_after, frozen) = (cut_after.clone(), frozen.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let upstream = TcpStream::connect(&target).await.unwrap();
                    let (mut from_client, to_client) = client.into_split();
                    let (from_server, mut to_server) = upstream.into_split();
                    let back = tokio::spawn(async move {
                        let (mut from_server, mut to_client) = (from_server, to_client);
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let (cut_after, forwarded, frozen) =
                        (cut_after.clone(), forwarded.clone(), frozen.clone());
                    let mut released = released.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n as u64,
                            };
                            let before = forwarded.fetch_add(n, Ordering::SeqCst);
                            let cut = cut_after.load(Ordering::SeqCst);
                            if before + n > cut {
                                let keep = cut.saturating_sub(before).min(n) as usize;
                                let _ = to_server.write_all(&buf[..keep]).await;
                                frozen.notify_one();
                                let _ = released.wait_for(|r| *r).await;
                                back.abort();
                                return; // drops both halves: the server sees the body end
                            }
                            if to_server.write_all(&buf[..n as usize]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    });
                }
            });
        }
        CutProxy {
            url,
            cut_after,
            frozen,
            release,
        }
    }

    /// Drops the frozen connections and forwards everything from now on.
    fn release(&self) {
        self.cut_after.store(u64::MAX, Ordering::SeqCst);
        let _ = self.release.send(true);
    }
}

/// A Llama of about 36 MB in one safetensors file: three chunks of the CLI's.
async fn model(cli: &Cli, root: &Path, name: &str, seed: u64) -> PathBuf {
    let dir = root.join(name);
    cli.ok(&[
        "local",
        "tiny",
        "-o",
        dir.to_str().unwrap(),
        "--seed",
        &seed.to_string(),
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
    ])
    .await;
    dir
}

/// The committed offsets of the server's open upload sessions, once one satisfies `wanted`
/// (a cut chunk commits when the server sees its body end, which over S3 takes a moment), or
/// as they are after 10 s.
async fn offsets_once(server: &TestServer, wanted: impl Fn(u64) -> bool) -> Vec<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let offsets: Vec<u64> = clreg_server::db::entities::upload::Entity::find()
            .all(&server.state.db)
            .await
            .unwrap()
            .iter()
            .map(|r| u64::try_from(r.offset).unwrap())
            .collect();
        if offsets.iter().any(|o| wanted(*o)) || std::time::Instant::now() > deadline {
            return offsets;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn push_args<'a>(dir: &'a Path, name: &'a str) -> Vec<&'a str> {
    vec![
        "--json",
        "push",
        dir.to_str().unwrap(),
        "--collab",
        "lab",
        "--name",
        name,
    ]
}

#[tokio::test]
async fn a_push_killed_mid_chunk_resumes_from_what_the_server_kept() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    // Cut in the middle of the second chunk of the weights.
    let proxy = CutProxy::start(&server.url, CHUNK + (5 << 20)).await;
    let cli = Cli::alice_in_lab(&server, &proxy.url, "semi").await;
    let dir = model(&cli, root, "m", 1).await;

    let mut push = cli.command(&push_args(&dir, "m")).spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(60), proxy.frozen.notified())
        .await
        .expect("the push never reached the cut");
    // The client dies mid-body (kill -9), then its connections go away.
    push.start_kill().unwrap();
    push.wait().await.unwrap();
    proxy.release();

    let offsets = offsets_once(&server, |o| o > CHUNK && o % CHUNK != 0).await;
    assert!(
        offsets.iter().any(|o| *o > CHUNK && o % CHUNK != 0),
        "no partial chunk on the server: {offsets:?}"
    );
    // The next push resumes that session and completes, on its first try.
    let out = cli.ok(&push_args(&dir, "m")).await;
    assert_eq!(out.json()["artifact"]["version"], 1, "{}", out.stdout);
    let pulled = root.join("pulled");
    cli.ok(&["pull", "lab/m:1", "-o", pulled.to_str().unwrap()])
        .await;
    same_tree(&dir, &pulled);
}

#[tokio::test]
async fn pushes_killed_at_many_points_complete_on_the_next_try() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    for (i, delay_ms) in [0u64, 15, 40, 80, 120, 200, 300, 450]
        .into_iter()
        .enumerate()
    {
        let name = format!("m{i}");
        let dir = model(&cli, root, &name, 10 + i as u64).await;
        let mut push = cli.command(&push_args(&dir, &name)).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        push.start_kill().unwrap();
        push.wait().await.unwrap();
        // One retry completes it, whatever state the crash left.
        let out = cli.run(&push_args(&dir, &name)).await;
        assert_eq!(
            out.code, 0,
            "push {i} after a kill at {delay_ms} ms failed\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        let pulled = root.join(format!("pulled-{i}"));
        cli.ok(&[
            "pull",
            &format!("lab/{name}"),
            "-o",
            pulled.to_str().unwrap(),
        ])
        .await;
        same_tree(&dir, &pulled);
    }
}

#[tokio::test]
async fn two_processes_pushing_one_directory_both_finish() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    let dir = model(&cli, root, "m", 3).await;
    let args = push_args(&dir, "m");
    let (a, b) = tokio::join!(cli.command(&args).output(), cli.command(&args).output());
    for out in [a.unwrap(), b.unwrap()] {
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One artifact (the second commit of the same manifest is idempotent), bytes intact.
    let listed = cli.ok(&["--json", "ls", "--collab", "lab"]).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let pulled = root.join("pulled");
    cli.ok(&["pull", "lab/m", "-o", pulled.to_str().unwrap()])
        .await;
    same_tree(&dir, &pulled);
}
