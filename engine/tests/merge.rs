//! Merges end to end: every method against a plain f64 reference written here, invariants,
//! round trips of checkpoints and adapters, and refusals that leave no output.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use clreg_engine::formats::dtype::OutDtype;
use clreg_engine::formats::lora::{LoraAdapter, save_adapter};
use clreg_engine::formats::writer::{CheckpointWriter, TensorSpec};
use clreg_engine::formats::{Checkpoint, Staging};
use clreg_engine::merge::record::{RECORD, sha256_file};
use clreg_engine::merge::sparsify::{dare_keep, dare_key};
use clreg_engine::merge::svd::truncated_svd;
use clreg_engine::merge::{MergeError, Recipe, merge_and_unload, run_recipe};
use clreg_engine::tiny::{
    SplitMix64, TinyConfig, tiny_llama_config, write_tiny_adapter, write_tiny_llama,
};
use safetensors::tensor::TensorView;
use serde_json::json;

// ---------- fixtures ----------

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Tensor names and shapes of the hand-made test models; one is larger than a parallel chunk.
fn layout() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("model.embed_tokens.weight", vec![16, 8]),
        ("model.layers.0.self_attn.q_proj.weight", vec![8, 8]),
        ("model.layers.0.mlp.up_proj.weight", vec![300, 200]),
        ("model.norm.weight", vec![8]),
        ("odd.weight", vec![7, 5]),
    ]
}

fn random_tensors(seed: u64, scale: f64) -> Tensors {
    let mut rng = SplitMix64::new(seed);
    layout()
        .into_iter()
        .map(|(n, s)| {
            let numel = s.iter().product();
            let v = (0..numel)
                .map(|_| (rng.next_normal() * scale) as f32)
                .collect();
            (n.to_string(), s, v)
        })
        .collect()
}

/// θ = base + N(0, 0.01²) per element.
fn fine_tune(base: &Tensors, seed: u64) -> Tensors {
    let mut rng = SplitMix64::new(seed);
    base.iter()
        .map(|(n, s, v)| {
            let w = v
                .iter()
                .map(|x| x + (rng.next_normal() * 0.01) as f32)
                .collect();
            (n.clone(), s.clone(), w)
        })
        .collect()
}

fn config(hidden: usize) -> serde_json::Value {
    json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "vocab_size": 16, "torch_dtype": "float32"})
}

/// Writes a checkpoint with the `safetensors` crate (independent of clreg's writer).
fn write_ckpt(
    dir: &Path,
    tensors: &Tensors,
    dtype: safetensors::Dtype,
    cfg: Option<serde_json::Value>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            safetensors::Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            safetensors::Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    if let Some(c) = cfg {
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    }
}

fn read_all(dir: &Path) -> HashMap<String, Vec<f32>> {
    let c = Checkpoint::open(dir).unwrap();
    c.names()
        .iter()
        .map(|n| (n.clone(), c.read_f32(n).unwrap()))
        .collect()
}

fn as_map(t: &Tensors) -> HashMap<String, Vec<f64>> {
    t.iter()
        .map(|(n, _, v)| (n.clone(), v.iter().map(|x| f64::from(*x)).collect()))
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{name}[{j}]: got {g}, want {w} (err {err})"
        );
    }
}

fn no_progress() -> impl Fn(clreg_engine::merge::Progress) {
    |_| {}
}

fn run(yaml: &str, out: &Path) -> Result<clreg_engine::merge::MergeReport, MergeError> {
    let recipe = Recipe::from_yaml(yaml)?;
    run_recipe(&recipe, out, &no_progress(), &AtomicBool::new(false))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: Tensors,
    models: Vec<Tensors>,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let base = random_tensors(1, 0.02);
        write_ckpt(
            &root.join("base"),
            &base,
            safetensors::Dtype::F32,
            Some(config(8)),
        );
        std::fs::write(root.join("base/tokenizer.json"), "{\"tok\": 1}").unwrap();
        let models: Vec<Tensors> = (0..n).map(|i| fine_tune(&base, 100 + i as u64)).collect();
        for (i, m) in models.iter().enumerate() {
            write_ckpt(
                &root.join(format!("m{i}")),
                m,
                safetensors::Dtype::F32,
                Some(config(8)),
            );
        }
        Self {
            _tmp: tmp,
            root,
            base,
            models,
        }
    }

    fn p(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn yaml(&self, method: &str, per_model: &[(f64, f64)], extra: &str) -> String {
        let mut s = format!(
            "merge_method: {method}\nbase_model: {}\nmodels:\n",
            self.p("base")
        );
        for (i, (w, d)) in per_model.iter().enumerate() {
            s += &format!(
                "  - model: {}\n    parameters: {{weight: {w}, density: {d}}}\n",
                self.p(&format!("m{i}"))
            );
        }
        s + extra
    }
}

// ---------- references (plain loops, f64) ----------

#[derive(Clone, Copy)]
enum Sp {
    None,
    Magnitude,
    Bernoulli,
}

/// δ = θ − base (in f32 like the engine, then f64).
fn deltas(f: &Fixture, name: &str) -> Vec<Vec<f64>> {
    let base = &f.base.iter().find(|t| t.0 == name).unwrap().2;
    f.models
        .iter()
        .map(|m| {
            let t = &m.iter().find(|t| t.0 == name).unwrap().2;
            t.iter().zip(base).map(|(a, b)| f64::from(a - b)).collect()
        })
        .collect()
}

/// The kept mask of δ by a full sort (not selection) or by the documented DARE generator.
fn ref_mask(d: &[f64], density: f64, sp: Sp, seed: u64, name: &str, model: usize) -> Vec<bool> {
    if density >= 1.0 {
        return vec![true; d.len()];
    }
    match sp {
        Sp::None => vec![true; d.len()],
        Sp::Magnitude => {
            let k = (density * d.len() as f64).floor() as usize;
            let mut idx: Vec<usize> = (0..d.len()).collect();
            idx.sort_by(|a, b| d[*b].abs().partial_cmp(&d[*a].abs()).unwrap());
            let mut m = vec![false; d.len()];
            for &i in &idx[..k] {
                m[i] = true;
            }
            m
        }
        Sp::Bernoulli => {
            let key = dare_key(seed, name, model);
            (0..d.len()).map(|j| dare_keep(key, j, density)).collect()
        }
    }
}

fn sgn(x: f64) -> i32 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

