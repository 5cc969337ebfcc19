//! External executors end to end: a worker hands train jobs to a `command` executor whose
//! template runs a local process, through the shared-directory contract a Slurm or Kubernetes
//! job uses (docs/executors.md). The process is `clreg-server run-job --order … --progress …`
//! (the engine speaking the contract), or the shipped PyTorch + PEFT trainer where PyTorch is
//! installed (`CLREG_TORCH_PYTHON`, an ignored test).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clreg_server::jobs::executor::{ExecutorKind, shell_quote};
use clreg_tests::{Client, TestServer, tiny_model_with_tokenizer};
use clreg_types::ArtifactKind;
use serde_json::{Value, json};

const MARKER: &str = "PATIENT-7781-EXTERNAL";

fn server_binary() -> String {
    shell_quote(env!("CARGO_BIN_EXE_clreg-server"))
}

/// A server whose worker hands train jobs to `command` (merges etc. still run in the engine).
async fn server_with(command: String, python: Option<String>) -> TestServer {
    TestServer::start_with(move |c| {
        c.workers = 1;
        c.job_runner = Some(PathBuf::from(env!("CARGO_BIN_EXE_clreg-server")));
        c.job_lease_secs = 3;
        c.executor.kind = ExecutorKind::Command;
        c.executor.command = command;
        if let Some(p) = python {
            c.executor.python = p;
        }
    })
    .await
}

/// The engine as the external trainer.
fn engine_command() -> String {
    format!(
        "{} run-job --order {{order}} --progress {{progress}}",
        server_binary()
    )
}

struct Lab {
    alice: Client,
    base: PathBuf,
    data: String,
    digest: clreg_types::Digest,
}

