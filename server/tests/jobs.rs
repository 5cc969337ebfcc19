//! Jobs end to end: a real server whose worker runs each job in a `clreg-server run-job` child
//! process (the binary cargo built from this source), on SQLite + a local directory or on
//! PostgreSQL + S3 (see `clreg_tests::TestServer`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clreg_engine::merge::{Recipe, run_recipe};
use clreg_tests::{Client, TestServer, assert_error, tiny_model, tiny_model_with_tokenizer};
use clreg_types::{ArtifactKind, LedgerEvent};
use serde_json::{Value, json};

async fn server_with_worker() -> TestServer {
    TestServer::with_worker(PathBuf::from(env!("CARGO_BIN_EXE_clreg-server"))).await
}

/// Waits for a job to end and returns it.
async fn wait(client: &Client, id: &str) -> Value {
    client.wait_job(id).await
}

const RECIPE: &str = "merge_method: ties\nbase_model: lab/base\nmodels:\n  - model: lab/a\n    parameters: {weight: 1.0, density: 0.5}\n  - model: lab/b\n    parameters: {weight: 0.5, density: 0.7}\ndtype: float32\nseed: 7\n";

#[tokio::test]
async fn a_merge_job_commits_the_same_weights_as_a_local_merge_with_its_lineage() {
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let dirs: Vec<PathBuf> = [("base", 1), ("a", 2), ("b", 3)]
        .iter()
        .map(|(name, seed)| tiny_model(root, name, *seed, None))
        .collect();
    let base = alice
        .push("lab", "base", ArtifactKind::Base, None, &dirs[0])
        .await;
    let a = alice
        .push(
            "lab",
            "a",
            ArtifactKind::Checkpoint,
            Some("lab/base"),
            &dirs[1],
        )
        .await;
    let b = alice
        .push(
            "lab",
            "b",
            ArtifactKind::Checkpoint,
            Some("lab/base"),
            &dirs[2],
        )
        .await;

    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "merged", "recipe": RECIPE}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait(&alice, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["attempts"], 1);
    let artifact_id = done["result"]["artifacts"][0].as_str().unwrap().to_string();

    let (status, artifact) = alice.get(&format!("/artifacts/{artifact_id}")).await;
    assert_eq!(status, 200, "{artifact}");
    assert_eq!(artifact["kind"], "merge");
    assert_eq!(artifact["name"], "merged");
    assert_eq!(artifact["version"], 1);
    assert_eq!(artifact["base"], base["id"]);

    // The weights equal an independent local merge of the same files with the same recipe.
    let local_recipe = Recipe::from_yaml(
        &RECIPE
            .replace("lab/base", &dirs[0].display().to_string())
            .replace("lab/a", &dirs[1].display().to_string())
            .replace("lab/b", &dirs[2].display().to_string()),
    )
    .unwrap();
    let local = root.join("local-merge");
    run_recipe(&local_recipe, &local, &|_| {}, &AtomicBool::new(false)).unwrap();
    let response = alice
        .request(
            reqwest::Method::GET,
            &format!("/artifacts/{artifact_id}/files/model.safetensors"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served = response.bytes().await.unwrap();
    assert_eq!(
        served.as_ref(),
        std::fs::read(local.join("model.safetensors")).unwrap()
    );

    // Lineage: one merge edge from each input, with the method and each input's parameters.
    let (_, lineage) = alice
        .get(&format!("/artifacts/{artifact_id}/lineage"))
        .await;
    let edges: Vec<&Value> = lineage["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["child"] == artifact_id.as_str())
        .collect();
    assert_eq!(edges.len(), 3, "{lineage}");
    for e in &edges {
        assert_eq!(e["relation"], "merge");
        assert_eq!(e["method"], "ties");
        assert_eq!(e["params"]["seed"], 7);
    }
    let of = |id: &Value| edges.iter().find(|e| &e["parent"] == id).unwrap();
    assert_eq!(of(&base["id"])["params"]["role"], "base");
    assert_eq!(of(&a["id"])["params"]["density"], 0.5);
    assert_eq!(of(&b["id"])["params"]["weight"], 0.5);

    // Every state change is on the ledger, which verifies.
    let (_, ledger) = alice.get("/collaborations/lab/ledger").await;
    let events: Vec<LedgerEvent> = serde_json::from_value(ledger).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let tail = &kinds[kinds.len() - 4..];
    assert_eq!(
        tail,
        [
            "job.submitted",
            "job.started",
            "artifact.pushed",
            "job.succeeded"
        ]
    );
    clreg_server::ledger::verify(&events).unwrap();
    let (_, log) = alice.get(&format!("/jobs/{id}/log")).await;
    let log = log.as_str().unwrap_or_default();
    assert!(log.contains("3 input artifact(s) staged"), "{log}");
    assert!(log.contains("tensors"), "{log}");
    // The worker's scratch space is gone.
    assert!(!server.dir.path().join("data/jobs").join(&id).exists());
}

#[tokio::test]
async fn refusals_failures_and_cancel() {
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let audrey = server.user("audrey").await;
    let olga = server.user("olga").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "audrey", "auditor").await;
    olga.create_collab("elsewhere", "full").await;
    let base = tiny_model(root, "base", 1, None);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let a = tiny_model(root, "a", 2, None);
    alice
        .push("lab", "a", ArtifactKind::Checkpoint, Some("lab/base"), &a)
        .await;
    let merge = |recipe: &str| json!({"kind": "merge", "name": "m", "recipe": recipe});
    let simple = "merge_method: linear\nbase_model: lab/base\nmodels:\n  - model: lab/a\n    parameters: {weight: 1.0}\n";

    // An auditor may not submit; an outsider does not see the collaboration.
    assert_error(
        &audrey
            .post("/collaborations/lab/jobs", &merge(simple))
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &olga.post("/collaborations/lab/jobs", &merge(simple)).await,
        404,
        "not_found",
    );
    // Inputs the submitter cannot download are not found, from anywhere.
    assert_error(
        &olga
            .post("/collaborations/elsewhere/jobs", &merge(simple))
            .await,
        404,
        "not_found",
    );
    // A bad recipe, a missing name, a kind not available yet.
    assert_error(
        &alice
            .post("/collaborations/lab/jobs", &merge("merge_method: [oops"))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &alice
            .post(
                "/collaborations/lab/jobs",
                &json!({"kind": "merge", "recipe": simple}),
            )
            .await,
        400,
        "bad_request",
    );
    let (status, body) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "mix", "name": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("recipe"),
        "{body}"
    );
    // A mix recipe may not make the server read one of its own files.
    let (status, body) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "mix", "name": "x", "recipe":
                "base_model: lab/base\ngate_mode: hidden\nexperts:\n  - source_model: lab/base\n    prompts_file: /etc/passwd\n  - source_model: lab/base\n    positive_prompts: [a]\n"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("prompts_file"),
        "{body}"
    );
    let (_, jobs) = alice.get("/collaborations/lab/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 0, "refusals queue nothing");

    // The engine refuses the work: the job fails with its code and commits nothing.
    let odd = root.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    clreg_engine::tiny::write_tiny_llama(
        &odd,
        &clreg_engine::tiny::TinyConfig {
            hidden: 32,
            intermediate: 64,
            ..Default::default()
        },
        4,
        None,
    )
    .unwrap();
    alice
        .push("lab", "odd", ArtifactKind::Base, None, &odd)
        .await;
    let mismatched = "merge_method: linear\nbase_model: lab/base\nmodels:\n  - model: lab/odd\n    parameters: {weight: 1.0}\n";
    let (status, job) = alice
        .post("/collaborations/lab/jobs", &merge(mismatched))
        .await;
    assert_eq!(status, 201, "{job}");
    let failed = wait(&alice, job["id"].as_str().unwrap()).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"]["message"].as_str().unwrap().len() > 20,
        "{failed}"
    );
    let (_, listed) = alice.get("/collaborations/lab/artifacts?name=m").await;
    assert_eq!(listed.as_array().unwrap().len(), 0);

    // Cancel: the auditor may not; the submitter may, once; an ended job cannot be.
    let (_, job) = alice.post("/collaborations/lab/jobs", &merge(simple)).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_error(
        &audrey.post(&format!("/jobs/{id}/cancel"), &json!({})).await,
        403,
        "forbidden",
    );
    assert_error(
        &olga.post(&format!("/jobs/{id}/cancel"), &json!({})).await,
        404,
        "not_found",
    );
    let (status, cancelled) = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    let ended = wait(&alice, &id).await;
    // Cancelled before it ran, or while running; either way nothing was committed.
    assert!(
        ended["state"] == "cancelled" || ended["state"] == "succeeded",
        "{ended}"
    );
    if ended["state"] == "cancelled" {
        assert_error(
            &alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await,
            409,
            "conflict",
        );
    }
    let (_, ledger) = alice.get("/collaborations/lab/ledger").await;
    let events: Vec<LedgerEvent> = serde_json::from_value(ledger).unwrap();
    assert!(events.iter().any(|e| e.kind == "job.failed"));
    clreg_server::ledger::verify(&events).unwrap();
}