#[allow(clippy::too_many_arguments)]
fn ref_mergekit(
    base: &[f64],
    ds: &[Vec<f64>],
    w: &[f64],
    dens: &[f64],
    sp: Sp,
    consensus: Option<bool>,
    normalize: bool,
    rescale: bool,
    lambda: f64,
    seed: u64,
    name: &str,
) -> Vec<f64> {
    let n = base.len();
    let mut wd = Vec::new();
    for (i, d) in ds.iter().enumerate() {
        let mask = ref_mask(d, dens[i], sp, seed, name, i);
        let mut kept: Vec<f64> = d
            .iter()
            .zip(&mask)
            .map(|(x, m)| if *m { *x } else { 0.0 })
            .collect();
        if rescale && dens[i] < 1.0 && !matches!(sp, Sp::None) {
            let before: f64 = d.iter().map(|x| x.abs()).sum();
            let after: f64 = kept.iter().map(|x| x.abs()).sum();
            if before >= 1e-7 && after >= 1e-7 {
                kept.iter_mut().for_each(|x| *x *= before / after);
            }
        }
        wd.push(kept.iter().map(|x| x * w[i]).collect::<Vec<f64>>());
    }
    (0..n)
        .map(|j| {
            let (mixed, div) = match consensus {
                None => {
                    let s: f64 = w.iter().sum();
                    (
                        wd.iter().map(|v| v[j]).sum::<f64>(),
                        if s.abs() < 1e-8 { 1.0 } else { s },
                    )
                }
                Some(by_sum) => {
                    let score: f64 = if by_sum {
                        wd.iter().map(|v| v[j]).sum()
                    } else {
                        wd.iter().map(|v| f64::from(sgn(v[j]))).sum()
                    };
                    let e = if score >= 0.0 { 1 } else { -1 };
                    let mut mixed = 0.0;
                    let mut div = 0.0;
                    for (i, v) in wd.iter().enumerate() {
                        if sgn(v[j]) == e {
                            mixed += v[j];
                            div += w[i];
                        }
                    }
                    (mixed, if div == 0.0 { 1.0 } else { div })
                }
            };
            let m = if normalize { mixed / div } else { mixed };
            base[j] + lambda * m
        })
        .collect()
}

/// PEFT merge_utils on task vectors; `base` None returns the mixed tensor only.
#[allow(clippy::too_many_arguments)]
fn ref_peft(
    base: Option<&[f64]>,
    ds: &[Vec<f64>],
    w: &[f64],
    dens: &[f64],
    sp: Sp,
    elect: Option<bool>,
    lambda: f64,
    seed: u64,
    name: &str,
) -> Vec<f64> {
    let n = ds[0].len();
    let pruned: Vec<Vec<f64>> = ds
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mask = ref_mask(d, dens[i], sp, seed, name, i);
            let div = if matches!(sp, Sp::Bernoulli) && dens[i] < 1.0 {
                dens[i]
            } else {
                1.0
            };
            d.iter()
                .zip(&mask)
                .map(|(x, m)| if *m { x / div } else { 0.0 })
                .collect()
        })
        .collect();
    (0..n)
        .map(|j| {
            let mixed = match elect {
                None => pruned.iter().zip(w).map(|(p, w)| w * p[j]).sum::<f64>(),
                Some(total) => {
                    let score: f64 = if total {
                        pruned.iter().map(|p| p[j]).sum()
                    } else {
                        pruned.iter().map(|p| f64::from(sgn(p[j]))).sum()
                    };
                    let e = if score >= 0.0 { 1 } else { -1 };
                    let mut s = 0.0;
                    let mut c = 0usize;
                    for (p, w) in pruned.iter().zip(w) {
                        if sgn(p[j]) == e {
                            s += w * p[j];
                            c += 1;
                        }
                    }
                    s / c.max(1) as f64
                }
            };
            base.map_or(0.0, |b| b[j]) + lambda * mixed
        })
        .collect()
}

// ---------- formats ----------

#[test]
fn sharded_checkpoint_round_trips_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_tiny_llama(&src, &TinyConfig::default(), 7, Some(40_000)).unwrap();
    let c = Checkpoint::open(&src).unwrap();
    assert!(c.weight_files().len() > 1);
    for dtype in [OutDtype::Float32, OutDtype::Bfloat16] {
        let out = tmp.path().join(format!("out-{dtype}"));
        let specs: Vec<TensorSpec> = c
            .names()
            .iter()
            .map(|n| TensorSpec::new(n.clone(), c.meta(n).unwrap().shape.clone(), dtype))
            .collect();
        let staging = Staging::new(&out).unwrap();
        let mut w = CheckpointWriter::create(staging.path(), specs, Some(30_000)).unwrap();
        for n in c.names() {
            w.write(n, &c.read_f32(n).unwrap()).unwrap();
        }
        let shards = w.finish().unwrap();
        staging.commit().unwrap();
        assert!(shards.len() > 2, "{shards:?}");
        assert_eq!(
            shards[0],
            format!("model-00001-of-{:05}.safetensors", shards.len())
        );
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let back = Checkpoint::open(&out).unwrap();
        let total: u64 = back
            .names()
            .iter()
            .map(|n| back.read_raw(n).unwrap().bytes.len() as u64)
            .sum();
        assert_eq!(index["metadata"]["total_size"], json!(total));
        assert_eq!(
            index["weight_map"].as_object().unwrap().len(),
            c.names().len()
        );
        assert_eq!(back.names(), c.names());
        for n in c.names() {
            let orig = c.read_raw(n).unwrap();
            let got = back.read_raw(n).unwrap();
            assert_eq!(got.shape, orig.shape);
            if dtype == OutDtype::Float32 {
                assert_eq!(got.bytes, orig.bytes, "{n}");
            } else {
                assert_eq!(got.dtype, "BF16");
                let want: Vec<u8> = c
                    .read_f32(n)
                    .unwrap()
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect();
                assert_eq!(got.bytes, want, "{n}");
            }
        }
    }
    // bf16 → f32 → bf16 is exact: a second bf16 pass reproduces the bytes.
    let a = Checkpoint::open(&tmp.path().join("out-bfloat16")).unwrap();
    let out2 = tmp.path().join("again");
    let specs: Vec<TensorSpec> = a
        .names()
        .iter()
        .map(|n| {
            TensorSpec::new(
                n.clone(),
                a.meta(n).unwrap().shape.clone(),
                OutDtype::Bfloat16,
            )
        })
        .collect();
    let mut w = CheckpointWriter::create(
        &{
            std::fs::create_dir(&out2).unwrap();
            out2.clone()
        },
        specs,
        None,
    )
    .unwrap();
    for n in a.names() {
        w.write(n, &a.read_f32(n).unwrap()).unwrap();
    }
    assert_eq!(w.finish().unwrap(), vec!["model.safetensors".to_string()]);
    let b = Checkpoint::open(&out2).unwrap();
    for n in a.names() {
        assert_eq!(a.read_raw(n).unwrap(), b.read_raw(n).unwrap());
    }
}

