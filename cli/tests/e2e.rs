//! The real `clreg` binary (built by cargo from this source) against a real server: login, push,
//! resume, pull, lineage, datasets; and the `clreg local …` engine commands, which need no server.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use clreg_tests::{TestServer, tiny_adapter, tiny_model};
use common::{Cli, same_tree};
use serde_json::Value;

#[tokio::test]
async fn login_push_pull_lineage_and_ledger() {
    let server = TestServer::start().await;
    let key = clreg_server::admin::create_user(&server.state.db, "alice", false)
        .await
        .unwrap();
    let cli = Cli::new();
    let root = server.dir.path();

    // Errors before login are clear and have their own exit code.
    let out = cli.run(&["collab", "ls"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);

    let bad = cli
        .run(&["login", "--server", &server.url, "--api-key", "clreg_wrong"])
        .await;
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(bad.stderr.contains("invalid_api_key"), "{}", bad.stderr);
    cli.ok(&["login", "--server", &server.url, "--api-key", &key])
        .await;
    // The key never reaches the output, and the credentials file is private.
    let creds = cli.home.path().join("config/credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    cli.ok(&["collab", "create", "lab", "--policy", "semi"])
        .await;
    let collabs = cli.ok(&["--json", "collab", "ls"]).await.json();
    assert_eq!(collabs[0]["name"], "lab");

    // Push a sharded base model; a second push sends nothing new and is idempotent.
    let base_dir = tiny_model(root, "base", 1, Some(40_000));
    let pushed = cli
        .ok(&[
            "--json",
            "push",
            base_dir.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "tiny",
        ])
        .await
        .json();
    assert_eq!(pushed["artifact"]["kind"], "base");
    assert_eq!(pushed["artifact"]["version"], 1);
    let again = cli
        .ok(&[
            "--json",
            "push",
            base_dir.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "tiny",
        ])
        .await
        .json();
    assert_eq!(again["created"], false);
    assert_eq!(again["artifact"]["id"], pushed["artifact"]["id"]);

    // An adapter with lineage parameters and a registered dataset.
    let data = root.join("cstance.json");
    std::fs::write(
        &data,
        r#"[{"prompt": "p1", "answer": "favor"}, {"prompt": "p2", "answer": "against"}]"#,
    )
    .unwrap();
    let ds = cli
        .ok(&[
            "--json",
            "dataset",
            "push",
            data.to_str().unwrap(),
            "--collab",
            "lab",
            "--task",
            "C-STANCE",
            "--metric",
            "accuracy",
        ])
        .await;
    assert_eq!(
        ds.json()["content_stored"],
        false,
        "semi keeps manifests only"
    );
    let lora = tiny_adapter(root, "lora", 2, &clreg_engine::tiny::TinyConfig::default());
    let adapter = cli
        .ok(&[
            "--json",
            "push",
            lora.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "tiny-lora",
            "--base",
            "lab/tiny",
            "--parent",
            "lab/tiny:1",
            "--relation",
            "adapter",
            "--method",
            "lora",
            "--param",
            "r=4",
            "--param",
            "lr=2e-5",
            "--dataset",
            data.to_str().unwrap(),
        ])
        .await
        .json();
    assert_eq!(adapter["artifact"]["kind"], "adapter");

    let lineage = cli.ok(&["--json", "lineage", "lab/tiny-lora"]).await.json();
    let edge = &lineage["edges"][0];
    assert_eq!(edge["relation"], "adapter");
    assert_eq!(edge["params"]["r"], 4);
    assert_eq!(edge["params"]["lr"], 2e-5);
    assert_eq!(edge["datasets"].as_array().unwrap().len(), 1);
    let tree = cli.ok(&["lineage", "lab/tiny-lora"]).await;
    assert!(
        tree.stdout.contains("tiny") && tree.stdout.contains("adapter"),
        "{}",
        tree.stdout
    );

    // Pull verifies digests and reproduces the tree byte for byte; a second pull skips.
    let out_dir = root.join("pulled");
    cli.ok(&["pull", "lab/tiny:1", "-o", out_dir.to_str().unwrap()])
        .await;
    same_tree(&base_dir, &out_dir);
    cli.ok(&["pull", "lab/tiny", "-o", out_dir.to_str().unwrap()])
        .await;
    same_tree(&base_dir, &out_dir);

    let listed = cli.ok(&["--json", "ls", "--collab", "lab"]).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let ledger = cli
        .ok(&["--json", "ledger", "--collab", "lab"])
        .await
        .json();
    let kinds: Vec<&str> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "collaboration.created",
            "member.added",
            "artifact.pushed",
            "dataset.registered",
            "artifact.pushed"
        ]
    );

    // Server refusals print the code and map to exit code 4 (not found) or 5 (refused).
    let missing = cli.run(&["show", "lab/nope"]).await;
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    let refused = cli
        .run(&["collab", "create", "lab", "--policy", "full"])
        .await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("conflict"), "{}", refused.stderr);
    for out in [&missing, &refused] {
        assert!(!out.stderr.contains(&key) && !out.stdout.contains(&key));
    }
}