#[tokio::test]
async fn a_queued_job_is_cancelled_at_once_and_never_runs() {
    // No worker: the job stays queued until cancelled.
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let base = tiny_model(root, "base", 1, None);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "m", "recipe": "merge_method: linear\nmodels:\n  - model: lab/base\n    parameters: {weight: 1.0}\n"}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let (status, cancelled) = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["error"]["code"], "cancelled");
    let (_, ledger) = alice.get("/collaborations/lab/ledger").await;
    let events: Vec<LedgerEvent> = serde_json::from_value(ledger).unwrap();
    assert_eq!(events.last().unwrap().kind, "job.cancelled");
}

/// Pushes a base and two fine-tunes of it under `lab`.
async fn three_models(server: &TestServer, alice: &Client, scale: Option<(usize, usize)>) {
    let root = server.dir.path();
    let config = |seed: u64| {
        let mut t = clreg_engine::tiny::TinyConfig::default();
        if let Some((hidden, layers)) = scale {
            t.hidden = hidden;
            t.intermediate = hidden * 2;
            t.layers = layers;
        }
        (t, seed)
    };
    for (name, seed, kind, base) in [
        ("base", 1, ArtifactKind::Base, None),
        ("a", 2, ArtifactKind::Checkpoint, Some("lab/base")),
        ("b", 3, ArtifactKind::Checkpoint, Some("lab/base")),
    ] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (t, seed) = config(seed);
        clreg_engine::tiny::write_tiny_llama(&dir, &t, seed, None).unwrap();
        alice.push("lab", name, kind, base, &dir).await;
    }
}

async fn ledger_of(client: &Client) -> Vec<LedgerEvent> {
    let (_, ledger) = client.get("/collaborations/lab/ledger").await;
    serde_json::from_value(ledger).unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_it_to_another_which_commits_once() {
    let server = TestServer::start_with(|c| {
        c.job_lease_secs = 3;
        c.job_runner = Some(PathBuf::from(env!("CARGO_BIN_EXE_clreg-server")));
    })
    .await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    // Big enough that the merge takes a while in a debug build.
    three_models(&server, &alice, Some((384, 4))).await;
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "m", "recipe": RECIPE}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();

    // A standalone worker process on the same database and store claims it...
    let mut command = clreg_tests::server_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_clreg-server")),
        &server.state.config,
    );
    command
        .args(["worker", "--count", "1"])
        .env("CLREG_JOB_LEASE_SECS", "3");
    let mut worker = command.spawn().unwrap();
    let mut claimed = false;
    for _ in 0..300 {
        let (_, j) = alice.get(&format!("/jobs/{id}")).await;
        if j["state"] == "running" {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(claimed, "the standalone worker never claimed the job");
    // ... and dies (kill -9) with its child mid-job.
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();

    // Another worker takes the job over once the lease lapses, and commits it once.
    let (stop, workers) = clreg_server::start_workers(&server.state, 1, "rescue");
    let done = wait(&alice, &id).await;
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let (_, listed) = alice.get("/collaborations/lab/artifacts?name=m").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let events = ledger_of(&alice).await;
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("job.started"), 2);
    assert_eq!(count("job.succeeded"), 1);
    assert_eq!(count("artifact.pushed"), 4); // three inputs and the merge
    clreg_server::ledger::verify(&events).unwrap();
}