#[test]
fn adapter_round_trips_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_llama_config(&TinyConfig::default());
    write_tiny_adapter(
        &tmp.path().join("a"),
        &cfg,
        4,
        8.0,
        &["q_proj", "down_proj"],
        3,
        false,
    )
    .unwrap();
    let a = LoraAdapter::open(&tmp.path().join("a")).unwrap();
    let modules: Vec<(String, _)> = a
        .modules()
        .map(|m| (m.to_string(), a.read(m).unwrap().unwrap()))
        .collect();
    assert_eq!(modules.len(), 4);
    save_adapter(
        &tmp.path().join("b"),
        a.config(),
        &modules,
        OutDtype::Float32,
    )
    .unwrap();
    let b = LoraAdapter::open(&tmp.path().join("b")).unwrap();
    assert_eq!(a.config(), b.config());
    for t in &a.file().info().tensors {
        assert_eq!(
            a.file().read_raw(&t.name).unwrap(),
            b.file().read_raw(&t.name).unwrap()
        );
    }
}

#[test]
fn f16_and_bf16_inputs_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let t = random_tensors(5, 1.0);
    for (dt, name) in [
        (safetensors::Dtype::F16, "h"),
        (safetensors::Dtype::BF16, "b"),
    ] {
        write_ckpt(&tmp.path().join(name), &t, dt, None);
        let got = read_all(&tmp.path().join(name));
        for (n, _, v) in &t {
            let want: Vec<f64> = v
                .iter()
                .map(|x| match dt {
                    safetensors::Dtype::F16 => f64::from(half::f16::from_f32(*x).to_f32()),
                    _ => f64::from(half::bf16::from_f32(*x).to_f32()),
                })
                .collect();
            assert_close(n, &got[n], &want, 0.0);
        }
    }
}

// ---------- full-model merges ----------

#[test]
fn linear_matches_reference_and_copies_side_files() {
    let f = Fixture::new(3);
    let w = [1.0, 2.0, 0.5];
    for normalize in [true, false] {
        let out = f.root.join(format!("lin{normalize}"));
        let y = f.yaml(
            "linear",
            &[(w[0], 1.0), (w[1], 1.0), (w[2], 1.0)],
            &format!("parameters: {{normalize: {normalize}}}\n"),
        );
        let rep = run(&y, &out).unwrap();
        assert_eq!(rep.tensors, layout().len());
        let got = read_all(&out);
        for (n, _, _) in &f.base {
            let thetas: Vec<HashMap<String, Vec<f64>>> = f.models.iter().map(as_map).collect();
            let len = thetas[0][n].len();
            let div = if normalize { 3.5 } else { 1.0 };
            let want: Vec<f64> = (0..len)
                .map(|j| (0..3).map(|i| w[i] * thetas[i][n][j]).sum::<f64>() / div)
                .collect();
            assert_close(n, &got[n], &want, 1e-6);
        }
        assert_eq!(
            std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
            "{\"tok\": 1}"
        );
        assert!(out.join("config.json").is_file());
    }
}

#[test]
fn n_copies_give_the_model() {
    let f = Fixture::new(1);
    let m0 = f.p("m0");
    let y = format!(
        "merge_method: linear\nmodels:\n  - model: {m0}\n    parameters: {{weight: 0.3}}\n  - model: {m0}\n    parameters: {{weight: 0.3}}\n  - model: {m0}\n    parameters: {{weight: 0.3}}\n"
    );
    run(&y, &f.root.join("lin")).unwrap();
    let got = read_all(&f.root.join("lin"));
    for (n, _, v) in &f.models[0] {
        assert_eq!(&got[n], v, "{n}");
    }
    // TIES over 3 copies at density 1, and one model at density 1: the model, to f32 rounding.
    for (k, out) in [(3, "ties3"), (1, "ties1")] {
        let mut y = format!("merge_method: ties\nbase_model: {}\nmodels:\n", f.p("base"));
        for _ in 0..k {
            y += &format!("  - model: {m0}\n    parameters: {{weight: 0.7, density: 1.0}}\n");
        }
        run(&y, &f.root.join(out)).unwrap();
        let got = read_all(&f.root.join(out));
        for (n, _, v) in &f.models[0] {
            let want: Vec<f64> = v.iter().map(|x| f64::from(*x)).collect();
            assert_close(n, &got[n], &want, 1e-7);
        }
    }
}

#[test]
fn task_arithmetic_matches_reference() {
    let f = Fixture::new(2);
    let out = f.root.join("ta");
    run(
        &f.yaml(
            "task_arithmetic",
            &[(1.0, 1.0), (-0.5, 1.0)],
            "parameters: {lambda: 0.7}\n",
        ),
        &out,
    )
    .unwrap();
    let got = read_all(&out);
    let base = as_map(&f.base);
    for (n, _, _) in &f.base {
        let want = ref_mergekit(
            &base[n],
            &deltas(&f, n),
            &[1.0, -0.5],
            &[1.0, 1.0],
            Sp::None,
            None,
            false,
            false,
            0.7,
            0,
            n,
        );
        assert_close(n, &got[n], &want, 1e-6);
    }
}

#[test]
fn mergekit_flavour_matches_reference() {
    let f = Fixture::new(3);
    let w = [1.0, 0.5, 2.0];
    let dens = [0.3, 0.6, 1.0];
    let per: Vec<(f64, f64)> = w.iter().copied().zip(dens).collect();
    let base = as_map(&f.base);
    // (method, sparsifier, consensus by sum?, normalize, rescale, extra params)
    type Case<'a> = (&'a str, Sp, Option<bool>, bool, bool, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("ties", Sp::Magnitude, Some(true), true, false, ""),
        (
            "ties",
            Sp::Magnitude,
            Some(false),
            true,
            true,
            "sign_method: count, rescale: true, ",
        ),
        (
            "ties",
            Sp::Magnitude,
            Some(true),
            false,
            false,
            "normalize: false, lambda: 0.5, ",
        ),
        ("dare_ties", Sp::Bernoulli, Some(true), false, true, ""),
        (
            "dare_ties",
            Sp::Bernoulli,
            Some(true),
            true,
            false,
            "normalize: true, rescale: false, ",
        ),
        (
            "dare_linear",
            Sp::Bernoulli,
            None,
            false,
            true,
            "lambda: 1.5, ",
        ),
    ];
    for (k, (method, sp, cons, normalize, rescale, extra)) in cases.into_iter().enumerate() {
        let lambda = if extra.contains("lambda: 0.5") {
            0.5
        } else if extra.contains("lambda: 1.5") {
            1.5
        } else {
            1.0
        };
        let y = f.yaml(
            method,
            &per,
            &format!("parameters: {{{extra}int8_mask: true}}\nseed: 42\nflavour: mergekit\n"),
        );
        let out = f.root.join(format!("mk{k}"));
        let rep = run(&y, &out).unwrap();
        assert!(rep.warnings.iter().any(|w| w.contains("int8_mask")));
        let got = read_all(&out);
        for (n, _, _) in &f.base {
            let want = ref_mergekit(
                &base[n],
                &deltas(&f, n),
                &w,
                &dens,
                sp,
                cons,
                normalize,
                rescale,
                lambda,
                42,
                n,
            );
            assert_close(&format!("{method}#{k} {n}"), &got[n], &want, 1e-5);
        }
    }
}

