//! `clreg audit verify` against a real server whose database is then tampered with the way
//! someone with database access would: each change is detected and named, as is a history
//! rewritten consistently after the auditor saved a checkpoint, and a swapped signing key.
#![allow(clippy::unwrap_used)]

mod common;

use clreg_tests::TestServer;
use common::Cli;
use sea_orm::{ConnectionTrait, EntityTrait};

/// A server with a collaboration of a few events, and an auditor (`carol`) logged in.
async fn audited() -> (TestServer, Cli) {
    let server = TestServer::start().await;
    let alice = Cli::alice_in_lab(&server, &server.url, "semi").await;
    for user in ["bob", "carol", "dave"] {
        clreg_server::admin::create_user(&server.state.db, user, false)
            .await
            .unwrap();
    }
    alice
        .ok(&[
            "collab",
            "add-member",
            "lab",
            "bob",
            "--role",
            "contributor",
        ])
        .await;
    alice
        .ok(&["collab", "add-member", "lab", "carol", "--role", "auditor"])
        .await;
    alice
        .ok(&["collab", "add-member", "lab", "dave", "--role", "consumer"])
        .await;
    let key = clreg_server::admin::create_key(&server.state.db, "carol")
        .await
        .unwrap();
    let carol = Cli::new();
    carol
        .ok(&["login", "--server", &server.url, "--api-key", &key])
        .await;
    (server, carol)
}

async fn sql(server: &TestServer, statement: &str) {
    server.state.db.execute_unprepared(statement).await.unwrap();
}

const CHAIN: &str = "chain LIKE 'collab:%'";

async fn refused(carol: &Cli, code: &str, needle: &str) {
    let out = carol.run(&["audit", "verify", "--collab", "lab"]).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains(code) && out.stderr.contains(needle),
        "expected {code} / {needle}: {}",
        out.stderr
    );
}

#[tokio::test]
async fn an_auditor_verifies_and_each_tampering_is_named() {
    let (server, carol) = audited().await;
    let first = carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    assert!(first.stderr.contains("on first use"), "{}", first.stderr);
    let again = carol
        .ok(&["--json", "audit", "verify", "--collab", "lab"])
        .await
        .json();
    assert_eq!(again["events"], 5);
    assert_eq!(again["previous_size"], 5);

    // An edited payload.
    sql(&server, &format!("UPDATE ledger_events SET payload = '{{\"user\":\"mallory\",\"role\":\"owner\"}}' WHERE seq = 3 AND {CHAIN}")).await;
    refused(&carol, "ledger_tampered", "event 3 has been altered").await;
}

#[tokio::test]
async fn deleted_reordered_and_inserted_events_are_named() {
    // Deleted.
    let (server, carol) = audited().await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    sql(
        &server,
        &format!("DELETE FROM ledger_events WHERE seq = 2 AND {CHAIN}"),
    )
    .await;
    refused(&carol, "ledger_tampered", "event 3 does not link").await;

    // Two events swapped.
    let (server, carol) = audited().await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    for step in [
        "UPDATE ledger_events SET seq = 100 WHERE seq = 3",
        "UPDATE ledger_events SET seq = 3 WHERE seq = 4",
        "UPDATE ledger_events SET seq = 4 WHERE seq = 100",
    ] {
        sql(&server, &format!("{step} AND {CHAIN}")).await;
    }
    refused(&carol, "ledger_tampered", "event 3 does not link").await;

    // One inserted in the middle (a copy of another, renumbered).
    let (server, carol) = audited().await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    sql(
        &server,
        &format!("UPDATE ledger_events SET seq = seq + 1000 WHERE seq >= 3 AND {CHAIN}"),
    )
    .await;
    sql(
        &server,
        &format!("UPDATE ledger_events SET seq = seq - 999 WHERE seq >= 1000 AND {CHAIN}"),
    )
    .await;
    sql(
        &server,
        &format!(
            "INSERT INTO ledger_events (chain, collab_id, seq, kind, actor, payload, created_at, \
             prev_hash, hash, scheme) SELECT chain, collab_id, 3, kind, 'mallory', payload, \
             created_at, prev_hash, hash, scheme FROM ledger_events WHERE seq = 2 AND {CHAIN}"
        ),
    )
    .await;
    refused(&carol, "ledger_tampered", "event 3").await;
}