#[tokio::test]
async fn pull_detects_corruption_and_push_refuses_bad_local_input() {
    let server = TestServer::start().await;
    let cli = Cli::alice_in_lab(&server, &server.url, "full").await;
    let root = server.dir.path();
    let base_dir = tiny_model(root, "base", 1, None);
    cli.ok(&[
        "push",
        base_dir.to_str().unwrap(),
        "--collab",
        "lab",
        "--name",
        "tiny",
    ])
    .await;

    // A dataset that is not TRACE JSON is refused locally, naming the example.
    let bad = root.join("bad.json");
    std::fs::write(&bad, r#"[{"prompt": "p"}]"#).unwrap();
    let out = cli
        .run(&[
            "dataset",
            "push",
            bad.to_str().unwrap(),
            "--collab",
            "lab",
            "--task",
            "t",
            "--metric",
            "accuracy",
        ])
        .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("answer"), "{}", out.stderr);

    // In a full collaboration the content is stored and can be pulled back.
    let good = root.join("good.json");
    std::fs::write(&good, r#"[{"prompt": "p", "answer": "a"}]"#).unwrap();
    let ds = cli
        .ok(&[
            "--json",
            "dataset",
            "push",
            good.to_str().unwrap(),
            "--collab",
            "lab",
            "--task",
            "t",
            "--metric",
            "accuracy",
        ])
        .await
        .json();
    assert_eq!(ds["content_stored"], true);

    // A pulled file altered on disk is re-downloaded and verified, not trusted.
    let out_dir = root.join("pulled");
    cli.ok(&["pull", "lab/tiny", "-o", out_dir.to_str().unwrap()])
        .await;
    assert!(
        !out_dir.join(".clreg-pull").exists(),
        "the staging directory goes once the pull is done"
    );
    std::fs::write(out_dir.join("config.json"), b"tampered").unwrap();
    cli.ok(&["pull", "lab/tiny", "-o", out_dir.to_str().unwrap()])
        .await;
    same_tree(&base_dir, &out_dir);

    // A symbolic link planted where a file goes is replaced, never written through; one planted
    // as the staging directory is refused.
    #[cfg(unix)]
    {
        let outside = root.join("outside.json");
        std::fs::write(&outside, b"not yours").unwrap();
        std::fs::remove_file(out_dir.join("config.json")).unwrap();
        std::os::unix::fs::symlink(&outside, out_dir.join("config.json")).unwrap();
        cli.ok(&["pull", "lab/tiny", "-o", out_dir.to_str().unwrap()])
            .await;
        assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
        assert!(!out_dir.join("config.json").is_symlink());
        same_tree(&base_dir, &out_dir);

        let fresh = root.join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::os::unix::fs::symlink(root, fresh.join(".clreg-pull")).unwrap();
        let out = cli
            .run(&["pull", "lab/tiny", "-o", fresh.to_str().unwrap()])
            .await;
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("unsafe_path"), "{}", out.stderr);
    }
}