#[test]
fn peft_flavour_matches_reference() {
    let f = Fixture::new(3);
    let w = [1.0, 0.5, 2.0];
    let dens = [0.2, 0.5, 0.8];
    let per: Vec<(f64, f64)> = w.iter().copied().zip(dens).collect();
    let base = as_map(&f.base);
    let cases: Vec<(&str, Sp, Option<bool>, &str)> = vec![
        ("ties", Sp::Magnitude, Some(true), ""),
        (
            "ties",
            Sp::Magnitude,
            Some(false),
            "parameters: {sign_method: frequency}\n",
        ),
        (
            "dare_ties",
            Sp::Bernoulli,
            Some(true),
            "parameters: {sign_method: total}\n",
        ),
        ("dare_linear", Sp::Bernoulli, None, ""),
    ];
    for (k, (method, sp, elect, extra)) in cases.into_iter().enumerate() {
        let y = f.yaml(method, &per, &format!("{extra}seed: 9\nflavour: peft\n"));
        let out = f.root.join(format!("pf{k}"));
        run(&y, &out).unwrap();
        let got = read_all(&out);
        for (n, _, _) in &f.base {
            let want = ref_peft(
                Some(&base[n]),
                &deltas(&f, n),
                &w,
                &dens,
                sp,
                elect,
                1.0,
                9,
                n,
            );
            assert_close(&format!("{method}#{k} {n}"), &got[n], &want, 1e-5);
        }
    }
    // The flavours differ on the same inputs.
    let mk = f.root.join("mk");
    run(&f.yaml("ties", &per, "seed: 9\n"), &mk).unwrap();
    let (a, b) = (read_all(&mk), read_all(&f.root.join("pf0")));
    assert_ne!(
        a["model.layers.0.mlp.up_proj.weight"],
        b["model.layers.0.mlp.up_proj.weight"]
    );
}

#[test]
fn dare_masks_follow_density_and_seed() {
    let key = dare_key(1, "t", 0);
    let kept = (0..100_000).filter(|j| dare_keep(key, *j, 0.3)).count();
    assert!((29_000..31_000).contains(&kept), "{kept}");
    assert_ne!(dare_key(1, "t", 0), dare_key(2, "t", 0));
    assert_ne!(dare_key(1, "t", 0), dare_key(1, "t", 1));
    assert_ne!(dare_key(1, "t", 0), dare_key(1, "u", 0));
}

// ---------- LoRA ----------

fn lora_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let t = TinyConfig::default();
    write_tiny_llama(&root.join("base"), &t, 1, None).unwrap();
    let cfg = tiny_llama_config(&t);
    write_tiny_adapter(
        &root.join("a0"),
        &cfg,
        4,
        8.0,
        &["q_proj", "v_proj"],
        10,
        false,
    )
    .unwrap();
    write_tiny_adapter(
        &root.join("a1"),
        &cfg,
        4,
        16.0,
        &["q_proj", "down_proj"],
        11,
        false,
    )
    .unwrap();
    write_tiny_adapter(&root.join("a2"), &cfg, 2, 4.0, &["q_proj"], 12, false).unwrap();
    write_tiny_adapter(
        &root.join("zero"),
        &cfg,
        4,
        8.0,
        &["q_proj", "up_proj"],
        13,
        true,
    )
    .unwrap();
    (tmp, root)
}

/// s · B·A in f64, `[out, in]`.
fn ref_delta(a: &LoraAdapter, module: &str) -> Option<Vec<f64>> {
    let p = a.read(module).unwrap()?;
    let s = a.scale(module);
    let mut d = vec![0f64; p.out * p.inp];
    for o in 0..p.out {
        for i in 0..p.inp {
            d[o * p.inp + i] = s
                * (0..p.r)
                    .map(|k| f64::from(p.b[o * p.r + k]) * f64::from(p.a[k * p.inp + i]))
                    .sum::<f64>();
        }
    }
    Some(d)
}

#[test]
fn merge_and_unload_zero_b_is_identity_and_nonzero_matches() {
    let (_t, root) = lora_fixture();
    let cancel = AtomicBool::new(false);
    merge_and_unload(
        &root.join("base"),
        &root.join("zero"),
        &root.join("z"),
        None,
        &no_progress(),
        &cancel,
    )
    .unwrap();
    let base = Checkpoint::open(&root.join("base")).unwrap();
    let z = Checkpoint::open(&root.join("z")).unwrap();
    for n in base.names() {
        assert_eq!(base.read_raw(n).unwrap(), z.read_raw(n).unwrap(), "{n}");
    }
    merge_and_unload(
        &root.join("base"),
        &root.join("a1"),
        &root.join("m"),
        None,
        &no_progress(),
        &cancel,
    )
    .unwrap();
    let a1 = LoraAdapter::open(&root.join("a1")).unwrap();
    let m = read_all(&root.join("m"));
    for n in base.names() {
        let w: Vec<f64> = base
            .read_f32(n)
            .unwrap()
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        let want = match ref_delta(&a1, n.strip_suffix(".weight").unwrap()) {
            Some(d) => w.iter().zip(d).map(|(x, y)| x + y).collect(),
            None => w,
        };
        assert_close(n, &m[n], &want, 1e-6);
    }
}

