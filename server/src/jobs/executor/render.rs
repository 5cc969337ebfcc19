//! The rendered job: a command line, a Slurm batch script, a Kubernetes Job manifest. Pure
//! functions of the settings and the attempt, snapshot-tested.

use std::path::Path;

use super::{ExecutorConfig, Invocation};

/// A word for `sh`: as it is when it is plain, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn path_word(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// The trainer's command line, reading its files from `CLREG_TRAINER`, `CLREG_ORDER` and
/// `CLREG_PROGRESS`; through `accelerate launch` when the job has several processes.
fn launch_line(cfg: &ExecutorConfig, processes: u32, nodes: u32, multi_node: &str) -> String {
    let args = r#""$CLREG_TRAINER" --order "$CLREG_ORDER" --progress "$CLREG_PROGRESS""#;
    if processes <= 1 {
        return format!("{} {args}", cfg.python);
    }
    let extra = if cfg.accelerate_args.trim().is_empty() {
        String::new()
    } else {
        format!(" {}", cfg.accelerate_args.trim())
    };
    format!(
        "{} -m accelerate.commands.launch --multi_gpu --num_machines {nodes} --num_processes {processes}{multi_node}{extra} {args}",
        cfg.python
    )
}

fn exports(inv: &Invocation) -> String {
    format!(
        "export CLREG_TRAINER={} CLREG_ORDER={} CLREG_PROGRESS={}\n",
        path_word(&inv.trainer()),
        path_word(&inv.order()),
        path_word(&inv.progress())
    )
}

/// `command`: the template with every placeholder filled in.
pub fn render_command(cfg: &ExecutorConfig, inv: &Invocation) -> String {
    let mut out = cfg.command.clone();
    for (key, value) in [
        ("{python}", cfg.python.clone()),
        ("{trainer}", path_word(&inv.trainer())),
        ("{order}", path_word(&inv.order())),
        ("{progress}", path_word(&inv.progress())),
        ("{dir}", path_word(&inv.dir)),
        ("{name}", inv.name()),
        ("{job}", inv.job.to_string()),
        ("{attempt}", inv.attempt.to_string()),
    ] {
        out = out.replace(key, &value);
    }
    out
}

