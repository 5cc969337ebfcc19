//! Continue-training: a tiny model learns a tiny task, O-LoRA gradients match finite
//! differences, checkpoints resume exactly, sequential modes agree where they must, and bad
//! input is refused with its code while nothing is written.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use clreg_engine::data::Example;
use clreg_engine::formats::LoraAdapter as AdapterFile;
use clreg_engine::model::{self, GenerateOptions};
use clreg_engine::tiny::{self, TinyConfig};
use clreg_engine::train::{
    self, DataSchedule, Method, OrthVariant, SequentialMode, TrainConfig, TrainError, TrainEvent,
    TrainJob, TrainRecord, olora,
};

fn tiny_cfg() -> TinyConfig {
    TinyConfig {
        hidden: 64,
        intermediate: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: tiny::BYTE_VOCAB,
        tie: false,
    }
}

/// A seeded tiny Llama with the byte-level tokenizer. Its output layer is scaled up ×10: with
/// the tiny writer's N(0, 0.02) weights and RMS-normalised hidden states, logits could not move
/// more than about ±1.5 whatever the hidden state, so a LoRA (which cannot touch lm_head) could
/// never make a confident prediction. Trained models have such large output weights.
fn tiny_base(dir: &Path, seed: u64) -> PathBuf {
    let base = dir.join(format!("base-{seed}"));
    tiny::write_tiny_llama(&base, &tiny_cfg(), seed, None).unwrap();
    tiny::write_byte_tokenizer(&base).unwrap();
    let file = base.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let head = (tensors["lm_head.weight"].clone() * 10.0).unwrap();
    tensors.insert("lm_head.weight".to_string(), head);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    base
}

const COLOURS: [(&str, &str); 3] = [("red", " A"), ("blue", " B"), ("green", " C")];
const NOUNS: [&str; 6] = ["car", "cup", "hat", "box", "pen", "bag"];

/// A three-way classification whose label is decided by one keyword of the prompt.
fn colour_task(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let k = i + offset;
            let (colour, label) = COLOURS[k % 3];
            let noun = NOUNS[(k / 3) % NOUNS.len()];
            Example {
                prompt: format!("the {noun} is {colour}. label:"),
                answer: label.to_string(),
                choices: None,
                source: None,
            }
        })
        .collect()
}

fn write_data(path: &Path, examples: &[Example]) -> PathBuf {
    std::fs::write(path, serde_json::to_vec(examples).unwrap()).unwrap();
    path.to_path_buf()
}

fn job(base: &Path, data: Vec<PathBuf>, output: PathBuf, config: TrainConfig) -> TrainJob {
    TrainJob {
        base: base.to_path_buf(),
        adapters: Vec::new(),
        data,
        past: Vec::new(),
        output,
        checkpoint_dir: None,
        checkpoint_every: None,
        resume: false,
        config,
        device: Device::Cpu,
    }
}