#[tokio::test]
async fn local_merge_from_a_mergekit_recipe() {
    use clreg_engine::formats::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cli = Cli::new();
    for (name, seed) in [("base", 1), ("a", 2), ("b", 3)] {
        cli.ok(&[
            "local",
            "tiny",
            "-o",
            root.join(name).to_str().unwrap(),
            "--seed",
            &seed.to_string(),
        ])
        .await;
    }
    let recipe = root.join("linear.yml");
    let yaml = format!(
        "merge_method: linear\nbase_model: {0}/base\nmodels:\n  - model: {0}/a\n    parameters: {{weight: 1.0}}\n  - model: {0}/b\n    parameters: {{weight: 3.0}}\ndtype: float32\n",
        root.display()
    );
    std::fs::write(&recipe, &yaml).unwrap();
    let out = root.join("merged");
    let report = cli
        .ok(&[
            "--json",
            "local",
            "merge",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await
        .json();
    assert_eq!(report["method"], "linear");
    assert!(out.join("clreg_merge.json").exists());
    // The inputs' digests went into the CLI's digest cache, so the next merge or mix of the
    // same files does not hash them again; the record holds the real sha256.
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join("clreg_merge.json")).unwrap()).unwrap();
    let a_weights =
        clreg_engine::merge::record::sha256_file(&root.join("a/model.safetensors")).unwrap();
    assert!(record.to_string().contains(&a_weights));
    let cached = std::fs::read_to_string(cli.home.path().join("cache/digests.json")).unwrap();
    assert!(cached.contains(&a_weights), "{cached}");
    // Independent check: (1·a + 3·b) / 4 for one tensor.
    let (a, b, m) = (
        Checkpoint::open(&root.join("a")).unwrap(),
        Checkpoint::open(&root.join("b")).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let name = "model.layers.1.mlp.down_proj.weight";
    let (ta, tb, tm) = (
        a.read_f32(name).unwrap(),
        b.read_f32(name).unwrap(),
        m.read_f32(name).unwrap(),
    );
    let worst = ta
        .iter()
        .zip(&tb)
        .zip(&tm)
        .map(|((x, y), z)| ((f64::from(*x) + 3.0 * f64::from(*y)) / 4.0 - f64::from(*z)).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "max abs diff {worst}");

    // A refused recipe names the key and leaves no output.
    std::fs::write(&recipe, "merge_method: ties\nmodels: []\nbogus: 1\n").unwrap();
    let out2 = root.join("merged2");
    let refused = cli
        .run(&[
            "local",
            "merge",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
        ])
        .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("bogus"), "{}", refused.stderr);
    assert!(!out2.exists());

    // An output that would overwrite the first merge: its own code, a usage error (2), and the
    // first merge untouched.
    let before = std::fs::read(out.join("clreg_merge.json")).unwrap();
    std::fs::write(&recipe, &yaml).unwrap();
    let occupied = cli
        .run(&[
            "local",
            "merge",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(occupied.code, 2, "{}", occupied.stderr);
    assert!(
        occupied.stderr.contains("error[output_exists]"),
        "{}",
        occupied.stderr
    );
    assert_eq!(std::fs::read(out.join("clreg_merge.json")).unwrap(), before);
}

#[tokio::test]
async fn local_generate_and_import_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let cli = Cli::new();
    cli.ok(&[
        "local",
        "tiny",
        "-o",
        model.to_str().unwrap(),
        "--seed",
        "4",
    ])
    .await;
    assert!(model.join("tokenizer.json").exists());
    let args = [
        "--json",
        "local",
        "generate",
        model.to_str().unwrap(),
        "--prompt",
        "w5 w6 w7",
        "--max-tokens",
        "6",
    ];
    let first = cli.ok(&args).await.json();
    let second = cli.ok(&args).await.json();
    assert_eq!(
        first["text"], second["text"],
        "greedy generation is deterministic"
    );
    assert!(first["tokens"].as_u64().unwrap() >= 1, "{first}");
    // With an adapter stacked on top the model still runs (its effect is tested in the engine).
    let lora = clreg_tests::tiny_adapter(
        dir.path(),
        "lora",
        9,
        &clreg_engine::tiny::TinyConfig::default(),
    );
    cli.ok(&[
        "local",
        "generate",
        model.to_str().unwrap(),
        "--adapter",
        lora.to_str().unwrap(),
        "--prompt",
        "w5",
        "--max-tokens",
        "3",
    ])
    .await;

    // Not a GGUF file: a clear refusal, and no output directory left behind.
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, b"definitely not gguf").unwrap();
    let out = dir.path().join("imported");
    let refused = cli
        .run(&[
            "local",
            "import-gguf",
            bogus.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    // An invalid input file: local verification failed (7), not "refused by the server".
    assert_eq!(refused.code, 7, "{}", refused.stderr);
    assert!(refused.stderr.contains("gguf"), "{}", refused.stderr);
    assert!(!out.exists());
}

#[tokio::test]
async fn local_mix_from_a_mergekit_moe_recipe() {
    use clreg_engine::formats::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cli = Cli::new();
    let base = root.join("base");
    cli.ok(&["local", "tiny", "-o", base.to_str().unwrap(), "--seed", "5"])
        .await;
    // Two experts that are the base itself: the mixture must generate what the base does.
    let recipe = root.join("moe.yml");
    std::fs::write(
        &recipe,
        format!(
            "base_model: {0}\ngate_mode: hidden\nexperts_per_token: 2\nexperts:\n  - source_model: {0}\n    positive_prompts: [\"w5 w6 w7\"]\n  - source_model: {0}\n    positive_prompts: [\"w40 w41\"]\n    negative_prompts: [\"w5\"]\n",
            base.display()
        ),
    )
    .unwrap();
    let out = root.join("moe");
    let report = cli
        .ok(&[
            "--json",
            "local",
            "mix",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await
        .json();
    assert_eq!(report["kind"], "mixtral");
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join("clreg_mix.json")).unwrap()).unwrap();
    assert_eq!(record["router"]["init"], "hidden");
    assert_eq!(record["experts"][1]["negative_prompts"], 1);
    // Parameter counts against the written tensors.
    let c = Checkpoint::open(&out).unwrap();
    let total: u64 = c
        .names()
        .iter()
        .map(|n| c.meta(n).unwrap().numel() as u64)
        .sum();
    assert_eq!(report["parameters"]["total"], total);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "MixtralForCausalLM");
    let generate = |model: &Path| {
        [
            "--json".to_string(),
            "local".to_string(),
            "generate".to_string(),
            model.display().to_string(),
            "--prompt".to_string(),
            "w5 w6 w7".to_string(),
            "--max-tokens".to_string(),
            "6".to_string(),
        ]
    };
    let g = generate(&out);
    let mixed = cli
        .ok(&g.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .json();
    let g = generate(&base);
    let plain = cli
        .ok(&g.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .json();
    assert_eq!(mixed["text"], plain["text"]);

    // Router training on a TRACE calibration file, recorded; its settings without its data
    // are refused before anything runs.
    let calib = root.join("calib.json");
    std::fs::write(
        &calib,
        r#"[{"prompt": "w5 w6", "answer": "w7 w8"}, {"prompt": "w40", "answer": "w41 w42"}]"#,
    )
    .unwrap();
    let trained = root.join("moe-trained");
    let mix_with = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "--json".to_string(),
            "local".to_string(),
            "mix".to_string(),
            "--config".to_string(),
            recipe.display().to_string(),
            "-o".to_string(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let args = mix_with(
        &["--train-router", calib.to_str().unwrap(), "--steps", "3"],
        &trained,
    );
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let record: Value =
        serde_json::from_slice(&std::fs::read(trained.join("clreg_mix.json")).unwrap()).unwrap();
    assert_eq!(record["training"]["steps"], 3);
    assert_eq!(record["training"]["sequences"], 2);
    let untrained_settings = root.join("moe-no-data");
    let args = mix_with(&["--steps", "3"], &untrained_settings);
    let refused = cli
        .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("--train-router"),
        "{}",
        refused.stderr
    );
    assert!(!untrained_settings.exists());

    // One expert is refused with the recipe's reason, and nothing is written.
    std::fs::write(
        &recipe,
        format!(
            "base_model: {0}\ngate_mode: random\nexperts:\n  - source_model: {0}\n",
            base.display()
        ),
    )
    .unwrap();
    let out2 = root.join("moe2");
    let refused = cli
        .run(&[
            "local",
            "mix",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
        ])
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("at least two"),
        "{}",
        refused.stderr
    );
    assert!(!out2.exists());
}

#[tokio::test]
async fn local_synth_split_train_eval_and_bwt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = |name: &str| root.join(name).to_str().unwrap().to_string();
    let cli = Cli::new();
    let suite = cli
        .ok(&[
            "--json",
            "local",
            "synth",
            "-o",
            &p("suite"),
            "--seed",
            "3",
            "--train",
            "24",
            "--eval",
            "4",
            "--test",
            "6",
        ])
        .await
        .json();
    assert_eq!(suite["tasks"].as_array().unwrap().len(), 7);
    // The same seed writes the same bytes.
    cli.ok(&[
        "local",
        "synth",
        "-o",
        &p("suite2"),
        "--seed",
        "3",
        "--train",
        "24",
        "--eval",
        "4",
        "--test",
        "6",
    ])
    .await;
    same_tree(&root.join("suite"), &root.join("suite2"));

    let split = cli
        .ok(&[
            "--json",
            "local",
            "split",
            &p("suite/cstance/train.json"),
            "-o",
            &p("cstance"),
            "--eval",
            "0.25",
            "--test",
            "0",
        ])
        .await
        .json();
    assert_eq!(
        (split["train"].as_u64(), split["eval"].as_u64()),
        (Some(18), Some(6))
    );

    cli.ok(&[
        "local",
        "tiny",
        "-o",
        &p("base"),
        "--seed",
        "1",
        "--tokenizer",
        "bytes",
    ])
    .await;
    let trained = cli
        .ok(&[
            "--json",
            "local",
            "train",
            "--base",
            &p("base"),
            "--data",
            &p("cstance/train.json"),
            "--batch-size",
            "6",
            "--grad-accum",
            "1",
            "--lr",
            "1e-3",
            "--max-len",
            "96",
            "--max-steps",
            "2",
            "-o",
            &p("round1"),
        ])
        .await;
    let summary = trained.json();
    assert_eq!(summary["output_kind"], "adapter");
    assert_eq!(summary["steps"], 2);
    assert!(trained.stderr.contains("step 2/2"), "{}", trained.stderr);
    let record: Value =
        serde_json::from_slice(&std::fs::read(root.join("round1/clreg_train.json")).unwrap())
            .unwrap();
    assert_eq!(record["losses"].as_array().unwrap().len(), 2);
    assert_eq!(record["counts"]["per_epoch"][0], 18);

    // Replay without --past is refused with its code, and nothing is written.
    let refused = cli
        .run(&[
            "local",
            "train",
            "--base",
            &p("base"),
            "--data",
            &p("cstance/train.json"),
            "--replay",
            "0.1",
            "-o",
            &p("round2"),
        ])
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no_past_data"),
        "{}",
        refused.stderr
    );
    assert!(!root.join("round2").exists());

    let reports = cli
        .ok(&[
            "--json",
            "local",
            "eval",
            &p("base"),
            "--adapter",
            &p("round1"),
            "--suite",
            &p("suite"),
            "--limit",
            "2",
            "--max-tokens",
            "4",
            "-o",
            &p("report.json"),
        ])
        .await
        .json();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 8, "seven tasks and the old-knowledge set");
    for r in reports {
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{r}");
        assert_eq!(r["n"], 2);
    }
    assert_eq!(reports[7]["metric"], "mc");
    assert!(reports[7]["acc"].is_number());
    assert!(root.join("report.json").exists());

    // Bare files take their metric from the suite, or `mc` when every example has choices.
    let bare = cli
        .ok(&[
            "--json",
            "local",
            "eval",
            &p("base"),
            "--tasks",
            &p("suite/fomc/test.json"),
            &p("suite/metamath/eval.json"),
            &p("suite/facts/test.json"),
            "--limit",
            "1",
            "--max-tokens",
            "2",
        ])
        .await
        .json();
    let metrics: Vec<&str> = bare
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["exact", "final_number", "mc"]);
    let unknown = cli
        .run(&[
            "local",
            "eval",
            &p("base"),
            "--tasks",
            &p("cstance/train.json"),
        ])
        .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("FILE:METRIC"), "{}", unknown.stderr);

    // BWT of a matrix with known values: R = [[0.5, 0.1], [0.4, 0.7]], base [0.2, 0.1].
    std::fs::write(
        root.join("m.json"),
        r#"{"tasks": ["a", "b"], "rounds": [[0.5, 0.1], [0.4, 0.7]], "base": [0.2, 0.1]}"#,
    )
    .unwrap();
    let bwt = cli
        .ok(&["--json", "local", "bwt", &p("m.json")])
        .await
        .json();
    assert!((bwt["bwt"].as_f64().unwrap() - -0.1).abs() < 1e-12, "{bwt}");
    assert!((bwt["fwt"].as_f64().unwrap() - 0.0).abs() < 1e-12, "{bwt}");
    assert!((bwt["relative_bwt"][0].as_f64().unwrap() - -0.2).abs() < 1e-12);
    assert!((bwt["gain"][1].as_f64().unwrap() - 6.0).abs() < 1e-12);
}
