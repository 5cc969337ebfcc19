//! `clreg merge` and `clreg jobs …` against a real server whose worker runs jobs in
//! `clreg-server run-job` children: the result equals `clreg local merge` of the same files.
#![allow(clippy::unwrap_used)]

mod common;

use clreg_tests::{TestServer, server_binary};
use common::{Cli, same_tree};

/// Pushes the base model at `dir` into `lab` as `lab/base`.
async fn push_base(cli: &Cli, dir: &std::path::Path) {
    cli.ok(&[
        "push",
        dir.to_str().unwrap(),
        "--collab",
        "lab",
        "--name",
        "base",
    ])
    .await;
}

/// Registers the dataset in `file` (its manifest only) in `lab` as task `task`, metric `exact`.
async fn register(cli: &Cli, file: &std::path::Path, task: &str) {
    cli.ok(&[
        "dataset",
        "push",
        file.to_str().unwrap(),
        "--collab",
        "lab",
        "--task",
        task,
        "--metric",
        "exact",
        "--manifest-only",
    ])
    .await;
}

#[tokio::test]
async fn merge_on_the_server_equals_a_local_merge() {
    let server = TestServer::with_worker(server_binary()).await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    for (name, seed) in [("base", "1"), ("a", "2"), ("b", "3")] {
        let dir = root.join(name);
        cli.ok(&["local", "tiny", "-o", dir.to_str().unwrap(), "--seed", seed])
            .await;
        let mut args = vec![
            "push",
            dir.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            name,
        ];
        if name != "base" {
            args.extend(["--kind", "checkpoint", "--base", "lab/base"]);
        }
        cli.ok(&args).await;
    }
    let recipe = |base: &str, a: &str, b: &str| {
        format!(
            "merge_method: dare_ties\nbase_model: {base}\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0, density: 0.6}}\n  - model: {b}\n    parameters: {{weight: 0.7, density: 0.4}}\ndtype: float32\nseed: 11\n"
        )
    };
    let remote = root.join("remote.yml");
    std::fs::write(&remote, recipe("lab/base", "lab/a:1", "lab/b")).unwrap();

    // Submit and follow: the exit status is the job's outcome, the JSON the finished job.
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
    let id = done["id"].as_str().unwrap().to_string();
    let listed = cli
        .ok(&["--json", "jobs", "ls", "--collab", "lab"])
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let shown = cli.ok(&["jobs", "show", &id]).await;
    assert!(shown.stdout.contains("succeeded"), "{}", shown.stdout);
    let log = cli.ok(&["jobs", "logs", &id]).await;
    assert!(
        log.stdout.contains("3 input artifact(s) staged"),
        "{}",
        log.stdout
    );
    // An ended job cannot be cancelled: refused (5), with its code.
    let again = cli.run(&["jobs", "cancel", &id]).await;
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(again.stderr.contains("error[conflict]"), "{}", again.stderr);

    // The same recipe on the same files, locally.
    let local_recipe = root.join("local.yml");
    let path = |n: &str| root.join(n).display().to_string();
    std::fs::write(&local_recipe, recipe(&path("base"), &path("a"), &path("b"))).unwrap();
    let local = root.join("local-merge");
    cli.ok(&[
        "local",
        "merge",
        "--config",
        local_recipe.to_str().unwrap(),
        "-o",
        local.to_str().unwrap(),
    ])
    .await;
    // Pushed, the local run keeps its provenance: the same edges as the server's job.
    let pushed = cli
        .ok(&[
            "--json",
            "push",
            local.to_str().unwrap(),
            "--collab",
            "lab",
            "--name",
            "soup-local",
        ])
        .await
        .json();
    assert_eq!(pushed["artifact"]["kind"], "merge");
    let edges_of = |lineage: &serde_json::Value, child: &serde_json::Value| {
        let mut edges: Vec<(String, String, String, String)> = lineage["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| &e["child"] == child)
            .map(|e| {
                (
                    e["parent"].to_string(),
                    e["relation"].to_string(),
                    e["method"].to_string(),
                    e["params"].to_string(),
                )
            })
            .collect();
        edges.sort();
        edges
    };
    let soup = cli.ok(&["--json", "show", "lab/soup"]).await.json()["artifact"].clone();
    let server_edges = edges_of(
        &cli.ok(&["--json", "lineage", "lab/soup"]).await.json(),
        &soup["id"],
    );
    let local_edges = edges_of(
        &cli.ok(&["--json", "lineage", "lab/soup-local"])
            .await
            .json(),
        &pushed["artifact"]["id"],
    );
    assert_eq!(server_edges.len(), 3);
    assert_eq!(local_edges, server_edges);
    assert_eq!(pushed["artifact"]["base"], soup["base"]);

    // A run whose input the registry does not hold: refused (5), unless allowed, and then
    // recorded by its digests.
    let stranger = root.join("stranger");
    cli.ok(&[
        "local",
        "tiny",
        "-o",
        stranger.to_str().unwrap(),
        "--seed",
        "9",
    ])
    .await;
    std::fs::write(
        &local_recipe,
        recipe(&path("base"), &path("a"), &stranger.display().to_string()),
    )
    .unwrap();
    let odd = root.join("odd-merge");
    cli.ok(&[
        "local",
        "merge",
        "--config",
        local_recipe.to_str().unwrap(),
        "-o",
        odd.to_str().unwrap(),
    ])
    .await;
    let push_odd = |extra: &'static [&'static str]| {
        let mut args = vec![
            "--json".to_string(),
            "push".to_string(),
            odd.display().to_string(),
            "--collab".to_string(),
            "lab".to_string(),
            "--name".to_string(),
            "odd".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = push_odd(&[]);
    let refused = cli
        .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("error[unregistered_input]") && refused.stderr.contains("stranger"),
        "{}",
        refused.stderr
    );
    let ls = cli.ok(&["--json", "ls", "--collab", "lab"]).await.json();
    assert!(
        !ls.as_array().unwrap().iter().any(|a| a["name"] == "odd"),
        "nothing committed"
    );
    let args = push_odd(&["--allow-unregistered-inputs"]);
    let odd_pushed = cli
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .json();
    let odd_edges = edges_of(
        &cli.ok(&["--json", "lineage", "lab/odd"]).await.json(),
        &odd_pushed["artifact"]["id"],
    );
    assert_eq!(odd_edges.len(), 2, "base and a are registered");
    assert!(
        odd_edges
            .iter()
            .all(|e| e.3.contains("unregistered_inputs") && e.3.contains("stranger"))
    );

    let pulled = root.join("pulled");
    cli.ok(&["pull", "lab/soup", "-o", pulled.to_str().unwrap()])
        .await;
    // The weights and side files match; the provenance records differ only in input paths.
    for dir in [&local, &pulled] {
        std::fs::remove_file(dir.join("clreg_merge.json")).unwrap();
    }
    same_tree(&local, &pulled);

    let lineage = cli.ok(&["--json", "lineage", "lab/soup"]).await.json();
    let merges = lineage["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["relation"] == "merge" && e["method"] == "dare_ties")
        .count();
    assert_eq!(merges, 3, "{lineage}");

    // Without --wait the id is printed at once; a job naming what the user cannot read is
    // refused before it is queued.
    std::fs::write(&remote, recipe("lab/base", "nowhere/a", "lab/b")).unwrap();
    let refused = cli
        .run(&[
            "merge",
            "--collab",
            "lab",
            "--config",
            remote.to_str().unwrap(),
            "--name",
            "soup",
        ])
        .await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("nowhere/a"), "{}", refused.stderr);
}

#[tokio::test]
async fn train_on_the_server_with_carried_data_equals_a_local_train() {
    let server = TestServer::with_worker(server_binary()).await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    let base = root.join("base");
    cli.ok(&[
        "local",
        "tiny",
        "-o",
        base.to_str().unwrap(),
        "--seed",
        "1",
        "--tokenizer",
        "bytes",
    ])
    .await;
    push_base(&cli, &base).await;
    let data = root.join("task.json");
    let examples: Vec<serde_json::Value> = (0..12)
        .map(|i| serde_json::json!({"prompt": format!("item {i} is"), "answer": if i % 2 == 0 { "even" } else { "odd" }}))
        .collect();
    std::fs::write(&data, serde_json::to_string(&examples).unwrap()).unwrap();
    register(&cli, &data, "parity").await;
    let settings = [
        "--lr",
        "0.01",
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--max-len",
        "32",
        "--r",
        "4",
        "--seed",
        "5",
    ];
    let mut remote = vec![
        "--json",
        "train",
        "--collab",
        "lab",
        "--base",
        "lab/base",
        "--data",
        data.to_str().unwrap(),
        "--name",
        "round1",
        "--wait",
    ];
    remote.extend(settings);
    let done = cli.ok(&remote).await.json();
    assert_eq!(done["state"], "succeeded", "{done}");

    let local = root.join("local-adapter");
    let mut args = vec![
        "local",
        "train",
        "--base",
        base.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "-o",
        local.to_str().unwrap(),
    ];
    args.extend(settings);
    cli.ok(&args).await;
    let pulled = root.join("pulled");
    cli.ok(&["pull", "lab/round1", "-o", pulled.to_str().unwrap()])
        .await;
    assert_eq!(
        std::fs::read(pulled.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(local.join("adapter_model.safetensors")).unwrap(),
        "the server's adapter differs from the local run's"
    );
    let lineage = cli.ok(&["--json", "lineage", "lab/round1"]).await.json();
    assert_eq!(lineage["edges"][0]["relation"], "adapter", "{lineage}");

    // Score it on the server; the evaluation is the collaboration's.
    let task = format!("parity:exact:{}", data.display());
    let scored = cli
        .ok(&[
            "--json",
            "eval",
            "lab/round1",
            "--collab",
            "lab",
            "--task",
            &task,
            "--wait",
        ])
        .await
        .json();
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let evaluations = cli
        .ok(&[
            "--json",
            "evaluations",
            "--collab",
            "lab",
            "--artifact",
            "lab/round1",
        ])
        .await
        .json();
    assert_eq!(evaluations.as_array().unwrap().len(), 1, "{evaluations}");
    assert_eq!(evaluations[0]["task"], "parity");
    assert_eq!(evaluations[0]["n"], 12);
    // The first 5 examples only, answers of at most 4 tokens; a zero limit is refused here.
    let eval_limited = |limit: &'static str| {
        [
            "--json",
            "eval",
            "lab/round1",
            "--collab",
            "lab",
            "--task",
            task.as_str(),
            "--limit",
            limit,
            "--max-tokens",
            "4",
            "--wait",
        ]
    };
    let refused = cli.run(&eval_limited("0")).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("`limit` is 0"),
        "{}",
        refused.stderr
    );
    let limited = cli.ok(&eval_limited("5")).await.json();
    assert_eq!(limited["state"], "succeeded", "{limited}");
    let evaluations = cli
        .ok(&["--json", "evaluations", "--collab", "lab"])
        .await
        .json();
    assert_eq!(evaluations[0]["n"], 5, "{evaluations}");

    // Data nobody registered is refused before anything is queued.
    let other = root.join("other.json");
    std::fs::write(&other, r#"[{"prompt": "p", "answer": "a"}]"#).unwrap();
    let refused = cli
        .run(&[
            "train",
            "--collab",
            "lab",
            "--base",
            "lab/base",
            "--data",
            other.to_str().unwrap(),
            "--name",
            "round2",
        ])
        .await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("invalid_dataset"),
        "{}",
        refused.stderr
    );
}