fn quick_config() -> TrainConfig {
    TrainConfig {
        lr: 5e-3,
        batch_size: 6,
        grad_accum: 1,
        max_len: 64,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn run(job: &TrainJob) -> Result<TrainRecord, TrainError> {
    train::train(job, &mut |_| {}, &AtomicBool::new(false))
}

fn accuracy(model_dir: &Path, adapter: Option<&Path>, examples: &[Example]) -> f64 {
    let (mut m, _) = model::load(model_dir, &Device::Cpu, DType::F32).unwrap();
    if let Some(a) = adapter {
        m.add_adapter_dir(a).unwrap();
    }
    let tok = model::load_tokenizer(&model_dir.join("tokenizer.json")).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 3,
        ..GenerateOptions::default()
    };
    let right = examples
        .iter()
        .filter(|ex| {
            let out = model::generate(&m, &tok, &ex.prompt, opts.clone()).unwrap();
            out.trim() == ex.answer.trim()
        })
        .count();
    right as f64 / examples.len() as f64
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn tiny_model_learns_a_tiny_task_with_lora() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 1);
    let data = write_data(&dir.path().join("train.json"), &colour_task(36, 0));
    let held_out = colour_task(18, 36);
    let before = accuracy(&base, None, &held_out);
    let out = dir.path().join("adapter");
    let cfg = TrainConfig {
        epochs: 24,
        lr: 1e-2,
        ..quick_config()
    };
    let record = run(&job(&base, vec![data], out.clone(), cfg)).unwrap();
    let losses: Vec<f64> = record.losses.iter().map(|s| s.loss).collect();
    assert_eq!(
        record.steps, 144,
        "24 epochs of 36 examples in batches of 6"
    );
    let (first, last) = (mean(&losses[..6]), mean(&losses[losses.len() - 6..]));
    eprintln!(
        "learning curve (every 12th step): {:?}",
        losses
            .iter()
            .step_by(12)
            .map(|l| (l * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    assert!(last < 0.25 * first, "loss fell from {first} to only {last}");
    let after = accuracy(&base, Some(&out), &held_out);
    eprintln!("held-out accuracy: {before} before, {after} after");
    assert!(
        after >= 0.9,
        "accuracy {after} after training (chance is 1/3)"
    );
    assert!(before < 0.5);
    // The output is a PEFT adapter plus the record.
    let file = AdapterFile::open(&out).unwrap();
    assert_eq!(file.modules().count(), 2 * 7);
    assert!(out.join(train::RECORD).exists());
}

#[test]
fn full_fine_tuning_learns_and_writes_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 2);
    let data = write_data(&dir.path().join("train.json"), &colour_task(36, 0));
    let out = dir.path().join("fft");
    let cfg = TrainConfig {
        method: Method::Fft,
        lr: 2e-3,
        epochs: 8,
        ..quick_config()
    };
    let record = run(&job(&base, vec![data], out.clone(), cfg)).unwrap();
    assert_eq!(record.output_kind, "checkpoint");
    let losses: Vec<f64> = record.losses.iter().map(|s| s.loss).collect();
    assert!(mean(&losses[losses.len() - 6..]) < 0.25 * mean(&losses[..6]));
    let acc = accuracy(&out, None, &colour_task(18, 36));
    assert!(acc >= 0.9, "accuracy {acc}");
}

#[test]
fn fft_of_a_subset_leaves_the_other_weights_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 3);
    let data = write_data(&dir.path().join("train.json"), &colour_task(12, 0));
    let out = dir.path().join("fft");
    let cfg = TrainConfig {
        method: Method::Fft,
        fft_params: vec!["layers.1.mlp".into()],
        max_steps: Some(2),
        ..quick_config()
    };
    let record = run(&job(&base, vec![data], out.clone(), cfg)).unwrap();
    assert_eq!(record.trainable_parameters, 3 * 64 * 128);
    let a = candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    for (name, t) in &a {
        let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(same, !name.contains("layers.1.mlp"), "{name}");
    }
}

