//! Security hardening (issue 10): a name's kind is fixed by its first version, id prefixes
//! resolve among what the caller may read, and a manifest's paths cannot collide on disk.

use clreg_types::{ArtifactKind, CommitArtifact, FileEntry};
use serde_json::json;

use crate::support::{TestServer, assert_error, tiny_model};

#[tokio::test]
async fn a_contributor_cannot_take_over_a_base_name_with_a_checkpoint() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "bob", "contributor").await;
    alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    let files = bob.upload_dir(&tiny_model(root, "ft", 2, None)).await;
    let take_over = CommitArtifact {
        name: "llama".into(),
        kind: ArtifactKind::Checkpoint,
        base: Some("lab/llama:1".into()),
        files: files.clone(),
        parents: vec![],
        description: String::new(),
    };
    let refused = bob.commit("lab", &take_over).await;
    assert_error(&refused, 409, "conflict");
    assert!(
        refused.1["message"].as_str().unwrap().contains("is a base"),
        "{}",
        refused.1
    );
    // `latest` still names the owner's base; bob may push under a name of his own.
    let (_, latest) = alice
        .get("/collaborations/lab/artifacts/llama/latest")
        .await;
    assert_eq!(
        (latest["version"].as_i64(), latest["kind"].as_str()),
        (Some(1), Some("base"))
    );
    let (status, _) = bob
        .commit(
            "lab",
            &CommitArtifact {
                name: "llama-ft".into(),
                ..take_over
            },
        )
        .await;
    assert_eq!(status, 201);
    // A base's new version needs the right to push bases.
    let v2 = CommitArtifact {
        name: "llama".into(),
        kind: ArtifactKind::Base,
        base: None,
        files,
        parents: vec![],
        description: String::new(),
    };
    assert_error(&bob.commit("lab", &v2).await, 403, "forbidden");
    let (status, body) = alice.commit("lab", &v2).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["artifact"]["version"], 2);
}

#[tokio::test]
async fn an_id_prefix_resolves_among_the_artifacts_the_caller_may_read() {
    use clreg_server::db::entities::collaboration;
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let olga = server.user("olga").await;
    alice.create_collab("lab", "semi").await;
    olga.create_collab("other", "semi").await;
    let mine = alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    let id = mine["id"].as_str().unwrap().to_string();
    // Olga's collaboration holds an artifact whose id shares the first 12 hex digits (ids
    // are sha256 of manifests, so the row is written directly: a collision of that length
    // among real manifests would take ~2^48 of them).
    let other = collaboration::Entity::find()
        .filter(collaboration::Column::Name.eq("other"))
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    let mut twin = format!("{}{}", &id[..12], "f".repeat(52));
    if twin == id {
        twin = format!("{}{}", &id[..12], "e".repeat(52));
    }
    let mine_row = clreg_server::db::entities::artifact::Entity::find_by_id(&id)
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    clreg_server::db::entities::artifact::ActiveModel {
        id: sea_orm::Set(twin.clone()),
        collab_id: sea_orm::Set(other.id),
        name: sea_orm::Set("twin".into()),
        version: sea_orm::Set(1),
        kind: sea_orm::Set("base".into()),
        base_id: sea_orm::Set(None),
        description: sea_orm::Set(String::new()),
        metadata: sea_orm::Set(mine_row.metadata.clone()),
        created_by: sea_orm::Set(1),
        created_at: sea_orm::Set(chrono::Utc::now()),
    }
    .insert(&server.state.db)
    .await
    .unwrap();
    // Each sees only their own under the shared prefix: no ambiguity that would tell Alice
    // Olga's artifact exists.
    let (status, found) = alice.get(&format!("/artifacts/{}", &id[..12])).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], id.as_str());
    let (status, found) = olga.get(&format!("/artifacts/{}", &id[..12])).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], twin.as_str());
    assert_error(
        &olga.get(&format!("/artifacts/{id}")).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn manifest_paths_that_would_collide_on_disk_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let digest = alice.upload(b"{}", 1 << 20).await;
    let entry = FileEntry { digest, size: 2 };
    let commit = |paths: &[&str]| CommitArtifact {
        name: "x".into(),
        kind: ArtifactKind::Base,
        base: None,
        files: paths
            .iter()
            .map(|p| (p.to_string(), entry.clone()))
            .collect(),
        parents: vec![],
        description: String::new(),
    };
    for (paths, needle) in [
        (&["config.json", "Config.json"][..], "differ only by case"),
        (
            &["config.json", "config.json/inner"][..],
            "also the directory",
        ),
        (
            &["config.json", "model.safetensors.partial-1-0"][..],
            ".partial",
        ),
        (&["config.json", "sub/w.partial"][..], ".partial"),
    ] {
        let refused = alice.commit("lab", &commit(paths)).await;
        assert_error(&refused, 400, "invalid_path");
        assert!(
            refused.1["message"].as_str().unwrap().contains(needle),
            "{paths:?}: {}",
            refused.1
        );
    }
    let many: Vec<String> = (0..4097).map(|i| format!("f{i}.json")).collect();
    let refused = alice
        .commit(
            "lab",
            &commit(&many.iter().map(String::as_str).collect::<Vec<_>>()),
        )
        .await;
    assert_error(&refused, 400, "bad_request");
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("at most 4096")
    );
    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(listed, json!([]), "nothing was committed");
}

