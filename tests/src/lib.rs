//! Test harness shared by the end-to-end tests (`tests/integration/`) and the CLI's own tests
//! (`cli/tests/`): a real server on 127.0.0.1:0 over a fresh database and store per test.
//!
//! Backend by environment: default SQLite + local directory; with `CLREG_TEST_PG_URL` set
//! (a PostgreSQL admin URL), each test gets its own new database on that server and an
//! in-process S3 server (s3s-fs) as its object store.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clreg_server::{AppState, Config};
use clreg_types::{CommitArtifact, Digest, FileEntry};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    s3: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        // The server's warnings and errors go to the test's output (shown when it fails);
        // `RUST_LOG` says more.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            // Job tests turn workers on with a `clreg-server` binary to run jobs in.
            workers: 0,
            ..Config::default()
        };
        let mut s3 = None;
        if let Ok(admin_url) = std::env::var("CLREG_TEST_PG_URL")
            && !admin_url.is_empty()
        {
            config.database_url = Some(fresh_postgres_db(&admin_url).await);
            let (endpoint, task) = start_s3(dir.path()).await;
            config.store = Some("s3://clreg-test/prefix".to_string());
            config.s3.endpoint = Some(endpoint);
            config.s3.region = Some("us-east-1".to_string());
            config.s3.access_key_id = Some("test-access".to_string());
            config.s3.secret_access_key = Some("test-secret-key".to_string());
            config.s3.allow_http = true;
            s3 = Some(task);
        }
        tweak(&mut config);
        let state = AppState::build(config).await.expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let serve_state = state.clone();
        tokio::spawn(async move {
            clreg_server::serve(serve_state, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            url,
            state,
            dir,
            shutdown: Some(tx),
            s3,
        }
    }

    /// The file that holds blob `digest`'s object: under the local store, or under the
    /// in-process S3 server's directory. Tests use it to damage the store underneath.
    pub fn object_file(&self, digest: &Digest) -> PathBuf {
        self.store_root().join(digest.object_key())
    }

    /// The directory under which the store (local, or the in-process S3 server) keeps objects.
    pub fn store_root(&self) -> PathBuf {
        if self.s3.is_some() {
            self.dir.path().join("s3/clreg-test/prefix")
        } else {
            self.dir.path().join("data/store")
        }
    }

    /// A server with one in-process worker that runs each job in a `runner run-job` child
    /// (`runner`: a `clreg-server` binary built from this source), with a short lease.
    pub async fn with_worker(runner: PathBuf) -> TestServer {
        Self::start_with(|c| {
            c.workers = 1;
            c.job_runner = Some(runner);
            c.job_lease_secs = 3;
        })
        .await
    }

    /// Creates a user through the admin path and returns a logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        let key = clreg_server::admin::create_user(&self.state.db, name, false)
            .await
            .expect("create user");
        Client::with_key(&self.url, &key).await
    }
}

/// A second server process on the same database and store (another replica), serving until
/// dropped. Its HTTP server is stopped abruptly on drop: in-flight requests are cut.
pub struct Replica {
    pub url: String,
    pub state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts another replica of this server: the same configuration, its own process state.
    pub async fn replica(&self) -> Replica {
        let state = AppState::build((*self.state.config).clone())
            .await
            .expect("replica state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            let _ = clreg_server::serve(serve_state, listener, std::future::pending()).await;
        });
        Replica { url, state, task }
    }
}

impl Replica {
    /// `client`, pointed at this replica.
    pub fn client(&self, client: &Client) -> Client {
        Client {
            base: self.url.clone(),
            ..client.clone()
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s3) = self.s3.take() {
            s3.abort();
        }
    }
}

/// A PostgreSQL cluster of a test's own (initdb, fsync off, a free loopback port), which the
/// test may stop as a crash would (`pg_ctl stop -m immediate`) and start again. Stopped and
/// removed on drop.
pub struct PgCluster {
    pub url: String,
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PgCluster {
    /// Starts a cluster; `None` where PostgreSQL's server binaries are not installed.
    pub fn start() -> Option<PgCluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .max()?;
        let dir = tempfile::tempdir().expect("tempdir");
        if Self::root() {
            let status = std::process::Command::new("chown")
                .args(["postgres", dir.path().to_str().expect("utf-8 path")])
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = PgCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            dir,
            port,
        };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-D", data.to_str()?],
        );
        cluster.restart();
        Some(cluster)
    }

    fn root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    /// Runs a PostgreSQL program, as the `postgres` user when this process is root.
    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut command = if Self::root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = command
            .args(args)
            .output()
            .expect("running a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server as a crash would: no checkpoint, connections cut.
    pub fn stop_immediate(&self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        );
    }

    /// Starts the server (again): crash recovery replays the WAL.
    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let options = format!(
            "-F -p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-l",
                log.to_str().unwrap_or(""),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
    }
}

