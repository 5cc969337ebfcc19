//! The hostile-file corpus (tests/corpus/hostile, written by its make.py): every file is refused
//! with the code expected.json gives it, and nothing is stored — no artifact, dataset or job
//! row, no GGUF import output. Safetensors and PEFT files go through a commit, TRACE files
//! through a dataset registration, YAML recipes through a job submission, GGUF files through the
//! engine's import (what `clreg local import-gguf` runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clreg_server::db::entities::{artifact, dataset, job};
use clreg_types::{ArtifactKind, CommitArtifact};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

use crate::support::{TestServer, assert_error, tiny_model};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile")
}

fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(corpus().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every file under the corpus is one of expected.json's entries (a file or an adapter
/// directory), so nothing is added without its expectation.
#[test]
fn every_corpus_file_has_an_expectation() {
    let expected = expected();
    assert!(expected.len() >= 30, "{} entries", expected.len());
    for path in crate::support::walk(&corpus()) {
        let rel = path
            .strip_prefix(corpus())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel == "expected.json" || rel == "make.py" {
            continue;
        }
        let listed = expected.contains_key(&rel)
            || Path::new(&rel)
                .parent()
                .is_some_and(|d| expected.contains_key(&*d.to_string_lossy()));
        assert!(listed, "{rel} has no expected code in expected.json");
    }
}

#[tokio::test]
async fn hostile_files_are_refused_with_their_codes_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    let base = tiny_model(root, "base", 1, None);
    alice
        .push("lab", "llama", ArtifactKind::Base, None, &base)
        .await;
    let count = || async {
        let db = &server.state.db;
        (
            artifact::Entity::find().count(db).await.unwrap(),
            dataset::Entity::find().count(db).await.unwrap(),
            job::Entity::find().count(db).await.unwrap(),
        )
    };
    let before = count().await;
    let config = std::fs::read(base.join("config.json")).unwrap();
    let mut seen = 0;
    let mut wrong = Vec::new();
    for (rel, code) in expected() {
        let path = corpus().join(&rel);
        let kind = rel.split('/').next().unwrap();
        let refused = match kind {
            "safetensors" => {
                // A base model whose weights file is the hostile one.
                let dir = root.join("st").join(&rel);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("config.json"), &config).unwrap();
                std::fs::copy(&path, dir.join("model.safetensors")).unwrap();
                let files = alice.upload_dir(&dir).await;
                alice
                    .commit(
                        "lab",
                        &CommitArtifact {
                            name: "hostile".into(),
                            kind: ArtifactKind::Base,
                            base: None,
                            files,
                            parents: vec![],
                            description: String::new(),
                        },
                    )
                    .await
            }
            "peft" => {
                let files = alice.upload_dir(&path).await;
                alice
                    .commit(
                        "lab",
                        &CommitArtifact {
                            name: "hostile-adapter".into(),
                            kind: ArtifactKind::Adapter,
                            base: Some("lab/llama".into()),
                            files,
                            parents: vec![],
                            description: String::new(),
                        },
                    )
                    .await
            }
            "trace" => {
                let bytes = std::fs::read(&path).unwrap();
                let digest = alice.upload(&bytes, 1 << 20).await;
                alice
                    .post(
                        "/collaborations/lab/datasets",
                        &json!({"name": "hostile", "task": "t", "metric": "accuracy",
                                "digest": digest, "size": bytes.len(), "examples": 1,
                                "store_content": true}),
                    )
                    .await
            }
            "yaml" => {
                let recipe = std::fs::read_to_string(&path).unwrap();
                let kind = if rel.contains("/moe_") {
                    "mix"
                } else {
                    "merge"
                };
                alice
                    .post(
                        "/collaborations/lab/jobs",
                        &json!({"kind": kind, "name": "hostile", "recipe": recipe}),
                    )
                    .await
            }
            "gguf" => {
                let out = root.join("gguf-out").join(&rel);
                let result = clreg_engine::gguf::import(
                    &path,
                    &out,
                    candle_core::DType::F32,
                    &|_, _| {},
                    &std::sync::atomic::AtomicBool::new(false),
                );
                match result {
                    Ok(_) => wrong.push(format!("{rel}: imported")),
                    Err(e) if e.code().as_str() != code => wrong.push(format!(
                        "{rel}: expected {code}, got {}: {e}",
                        e.code().as_str()
                    )),
                    Err(_) => {}
                }
                assert!(!out.exists(), "{rel}: the import left {}", out.display());
                seen += 1;
                continue;
            }
            other => panic!("unknown corpus kind {other}"),
        };
        let status = refused.0.as_u16();
        if !(400..500).contains(&status) || refused.1["code"] != code.as_str() {
            wrong.push(format!(
                "{rel}: expected {code}, got {status} {}",
                refused.1
            ));
        } else {
            assert_error(&refused, status, &code);
        }
        assert_eq!(count().await, before, "{rel}: something was stored");
        seen += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(seen >= 30);
}