#[tokio::test]
async fn revoking_keys_ends_tokens_and_a_disabled_user_is_refused() {
    let server = TestServer::start().await;
    let db = &server.state.db;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let by_key = crate::support::Client {
        token: alice.api_key.clone(),
        ..alice.clone()
    };
    assert_eq!(alice.get("/collaborations").await.0, 200);
    assert_eq!(
        by_key.get("/collaborations").await.0,
        200,
        "an API key is a bearer token too"
    );

    assert_eq!(
        clreg_server::admin::revoke_keys(db, "alice").await.unwrap(),
        1
    );
    assert_error(&alice.get("/collaborations").await, 401, "invalid_token");
    assert_error(&by_key.get("/collaborations").await, 401, "invalid_api_key");
    let anon = crate::support::Client::anonymous(&server.url);
    let exchange = |key: String| {
        let anon = anon.clone();
        async move { anon.post("/auth/token", &json!({ "api_key": key })).await }
    };
    assert_error(
        &exchange(alice.api_key.clone().unwrap()).await,
        401,
        "invalid_api_key",
    );
    // A new key gives tokens again (from the next second on: tokens of the revocation's
    // second are refused with the old ones).
    let fresh = clreg_server::admin::create_key(db, "alice").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = exchange(fresh).await;
    assert_eq!(status, 200, "{body}");

    clreg_server::admin::set_disabled(db, "bob", true)
        .await
        .unwrap();
    assert_error(&bob.get("/collaborations").await, 401, "invalid_token");
    assert_error(
        &exchange(bob.api_key.clone().unwrap()).await,
        401,
        "invalid_api_key",
    );
    clreg_server::admin::set_disabled(db, "bob", false)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = exchange(bob.api_key.clone().unwrap()).await;
    assert_eq!(status, 200, "enabled again: {body}");
    assert_error(&bob.get("/collaborations").await, 401, "invalid_token");

    // Tokens live at most a day.
    let config = clreg_server::Config {
        token_ttl_secs: 2 * 24 * 3600,
        ..Default::default()
    };
    assert!(config.check().unwrap_err().to_string().contains("a day"));
}