/// `bin` (a `clreg-server`) as a process of its own on `config`'s data dir, database and
/// store, the configuration passed as environment the way a deployment passes it; killed when
/// dropped. Callers add the subcommand.
pub fn server_process(bin: &Path, config: &Config) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin);
    command
        .env("CLREG_DATA_DIR", &config.data_dir)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    if let Some(url) = &config.database_url {
        command.env("CLREG_DATABASE_URL", url);
    }
    if let Some(store) = &config.store {
        command.env("CLREG_STORE", store);
        let s3 = &config.s3;
        for (name, value) in [
            ("CLREG_S3_ENDPOINT", &s3.endpoint),
            ("CLREG_S3_REGION", &s3.region),
            ("CLREG_S3_ACCESS_KEY_ID", &s3.access_key_id),
            ("CLREG_S3_SECRET_ACCESS_KEY", &s3.secret_access_key),
        ] {
            if let Some(v) = value {
                command.env(name, v);
            }
        }
        command.env("CLREG_S3_ALLOW_HTTP", s3.allow_http.to_string());
    }
    command
}

/// A new, empty database on the PostgreSQL server at `admin_url`; returns its URL.
pub async fn fresh_postgres_db(admin_url: &str) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = clreg_server::state::connect(admin_url)
        .await
        .expect("connect to postgres");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    format!("{base}/{name}")
}

/// Runs s3s-fs (a real S3 protocol implementation over a directory) on 127.0.0.1:0.
async fn start_s3(root: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind s3");
    serve_s3(&root.join("s3"), "clreg-test", listener)
}

/// Serves a real S3 implementation (s3s-fs: objects are files under `root/<bucket>/`) on
/// `listener`, with the access key `test-access` and secret `test-secret-key`, creating
/// `bucket`. Returns its endpoint. The `s3-server` binary runs it as a process of its own.
pub fn serve_s3(
    root: &Path,
    bucket: &str,
    listener: tokio::net::TcpListener,
) -> (String, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    std::fs::create_dir_all(root.join(bucket)).expect("bucket dir");
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        "test-access",
        "test-secret-key",
    ));
    let service = builder.build();
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (endpoint, task)
}

/// A thin HTTP client for the API under test.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub api_key: Option<String>,
}

