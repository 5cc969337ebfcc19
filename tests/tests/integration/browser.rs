//! The web UI in a real browser: headless Chromium driven through ChromeDriver (both from
//! Debian; `.ci/run` installs them). Logs in, clicks through the lineage graph, checks every
//! number on the series page against the API's report, follows a job live, checks that forms
//! without their token and an auditor's download are refused, that no page logs a console
//! error, and saves a screenshot of each page under the target dir.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clreg_types::SeriesReport;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::TestServer;
use crate::ui::study;

/// ChromeDriver on a free port, with a headless Chromium session; both end on drop.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Drop for Browser {
    /// Ends ChromeDriver and the Chromium it started (its own process group), also when a test
    /// fails midway.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// `None` (with a note) where ChromeDriver is not installed, except in CI, where that fails.
async fn browser() -> Option<Browser> {
    let Some(driver_bin) = on_path("chromedriver") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is not installed: `apt-get install chromium chromium-driver` (.ci/run does)"
        );
        eprintln!("SKIPPED: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1400,1100"]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        // Plain HTTP to ChromeDriver on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
                std::fs::create_dir_all(&shots).unwrap();
                return Some(Browser {
                    client,
                    driver,
                    shots,
                });
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start: {last:?}");
}

/// ChromeDriver's browser log (console messages), emptied by each read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

impl Browser {
    async fn go(&self, server: &TestServer, path: &str) {
        self.client
            .goto(&format!("{}{path}", server.url))
            .await
            .unwrap();
    }

    fn path(&self, url: url::Url) -> String {
        url.path().to_string()
    }

    async fn here(&self) -> String {
        self.path(self.client.current_url().await.unwrap())
    }

