//! Datasets under both policies: manifests always, content only where the policy allows.

use serde_json::json;

use crate::support::{TestServer, assert_error, digest_of};

const TRACE: &str = r#"[{"prompt": "Stance of: taxes are good", "answer": "favor"}, {"prompt": "Stance of: taxes are bad", "answer": "against"}]"#;

fn manifest(digest: &clreg_types::Digest, size: usize, store: bool) -> serde_json::Value {
    json!({"name": "cstance", "task": "C-STANCE", "metric": "accuracy", "digest": digest, "size": size, "examples": 2, "store_content": store})
}

#[tokio::test]
async fn full_collaborations_keep_validated_content_for_owners_and_contributors() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    alice.create_collab("shared", "full").await;
    alice.add_member("shared", "bob", "contributor").await;
    alice.add_member("shared", "carol", "auditor").await;

    let digest = bob.upload(TRACE.as_bytes(), 1 << 20).await;
    let (status, body) = bob.post("/collaborations/shared/datasets", &json!({
        "name": "cstance", "task": "C-STANCE", "metric": "accuracy", "digest": digest, "size": 1, "examples": 99, "store_content": true
    })).await;
    assert_eq!(status, 201, "{body}");
    // The server counts for itself.
    assert_eq!(body["examples"], 2);
    assert_eq!(body["size"], TRACE.len());
    assert_eq!(body["content_stored"], true);
    assert_error(
        &bob.post(
            "/collaborations/shared/datasets",
            &manifest(&digest, TRACE.len(), true),
        )
        .await,
        409,
        "conflict",
    );

    let (status, content) = alice
        .get(&format!("/collaborations/shared/datasets/{digest}/content"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(content[1]["answer"], "against");
    // Auditors get manifests, never bytes.
    assert_eq!(
        carol
            .get(&format!("/collaborations/shared/datasets/{digest}"))
            .await
            .0,
        200
    );
    assert_error(
        &carol
            .get(&format!("/collaborations/shared/datasets/{digest}/content"))
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &carol.get(&format!("/blobs/{digest}")).await,
        404,
        "blob_unknown",
    );

    // Not TRACE JSON: refused with the example named, nothing registered.
    for (bad, needle) in [
        (r#"{"prompt": "x"}"#, ""),
        (r#"[{"prompt": "x", "answer": "y"}, {"prompt": "x"}]"#, "1"),
        (r#"[{"prompt": 3, "answer": "y"}]"#, "0"),
        ("not json", ""),
    ] {
        let d = bob.upload(bad.as_bytes(), 1 << 20).await;
        let result = bob
            .post(
                "/collaborations/shared/datasets",
                &manifest(&d, bad.len(), true),
            )
            .await;
        assert_error(&result, 422, "invalid_dataset");
        assert!(result.1["message"].as_str().unwrap().contains(needle));
    }
    let (_, listed) = bob.get("/collaborations/shared/datasets").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Tightening the policy purges the content and keeps the manifest.
    let (status, _) = alice
        .post("/collaborations/shared/policy", &json!({"policy": "semi"}))
        .await;
    assert_eq!(status, 200);
    assert_error(
        &alice
            .get(&format!("/collaborations/shared/datasets/{digest}/content"))
            .await,
        403,
        "policy_forbids",
    );
    let (_, d) = alice
        .get(&format!("/collaborations/shared/datasets/{digest}"))
        .await;
    assert_eq!(d["content_stored"], false);
    assert_eq!(
        alice.head(&format!("/blobs/{digest}")).await,
        404,
        "purged content must be gone from the store"
    );
}

#[tokio::test]
async fn semi_collaborations_record_manifests_only() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    alice.create_collab("private", "semi").await;
    alice.add_member("private", "carol", "consumer").await;
    let digest = digest_of(TRACE.as_bytes());
    let result = alice
        .post(
            "/collaborations/private/datasets",
            &manifest(&digest, TRACE.len(), true),
        )
        .await;
    assert_error(&result, 403, "policy_forbids");
    assert!(result.1["message"].as_str().unwrap().contains("manifest"));
    let (status, body) = alice
        .post(
            "/collaborations/private/datasets",
            &manifest(&digest, TRACE.len(), false),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["content_stored"], false);
    assert_error(
        &alice
            .get(&format!(
                "/collaborations/private/datasets/{digest}/content"
            ))
            .await,
        403,
        "policy_forbids",
    );
    // Consumers may not register datasets.
    let other = digest_of(b"other");
    assert_error(
        &carol
            .post(
                "/collaborations/private/datasets",
                &manifest(&other, 5, false),
            )
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &alice
            .post("/collaborations/private/datasets", &json!({"name": "x"}))
            .await,
        400,
        "bad_request",
    );
}
