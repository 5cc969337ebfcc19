//! Resumable uploads: order, digests, limits, resume, ranged reads and who may read a blob.

use reqwest::Method;

use crate::support::{TestServer, assert_error, digest_of};

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn chunked_upload_head_and_range_reads() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bytes = pattern(3 * 1024 * 1024 + 17);
    let digest = alice.upload(&bytes, 1024 * 1024).await;

    let head = alice
        .request(reqwest::Method::HEAD, &format!("/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let missing = digest_of(b"never uploaded");
    assert_eq!(alice.head(&format!("/blobs/{missing}")).await, 404);

    // A blob nobody references cannot be read back by anyone (it is not in any artifact yet).
    assert_error(
        &alice.get(&format!("/blobs/{digest}")).await,
        404,
        "blob_unknown",
    );
    assert_error(&alice.get("/blobs/sha256:xyz").await, 400, "invalid_digest");
}

#[tokio::test]
async fn out_of_order_chunks_are_refused_and_the_upload_resumes() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bytes = pattern(10_000);
    let id = alice.open_upload().await;
    let (status, body) = alice.patch(&id, 0, bytes[..4000].to_vec()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["offset"], 4000);
    // A chunk that skips ahead, and one that repeats, are both refused without harm.
    assert_error(
        &alice.patch(&id, 6000, bytes[6000..].to_vec()).await,
        416,
        "upload_out_of_order",
    );
    assert_error(
        &alice.patch(&id, 0, bytes[..4000].to_vec()).await,
        416,
        "upload_out_of_order",
    );
    // The client asks where to resume and finishes.
    let (status, body) = alice.get(&format!("/blobs/uploads/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["offset"], 4000);
    let (status, _) = alice.patch(&id, 4000, bytes[4000..].to_vec()).await;
    assert_eq!(status, 202);
    let digest = digest_of(&bytes);
    let (status, body) = alice.finish(&id, &digest.to_string()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], 10_000);
    // Sessions are private: another user cannot see or use it (and it is gone now anyway).
    let bob = server.user("bob").await;
    let id2 = alice.open_upload().await;
    assert_error(
        &bob.get(&format!("/blobs/uploads/{id2}")).await,
        404,
        "upload_unknown",
    );
    assert_error(
        &bob.patch(&id2, 0, vec![1, 2, 3]).await,
        404,
        "upload_unknown",
    );
    assert_eq!(alice.patch(&id2, 0, vec![1]).await.0, 202);
}

#[tokio::test]
async fn digest_mismatch_discards_the_upload() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bytes = pattern(5000);
    let id = alice.open_upload().await;
    assert_eq!(alice.patch(&id, 0, bytes.clone()).await.0, 202);
    let wrong = digest_of(b"something else");
    assert_error(
        &alice.finish(&id, &wrong.to_string()).await,
        422,
        "digest_mismatch",
    );
    // Nothing became visible, and the session is gone.
    assert_eq!(alice.head(&format!("/blobs/{wrong}")).await, 404);
    let real = digest_of(&bytes);
    assert_eq!(alice.head(&format!("/blobs/{real}")).await, 404);
    assert_error(
        &alice.get(&format!("/blobs/uploads/{id}")).await,
        404,
        "upload_unknown",
    );
    assert_error(
        &alice.finish(&id, "sha256:abc").await,
        400,
        "invalid_digest",
    );
}

#[tokio::test]
async fn uploads_over_the_limits_are_refused() {
    let server = TestServer::start_with(|c| {
        c.max_blob_size = 10_000;
        c.max_chunk_size = 4096;
    })
    .await;
    let alice = server.user("alice").await;
    // A chunk over the chunk limit, declared by Content-Length: refused before reading.
    let id = alice.open_upload().await;
    assert_error(&alice.patch(&id, 0, pattern(5000)).await, 413, "too_large");
    // The blob limit: three chunks of 4000 would be 12000 > 10000.
    let id = alice.open_upload().await;
    assert_eq!(alice.patch(&id, 0, pattern(4000)).await.0, 202);
    assert_eq!(alice.patch(&id, 4000, pattern(4000)).await.0, 202);
    assert_error(
        &alice.patch(&id, 8000, pattern(4000)).await,
        413,
        "too_large",
    );
    // The session was aborted and nothing was stored.
    assert_error(
        &alice.get(&format!("/blobs/uploads/{id}")).await,
        404,
        "upload_unknown",
    );
    assert_eq!(alice.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn aborted_uploads_leave_nothing() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let id = alice.open_upload().await;
    assert_eq!(alice.patch(&id, 0, pattern(100)).await.0, 202);
    let (status, _) = alice
        .send(alice.request(Method::DELETE, &format!("/blobs/uploads/{id}")))
        .await;
    assert_eq!(status, 204);
    assert_error(
        &alice.patch(&id, 100, pattern(100)).await,
        404,
        "upload_unknown",
    );
}

#[tokio::test]
async fn abandoned_uploads_expire_and_are_swept() {
    let server = TestServer::start_with(|c| c.upload_ttl_secs = 0).await;
    let alice = server.user("alice").await;
    let id = alice.open_upload().await;
    assert_error(
        &alice.patch(&id, 0, pattern(10)).await,
        404,
        "upload_unknown",
    );
    let swept = clreg_server::uploads::sweep_expired(&server.state)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert_eq!(
        clreg_server::uploads::sweep_expired(&server.state)
            .await
            .unwrap(),
        0
    );
}