#[tokio::test]
async fn a_history_rewritten_consistently_is_caught_by_the_saved_checkpoint() {
    let (server, carol) = audited().await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    // Someone with database access rewrites event 3 and re-chains everything after it: every
    // hash and link is right again, and the server signs what it now holds.
    sql(&server, &format!("UPDATE ledger_events SET payload = '{{\"role\":\"owner\",\"user\":\"carol\"}}' WHERE seq = 3 AND {CHAIN}")).await;
    let collab = clreg_server::db::entities::collaboration::Entity::find()
        .one(&server.state.db)
        .await
        .unwrap()
        .unwrap();
    let events = clreg_server::ledger::list(&server.state.db, Some((collab.id, &collab.name)))
        .await
        .unwrap();
    let mut prev = clreg_types::LEDGER_GENESIS.to_string();
    for e in &events {
        let hash = clreg_types::ledger_hash(
            e.scheme,
            &prev,
            e.seq,
            e.collab.as_deref(),
            &e.kind,
            &e.actor,
            &e.created_at,
            &e.payload,
        )
        .unwrap();
        sql(
            &server,
            &format!(
                "UPDATE ledger_events SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {} \
                 AND {CHAIN}",
                e.seq
            ),
        )
        .await;
        prev = hash;
    }
    let rewritten = clreg_server::ledger::list(&server.state.db, Some((collab.id, &collab.name)))
        .await
        .unwrap();
    clreg_server::ledger::verify(&rewritten).unwrap();
    refused(&carol, "history_rewritten", "rewritten").await;
    // A new auditor, with no saved checkpoint, cannot tell: that is what saving one is for.
}

#[tokio::test]
async fn a_swapped_signing_key_is_refused_until_trusted() {
    let (server, carol) = audited().await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
    // The same database and store, now signing with another key (a second process on another
    // port stands in for the same server restarted with a swapped key).
    let base = (*server.state.config).clone();
    let swapped = TestServer::start_with(move |c| {
        *c = base;
        c.ledger_signing_key = Some("11".repeat(32));
    })
    .await;
    let key = clreg_server::admin::create_key(&swapped.state.db, "carol")
        .await
        .unwrap();
    carol
        .ok(&["login", "--server", &swapped.url, "--api-key", &key])
        .await;
    let pinned_file = carol.home.path().join("config/ledger-keys.json");
    let mut pinned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pinned_file).unwrap()).unwrap();
    pinned[&swapped.url] = pinned[&server.url].clone();
    std::fs::write(&pinned_file, pinned.to_string()).unwrap();

    let keys: Vec<clreg_types::transparency::LedgerKey> =
        reqwest::get(format!("{}/.well-known/clreg/ledger-keys", swapped.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    refused(&carol, "untrusted_key", &keys[0].key_id).await;
    // Trusting the new key (checked out of band) makes the ledger verify again.
    carol.ok(&["audit", "trust", &keys[0].public_key]).await;
    carol.ok(&["audit", "verify", "--collab", "lab"]).await;
}

#[tokio::test]
async fn an_artifact_record_changed_after_its_commit_is_named() {
    let (server, carol) = audited().await;
    // alice pushes a model; carol's verify checks its record against the ledger.
    let alice_key = clreg_server::admin::create_key(&server.state.db, "alice")
        .await
        .unwrap();
    let alice = Cli::new();
    alice
        .ok(&["login", "--server", &server.url, "--api-key", &alice_key])
        .await;
    let model = clreg_tests::tiny_model(server.dir.path(), "base", 1, None);
    alice
        .ok(&[
            "push",
            model.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "llama",
        ])
        .await;
    let ok = carol
        .ok(&["--json", "audit", "verify", "--collab", "lab"])
        .await
        .json();
    assert_eq!(ok["artifacts"], 1);
    // Someone with database access points a file of it at other bytes (another stored blob).
    sql(
        &server,
        "UPDATE artifact_files SET digest = (SELECT digest FROM artifact_files \
         WHERE path = 'model.safetensors') WHERE path = 'config.json'",
    )
    .await;
    refused(&carol, "artifact_tampered", "file `config.json`").await;
}