/// Runs `cfg` for 6 steps with a checkpoint every 3, interrupted after the first checkpoint
/// and resumed; returns the adapter's tensors.
fn interrupted(dir: &Path, base: &Path, data: &Path, cfg: &TrainConfig) -> Vec<Vec<f32>> {
    let mut j = job(
        base,
        vec![data.to_path_buf()],
        dir.join("resumed"),
        cfg.clone(),
    );
    j.checkpoint_dir = Some(dir.join("ckpt"));
    j.checkpoint_every = Some(3);
    let cancel = AtomicBool::new(false);
    let err = train::train(
        &j,
        &mut |e| {
            if matches!(e, TrainEvent::Checkpoint { .. }) {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    )
    .unwrap_err();
    assert_eq!(err.code(), "cancelled");
    assert!(!j.output.exists(), "a cancelled run leaves no output");
    j.resume = true;
    let record = run(&j).unwrap();
    assert_eq!(record.resumed_from, Some(3));
    assert_eq!(record.losses.len(), 6);
    adapter_values(&j.output)
}

fn adapter_values(dir: &Path) -> Vec<Vec<f32>> {
    let t = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    let mut names: Vec<_> = t.keys().cloned().collect();
    names.sort();
    names
        .iter()
        .map(|n| t[n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 4);
    let data = write_data(&dir.path().join("train.json"), &colour_task(30, 0));
    let cfg = TrainConfig {
        max_steps: Some(6),
        lr_schedule: train::LrSchedule::Cosine,
        warmup_steps: 2,
        weight_decay: 0.01,
        ..quick_config()
    };
    let resumed = interrupted(dir.path(), &base, &data, &cfg);
    // The checkpoint refuses a run with other settings.
    let mut other = job(
        &base,
        vec![data.clone()],
        dir.path().join("other"),
        TrainConfig {
            lr: 1e-3,
            ..cfg.clone()
        },
    );
    other.checkpoint_dir = Some(dir.path().join("ckpt"));
    other.resume = true;
    assert_refused(&other, "resume_mismatch", "other training settings");
    let straight = dir.path().join("straight");
    let record = run(&job(&base, vec![data], straight.clone(), cfg)).unwrap();
    assert_eq!(record.resumed_from, None);
    assert_eq!(adapter_values(&straight), resumed, "resumed run differs");
}

/// Central finite differences of `f` at `x` (f64).
fn finite_diff(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut p = x.to_vec();
            let mut m = x.to_vec();
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        })
        .collect()
}

fn seeded(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = tiny::SplitMix64::new(seed);
    (0..n).map(|_| rng.next_normal()).collect()
}

#[test]
fn olora_terms_match_finite_differences_in_f64() {
    let dev = Device::Cpu;
    let (r, r_old, inp) = (3, 2, 5);
    let a_new = seeded(r * inp, 1);
    let olds = [seeded(r_old * inp, 2), seeded(4 * inp, 3)];
    let old_t: Vec<Tensor> = olds
        .iter()
        .map(|o| Tensor::from_vec(o.clone(), (o.len() / inp, inp), &dev).unwrap())
        .collect();
    for variant in [OrthVariant::L1, OrthVariant::Sq] {
        // The straightforward definition: Σ_i Σ_{p,q} g((A_t A_iᵀ)[p][q]).
        let plain = |a: &[f64]| -> f64 {
            let mut total = 0.0;
            for o in &olds {
                for p in 0..r {
                    for q in 0..o.len() / inp {
                        let dot: f64 = (0..inp).map(|k| a[p * inp + k] * o[q * inp + k]).sum();
                        total += match variant {
                            OrthVariant::L1 => dot.abs(),
                            OrthVariant::Sq => dot * dot,
                        };
                    }
                }
            }
            total
        };
        let var = Var::from_vec(a_new.clone(), (r, inp), &dev).unwrap();
        let loss = olora::orth_loss(var.as_tensor(), &old_t, variant).unwrap();
        let value = loss.to_scalar::<f64>().unwrap();
        assert!((value - plain(&a_new)).abs() < 1e-12, "{variant:?} value");
        let grad = loss.backward().unwrap();
        let grad = grad.get(var.as_tensor()).unwrap().flatten_all().unwrap();
        let grad = grad.to_vec1::<f64>().unwrap();
        let fd = finite_diff(&a_new, &plain);
        for (g, f) in grad.iter().zip(&fd) {
            assert!(
                (g - f).abs() <= 1e-6 * f.abs().max(1.0),
                "{variant:?}: {g} vs {f}"
            );
        }
    }
    // λ₂'s Σ‖p‖₂: gradient p/‖p‖, a zero parameter contributes nothing.
    let b = seeded(6, 9);
    let var = Var::from_vec(b.clone(), (2, 3), &dev).unwrap();
    let zero = Tensor::zeros((2, 2), DType::F64, &dev).unwrap();
    let loss = olora::l2_loss(&[var.as_tensor().clone(), zero]).unwrap();
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((loss.to_scalar::<f64>().unwrap() - norm(&b)).abs() < 1e-12);
    let g = loss.backward().unwrap();
    let g = g
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (gi, fi) in g.iter().zip(finite_diff(&b, &norm)) {
        assert!((gi - fi).abs() < 1e-6);
    }
}

#[test]
fn olora_penalises_overlap_with_earlier_adapters_and_says_when_there_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 5);
    let data = write_data(&dir.path().join("t1.json"), &colour_task(12, 0));
    let cfg = TrainConfig {
        method: Method::Olora,
        max_steps: Some(3),
        ..quick_config()
    };
    let first = dir.path().join("round1");
    let record = run(&job(&base, vec![data.clone()], first.clone(), cfg.clone())).unwrap();
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("orthogonality term is zero"))
    );
    assert!(record.losses.iter().all(|s| s.orth == Some(0.0)));

    let mut second = job(&base, vec![data], dir.path().join("round2"), cfg.clone());
    second.adapters = vec![first.clone()];
    let record = run(&second).unwrap();
    let orth = record.losses[0].orth.unwrap();
    // The first step's term is λ · Σ|A_new A_oldᵀ| over the 14 modules, computed here.
    let old = AdapterFile::open(&first).unwrap();
    let (mut m, _) = model::load(&base, &Device::Cpu, DType::F32).unwrap();
    let targets: Vec<&str> = cfg.lora.targets.iter().map(String::as_str).collect();
    let fresh = m
        .add_trainable_adapters(&targets, cfg.lora.r, cfg.lora.scale(), cfg.seed)
        .unwrap();
    let mut expected = 0.0f64;
    for (module, a_new, _) in &fresh {
        let pair = old.read(module).unwrap().unwrap();
        let a_new = a_new
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for p in 0..cfg.lora.r {
            for q in 0..pair.r {
                let dot: f64 = (0..pair.inp)
                    .map(|k| a_new[p * pair.inp + k] as f64 * pair.a[q * pair.inp + k] as f64)
                    .sum();
                expected += dot.abs();
            }
        }
    }
    expected *= cfg.olora.lambda;
    assert!(
        (orth - expected).abs() <= 1e-4 * expected,
        "{orth} vs {expected}"
    );
}

