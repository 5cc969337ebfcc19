//! Artifacts: push, metadata, versions, references, lineage, download, and every bad input.

use std::collections::BTreeMap;

use clreg_engine::tiny::TinyConfig;
use clreg_types::{ArtifactKind, CommitArtifact, FileEntry, ParentSpec, Relation};
use serde_json::{Value, json};

use crate::support::{
    Client, TestServer, assert_error, safetensors_bytes, tiny_adapter, tiny_model,
};

/// Parameters of the default tiny Llama, counted from its config independently of the engine.
fn tiny_parameters() -> u64 {
    let t = TinyConfig::default();
    let (h, i, l, v) = (
        t.hidden as u64,
        t.intermediate as u64,
        t.layers as u64,
        t.vocab as u64,
    );
    let hd = h / t.heads as u64;
    let kv = t.kv_heads as u64 * hd;
    let attn = h * h + 2 * kv * h + h * h;
    let mlp = 3 * h * i;
    let norms = 2 * h;
    l * (attn + mlp + norms) + v * h + h + if t.tie { 0 } else { v * h }
}

async fn setup(server: &TestServer) -> (Client, Client) {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "bob", "contributor").await;
    (alice, bob)
}

#[tokio::test]
async fn push_base_checkpoint_adapter_with_metadata_versions_and_lineage() {
    let server = TestServer::start().await;
    let (alice, bob) = setup(&server).await;
    let root = server.dir.path();

    let base = alice
        .push(
            "lab",
            "tiny",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    assert_eq!(base["version"], 1);
    assert_eq!(base["metadata"]["architecture"], "LlamaForCausalLM");
    assert_eq!(base["metadata"]["dtype"], "F32");
    assert_eq!(base["metadata"]["parameters"], tiny_parameters());
    let base_id = base["id"].as_str().unwrap().to_string();
    assert_eq!(base_id.len(), 64);

    // A sharded checkpoint (several safetensors + index) from another seed.
    let ckpt_dir = tiny_model(root, "ckpt", 2, Some(40_000));
    assert!(ckpt_dir.join("model.safetensors.index.json").exists());
    let files = bob.upload_dir(&ckpt_dir).await;
    let req = CommitArtifact {
        name: "tiny-ft".into(),
        kind: ArtifactKind::Checkpoint,
        base: Some("lab/tiny".into()),
        files,
        parents: vec![ParentSpec {
            parent: "lab/tiny:1".into(),
            relation: Relation::Finetune,
            method: "fft".into(),
            params: BTreeMap::from([
                ("lr".to_string(), json!(2e-5)),
                ("seed".to_string(), json!(7)),
            ]),
            datasets: vec![],
        }],
        description: "round 1".into(),
    };
    let (status, ckpt) = bob.commit("lab", &req).await;
    assert_eq!(status, 201, "{ckpt}");
    assert_eq!(ckpt["created"], true);
    assert_eq!(
        ckpt["artifact"]["metadata"]["parameters"],
        tiny_parameters()
    );
    // Re-committing the same manifest is idempotent.
    let (status, again) = bob.commit("lab", &req).await;
    assert_eq!(status, 200);
    assert_eq!(again["created"], false);
    assert_eq!(again["artifact"]["id"], ckpt["artifact"]["id"]);

    // A second version under the same name.
    let base2 = alice
        .push(
            "lab",
            "tiny",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base2", 3, None),
        )
        .await;
    assert_eq!(base2["version"], 2);

    // An adapter on version 1, checked against its shapes.
    let adapter = bob
        .push(
            "lab",
            "tiny-lora",
            ArtifactKind::Adapter,
            Some(&base_id[..12]),
            &tiny_adapter(root, "lora", 4, &TinyConfig::default()),
        )
        .await;
    let meta = &adapter["metadata"];
    assert_eq!(meta["adapter"]["r"], 4);
    assert_eq!(
        meta["adapter"]["target_modules"],
        json!(["q_proj", "v_proj"])
    );
    assert_eq!(meta["architecture"], "LlamaForCausalLM");
    let h = 64u64;
    let kv = 32u64;
    assert_eq!(meta["parameters"], 2 * ((4 * h + h * 4) + (4 * h + kv * 4)));

    // References: name, name:version, latest, id, id prefix.
    for r in ["lab/tiny/1", "lab/tiny/latest"] {
        let (status, body) = alice
            .get(&format!("/collaborations/{r}").replacen("/tiny", "/artifacts/tiny", 1))
            .await;
        assert_eq!(status, 200, "{r}: {body}");
    }
    let (_, latest) = alice.get("/collaborations/lab/artifacts/tiny/latest").await;
    assert_eq!(latest["version"], 2);
    let (status, by_prefix) = alice.get(&format!("/artifacts/{}", &base_id[..10])).await;
    assert_eq!(status, 200);
    assert_eq!(by_prefix["id"], base_id.as_str());
    assert_error(&alice.get("/artifacts/zz").await, 400, "bad_request");
    let (_, listed) = alice.get("/collaborations/lab/artifacts?name=tiny").await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Lineage from the base: two children, with the recorded method and params.
    let (status, lineage) = alice.get(&format!("/artifacts/{base_id}/lineage")).await;
    assert_eq!(status, 200, "{lineage}");
    let edges = lineage["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{lineage}");
    let fft = edges.iter().find(|e| e["relation"] == "finetune").unwrap();
    assert_eq!(fft["method"], "fft");
    assert_eq!(fft["params"]["seed"], 7);
    assert!(
        edges
            .iter()
            .any(|e| e["relation"] == "adapter" && e["child"] == adapter["id"])
    );
    let (_, up) = alice
        .get(&format!(
            "/artifacts/{}/lineage",
            adapter["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(up["nodes"].as_array().unwrap().len(), 2);

    // Download a file and a range of it; bytes equal what was pushed.
    let original = std::fs::read(root.join("base/config.json")).unwrap();
    let url = alice.url(&format!("/artifacts/{base_id}/files/config.json"));
    let got = alice
        .http
        .get(&url)
        .bearer_auth(alice.token.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), original.as_slice());
    let got = alice
        .http
        .get(&url)
        .bearer_auth(alice.token.clone().unwrap())
        .header("range", "bytes=2-9")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 206);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &original[2..10]);
    // An end at u64::MAX is the rest of the file, not an overflow (it panicked a debug build).
    let got = alice
        .http
        .get(&url)
        .bearer_auth(alice.token.clone().unwrap())
        .header("range", "bytes=3-18446744073709551615")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 206);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &original[3..]);
    // The blob route serves members who may download.
    let digest = base["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "config.json")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = bob.get(&format!("/blobs/{digest}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn roles_limit_who_pushes_and_downloads() {
    let server = TestServer::start().await;
    let (alice, bob) = setup(&server).await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    alice.add_member("lab", "carol", "consumer").await;
    alice.add_member("lab", "dave", "auditor").await;
    let root = server.dir.path();
    let dir = tiny_model(root, "base", 1, None);

    // Contributors push checkpoints and adapters, not base models; consumers push nothing.
    let files = bob.upload_dir(&dir).await;
    let req = CommitArtifact {
        name: "b".into(),
        kind: ArtifactKind::Base,
        base: None,
        files: files.clone(),
        parents: vec![],
        description: String::new(),
    };
    assert_error(&bob.commit("lab", &req).await, 403, "forbidden");
    assert_error(&carol.commit("lab", &req).await, 403, "forbidden");
    let base = alice.push("lab", "b", ArtifactKind::Base, None, &dir).await;
    let id = base["id"].as_str().unwrap();

    // Auditors read manifests and lineage but never bytes.
    assert_eq!(dave.get(&format!("/artifacts/{id}")).await.0, 200);
    assert_eq!(dave.get(&format!("/artifacts/{id}/lineage")).await.0, 200);
    assert_error(
        &dave
            .get(&format!("/artifacts/{id}/files/config.json"))
            .await,
        403,
        "forbidden",
    );
    let digest = base["files"][0]["digest"].as_str().unwrap();
    assert_error(
        &dave.get(&format!("/blobs/{digest}")).await,
        404,
        "blob_unknown",
    );
    assert_eq!(
        carol
            .get(&format!("/artifacts/{id}/files/config.json"))
            .await
            .0,
        200
    );

    // Outsiders see nothing at all.
    let eve = server.user("eve").await;
    assert_error(
        &eve.get(&format!("/artifacts/{id}")).await,
        404,
        "not_found",
    );
    assert_error(
        &eve.get(&format!("/blobs/{digest}")).await,
        404,
        "blob_unknown",
    );
}

/// Commits `files` (uploading each) as a base model and returns the response.
async fn commit_files(
    client: &Client,
    kind: ArtifactKind,
    base: Option<&str>,
    files: &[(&str, Vec<u8>)],
) -> (reqwest::StatusCode, Value) {
    let mut manifest = BTreeMap::new();
    for (path, bytes) in files {
        let digest = client.upload(bytes, 1 << 20).await;
        manifest.insert(
            path.to_string(),
            FileEntry {
                digest,
                size: bytes.len() as u64,
            },
        );
    }
    let req = CommitArtifact {
        name: "bad".into(),
        kind,
        base: base.map(str::to_string),
        files: manifest,
        parents: vec![],
        description: String::new(),
    };
    client.commit("lab", &req).await
}

#[tokio::test]
async fn bad_safetensors_and_models_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let (alice, _bob) = setup(&server).await;
    let root = server.dir.path();
    let good = tiny_model(root, "good", 1, None);
    let config = std::fs::read(good.join("config.json")).unwrap();
    let weights = std::fs::read(good.join("model.safetensors")).unwrap();

    let one = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated file",
            weights[..weights.len() - 100].to_vec(),
            "invalid_safetensors",
        ),
        (
            "header length beyond the file",
            {
                let mut b = weights.clone();
                b[..8].copy_from_slice(&(weights.len() as u64 * 2).to_le_bytes());
                b
            },
            "invalid_safetensors",
        ),
        (
            "overlapping offsets",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            "invalid_safetensors",
        ),
        (
            "out-of-bounds offsets",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
            ),
            "invalid_safetensors",
        ),
        (
            "unknown dtype",
            safetensors_bytes(
                r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "invalid_safetensors",
        ),
        (
            "duplicate tensor names",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "invalid_safetensors",
        ),
        (
            "trailing bytes",
            safetensors_bytes(one, 9),
            "invalid_safetensors",
        ),
        (
            "tensors that do not fit the config",
            safetensors_bytes(one, 8),
            "invalid_model",
        ),
    ];
    for (what, bytes, code) in cases {
        let result = commit_files(
            &alice,
            ArtifactKind::Base,
            None,
            &[
                ("config.json", config.clone()),
                ("model.safetensors", bytes),
            ],
        )
        .await;
        assert!(result.0.is_client_error(), "{what}: {}", result.1);
        assert_eq!(result.1["code"], code, "{what}: {}", result.1);
    }

    // An index that names a shard the artifact does not have.
    let sharded = tiny_model(root, "sharded", 1, Some(40_000));
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let names: Vec<String> = crate::support::walk(&sharded)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    let contents: Vec<Vec<u8>> = crate::support::walk(&sharded)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let skip = names
        .iter()
        .position(|n| n.starts_with("model-00002"))
        .expect("a second shard");
    for (i, n) in names.iter().enumerate() {
        if i != skip {
            files.push((n.as_str(), contents[i].clone()));
        }
    }
    let result = commit_files(&alice, ArtifactKind::Base, None, &files).await;
    assert_error(&result, 422, "invalid_model");
    assert!(
        result.1["message"]
            .as_str()
            .unwrap()
            .contains("model-00002"),
        "{}",
        result.1
    );

    // A config that is not a Llama-family model.
    let result = commit_files(
        &alice,
        ArtifactKind::Base,
        None,
        &[
            (
                "config.json",
                br#"{"architectures":["BertModel"]}"#.to_vec(),
            ),
            ("model.safetensors", weights.clone()),
        ],
    )
    .await;
    assert_error(&result, 422, "invalid_model");

    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(listed, json!([]), "nothing may be stored after refusals");
    assert_eq!(alice.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn bad_adapters_manifests_and_paths_are_refused() {
    let server = TestServer::start().await;
    let (alice, bob) = setup(&server).await;
    let root = server.dir.path();
    let base = alice
        .push(
            "lab",
            "tiny",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    let base_id = base["id"].as_str().unwrap().to_string();

    // An adapter made for a bigger model does not fit this base.
    let big = TinyConfig {
        hidden: 96,
        ..TinyConfig::default()
    };
    let wrong = tiny_adapter(root, "wrong", 1, &big);
    let files = bob.upload_dir(&wrong).await;
    let req = CommitArtifact {
        name: "lora".into(),
        kind: ArtifactKind::Adapter,
        base: Some(base_id.clone()),
        files: files.clone(),
        parents: vec![],
        description: String::new(),
    };
    let result = bob.commit("lab", &req).await;
    assert_error(&result, 422, "adapter_mismatch");
    assert!(
        result.1["message"].as_str().unwrap().contains("q_proj"),
        "{}",
        result.1
    );

    // An adapter whose base does not exist, or names no base at all.
    let good = tiny_adapter(root, "good", 1, &TinyConfig::default());
    let files = bob.upload_dir(&good).await;
    let mut req = CommitArtifact {
        name: "lora".into(),
        kind: ArtifactKind::Adapter,
        base: Some("lab/nope".into()),
        files: files.clone(),
        parents: vec![],
        description: String::new(),
    };
    assert_error(&bob.commit("lab", &req).await, 404, "not_found");
    req.base = None;
    assert_error(&bob.commit("lab", &req).await, 400, "bad_request");

    // A manifest naming a blob that was never uploaded.
    let mut missing = files.clone();
    missing.insert(
        "extra.bin".into(),
        FileEntry {
            digest: crate::support::digest_of(b"not uploaded"),
            size: 12,
        },
    );
    req.base = Some(base_id.clone());
    req.files = missing;
    assert_error(&bob.commit("lab", &req).await, 404, "blob_unknown");

    // Path-like file names.
    for bad in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "nul\0byte",
        "back\\slash",
    ] {
        let mut f = files.clone();
        let first = f.values().next().unwrap().clone();
        f.insert(bad.to_string(), first);
        req.files = f;
        let result = bob.commit("lab", &req).await;
        assert_error(&result, 400, "invalid_path");
    }

    // Parents must exist; datasets on edges must be registered.
    req.files = files.clone();
    req.parents = vec![ParentSpec {
        parent: "lab/ghost".into(),
        relation: Relation::Finetune,
        method: String::new(),
        params: BTreeMap::new(),
        datasets: vec![],
    }];
    assert_error(&bob.commit("lab", &req).await, 404, "not_found");
    req.parents = vec![ParentSpec {
        parent: base_id.clone(),
        relation: Relation::Adapter,
        method: "lora".into(),
        params: BTreeMap::new(),
        datasets: vec![crate::support::digest_of(b"unregistered")],
    }];
    assert_error(&bob.commit("lab", &req).await, 422, "invalid_dataset");

    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the base is stored"
    );
    // A mixture is checked as one: an adapter's files are neither a Mixtral checkpoint nor a
    // LoRA-MoE bundle.
    req.kind = ArtifactKind::Mixture;
    req.parents = vec![];
    assert_error(&bob.commit("lab", &req).await, 422, "invalid_model");
}

