//! Identity: API keys, token exchange, and every kind of bad token.

use base64::Engine as _;
use clreg_server::config::JwtKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::{Client, TestServer, assert_error};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.jwt_keys = vec![JwtKey {
            kid: "test".into(),
            secret: SECRET.into(),
        }]
    })
    .await
}

fn token(kid: &str, secret: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(uid: i64, sub: &str, offset_exp: i64, aud: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "uid": uid, "iss": "clreg", "aud": aud, "iat": now, "nbf": now, "exp": now + offset_exp})
}

async fn with_token(
    server: &TestServer,
    token: String,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut c = Client::anonymous(&server.url);
    c.token = Some(token);
    c.get("/collaborations").await
}

#[tokio::test]
async fn api_key_exchange_and_refusals() {
    let server = server().await;
    let alice = server.user("alice").await;
    let (status, body) = alice.get("/collaborations").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([]));

    let anon = Client::anonymous(&server.url);
    assert_error(&anon.get("/collaborations").await, 401, "unauthenticated");
    assert_error(
        &anon
            .post("/auth/token", &json!({"api_key": "clreg_nope"}))
            .await,
        401,
        "invalid_api_key",
    );
    assert_error(
        &anon.post("/auth/token", &json!({"key": 1})).await,
        400,
        "bad_request",
    );

    // Revoked keys stop working.
    clreg_server::admin::revoke_keys(&server.state.db, "alice")
        .await
        .unwrap();
    let key = alice.api_key.clone().unwrap();
    assert_error(
        &anon.post("/auth/token", &json!({"api_key": key})).await,
        401,
        "invalid_api_key",
    );
}

#[tokio::test]
async fn forged_expired_wrong_audience_and_alg_none_tokens_are_refused() {
    let server = server().await;
    let _alice = server.user("alice").await;
    let uid = 1;
    // A correctly made token works, so the refusals below are about the one thing changed.
    let good = token("test", SECRET, claims(uid, "alice", 600, "clreg-api"));
    assert_eq!(with_token(&server, good).await.0, 200);

    let forged = token(
        "test",
        "another-secret-another-secret-0000",
        claims(uid, "alice", 600, "clreg-api"),
    );
    assert_error(&with_token(&server, forged).await, 401, "invalid_token");

    let expired = token("test", SECRET, claims(uid, "alice", -120, "clreg-api"));
    let result = with_token(&server, expired).await;
    assert_error(&result, 401, "invalid_token");
    assert!(result.1["message"].as_str().unwrap().contains("expired"));

    let audience = token("test", SECRET, claims(uid, "alice", 600, "someone-else"));
    assert_error(&with_token(&server, audience).await, 401, "invalid_token");

    let unknown_kid = token("other", SECRET, claims(uid, "alice", 600, "clreg-api"));
    assert_error(
        &with_token(&server, unknown_kid).await,
        401,
        "invalid_token",
    );

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT","kid":"test"}"#),
        b64.encode(claims(uid, "alice", 600, "clreg-api").to_string())
    );
    assert_error(&with_token(&server, none).await, 401, "invalid_token");

    // HS512 with the right secret is still an unexpected algorithm.
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("test".into());
    let hs512 = jsonwebtoken::encode(
        &header,
        &claims(uid, "alice", 600, "clreg-api"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_error(&with_token(&server, hs512).await, 401, "invalid_token");

    // A token for a user id that does not match its subject.
    let mismatched = token("test", SECRET, claims(uid, "mallory", 600, "clreg-api"));
    assert_error(&with_token(&server, mismatched).await, 401, "invalid_token");

    // Not a bearer token at all.
    let r = Client::anonymous(&server.url)
        .request(reqwest::Method::GET, "/collaborations")
        .header("authorization", "Basic abc");
    assert_error(
        &Client::anonymous(&server.url).send(r).await,
        401,
        "unauthenticated",
    );
}