#[test]
fn merged_and_stacked_rounds_start_from_the_same_function() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 6);
    let t1 = write_data(&dir.path().join("t1.json"), &colour_task(12, 0));
    let t2 = write_data(&dir.path().join("t2.json"), &colour_task(12, 5));
    let round1 = dir.path().join("round1");
    let cfg = TrainConfig {
        max_steps: Some(4),
        ..quick_config()
    };
    run(&job(&base, vec![t1], round1.clone(), cfg.clone())).unwrap();
    let mut losses = Vec::new();
    for mode in [SequentialMode::Merged, SequentialMode::Stacked] {
        let cfg = TrainConfig {
            mode,
            max_steps: Some(1),
            ..cfg.clone()
        };
        let mut j = job(
            &base,
            vec![t2.clone()],
            dir.path().join(format!("{mode:?}")),
            cfg,
        );
        j.adapters = vec![round1.clone()];
        losses.push(run(&j).unwrap().losses[0].loss);
    }
    assert!((losses[0] - losses[1]).abs() < 1e-5, "{losses:?}");
    // … and that function is not the base's: round 1 changed it.
    let plain = run(&job(
        &base,
        vec![t2],
        dir.path().join("plain"),
        TrainConfig {
            max_steps: Some(1),
            ..cfg
        },
    ))
    .unwrap();
    assert!((plain.losses[0].loss - losses[0]).abs() > 1e-3);
}

#[test]
fn replay_and_joint_use_the_counts_of_the_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 7);
    let current = write_data(&dir.path().join("cur.json"), &colour_task(25, 0));
    let past1 = write_data(&dir.path().join("p1.json"), &colour_task(7, 1));
    let past2 = write_data(&dir.path().join("p2.json"), &colour_task(40, 2));
    let mut j = job(
        &base,
        vec![current],
        dir.path().join("replay"),
        TrainConfig {
            schedule: DataSchedule::Replay { fraction: 0.1 },
            max_steps: Some(1),
            ..quick_config()
        },
    );
    j.past = vec![past1, past2];
    let record = run(&j).unwrap();
    // round(0.1 · 25) = 3 (2.5 rounds half away from zero) from each earlier task.
    assert_eq!(record.counts.per_epoch, vec![25, 3, 3]);
    j.config.schedule = DataSchedule::Joint;
    j.output = dir.path().join("joint");
    let record = run(&j).unwrap();
    assert_eq!(record.counts.per_epoch, vec![40, 40, 40]);
}