/// `slurm`: the batch script `sbatch --wait` submits.
pub fn render_slurm(cfg: &ExecutorConfig, inv: &Invocation) -> String {
    let s = &cfg.slurm;
    let mut out = String::from("#!/bin/bash\n");
    out += &format!(
        "# clreg train job {}, attempt {}: rendered by a clreg worker; the job's files are in this directory.\n",
        inv.job, inv.attempt
    );
    let mut option = |o: String| out += &format!("#SBATCH {o}\n");
    option(format!("--job-name={}", inv.name()));
    option(format!(
        "--output={}",
        path_word(&inv.dir.join("slurm-%j.log"))
    ));
    option(format!("--nodes={}", s.nodes));
    option("--ntasks-per-node=1".into());
    if s.gpus_per_node > 0 {
        option(format!("--gpus-per-node={}", s.gpus_per_node));
    }
    if let Some(c) = s.cpus_per_task {
        option(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &s.mem {
        option(format!("--mem={m}"));
    }
    if let Some(t) = &s.time {
        option(format!("--time={t}"));
    }
    if let Some(p) = &s.partition {
        option(format!("--partition={p}"));
    }
    if let Some(a) = &s.account {
        option(format!("--account={a}"));
    }
    for o in &s.options {
        option(o.clone());
    }
    out += "set -euo pipefail\n";
    out += &format!("cd {}\n", path_word(&inv.dir));
    for line in &s.setup {
        out += line;
        out += "\n";
    }
    out += &exports(inv);
    let processes = s.nodes * s.gpus_per_node.max(1);
    if s.nodes > 1 {
        out += "export CLREG_MAIN_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n";
        let line = launch_line(
            cfg,
            processes,
            s.nodes,
            r#" --machine_rank "$SLURM_NODEID" --main_process_ip "$CLREG_MAIN_ADDR" --main_process_port 29500"#,
        );
        out += &format!("srun --ntasks-per-node=1 bash -c {}\n", shell_quote(&line));
    } else {
        out += &format!("srun {}\n", launch_line(cfg, processes, 1, ""));
    }
    out
}

/// `kubernetes`: the Job manifest (JSON, which `kubectl apply -f` reads as YAML's subset).
pub fn render_kubernetes(cfg: &ExecutorConfig, inv: &Invocation, data_dir: &Path) -> String {
    let k = &cfg.kubernetes;
    let line = format!(
        "{}exec {}",
        exports(inv),
        launch_line(cfg, k.gpus.max(1), 1, "")
    );
    let mut limits = serde_json::Map::new();
    if k.gpus > 0 {
        limits.insert("nvidia.com/gpu".into(), k.gpus.to_string().into());
    }
    if let Some(c) = &k.cpu {
        limits.insert("cpu".into(), c.clone().into());
    }
    if let Some(m) = &k.memory {
        limits.insert("memory".into(), m.clone().into());
    }
    let mut pod = serde_json::json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "trainer",
            "image": k.image,
            "command": ["sh", "-c", line],
            "workingDir": inv.dir,
            "resources": {"limits": limits},
            "volumeMounts": [{"name": "clreg-data", "mountPath": data_dir}],
        }],
        "volumes": [{"name": "clreg-data", "persistentVolumeClaim": {"claimName": k.volume_claim}}],
    });
    if let Some(sa) = &k.service_account {
        pod["serviceAccountName"] = sa.clone().into();
    }
    if !k.node_selector.is_empty() {
        pod["nodeSelector"] = serde_json::to_value(&k.node_selector).unwrap_or_default();
    }
    let manifest = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": inv.name(),
            "namespace": k.namespace,
            "labels": {"app.kubernetes.io/managed-by": "clreg", "clreg/job": inv.job.to_string(),
                       "clreg/attempt": inv.attempt.to_string()},
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": k.ttl_secs_after_finished,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "clreg", "clreg/job": inv.job.to_string()}},
                "spec": pod,
            },
        },
    });
    serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::super::{KubernetesConfig, SlurmConfig};
    use super::*;

    /// Rendered files are compared with `server/tests/snapshots/`; set
    /// `CLREG_UPDATE_SNAPSHOTS=1` to write them after an intended change (and read the diff).
    fn snapshot(name: &str, got: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(name);
        if std::env::var_os("CLREG_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (CLREG_UPDATE_SNAPSHOTS=1 writes it)",
                path.display()
            )
        });
        assert_eq!(got, want, "{name} differs from its snapshot");
    }

    fn invocation() -> Invocation {
        Invocation {
            job: uuid::Uuid::parse_str("0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90").unwrap(),
            attempt: 2,
            dir: PathBuf::from(
                "/srv/clreg data/jobs/0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90/2/external",
            ),
        }
    }

    fn config() -> ExecutorConfig {
        ExecutorConfig {
            python: "/shared/venv/bin/python".into(),
            accelerate_args: "--mixed_precision bf16".into(),
            slurm: SlurmConfig {
                partition: Some("gpu".into()),
                account: Some("ml-lab".into()),
                gpus_per_node: 4,
                cpus_per_task: Some(32),
                mem: Some("256G".into()),
                time: Some("04:00:00".into()),
                options: vec!["--qos=high".into()],
                setup: vec!["module load cuda/12.4".into()],
                ..SlurmConfig::default()
            },
            kubernetes: KubernetesConfig {
                namespace: "training".into(),
                image: "registry.example.org/clreg-trainer:2026.11".into(),
                gpus: 2,
                memory: Some("64Gi".into()),
                volume_claim: "clreg-shared".into(),
                node_selector: [("gpu".to_string(), "h100".to_string())].into(),
                ..KubernetesConfig::default()
            },
            ..ExecutorConfig::default()
        }
    }

    /// `bash -n`: the script parses.
    fn parses_as_bash(script: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.sh");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_slurm_script_one_node_and_several() {
        let one = render_slurm(&config(), &invocation());
        parses_as_bash(&one);
        snapshot("job.sbatch", &one);
        let mut cfg = config();
        cfg.slurm.nodes = 2;
        let two = render_slurm(&cfg, &invocation());
        parses_as_bash(&two);
        snapshot("job-2-nodes.sbatch", &two);
    }

    #[test]
    fn the_kubernetes_manifest() {
        let text = render_kubernetes(&config(), &invocation(), Path::new("/srv/clreg data"));
        snapshot("job.manifest.json", &text);
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["metadata"]["name"], "clreg-0b5e6a5297c4-2");
        let pod = &m["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "clreg-shared"
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["mountPath"],
            "/srv/clreg data"
        );
        parses_as_bash(pod["containers"][0]["command"][2].as_str().unwrap());
    }

    #[test]
    fn the_command_quotes_every_path() {
        let mut cfg = config();
        cfg.command =
            "{python} {trainer} --order {order} --progress {progress} # {name} {attempt} {dir}"
                .into();
        let line = render_command(&cfg, &invocation());
        assert_eq!(
            line,
            "/shared/venv/bin/python '/srv/clreg data/jobs/0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90/2/external/clreg_trainer.py' \
             --order '/srv/clreg data/jobs/0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90/2/external/order.json' \
             --progress '/srv/clreg data/jobs/0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90/2/external/progress.jsonl' \
             # clreg-0b5e6a5297c4-2 2 '/srv/clreg data/jobs/0b5e6a52-97c4-4d7e-9a43-5f2d3c1e8a90/2/external'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