/// The lineage of a 1,000-round chain (each round a checkpoint of the one before), asked at
/// both ends and in the middle; printed, not asserted. Run with
/// `cargo nextest run -p clreg-tests --cargo-profile release --run-ignored only -E 'test(lineage_of_a_long_chain)' --no-capture`.
#[tokio::test]
#[ignore = "a measurement, not a check: run it by name"]
async fn lineage_of_a_long_chain() {
    const ROUNDS: usize = 1000;
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("long", "semi").await;
    let files = alice
        .upload_dir(&tiny_model(server.dir.path(), "m", 1, None))
        .await;
    let mut ids = Vec::new();
    for i in 0..ROUNDS {
        let req = CommitArtifact {
            name: format!("r{i}"),
            kind: if i == 0 {
                ArtifactKind::Base
            } else {
                ArtifactKind::Checkpoint
            },
            base: (i > 0).then(|| "long/r0".to_string()),
            files: files.clone(),
            parents: (i > 0)
                .then(|| ParentSpec {
                    parent: format!("long/r{}", i - 1),
                    relation: Relation::Finetune,
                    method: "fft".into(),
                    params: BTreeMap::new(),
                    datasets: vec![],
                })
                .into_iter()
                .collect(),
            description: String::new(),
        };
        let (status, body) = alice.commit("long", &req).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["artifact"]["id"].as_str().unwrap().to_string());
    }
    for (at, id) in [
        ("last", &ids[ROUNDS - 1]),
        ("middle", &ids[ROUNDS / 2]),
        ("first", &ids[0]),
    ] {
        let mut times = Vec::new();
        let mut nodes = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let (status, lineage) = alice.get(&format!("/artifacts/{id}/lineage")).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
            nodes = lineage["nodes"].as_array().unwrap().len();
            assert_eq!(lineage["edges"].as_array().unwrap().len(), ROUNDS - 1);
        }
        assert_eq!(nodes, ROUNDS);
        times.sort_by(f64::total_cmp);
        println!(
            "lineage of the {at} round of {ROUNDS}: median {:.1} ms (min {:.1}, max {:.1})",
            times[2], times[0], times[4]
        );
    }
}