fn assert_refused(j: &TrainJob, code: &str, needle: &str) {
    let err = run(j).unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    assert!(err.to_string().contains(needle), "`{err}` lacks `{needle}`");
    assert!(!j.output.exists(), "{err}: output written");
}

#[test]
fn bad_input_is_refused_with_its_code_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 8);
    let good = write_data(&dir.path().join("good.json"), &colour_task(12, 0));
    let out = dir.path().join("out");

    // A malformed line names the line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"c\"\n",
    )
    .unwrap();
    assert_refused(
        &job(&base, vec![bad], out.clone(), quick_config()),
        "invalid_dataset",
        "line 2",
    );
    // An answer-less example.
    let no_answer = dir.path().join("noanswer.json");
    std::fs::write(
        &no_answer,
        r#"[{"prompt": "a", "answer": "b"}, {"prompt": "c"}]"#,
    )
    .unwrap();
    assert_refused(
        &job(&base, vec![no_answer], out.clone(), quick_config()),
        "invalid_dataset",
        "answer",
    );
    // Replay without earlier data.
    let replay = TrainConfig {
        schedule: DataSchedule::Replay { fraction: 0.1 },
        ..quick_config()
    };
    assert_refused(
        &job(&base, vec![good.clone()], out.clone(), replay),
        "no_past_data",
        "--past",
    );
    let joint = TrainConfig {
        schedule: DataSchedule::Joint,
        ..quick_config()
    };
    assert_refused(
        &job(&base, vec![good.clone()], out.clone(), joint),
        "no_past_data",
        "--past",
    );

    // An adapter trained on another base (same shapes, other weights).
    let other = tiny_base(dir.path(), 9);
    let foreign = dir.path().join("foreign");
    let short = TrainConfig {
        max_steps: Some(1),
        ..quick_config()
    };
    run(&job(
        &other,
        vec![good.clone()],
        foreign.clone(),
        short.clone(),
    ))
    .unwrap();
    let mut j = job(&base, vec![good.clone()], out.clone(), short.clone());
    j.adapters = vec![foreign];
    assert_refused(&j, "base_mismatch", "different base");
    // An adapter whose shapes do not fit the base.
    let wide = dir.path().join("wide");
    let t = TinyConfig {
        hidden: 32,
        ..tiny_cfg()
    };
    tiny::write_tiny_llama(&wide, &t, 1, None).unwrap();
    tiny::write_byte_tokenizer(&wide).unwrap();
    let wide_adapter = dir.path().join("wide-adapter");
    run(&job(
        &wide,
        vec![good.clone()],
        wide_adapter.clone(),
        short.clone(),
    ))
    .unwrap();
    std::fs::remove_file(wide_adapter.join(train::RECORD)).unwrap();
    let mut j = job(&base, vec![good.clone()], out.clone(), short.clone());
    j.adapters = vec![wide_adapter];
    assert_refused(&j, "base_mismatch", "base weight is");

    // A tokenizer without an end-of-sequence token and a config without eos_token_id.
    let no_eos = dir.path().join("no-eos");
    tiny::write_tiny_llama(&no_eos, &tiny_cfg(), 1, None).unwrap();
    let tok = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"<unk>":0,"a":1,"b":2},"unk_token":"<unk>"}}"#;
    std::fs::write(no_eos.join("tokenizer.json"), tok).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(no_eos.join("config.json")).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("eos_token_id");
    std::fs::write(no_eos.join("config.json"), config.to_string()).unwrap();
    assert_refused(
        &job(&no_eos, vec![good.clone()], out.clone(), short.clone()),
        "invalid_model",
        "end-of-sequence",
    );

    // A NaN loss stops with the step and keeps the last good checkpoint.
    let mut j = job(
        &base,
        vec![good.clone()],
        out.clone(),
        TrainConfig {
            lr: 1e30,
            clip_grad: None,
            max_steps: Some(6),
            ..quick_config()
        },
    );
    j.checkpoint_dir = Some(dir.path().join("nan-ckpt"));
    j.checkpoint_every = Some(1);
    let err = run(&j).unwrap_err();
    assert_eq!(err.code(), "non_finite_loss", "{err}");
    let TrainError::NonFiniteLoss {
        step, checkpoint, ..
    } = &err
    else {
        unreachable!()
    };
    assert!(*step >= 2, "step {step}");
    assert!(checkpoint.as_ref().is_some_and(|c| c.exists()), "{err}");
    assert!(err.to_string().contains("--lr"));
    assert!(!out.exists());

    // Bad settings.
    let zero_rank = TrainConfig {
        lora: train::LoraOptions {
            r: 0,
            ..Default::default()
        },
        ..quick_config()
    };
    assert_refused(
        &job(&base, vec![good.clone()], out.clone(), zero_rank),
        "invalid_option",
        "rank",
    );
    // An occupied output directory is never overwritten.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = run(&job(&base, vec![good], out.clone(), short)).unwrap_err();
    assert_eq!(err.code(), "output_exists");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}