#[tokio::test]
async fn four_workers_run_forty_jobs_each_exactly_once_while_pushes_commit() {
    const JOBS: usize = 40;
    let server = TestServer::start_with(|c| {
        c.job_runner = Some(PathBuf::from(env!("CARGO_BIN_EXE_clreg-server")));
    })
    .await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    three_models(&server, &alice, None).await;
    let linear = "merge_method: linear\nbase_model: lab/base\nmodels:\n  - model: lab/a\n    parameters: {weight: 1.0}\n  - model: lab/b\n    parameters: {weight: 2.0}\n";
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let (status, job) = alice
            .post(
                "/collaborations/lab/jobs",
                &json!({"kind": "merge", "name": format!("m{i}"), "recipe": linear}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let started = std::time::Instant::now();
    let (stop, workers) = clreg_server::start_workers(&server.state, 4, "pool");
    // Meanwhile, eight pushes under one name commit at once, twice (writers racing the
    // workers' claims, heartbeats and endings).
    let root = server.dir.path();
    for round in 0..2u64 {
        let manifests = futures::future::join_all((0..8u64).map(|i| {
            let dir = tiny_model(root, &format!("p{round}-{i}"), 50 + 8 * round + i, None);
            let alice = alice.clone();
            async move { alice.upload_dir(&dir).await }
        }))
        .await;
        let results = futures::future::join_all(manifests.into_iter().map(|files| {
            let alice = alice.clone();
            async move {
                let req = clreg_types::CommitArtifact {
                    name: "pushed".into(),
                    kind: ArtifactKind::Base,
                    base: None,
                    files,
                    parents: vec![],
                    description: String::new(),
                };
                alice.commit("lab", &req).await
            }
        }))
        .await;
        for (status, body) in results {
            assert_eq!(status, 201, "{body}");
        }
    }
    for id in &ids {
        let done = wait(&alice, id).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
    }
    eprintln!(
        "{JOBS} merge jobs with 4 workers: {:.2} jobs/s",
        JOBS as f64 / started.elapsed().as_secs_f64()
    );
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    let events = ledger_of(&alice).await;
    for id in &ids {
        let of = |kind: &str| {
            events
                .iter()
                .filter(|e| e.kind == kind && e.payload["job"] == id.as_str())
                .count()
        };
        assert_eq!((of("job.started"), of("job.succeeded")), (1, 1), "job {id}");
    }
    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    // Forty merges with the same content under forty names: one artifact each; sixteen
    // pushed versions 1..16.
    assert_eq!(listed.as_array().unwrap().len(), 3 + JOBS + 16);
    let mut versions: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "pushed")
        .map(|a| a["version"].as_u64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<_>>());
    clreg_server::ledger::verify(&events).unwrap();
}

const MARKER: &str = "ZQX-PATIENT-MARKER-4711";

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<PathBuf> {
    clreg_tests::walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Nothing of the carried data is left: not in the database, the store, the caches, the
/// scratch directories or the job's log.
async fn nothing_left(server: &TestServer, client: &Client, job: &str) {
    use sea_orm::ConnectionTrait;
    let left = files_holding(server.dir.path(), MARKER);
    assert!(left.is_empty(), "the carried data is still in {left:?}");
    for table in [
        "jobs",
        "ledger_events",
        "datasets",
        "lineage_edges",
        "artifacts",
    ] {
        let rows = server
            .state
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                server.state.db.get_database_backend(),
                format!("SELECT * FROM {table}"),
            ))
            .await
            .unwrap();
        let text = format!("{rows:?}");
        assert!(!text.contains(MARKER), "{table} holds the carried data");
    }
    let (_, log) = client.get(&format!("/jobs/{job}/log")).await;
    assert!(!log.to_string().contains(MARKER));
}

