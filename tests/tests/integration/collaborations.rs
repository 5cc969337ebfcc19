//! Collaborations, members, roles and policy changes.

use serde_json::json;

use crate::support::{TestServer, assert_error};

#[tokio::test]
async fn create_list_members_and_roles() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    alice.create_collab("medical", "semi").await;
    assert_error(
        &alice
            .post(
                "/collaborations",
                &json!({"name": "medical", "policy": "full"}),
            )
            .await,
        409,
        "conflict",
    );
    assert_error(
        &alice
            .post(
                "/collaborations",
                &json!({"name": "../x", "policy": "full"}),
            )
            .await,
        400,
        "invalid_name",
    );
    assert_error(
        &alice
            .post("/collaborations", &json!({"name": "x", "policy": "open"}))
            .await,
        400,
        "bad_request",
    );

    // Non-members do not even learn that it exists.
    assert_error(&bob.get("/collaborations/medical").await, 404, "not_found");
    assert_error(
        &bob.post(
            "/collaborations/medical/members",
            &json!({"user": "bob", "role": "owner"}),
        )
        .await,
        404,
        "not_found",
    );

    alice.add_member("medical", "bob", "consumer").await;
    alice.add_member("medical", "bob", "auditor").await;
    let (status, body) = bob.get("/collaborations/medical").await;
    assert_eq!(status, 200);
    assert_eq!(body["policy"], "semi");
    assert_eq!(body["my_roles"], json!(["consumer", "auditor"]));
    let (_, list) = bob.get("/collaborations").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A consumer cannot manage members; an unknown user is named.
    assert_error(
        &bob.post(
            "/collaborations/medical/members",
            &json!({"user": "carol", "role": "owner"}),
        )
        .await,
        403,
        "forbidden",
    );
    assert_error(
        &alice
            .post(
                "/collaborations/medical/members",
                &json!({"user": "nobody", "role": "owner"}),
            )
            .await,
        404,
        "not_found",
    );
    let (_, members) = carol.get("/collaborations/medical/members").await;
    assert_eq!(members["code"], "not_found");

    let (status, members) = bob.get("/collaborations/medical/members").await;
    assert_eq!(status, 200);
    assert_eq!(
        members,
        json!([{"user": "alice", "roles": ["owner"]}, {"user": "bob", "roles": ["consumer", "auditor"]}])
    );

    // Remove one role, then the last owner cannot leave.
    let (status, _) = alice
        .delete("/collaborations/medical/members/bob?role=auditor")
        .await;
    assert_eq!(status, 204);
    assert_error(
        &alice.delete("/collaborations/medical/members/alice").await,
        409,
        "conflict",
    );
    let (status, _) = alice.delete("/collaborations/medical/members/bob").await;
    assert_eq!(status, 204);
    assert_error(&bob.get("/collaborations/medical").await, 404, "not_found");
}

#[tokio::test]
async fn policy_is_only_ever_tightened() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.create_collab("open-ish", "full").await;
    alice.add_member("open-ish", "bob", "contributor").await;
    assert_error(
        &bob.post(
            "/collaborations/open-ish/policy",
            &json!({"policy": "semi"}),
        )
        .await,
        403,
        "forbidden",
    );
    let (status, body) = alice
        .post(
            "/collaborations/open-ish/policy",
            &json!({"policy": "semi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "semi");
    assert_error(
        &alice
            .post(
                "/collaborations/open-ish/policy",
                &json!({"policy": "full"}),
            )
            .await,
        409,
        "policy_loosening",
    );
}