/// One optimizer step of the quick configuration.
fn one_step(base: &Path, data: PathBuf, out: PathBuf) -> TrainRecord {
    let cfg = TrainConfig {
        max_steps: Some(1),
        ..quick_config()
    };
    run(&job(base, vec![data], out, cfg)).unwrap()
}

#[test]
fn a_prompt_longer_than_max_len_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 10);
    let mut examples = colour_task(6, 0);
    examples[0].prompt = format!("{} {}", "word ".repeat(40), examples[0].prompt);
    let data = write_data(&dir.path().join("long.json"), &examples);
    let record = one_step(&base, data, dir.path().join("out"));
    assert_eq!(record.counts.truncated_prompt, 1);
    assert_eq!(record.counts.truncated_answer, 0);
}

#[test]
fn the_loss_is_the_mean_negative_log_likelihood_of_answer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 11);
    let mut examples = colour_task(6, 0);
    examples[2].answer = " C, certainly".to_string();
    let data = write_data(&dir.path().join("t.json"), &examples);
    let record = one_step(&base, data, dir.path().join("out"));
    // Independently: each example alone through the plain forward, log-softmax in f64 over the
    // targets prompt + answer + eos from the first answer token on.
    let (m, _) = model::load(&base, &Device::Cpu, DType::F32).unwrap();
    let tok = model::load_tokenizer(&base.join("tokenizer.json")).unwrap();
    let (mut nll, mut count) = (0.0f64, 0usize);
    for ex in &examples {
        let prompt = tok
            .encode(ex.prompt.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        let answer = tok
            .encode(ex.answer.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let ids: Vec<u32> = prompt.iter().chain(&answer).copied().chain([2]).collect();
        let input = Tensor::new(&ids[..ids.len() - 1], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = m.forward(&input, 0, None).unwrap().squeeze(0).unwrap();
        let logits = logits
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for pos in prompt.len() - 1..ids.len() - 1 {
            let row = &logits[pos];
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            nll += lse - row[ids[pos + 1] as usize];
            count += 1;
        }
    }
    let expected = nll / count as f64;
    let got = record.losses[0].loss;
    assert!(
        (got - expected).abs() < 1e-5 * expected,
        "{got} vs {expected}"
    );
}

#[test]
fn lora_dropout_is_seeded_and_survives_resume() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 12);
    let data = write_data(&dir.path().join("train.json"), &colour_task(30, 0));
    let cfg = TrainConfig {
        max_steps: Some(6),
        lora: train::LoraOptions {
            dropout: 0.3,
            ..Default::default()
        },
        ..quick_config()
    };
    let resumed = interrupted(dir.path(), &base, &data, &cfg);
    let again = dir.path().join("again");
    let with = run(&job(&base, vec![data.clone()], again.clone(), cfg.clone())).unwrap();
    assert_eq!(adapter_values(&again), resumed, "same seed, same masks");
    let without = run(&job(
        &base,
        vec![data],
        dir.path().join("none"),
        TrainConfig {
            lora: train::LoraOptions::default(),
            ..cfg
        },
    ))
    .unwrap();
    // Step 1 starts from B = 0, where dropout cannot change the loss; later steps differ.
    assert!((with.losses[0].loss - without.losses[0].loss).abs() < 1e-6);
    assert!((with.losses[5].loss - without.losses[5].loss).abs() > 1e-4);
}