/// A collaboration with a tiny base and one task's data (carrying `MARKER`).
async fn lab(server: &TestServer, policy: &str) -> Lab {
    let root = server.dir.path();
    let alice = server.user("alice").await;
    alice.create_collab("lab", policy).await;
    let base = tiny_model_with_tokenizer(root, "base", 1);
    alice
        .push("lab", "base", ArtifactKind::Base, None, &base)
        .await;
    let data = serde_json::to_string(
        &(0..8)
            .map(|i| json!({"prompt": format!("{MARKER} w{i} w{}", i + 1), "answer": format!("w{}", i % 3)}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let digest = clreg_tests::digest_of(data.as_bytes());
    let store = policy == "full";
    if store {
        assert_eq!(alice.upload(data.as_bytes(), 1 << 20).await, digest);
    }
    let (status, body) = alice
        .post(
            "/collaborations/lab/datasets",
            &json!({"name": "task1", "task": "task1", "metric": "exact", "digest": digest,
                    "size": data.len(), "examples": 8, "store_content": store}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Lab {
        alice,
        base,
        data,
        digest,
    }
}

fn train_config() -> Value {
    json!({"method": "lora", "max_steps": 3, "batch_size": 2, "grad_accum": 2, "lr": 0.01,
           "max_len": 32, "seed": 11, "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0, "rslora": false,
           "targets": ["q_proj", "v_proj", "down_proj"]}})
}

/// The engine's own run of the same job on the same files.
fn local_run(root: &Path, base: &Path, data: &str, config: &Value) -> PathBuf {
    local_run_over(root, base, &[], data, config)
}

/// The same, on top of earlier adapters.
fn local_run_over(
    root: &Path,
    base: &Path,
    adapters: &[PathBuf],
    data: &str,
    config: &Value,
) -> PathBuf {
    let file = root.join("local-data.json");
    std::fs::write(&file, data).unwrap();
    let out = root.join("local-out");
    let _ = std::fs::remove_dir_all(&out);
    let spec = clreg_engine::job::JobSpec::Train(clreg_engine::job::TrainSpec {
        base: base.to_path_buf(),
        adapters: adapters.to_vec(),
        data: vec![file],
        past: vec![],
        output: out.clone(),
        checkpoint_dir: None,
        checkpoint_every: None,
        resume: false,
        config: serde_json::from_value(config.clone()).unwrap(),
    });
    clreg_tests::run_engine_job(&spec);
    out
}

async fn submit(alice: &Client, body: &Value) -> Value {
    let (status, job) = alice.post("/collaborations/lab/jobs", body).await;
    assert_eq!(status, 201, "{job}");
    alice.wait_job(job["id"].as_str().unwrap()).await
}

/// Files under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    clreg_tests::walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn a_command_executor_job_commits_what_the_engine_makes_with_lineage_and_forgets_the_data() {
    let server = server_with(engine_command(), None).await;
    let root = server.dir.path().to_path_buf();
    let lab = lab(&server, "semi").await;
    let config = train_config();
    let done = submit(
        &lab.alice,
        &json!({"kind": "train", "name": "round1", "base": "lab/base", "config": config,
                "data": [{"digest": lab.digest, "content": lab.data}]}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let id = done["result"]["artifacts"][0].as_str().unwrap();
    let (_, artifact) = lab.alice.get(&format!("/artifacts/{id}")).await;
    assert_eq!(artifact["kind"], "adapter");
    let (_, lineage) = lab.alice.get(&format!("/artifacts/{id}/lineage")).await;
    let edge = &lineage["edges"][0];
    assert_eq!(
        (edge["relation"].as_str(), edge["method"].as_str()),
        (Some("adapter"), Some("lora"))
    );
    assert_eq!(edge["datasets"][0], lab.digest.to_string());
    assert_eq!(edge["params"]["seed"], 11);
    let (_, log) = lab
        .alice
        .get(&format!("/jobs/{}/log", done["id"].as_str().unwrap()))
        .await;
    let log = log.to_string();
    assert!(
        log.contains("running in the command executor")
            && log.contains("handed to a command as clreg-"),
        "{log}"
    );
    // Members read the job's log; the operator's rendered command line is not in it.
    assert!(!log.contains("--order"), "{log}");

    // The same adapter as the engine run in the worker would make.
    let local = local_run(&root, &lab.base, &lab.data, &config);
    let served = lab.alice.artifact_files(&artifact).await;
    assert_eq!(
        served["adapter_model.safetensors"],
        std::fs::read(local.join("adapter_model.safetensors")).unwrap()
    );
    // Semi: the carried data is gone with the job's directory (order, progress, data).
    std::fs::remove_file(root.join("local-data.json")).unwrap();
    let left = files_holding(&root.join("data"), MARKER);
    assert!(left.is_empty(), "the carried data is still in {left:?}");
    assert!(!log.contains(MARKER));
}

#[tokio::test]
async fn an_external_job_that_dies_lies_or_is_cancelled_fails_cleanly() {
    // Each case is a command: one that dies without a result, one whose record claims another
    // base than the registry's, and one that runs until cancelled.
    let lying = format!(
        "{} run-job --order {{order}} --progress {{dir}}/held.jsonl && \
         sed -i 's/\"sha256\": \"[0-9a-f]*\"/\"sha256\": \"{}\"/' {{dir}}/../output/clreg_train.json && \
         cat {{dir}}/held.jsonl >> {{progress}}",
        server_binary(),
        "0".repeat(64)
    );
    // The case is chosen by the job's seed, which the order file holds.
    let command = format!(
        "case \"$(grep -o '\"seed\":[0-9]*' {{order}})\" in \
         '\"seed\":101') echo 'out of GPUs' >&2; exit 3;; \
         '\"seed\":102') {lying};; \
         '\"seed\":103') exec sleep 60;; esac"
    );
    let server = server_with(command, None).await;
    let lab = lab(&server, "full").await;
    let jobs_dir = server.dir.path().join("data/jobs");
    let run = |seed: u64| {
        let mut config = train_config();
        config["seed"] = seed.into();
        let body = json!({"kind": "train", "name": "r", "base": "lab/base", "config": config,
                          "data": [{"digest": lab.digest}]});
        let alice = lab.alice.clone();
        async move {
            let (status, job) = alice.post("/collaborations/lab/jobs", &body).await;
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().unwrap().to_string()
        }
    };
    let dies = run(101).await;
    let failed = lab.alice.wait_job(&dies).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "executor_failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("exit status: 3") && message.contains("out of GPUs"),
        "{message}"
    );

    let lies = run(102).await;
    let failed = lab.alice.wait_job(&lies).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "executor_failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("the registry's is"), "{message}");
    let (_, artifacts) = lab.alice.get("/collaborations/lab/artifacts").await;
    assert_eq!(artifacts.as_array().unwrap().len(), 1, "only the base");

    let sleeps = run(103).await;
    for _ in 0..100 {
        let (_, job) = lab.alice.get(&format!("/jobs/{sleeps}")).await;
        if job["state"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Started: its attempt directory holds the order.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (status, body) = lab
        .alice
        .post(&format!("/jobs/{sleeps}/cancel"), &json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    let cancelled = lab.alice.wait_job(&sleeps).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // The process group is gone, not left sleeping.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 60"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ps.stdout)
    );
    // Nothing of the three attempts is left on disk.
    for id in [dies, lies, sleeps] {
        assert!(!jobs_dir.join(&id).exists(), "{id}");
    }
}

/// The shipped PyTorch + PEFT trainer through the same contract. It needs a Python with torch,
/// transformers, peft and accelerate (`../shared/peers/setup.sh` makes one):
/// `CLREG_TORCH_PYTHON=~/.cache/clreg-peers/venv/bin/python cargo nextest run -p clreg-server
/// --test executors --run-ignored only`
#[tokio::test]
#[ignore = "needs PyTorch + PEFT: set CLREG_TORCH_PYTHON and run with --run-ignored only"]
async fn the_pytorch_trainer_makes_the_engines_adapter_to_float_rounding() {
    let python = std::env::var("CLREG_TORCH_PYTHON").expect("CLREG_TORCH_PYTHON");
    let server = server_with(
        "{python} {trainer} --order {order} --progress {progress}".into(),
        Some(shell_quote(&python)),
    )
    .await;
    let root = server.dir.path().to_path_buf();
    let lab = lab(&server, "semi").await;
    // LoRA; O-LoRA (sq and l1, with λ₂) over the first adapter, merged into the weights; FFT.
    let mut olora = train_config();
    olora["method"] = "olora".into();
    olora["olora"] = json!({"lambda": 0.5, "variant": "sq", "lambda2": 0.0});
    let mut olora_l1 = olora.clone();
    olora_l1["olora"] = json!({"lambda": 5.0, "variant": "l1", "lambda2": 0.01});
    let earlier = root.join("served-lora");
    for (name, config, over) in [
        ("lora", train_config(), None),
        ("olora", olora, Some("lab/lora")),
        ("olora-l1", olora_l1, Some("lab/lora")),
        (
            "fft",
            json!({"method": "fft", "max_steps": 3, "batch_size": 2, "grad_accum": 2,
                       "lr": 0.001, "max_len": 32, "seed": 11}),
            None,
        ),
    ] {
        let adapters: Vec<&str> = over.into_iter().collect();
        let done = submit(
            &lab.alice,
            &json!({"kind": "train", "name": name, "base": "lab/base", "config": config,
                    "adapters": adapters,
                    "data": [{"digest": lab.digest, "content": lab.data}]}),
        )
        .await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let id = done["result"]["artifacts"][0].as_str().unwrap();
        let (_, artifact) = lab.alice.get(&format!("/artifacts/{id}")).await;
        let (_, lineage) = lab.alice.get(&format!("/artifacts/{id}/lineage")).await;
        // The run's own edges (the graph holds its ancestors' too): one to the base with the
        // dataset, and over an earlier adapter one to it, from the record the worker checked.
        let base_id = lineage["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "base")
            .map(|n| n["id"].clone())
            .unwrap();
        let own: Vec<&Value> = lineage["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["child"] == id)
            .collect();
        assert_eq!(own.len(), 1 + usize::from(over.is_some()), "{lineage}");
        assert!(
            own.iter()
                .any(|e| e["datasets"][0] == lab.digest.to_string() && e["parent"] == base_id),
            "{lineage}"
        );
        let served = lab.alice.artifact_files(&artifact).await;
        // The engine's run over the very adapter the PyTorch trainer made in round 1.
        let local_adapters = if over.is_some() {
            vec![earlier.clone()]
        } else {
            vec![]
        };
        let local = local_run_over(&root, &lab.base, &local_adapters, &lab.data, &config);
        if name == "lora" {
            std::fs::create_dir_all(&earlier).unwrap();
            for (path, bytes) in &served {
                std::fs::write(earlier.join(path), bytes).unwrap();
            }
        }
        let file = if name != "fft" {
            "adapter_model.safetensors"
        } else {
            "model.safetensors"
        };
        let theirs = safetensors::SafeTensors::deserialize(&served[file]).unwrap();
        let ours_bytes = std::fs::read(local.join(file)).unwrap();
        let ours = safetensors::SafeTensors::deserialize(&ours_bytes).unwrap();
        let mut names: Vec<String> = ours.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut theirs_names: Vec<String> =
            theirs.names().into_iter().map(str::to_string).collect();
        theirs_names.sort();
        assert_eq!(names, theirs_names, "{name}");
        let mut worst = 0f32;
        for n in &names {
            let f32s = |t: safetensors::tensor::TensorView<'_>| -> Vec<f32> {
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let (a, b) = (
                f32s(ours.tensor(n).unwrap()),
                f32s(theirs.tensor(n).unwrap()),
            );
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs() / (1e-3 + x.abs()));
            }
        }
        // Three AdamW steps from the same start: the same weights up to float rounding
        // (Adam's first steps move every weight by about lr, so a differing sign would show).
        eprintln!(
            "{name}: {} tensors, worst relative difference {worst:.2e}",
            names.len()
        );
        assert!(worst < 1e-2, "{name}: worst relative difference {worst}");
        let record: Value = serde_json::from_slice(&served["clreg_train.json"]).unwrap();
        let local_record: Value =
            serde_json::from_slice(&std::fs::read(local.join("clreg_train.json")).unwrap())
                .unwrap();
        for (x, y) in record["losses"]
            .as_array()
            .unwrap()
            .iter()
            .zip(local_record["losses"].as_array().unwrap())
        {
            let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            eprintln!("{name}: loss {x:.6} (PyTorch) vs {y:.6} (engine)");
            assert!(
                (x - y).abs() < 1e-4 * y.abs().max(1.0),
                "{name}: loss {x} vs {y}"
            );
        }
    }
}
