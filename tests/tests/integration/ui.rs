//! The web UI over HTTP: login, sessions and form tokens, who sees what on each page, and that
//! every refusal matches the API's. (`browser.rs` drives the same pages in Chromium.)

use std::collections::BTreeMap;

use clreg_types::{ArtifactKind, CommitArtifact, ParentSpec, Relation};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::series::{BASE, TABLE4, harness};
use crate::support::{Client, TestServer, tiny_adapter, tiny_model};

/// The collaboration the UI tests (and the browser tests) look at: the study's Table 4 as
/// seven sequential LoRA rounds on a tiny base, a TIES merge of the first three, a series with
/// every score imported, a dataset manifest, and one member of each role plus a removed one.
pub(crate) struct Study {
    pub alice: Client,
    pub audrey: Client,
    pub carl: Client,
    pub olga: Client,
    pub remy: Client,
    /// Artifact ids: base, round1..=round7, merged.
    pub ids: BTreeMap<String, String>,
}

pub(crate) async fn study(server: &TestServer) -> Study {
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let mut ids = BTreeMap::new();
    let base = alice
        .push(
            "lab",
            "llama",
            ArtifactKind::Base,
            None,
            &tiny_model(root, "base", 1, None),
        )
        .await;
    ids.insert("base".to_string(), base["id"].as_str().unwrap().to_string());
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "cstance-train", "task": "cstance", "metric": "accuracy",
                    "digest": format!("sha256:{}", "ab".repeat(32)), "size": 4096, "examples": 60,
                    "license": "CC-BY-4.0"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let tiny = clreg_engine::tiny::TinyConfig::default();
    let edge = |parent: &str, relation: Relation, method: &str| ParentSpec {
        parent: parent.to_string(),
        relation,
        method: method.to_string(),
        params: BTreeMap::from([("r".to_string(), json!(4))]),
        datasets: vec![],
    };
    for r in 1..=7u64 {
        let files = alice
            .upload_dir(&tiny_adapter(root, &format!("round{r}"), r, &tiny))
            .await;
        let mut parents = vec![edge("lab/llama", Relation::Adapter, "lora")];
        if r > 1 {
            parents.push(edge(
                &format!("lab/round{}", r - 1),
                Relation::Finetune,
                "lora",
            ));
        }
        let req = CommitArtifact {
            name: format!("round{r}"),
            kind: ArtifactKind::Adapter,
            base: Some("lab/llama".into()),
            files,
            parents,
            description: format!("sequential LoRA, round {r}"),
        };
        let (status, body) = alice.commit("lab", &req).await;
        assert_eq!(status, 201, "{body}");
        ids.insert(
            format!("round{r}"),
            body["artifact"]["id"].as_str().unwrap().to_string(),
        );
    }
    let files = alice.upload_dir(&tiny_model(root, "merged", 9, None)).await;
    let req = CommitArtifact {
        name: "merged".into(),
        kind: ArtifactKind::Merge,
        base: Some("lab/llama".into()),
        files,
        parents: (1..=3)
            .map(|r| edge(&format!("lab/round{r}"), Relation::Merge, "ties"))
            .collect(),
        description: "TIES of the first three rounds".into(),
    };
    let (status, body) = alice.commit("lab", &req).await;
    assert_eq!(status, 201, "{body}");
    ids.insert(
        "merged".into(),
        body["artifact"]["id"].as_str().unwrap().to_string(),
    );

    let (status, body) = alice
        .post(
            "/collaborations/lab/series",
            &json!({"name": "lora7", "base": "lab/llama", "tasks": crate::series::TASKS,
                    "round_of_task": [1, 2, 3, 4, 5, 6, 7, 7]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let import = |artifact: &str, scores: &[f64]| {
        json!({"artifact": artifact, "format": "lm_eval", "content": harness(scores),
               "file": "results.json"})
    };
    let (status, body) = alice
        .post(
            "/collaborations/lab/evaluations",
            &import("lab/llama", &BASE),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (r, row) in TABLE4.iter().enumerate() {
        let (status, body) = alice
            .post(
                "/collaborations/lab/series/lora7/rounds",
                &json!({"artifact": format!("lab/round{}", r + 1)}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = alice
            .post(
                "/collaborations/lab/evaluations",
                &import(&format!("lab/round{}", r + 1), row),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let audrey = server.user("audrey").await;
    let carl = server.user("carl").await;
    let olga = server.user("olga").await;
    let remy = server.user("remy").await;
    alice.add_member("lab", "audrey", "auditor").await;
    alice.add_member("lab", "carl", "consumer").await;
    alice.add_member("lab", "remy", "contributor").await;
    let (status, body) = alice.delete("/collaborations/lab/members/remy").await;
    assert_eq!(status, 204, "{body}");
    Study {
        alice,
        audrey,
        carl,
        olga,
        remy,
        ids,
    }
}

/// A merge job in the study's collaboration that stays queued (these tests run no worker).
pub(crate) async fn queued_job(alice: &Client) -> String {
    let recipe = "merge_method: linear\nmodels:\n  - model: lab/llama\n    parameters: {weight: 0.5}\n  - model: lab/merged\n    parameters: {weight: 0.5}\ndtype: float32\n";
    let (status, job) = alice
        .post(
            "/collaborations/lab/jobs",
            &json!({"kind": "merge", "name": "avg", "recipe": recipe}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

/// A browser-like client of the UI: follows no redirects, keeps the session cookie.
pub(crate) struct Web {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

pub(crate) struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a form token");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl Web {
    pub fn new(server: &TestServer) -> Web {
        Web {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: server.url.clone(),
            cookie: None,
        }
    }

    /// Logs in with `client`'s API key through the form.
    pub async fn login(server: &TestServer, client: &Client) -> Web {
        let mut web = Web::new(server);
        let page = web
            .login_attempt(client.api_key.as_deref().unwrap(), "/ui/")
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let session = page
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("clreg_session="))
            .expect("a session cookie");
        web.cookie = Some(session.split(';').next().unwrap().to_string());
        web
    }

    /// Fetches the form and posts `key` with its token and cookie.
    pub async fn login_attempt(&self, key: &str, next: &str) -> Page {
        let form = self.get("/ui/login").await;
        assert_eq!(form.status, 200);
        let login_cookie = form
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("clreg_login="))
            .expect("a login cookie");
        let login_cookie = login_cookie.split(';').next().unwrap().to_string();
        let response = self
            .http
            .post(format!("{}/ui/login", self.base))
            .header("cookie", login_cookie)
            .form(&[("api_key", key), ("csrf", &form.csrf()), ("next", next)])
            .send()
            .await
            .unwrap();
        page(response).await
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        page(r.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut r = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        page(r.send().await.unwrap()).await
    }
}

async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// The stable code a refusal page shows.
fn shown_code(page: &Page) -> String {
    let at = page.body.find(r#"<code class="code">"#).expect("a code");
    let rest = &page.body[at + r#"<code class="code">"#.len()..];
    rest[..rest.find('<').unwrap()].to_string()
}

#[tokio::test]
async fn login_sessions_form_tokens_and_logout() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    alice.create_collab("lab", "semi").await;
    let anon = Web::new(&server);

    // Anonymous page loads go to the login form and come back; other methods are refused.
    let page = anon.get("/ui/c/lab").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/login?next=%2Fui%2Fc%2Flab");
    let page = anon.post("/ui/logout", &[("csrf", "x")]).await;
    assert_eq!(page.status, 401);
    assert_eq!(shown_code(&page), "unauthenticated");
    assert_eq!(anon.get("/").await.location(), "/ui/");

    // A wrong key: the form again with the reason; a missing form token: refused.
    let page = anon.login_attempt("clreg_0000", "/ui/").await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.contains("unknown or revoked API key"),
        "{}",
        page.body
    );
    let page = anon
        .post(
            "/ui/login",
            &[
                ("api_key", alice.api_key.as_deref().unwrap()),
                ("next", "/ui/"),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(shown_code(&page), "csrf_rejected");
    // An off-site `next` is ignored.
    let page = anon
        .login_attempt(alice.api_key.as_deref().unwrap(), "https://evil.example/")
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/");
    let page = anon
        .login_attempt(alice.api_key.as_deref().unwrap(), "/ui/c/lab")
        .await;
    assert_eq!(page.location(), "/ui/c/lab");
    let session = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("clreg_session="))
        .unwrap();
    assert!(session.contains("; HttpOnly") && session.contains("; SameSite=Strict"));
    assert!(
        session.contains("; Path=/ui") && !session.contains("Secure"),
        "{session}"
    );

    let web = Web::login(&server, &alice).await;
    let home = web.get("/ui/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains(r#"href="/ui/c/lab""#));
    for (header, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(home.headers[header], value);
    }
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));

    // Logout needs the session's token: without it, or with another session's, refused.
    let other = Web::login(&server, &alice).await;
    let other_token = other.get("/ui/").await.csrf();
    for bad in [vec![], vec![("csrf", other_token.as_str())]] {
        let page = web.post("/ui/logout", &bad).await;
        assert_eq!(page.status, 403);
        assert_eq!(shown_code(&page), "csrf_rejected");
    }
    assert_eq!(web.get("/ui/").await.status, 200, "still logged in");
    let page = web.post("/ui/logout", &[("csrf", &home.csrf())]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/login");
    assert_eq!(web.get("/ui/").await.status, 303, "the session is gone");
    assert_eq!(other.get("/ui/").await.status, 200, "other sessions stay");

    // Revoking the user's keys ends their sessions too.
    clreg_server::admin::revoke_keys(&server.state.db, "alice")
        .await
        .unwrap();
    assert_eq!(other.get("/ui/").await.status, 303);
}

#[tokio::test]
async fn pages_show_what_each_role_may_see_and_refuse_like_the_api() {
    let server = TestServer::start().await;
    let s = study(&server).await;
    let merged = &s.ids["merged"];
    let round1 = &s.ids["round1"];

    // The owner: every page, download links, the bytes themselves.
    let alice = Web::login(&server, &s.alice).await;
    for path in [
        "/ui/".to_string(),
        "/ui/c/lab".into(),
        "/ui/c/lab/lineage".into(),
        "/ui/c/lab/ledger".into(),
        "/ui/c/lab/series/lora7".into(),
        format!("/ui/artifacts/{merged}"),
    ] {
        let page = alice.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
    }
    let page = alice.get(&format!("/ui/artifacts/{round1}")).await;
    assert!(page.body.contains(r#"class="download""#));
    assert!(page.body.contains("sequential LoRA, round 1"));
    let link = format!("/ui/artifacts/{round1}/files/adapter_config.json");
    assert!(
        page.body.contains(&format!(r#"href="{link}""#)),
        "{}",
        page.body
    );
    let file = alice.get(&link).await;
    assert_eq!(file.status, 200);
    let (_, api_bytes) = s
        .alice
        .get(&format!("/artifacts/{round1}/files/adapter_config.json"))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&file.body).unwrap(),
        api_bytes
    );
    // Provenance names the parents with relation and method; the merge its three inputs.
    let page = alice.get(&format!("/ui/artifacts/{merged}")).await;
    assert_eq!(
        page.body.matches("<td>ties</td>").count(),
        3,
        "{}",
        page.body
    );

    // The auditor: pages, no download links, the API's refusal on the file URL.
    let audrey = Web::login(&server, &s.audrey).await;
    let page = audrey.get(&format!("/ui/artifacts/{round1}")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(r#"class="download""#));
    assert!(!page.body.contains("/files/"));
    assert!(page.body.contains("metadata only"));
    let refused = audrey.get(&link).await;
    let (api_status, api_body) = s
        .audrey
        .get(&format!("/artifacts/{round1}/files/adapter_config.json"))
        .await;
    assert_eq!(refused.status, api_status);
    assert_eq!(refused.status, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&refused.body).unwrap(),
        api_body
    );
    assert_eq!(api_body["code"], "forbidden");
    assert_eq!(audrey.get("/ui/c/lab/ledger").await.status, 200);

    // The consumer: manifests but no dataset content anywhere.
    let carl = Web::login(&server, &s.carl).await;
    let page = carl.get("/ui/c/lab").await;
    assert!(page.body.contains("cstance-train") && page.body.contains("manifest only"));
    assert!(!page.body.contains("/content"));

    // An outsider and a removed member: not found, as the API says, on every page.
    for client in [&s.olga, &s.remy] {
        let web = Web::login(&server, client).await;
        assert!(!web.get("/ui/").await.body.contains("/ui/c/lab"));
        for path in [
            "/ui/c/lab".to_string(),
            "/ui/c/lab/lineage".into(),
            "/ui/c/lab/ledger".into(),
            "/ui/c/lab/series/lora7".into(),
            format!("/ui/artifacts/{round1}"),
            link.clone(),
        ] {
            let page = web.get(&path).await;
            assert_eq!(page.status, 404, "{path}");
        }
        let (status, _) = client.get("/collaborations/lab").await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn the_collaboration_graph_and_its_page_hold_every_artifact_and_edge() {
    let server = TestServer::start().await;
    let s = study(&server).await;
    let (status, graph) = s.audrey.get("/collaborations/lab/lineage").await;
    assert_eq!(status, 200, "{graph}");
    assert_eq!(graph["root"], "lab");
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 9);
    // 7 rounds on the base, 6 round-to-round, 3 into the merge.
    assert_eq!(graph["edges"].as_array().unwrap().len(), 16);
    let (status, _) = s.olga.get("/collaborations/lab/lineage").await;
    assert_eq!(status, 404);

    let web = Web::login(&server, &s.audrey).await;
    let page = web.get("/ui/c/lab/lineage").await;
    for id in s.ids.values() {
        assert_eq!(
            page.body
                .matches(&format!(r#"href="/ui/artifacts/{id}""#))
                .count(),
            1,
            "{id}"
        );
    }
    assert!(page.body.contains("<title") && page.body.contains("<desc"));
}

#[tokio::test]
async fn the_ledger_page_shows_what_verifies_and_what_does_not() {
    use sea_orm::ConnectionTrait;
    let server = TestServer::start().await;
    let s = study(&server).await;
    let web = Web::login(&server, &s.audrey).await;
    let page = web.get("/ui/c/lab/ledger").await;
    assert_eq!(page.body.matches("✓ verified").count(), 1, "{}", page.body);
    let (_, checkpoint) = s.audrey.get("/collaborations/lab/ledger/checkpoint").await;
    let size = checkpoint["checkpoint"]["size"].as_u64().unwrap();
    assert!(page.body.contains(&format!(r#"id="tree-size">{size}<"#)));

    // Someone with database access edits an event: the page says the chain is broken.
    let db = &server.state.db;
    db.execute_unprepared(
        "UPDATE ledger_events SET actor = 'mallory' WHERE seq = 3 AND chain LIKE 'collab:%'",
    )
    .await
    .unwrap();
    let page = web.get("/ui/c/lab/ledger").await;
    assert!(page.body.contains("✗"), "{}", page.body);
}

#[tokio::test]
async fn a_jobs_page_follows_it_live_and_cancels_with_the_form_token() {
    let server = TestServer::start().await;
    let s = study(&server).await;
    let job = queued_job(&s.alice).await;
    let id = job.as_str();
    let alice = Web::login(&server, &s.alice).await;
    let page = alice.get(&format!("/ui/jobs/{id}")).await;
    assert_eq!(page.status, 200);
    // Live: the event stream and the no-script refresh; the cancel form with its token.
    assert!(
        page.body
            .contains(&format!(r#"data-events="/ui/jobs/{id}/events""#))
    );
    assert!(page.body.contains(r#"http-equiv="refresh""#));
    assert!(
        page.body
            .contains(&format!(r#"action="/ui/jobs/{id}/cancel""#))
    );

    // The auditor reads the job but gets no cancel form, and the route refuses it.
    let audrey = Web::login(&server, &s.audrey).await;
    let seen = audrey.get(&format!("/ui/jobs/{id}")).await;
    assert_eq!(seen.status, 200);
    assert!(!seen.body.contains("/cancel"));
    let refused = audrey
        .post(&format!("/ui/jobs/{id}/cancel"), &[("csrf", &seen.csrf())])
        .await;
    assert_eq!(refused.status, 403);

    // The stream: the queued state at once, then the cancellation, then it ends.
    let mut r = reqwest::Client::new()
        .get(format!("{}/ui/jobs/{id}/events", server.url))
        .header("cookie", alice.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !seen.contains("\"state\":\"queued\"") {
        seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
    }
    // A form without the token changes nothing.
    let page = alice.post(&format!("/ui/jobs/{id}/cancel"), &[]).await;
    assert_eq!(page.status, 403);
    let (_, still) = s.alice.get(&format!("/jobs/{id}")).await;
    assert_eq!(still["state"], "queued");
    let page = alice
        .post(
            &format!("/ui/jobs/{id}/cancel"),
            &[("csrf", &page_token(&alice, id).await)],
        )
        .await;
    assert_eq!(page.status, 303);
    while let Some(chunk) = r.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: job"), "{seen}");
    assert!(seen.contains("\"state\":\"cancelled\""), "{seen}");
    let done = alice.get(&format!("/ui/jobs/{id}")).await;
    assert!(!done.body.contains("data-events") && !done.body.contains("http-equiv"));
}

async fn page_token(web: &Web, job: &str) -> String {
    web.get(&format!("/ui/jobs/{job}")).await.csrf()
}

/// Render times of every page for a 200-artifact collaboration (a chain of 100 rounds and 100
/// merges of neighbouring rounds), printed; run with
/// `cargo nextest run -p clreg-tests --run-ignored only -E 'test(ui_render_times)' --no-capture`
/// (release: add `--cargo-profile release`).
#[tokio::test]
#[ignore = "a measurement, not a check: run it by name"]
async fn ui_render_times() {
    let server = TestServer::start().await;
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("big", "semi").await;
    let files = alice.upload_dir(&tiny_model(root, "m", 1, None)).await;
    let commit = |name: String, parents: Vec<String>, method: &str| {
        let req = CommitArtifact {
            name,
            kind: if parents.is_empty() {
                ArtifactKind::Base
            } else {
                ArtifactKind::Checkpoint
            },
            base: (!parents.is_empty()).then(|| "big/r0".to_string()),
            files: files.clone(),
            parents: parents
                .into_iter()
                .map(|p| ParentSpec {
                    parent: p,
                    relation: Relation::Finetune,
                    method: method.to_string(),
                    params: BTreeMap::new(),
                    datasets: vec![],
                })
                .collect(),
            description: String::new(),
        };
        let alice = alice.clone();
        async move {
            let (status, body) = alice.commit("big", &req).await;
            assert_eq!(status, 201, "{body}");
            body["artifact"]["id"].as_str().unwrap().to_string()
        }
    };
    let mut last = commit("r0".into(), vec![], "").await;
    let mut rounds = vec![last.clone()];
    for i in 1..100 {
        last = commit(format!("r{i}"), vec![format!("big/r{}", i - 1)], "fft").await;
        rounds.push(last.clone());
    }
    for i in 0..100 {
        let j = (i + 1) % 100;
        commit(
            format!("m{i}"),
            vec![format!("big/r{i}"), format!("big/r{j}")],
            "ties",
        )
        .await;
    }
    let web = Web::login(&server, &alice).await;
    for path in [
        "/ui/c/big".to_string(),
        "/ui/c/big/lineage".into(),
        "/ui/c/big/ledger".into(),
        format!("/ui/artifacts/{}", rounds[50]),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let page = web.get(&path).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(page.status, 200);
            bytes = page.body.len();
        }
        times.sort_by(f64::total_cmp);
        if path.ends_with("/lineage") {
            // The page itself, with its stylesheet inlined, to look at.
            let page = web.get(&path).await.body.replace(
                r#"<link rel="stylesheet" href="/ui/static/clreg.css">"#,
                &format!("<style>{}</style>", clreg_web::CSS),
            );
            let file =
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-200-lineage.html");
            std::fs::write(&file, page).unwrap();
            println!("wrote {}", file.display());
        }
        println!(
            "{path}: median {:.1} ms (min {:.1}, max {:.1}), {bytes} bytes",
            times[2], times[0], times[4]
        );
    }
}

#[tokio::test]
async fn live_job_views_are_bounded_and_end_with_the_session() {
    let server = TestServer::start().await;
    let s = study(&server).await;
    let job = queued_job(&s.alice).await;
    let events = format!("{}/ui/jobs/{job}/events", server.url);
    let open = |web: &Web| {
        reqwest::Client::new()
            .get(&events)
            .header("cookie", web.cookie.clone().unwrap())
            .send()
    };
    let alice = Web::login(&server, &s.alice).await;
    let mut held = Vec::new();
    for _ in 0..clreg_server::routes::ui::events::MAX_PER_USER {
        let r = open(&alice).await.unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    // One more from the same user is refused; another user still gets one.
    let refused = open(&alice).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "busy");
    let audrey = Web::login(&server, &s.audrey).await;
    let mut watching = open(&audrey).await.unwrap();
    assert_eq!(watching.status(), 200);
    // A closed stream gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let r = open(&alice).await.unwrap();
        if r.status() == 200 {
            again = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the place came back");

    // Logging out ends the auditor's open stream at its next check.
    let token = audrey.get("/ui/").await.csrf();
    assert_eq!(
        audrey.post("/ui/logout", &[("csrf", &token)]).await.status,
        303
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while watching.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the session");
}

#[tokio::test]
async fn cookies_are_secure_behind_tls_or_when_configured() {
    let session_cookie = |page: &Page| {
        page.set_cookies()
            .into_iter()
            .find(|c| c.starts_with("clreg_session="))
            .unwrap()
    };
    // Configured: every cookie is Secure.
    let server = TestServer::start_with(|c| c.secure_cookies = true).await;
    let alice = server.user("alice").await;
    let page = Web::new(&server)
        .login_attempt(alice.api_key.as_deref().unwrap(), "/ui/")
        .await;
    assert!(session_cookie(&page).ends_with("; Secure"));
    let form = Web::new(&server).get("/ui/login").await;
    assert!(form.set_cookies()[0].ends_with("; Secure"));
    // Not configured: Secure when a TLS proxy says the request came over https.
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/ui/login", server.url))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with("clreg_login=") && set.ends_with("; Secure"),
        "{set}"
    );
}