#[test]
fn merge_and_unload_fan_in_fan_out_and_rslora() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A Conv1D-style weight stored [in, out] = [8, 12].
    let mut rng = SplitMix64::new(3);
    let mut normal = |n: usize| {
        (0..n)
            .map(|_| rng.next_normal() as f32)
            .collect::<Vec<f32>>()
    };
    let w = normal(96);
    write_ckpt(
        &root.join("base"),
        &vec![("h.0.c_fc.weight".to_string(), vec![8, 12], w.clone())],
        safetensors::Dtype::F32,
        None,
    );
    let (r, a, b) = (4usize, normal(4 * 8), normal(12 * 4));
    let dir = root.join("ad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        json!({"peft_type": "LORA", "r": r, "lora_alpha": 6, "target_modules": ["c_fc"],
               "fan_in_fan_out": true, "use_rslora": true})
        .to_string(),
    )
    .unwrap();
    let ab: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        (
            "base_model.model.h.0.c_fc.lora_A.weight".to_string(),
            TensorView::new(safetensors::Dtype::F32, vec![4, 8], &ab).unwrap(),
        ),
        (
            "base_model.model.h.0.c_fc.lora_B.weight".to_string(),
            TensorView::new(safetensors::Dtype::F32, vec![12, 4], &bb).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
    merge_and_unload(
        &root.join("base"),
        &dir,
        &root.join("out"),
        None,
        &no_progress(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let got = read_all(&root.join("out"));
    let s = 6.0 / 2.0; // alpha / sqrt(4)
    let mut want = vec![0f64; 96];
    for i in 0..8 {
        for o in 0..12 {
            let ba: f64 = (0..r)
                .map(|k| f64::from(b[o * r + k]) * f64::from(a[k * 8 + i]))
                .sum();
            want[i * 12 + o] = f64::from(w[i * 12 + o]) + s * ba;
        }
    }
    assert_close("c_fc", &got["h.0.c_fc.weight"], &want, 1e-6);
}

#[test]
fn lora_average_is_mean_of_merged_models() {
    let (_t, root) = lora_fixture();
    let y = format!(
        "merge_method: linear\nbase_model: {b}\nmodels:\n  - model: {a0}\n  - model: {a1}\n    parameters: {{weight: 3}}\n",
        b = root.join("base").display(),
        a0 = root.join("a0").display(),
        a1 = root.join("a1").display()
    );
    run(&y, &root.join("avg")).unwrap();
    let got = read_all(&root.join("avg"));
    let base = Checkpoint::open(&root.join("base")).unwrap();
    let ads = [
        LoraAdapter::open(&root.join("a0")).unwrap(),
        LoraAdapter::open(&root.join("a1")).unwrap(),
    ];
    for n in base.names() {
        let w: Vec<f64> = base
            .read_f32(n)
            .unwrap()
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        let module = n.strip_suffix(".weight").unwrap();
        let d: Vec<Vec<f64>> = ads
            .iter()
            .map(|a| ref_delta(a, module).unwrap_or_else(|| vec![0.0; w.len()]))
            .collect();
        let want: Vec<f64> = (0..w.len())
            .map(|j| (1.0 * (w[j] + d[0][j]) + 3.0 * (w[j] + d[1][j])) / 4.0)
            .collect();
        assert_close(n, &got[n], &want, 1e-6);
    }
}

#[test]
fn ties_over_adapters_uses_delta_w() {
    let (_t, root) = lora_fixture();
    let y = format!(
        "merge_method: ties\nbase_model: {b}\nmodels:\n  - model: {a0}\n    parameters: {{weight: 1, density: 0.4}}\n  - model: {a1}\n    parameters: {{weight: 1, density: 0.4}}\n",
        b = root.join("base").display(),
        a0 = root.join("a0").display(),
        a1 = root.join("a1").display()
    );
    run(&y, &root.join("t")).unwrap();
    let got = read_all(&root.join("t"));
    let base = Checkpoint::open(&root.join("base")).unwrap();
    let ads = [
        LoraAdapter::open(&root.join("a0")).unwrap(),
        LoraAdapter::open(&root.join("a1")).unwrap(),
    ];
    let n = "model.layers.1.self_attn.q_proj.weight";
    let w: Vec<f64> = base
        .read_f32(n)
        .unwrap()
        .iter()
        .map(|x| f64::from(*x))
        .collect();
    // Deltas rounded to f32 as the engine stores them.
    let d: Vec<Vec<f64>> = ads
        .iter()
        .map(|a| {
            ref_delta(a, "model.layers.1.self_attn.q_proj")
                .unwrap()
                .iter()
                .map(|x| f64::from(*x as f32))
                .collect()
        })
        .collect();
    let want = ref_mergekit(
        &w,
        &d,
        &[1.0, 1.0],
        &[0.4, 0.4],
        Sp::Magnitude,
        Some(true),
        true,
        false,
        1.0,
        0,
        n,
    );
    assert_close(n, &got[n], &want, 1e-5);
}

fn adapter_yaml(root: &Path, method: &str, models: &[(&str, f64, f64)], extra: &str) -> String {
    let mut y = format!(
        "merge_method: {method}\nbase_model: {}\nmodels:\n",
        root.join("base").display()
    );
    for (m, w, d) in models {
        y += &format!(
            "  - model: {}\n    parameters: {{weight: {w}, density: {d}}}\n",
            root.join(m).display()
        );
    }
    y + extra
}

/// Σ wᵢ sᵢ Bᵢ Aᵢ of one module over adapters (absent modules contribute nothing).
fn ref_sum(root: &Path, models: &[(&str, f64)], module: &str) -> Option<Vec<f64>> {
    let mut acc: Option<Vec<f64>> = None;
    for (m, w) in models {
        let a = LoraAdapter::open(&root.join(m)).unwrap();
        if let Some(d) = ref_delta(&a, module) {
            let acc = acc.get_or_insert_with(|| vec![0.0; d.len()]);
            acc.iter_mut().zip(d).for_each(|(x, y)| *x += w * y);
        }
    }
    acc
}

fn product(out: &LoraAdapter, module: &str) -> Vec<f64> {
    assert_eq!(out.scale(module), 1.0);
    ref_delta(out, module).unwrap()
}

#[test]
fn cat_is_exact_sum_of_deltas() {
    let (_t, root) = lora_fixture();
    let models = [("a0", 1.0), ("a1", -0.5), ("a2", 2.0)];
    let y = adapter_yaml(
        &root,
        "cat",
        &[("a0", 1.0, 1.0), ("a1", -0.5, 1.0), ("a2", 2.0, 1.0)],
        "",
    );
    let rep = run(&y, &root.join("cat")).unwrap();
    assert_eq!(rep.output_kind, "adapter");
    let out = LoraAdapter::open(&root.join("cat")).unwrap();
    assert_eq!(out.config().r, 10);
    assert_eq!(out.config().lora_alpha, 10.0);
    for module in out.modules() {
        let want = ref_sum(&root, &models, module).unwrap();
        assert_close(
            module,
            &product(&out, module)
                .iter()
                .map(|x| *x as f32)
                .collect::<Vec<_>>(),
            &want,
            1e-5,
        );
    }
    assert_eq!(out.modules().count(), 2 * 3);
}

#[test]
fn svd_full_rank_reproduces_and_truncation_is_optimal() {
    let (_t, root) = lora_fixture();
    let models = [("a0", 1.0), ("a1", 0.7), ("a2", 1.3)];
    let y = adapter_yaml(
        &root,
        "svd",
        &[("a0", 1.0, 1.0), ("a1", 0.7, 1.0), ("a2", 1.3, 1.0)],
        "parameters: {rank: 10}\n",
    );
    run(&y, &root.join("svd")).unwrap();
    let out = LoraAdapter::open(&root.join("svd")).unwrap();
    for module in out.modules() {
        let want = ref_sum(&root, &models, module).unwrap();
        assert_close(
            module,
            &product(&out, module)
                .iter()
                .map(|x| *x as f32)
                .collect::<Vec<_>>(),
            &want,
            1e-5,
        );
    }
    // Truncation on a random product: A has orthonormal rows, ΔW·Aᵀ = B, singular values
    // descend, and the error energy equals the dropped tail.
    let (m, k, n, r) = (40, 9, 30, 4);
    let mut rng = SplitMix64::new(77);
    let bc: Vec<f64> = (0..m * k).map(|_| rng.next_normal()).collect();
    let ac: Vec<f64> = (0..k * n).map(|_| rng.next_normal()).collect();
    let dw: Vec<f64> = (0..m * n)
        .map(|x| (0..k).map(|l| bc[x / n * k + l] * ac[l * n + x % n]).sum())
        .collect();
    let full = truncated_svd(&bc, &ac, m, k, n, k);
    let rebuilt: Vec<f64> = (0..m * n)
        .map(|x| {
            (0..k)
                .map(|l| full.b[x / n * k + l] * full.a[l * n + x % n])
                .sum()
        })
        .collect();
    for (x, y) in rebuilt.iter().zip(&dw) {
        assert!((x - y).abs() < 1e-10 * (1.0 + y.abs()));
    }
    let t = truncated_svd(&bc, &ac, m, k, n, r);
    for i in 0..r {
        for j in 0..r {
            let dot: f64 = (0..n).map(|c| t.a[i * n + c] * t.a[j * n + c]).sum();
            assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-10);
        }
        for row in 0..m {
            let x: f64 = (0..n).map(|c| dw[row * n + c] * t.a[i * n + c]).sum();
            assert!((x - t.b[row * r + i]).abs() < 1e-9);
        }
    }
    assert!(t.singular_values.windows(2).all(|w| w[0] >= w[1]));
    let approx: Vec<f64> = (0..m * n)
        .map(|x| {
            (0..r)
                .map(|l| t.b[x / n * r + l] * t.a[l * n + x % n])
                .sum()
        })
        .collect();
    let err: f64 = approx.iter().zip(&dw).map(|(a, b)| (a - b).powi(2)).sum();
    let tail: f64 = t.singular_values[r..].iter().map(|s| s * s).sum();
    assert!((err - tail).abs() < 1e-8 * (1.0 + tail));
    // Power iteration on ΔWᵀΔW gives the top singular value independently.
    let mut v = vec![1.0; n];
    for _ in 0..500 {
        let u: Vec<f64> = (0..m)
            .map(|i| (0..n).map(|c| dw[i * n + c] * v[c]).sum())
            .collect();
        let w: Vec<f64> = (0..n)
            .map(|c| (0..m).map(|i| dw[i * n + c] * u[i]).sum())
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = w.iter().map(|x| x / norm).collect();
    }
    let u: Vec<f64> = (0..m)
        .map(|i| (0..n).map(|c| dw[i * n + c] * v[c]).sum())
        .collect();
    let sigma = u.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((sigma - t.singular_values[0]).abs() < 1e-8 * sigma);
}

#[test]
fn peft_ab_matches_reference() {
    let (_t, root) = lora_fixture();
    let ws = [1.0, 0.5];
    for (k, (comb, sp, elect)) in [
        ("ties", Sp::Magnitude, Some(true)),
        ("dare_ties", Sp::Bernoulli, Some(true)),
        ("linear", Sp::None, None),
        ("dare_linear", Sp::Bernoulli, None),
    ]
    .into_iter()
    .enumerate()
    {
        let y = adapter_yaml(
            &root,
            "peft_ab",
            &[("a0", ws[0], 0.5), ("a1", ws[1], 0.5)],
            &format!("parameters: {{combination: {comb}}}\nseed: 5\n"),
        );
        let out_dir = root.join(format!("ab{k}"));
        run(&y, &out_dir).unwrap();
        let out = LoraAdapter::open(&out_dir).unwrap();
        let ads = [
            LoraAdapter::open(&root.join("a0")).unwrap(),
            LoraAdapter::open(&root.join("a1")).unwrap(),
        ];
        for module in out.modules() {
            let present: Vec<usize> = (0..2).filter(|i| ads[*i].has_module(module)).collect();
            let mut wa = Vec::new();
            let mut wb = Vec::new();
            let mut av = Vec::new();
            let mut bv = Vec::new();
            for &i in &present {
                let p = ads[i].read(module).unwrap().unwrap();
                let x = ws[i] * ads[i].scale(module);
                wa.push(x.signum() * x.abs().sqrt());
                wb.push(x.abs().sqrt());
                av.push(p.a.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>());
                bv.push(p.b.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>());
            }
            // The engine keys DARE masks by model position in the recipe; map present → index.
            let keyed = |vals: &[Vec<f64>], w: &[f64], name: &str| -> Vec<f64> {
                let mut full_vals = vec![vec![0.0; vals[0].len()]; 2];
                let mut full_w = vec![0.0; 2];
                for (slot, &i) in present.iter().enumerate() {
                    full_vals[i] = vals[slot].clone();
                    full_w[i] = w[slot];
                }
                if present.len() == 2 {
                    ref_peft(
                        None,
                        &full_vals,
                        &full_w,
                        &[0.5, 0.5],
                        sp,
                        elect,
                        1.0,
                        5,
                        name,
                    )
                } else {
                    // One adapter: a stack of one (its absent partner would vote 0 anyway).
                    let i = present[0];
                    let mut dens = [0.5, 0.5];
                    dens[1 - i] = 1.0;
                    ref_peft(None, &full_vals, &full_w, &dens, sp, elect, 1.0, 5, name)
                }
            };
            let pa = out.read(module).unwrap().unwrap();
            let want_a = keyed(
                &av,
                &wa,
                &format!("base_model.model.{module}.lora_A.weight"),
            );
            let want_b = keyed(
                &bv,
                &wb,
                &format!("base_model.model.{module}.lora_B.weight"),
            );
            assert_close(&format!("{comb} {module} A"), &pa.a, &want_a, 1e-5);
            assert_close(&format!("{comb} {module} B"), &pa.b, &want_b, 1e-5);
        }
    }
}

// ---------- recipe, record, refusals ----------

#[test]
fn record_holds_recipe_and_hashes() {
    let f = Fixture::new(2);
    let out = f.root.join("rec");
    let y = f.yaml(
        "dare_ties",
        &[(1.0, 0.5), (1.0, 0.5)],
        "dtype: bfloat16\nseed: 3\ntokenizer_source: base\n",
    );
    let rep = run(&y, &out).unwrap();
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(RECORD)).unwrap()).unwrap();
    assert_eq!(rec["method"], "dare_ties");
    assert_eq!(rec["flavour"], "mergekit");
    assert_eq!(rec["output_dtype"], "bfloat16");
    assert_eq!(rec["plan"]["seed"], 3);
    assert_eq!(rec["plan"]["rescale"], true);
    assert_eq!(rec["plan"]["normalize"], false);
    assert_eq!(rec["clreg_version"], env!("CARGO_PKG_VERSION"));
    let m0 = &rec["inputs"][1];
    assert_eq!(m0["role"], "model");
    assert_eq!(
        m0["files"][0]["sha256"],
        sha256_file(&f.root.join("m0/model.safetensors")).unwrap()
    );
    assert_eq!(rep.output_dtype, "bfloat16");
    let c = Checkpoint::open(&out).unwrap();
    assert!(c.names().iter().all(|n| c.meta(n).unwrap().dtype == "BF16"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
}

/// Merges read F32 tensors in place from the memory map when they are 4-byte aligned; a file
/// whose data section is not (a header of odd length, legal though no writer makes it) is
/// decoded instead, with the very same result.
#[test]
fn unaligned_f32_inputs_merge_exactly_like_aligned_ones() {
    let f = Fixture::new(2);
    let bytes = std::fs::read(f.root.join("m1/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 4, 0, "the fixture's header is aligned");
    let mut odd = ((n + 1) as u64).to_le_bytes().to_vec();
    odd.extend_from_slice(&bytes[8..8 + n]);
    odd.push(b' ');
    odd.extend_from_slice(&bytes[8 + n..]);
    std::fs::create_dir_all(f.root.join("odd")).unwrap();
    std::fs::write(f.root.join("odd/model.safetensors"), odd).unwrap();
    std::fs::copy(
        f.root.join("m1/config.json"),
        f.root.join("odd/config.json"),
    )
    .unwrap();
    let file =
        clreg_engine::formats::stfile::StFile::open(&f.root.join("odd/model.safetensors")).unwrap();
    assert!(file.f32_slice("odd.weight").unwrap().is_none());
    let aligned =
        clreg_engine::formats::stfile::StFile::open(&f.root.join("m1/model.safetensors")).unwrap();
    assert!(aligned.f32_slice("odd.weight").unwrap().is_some());
    assert_eq!(
        file.read_f32("odd.weight").unwrap(),
        aligned.read_f32("odd.weight").unwrap()
    );

    let linear = |second: &str, out: &str| {
        let y = format!(
            "merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 0.3}}\n  \
             - model: {}\n    parameters: {{weight: 0.7}}\n",
            f.p("m0"),
            f.p(second)
        );
        run(&y, &f.root.join(out)).unwrap();
        std::fs::read(f.root.join(out).join("model.safetensors")).unwrap()
    };
    assert_eq!(linear("odd", "from-odd"), linear("m1", "from-aligned"));
}

#[test]
fn mixed_input_dtypes_compute_in_f32_and_keep_base_dtype() {
    let f = Fixture::new(1);
    write_ckpt(
        &f.root.join("bf"),
        &f.models[0],
        safetensors::Dtype::BF16,
        Some(config(8)),
    );
    let y = format!(
        "merge_method: linear\nbase_model: {b}\nmodels:\n  - model: {b}\n  - model: {m}\n",
        b = f.p("base"),
        m = f.p("bf")
    );
    let rep = run(&y, &f.root.join("mix")).unwrap();
    assert_eq!(rep.output_dtype, "as base (float32)");
    let got = read_all(&f.root.join("mix"));
    let n = "odd.weight";
    let base = &f.base.iter().find(|t| t.0 == n).unwrap().2;
    let m = &f.models[0].iter().find(|t| t.0 == n).unwrap().2;
    let want: Vec<f64> = base
        .iter()
        .zip(m)
        .map(|(a, b)| (f64::from(*a) + f64::from(half::bf16::from_f32(*b).to_f32())) / 2.0)
        .collect();
    assert_close(n, &got[n], &want, 1e-6);
}

#[test]
fn recipe_yaml_subset() {
    let r = Recipe::from_yaml(
        "merge_method: ties\nbase_model: b\nmodels:\n  - model: x\n    parameters:\n      weight: 0.5\n      density: 0.2\nparameters:\n  lambda: 2\n  normalize: false\ndtype: float16\ntokenizer_source: base\nflavour: peft\nseed: 7\n",
    );
    let e = r.unwrap().resolve().unwrap_err();
    assert!(
        e.to_string()
            .contains("normalize does not apply to the PEFT flavour"),
        "{e}"
    );
    let e = Recipe::from_yaml("merge_method: ties\nmodels: []\nparameters: {epsilon: 0.1}\n")
        .unwrap_err();
    assert_eq!(e.code(), "invalid_recipe");
    assert!(e.to_string().contains("unknown field `epsilon`"), "{e}");
    let e = Recipe::from_yaml("merge_method: ties\nfoo: 1\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `foo`"), "{e}");
    let e = Recipe::from_yaml("merge_method: slerp\nmodels: [{model: a}]\n")
        .unwrap()
        .resolve()
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown merge_method `slerp`"),
        "{e}"
    );
    let p = Recipe::from_yaml("merge_method: dare_ties\nbase_model: b\nmodels: [{model: a, parameters: {density: 0.3}}]\n")
        .unwrap()
        .resolve()
        .unwrap();
    assert!(p.rescale && !p.normalize && p.lambda == 1.0 && p.models[0].weight == 1.0);
}

fn assert_refused(
    r: Result<clreg_engine::merge::MergeReport, MergeError>,
    out: &Path,
    code: &str,
    needles: &[&str],
) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    for n in needles {
        assert!(e.to_string().contains(n), "`{e}` lacks `{n}`");
    }
    assert!(!out.exists(), "output left behind");
    let parent = out.parent().unwrap();
    let partial = std::fs::read_dir(parent).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".partial-")
    });
    assert!(!partial, "partial directory left behind");
}