#[test]
fn dropout_masks_drop_a_fraction_p_and_rescale_the_rest() {
    use std::sync::Arc;
    let stream = Arc::new(model::DropoutStream::new(42));
    let d = model::LoraDropout {
        p: 0.25,
        module: 3,
        stream: stream.clone(),
    };
    let x = Tensor::ones((4, 100, 64), DType::F32, &Device::Cpu).unwrap();
    let mut a = model::LoraAdapter::new(
        Tensor::eye(64, DType::F32, &Device::Cpu).unwrap(),
        Tensor::eye(64, DType::F32, &Device::Cpu).unwrap(),
        1.0,
    );
    a.dropout = Some(Arc::new(d));
    let mut lin =
        model::LoraLinear::new(Tensor::zeros((64, 64), DType::F32, &Device::Cpu).unwrap());
    lin.adapters.push(a);
    use candle_core::Module;
    let y: Vec<f32> = lin
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
    assert!(y.iter().all(|v| *v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let again: Vec<f32> = lin
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y, again, "same key, same mask");
    // A shard of rows 2..4 (first token 2 · 100) draws the masks of those rows in the full pass.
    stream.set(42, 200);
    let shard: Vec<f32> = lin
        .forward(&x.narrow(0, 2, 2).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(shard, y[y.len() / 2..], "a shard draws its rows' masks");
    stream.set(43, 0);
    let other: Vec<f32> = lin
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_ne!(y, other, "a new key draws a new mask");
}

/// A run with `threads` rayon threads: as many shards per micro-batch (at most one per row).
fn run_on_threads(job: &TrainJob, threads: usize) -> TrainRecord {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| run(job))
        .unwrap()
}

#[test]
fn micro_batches_split_into_shards_train_as_one_pass_does() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_base(dir.path(), 21);
    let data = write_data(&dir.path().join("train.json"), &colour_task(40, 0));
    // Dropout on, two micro-batches per step: shards must draw the whole micro-batch's masks
    // and add up to its loss and gradients.
    let cfg = TrainConfig {
        max_steps: Some(5),
        batch_size: 5,
        grad_accum: 2,
        lora: train::LoraOptions {
            dropout: 0.3,
            ..Default::default()
        },
        ..quick_config()
    };
    let one = dir.path().join("one");
    let three = dir.path().join("three");
    let a = run_on_threads(&job(&base, vec![data.clone()], one.clone(), cfg.clone()), 1);
    let b = run_on_threads(
        &job(&base, vec![data.clone()], three.clone(), cfg.clone()),
        3,
    );
    for (x, y) in a.losses.iter().zip(&b.losses) {
        assert!(
            (x.loss - y.loss).abs() < 1e-5 * x.loss.abs(),
            "{} vs {}",
            x.loss,
            y.loss
        );
        assert!(
            (x.grad_norm - y.grad_norm).abs() < 1e-4 * x.grad_norm,
            "{x:?} vs {y:?}"
        );
    }
    let (va, vb) = (adapter_values(&one), adapter_values(&three));
    let scale = va.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let diff = va
        .iter()
        .flatten()
        .zip(vb.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff < 1e-4 * scale,
        "max |diff| {diff} against max |value| {scale}"
    );
    // Masks drawn from the wrong positions would move the later losses by far more than the
    // tolerance above; the same thread count is the same run bit for bit.
    let again = dir.path().join("again");
    run_on_threads(&job(&base, vec![data], again.clone(), cfg), 3);
    assert_eq!(adapter_values(&again), vb);
}
