//! The Hugging Face Hub–compatible read API driven by the real `huggingface_hub` client
//! (pinned in `scripts/test`, which installs it into `~/.cache/clreg-hf-venv`; or set
//! `CLREG_HF_PYTHON` to a python that has it) through `tests/hf/hub.py`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clreg_types::ArtifactKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, tiny_adapter, tiny_model, tiny_model_with_tokenizer, walk};

/// The python with huggingface_hub.
fn python() -> PathBuf {
    let path = std::env::var_os("CLREG_HF_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/clreg-hf-venv/bin/python"))
        })
        .unwrap_or_default();
    assert!(
        path.is_file(),
        "no python with huggingface_hub at {}: run scripts/test (it installs the pinned client \
         into ~/.cache/clreg-hf-venv) or set CLREG_HF_PYTHON",
        path.display()
    );
    path
}

/// Runs `tasks` through the client against `endpoint` (a server's URL); returns the results.
async fn hub(endpoint: &str, home: &Path, tasks: Value) -> Vec<Value> {
    hub_with(endpoint, home, tasks, &[]).await
}

async fn hub_with(endpoint: &str, home: &Path, tasks: Value, env: &[(&str, &str)]) -> Vec<Value> {
    let mut child = tokio::process::Command::new(python())
        .envs(env.iter().copied())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("hf/hub.py"))
        .env("HF_ENDPOINT", format!("{endpoint}/hf"))
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(json!({ "tasks": tasks }).to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "hub.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed["results"].as_array().unwrap().clone()
}

fn sha256_of_dir(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::{Digest as _, Sha256};
    walk(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())))
        })
        .collect()
}

fn error_of(result: &Value) -> &str {
    result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {result}"))
}

#[tokio::test]
async fn huggingface_hub_downloads_a_base_an_adapter_and_a_mixture_byte_for_byte() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let audrey = server.user("audrey").await;
    let olga = server.user("olga").await;
    let remy = server.user("remy").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "audrey", "auditor").await;
    alice.add_member("lab", "remy", "contributor").await;
    alice.delete("/collaborations/lab/members/remy").await;
    let tiny = clreg_engine::tiny::TinyConfig::default();
    let base = tiny_model_with_tokenizer(root, "base", 1);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let lora = tiny_adapter(root, "lora", 2, &tiny);
    alice
        .push(
            "lab",
            "lora",
            ArtifactKind::Adapter,
            Some("lab/base"),
            &lora,
        )
        .await;
    let moe = root.join("moe");
    let recipe = clreg_engine::moe::MoeRecipe::from_yaml(&format!(
        "base_model: {0}\ngate_mode: random\nseed: 1\nexperts:\n  - source_model: {0}\n  - source_model: {0}\n",
        base.display()
    ))
    .unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    clreg_engine::moe::mix_mixtral(&recipe, &moe, None, &|_| {}, &|_| {}, &cancel).unwrap();
    let mixture = alice
        .push("lab", "moe", ArtifactKind::Mixture, Some("lab/base"), &moe)
        .await;
    let moe_rev: String = mixture["id"].as_str().unwrap()[..12].to_string();

    let key = alice.api_key.clone().unwrap();
    let jwt = alice.token.clone().unwrap();
    let cache = root.join("hf-cache");
    let c = cache.display().to_string();
    let results = hub(
        &server.url,
        &root.join("hf-home"),
        json!([
            {"op": "snapshot", "repo": "lab/base", "revision": "main", "token": key, "cache": c},
            {"op": "snapshot", "repo": "lab/lora", "revision": "1", "token": jwt, "cache": c},
            {"op": "snapshot", "repo": "lab/moe", "revision": moe_rev, "token": key, "cache": c},
            {"op": "info", "repo": "lab/base", "revision": "main", "token": key},
            {"op": "files", "repo": "lab/moe", "revision": "main", "token": key},
            {"op": "file", "repo": "lab/base", "revision": "2", "token": key, "cache": c,
             "filename": "config.json"},
            {"op": "file", "repo": "lab/nope", "revision": "main", "token": key, "cache": c,
             "filename": "config.json"},
            {"op": "file", "repo": "lab/base", "revision": "main", "token": key, "cache": c,
             "filename": "nope.bin"},
            {"op": "info", "repo": "lab/base", "revision": "main", "token": audrey.api_key},
            {"op": "file", "repo": "lab/base", "revision": "main", "token": audrey.api_key,
             "cache": root.join("audrey-cache"), "filename": "model.safetensors"},
            {"op": "snapshot", "repo": "lab/base", "revision": "main", "token": olga.api_key,
             "cache": root.join("olga-cache")},
            {"op": "info", "repo": "lab/base", "revision": "main", "token": "clreg_not_a_key"},
            {"op": "file", "repo": "lab/base", "revision": "main", "token": remy.api_key,
             "cache": root.join("remy-cache"), "filename": "config.json"},
        ]),
    )
    .await;
    for (i, local) in [&base, &lora, &moe].iter().enumerate() {
        let got: std::collections::BTreeMap<String, String> =
            serde_json::from_value(results[i]["ok"]["files"].clone())
                .unwrap_or_else(|_| panic!("download {i}: {}", results[i]));
        assert_eq!(got, sha256_of_dir(local), "download {i}");
    }
    let info = &results[3]["ok"];
    assert_eq!(info["id"], "lab/base");
    assert_eq!(info["sha"].as_str().unwrap().len(), 40);
    assert!(
        info["siblings"]
            .as_array()
            .unwrap()
            .contains(&json!("model.safetensors"))
    );
    assert!(
        results[4]["ok"]
            .as_array()
            .unwrap()
            .contains(&json!("config.json"))
    );
    // The client's own exceptions: a revision, a repository and a file that do not exist.
    assert_eq!(
        error_of(&results[5]),
        "RevisionNotFoundError",
        "{}",
        results[5]
    );
    assert_eq!(
        error_of(&results[6]),
        "RepositoryNotFoundError",
        "{}",
        results[6]
    );
    assert!(
        error_of(&results[7]).contains("EntryNotFound"),
        "{}",
        results[7]
    );
    // An auditor reads metadata but gets no bytes; an outsider and a bad key see nothing.
    assert_eq!(results[8]["ok"]["id"], "lab/base", "{}", results[8]);
    assert_eq!(error_of(&results[9]), "GatedRepoError", "{}", results[9]);
    let audrey_cache = root.join("audrey-cache");
    if audrey_cache.exists() {
        assert!(
            walk(&audrey_cache)
                .iter()
                .all(|p| !p.ends_with("model.safetensors")),
            "an auditor got bytes"
        );
    }
    assert_eq!(
        error_of(&results[10]),
        "RepositoryNotFoundError",
        "{}",
        results[10]
    );
    assert_eq!(
        error_of(&results[11]),
        "RepositoryNotFoundError",
        "{}",
        results[11]
    );
}