#[tokio::test]
async fn upload_sessions_are_capped_per_user_and_end_when_idle() {
    let server = TestServer::start_with(|c| {
        c.max_uploads_per_user = 2;
        c.upload_idle_secs = 1;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let first = alice.open_upload().await;
    let second = alice.open_upload().await;
    let refused = alice
        .send(alice.request(reqwest::Method::POST, "/blobs/uploads"))
        .await;
    assert_error(&refused, 429, "too_many_uploads");
    assert!(refused.1["message"].as_str().unwrap().contains("abort"));
    // The cap is per user; aborting one frees a place.
    let _bobs = bob.open_upload().await;
    let (status, _) = alice.delete(&format!("/blobs/uploads/{first}")).await;
    assert!(status.is_success(), "{status}");
    let third = alice.open_upload().await;

    // Data keeps a session alive; silence past upload_idle_secs ends it, staged bytes too.
    let (status, body) = alice.patch(&second, 0, b"abc".to_vec()).await;
    assert!(status.is_success(), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let swept = clreg_server::uploads::sweep_expired(&server.state)
        .await
        .unwrap();
    assert_eq!(swept, 3, "alice's two and bob's one");
    for id in [&second, &third] {
        assert_error(
            &alice.patch(id, 3, b"d".to_vec()).await,
            404,
            "upload_unknown",
        );
    }
    let staged = server.state.config.data_dir.join("store/uploads");
    if staged.exists() {
        assert!(
            crate::support::walk(&staged).is_empty(),
            "staged bytes remain"
        );
    }
    let _fresh = alice.open_upload().await;
}

#[tokio::test]
async fn unreferenced_blobs_are_collected_after_their_grace_and_nothing_else() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    let model = tiny_model(root, "base", 1, None);
    let pushed = alice
        .push("lab", "llama", ArtifactKind::Base, None, &model)
        .await;
    let content = r#"[{"prompt": "p", "answer": "a"}]"#;
    let stored = alice.upload(content.as_bytes(), 1 << 20).await;
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "d", "task": "t", "metric": "exact", "digest": stored,
                    "size": content.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let orphan = alice.upload(b"uploaded, never committed", 1 << 20).await;

    // Within the grace period (the upload is recent), nothing is a candidate.
    let week = chrono::Duration::days(7);
    let report = clreg_server::gc::collect(&server.state, week, false)
        .await
        .unwrap();
    assert!(report.blobs.is_empty(), "{report:?}");
    // Past it: only the orphan. A dry run deletes nothing.
    let report = clreg_server::gc::collect(&server.state, chrono::Duration::zero(), false)
        .await
        .unwrap();
    assert_eq!(report.blobs, vec![(orphan.hex(), 25)]);
    assert_eq!(report.deleted, 0);
    assert_eq!(alice.head(&format!("/blobs/{orphan}")).await, 200);
    let report = clreg_server::gc::collect(&server.state, chrono::Duration::zero(), true)
        .await
        .unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(alice.head(&format!("/blobs/{orphan}")).await, 404);
    let store = server.state.config.data_dir.join("store");
    if store.exists() {
        assert!(
            !store.join(orphan.object_key()).exists(),
            "the object is gone"
        );
    }
    // What is referenced stays readable.
    let id = pushed["id"].as_str().unwrap();
    let (status, _) = alice
        .get(&format!("/artifacts/{id}/files/model.safetensors"))
        .await;
    assert_ne!(status, 404);
    let (status, _) = alice
        .get(&format!("/collaborations/lab/datasets/{stored}/content"))
        .await;
    assert_eq!(status, 200);
    let (_, ledger) = alice.get("/collaborations/lab/ledger").await;
    assert!(ledger.is_array());
    // Uploading it again brings it back.
    assert_eq!(
        alice.upload(b"uploaded, never committed", 1 << 20).await,
        orphan
    );
    assert_eq!(alice.head(&format!("/blobs/{orphan}")).await, 200);
}

#[tokio::test]
async fn a_duplicate_dataset_is_refused_before_its_content_is_read() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    let good = r#"[{"prompt": "p", "answer": "a"}]"#;
    let digest = alice.upload(good.as_bytes(), 1 << 20).await;
    let register = |digest: &clreg_types::Digest, size: usize| {
        json!({"name": "d", "task": "t", "metric": "exact", "digest": digest,
               "size": size, "examples": 1, "store_content": true})
    };
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &register(&digest, good.len()),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_error(
        &alice
            .post(
                "/collaborations/lab/datasets",
                &register(&digest, good.len()),
            )
            .await,
        409,
        "conflict",
    );
    // Not TRACE at all: a manifest-only duplicate of it is refused as a duplicate, without
    // validating (or reading) anything.
    let bad = b"not json at all";
    let bad_digest = alice.upload(bad, 1 << 20).await;
    let manifest = json!({"name": "b", "task": "t", "metric": "exact", "digest": bad_digest,
                          "size": bad.len(), "examples": 1, "store_content": false});
    let (status, body) = alice.post("/collaborations/lab/datasets", &manifest).await;
    assert_eq!(status, 201, "{body}");
    assert_error(
        &alice
            .post(
                "/collaborations/lab/datasets",
                &register(&bad_digest, bad.len()),
            )
            .await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn the_content_of_a_semi_dataset_cannot_be_published_as_an_artifact_file() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    alice.create_collab("public", "full").await;
    let content = r#"[{"prompt": "patient 7", "answer": "diagnosis"}]"#;
    let digest = alice.upload(content.as_bytes(), 1 << 20).await;
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "notes", "task": "t", "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 1, "store_content": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut files = alice.upload_dir(&tiny_model(root, "base", 1, None)).await;
    files.insert(
        "notes.json".into(),
        FileEntry {
            digest: digest.clone(),
            size: content.len() as u64,
        },
    );
    let commit = CommitArtifact {
        name: "llama".into(),
        kind: ArtifactKind::Base,
        base: None,
        files,
        parents: vec![],
        description: String::new(),
    };
    for collab in ["lab", "public"] {
        let refused = alice.commit(collab, &commit).await;
        assert_error(&refused, 403, "policy_forbids");
        assert!(
            refused.1["message"].as_str().unwrap().contains("`lab`"),
            "{}",
            refused.1
        );
    }
}

#[tokio::test]
async fn a_collaboration_cannot_hold_more_than_its_quota() {
    let server = TestServer::start_with(|c| c.collab_quota_bytes = 600_000).await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    alice.create_collab("other", "full").await;
    let base = tiny_model(root, "base", 1, None);
    let size: u64 = crate::support::walk(&base)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        size < 600_000 && 2 * size > 600_000,
        "the model is {size} bytes"
    );
    alice
        .push("lab", "llama", ArtifactKind::Base, None, &base)
        .await;
    // The same blobs again cost nothing.
    let same = alice.upload_dir(&base).await;
    let again = CommitArtifact {
        name: "llama-copy".into(),
        kind: ArtifactKind::Base,
        base: None,
        files: same,
        parents: vec![],
        description: String::new(),
    };
    let (status, body) = alice.commit("lab", &again).await;
    assert_eq!(status, 201, "{body}");
    // Another model's bytes do not fit; in another collaboration they do.
    let files = alice.upload_dir(&tiny_model(root, "other", 2, None)).await;
    let second = CommitArtifact {
        name: "second".into(),
        files,
        ..again
    };
    let refused = alice.commit("lab", &second).await;
    assert_error(&refused, 413, "quota_exceeded");
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("collab_quota_bytes")
    );
    let (status, body) = alice.commit("other", &second).await;
    assert_eq!(status, 201, "{body}");
    // Stored dataset content counts too.
    let content = "x".repeat(200_000);
    let data = format!(r#"[{{"prompt": "{content}", "answer": "a"}}]"#);
    let digest = alice.upload(data.as_bytes(), 1 << 20).await;
    let refused = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "big", "task": "t", "metric": "exact", "digest": digest,
                    "size": data.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_error(&refused, 413, "quota_exceeded");
}

#[tokio::test]
async fn slow_header_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let server = TestServer::start_with(|c| {
        c.header_read_timeout_secs = 1;
        c.max_connections = 3;
    })
    .await;
    let addr = server.url.trim_start_matches("http://").to_string();
    /// Reads until the server closes the connection; the bytes it sent.
    async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    }
    // Half a request, then silence: the server ends it after the header-read timeout.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), until_closed(&mut slow))
        .await
        .expect("the server kept a slow client past 10 s");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(
        answer.is_empty() || String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Three connections held open: a fourth is closed at once, without an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let refused = tokio::time::timeout(
        std::time::Duration::from_millis(800),
        until_closed(&mut extra),
    )
    .await
    .expect("the connection over the limit was not closed at once");
    assert!(refused.is_empty(), "{}", String::from_utf8_lossy(&refused));
    drop(held);
    // Once they go, requests are served again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, _) = crate::support::Client::anonymous(&server.url)
        .get("/healthz")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_requests_are_limited_per_key_and_per_address() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let anon = crate::support::Client::anonymous(&server.url);
    let key = alice.api_key.clone().unwrap();
    let exchange = |key: String| {
        let anon = anon.clone();
        async move {
            let response = anon
                .request(reqwest::Method::POST, "/auth/token")
                .json(&json!({ "api_key": key }))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.headers().get("retry-after").is_some(),
            )
        }
    };
    // server.user() made the first of ten a minute for this key.
    for _ in 0..9 {
        assert_eq!(exchange(key.clone()).await.0, 200);
    }
    assert_eq!(exchange(key.clone()).await, (429, true));
    // Another key is not affected.
    let other = clreg_server::admin::create_key(&server.state.db, "alice")
        .await
        .unwrap();
    assert_eq!(exchange(other).await.0, 200);

    // Per address: three a minute here; guessing keys counts too.
    let strict = TestServer::start_with(|c| c.token_requests_per_minute = 3).await;
    let bob = strict.user("bob").await;
    let anon = crate::support::Client::anonymous(&strict.url);
    let guess = |n: u32| {
        let anon = anon.clone();
        async move {
            anon.post(
                "/auth/token",
                &json!({ "api_key": format!("clreg_guess{n}") }),
            )
            .await
        }
    };
    assert_error(&guess(1).await, 401, "invalid_api_key");
    assert_error(&guess(2).await, 401, "invalid_api_key");
    assert_error(&guess(3).await, 429, "too_many_requests");
    let refused = anon
        .post(
            "/auth/token",
            &json!({ "api_key": bob.api_key.clone().unwrap() }),
        )
        .await;
    assert_error(&refused, 429, "too_many_requests");
}