    /// Waits (up to 10 s) for a navigation a click started to land on `path`.
    async fn arrive(&self, path: &str) {
        let mut here = String::new();
        for _ in 0..100 {
            here = self.here().await;
            if here == path {
                // Landed; let the page finish loading before it is read.
                self.client
                    .wait()
                    .for_element(Locator::Css("footer"))
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected to arrive at {path}, still at {here}");
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Console messages since the last read.
    async fn console(&self) -> Vec<Value> {
        match self.client.issue_cmd(BrowserLog).await.unwrap() {
            Value::Array(entries) => entries,
            other => panic!("unexpected log answer {other}"),
        }
    }

    /// Fails on any console error since the last read.
    async fn no_console_errors(&self, page: &str) {
        let errors: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "{page}: console errors {errors:?}");
    }

    async fn log_in(&self, server: &TestServer, path: &str, key: &str) {
        self.go(server, path).await;
        assert_eq!(
            self.here().await,
            "/ui/login",
            "an anonymous visit goes to the login form"
        );
        self.client
            .find(Locator::Id("api_key"))
            .await
            .unwrap()
            .send_keys(key)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("form.login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.arrive(path).await; // back where the visit began
    }
}

#[tokio::test]
async fn the_ui_in_chromium() {
    let Some(b) = browser().await else { return };
    let server = TestServer::start().await;
    let s = study(&server).await;

    // Log in; the collaboration page.
    b.log_in(&server, "/ui/c/lab", s.alice.api_key.as_deref().unwrap())
        .await;
    assert!(b.text("h1").await.starts_with("lab"));
    assert!(b.text("#policy + p").await.starts_with("Semi-cooperative"));
    b.screenshot("collaboration").await;
    b.no_console_errors("collaboration").await;

    // The lineage graph: every artifact a link; a click opens the artifact.
    b.client
        .find(Locator::LinkText("Lineage graph"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive("/ui/c/lab/lineage").await;
    let nodes = b
        .client
        .find_all(Locator::Css(".graph svg a"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), s.ids.len());
    // A title is not rendered text: read its content.
    let title = b
        .client
        .find(Locator::Css(".graph svg > title"))
        .await
        .unwrap()
        .prop("textContent")
        .await
        .unwrap();
    assert_eq!(title.as_deref(), Some("Lineage of lab"));
    b.screenshot("lineage").await;
    b.no_console_errors("lineage").await;
    let round3 = &s.ids["round3"];
    // Keyboard: the node is focusable and Enter follows it.
    let node = b
        .client
        .find(Locator::Css(&format!(
            r#".graph svg a[href="/ui/artifacts/{round3}"]"#
        )))
        .await
        .unwrap();
    node.send_keys("\u{E007}").await.unwrap(); // Enter
    b.arrive(&format!("/ui/artifacts/{round3}")).await;
    assert!(b.text("h1").await.starts_with("round3 v1"));
    assert_eq!(
        b.client
            .find_all(Locator::Css("a.download"))
            .await
            .unwrap()
            .len(),
        2,
        "the owner may download both files"
    );
    b.screenshot("artifact").await;
    b.no_console_errors("artifact").await;
    // And back in the graph, by mouse.
    b.go(&server, "/ui/c/lab/lineage").await;
    let merged = &s.ids["merged"];
    b.client
        .find(Locator::Css(&format!(
            r#".graph svg a[href="/ui/artifacts/{merged}"]"#
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive(&format!("/ui/artifacts/{merged}")).await;

    // The series page: every number shown equals the API's report (4 decimals; "—" for none).
    let shown = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.4}"));
    b.go(&server, "/ui/c/lab/series/lora7").await;
    let (_, report) = s.alice.get("/collaborations/lab/series/lora7/report").await;
    let report: SeriesReport = serde_json::from_value(report).unwrap();
    let rows: Vec<&clreg_types::ScoreRow> = std::iter::once(&report.base)
        .chain(&report.matrix)
        .collect();
    let cells = b
        .client
        .find_all(Locator::Css(".cell-value"))
        .await
        .unwrap();
    assert_eq!(cells.len(), rows.len() * report.tasks.len());
    for cell in &cells {
        let row: usize = cell
            .attr("data-row")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        let col: usize = cell
            .attr("data-col")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            cell.text().await.unwrap(),
            shown(rows[row].scores[col]),
            "cell {row},{col}"
        );
    }
    let t = report.transfer.as_ref().expect("figures");
    for (figure, value) in [
        ("bwt", Some(t.bwt)),
        ("fwt", t.fwt),
        ("final_average", Some(t.final_average)),
        ("average_gain", t.average_gain),
    ] {
        let text = b.text(&format!(r#"dd[data-figure="{figure}"]"#)).await;
        assert_eq!(text, shown(value), "{figure}");
    }
    let cells = b
        .client
        .find_all(Locator::Css(r#"td[data-figure="relative_bwt"]"#))
        .await
        .unwrap();
    assert_eq!(cells.len(), report.transfer_tasks.len());
    for (cell, v) in cells.iter().zip(&t.relative_bwt) {
        assert_eq!(cell.text().await.unwrap(), shown(*v));
    }
    let gains = t.gain.as_ref().unwrap();
    let cells = b
        .client
        .find_all(Locator::Css(r#"td[data-figure="gain"]"#))
        .await
        .unwrap();
    assert_eq!(cells.len(), gains.len());
    for (cell, v) in cells.iter().zip(gains) {
        assert_eq!(cell.text().await.unwrap(), shown(*v));
    }
    // The BWT history: one point per snapshot, at the reported BWT.
    let bwt_points: Vec<String> = report
        .history
        .iter()
        .filter_map(|h| h.bwt.map(|v| format!("{v:.4}")))
        .collect();
    assert!(!bwt_points.is_empty());
    let mut history = Vec::new();
    for p in b
        .client
        .find_all(Locator::Css("#history ~ .chart .point"))
        .await
        .unwrap()
    {
        history.push(p.attr("data-value").await.unwrap().unwrap());
    }
    for v in &bwt_points {
        assert!(history.contains(v), "BWT {v} not plotted: {history:?}");
    }
    for svg in b.client.find_all(Locator::Css("svg")).await.unwrap() {
        let html = svg.html(false).await.unwrap();
        assert!(
            html.contains("<title") && html.contains("<desc"),
            "every chart is described"
        );
    }
    b.screenshot("series").await;
    b.no_console_errors("series").await;

    // The ledger's chain verifies.
    b.go(&server, "/ui/c/lab/ledger").await;
    assert_eq!(
        b.client
            .find_all(Locator::Css("td.ok"))
            .await
            .unwrap()
            .len(),
        1
    );
    b.screenshot("ledger").await;
    b.no_console_errors("ledger").await;

    // A job followed live: queued, then cancelled elsewhere; the page follows over SSE.
    let job = crate::ui::queued_job(&s.alice).await;
    let id = job.as_str();
    b.go(&server, &format!("/ui/jobs/{id}")).await;
    assert_eq!(b.text("#job-state").await, "queued");
    b.screenshot("job-queued").await;
    let (status, _) = s
        .alice
        .post(&format!("/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let mut state = String::new();
    for _ in 0..100 {
        // The page reloads itself when the job ends: the element may be gone for a moment.
        if let Ok(e) = b.client.find(Locator::Id("job-state")).await {
            state = e.text().await.unwrap_or_default();
        }
        if state == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "cancelled", "the page followed the job");
    b.no_console_errors("job").await;

    // A form without its token is refused, and nothing changes.
    b.go(&server, "/ui/").await;
    b.client
        .execute(
            r#"document.querySelector('form[action="/ui/logout"] input[name=csrf]').remove()"#,
            vec![],
        )
        .await
        .unwrap();
    b.client
        .find(Locator::Css(r#"form[action="/ui/logout"] button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive("/ui/logout").await;
    assert!(b.text("main").await.contains("csrf_rejected"));
    b.console().await; // the refusal's 403 is logged: expected
    b.go(&server, "/ui/").await;
    assert_eq!(b.text("h1").await, "Collaborations", "still logged in");

    // Log out; the auditor sees no download link and is refused the file as by the API.
    b.client
        .find(Locator::Css(r#"form[action="/ui/logout"] button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive("/ui/login").await;
    let round1 = &s.ids["round1"];
    b.log_in(
        &server,
        &format!("/ui/artifacts/{round1}"),
        s.audrey.api_key.as_deref().unwrap(),
    )
    .await;
    assert!(
        b.client
            .find_all(Locator::Css("a.download"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.text("#files ~ p.note").await.contains("metadata only"));
    b.screenshot("artifact-auditor").await;
    b.no_console_errors("auditor's artifact").await;
    b.go(
        &server,
        &format!("/ui/artifacts/{round1}/files/adapter_config.json"),
    )
    .await;
    let shown: Value = serde_json::from_str(&b.text("body").await).unwrap();
    let (status, api) = s
        .audrey
        .get(&format!("/artifacts/{round1}/files/adapter_config.json"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(shown, api);
    b.console().await;
    drop(b); // ends ChromeDriver and Chromium
}

/// `clreg-server demo`'s fill, on this test's server with a job worker: every job succeeds,
/// the series has its figures, and the pages render in Chromium (screenshots of the lineage
/// and series pages are the README's).
#[tokio::test]
async fn the_demo_fills_a_collaboration_the_ui_shows() {
    let server = TestServer::with_worker(crate::support::server_binary()).await;
    let work = server.dir.path().join("demo-work");
    let logins = clreg_server::demo::fill(&server.state, &work, &|line| eprintln!("{line}"))
        .await
        .unwrap();
    assert!(logins.filled);
    assert!(!work.exists(), "the demo's scratch files are gone");
    let auditor = crate::support::Client::with_key(&server.url, &logins.auditor_key).await;
    let (_, report) = auditor.get("/collaborations/demo/series/seq/report").await;
    let report: SeriesReport = serde_json::from_value(report).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.transfer.is_some(), "{:?}", report.pending);
    let (_, graph) = auditor.get("/collaborations/demo/lineage").await;
    let names: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    for name in ["base", "r1", "r2", "r3", "ties", "moe"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let (_, jobs) = auditor.get("/collaborations/demo/jobs").await;
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 10, "3 train, merge, mix, 5 eval");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");
    // A second run leaves it as it is.
    let again = clreg_server::demo::fill(&server.state, &work, &|_| {})
        .await
        .unwrap();
    assert!(!again.filled);

    let Some(b) = browser().await else { return };
    b.log_in(&server, "/ui/c/demo/lineage", &logins.auditor_key)
        .await;
    assert_eq!(
        b.client
            .find_all(Locator::Css(".graph svg a"))
            .await
            .unwrap()
            .len(),
        names.len()
    );
    b.screenshot("demo-lineage").await;
    b.no_console_errors("demo lineage").await;
    b.go(&server, "/ui/c/demo/series/seq").await;
    assert!(
        b.text(r#"dd[data-figure="bwt"]"#)
            .await
            .parse::<f64>()
            .is_ok()
    );
    b.screenshot("demo-series").await;
    b.no_console_errors("demo series").await;
    drop(b); // ends ChromeDriver and Chromium
}
