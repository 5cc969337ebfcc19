//! The job interface: a spec that went through JSON (as a worker hands it to a child process)
//! runs exactly as the direct call does, reports progress, and stops on cancel.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use clreg_engine::Code;
use clreg_engine::job::{self, Device, JobEvent, JobOutput, JobSpec, MergeSpec, RunContext};
use clreg_engine::merge::record::Digests;
use clreg_engine::merge::{Recipe, run_recipe};
use clreg_engine::tiny::{TinyConfig, write_tiny_llama};

fn recipe(root: &std::path::Path) -> Recipe {
    for (name, seed) in [("base", 1), ("a", 2), ("b", 3)] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_tiny_llama(&dir, &TinyConfig::default(), seed, None).unwrap();
    }
    Recipe::from_yaml(&format!(
        "merge_method: ties\nbase_model: {0}/base\nmodels:\n  - model: {0}/a\n    parameters: {{weight: 1.0, density: 0.5}}\n  - model: {0}/b\n    parameters: {{weight: 0.5, density: 0.5}}\ndtype: float32\n",
        root.display()
    ))
    .unwrap()
}

#[test]
fn a_spec_through_json_runs_like_the_direct_call() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let recipe = recipe(root);
    let direct = root.join("direct");
    run_recipe(&recipe, &direct, &|_| {}, &AtomicBool::new(false)).unwrap();

    let spec = JobSpec::Merge(MergeSpec {
        recipe,
        output: root.join("via-job"),
    });
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.starts_with(r#"{"kind":"merge""#), "{json}");
    let spec: JobSpec = serde_json::from_str(&json).unwrap();
    let events = Mutex::new(Vec::new());
    let record = |e: JobEvent| events.lock().unwrap().push(e);
    let ctx = RunContext {
        cancel: &AtomicBool::new(false),
        events: &record,
        digests: Digests::default(),
        device: Device::Cpu,
    };
    let JobOutput::Merge(report) = job::run(&spec, &ctx).unwrap() else {
        panic!("not a merge report");
    };
    assert_eq!(report.out_dir, root.join("via-job"));
    assert_eq!(
        std::fs::read(direct.join("model.safetensors")).unwrap(),
        std::fs::read(root.join("via-job/model.safetensors")).unwrap()
    );
    let events = events.into_inner().unwrap();
    let last = events.last().and_then(JobEvent::fraction);
    assert_eq!(last, Some(1.0), "{events:?}");
    // Every event survives JSON, as a child process's event lines must.
    for e in &events {
        let back: JobEvent = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        assert_eq!(&back, e);
    }
}

#[test]
fn cancel_and_bad_specs_fail_with_their_codes_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec = JobSpec::Merge(MergeSpec {
        recipe: recipe(root),
        output: root.join("out"),
    });
    let ctx = RunContext {
        cancel: &AtomicBool::new(true),
        events: &|_| {},
        digests: Digests::default(),
        device: Device::Cpu,
    };
    let err = job::run(&spec, &ctx).unwrap_err();
    assert_eq!(err.code, Code::Cancelled);
    assert!(!root.join("out").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An occupied output: `output_exists`, and the file there untouched.
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("out/keep.txt"), "mine").unwrap();
    let ctx = RunContext {
        cancel: &AtomicBool::new(false),
        ..ctx
    };
    let err = job::run(&spec, &ctx).unwrap_err();
    assert_eq!(err.code, Code::OutputExists);
    assert_eq!(
        std::fs::read_to_string(root.join("out/keep.txt")).unwrap(),
        "mine"
    );

    // An evaluation without tasks, and a spec naming an unknown kind.
    let eval: JobSpec = serde_json::from_value(serde_json::json!({
        "kind": "eval", "model": root.join("base"), "tasks": []
    }))
    .unwrap();
    assert_eq!(job::run(&eval, &ctx).unwrap_err().code, Code::NoTasks);
    assert!(serde_json::from_str::<JobSpec>(r#"{"kind":"bake"}"#).is_err());
}