#[tokio::test]
async fn an_adapter_holding_a_nan_is_refused_at_commit() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    let lora =
        crate::support::tiny_adapter(root, "lora", 2, &clreg_engine::tiny::TinyConfig::default());
    let path = lora.join("adapter_model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // The last weight of the data section.
    let end = bytes.len();
    assert!(end > 8 + n + 4);
    bytes[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let files = alice.upload_dir(&lora).await;
    let refused = alice
        .commit(
            "lab",
            &CommitArtifact {
                name: "lora".into(),
                kind: ArtifactKind::Adapter,
                base: Some("lab/llama".into()),
                files,
                parents: vec![],
                description: String::new(),
            },
        )
        .await;
    assert_error(&refused, 422, "non_finite_weights");
}

/// Sets element `element` of tensor `tensor` in the safetensors file at `path` to `value`.
fn poison(path: &std::path::Path, tensor: &str, element: usize, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let info = clreg_engine::safetensors_header::inspect_bytes(&bytes, "x").unwrap();
    let t = info.get(tensor).unwrap();
    assert_eq!(t.dtype, "F32");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + n + t.begin as usize + 4 * element;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn checkpoints_holding_a_nan_or_infinity_are_refused_by_the_upload_scan() {
    use clreg_server::db::entities::blob;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, PaginatorTrait, Set};

    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    let tensor = "model.layers.0.mlp.down_proj.weight";
    let commit = |name: &str, kind: ArtifactKind, files| CommitArtifact {
        name: name.into(),
        kind,
        base: (kind != ArtifactKind::Base).then(|| "lab/llama".into()),
        files,
        parents: vec![],
        description: String::new(),
    };

    // A fine-tuned checkpoint with a NaN in the middle of one tensor, and a base with an
    // infinity: each refused at commit, naming the tensor and the element, nothing stored.
    let ft = tiny_model(root, "ft", 2, None);
    poison(&ft.join("model.safetensors"), tensor, 5, f32::NAN);
    let files = alice.upload_dir(&ft).await;
    let refused = alice
        .commit(
            "lab",
            &commit("ft", ArtifactKind::Checkpoint, files.clone()),
        )
        .await;
    assert_error(&refused, 422, "non_finite_weights");
    let message = refused.1["message"].as_str().unwrap();
    assert!(
        message.contains(tensor) && message.contains("element 5"),
        "{message}"
    );
    let inf = tiny_model(root, "inf", 3, None);
    poison(&inf.join("model.safetensors"), tensor, 0, f32::NEG_INFINITY);
    let inf_files = alice.upload_dir(&inf).await;
    let refused = alice
        .commit("lab", &commit("other", ArtifactKind::Base, inf_files))
        .await;
    assert_error(&refused, 422, "non_finite_weights");
    assert_eq!(
        clreg_server::db::entities::artifact::Entity::find()
            .count(&server.state.db)
            .await
            .unwrap(),
        1,
        "only the clean base"
    );

    // A blob stored before uploads were scanned (no check recorded) is read whole at commit.
    let weights = &files["model.safetensors"].digest;
    let row = blob::Entity::find_by_id(weights.hex())
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.weights_check, Some(blob::WeightsCheck::NonFinite));
    let mut active = row.into_active_model();
    active.weights_check = Set(None);
    active.non_finite_tensor = Set(None);
    active.non_finite_element = Set(None);
    active.update(&server.state.db).await.unwrap();
    let refused = alice
        .commit("lab", &commit("ft", ArtifactKind::Checkpoint, files))
        .await;
    assert_error(&refused, 422, "non_finite_weights");
    let message = refused.1["message"].as_str().unwrap();
    assert!(
        message.contains(tensor) && message.contains("element 5"),
        "{message}"
    );

    // Clean weights pass, and were recorded as checked.
    let clean = alice.upload_dir(&tiny_model(root, "clean", 4, None)).await;
    let clean_row = blob::Entity::find_by_id(clean["model.safetensors"].digest.hex())
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(clean_row.weights_check, Some(blob::WeightsCheck::Finite));
    let config_row = blob::Entity::find_by_id(clean["config.json"].digest.hex())
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        config_row.weights_check,
        Some(blob::WeightsCheck::NotSafetensors)
    );
    let (status, _) = alice
        .commit("lab", &commit("clean", ArtifactKind::Checkpoint, clean))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_purge_that_fails_is_retried_and_recorded_only_once_the_bytes_are_gone() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("open", "full").await;
    let content = br#"[{"prompt": "2+2?", "answer": "4"}]"#;
    let digest = alice.upload(content, 1 << 20).await;
    let (status, body) = alice
        .post(
            "/collaborations/open/datasets",
            &json!({"name": "d", "task": "t", "metric": "accuracy", "digest": digest,
                    "size": content.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // The store cannot delete the object (something else sits at its key): the tightening
    // still takes access away at once, but no purge is recorded and the purge stays queued.
    let object = server.object_file(&digest);
    std::fs::remove_file(&object).unwrap();
    std::fs::create_dir(&object).unwrap();
    std::fs::write(object.join("blocker"), b"x").unwrap();
    let (status, body) = alice
        .post("/collaborations/open/policy", &json!({"policy": "semi"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let events = |body: serde_json::Value| -> Vec<(String, serde_json::Value)> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["payload"].clone(),
                )
            })
            .collect()
    };
    let (_, ledger) = alice.get("/collaborations/open/ledger").await;
    let kinds = events(ledger);
    let tightened = &kinds.last().unwrap();
    assert_eq!(tightened.0, "policy.tightened");
    assert_eq!(tightened.1["purge_queued"], json!([digest.hex()]));
    let pending = clreg_server::purge::pending(&server.state).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert!(pending[0].last_error.is_some());
    assert_error(
        &alice
            .get(&format!("/collaborations/open/datasets/{digest}/content"))
            .await,
        403,
        "policy_forbids",
    );

    // Once the store can delete it, the next run does, and records it.
    std::fs::remove_dir_all(&object).unwrap();
    std::fs::write(&object, content).unwrap();
    assert_eq!(clreg_server::purge::run(&server.state).await.unwrap(), 1);
    assert!(!object.exists(), "the bytes are gone");
    assert!(
        clreg_server::purge::pending(&server.state)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, ledger) = alice.get("/collaborations/open/ledger").await;
    let kinds = events(ledger);
    let purged = kinds.last().unwrap();
    assert_eq!(purged.0, "dataset.purged");
    assert_eq!(
        purged.1,
        json!({"digest": digest.hex(), "blob_deleted": true})
    );
    assert_eq!(alice.head(&format!("/blobs/{digest}")).await, 404);
    // Nothing left to do: a further run records nothing more.
    assert_eq!(clreg_server::purge::run(&server.state).await.unwrap(), 0);
}

#[tokio::test]
async fn blobs_over_the_stores_copy_limit_are_moved_by_streaming() {
    // S3 copies at most 5 GiB server-side; here the limit is 1 MiB, so a 3 MiB upload (and,
    // on the local store, a rename) must still land intact under its blob key.
    let server = TestServer::start_with(|c| c.s3.max_copy_size = Some(1 << 20)).await;
    let alice = server.user("alice").await;
    let bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = alice.upload(&bytes, 1 << 20).await;
    assert_eq!(std::fs::read(server.object_file(&digest)).unwrap(), bytes);
    let small = alice.upload(b"small", 1 << 20).await;
    assert_eq!(std::fs::read(server.object_file(&small)).unwrap(), b"small");
    // Nothing is left at the staging keys.
    let staged = walk_if_exists(&server.store_root().join("uploads"));
    assert!(staged.is_empty(), "{staged:?}");
}

fn walk_if_exists(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    if dir.exists() {
        crate::support::walk(dir)
    } else {
        Vec::new()
    }
}

#[tokio::test]
async fn an_upload_goes_on_at_another_replica_and_gc_removes_what_dead_sessions_left() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    // A safetensors file with a NaN in its second tensor, so the scan's state must travel too.
    let mut bytes = clreg_tests::safetensors_bytes(
        r#"{"a":{"dtype":"F32","shape":[3000],"data_offsets":[0,12000]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12000,12008]}}"#,
        12008,
    );
    let nan_at = bytes.len() - 4;
    bytes[nan_at..].copy_from_slice(&f32::NAN.to_le_bytes());
    let digest = clreg_tests::digest_of(&bytes);

    let id = alice.open_upload().await;
    // Bytes 0..5000 reach this server, which then goes away; the rest reach a replica, in a
    // chunk that splits a float element.
    let (status, _) = alice.patch(&id, 0, bytes[..5001].to_vec()).await;
    assert_eq!(status, 202);
    let replica = server.replica().await;
    let at_replica = replica.client(&alice);
    let (status, body) = at_replica.get(&format!("/blobs/uploads/{id}")).await;
    assert_eq!(
        (status.as_u16(), body["offset"].as_u64()),
        (200, Some(5001))
    );
    // A chunk that starts at the wrong byte is refused with where the upload stands.
    assert_error(
        &at_replica.patch(&id, 4000, bytes[4000..].to_vec()).await,
        416,
        "upload_out_of_order",
    );
    let (status, _) = at_replica.patch(&id, 5001, bytes[5001..].to_vec()).await;
    assert_eq!(status, 202);
    // Finishing back at the first server: it has nothing of the session but what is stored.
    let (status, body) = alice.finish(&id, &digest.to_string()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(std::fs::read(server.object_file(&digest)).unwrap(), bytes);
    use sea_orm::EntityTrait as _;
    let stored = clreg_server::db::entities::blob::Entity::find_by_id(digest.hex())
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.non_finite_tensor.as_deref(), Some("b"));
    assert_eq!(stored.non_finite_element, Some(1));
    assert!(
        walk_if_exists(&server.store_root().join("uploads")).is_empty(),
        "a finished upload leaves no chunks"
    );

    // Two requests race to send the same bytes (a client retrying at another replica while the
    // first still reads): one commits, the other is refused, and the blob is whole.
    let id = alice.open_upload().await;
    let other: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (a, b) = tokio::join!(
        alice.patch(&id, 0, other[..200_000].to_vec()),
        at_replica.patch(&id, 0, other[..200_000].to_vec()),
    );
    let mut codes = [a.0.as_u16(), b.0.as_u16()];
    codes.sort();
    assert!(
        codes == [202, 409] || codes == [202, 416],
        "{codes:?} {a:?} {b:?}"
    );
    let (status, _) = at_replica
        .patch(&id, 200_000, other[200_000..].to_vec())
        .await;
    assert_eq!(status, 202);
    let other_digest = clreg_tests::digest_of(&other);
    let (status, _) = at_replica.finish(&id, &other_digest.to_string()).await;
    assert_eq!(status, 201);
    assert_eq!(
        std::fs::read(server.object_file(&other_digest)).unwrap(),
        other
    );

    // A session whose row is gone but whose chunk stayed (a crash between the two), an hour
    // old: gc reports it in a dry run and removes it when applied; a live session's chunk is
    // untouched.
    let live = alice.open_upload().await;
    let (status, _) = alice.patch(&live, 0, vec![1u8; 100]).await;
    assert_eq!(status, 202);
    let dead = uuid::Uuid::new_v4();
    let stray = server
        .store_root()
        .join(format!("uploads/{dead}/00000000000000000000-x"));
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"partial bytes").unwrap();
    let old_part = server
        .store_root()
        .join(format!("uploads/{}#1", uuid::Uuid::new_v4()));
    std::fs::write(&old_part, b"a part file of the old layout").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for path in [stray.parent().unwrap(), &stray, &old_part] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let s3 = server.state.local_store_dir().is_none();
    let grace = chrono::Duration::days(7);
    let dry = clreg_server::gc::collect(&server.state, grace, false)
        .await
        .unwrap();
    // The in-process S3 server dates objects by their files, but lists only objects (not the
    // old layout's part files, which only a local store made).
    assert_eq!(dry.stale_parts, if s3 { 1 } else { 2 });
    assert!(stray.exists());
    let applied = clreg_server::gc::collect(&server.state, grace, true)
        .await
        .unwrap();
    assert_eq!(applied.stale_parts, dry.stale_parts);
    assert!(!stray.exists());
    let (status, body) = alice.get(&format!("/blobs/uploads/{live}")).await;
    assert_eq!((status.as_u16(), body["offset"].as_u64()), (200, Some(100)));
}

