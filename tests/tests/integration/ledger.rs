//! The ledger records every change as a verifiable hash chain, and tampering shows.

use clreg_types::LedgerEvent;
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn every_change_is_chained_and_verifiable() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    alice.create_collab("lab", "full").await;
    alice.add_member("lab", "bob", "auditor").await;
    let digest = alice
        .upload(br#"[{"prompt":"p","answer":"a"}]"#, 1024)
        .await;
    let (status, _) = alice
        .post("/collaborations/lab/datasets", &json!({"name": "d", "task": "t", "metric": "accuracy", "digest": digest, "size": 1, "examples": 1, "store_content": true}))
        .await;
    assert_eq!(status, 201);
    alice
        .post("/collaborations/lab/policy", &json!({"policy": "semi"}))
        .await;
    let (status, body) = alice.get("/collaborations/lab/ledger").await;
    assert_eq!(status, 200);
    let events: Vec<LedgerEvent> = serde_json::from_value(body).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "collaboration.created",
            "member.added",
            "member.added",
            "dataset.registered",
            "policy.tightened",
            "dataset.purged"
        ]
    );
    assert_eq!(events[2].payload["user"], "bob");
    assert_eq!(events[0].prev_hash, clreg_server::ledger::GENESIS);
    assert_eq!(events[1].prev_hash, events[0].hash);
    clreg_server::ledger::verify(&events).unwrap();

    // Someone with database access edits a payload: verification names the event.
    server
        .state
        .db
        .execute_unprepared("UPDATE ledger_events SET payload = '{\"user\":\"mallory\",\"role\":\"auditor\"}' WHERE seq = 3 AND chain LIKE 'collab:%'")
        .await
        .unwrap();
    let (_, body) = alice.get("/collaborations/lab/ledger").await;
    let tampered: Vec<LedgerEvent> = serde_json::from_value(body).unwrap();
    assert_eq!(
        clreg_server::ledger::verify(&tampered),
        Err("event 3 has been altered".to_string())
    );

    // The server-wide chain holds user creation.
    let system = clreg_server::ledger::list(&server.state.db, None)
        .await
        .unwrap();
    assert_eq!(
        system.iter().filter(|e| e.kind == "user.created").count(),
        2
    );
    clreg_server::ledger::verify(&system).unwrap();
}

/// Events written before RFC 8785 was adopted (`v1`) and after (`jcs`) verify in one chain;
/// an event claiming the other scheme does not.
#[tokio::test]
async fn v1_and_jcs_events_verify_in_one_chain() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    // Rewrite the first event as a v1 event, as the server wrote them before this scheme.
    let events: Vec<LedgerEvent> =
        serde_json::from_value(alice.get("/collaborations/lab/ledger").await.1).unwrap();
    let first = &events[0];
    assert_eq!(first.scheme, clreg_types::LedgerScheme::Jcs);
    let v1 = clreg_types::ledger_hash(
        clreg_types::LedgerScheme::V1,
        &first.prev_hash,
        first.seq,
        first.collab.as_deref(),
        &first.kind,
        &first.actor,
        &first.created_at,
        &first.payload,
    )
    .unwrap();
    server
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE ledger_events SET scheme = 'v1', hash = '{v1}', payload = '{}' \
             WHERE seq = 1 AND chain LIKE 'collab:%'",
            clreg_types::canonical_json(&first.payload)
        ))
        .await
        .unwrap();
    // Later events link to it.
    server
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE ledger_events SET prev_hash = '{v1}' WHERE seq = 2 AND chain LIKE 'collab:%'"
        ))
        .await
        .unwrap();
    let events: Vec<LedgerEvent> =
        serde_json::from_value(alice.get("/collaborations/lab/ledger").await.1).unwrap();
    // seq 2's own hash covered the old prev_hash: re-chain it the way a v1-era server would
    // have written it, so only the scheme differs between the two events.
    let second = &events[1];
    let rehashed = clreg_types::ledger_hash(
        second.scheme,
        &second.prev_hash,
        second.seq,
        second.collab.as_deref(),
        &second.kind,
        &second.actor,
        &second.created_at,
        &second.payload,
    )
    .unwrap();
    server
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE ledger_events SET hash = '{rehashed}' WHERE seq = 2 AND chain LIKE 'collab:%'"
        ))
        .await
        .unwrap();
    alice.add_member("lab", "alice", "auditor").await;
    let events: Vec<LedgerEvent> =
        serde_json::from_value(alice.get("/collaborations/lab/ledger").await.1).unwrap();
    assert_eq!(events[0].scheme, clreg_types::LedgerScheme::V1);
    assert_eq!(
        events.last().unwrap().scheme,
        clreg_types::LedgerScheme::Jcs
    );
    clreg_server::ledger::verify(&events).unwrap();

    // Claiming the other scheme for an event breaks it.
    server
        .state
        .db
        .execute_unprepared(
            "UPDATE ledger_events SET scheme = 'jcs' WHERE seq = 1 AND chain LIKE 'collab:%'",
        )
        .await
        .unwrap();
    let events: Vec<LedgerEvent> =
        serde_json::from_value(alice.get("/collaborations/lab/ledger").await.1).unwrap();
    assert_eq!(
        clreg_server::ledger::verify(&events),
        Err("event 1 has been altered".to_string())
    );
}
