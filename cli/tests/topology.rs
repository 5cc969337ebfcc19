//! The scale-out topology of `docker-compose.yml`, as processes: a throwaway PostgreSQL, a
//! standalone S3 server process (s3s-fs), two `clreg-server serve` replicas and two
//! `clreg-server worker`s, and nginx from Debian in front with the shipped `deploy/nginx.conf`
//! (round-robin, no stickiness). A push, a merge job and a pull go through the proxy, and one
//! replica is killed (SIGKILL) in the middle of the push.
//!
//! It needs PostgreSQL (`CLREG_TEST_PG_URL`, which `scripts/test`'s second pass sets) and
//! nginx; without them it says SKIPPED (in CI, where both are installed, it must run).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cli, same_tree};
use sea_orm::EntityTrait;

/// A child process stopped when dropped: SIGTERM (nginx's master then stops its workers), then
/// SIGKILL if it lingers.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command) -> Proc {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    /// kill -9, as a crash.
    fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shipped proxy configuration, pointed at this test's replicas and ports.
fn nginx_conf(dir: &Path, listen: u16, replicas: [u16; 2]) -> PathBuf {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf"))
            .unwrap();
    let temp = dir.join("temp");
    std::fs::create_dir_all(&temp).unwrap();
    // nginx's workers run as an unprivileged user when the master is root.
    for d in [dir, temp.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let t = temp.display();
    let conf = shipped
        .replace("server-1:8080", &format!("127.0.0.1:{}", replicas[0]))
        .replace("server-2:8080", &format!("127.0.0.1:{}", replicas[1]))
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace(
            "http {",
            &format!(
                "pid {}/nginx.pid;\nhttp {{\n    access_log off;\n    client_body_temp_path {t}/body;\n    proxy_temp_path {t}/proxy;\n    fastcgi_temp_path {t}/fastcgi;\n    uwsgi_temp_path {t}/uwsgi;\n    scgi_temp_path {t}/scgi;",
                dir.display()
            ),
        );
    assert_ne!(conf, shipped);
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

#[tokio::test]
async fn replicas_behind_nginx_survive_a_replica_killed_mid_push() {
    let Some(admin_url) = std::env::var("CLREG_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED: needs PostgreSQL (CLREG_TEST_PG_URL; scripts/test sets it)");
        return;
    };
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is missing (apt-get install nginx)"
        );
        eprintln!("SKIPPED: needs nginx (apt-get install nginx)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let database_url = clreg_tests::fresh_postgres_db(&admin_url).await;

    // The S3 server, a process of its own.
    let mut s3 = Proc::spawn(
        "s3-server",
        Command::new(clreg_tests::s3_server_binary())
            .args([root.join("s3").to_str().unwrap(), "registry"])
            .stdout(Stdio::piped()),
    );
    let endpoint = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(s3.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    // One configuration for every registry process, as the env file of docker-compose.yml.
    let server_bin = clreg_tests::server_binary();
    let env = [
        ("CLREG_DATABASE_URL", database_url.clone()),
        ("CLREG_STORE", "s3://registry/clreg".into()),
        ("CLREG_S3_ENDPOINT", endpoint.clone()),
        ("CLREG_S3_REGION", "us-east-1".into()),
        ("CLREG_S3_ACCESS_KEY_ID", "test-access".into()),
        ("CLREG_S3_SECRET_ACCESS_KEY", "test-secret-key".into()),
        ("CLREG_S3_ALLOW_HTTP", "true".into()),
        (
            "CLREG_JWT_SECRET",
            "topology-test-secret-of-32-bytes-or-more".into(),
        ),
        ("CLREG_LEDGER_SIGNING_KEY", "ab".repeat(32)),
        ("CLREG_JOB_LEASE_SECS", "3".into()),
    ];
    let registry = |name: &str, args: &[&str]| {
        let mut c = Command::new(&server_bin);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("CLREG_DATA_DIR", root.join(name))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    };
    let status = registry("migrate", &["migrate"]).status().unwrap();
    assert!(status.success());
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("server-{}", i + 1);
            Proc::spawn(
                &name,
                registry(&name, &["serve", "--addr", &format!("127.0.0.1:{port}")])
                    .env("CLREG_WORKERS", "0"),
            )
        })
        .collect();
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| {
            let name = format!("worker-{i}");
            Proc::spawn(&name, &mut registry(&name, &["worker", "--count", "1"]))
        })
        .collect();
    for port in ports {
        wait_ready(&format!("http://127.0.0.1:{port}")).await;
    }
    let proxy_port = free_port();
    let conf = nginx_conf(&root.join("nginx"), proxy_port, ports);
    let _proxy = Proc::spawn(
        "nginx",
        Command::new(nginx).args([
            "-e",
            root.join("nginx/error.log").to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
            "-g",
            "daemon off;",
        ]),
    );
    let url = format!("http://127.0.0.1:{proxy_port}");
    wait_ready(&url).await;

    let out = registry("admin", &["admin", "create-user", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let cli = Cli::new();
    cli.ok(&["login", "--server", &url, "--api-key", &key])
        .await;
    cli.ok(&["collab", "create", "lab", "--policy", "semi"])
        .await;

    // A base of ~145 MB: nine 16 MiB chunks, each a PATCH that nginx sends to either replica.
    let base = root.join("base");
    let tiny = |dir: &Path, seed: &str| {
        let mut args = vec!["local", "tiny", "-o", dir.to_str().unwrap(), "--seed"];
        args.push(seed);
        args.extend([
            "--hidden",
            "1024",
            "--intermediate",
            "2048",
            "--layers",
            "2",
            "--heads",
            "8",
            "--kv-heads",
            "8",
            "--vocab",
            "8000",
        ]);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let args = tiny(&base, "1");
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let size = std::fs::metadata(base.join("model.safetensors"))
        .unwrap()
        .len();

    let db = clreg_server::state::connect(&database_url).await.unwrap();
    let push = cli
        .command(&[
            "push",
            base.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "base",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the weights' upload is under way (a chunk committed, not all), then kill
    // server-1 as a crash would.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let sessions = clreg_server::db::entities::upload::Entity::find()
            .all(&db)
            .await
            .unwrap();
        if let Some(u) = sessions
            .iter()
            .find(|u| u.offset >= 16 << 20 && (u.offset as u64) < size)
        {
            break u.offset;
        }
        assert!(Instant::now() < deadline, "the push never got under way");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    replicas[0].crash();
    eprintln!("server-1 killed with {killed_at} of {size} bytes committed");
    let out = push.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the push did not survive the replica's death (killed at byte {killed_at} of {size})\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A second model, then a merge job that a worker runs from the store.
    let b = root.join("b");
    let args = tiny(&b, "2");
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    cli.ok(&[
        "push",
        b.to_str().unwrap(),
        "--collab",
        "lab",
        "--name",
        "b",
        "--kind",
        "checkpoint",
        "--base",
        "lab/base",
    ])
    .await;
    let recipe = |base: &str, b: &str| {
        format!(
            "merge_method: linear\nmodels:\n  - model: {base}\n    parameters: {{weight: 0.25}}\n  - model: {b}\n    parameters: {{weight: 0.75}}\ndtype: float32\n"
        )
    };
    let remote = root.join("remote.yml");
    std::fs::write(&remote, recipe("lab/base", "lab/b")).unwrap();
    let done = cli
        .ok(&[
            "--json",
            "merge",
            "--collab",
            "lab",
            "--config",
            remote.to_str().unwrap(),
            "--name",
            "soup",
            "--wait",
        ])
        .await
        .json();
    assert_eq!(done["state"], "succeeded", "{done}");

    // Pulled through the proxy: the base byte for byte, and the merge equal to a local merge
    // of the same files.
    let pulled = root.join("pulled-base");
    cli.ok(&["pull", "lab/base", "-o", pulled.to_str().unwrap()])
        .await;
    same_tree(&base, &pulled);
    let local_recipe = root.join("local.yml");
    std::fs::write(
        &local_recipe,
        recipe(&base.display().to_string(), &b.display().to_string()),
    )
    .unwrap();
    let local = root.join("local-soup");
    cli.ok(&[
        "local",
        "merge",
        "--config",
        local_recipe.to_str().unwrap(),
        "-o",
        local.to_str().unwrap(),
    ])
    .await;
    let soup = root.join("pulled-soup");
    cli.ok(&["pull", "lab/soup", "-o", soup.to_str().unwrap()])
        .await;
    assert_eq!(
        std::fs::read(soup.join("model.safetensors")).unwrap(),
        std::fs::read(local.join("model.safetensors")).unwrap()
    );

    // Nothing of the upload sessions is left: no rows, no chunks in the bucket.
    let sessions = clreg_server::db::entities::upload::Entity::find()
        .all(&db)
        .await
        .unwrap();
    assert!(sessions.is_empty(), "{sessions:?}");
    let chunks = root.join("s3/registry/clreg/uploads");
    let left = if chunks.exists() {
        clreg_tests::walk(&chunks)
    } else {
        Vec::new()
    };
    assert!(left.is_empty(), "{left:?}");
    // The ledger, written by both replicas and the workers, verifies.
    cli.ok(&["audit", "verify", "--collab", "lab"]).await;
}