#[tokio::test]
async fn dataset_counts_past_the_databases_range_are_refused_not_changed() {
    // Found by schemathesis: a declared size of 2^63 was stored as 2^63 - 1.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let digest = format!("sha256:{}", "0".repeat(64));
    for (size, examples) in [(1u64 << 63, 1u64), (1, u64::MAX)] {
        let refused = alice
            .post(
                "/collaborations/lab/datasets",
                &json!({"name": "d", "task": "t", "metric": "accuracy", "digest": digest,
                        "size": size, "examples": examples}),
            )
            .await;
        assert_error(&refused, 400, "bad_request");
    }
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "d", "task": "t", "metric": "accuracy", "digest": digest,
                    "size": i64::MAX, "examples": 3}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], i64::MAX);
}

#[tokio::test]
async fn a_method_a_route_does_not_serve_gets_405_with_allow() {
    // Found by schemathesis: TRACE on a known route was answered 403 "no authorization rule".
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let response = alice
        .request(reqwest::Method::PUT, "/collaborations")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn numbers_with_a_plus_sign_are_refused_where_the_api_documents_digits() {
    // Rust's integer parsing takes `+1`; the API documents digits only.
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    assert_eq!(alice.get("/artifacts/lab%2Fllama:1").await.0, 200);
    assert_error(
        &alice.get("/artifacts/lab%2Fllama:+1").await,
        400,
        "bad_request",
    );
    let id = alice.open_upload().await;
    let refused = alice
        .send(
            alice
                .request(reqwest::Method::PATCH, &format!("/blobs/uploads/{id}"))
                .header("upload-offset", "+0")
                .body(vec![1u8, 2, 3]),
        )
        .await;
    assert_error(&refused, 400, "bad_request");
}

#[tokio::test]
async fn readiness_fails_while_the_object_store_does_not_answer() {
    // An S3 endpoint nothing listens on (port 9, discard): the database answers, the store not.
    let server = TestServer::start_with(|c| {
        c.store = Some("s3://unreachable/prefix".into());
        c.s3.endpoint = Some("http://127.0.0.1:9".into());
        c.s3.region = Some("us-east-1".into());
        c.s3.access_key_id = Some("k".into());
        c.s3.secret_access_key = Some("s".into());
        c.s3.allow_http = true;
    })
    .await;
    let anonymous = crate::support::Client::anonymous(&server.url);
    let (status, _) = anonymous.get("/healthz").await;
    assert_eq!(status, 200, "alive, though not ready");
    let refused = anonymous.get("/readyz").await;
    assert_error(&refused, 503, "busy");
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("object store"),
        "{}",
        refused.1
    );
}