impl Client {
    pub fn anonymous(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_string(),
            token: None,
            api_key: None,
        }
    }

    /// A client logged in with an API key.
    pub async fn with_key(base: &str, key: &str) -> Client {
        let mut client = Client::anonymous(base);
        let (status, body) = client.post("/auth/token", &json!({ "api_key": key })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        client.token = body["token"].as_str().map(str::to_string);
        client.api_key = Some(key.to_string());
        client
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("/api/") || path.starts_with("/healthz") || path.starts_with("/readyz")
        {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v1{path}", self.base)
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = r.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// The status of a `HEAD` request.
    pub async fn head(&self, path: &str) -> StatusCode {
        self.request(reqwest::Method::HEAD, path)
            .send()
            .await
            .expect("request")
            .status()
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Waits (up to 60 s) for job `id` to end, and returns it.
    pub async fn wait_job(&self, id: &str) -> Value {
        for _ in 0..600 {
            let (status, job) = self.get(&format!("/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("job {id} did not end within 60 s");
    }

    /// Every file of `artifact` (as the API returns it), by path, as the server serves it.
    pub async fn artifact_files(&self, artifact: &Value) -> BTreeMap<String, Vec<u8>> {
        let id = artifact["id"].as_str().expect("artifact id");
        let mut out = BTreeMap::new();
        for f in artifact["files"].as_array().expect("files") {
            let path = f["path"].as_str().expect("path");
            let response = self
                .request(
                    reqwest::Method::GET,
                    &format!("/artifacts/{id}/files/{}", path.replace('/', "%2F")),
                )
                .send()
                .await
                .expect("download");
            assert_eq!(response.status(), 200);
            out.insert(
                path.to_string(),
                response.bytes().await.expect("body").to_vec(),
            );
        }
        out
    }

    pub async fn create_collab(&self, name: &str, policy: &str) {
        let (status, body) = self
            .post("/collaborations", &json!({"name": name, "policy": policy}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn add_member(&self, collab: &str, user: &str, role: &str) {
        let (status, body) = self
            .post(
                &format!("/collaborations/{collab}/members"),
                &json!({"user": user, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Uploads `bytes` in chunks of `chunk` bytes and finishes with their real digest.
    pub async fn upload(&self, bytes: &[u8], chunk: usize) -> Digest {
        let digest = digest_of(bytes);
        let id = self.open_upload().await;
        let mut offset = 0;
        for piece in bytes.chunks(chunk.max(1)) {
            let (status, body) = self.patch(&id, offset, piece.to_vec()).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            offset += piece.len();
        }
        let (status, body) = self.finish(&id, &digest.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        digest
    }

    pub async fn open_upload(&self) -> String {
        let (status, body) = self
            .send(self.request(reqwest::Method::POST, "/blobs/uploads"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn patch(&self, id: &str, offset: usize, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.send(
            self.request(reqwest::Method::PATCH, &format!("/blobs/uploads/{id}"))
                .header(clreg_types::UPLOAD_OFFSET_HEADER, offset.to_string())
                .body(bytes),
        )
        .await
    }

    pub async fn finish(&self, id: &str, digest: &str) -> (StatusCode, Value) {
        self.send(self.request(
            reqwest::Method::PUT,
            &format!("/blobs/uploads/{id}?digest={digest}"),
        ))
        .await
    }

    /// Uploads every file of `dir` and returns the manifest's file map.
    pub async fn upload_dir(&self, dir: &Path) -> BTreeMap<String, FileEntry> {
        let mut files = BTreeMap::new();
        for path in walk(dir) {
            let bytes = std::fs::read(&path).expect("read");
            let rel = path
                .strip_prefix(dir)
                .expect("prefix")
                .to_string_lossy()
                .replace('\\', "/");
            let digest = self.upload(&bytes, 1 << 20).await;
            files.insert(
                rel,
                FileEntry {
                    digest,
                    size: bytes.len() as u64,
                },
            );
        }
        files
    }

    pub async fn commit(&self, collab: &str, req: &CommitArtifact) -> (StatusCode, Value) {
        self.post(
            &format!("/collaborations/{collab}/artifacts"),
            &serde_json::to_value(req).expect("json"),
        )
        .await
    }

    /// Uploads a directory and commits it; panics unless created.
    pub async fn push(
        &self,
        collab: &str,
        name: &str,
        kind: clreg_types::ArtifactKind,
        base: Option<&str>,
        dir: &Path,
    ) -> Value {
        let files = self.upload_dir(dir).await;
        let req = CommitArtifact {
            name: name.to_string(),
            kind,
            base: base.map(str::to_string),
            files,
            parents: vec![],
            description: String::new(),
        };
        let (status, body) = self.commit(collab, &req).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["artifact"].clone()
    }
}

/// The `clreg-server` binary built from this source, for tests outside the server package
/// (which have `CARGO_BIN_EXE_clreg-server`): cargo builds it (a no-op after the test build,
/// whose features are the same) and says where it is; it is never guessed from the target
/// directory.
pub fn server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_binary("clreg-server")).clone()
}

/// The `s3-server` binary of this crate (a standalone S3 server process, see [`serve_s3`]).
pub fn s3_server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_binary("s3-server")).clone()
}

/// Builds binary `name` of the workspace, as the test build would (the same features), and
/// returns its path.
fn workspace_binary(name: &str) -> PathBuf {
    {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // Only what locates the toolchain and the target directory: the variables cargo sets
        // for a running test (CARGO_PKG_*, CARGO_MANIFEST_*, …) would make build scripts that
        // watch the environment rebuild, and the next test build rebuild again.
        command.env_clear();
        for name in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "CARGO_TARGET_DIR",
            "TMPDIR",
        ] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let out = command
            .current_dir(root)
            .args([
                "build",
                "--workspace",
                "--bin",
                name,
                "--message-format=json-render-diagnostics",
            ])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running cargo build");
        assert!(out.status.success(), "cargo build of {name} failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo reported no {name} executable"))
    }
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(bytes).into())
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A seeded tiny Llama written as real safetensors into a new directory under `root`.
pub fn tiny_model(root: &Path, name: &str, seed: u64, shard: Option<u64>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    clreg_engine::tiny::write_tiny_llama(
        &dir,
        &clreg_engine::tiny::TinyConfig::default(),
        seed,
        shard,
    )
    .expect("tiny model");
    dir
}

/// A tiny model with the tiny tokenizer: what a job that reads text needs (training, `hidden`
/// routers, evaluation).
pub fn tiny_model_with_tokenizer(root: &Path, name: &str, seed: u64) -> PathBuf {
    let dir = tiny_model(root, name, seed, None);
    clreg_engine::tiny::write_tiny_tokenizer(&dir, &clreg_engine::tiny::TinyConfig::default())
        .expect("tiny tokenizer");
    dir
}

/// Runs a job spec with the engine in this process, as a worker's child would: the reference a
/// served result is compared with.
pub fn run_engine_job(spec: &clreg_engine::job::JobSpec) {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let ctx = clreg_engine::job::RunContext {
        cancel: &cancel,
        events: &|_| {},
        digests: Default::default(),
        device: Default::default(),
    };
    clreg_engine::job::run(spec, &ctx).expect("the engine runs the job");
}

pub fn tiny_adapter(
    root: &Path,
    name: &str,
    seed: u64,
    tiny: &clreg_engine::tiny::TinyConfig,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cfg = clreg_engine::tiny::tiny_llama_config(tiny);
    clreg_engine::tiny::write_tiny_adapter(&dir, &cfg, 4, 8.0, &["q_proj", "v_proj"], seed, false)
        .expect("tiny adapter");
    dir
}

/// A safetensors file with the given JSON header and `data_len` bytes of data.
pub fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

/// Asserts an error response with `code`.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(
        result.0.as_u16(),
        status,
        "unexpected status; body: {}",
        result.1
    );
    assert_eq!(
        result.1["code"], code,
        "unexpected code; body: {}",
        result.1
    );
    assert!(
        result.1["message"].as_str().is_some_and(|m| m.len() > 10),
        "message missing: {}",
        result.1
    );
}
