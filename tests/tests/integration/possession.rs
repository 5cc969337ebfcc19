//! Proof of possession: a blob may be named in a manifest or a dataset registration only by a
//! caller who uploaded its bytes or may already read them. Knowing a digest is not enough:
//! digests are shown to auditors and consumers (manifests, dataset lists, lineage, the ledger).

use std::collections::BTreeMap;

use clreg_types::{ArtifactKind, CommitArtifact, Digest, FileEntry};
use reqwest::Method;
use serde_json::json;

use crate::support::{Client, TestServer, assert_error, tiny_model};

const TRACE: &str = r#"[{"prompt": "Diagnosis of: chest pain", "answer": "SECRET-angina"}]"#;

/// A manifest of a base model from `dir`'s files whose `extra` file names `digest`.
fn with_extra(files: &BTreeMap<String, FileEntry>, digest: &Digest, size: u64) -> CommitArtifact {
    let mut files = files.clone();
    files.insert(
        "stolen.bin".to_string(),
        FileEntry {
            digest: digest.clone(),
            size,
        },
    );
    CommitArtifact {
        name: "loot".to_string(),
        kind: ArtifactKind::Base,
        base: None,
        files,
        parents: vec![],
        description: String::new(),
    }
}

/// `user` tries every way of naming `digest` it does not hold; each is refused as if the blob
/// did not exist, and nothing is stored.
async fn cannot_name(
    user: &Client,
    own: &str,
    files: &BTreeMap<String, FileEntry>,
    digest: &Digest,
    size: u64,
) {
    assert_eq!(
        user.head(&format!("/blobs/{digest}")).await,
        404,
        "HEAD tells an outsider a blob exists"
    );
    let refused = user.commit(own, &with_extra(files, digest, size)).await;
    assert_error(&refused, 404, "blob_unknown");
    let message = refused.1["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!message.contains(&size.to_string()), "{message}");
    // A wrong size gets the same answer: sizes are not to be probed either.
    assert_error(
        &user.commit(own, &with_extra(files, digest, size + 1)).await,
        404,
        "blob_unknown",
    );
    assert_error(
        &user
            .post(
                &format!("/collaborations/{own}/datasets"),
                &json!({"name": "loot", "task": "t", "metric": "exact", "digest": digest,
                        "size": size, "examples": 1, "store_content": true}),
            )
            .await,
        404,
        "blob_unknown",
    );
    let (_, listed) = user.get(&format!("/collaborations/{own}/artifacts")).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    let (_, datasets) = user.get(&format!("/collaborations/{own}/datasets")).await;
    assert_eq!(datasets.as_array().map(Vec::len), Some(0), "{datasets}");
    assert_error(
        &user.get(&format!("/blobs/{digest}")).await,
        404,
        "blob_unknown",
    );
}

#[tokio::test]
async fn knowing_a_digest_gives_no_access_to_its_bytes() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("clinic", "full").await;
    let weights = tiny_model(root, "secret-model", 7, None);
    let secret_model = alice
        .push("clinic", "secret", ArtifactKind::Base, None, &weights)
        .await;
    // The weights (the config is the same for every tiny model, so others hold it too).
    let model_file = secret_model["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .unwrap();
    let model_digest: Digest = model_file["digest"].as_str().unwrap().parse().unwrap();
    let model_size = model_file["size"].as_u64().unwrap();
    let data_digest = alice.upload(TRACE.as_bytes(), 1 << 20).await;
    let (status, body) = alice
        .post(
            "/collaborations/clinic/datasets",
            &json!({"name": "notes", "task": "dx", "metric": "exact", "digest": data_digest,
                    "size": TRACE.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let auditor = server.user("audrey").await;
    let consumer = server.user("conrad").await;
    let removed = server.user("remy").await;
    let outsider = server.user("olga").await;
    alice.add_member("clinic", "audrey", "auditor").await;
    alice.add_member("clinic", "conrad", "consumer").await;
    alice.add_member("clinic", "remy", "contributor").await;
    let (status, body) = alice.delete("/collaborations/clinic/members/remy").await;
    assert_eq!(status, 204, "{body}");

    // Every digest is in plain sight of the auditor.
    let (_, ledger) = auditor.get("/collaborations/clinic/ledger").await;
    let ledger = ledger.to_string();
    assert!(ledger.contains(&model_digest.hex()) && ledger.contains(&data_digest.hex()));

    let model_dir = tiny_model(root, "own-model", 8, None);
    for (user, name, targets) in [
        (
            &auditor,
            "audrey",
            vec![
                (&model_digest, model_size),
                (&data_digest, TRACE.len() as u64),
            ],
        ),
        // A consumer may download the model (so may name it) but never dataset content.
        (
            &consumer,
            "conrad",
            vec![(&data_digest, TRACE.len() as u64)],
        ),
        (
            &removed,
            "remy",
            vec![
                (&model_digest, model_size),
                (&data_digest, TRACE.len() as u64),
            ],
        ),
        (
            &outsider,
            "olga",
            vec![
                (&model_digest, model_size),
                (&data_digest, TRACE.len() as u64),
            ],
        ),
    ] {
        let own = format!("own-{name}");
        user.create_collab(&own, "full").await;
        let files = user.upload_dir(&model_dir).await;
        for (digest, size) in targets {
            cannot_name(user, &own, &files, digest, size).await;
        }
    }

    // The consumer reads the model already, so naming it leaks nothing and is allowed.
    consumer.create_collab("conrad-2", "full").await;
    let files = consumer.upload_dir(&model_dir).await;
    let (status, body) = consumer
        .commit("conrad-2", &with_extra(&files, &model_digest, model_size))
        .await;
    assert_eq!(status, 201, "{body}");

    // Whoever uploads the bytes themselves (deduplicated into the same blob) proves possession.
    let outsider_digest = outsider.upload(TRACE.as_bytes(), 7).await;
    assert_eq!(outsider_digest, data_digest);
    let probe = outsider
        .request(Method::HEAD, &format!("/blobs/{data_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(
        probe.headers()["content-length"],
        TRACE.len().to_string().as_str()
    );
    let (status, body) = outsider
        .post(
            "/collaborations/own-olga/datasets",
            &json!({"name": "mine", "task": "dx", "metric": "exact", "digest": data_digest,
                    "size": TRACE.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The uploader still sees their own blob.
    assert_eq!(alice.head(&format!("/blobs/{model_digest}")).await, 200);
}