#[test]
fn bad_inputs_are_refused_without_output() {
    let f = Fixture::new(2);
    let out = f.root.join("out");
    // A different shape.
    let mut bad = f.models[1].clone();
    bad[4].1 = vec![5, 7];
    write_ckpt(
        &f.root.join("m1"),
        &bad,
        safetensors::Dtype::F32,
        Some(config(8)),
    );
    assert_refused(
        run(&f.yaml("ties", &[(1.0, 0.5), (1.0, 0.5)], ""), &out),
        &out,
        "shape_mismatch",
        &["odd.weight", "m1"],
    );
    // A missing tensor.
    let mut bad = f.models[1].clone();
    bad.remove(1);
    write_ckpt(
        &f.root.join("m1"),
        &bad,
        safetensors::Dtype::F32,
        Some(config(8)),
    );
    assert_refused(
        run(&f.yaml("linear", &[(1.0, 1.0), (1.0, 1.0)], ""), &out),
        &out,
        "missing_tensor",
        &["q_proj", "m1"],
    );
    // A different hidden size in config.json.
    write_ckpt(
        &f.root.join("m1"),
        &f.models[1],
        safetensors::Dtype::F32,
        Some(config(16)),
    );
    assert_refused(
        run(
            &f.yaml("task_arithmetic", &[(1.0, 1.0), (1.0, 1.0)], ""),
            &out,
        ),
        &out,
        "incompatible_model",
        &["hidden_size", "m1"],
    );
    write_ckpt(
        &f.root.join("m1"),
        &f.models[1],
        safetensors::Dtype::F32,
        Some(config(8)),
    );
    // Density out of range, weights summing to zero, unknown method.
    assert_refused(
        run(&f.yaml("ties", &[(1.0, 0.0), (1.0, 0.5)], ""), &out),
        &out,
        "invalid_recipe",
        &["density 0", "m0"],
    );
    assert_refused(
        run(&f.yaml("ties", &[(1.0, 1.5), (1.0, 0.5)], ""), &out),
        &out,
        "invalid_recipe",
        &["density 1.5"],
    );
    assert_refused(
        run(&f.yaml("linear", &[(1.0, 1.0), (-1.0, 1.0)], ""), &out),
        &out,
        "invalid_recipe",
        &["sum to 0"],
    );
    assert_refused(
        run(&f.yaml("model_stock", &[(1.0, 1.0)], ""), &out),
        &out,
        "invalid_recipe",
        &["model_stock"],
    );
    // An integer tensor.
    let dir = f.root.join("int");
    std::fs::create_dir_all(&dir).unwrap();
    let mut views = Vec::new();
    let data: Vec<Vec<u8>> = f
        .base
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    for ((n, s, _), d) in f.base.iter().zip(&data) {
        let dt = if n == "odd.weight" {
            safetensors::Dtype::I32
        } else {
            safetensors::Dtype::F32
        };
        views.push((n.clone(), TensorView::new(dt, s.clone(), d).unwrap()));
    }
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let y = format!(
        "merge_method: linear\nbase_model: {}\nmodels:\n  - model: {}\n",
        f.p("base"),
        dir.display()
    );
    assert_refused(
        run(&y, &out),
        &out,
        "unsupported_dtype",
        &["odd.weight", "I32"],
    );
    // Cancel before the first tensor, and cancel from the progress callback.
    let recipe = Recipe::from_yaml(&f.yaml("linear", &[(1.0, 1.0), (1.0, 1.0)], "")).unwrap();
    assert_refused(
        run_recipe(&recipe, &out, &no_progress(), &AtomicBool::new(true)),
        &out,
        "cancelled",
        &[],
    );
    let cancel = AtomicBool::new(false);
    let seen = std::cell::Cell::new(0);
    let cb = |p: clreg_engine::merge::Progress| {
        seen.set(p.tensors_done);
        assert_eq!(p.tensors_total, layout().len());
        if p.tensors_done == 2 {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    assert_refused(
        run_recipe(&recipe, &out, &cb, &cancel),
        &out,
        "cancelled",
        &[],
    );
    assert_eq!(seen.get(), 2);
    // An existing non-empty output is never overwritten.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep"), "x").unwrap();
    let e = run(&f.yaml("linear", &[(1.0, 1.0)], ""), &out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(out.join("keep").is_file());
}

#[test]
fn adapter_merges_refuse_mismatches() {
    let (_t, root) = lora_fixture();
    let out = root.join("out");
    // peft_ab needs equal ranks.
    let y = adapter_yaml(&root, "peft_ab", &[("a0", 1.0, 0.5), ("a2", 1.0, 0.5)], "");
    assert_refused(run(&y, &out), &out, "incompatible_model", &["rank 2", "a2"]);
    // cat over a checkpoint.
    let y = adapter_yaml(&root, "cat", &[("a0", 1.0, 1.0), ("base", 1.0, 1.0)], "");
    assert_refused(run(&y, &out), &out, "invalid_recipe", &["full checkpoint"]);
    // An adapter for another base.
    let other = tiny_llama_config(&TinyConfig {
        hidden: 32,
        ..TinyConfig::default()
    });
    write_tiny_adapter(&root.join("wrong"), &other, 4, 8.0, &["q_proj"], 1, false).unwrap();
    let y = adapter_yaml(&root, "linear", &[("wrong", 1.0, 1.0)], "");
    assert_refused(run(&y, &out), &out, "adapter_mismatch", &["q_proj"]);
}

/// A digest source that answers for one file and hashes the rest, counting its calls.
struct OneKnown {
    file: PathBuf,
    calls: std::sync::atomic::AtomicUsize,
}

impl clreg_engine::merge::record::DigestSource for OneKnown {
    fn sha256(&self, path: &Path) -> Result<String, clreg_engine::FormatError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if path == self.file {
            Ok("ab".repeat(32))
        } else {
            clreg_engine::merge::record::sha256_file(path)
        }
    }
}

#[test]
fn the_record_takes_known_digests_from_the_recipes_digest_source() {
    let f = Fixture::new(2);
    let out = f.root.join("known");
    let y = f.yaml("linear", &[(1.0, 1.0), (1.0, 1.0)], "");
    let mut recipe = Recipe::from_yaml(&y).unwrap();
    let known = f.root.join("m0").join("model.safetensors");
    assert!(known.is_file());
    let source = std::sync::Arc::new(OneKnown {
        file: known,
        calls: Default::default(),
    });
    recipe.digests = clreg_engine::merge::record::Digests(source.clone());
    run_recipe(&recipe, &out, &no_progress(), &AtomicBool::new(false)).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("clreg_merge.json")).unwrap()).unwrap();
    let files: Vec<(String, String)> = record["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["files"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["file"].as_str().unwrap().into(),
                f["sha256"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        source.calls.load(std::sync::atomic::Ordering::Relaxed),
        files.len()
    );
    // The first input's weights carry the known digest, every other file its real one.
    assert_eq!(
        files.iter().filter(|(_, h)| *h == "ab".repeat(32)).count(),
        1
    );
    let m1 = f.root.join("m1").join("model.safetensors");
    let real = clreg_engine::merge::record::sha256_file(&m1).unwrap();
    assert!(files.iter().any(|(_, h)| *h == real));
}