/// The issue's walk-through on tiny tasks: three sequential rounds trained on the server (LoRA,
/// then O-LoRA on the earlier adapter, then LoRA), each scored on every task by an eval job, a
/// series over them, and its report, whose BWT is `clreg local bwt` of the same matrix.
#[tokio::test]
async fn three_rounds_trained_and_scored_on_the_server_report_the_bwt_of_clreg_local_bwt() {
    let server = TestServer::with_worker(server_binary()).await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    let base = root.join("base");
    cli.ok(&[
        "local",
        "tiny",
        "-o",
        base.to_str().unwrap(),
        "--seed",
        "1",
        "--tokenizer",
        "bytes",
        "--hidden",
        "128",
        "--intermediate",
        "256",
        "--layers",
        "2",
    ])
    .await;
    push_base(&cli, &base).await;
    let tasks = ["colour", "parity", "size"];
    let answers = [["red", "blue"], ["even", "odd"], ["big", "small"]];
    let mut files = Vec::new();
    for (task, answer) in tasks.iter().zip(answers) {
        let examples: Vec<serde_json::Value> = (0..8)
            .map(|i| serde_json::json!({"prompt": format!("{task} {i}:"), "answer": answer[i % 2]}))
            .collect();
        let file = root.join(format!("{task}.json"));
        std::fs::write(&file, serde_json::to_string(&examples).unwrap()).unwrap();
        register(&cli, &file, task).await;
        files.push(file.display().to_string());
    }
    // Enough to move this small model's generations: edit similarity then tells models apart.
    let settings = [
        "--lr",
        "0.01",
        "--max-steps",
        "16",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--max-len",
        "24",
        "--r",
        "8",
        "--seed",
        "3",
    ];
    for (round, (method, earlier)) in [
        ("lora", None),
        ("olora", Some("lab/r1")),
        ("lora", Some("lab/r2")),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("r{}", round + 1);
        let mut args = vec![
            "--json",
            "train",
            "--collab",
            "lab",
            "--base",
            "lab/base",
            "--data",
            &files[round],
            "--name",
            &name,
            "--method",
            method,
            "--wait",
        ];
        if let Some(e) = earlier {
            args.extend(["--adapter", e]);
        }
        args.extend(settings);
        let done = cli.ok(&args).await.json();
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    // Every model on every task, by eval jobs whose data travels with them.
    let task_args: Vec<String> = tasks
        .iter()
        .zip(&files)
        .flat_map(|(t, f)| ["--task".to_string(), format!("{t}:edit_sim:{f}")])
        .collect();
    for model in ["lab/base", "lab/r1", "lab/r2", "lab/r3"] {
        let mut args = vec!["--json", "eval", model, "--collab", "lab", "--wait"];
        args.extend(task_args.iter().map(String::as_str));
        let done = cli.ok(&args).await.json();
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    cli.ok(&[
        "series",
        "create",
        "seq",
        "--collab",
        "lab",
        "--base",
        "lab/base",
        "--tasks",
        "colour,parity,size",
    ])
    .await;
    for r in ["lab/r1", "lab/r2", "lab/r3"] {
        cli.ok(&["series", "add", "seq", r, "--collab", "lab"])
            .await;
    }
    let report = cli
        .ok(&["--json", "series", "report", "seq", "--collab", "lab"])
        .await
        .json();
    assert_eq!(report["missing"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["history"].as_array().unwrap().len(), 3, "{report}");
    // The same matrix through `clreg local bwt`.
    let row = |r: &serde_json::Value| -> Vec<f64> {
        r["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let matrix = serde_json::json!({
        "tasks": tasks,
        "rounds": report["matrix"].as_array().unwrap().iter().map(row).collect::<Vec<_>>(),
        "base": row(&report["base"]),
    });
    let file = root.join("matrix.json");
    std::fs::write(&file, matrix.to_string()).unwrap();
    let local = cli
        .ok(&["--json", "local", "bwt", file.to_str().unwrap()])
        .await
        .json();
    for key in ["bwt", "fwt", "final_average", "average_gain"] {
        assert_eq!(report["transfer"][key], local[key], "{key}");
    }
    assert_eq!(report["history"][2]["bwt"], local["bwt"]);
    assert_ne!(local["bwt"], 0.0, "the rounds changed the scores: {report}");
    // Round 2's row is the model after round 2: the base with r1 and r2 stacked, as a local
    // evaluation of the pulled files scores it.
    for r in ["base", "r1", "r2"] {
        let dir = root.join(format!("pulled-{r}"));
        cli.ok(&["pull", &format!("lab/{r}"), "-o", dir.to_str().unwrap()])
            .await;
    }
    let p = |r: &str| root.join(format!("pulled-{r}")).display().to_string();
    let mut args = vec![
        "--json".to_string(),
        "local".into(),
        "eval".into(),
        p("base"),
        "--adapter".into(),
        p("r1"),
        p("r2"),
        "--tasks".into(),
    ];
    args.extend(files.iter().map(|f| format!("{f}:edit_sim")));
    let local_eval = cli
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .json();
    for (j, scored) in local_eval.as_array().unwrap().iter().enumerate() {
        assert_eq!(
            report["matrix"][1]["scores"][j], scored["score"],
            "task {j}"
        );
    }
    let text = cli
        .ok(&["series", "report", "seq", "--collab", "lab"])
        .await;
    assert!(text.stdout.contains("BWT"), "{}", text.stdout);
    assert!(text.stdout.contains("history"), "{}", text.stdout);

    // Scores from elsewhere import: a harness file for the base, listed with the rest.
    let harness = root.join("results.json");
    std::fs::write(
        &harness,
        r#"{"results": {"arc_challenge": {"acc,none": 0.25, "acc_norm,none": 0.3}}}"#,
    )
    .unwrap();
    let imported = cli
        .ok(&[
            "--json",
            "eval",
            "import",
            harness.to_str().unwrap(),
            "--artifact",
            "lab/base",
            "--collab",
            "lab",
        ])
        .await
        .json();
    assert_eq!(imported[0]["metric"], "acc_norm");
    assert_eq!(imported[0]["score"], 0.3);
    let listed = cli
        .ok(&[
            "--json",
            "evaluations",
            "--collab",
            "lab",
            "--artifact",
            "lab/base",
        ])
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_mix_that_trains_its_routers_on_the_server_equals_a_local_one_seeded_by_the_recipe() {
    let server = TestServer::with_worker(server_binary()).await;
    let root = server.dir.path();
    let cli = Cli::alice_in_lab(&server, &server.url, "semi").await;
    // Both experts are the base itself: what differs between runs is the routers alone.
    let base = root.join("base");
    cli.ok(&["local", "tiny", "-o", base.to_str().unwrap(), "--seed", "1"])
        .await;
    push_base(&cli, &base).await;
    // Six sequences, so the order a seed draws matters.
    let calib = root.join("calib.json");
    let examples: Vec<serde_json::Value> = (0..6)
        .map(|i| serde_json::json!({"prompt": format!("w{i} w{}", i + 7), "answer": format!("w{} w{}", i + 20, i * 3)}))
        .collect();
    std::fs::write(&calib, serde_json::to_vec(&examples).unwrap()).unwrap();
    register(&cli, &calib, "calibration").await;
    let recipe = |base: &str| {
        format!(
            "base_model: {base}\ngate_mode: random\nexperts:\n  - source_model: {base}\n  - source_model: {base}\nseed: 5\n"
        )
    };
    let remote = root.join("remote.yml");
    std::fs::write(&remote, recipe("lab/base")).unwrap();
    let done = cli
        .ok(&[
            "--json",
            "mix",
            "--collab",
            "lab",
            "--config",
            remote.to_str().unwrap(),
            "--name",
            "moe",
            "--train-router",
            calib.to_str().unwrap(),
            "--steps",
            "4",
            "--wait",
        ])
        .await
        .json();
    assert_eq!(done["state"], "succeeded", "{done}");
    let pulled = root.join("pulled");
    cli.ok(&["pull", "lab/moe", "-o", pulled.to_str().unwrap()])
        .await;

    let local_recipe = root.join("local.yml");
    std::fs::write(&local_recipe, recipe(&base.display().to_string())).unwrap();
    let local = root.join("local-moe");
    cli.ok(&[
        "local",
        "mix",
        "--config",
        local_recipe.to_str().unwrap(),
        "-o",
        local.to_str().unwrap(),
        "--train-router",
        calib.to_str().unwrap(),
        "--steps",
        "4",
    ])
    .await;
    let training = |dir: &std::path::Path| {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("clreg_mix.json")).unwrap()).unwrap();
        record["training"].clone()
    };
    let (remote_run, local_run) = (training(&pulled), training(&local));
    assert_eq!(remote_run["seed"], 5, "{remote_run}");
    assert_eq!(remote_run["seed"], local_run["seed"]);
    assert_eq!(remote_run["sequences"], 6);
    for loss in ["first_loss", "last_loss"] {
        let (r, l) = (
            remote_run[loss].as_f64().unwrap(),
            local_run[loss].as_f64().unwrap(),
        );
        assert!(
            (r - l).abs() <= 1e-5 * l.abs().max(1.0),
            "{loss}: {r} vs {l}"
        );
    }
}
