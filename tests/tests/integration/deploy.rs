//! The deployment files, checked without a container engine (this machine has none): the
//! compose file's services, images, commands and configuration names, the Dockerfile's shape,
//! and the proxy's upstreams. `topology.rs` runs the same topology as processes.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The compose file with its `<<` merges and anchors resolved.
fn compose() -> Value {
    let mut doc: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    doc.apply_merge().unwrap();
    doc
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped).
fn env_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=VALUE").0.to_string())
        .collect()
}

#[test]
fn the_compose_file_runs_the_documented_topology() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    let expected = [
        "db", "minio", "bucket", "migrate", "server-1", "server-2", "worker-1", "worker-2", "proxy",
    ];
    assert_eq!(names, expected.into_iter().collect());

    let service = |name: &str| &doc["services"][name];
    for name in ["migrate", "server-1", "server-2", "worker-1", "worker-2"] {
        let s = service(name);
        assert_eq!(s["image"], "clreg-server", "{name}");
        assert_eq!(s["build"], ".", "{name}");
        assert_eq!(s["env_file"], "deploy/clreg.env", "{name}");
    }
    assert_eq!(strings(&service("server-1")["command"])[0], "serve");
    assert_eq!(strings(&service("worker-2")["command"])[0], "worker");
    assert_eq!(strings(&service("migrate")["command"]), ["migrate"]);
    // Replicas run no workers of their own; the workers do.
    for name in ["server-1", "server-2"] {
        assert_eq!(service(name)["environment"]["CLREG_WORKERS"], "0");
        assert_eq!(
            service(name)["depends_on"]["migrate"]["condition"],
            "service_completed_successfully"
        );
    }
    assert_eq!(service("db")["image"], "postgres:15");
    assert_eq!(
        service("proxy")["image"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("nginx")
    );
    assert!(
        strings(&service("proxy")["volumes"])
            .iter()
            .any(|v| v.starts_with("./deploy/nginx.conf:/etc/nginx/nginx.conf"))
    );

    // Only loopback ports are published.
    for (name, s) in services {
        for port in strings(&s["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port}");
        }
    }

    // Every clreg setting the files name is one the server reads; secrets come from the env
    // file, which is not committed.
    let known: BTreeSet<&str> = clreg_server::config::ENV_VARS.iter().copied().collect();
    let example = read("deploy/clreg.env.example");
    let mut named = env_keys(&example);
    for (_, s) in services {
        if let Some(env) = s["environment"].as_mapping() {
            named.extend(env.keys().map(|k| k.as_str().unwrap().to_string()));
        }
    }
    for key in &named {
        if key.starts_with("CLREG_") {
            assert!(
                known.contains(key.as_str()),
                "{key} is not a server setting"
            );
        } else {
            assert!(
                key.starts_with("POSTGRES_") || key.starts_with("MINIO_"),
                "{key} belongs to no service"
            );
        }
    }
    for required in [
        "CLREG_DATABASE_URL",
        "CLREG_STORE",
        "CLREG_JWT_SECRET",
        "CLREG_LEDGER_SIGNING_KEY",
    ] {
        assert!(named.iter().any(|k| k == required), "{required} missing");
    }
    assert!(
        read(".gitignore").lines().any(|l| l == "/deploy/clreg.env"),
        "the env file with the secrets must stay out of git"
    );
}

#[test]
fn every_clreg_command_in_the_compose_file_parses() {
    let doc = compose();
    let bin = clreg_tests::server_binary();
    let dockerfile = read("Dockerfile");
    let entrypoint = dockerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .unwrap();
    assert_eq!(entrypoint, r#"ENTRYPOINT ["clreg-server"]"#);
    for (name, s) in doc["services"].as_mapping().unwrap() {
        if s["image"] != "clreg-server" {
            continue;
        }
        let mut args = strings(&s["command"]);
        // clap reads the whole command line before it prints help: an unknown subcommand
        // or flag fails here.
        args.push("--help".into());
        let out = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name:?}: clreg-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_image_is_multi_stage_non_root_and_checks_readiness() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    let toolchain = read("rust-toolchain.toml");
    let pinned = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{}", pinned.rsplit_once('.').unwrap().0)),
        "the build stage uses the pinned toolchain's release"
    );
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap();
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("/readyz"));
    assert!(dockerfile.contains("--locked"));
}

#[test]
fn the_proxy_balances_over_both_replicas_without_stickiness() {
    let conf = read("deploy/nginx.conf");
    let upstream: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(";"))
        .filter_map(|l| l.strip_prefix("server "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(upstream, ["server-1:8080", "server-2:8080"]);
    for sticky in ["ip_hash", "hash ", "sticky"] {
        assert!(!conf.contains(sticky), "{sticky}");
    }
    assert!(conf.contains("proxy_request_buffering off"));
    assert!(conf.contains("client_max_body_size 0"));
}