/// A TCP proxy that cuts the first response longer than `cut` bytes after `cut` bytes, and
/// notes whether a later request asked for a byte range.
struct CutProxy {
    url: String,
    cut_done: Arc<AtomicBool>,
    saw_range: Arc<AtomicBool>,
    saw_partial: Arc<AtomicBool>,
}

impl CutProxy {
    async fn start(server: &str, cut: usize) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = server.trim_start_matches("http://").to_string();
        let cut_done = Arc::new(AtomicBool::new(false));
        let saw_range = Arc::new(AtomicBool::new(false));
        let saw_partial = Arc::new(AtomicBool::new(false));
        let (done, range, partial) = (cut_done.clone(), saw_range.clone(), saw_partial.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let range = range.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if String::from_utf8_lossy(&buf[..n])
                            .to_ascii_lowercase()
                            .contains("range: bytes=")
                        {
                            range.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let (done, partial) = (done.clone(), partial.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4 << 10];
                    let mut sent = 0usize;
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if buf[..n].starts_with(b"HTTP/1.1 206") {
                            partial.store(true, Ordering::SeqCst);
                        }
                        sent += n;
                        if sent > cut && !done.swap(true, Ordering::SeqCst) {
                            // Cut mid-body: drop both directions of this connection.
                            let _ = cw.write_all(&buf[..n - (sent - cut)]).await;
                            return;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CutProxy {
            url,
            cut_done,
            saw_range,
            saw_partial,
        }
    }
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_a_range_request() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let base = tiny_model(root, "base", 1, None);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let weights = std::fs::metadata(base.join("model.safetensors"))
        .unwrap()
        .len();
    let cut = 48 << 10;
    assert!(weights > 2 * cut as u64, "the weights must outlast the cut");
    let proxy = CutProxy::start(&server.url, cut).await;
    let results = hub_with(
        &proxy.url,
        &root.join("hf-home"),
        json!([{"op": "file", "repo": "lab/base", "revision": "main", "token": alice.api_key,
                "cache": root.join("hf-cache"), "filename": "model.safetensors"}]),
        // Pieces smaller than the cut, so that some are on disk when it comes.
        &[("CLREG_HF_CHUNK", "16384")],
    )
    .await;
    assert!(proxy.cut_done.load(Ordering::SeqCst), "the proxy never cut");
    assert!(
        proxy.saw_range.load(Ordering::SeqCst),
        "the client did not resume with Range: {}",
        results[0]
    );
    assert!(
        proxy.saw_partial.load(Ordering::SeqCst),
        "the server did not answer the range with 206"
    );
    let got = &results[0]["ok"];
    assert_eq!(got["size"], weights, "{}", results[0]);
    assert_eq!(
        got["sha256"].as_str().unwrap(),
        sha256_of_dir(&base)["model.safetensors"]
    );
}
