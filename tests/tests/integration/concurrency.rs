//! Concurrent writers on both backends: every write either succeeds or gets a clear answer,
//! never a 500; versions and ledger sequences stay distinct and gap-free.

use std::time::Instant;

use clreg_types::{ArtifactKind, CommitArtifact, LedgerEvent};
use futures::future::join_all;
use serde_json::json;

use crate::support::{Client, TestServer, tiny_model};

async fn ledger(client: &Client, collab: &str) -> Vec<LedgerEvent> {
    let (status, body) = client
        .get(&format!("/collaborations/{collab}/ledger"))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn concurrent_pushes_under_one_name_get_distinct_gap_free_versions() {
    const PUSHERS: u64 = 8;
    const ROUNDS: u64 = 4;
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("team", "semi").await;
    let mut users = Vec::new();
    for i in 0..PUSHERS {
        let name = format!("user{i}");
        users.push(server.user(&name).await);
        alice.add_member("team", &name, "owner").await;
    }
    let mut commit_seconds = 0.0;
    for round in 0..ROUNDS {
        // Upload first, then commit at one moment: uploads (offset updates) and commits
        // (version + ledger) of different users interleave, as with real `clreg push`es.
        let manifests = join_all(users.iter().enumerate().map(|(i, user)| {
            let dir = tiny_model(root, &format!("m{round}-{i}"), 100 * round + i as u64, None);
            async move { user.upload_dir(&dir).await }
        }))
        .await;
        let started = Instant::now();
        let results = join_all(users.iter().zip(manifests).map(|(user, files)| async move {
            let req = CommitArtifact {
                name: "shared-name".to_string(),
                kind: ArtifactKind::Base,
                base: None,
                files,
                parents: vec![],
                description: String::new(),
            };
            user.commit("team", &req).await
        }))
        .await;
        commit_seconds += started.elapsed().as_secs_f64();
        for (status, body) in &results {
            assert_eq!(*status, 201, "{body}");
        }
    }
    let total = PUSHERS * ROUNDS;
    eprintln!(
        "{total} concurrent commits in {commit_seconds:.3} s of commit time: {:.1} commits/s",
        total as f64 / commit_seconds
    );
    let (status, listed) = alice.get("/collaborations/team/artifacts").await;
    assert_eq!(status, 200, "{listed}");
    let mut versions: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_u64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    let events = ledger(&alice, "team").await;
    let pushed = events
        .iter()
        .filter(|e| e.kind == "artifact.pushed")
        .count();
    assert_eq!(pushed as u64, total);
    clreg_server::ledger::verify(&events).unwrap();
}

#[tokio::test]
async fn concurrent_registrations_member_changes_and_tightening_race_a_push() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "full").await;
    let mut users = Vec::new();
    for i in 0..6 {
        let name = format!("user{i}");
        users.push(server.user(&name).await);
        alice.add_member("lab", &name, "contributor").await;
    }
    // Six different datasets and one registered by two users at once.
    let datasets: Vec<String> = (0..6)
        .map(|i| format!(r#"[{{"prompt": "task {i}", "answer": "a{i}"}}]"#))
        .collect();
    let mut digests = Vec::new();
    for (user, data) in users.iter().zip(&datasets) {
        digests.push(user.upload(data.as_bytes(), 1 << 20).await);
    }
    let twice = users[0].upload(datasets[0].as_bytes(), 1 << 20).await;
    users[1].upload(datasets[0].as_bytes(), 1 << 20).await;
    let register = |user: &Client, digest: clreg_types::Digest, name: String| {
        let user = user.clone();
        async move {
            user.post(
                "/collaborations/lab/datasets",
                &json!({"name": name, "task": "t", "metric": "exact", "digest": digest,
                        "size": 1, "examples": 1, "store_content": true}),
            )
            .await
        }
    };
    let mut jobs = Vec::new();
    for (i, (user, digest)) in users.iter().zip(&digests).enumerate().skip(1) {
        jobs.push(register(user, digest.clone(), format!("d{i}")));
    }
    jobs.push(register(&users[0], twice.clone(), "d0".into()));
    jobs.push(register(&users[1], twice.clone(), "d0-again".into()));
    let results = join_all(jobs).await;
    let created = results.iter().filter(|r| r.0 == 201).count();
    let conflicts = results.iter().filter(|r| r.0 == 409).count();
    assert_eq!((created, conflicts), (6, 1), "{results:?}");

    // A push, member changes and the full → semi tightening, all at once.
    alice.add_member("lab", "user2", "owner").await;
    let base = tiny_model(root, "base", 1, None);
    let files = users[2].upload_dir(&base).await;
    let push = {
        let user = users[2].clone();
        async move {
            let req = CommitArtifact {
                name: "base".to_string(),
                kind: ArtifactKind::Base,
                base: None,
                files,
                parents: vec![],
                description: String::new(),
            };
            user.commit("lab", &req).await
        }
    };
    server.user("carol").await;
    let (carol, semi) = (
        json!({"user": "carol", "role": "auditor"}),
        json!({"policy": "semi"}),
    );
    let (pushed, added, removed, tightened) = tokio::join!(
        push,
        alice.post("/collaborations/lab/members", &carol),
        alice.delete("/collaborations/lab/members/user5"),
        alice.post("/collaborations/lab/policy", &semi),
    );
    assert_eq!(pushed.0, 201, "{}", pushed.1);
    assert_eq!(added.0, 200, "{}", added.1);
    assert_eq!(removed.0, 204, "{}", removed.1);
    assert_eq!(tightened.0, 200, "{}", tightened.1);
    assert_eq!(tightened.1["policy"], "semi");
    let events = ledger(&alice, "lab").await;
    clreg_server::ledger::verify(&events).unwrap();
    let registered = events
        .iter()
        .filter(|e| e.kind == "dataset.registered")
        .count();
    assert_eq!(registered, 6);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "policy.tightened")
            .count(),
        1
    );
    // Every stored dataset was purged by the tightening, whatever order things ran in.
    let (_, listed) = alice.get("/collaborations/lab/datasets").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["content_stored"] == false),
        "{listed}"
    );
}
