//! Every route is in the authorization table, and the table enforces itself.

use std::collections::BTreeSet;

use clreg_server::authz::{ROUTES, Rule, rule_for};
use reqwest::Method;

use crate::support::{Client, TestServer};

/// Routes outside the OpenAPI description (probes, the description itself, and the Hugging
/// Face Hub–compatible API, whose contract is the Hub's).
const PLAIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/hf/api/models/{c}/{n}"),
    ("GET", "/hf/api/models/{c}/{n}/revision/{rev}"),
    ("GET", "/hf/api/models/{c}/{n}/tree/{rev}"),
    ("GET", "/hf/api/models/{c}/{n}/tree/{rev}/{*path}"),
    ("POST", "/hf/api/models/{c}/{n}/paths-info/{rev}"),
    ("GET", "/hf/{c}/{n}/resolve/{rev}/{*path}"),
    // The web UI's pages (routes/ui), whose contract is HTML.
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/static/clreg.css"),
    ("GET", "/ui/static/clreg.js"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("POST", "/ui/logout"),
    ("GET", "/ui/"),
    ("GET", "/ui/c/{c}"),
    ("GET", "/ui/c/{c}/lineage"),
    ("GET", "/ui/c/{c}/ledger"),
    ("GET", "/ui/c/{c}/series/{s}"),
    ("GET", "/ui/artifacts/{id}"),
    ("GET", "/ui/artifacts/{id}/files/{*path}"),
    ("GET", "/ui/jobs/{id}"),
    ("GET", "/ui/jobs/{id}/events"),
    ("POST", "/ui/jobs/{id}/cancel"),
];

fn router_routes() -> BTreeSet<(String, String)> {
    let (_router, doc) = clreg_server::routes::api();
    let mut out = BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
            ("HEAD", item.head.is_some()),
        ];
        for (method, present) in methods {
            if present {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    for (m, p) in PLAIN_ROUTES {
        out.insert((m.to_string(), p.to_string()));
    }
    out
}

#[test]
fn every_route_has_a_rule_and_every_rule_a_route() {
    let routes = router_routes();
    assert!(
        routes.len() >= 25,
        "the router walk found only {} routes",
        routes.len()
    );
    let missing: Vec<_> = routes
        .iter()
        .filter(|(m, p)| rule_for(&Method::from_bytes(m.as_bytes()).unwrap(), p).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an authorization rule: {missing:?}"
    );
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let stale: Vec<_> = table.difference(&routes).collect();
    assert!(stale.is_empty(), "table entries with no route: {stale:?}");
}

#[tokio::test]
async fn non_public_routes_refuse_anonymous_callers() {
    let server = TestServer::start().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path, rule) in ROUTES {
        let concrete = path
            .replace("{c}", "c")
            .replace("{user}", "u")
            .replace(
                "{digest}",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            )
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "n")
            .replace("{version}", "1")
            .replace("{path}", "f")
            .replace("{*path}", "f")
            .replace("{s}", "s");
        let response = no_redirects
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{concrete}", server.url),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if *rule == Rule::Public {
            assert_ne!(status, 401, "{method} {path} is public");
        } else if path.starts_with("/ui") && *method == "GET" {
            // A page load without a session goes to the login form.
            assert_eq!(status, 303, "{method} {path} must need a session");
            let to = response.headers()["location"].to_str().unwrap();
            assert!(to.starts_with("/ui/login?next="), "{to}");
        } else {
            assert_eq!(status, 401, "{method} {path} must need a token");
        }
    }
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let server = TestServer::start().await;
    let (status, doc) = Client::anonymous(&server.url)
        .get("/api/v1/openapi.json")
        .await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths["/api/v1/collaborations/{c}/artifacts"]["post"]["requestBody"].is_object());
    assert!(paths.contains_key("/api/v1/blobs/uploads/{id}"));
    assert!(doc["components"]["schemas"]["CommitArtifact"].is_object());
    let (status, health) = Client::anonymous(&server.url).get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ready");
}