#[tokio::test]
async fn train_jobs_carry_data_under_semi_and_nothing_of_it_remains() {
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "bob", "contributor").await;
    alice.add_member("lab", "carol", "consumer").await;
    let base = tiny_model_with_tokenizer(root, "base", 1);
    let base_artifact = alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let content = serde_json::to_string(
        &(0..8)
            .map(|i| json!({"prompt": format!("{MARKER} case {i}: diagnosis?"), "answer": format!("d{i}")}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let digest = clreg_tests::digest_of(content.as_bytes());
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "notes", "task": "dx", "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 8, "store_content": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let config = json!({"method": "lora", "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                        "lr": 0.001, "max_len": 64, "seed": 3});
    let train = |data: Value, past: Value, config: &Value| {
        json!({"kind": "train", "name": "round1", "base": "lab/base", "data": data,
               "past": past, "config": config})
    };
    let carried = json!([{"digest": digest, "content": content}]);

    // Refusals, each before anything is queued.
    let refusals = [
        // Bob carries content of a dataset Alice registered.
        (
            &bob,
            train(carried.clone(), json!([]), &config),
            403,
            "policy_forbids",
        ),
        // A consumer may not train.
        (
            &carol,
            train(carried.clone(), json!([]), &config),
            403,
            "forbidden",
        ),
        // The stored dataset, by digest: semi keeps none.
        (
            &alice,
            train(json!([{"digest": digest}]), json!([]), &config),
            403,
            "policy_forbids",
        ),
        // Replay over stored datasets: semi forbids it.
        (
            &alice,
            train(
                carried.clone(),
                json!([{"digest": digest}]),
                &json!({"method": "lora", "schedule": {"kind": "replay", "fraction": 0.5}}),
            ),
            403,
            "policy_forbids",
        ),
        // Content that is not the registered dataset's.
        (
            &alice,
            train(
                json!([{"digest": digest, "content": "[]"}]),
                json!([]),
                &config,
            ),
            422,
            "digest_mismatch",
        ),
        // A digest nobody registered.
        (
            &alice,
            train(
                json!([{"digest": clreg_tests::digest_of(b"x"), "content": "x"}]),
                json!([]),
                &config,
            ),
            422,
            "invalid_dataset",
        ),
        // Settings that cannot train.
        (
            &alice,
            train(carried.clone(), json!([]), &json!({"lr": -1.0})),
            400,
            "bad_request",
        ),
    ];
    for (client, body, status, code) in refusals {
        let got = client.post("/collaborations/lab/jobs", &body).await;
        assert_error(&got, status, code);
    }
    let (_, jobs) = alice.get("/collaborations/lab/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 0);
    assert!(files_holding(root, MARKER).is_empty());

    // Success: an adapter on the base, with the dataset's digest and every setting on its edge.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &train(carried.clone(), json!([]), &config),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait(&alice, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let adapter_id = done["result"]["artifacts"][0].as_str().unwrap();
    let (_, adapter) = alice.get(&format!("/artifacts/{adapter_id}")).await;
    assert_eq!(adapter["kind"], "adapter");
    assert_eq!(adapter["base"], base_artifact["id"]);
    let (_, lineage) = alice.get(&format!("/artifacts/{adapter_id}/lineage")).await;
    let edge = &lineage["edges"][0];
    assert_eq!(edge["relation"], "adapter");
    assert_eq!(edge["method"], "lora");
    assert_eq!(edge["params"]["max_steps"], 2);
    assert_eq!(edge["datasets"][0], digest.to_string());
    nothing_left(&server, &alice, &id).await;

    // Score the adapter (on its base) with the same data carried again: an evaluation per
    // task, scores for auditors, no examples of the data anywhere.
    let eval = |client: &Client, metric: &str| {
        let client = client.clone();
        let body = json!({"kind": "eval", "artifact": adapter_id,
            "tasks": [{"task": "dx", "metric": metric, "data": {"digest": digest, "content": content}}]});
        async move { client.post("/collaborations/lab/jobs", &body).await }
    };
    assert_error(&eval(&alice, "bleu").await, 400, "bad_request");
    // A consumer may evaluate, but not with data another member registered.
    assert_error(&eval(&carol, "exact").await, 403, "policy_forbids");
    let (status, job) = eval(&alice, "exact").await;
    assert_eq!(status, 201, "{job}");
    let eval_id = job["id"].as_str().unwrap().to_string();
    let scored = wait(&alice, &eval_id).await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let audrey = server.user("audrey").await;
    alice.add_member("lab", "audrey", "auditor").await;
    let (status, evaluations) = audrey.get("/collaborations/lab/evaluations").await;
    assert_eq!(status, 200, "{evaluations}");
    let e = &evaluations[0];
    assert_eq!(
        (e["task"].as_str(), e["metric"].as_str()),
        (Some("dx"), Some("exact"))
    );
    assert_eq!(e["n"], 8);
    assert_eq!(e["artifact"], adapter_id);
    assert_eq!(e["job"], eval_id.as_str());
    let score = e["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score), "{score}");
    assert_eq!(
        scored["result"]["evaluations"][0], e["id"],
        "the job names the evaluation it recorded"
    );
    let events = ledger_of(&alice).await;
    assert!(events.iter().any(|ev| ev.kind == "evaluation.recorded"));
    nothing_left(&server, &alice, &eval_id).await;

    // Settings in `config`: the first 3 examples only, short answers; the newest evaluation of
    // (artifact, task, metric) replaces the first. Bad settings are refused before queuing,
    // and so is a `config` for a merge (its settings are in the recipe).
    let eval_with = |config: serde_json::Value| {
        json!({"kind": "eval", "artifact": adapter_id, "config": config,
            "tasks": [{"task": "dx", "metric": "exact", "data": {"digest": digest, "content": content}}]})
    };
    for bad in [
        json!({"limit": 0}),
        json!({"max_new_tokens": 5000}),
        json!({"batch_size": 0}),
        json!({"temperature": 0.7}),
    ] {
        let refused = alice
            .post("/collaborations/lab/jobs", &eval_with(bad.clone()))
            .await;
        assert_error(&refused, 400, "bad_request");
        assert!(
            refused.1["message"]
                .as_str()
                .unwrap()
                .contains("invalid evaluation `config`"),
            "{bad}: {}",
            refused.1
        );
    }
    let refused = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "m", "config": {"seed": 1},
                "recipe": format!("merge_method: linear\nmodels:\n  - model: {adapter_id}\n")}),
        )
        .await;
    assert_error(&refused, 400, "bad_request");
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("no `config`")
    );
    let (_, jobs_before) = alice.get("/collaborations/lab/jobs").await;
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &eval_with(json!({"limit": 3, "max_new_tokens": 4})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let limited_id = job["id"].as_str().unwrap().to_string();
    let scored = wait(&alice, &limited_id).await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let (_, evaluations) = audrey.get("/collaborations/lab/evaluations").await;
    let rows = evaluations.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{evaluations}");
    assert_eq!(rows[0]["n"], 3);
    assert_eq!(rows[0]["job"], limited_id.as_str());
    let (_, jobs_after) = alice.get("/collaborations/lab/jobs").await;
    assert_eq!(
        jobs_after.as_array().unwrap().len(),
        jobs_before.as_array().unwrap().len() + 1,
        "refused submissions queue nothing"
    );
    nothing_left(&server, &alice, &limited_id).await;

    // Failure (the engine refuses: no parameter matches) and cancel: nothing left either.
    let (_, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &train(
                carried.clone(),
                json!([]),
                &json!({"method": "fft", "fft_params": ["no_such_weight"], "max_steps": 1}),
            ),
        )
        .await;
    let failed_id = job["id"].as_str().unwrap().to_string();
    let failed = wait(&alice, &failed_id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    nothing_left(&server, &alice, &failed_id).await;
}

#[tokio::test]
async fn a_queued_train_job_cancelled_leaves_nothing_and_a_tightened_policy_stops_a_claim() {
    let server = TestServer::start().await; // no worker: jobs stay queued
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    let base = tiny_model(root, "base", 1, None);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let content = format!(r#"[{{"prompt": "{MARKER}", "answer": "a"}}]"#);
    let digest = alice.upload(content.as_bytes(), 1 << 20).await;
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "d", "task": "t", "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 1, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Carried, then cancelled while queued.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "train", "name": "r", "base": "lab/base",
                    "data": [{"digest": digest, "content": content}], "config": {"max_steps": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _) = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let (_, listing) = alice.get("/collaborations/lab/jobs").await;
    assert!(!listing.to_string().contains(MARKER));
    let store = root.join("data/store/jobs");
    assert!(
        !store.exists() || clreg_tests::walk(&store).is_empty(),
        "carried data left in the store"
    );

    // A job on the stored dataset (allowed under full) waits; the policy is tightened; a
    // worker then refuses it at claim.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "train", "name": "r", "base": "lab/base",
                    "data": [{"digest": digest}], "config": {"max_steps": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _) = alice
        .post("/collaborations/lab/policy", &json!({"policy": "semi"}))
        .await;
    assert_eq!(status, 200);
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_clreg-server"));
    let state = {
        let mut config = (*server.state.config).clone();
        config.job_runner = Some(runner);
        clreg_server::AppState {
            config: std::sync::Arc::new(config),
            ..server.state.clone()
        }
    };
    let (stop, workers) = clreg_server::start_workers(&state, 1, "late");
    let ended = wait(&alice, &id).await;
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["error"]["code"], "policy_forbids", "{ended}");
    let (_, listed) = alice.get("/collaborations/lab/artifacts?name=r").await;
    assert_eq!(listed.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_removed_members_job_and_a_dead_workers_cancelled_job_end_cleanly() {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_clreg-server"));
    let server = TestServer::start_with(|c| {
        c.job_lease_secs = 3;
        c.job_runner = Some(runner);
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "bob", "contributor").await;
    three_models(&server, &alice, None).await;
    let linear = "merge_method: linear\nmodels:\n  - model: lab/a\n    parameters: {weight: 1.0}\n  - model: lab/b\n    parameters: {weight: 1.0}\n";
    let submit = |client: &Client, name: &str| {
        let client = client.clone();
        let body = json!({"kind": "merge", "name": name, "recipe": linear});
        async move { client.post("/collaborations/lab/jobs", &body).await }
    };
    // Bob's job waits; Bob is removed; it must not run.
    let (status, bobs) = submit(&bob, "bobs").await;
    assert_eq!(status, 201, "{bobs}");
    let (status, _) = alice.delete("/collaborations/lab/members/bob").await;
    assert_eq!(status, 204);
    // Alice's job is claimed by a worker that then dies, after she asked to cancel it.
    let (status, alices) = submit(&alice, "alices").await;
    assert_eq!(status, 201, "{alices}");
    let alices = alices["id"].as_str().unwrap().to_string();
    let mut claimed = None;
    while let Some(job) =
        clreg_server::jobs::worker::claim(&server.state, "doomed", clreg_engine::job::Device::Cpu)
            .await
            .unwrap()
    {
        if job.id.to_string() == alices {
            claimed = Some(job);
            break;
        }
    }
    assert!(
        claimed.is_some(),
        "the doomed worker never claimed Alice's job"
    );
    let (status, asked) = alice
        .post(&format!("/jobs/{alices}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{asked}");
    assert_eq!(asked["state"], "running");

    let (stop, workers) = clreg_server::start_workers(&server.state, 1, "live");
    let ended_bobs = wait(&alice, bobs["id"].as_str().unwrap()).await;
    let ended_alices = wait(&alice, &alices).await;
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(ended_bobs["state"], "failed", "{ended_bobs}");
    assert_eq!(ended_bobs["error"]["code"], "forbidden", "{ended_bobs}");
    assert_eq!(ended_alices["state"], "cancelled", "{ended_alices}");
    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "nothing committed: {listed}"
    );
}

/// A copy of `base` whose every weight moved by a few units in the last place (seeded): close
/// to the base, as a fine-tune is, so that it may join a mixture of that base.
fn fine_tune(base: &std::path::Path, name: &str, seed: u8) -> PathBuf {
    let dir = base.with_file_name(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(base).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            for (i, b) in bytes[header..].iter_mut().enumerate() {
                // The low byte of each little-endian word: its lowest mantissa bits.
                if i % 4 == 0 {
                    *b ^= 1 + ((i / 4) as u8 ^ seed) % 3;
                }
            }
        }
        std::fs::write(dir.join(path.file_name().unwrap()), bytes).unwrap();
    }
    dir
}

/// Every file of an artifact as the server serves it.
async fn served_files(
    client: &Client,
    artifact: &Value,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    client.artifact_files(artifact).await
}

#[tokio::test]
async fn mix_jobs_commit_a_mixtral_checkpoint_and_a_lora_moe_bundle_equal_to_local_mixes() {
    use clreg_engine::moe::{MoeRecipe, mix_lora, mix_mixtral};
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let tiny = clreg_engine::tiny::TinyConfig::default();
    // `gate_mode: hidden` reads the prompts through the base's tokenizer.
    let base_dir = tiny_model_with_tokenizer(root, "base", 1);
    let fts = [
        fine_tune(&base_dir, "ft1", 1),
        fine_tune(&base_dir, "ft2", 2),
    ];
    let loras = [
        clreg_tests::tiny_adapter(root, "l1", 4, &tiny),
        clreg_tests::tiny_adapter(root, "l2", 5, &tiny),
    ];
    let base = alice
        .push("lab", "base", ArtifactKind::Base, None, &base_dir)
        .await;
    let mut inputs = Vec::new();
    for (name, dir, kind) in [
        ("ft1", &fts[0], ArtifactKind::Checkpoint),
        ("ft2", &fts[1], ArtifactKind::Checkpoint),
        ("l1", &loras[0], ArtifactKind::Adapter),
        ("l2", &loras[1], ArtifactKind::Adapter),
    ] {
        inputs.push(alice.push("lab", name, kind, Some("lab/base"), dir).await);
    }
    let recipe = |base: &str, e1: &str, e2: &str| {
        format!(
            "base_model: {base}\ngate_mode: hidden\nexperts_per_token: 2\nseed: 3\nexperts:\n  - source_model: {e1}\n    positive_prompts: [\"w5 w6 w7\"]\n  - source_model: {e2}\n    positive_prompts: [\"w40 w41\"]\n"
        )
    };
    for (lora, e1, e2, local_in) in [
        (false, "lab/ft1", "lab/ft2:1", &fts),
        (true, "lab/l1", "lab/l2", &loras),
    ] {
        let name = if lora { "lora-moe" } else { "moe" };
        let (status, job) = alice
            .post(
                "/collaborations/lab/jobs",
                &json!({"kind": "mix", "name": name, "lora": lora,
                        "recipe": recipe("lab/base", e1, e2)}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        let done = wait(&alice, job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let id = done["result"]["artifacts"][0].as_str().unwrap();
        let (_, artifact) = alice.get(&format!("/artifacts/{id}")).await;
        assert_eq!(artifact["kind"], "mixture");
        assert_eq!(artifact["base"], base["id"]);

        // The same mix of the same files, locally: every weight file is byte-identical.
        let local_recipe = MoeRecipe::from_yaml(&recipe(
            &base_dir.display().to_string(),
            &local_in[0].display().to_string(),
            &local_in[1].display().to_string(),
        ))
        .unwrap();
        let out = root.join(format!("local-{name}"));
        let cancel = AtomicBool::new(false);
        if lora {
            mix_lora(&local_recipe, &out, None, &|_| {}, &|_| {}, &cancel).unwrap();
        } else {
            mix_mixtral(&local_recipe, &out, None, &|_| {}, &|_| {}, &cancel).unwrap();
        }
        let served = served_files(&alice, &artifact).await;
        let weights: Vec<&String> = served
            .keys()
            .filter(|p| p.ends_with(".safetensors"))
            .collect();
        assert!(!weights.is_empty(), "{artifact}");
        for path in weights {
            assert_eq!(
                served[path],
                std::fs::read(out.join(path)).unwrap(),
                "{name}: {path} differs from the local mix"
            );
        }
        if !lora {
            let cfg: Value = serde_json::from_slice(&served["config.json"]).unwrap();
            assert_eq!(cfg["architectures"][0], "MixtralForCausalLM");
        }

        // Lineage: the base and each expert, with the run's settings.
        let (_, lineage) = alice.get(&format!("/artifacts/{id}/lineage")).await;
        let edges: Vec<&Value> = lineage["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["child"] == id)
            .collect();
        assert_eq!(edges.len(), 3, "{lineage}");
        let experts = if lora { &inputs[2..] } else { &inputs[..2] };
        for (i, expert) in experts.iter().enumerate() {
            let e = edges.iter().find(|e| e["parent"] == expert["id"]).unwrap();
            assert_eq!(e["relation"], "mix");
            assert_eq!(e["params"]["role"], "expert");
            assert_eq!(e["params"]["expert"], i);
            assert_eq!(e["params"]["seed"], 3);
        }
        assert!(
            edges
                .iter()
                .any(|e| e["parent"] == base["id"] && e["params"]["role"] == "base")
        );
    }

    // A bundle is checked against its base at commit: one whose router has the wrong width
    // is refused, and so is a "mixture" that is a plain Llama.
    let bundle = root.join("local-lora-moe");
    let mut desc: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("clreg_moe.json")).unwrap()).unwrap();
    desc["router"]["top_k"] = json!(5);
    std::fs::write(bundle.join("clreg_moe.json"), desc.to_string()).unwrap();
    let commit_mixture = |dir: PathBuf| {
        let alice = alice.clone();
        async move {
            let files = alice.upload_dir(&dir).await;
            let req = clreg_types::CommitArtifact {
                name: "bad-moe".into(),
                kind: ArtifactKind::Mixture,
                base: Some("lab/base".into()),
                files,
                parents: vec![],
                description: String::new(),
            };
            alice.commit("lab", &req).await
        }
    };
    let refused = commit_mixture(bundle.clone()).await;
    assert_eq!(refused.0, 422, "{}", refused.1);
    assert!(
        refused.1["message"].as_str().unwrap().contains("top_k"),
        "{}",
        refused.1
    );
    let refused = commit_mixture(fts[0].clone()).await;
    assert_eq!(refused.0, 422, "{}", refused.1);
    assert!(
        refused.1["message"].as_str().unwrap().contains("Mixtral"),
        "{}",
        refused.1
    );
}

#[tokio::test]
async fn a_mix_job_trains_its_routers_on_carried_calibration_data_behind_the_gate() {
    use clreg_engine::moe::{MoeRecipe, RouterTraining, mix_lora};
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let audrey = server.user("audrey").await;
    let eve = server.user("eve").await;
    alice.create_collab("lab", "semi").await;
    alice.add_member("lab", "bob", "contributor").await;
    alice.add_member("lab", "carol", "consumer").await;
    alice.add_member("lab", "audrey", "auditor").await;
    alice.add_member("lab", "eve", "contributor").await;
    let (status, _) = alice.delete("/collaborations/lab/members/eve").await;
    assert_eq!(status, 204);
    let tiny = clreg_engine::tiny::TinyConfig::default();
    let base_dir = tiny_model_with_tokenizer(root, "base", 1);
    let loras = [
        clreg_tests::tiny_adapter(root, "l1", 4, &tiny),
        clreg_tests::tiny_adapter(root, "l2", 5, &tiny),
    ];
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base_dir)
        .await;
    for (name, dir) in [("l1", &loras[0]), ("l2", &loras[1])] {
        alice
            .push("lab", name, ArtifactKind::Adapter, Some("lab/base"), dir)
            .await;
    }
    let content = serde_json::to_string(
        &(0..6)
            .map(|i| json!({"prompt": format!("{MARKER} w{i} w{}", i + 1), "answer": format!("w{} w{}", 2 * i, 3 * i)}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let digest = clreg_tests::digest_of(content.as_bytes());
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "calib", "task": "calib", "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 6, "store_content": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let recipe = |base: &str, e1: &str, e2: &str| {
        format!(
            "base_model: {base}\ngate_mode: random\nexperts_per_token: 2\nseed: 3\nexperts:\n  - source_model: {e1}\n  - source_model: {e2}\n"
        )
    };
    let config = json!({"steps": 4, "learning_rate": 0.01, "seed": 2});
    let mix = |data: Value, config: Value| {
        json!({"kind": "mix", "name": "routed", "lora": true,
               "recipe": recipe("lab/base", "lab/l1", "lab/l2"), "data": data, "config": config})
    };
    let carried = json!([{"digest": digest, "content": content}]);

    // Refusals, each before anything is queued.
    let refusals = [
        // Training routers on data is training: a consumer may mix, but not train.
        (
            &carol,
            mix(carried.clone(), config.clone()),
            403,
            "forbidden",
        ),
        // Bob carries content of a dataset Alice registered.
        (
            &bob,
            mix(carried.clone(), config.clone()),
            403,
            "policy_forbids",
        ),
        // Not a member, an auditor, a removed member.
        (
            &dave,
            mix(carried.clone(), config.clone()),
            404,
            "not_found",
        ),
        (
            &audrey,
            mix(carried.clone(), config.clone()),
            403,
            "forbidden",
        ),
        (&eve, mix(carried.clone(), config.clone()), 404, "not_found"),
        // The stored dataset, by digest: semi keeps none.
        (
            &alice,
            mix(json!([{"digest": digest}]), config.clone()),
            403,
            "policy_forbids",
        ),
        // Settings without data, two calibration sets, settings that cannot train.
        (&alice, mix(json!([]), config.clone()), 400, "bad_request"),
        (
            &alice,
            mix(
                json!([carried[0].clone(), carried[0].clone()]),
                config.clone(),
            ),
            400,
            "bad_request",
        ),
        (
            &alice,
            mix(carried.clone(), json!({"steps": 0})),
            400,
            "bad_request",
        ),
        (
            &alice,
            mix(carried.clone(), json!({"epochs": 1})),
            400,
            "bad_request",
        ),
        // Content that is not the registered dataset's.
        (
            &alice,
            mix(json!([{"digest": digest, "content": "[]"}]), config.clone()),
            422,
            "digest_mismatch",
        ),
    ];
    for (client, body, status, code) in refusals {
        let got = client.post("/collaborations/lab/jobs", &body).await;
        assert_error(&got, status, code);
    }
    let (_, jobs) = alice.get("/collaborations/lab/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 0);
    assert!(files_holding(root, MARKER).is_empty());

    // Success: the bundle's routers equal a local run's with the same settings, the base's
    // edge names the calibration set, and nothing of the data remains.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &mix(carried.clone(), config.clone()),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait(&alice, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let artifact_id = done["result"]["artifacts"][0].as_str().unwrap();
    let (_, artifact) = alice.get(&format!("/artifacts/{artifact_id}")).await;
    let served = served_files(&alice, &artifact).await;
    // The local copy lives outside the server's directory, which must hold none of the data.
    let local_dir = tempfile::tempdir().unwrap();
    let calib = local_dir.path().join("calib.json");
    std::fs::write(&calib, &content).unwrap();
    let mut training = RouterTraining::new(&calib);
    (training.steps, training.learning_rate, training.seed) = (4, 0.01, 2);
    let local = root.join("local-routed");
    let local_recipe = MoeRecipe::from_yaml(&recipe(
        &base_dir.display().to_string(),
        &loras[0].display().to_string(),
        &loras[1].display().to_string(),
    ))
    .unwrap();
    let report = mix_lora(
        &local_recipe,
        &local,
        Some(&training),
        &|_| {},
        &|_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    // Every tensor of a safetensors file, as f32 values by name.
    let tensors = |bytes: &[u8]| -> std::collections::BTreeMap<String, Vec<f32>> {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(name, view)| {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (name, values)
            })
            .collect()
    };
    let (remote, local_w) = (
        tensors(&served["clreg_moe.safetensors"]),
        tensors(&std::fs::read(local.join("clreg_moe.safetensors")).unwrap()),
    );
    let untrained = root.join("local-untrained");
    mix_lora(
        &local_recipe,
        &untrained,
        None,
        &|_| {},
        &|_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let before = tensors(&std::fs::read(untrained.join("clreg_moe.safetensors")).unwrap());
    let diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert_eq!(remote.len(), local_w.len());
    for (k, t) in &remote {
        assert!(
            diff(t, &local_w[k]) < 1e-5,
            "{k} differs from the local run"
        );
        let router = k.ends_with(".router.weight");
        assert_eq!(diff(t, &before[k]) > 0.0, router, "{k}: only routers train");
    }
    let (_, lineage) = alice
        .get(&format!("/artifacts/{artifact_id}/lineage"))
        .await;
    let base_edge = lineage["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["child"] == artifact_id && e["params"]["role"] == "base")
        .unwrap()
        .clone();
    assert_eq!(base_edge["datasets"][0], digest.to_string());
    assert_eq!(base_edge["params"]["router_training"]["steps"], 4);
    let first = base_edge["params"]["router_training"]["first_loss"]
        .as_f64()
        .unwrap();
    let want = report.record.training.as_ref().unwrap().first_loss;
    assert!((first - want).abs() < 1e-4, "{first} vs {want}");
    nothing_left(&server, &alice, &id).await;

    // Scoring the bundle stages its base: it runs even when the copy its record names (the
    // mixing job's) is gone, and scores what a local evaluation of the local bundle scores.
    let base_id = artifact["base"].as_str().unwrap();
    let recorded = server
        .state
        .config
        .data_dir
        .join("cache")
        .join("artifacts")
        .join(base_id);
    assert!(recorded.is_dir(), "{}", recorded.display());
    std::fs::remove_dir_all(&recorded).unwrap();
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "eval", "artifact": artifact_id,
                    "tasks": [{"task": "calib", "metric": "edit_sim",
                               "data": {"digest": digest, "content": content}}]}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let eval_id = job["id"].as_str().unwrap().to_string();
    let scored = wait(&alice, &eval_id).await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let (_, evaluations) = alice.get("/collaborations/lab/evaluations").await;
    let remote_score = evaluations[0]["score"].as_f64().unwrap();
    let spec = clreg_engine::job::JobSpec::Eval(clreg_engine::job::EvalSpec {
        model: local.clone(),
        adapters: vec![],
        bundle_base: None,
        tasks: vec![clreg_engine::job::EvalTask {
            name: "calib".into(),
            path: calib.clone(),
            metric: clreg_engine::eval::Metric::EditSim,
        }],
        options: Default::default(),
        output: None,
    });
    let cancel = AtomicBool::new(false);
    let ctx = clreg_engine::job::RunContext {
        cancel: &cancel,
        events: &|_| {},
        digests: Default::default(),
        device: Default::default(),
    };
    let clreg_engine::job::JobOutput::Eval { reports } =
        clreg_engine::job::run(&spec, &ctx).unwrap()
    else {
        panic!("an eval job reports scores")
    };
    assert!(
        (remote_score - reports[0].score).abs() < 1e-9,
        "{remote_score} vs {}",
        reports[0].score
    );
    nothing_left(&server, &alice, &eval_id).await;
}

/// A dataset stored in a fully-cooperative collaboration by `client`; returns its digest.
async fn stored_dataset(client: &Client, name: &str, content: &str) -> clreg_types::Digest {
    let digest = client.upload(content.as_bytes(), 1 << 20).await;
    let (status, body) = client
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": name, "task": name, "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 8, "store_content": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    digest
}

#[tokio::test]
async fn full_collaborations_replay_and_joint_train_on_stored_data_as_a_local_run_does() {
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.create_collab("lab", "full").await;
    alice.add_member("lab", "bob", "contributor").await;
    let base = tiny_model_with_tokenizer(root, "base", 1);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let task = |word: &str| {
        serde_json::to_string(
            &(0..8)
                .map(|i| json!({"prompt": format!("w{i} w{}", i + 1), "answer": format!("{word}{}", i % 2)}))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let (current, past) = (task("w7"), task("w9"));
    let current_digest = stored_dataset(&alice, "current", &current).await;
    // Bob's data: in a fully-cooperative collaboration it may feed Alice's replay.
    let past_digest = stored_dataset(&bob, "past", &past).await;
    std::fs::write(root.join("current.json"), &current).unwrap();
    std::fs::write(root.join("past.json"), &past).unwrap();

    for (name, schedule) in [
        ("replayed", json!({"kind": "replay", "fraction": 0.5})),
        ("joint", json!({"kind": "joint"})),
    ] {
        let config = json!({"method": "lora", "max_steps": 3, "batch_size": 2, "grad_accum": 1,
                            "lr": 0.01, "max_len": 32, "seed": 5, "schedule": schedule});
        let (status, job) = alice
            .post(
                "/collaborations/lab/jobs",
                &json!({"kind": "train", "name": name, "base": "lab/base",
                        "data": [{"digest": current_digest}], "past": [{"digest": past_digest}],
                        "config": config}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        let done = wait(&alice, job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let id = done["result"]["artifacts"][0].as_str().unwrap();
        let (_, lineage) = alice.get(&format!("/artifacts/{id}/lineage")).await;
        let edge = &lineage["edges"][0];
        assert_eq!(edge["params"]["schedule"], schedule);
        assert_eq!(
            edge["datasets"],
            json!([current_digest.to_string(), past_digest.to_string()])
        );

        // The same run on the same files, locally: the same adapter, byte for byte.
        let out = root.join(format!("local-{name}"));
        let spec = clreg_engine::job::JobSpec::Train(clreg_engine::job::TrainSpec {
            base: base.clone(),
            adapters: vec![],
            data: vec![root.join("current.json")],
            past: vec![root.join("past.json")],
            output: out.clone(),
            checkpoint_dir: None,
            checkpoint_every: None,
            resume: false,
            config: serde_json::from_value(config).unwrap(),
        });
        clreg_tests::run_engine_job(&spec);
        let (_, artifact) = alice.get(&format!("/artifacts/{id}")).await;
        let served = served_files(&alice, &artifact).await;
        assert_eq!(
            served["adapter_model.safetensors"],
            std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
            "{name}"
        );
    }

    // Sequential full fine-tuning with replay: round 2 continues from round 1's checkpoint
    // (as its base), as the same two rounds run locally do, byte for byte.
    let fft = json!({"method": "fft", "max_steps": 2, "batch_size": 2, "grad_accum": 1,
                     "lr": 0.001, "max_len": 32, "seed": 5});
    let mut fft_replay = fft.clone();
    fft_replay["schedule"] = json!({"kind": "replay", "fraction": 0.5});
    let round = |name: &str, from: &str, past: Value, config: &Value| {
        json!({"kind": "train", "name": name, "base": from,
               "data": [{"digest": current_digest}], "past": past, "config": config})
    };
    let mut ids = Vec::new();
    for (name, from, past, config) in [
        ("fft1", "lab/base", json!([]), &fft),
        (
            "fft2",
            "lab/fft1",
            json!([{"digest": past_digest}]),
            &fft_replay,
        ),
    ] {
        let (status, job) = alice
            .post("/collaborations/lab/jobs", &round(name, from, past, config))
            .await;
        assert_eq!(status, 201, "{job}");
        let done = wait(&alice, job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        ids.push(done["result"]["artifacts"][0].as_str().unwrap().to_string());
    }
    let (_, second) = alice.get(&format!("/artifacts/{}", ids[1])).await;
    let (_, first) = alice.get(&format!("/artifacts/{}", ids[0])).await;
    assert_eq!(second["kind"], "checkpoint");
    assert_eq!(
        second["base"], first["base"],
        "the base model stays the root"
    );
    let (_, lineage) = alice.get(&format!("/artifacts/{}/lineage", ids[1])).await;
    let edge = lineage["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["child"] == ids[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(edge["parent"], ids[0].as_str());
    assert_eq!(edge["relation"], "finetune");
    let mut previous = base.clone();
    for (name, config, past) in [
        ("fft1", &fft, vec![]),
        ("fft2", &fft_replay, vec![root.join("past.json")]),
    ] {
        let out = root.join(format!("local-{name}"));
        clreg_tests::run_engine_job(&clreg_engine::job::JobSpec::Train(
            clreg_engine::job::TrainSpec {
                base: previous.clone(),
                adapters: vec![],
                data: vec![root.join("current.json")],
                past,
                output: out.clone(),
                checkpoint_dir: None,
                checkpoint_every: None,
                resume: false,
                config: serde_json::from_value(config.clone()).unwrap(),
            },
        ));
        previous = out;
    }
    let served = served_files(&alice, &second).await;
    assert_eq!(
        served["model.safetensors"],
        std::fs::read(previous.join("model.safetensors")).unwrap(),
        "sequential FFT through the registry differs from the local rounds"
    );
    // An adapter does not train on a checkpoint: its recorded base would not be what it
    // was trained on.
    let lora_on_checkpoint = alice
        .post(
            "/collaborations/lab/jobs",
            &round(
                "lora-on-fft",
                "lab/fft1",
                json!([]),
                &json!({"method": "lora"}),
            ),
        )
        .await;
    assert_error(&lora_on_checkpoint, 400, "bad_request");
}

#[tokio::test]
async fn a_running_job_is_cancelled_between_steps_and_leaves_nothing() {
    let server = server_with_worker().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let base = tiny_model_with_tokenizer(root, "base", 1);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let content = serde_json::to_string(
        &(0..8)
            .map(|i| json!({"prompt": format!("{MARKER} {i}"), "answer": "w3"}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let digest = clreg_tests::digest_of(content.as_bytes());
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "d", "task": "t", "metric": "exact", "digest": digest,
                    "size": content.len(), "examples": 8, "store_content": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Far more steps than the test waits for.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "train", "name": "long", "base": "lab/base",
                    "data": [{"digest": digest, "content": content}],
                    "config": {"max_steps": 1000000, "batch_size": 2, "grad_accum": 1,
                               "max_len": 32, "lr": 0.001}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // Running, with steps done.
    let mut running = false;
    for _ in 0..600 {
        let (_, j) = alice.get(&format!("/jobs/{id}")).await;
        if j["state"] == "running" && j["message"].as_str().unwrap_or("").starts_with("step") {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the job never reported a step");
    let (status, asked) = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{asked}");
    let ended = wait(&alice, &id).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let (_, listed) = alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "only the base");
    let events = ledger_of(&alice).await;
    assert!(events.iter().any(|e| e.kind == "job.cancelled"));
    nothing_left(&server, &alice, &id).await;
}

/// The artifacts staged in the worker's input cache, by id.
fn cached(server: &TestServer) -> Vec<String> {
    let dir = server.state.config.data_dir.join("cache/artifacts");
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_input_cache_evicts_the_least_recently_used_but_never_a_running_jobs_inputs() {
    use clreg_server::jobs::stage;
    let server = server_with_worker().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    three_models(&server, &alice, None).await;
    let merge = |name: &str| json!({"kind": "merge", "name": name, "recipe": RECIPE});
    let (_, job) = alice.post("/collaborations/lab/jobs", &merge("m1")).await;
    let done = wait(&alice, job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let id_of = |name: &str| {
        let alice = alice.clone();
        let name = name.to_string();
        async move {
            alice
                .get(&format!("/collaborations/lab/artifacts/{name}/1"))
                .await
                .1
        }
    };
    let b = id_of("b").await;
    let b_id = b["id"].as_str().unwrap().to_string();
    assert_eq!(cached(&server).len(), 3, "base, a and b are staged");

    // b is in use (as by a running job); nothing else is.
    let (_, _, held) = stage::stage_artifact(&server.state, &b_id).await.unwrap();
    let left = stage::evict(&server.state, 0).await.unwrap();
    let s3 = server
        .state
        .config
        .store
        .as_deref()
        .is_some_and(|s| s.starts_with("s3://"));
    if s3 {
        // Downloaded blobs cost their size: everything but b goes, and b's blobs stay.
        assert_eq!(cached(&server), vec![b_id.clone()]);
        let b_bytes: u64 = b["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["size"].as_u64().unwrap())
            .sum();
        assert_eq!(left, b_bytes);
        drop(held);
        assert_eq!(stage::evict(&server.state, 0).await.unwrap(), 0);
        assert!(cached(&server).is_empty());
    } else {
        // Blobs hard-linked from a local store cost nothing: nothing is evicted.
        assert_eq!(left, 0);
        assert_eq!(cached(&server).len(), 3);
        drop(held);
    }
    // A job after eviction stages its inputs again and gives the same result.
    let (_, job) = alice.post("/collaborations/lab/jobs", &merge("m2")).await;
    let again = wait(&alice, job["id"].as_str().unwrap()).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    let (_, m1) = alice.get("/collaborations/lab/artifacts/m1/1").await;
    let (_, m2) = alice.get("/collaborations/lab/artifacts/m2/1").await;
    let weights = |a: &Value| {
        a["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "model.safetensors")
            .unwrap()["digest"]
            .clone()
    };
    assert_eq!(weights(&m1), weights(&m2));
}

#[tokio::test]
async fn a_job_whose_output_is_refused_at_commit_fails_once_with_the_refusal() {
    let server = server_with_worker().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    three_models(&server, &alice, None).await;
    // `a` is a checkpoint: a merge may not become its next version.
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "a", "recipe": RECIPE}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let ended = wait(&alice, job["id"].as_str().unwrap()).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["error"]["code"], "conflict", "{ended}");
    assert_eq!(ended["attempts"], 1, "it is not run again");
    let (_, versions) = alice.get("/collaborations/lab/artifacts?name=a").await;
    assert_eq!(versions.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_stopped_as_by_a_crash_during_a_job_loses_nothing_and_runs_it_once() {
    // A cluster of this test's own, so stopping it disturbs no other test; the store is the
    // pass's own (local, or the in-process S3 server).
    let Some(cluster) = clreg_tests::PgCluster::start() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL's server binaries are missing"
        );
        eprintln!("SKIPPED: needs PostgreSQL's server binaries");
        return;
    };
    let url = cluster.url.clone();
    let server = TestServer::start_with(|c| {
        c.database_url = Some(url);
        c.workers = 1;
        c.job_runner = Some(PathBuf::from(env!("CARGO_BIN_EXE_clreg-server")));
        c.job_lease_secs = 3;
    })
    .await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    // Big enough that the merge takes a few seconds in a debug build.
    three_models(&server, &alice, Some((384, 4))).await;
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "m", "recipe": RECIPE}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let mut running = false;
    for _ in 0..600 {
        let (_, j) = alice.get(&format!("/jobs/{id}")).await;
        if j["state"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the job never started");

    // The database goes away mid-job, as in a crash, and comes back a few seconds later.
    cluster.stop_immediate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Readiness says so, at once (not after the pool's 30 s wait for a connection).
    let (status, body) = alice.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("database"),
        "{body}"
    );
    cluster.restart();

    // The job ends (requests may fail while the pool reconnects).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let (status, j) = alice.get(&format!("/jobs/{id}")).await;
        if status == 200
            && ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap())
        {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never ended: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "after the database's crash the job ended {} after {} attempt(s): {}",
        done["state"], done["attempts"], done["message"]
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    // Committed once: one artifact, one success in the ledger, and the ledger verifies.
    let (_, listed) = alice.get("/collaborations/lab/artifacts?name=m").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let events = ledger_of(&alice).await;
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("job.succeeded"), 1);
    assert_eq!(count("artifact.pushed"), 4); // three inputs and the merge
    clreg_server::ledger::verify(&events).unwrap();
    // Nothing committed before the crash was lost: the inputs still pull back whole.
    for name in ["base", "a", "b"] {
        let (status, a) = alice
            .get(&format!("/collaborations/lab/artifacts/{name}/1"))
            .await;
        assert_eq!(status, 200, "{a}");
    }
}
