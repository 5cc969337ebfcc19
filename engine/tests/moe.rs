//! MoE mixing end to end: Mixtral-layout mixtures against the base, the fine-tunes and
//! candle-transformers' Mixtral; router rows against a reference forward written here; LoRA-MoE
//! against a plain f64 loop; SVD decomposition; router training; refusals that leave no output.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use clreg_engine::formats::Checkpoint;
use clreg_engine::model::{self, FeedForward, GateNorm, Llama, LoraAdapter, LoraLinear, LoraMoe};
use clreg_engine::moe::decompose::decompose_delta;
use clreg_engine::moe::lora_moe::{BUNDLE_JSON, load_bundle, read_bundle};
use clreg_engine::moe::train::{self, RouterTraining};
use clreg_engine::moe::{
    MIX_RECORD, MixRecord, MixReport, MoeError, MoeRecipe, mix_lora, mix_mixtral,
};
use clreg_engine::tiny::{
    SplitMix64, TinyConfig, write_tiny_adapter, write_tiny_llama, write_tiny_tokenizer,
};
use safetensors::tensor::TensorView;

const CPU: Device = Device::Cpu;

fn tiny_cfg() -> TinyConfig {
    TinyConfig {
        hidden: 32,
        intermediate: 48,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 64,
        tie: false,
    }
}

fn write_base(dir: &Path, t: &TinyConfig, seed: u64) {
    write_tiny_llama(dir, t, seed, None).unwrap();
    write_tiny_tokenizer(dir, t).unwrap();
}

fn write_st(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A "fine-tune" of `base`: every tensor (only MLP tensors when `mlp_only`) plus N(0, σ²).
fn fine_tune(base: &Path, out: &Path, seed: u64, sigma: f64, mlp_only: bool) {
    std::fs::create_dir_all(out).unwrap();
    let c = Checkpoint::open(base).unwrap();
    let mut rng = SplitMix64::new(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = c
        .names()
        .iter()
        .map(|n| {
            let m = c.meta(n).unwrap();
            let mut v = c.read_f32(n).unwrap();
            if m.shape.len() == 2 && (!mlp_only || n.contains(".mlp.")) {
                v.iter_mut()
                    .for_each(|x| *x += (rng.next_normal() * sigma) as f32);
            }
            (n.clone(), m.shape.clone(), v)
        })
        .collect();
    write_st(&out.join("model.safetensors"), &tensors);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(base.join(f), out.join(f)).unwrap();
    }
}

fn no_progress(_: clreg_engine::merge::Progress) {}
fn no_train_progress(_: train::TrainProgress) {}

fn mix(yaml: &str, out: &Path) -> Result<MixReport, MoeError> {
    let recipe = MoeRecipe::from_yaml(yaml)?;
    mix_mixtral(
        &recipe,
        out,
        None,
        &no_progress,
        &no_train_progress,
        &AtomicBool::new(false),
    )
}

fn mix_adapters(yaml: &str, out: &Path) -> Result<MixReport, MoeError> {
    let recipe = MoeRecipe::from_yaml(yaml)?;
    mix_lora(
        &recipe,
        out,
        None,
        &no_progress,
        &|_| {},
        &AtomicBool::new(false),
    )
}

fn load(dir: &Path) -> Llama {
    model::load(dir, &CPU, DType::F32).unwrap().0
}

fn logits(m: &Llama, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &CPU).unwrap().unsqueeze(0).unwrap();
    m.forward(&input, 0, None).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn yaml_experts(experts: &[(&Path, &[&str])]) -> String {
    let mut s = String::new();
    for (p, prompts) in experts {
        s.push_str(&format!("  - source_model: {}\n", p.display()));
        if !prompts.is_empty() {
            s.push_str("    positive_prompts:\n");
            for q in *prompts {
                s.push_str(&format!("      - \"{q}\"\n"));
            }
        }
    }
    s
}

const IDS: [u32; 7] = [1, 5, 9, 13, 40, 7, 22];

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
}

impl Fx {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let base = root.join("base");
        write_base(&base, &tiny_cfg(), 7);
        Self {
            _tmp: tmp,
            root,
            base,
        }
    }

    fn ft(&self, name: &str, seed: u64, mlp_only: bool) -> PathBuf {
        let p = self.root.join(name);
        fine_tune(&self.base, &p, seed, 0.004, mlp_only);
        p
    }
}

// ---------- correctness ----------

#[test]
fn experts_that_are_all_the_base_give_the_base_logits() {
    let fx = Fx::new();
    let want = logits(&load(&fx.base), &IDS);
    for (mode, k) in [("random", 2), ("hidden", 1), ("uniform", 3)] {
        let out = fx.root.join(format!("mix-{mode}"));
        let b = fx.base.as_path();
        let yaml = format!(
            "base_model: {}\ngate_mode: {mode}\nexperts_per_token: {k}\nexperts:\n{}",
            b.display(),
            yaml_experts(&[(b, &["w3 w4"]), (b, &["w9 w10 w11"]), (b, &["w20"])])
        );
        mix(&yaml, &out).unwrap();
        let got = logits(&load(&out), &IDS);
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{mode}: {d}");
    }
}

#[test]
fn top1_routed_to_expert_e_gives_fine_tune_e() {
    let fx = Fx::new();
    let fts: Vec<PathBuf> = (0..3)
        .map(|e| fx.ft(&format!("ft{e}"), 100 + e, true))
        .collect();
    let out = fx.root.join("mix");
    let yaml = format!(
        "base_model: {}\ngate_mode: random\nexperts_per_token: 1\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&fts[0], &[]), (&fts[1], &[]), (&fts[2], &[])])
    );
    mix(&yaml, &out).unwrap();
    let mixed = load(&out);
    let base_logits = logits(&load(&fx.base), &IDS);
    for (e, ft) in fts.iter().enumerate() {
        // A zero router ties every expert and top-1 takes the lowest index: moving expert e to
        // index 0 forces every token to it.
        let mut m = mixed.clone();
        for layer in &mut m.layers {
            let FeedForward::Moe(moe) = &mut layer.mlp else {
                panic!("layer is not MoE")
            };
            moe.set_gate(moe.gate.zeros_like().unwrap()).unwrap();
            moe.experts.swap(0, e);
        }
        let want = logits(&load(ft), &IDS);
        let d = max_diff(&logits(&m, &IDS), &want);
        assert!(d < 1e-5, "expert {e}: {d}");
        assert!(
            max_diff(&want, &base_logits) > 1e-3,
            "fine-tune {e} equals the base"
        );
    }
}

/// candle-transformers' Mixtral on the same files.
fn candle_mixtral(dir: &Path) -> candle_transformers::models::mixtral::Model {
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    // candle needs a number where transformers writes null (no sliding window).
    cfg["sliding_window"] = serde_json::json!(4096);
    cfg["use_flash_attn"] = serde_json::json!(false);
    let cfg: candle_transformers::models::mixtral::Config = serde_json::from_value(cfg).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &CPU).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &CPU);
    candle_transformers::models::mixtral::Model::new(&cfg, vb).unwrap()
}

#[test]
fn mixture_logits_equal_candle_transformers_mixtral() {
    let fx = Fx::new();
    let fts: Vec<PathBuf> = (0..4)
        .map(|e| fx.ft(&format!("ft{e}"), 200 + e, false))
        .collect();
    for (mode, k) in [("hidden", 2), ("random", 1), ("random", 3)] {
        let out = fx.root.join(format!("mix-{mode}-{k}"));
        let yaml = format!(
            "base_model: {}\ngate_mode: {mode}\nexperts_per_token: {k}\nseed: 3\nexperts:\n{}",
            fx.base.display(),
            yaml_experts(&[
                (&fts[0], &["w3 w4 w5"]),
                (&fts[1], &["w10 w11"]),
                (&fts[2], &["w30 w31 w32 w33"]),
                (&fts[3], &["w50"]),
            ])
        );
        mix(&yaml, &out).unwrap();
        let ours = logits(&load(&out), &IDS);
        let mut theirs = candle_mixtral(&out);
        // candle returns the last position: a 3-token prompt, then one token at a time.
        let prompt = Tensor::new(&IDS[..3], &CPU).unwrap().unsqueeze(0).unwrap();
        let t = theirs.forward(&prompt, 0).unwrap().flatten_all().unwrap();
        let d = max_diff(&ours.i((0, 2)).unwrap(), &t);
        assert!(d < 1e-4, "{mode} top-{k}, prompt: {d}");
        for pos in 3..IDS.len() {
            let input = Tensor::new(&IDS[pos..=pos], &CPU)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let t = theirs.forward(&input, pos).unwrap().flatten_all().unwrap();
            let d = max_diff(&ours.i((0, pos)).unwrap(), &t);
            assert!(d < 1e-4, "{mode} top-{k}, position {pos}: {d}");
        }
        // Also the engine's KV-cached decoding.
        let m = load(&out);
        let mut cache = m.new_cache();
        for (pos, id) in IDS.iter().enumerate() {
            let input = Tensor::new(&[*id], &CPU).unwrap().unsqueeze(0).unwrap();
            let step = m.forward(&input, pos, Some(&mut cache)).unwrap();
            let d = max_diff(&step.i((0, 0)).unwrap(), &ours.i((0, pos)).unwrap());
            assert!(d < 1e-4, "cached step {pos}: {d}");
        }
    }
}

// ---------- a reference forward for hidden states ----------

fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let inv = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps)
        .unwrap()
        .sqrt()
        .unwrap()
        .recip()
        .unwrap();
    x.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap()
}

/// The hidden state entering each layer for one sequence, computed from the checkpoint's
/// tensors with plain candle ops (no engine code): `[layers][seq, hidden]`.
fn reference_layer_inputs(dir: &Path, ids: &[u32]) -> Vec<Tensor> {
    let t = tiny_cfg();
    let w = candle_core::safetensors::load(dir.join("model.safetensors"), &CPU).unwrap();
    let g = |n: &str| w.get(n).unwrap().clone();
    let (h, heads, kvh) = (t.hidden, t.heads, t.kv_heads);
    let hd = h / heads;
    let seq = ids.len();
    let mut x = g("model.embed_tokens.weight")
        .index_select(&Tensor::new(ids, &CPU).unwrap(), 0)
        .unwrap();
    // RoPE tables, theta 10000, half-split pairs (i, i + hd/2).
    let mut cos = vec![0f32; seq * hd];
    let mut sin = vec![0f32; seq * hd];
    for p in 0..seq {
        for i in 0..hd / 2 {
            let a = p as f64 / 10000f64.powf(2.0 * i as f64 / hd as f64);
            for j in [i, i + hd / 2] {
                cos[p * hd + j] = a.cos() as f32;
                sin[p * hd + j] = a.sin() as f32;
            }
        }
    }
    let cos = Tensor::from_vec(cos, (seq, hd), &CPU).unwrap();
    let sin = Tensor::from_vec(sin, (seq, hd), &CPU).unwrap();
    let rot = |v: &Tensor| {
        let a = v.narrow(1, 0, hd / 2).unwrap();
        let b = v.narrow(1, hd / 2, hd / 2).unwrap();
        let r = Tensor::cat(&[&b.neg().unwrap(), &a], 1).unwrap();
        ((v * &cos).unwrap() + (r * &sin).unwrap()).unwrap()
    };
    let mut mask = vec![0f32; seq * seq];
    for i in 0..seq {
        for j in i + 1..seq {
            mask[i * seq + j] = f32::NEG_INFINITY;
        }
    }
    let mask = Tensor::from_vec(mask, (seq, seq), &CPU).unwrap();
    let mut out = Vec::new();
    for l in 0..t.layers {
        out.push(x.clone());
        let p = |n: &str| g(&format!("model.layers.{l}.{n}.weight"));
        let a = rms(&x, &p("input_layernorm"), 1e-6);
        let q = a.matmul(&p("self_attn.q_proj").t().unwrap()).unwrap();
        let k = a.matmul(&p("self_attn.k_proj").t().unwrap()).unwrap();
        let v = a.matmul(&p("self_attn.v_proj").t().unwrap()).unwrap();
        let mut heads_out = Vec::new();
        for hh in 0..heads {
            let kv = hh / (heads / kvh);
            let qh = rot(&q.narrow(1, hh * hd, hd).unwrap());
            let kh = rot(&k.narrow(1, kv * hd, hd).unwrap());
            let vh = v.narrow(1, kv * hd, hd).unwrap();
            let s = ((qh.matmul(&kh.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap() + &mask)
                .unwrap();
            let e = s.exp().unwrap();
            let pr = e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap();
            heads_out.push(pr.matmul(&vh).unwrap());
        }
        let att = Tensor::cat(&heads_out, 1).unwrap();
        x = (x + att.matmul(&p("self_attn.o_proj").t().unwrap()).unwrap()).unwrap();
        let m = rms(&x, &p("post_attention_layernorm"), 1e-6);
        let gate = m.matmul(&p("mlp.gate_proj").t().unwrap()).unwrap();
        let silu = (&gate * candle_nn::ops::sigmoid(&gate).unwrap()).unwrap();
        let up = m.matmul(&p("mlp.up_proj").t().unwrap()).unwrap();
        x = (x
            + (silu * up)
                .unwrap()
                .matmul(&p("mlp.down_proj").t().unwrap())
                .unwrap())
        .unwrap();
    }
    out
}

/// The tiny tokenizer's ids for a prompt, after bos (1), as mergekit feeds prompts.
fn prompt_ids(p: &str) -> Vec<u32> {
    std::iter::once(1)
        .chain(
            p.split_whitespace()
                .map(|w| w.trim_start_matches('w').parse::<u32>().unwrap()),
        )
        .collect()
}

fn mean_state(dir: &Path, prompts: &[&str], average: bool) -> Vec<Vec<f64>> {
    let t = tiny_cfg();
    let mut acc = vec![vec![0f64; t.hidden]; t.layers];
    for p in prompts {
        let ids = prompt_ids(p);
        for (l, s) in reference_layer_inputs(dir, &ids).iter().enumerate() {
            let v = if average {
                s.mean(0).unwrap()
            } else {
                s.get(ids.len() - 1).unwrap()
            };
            for (a, x) in acc[l].iter_mut().zip(v.to_vec1::<f32>().unwrap()) {
                *a += f64::from(x) / prompts.len() as f64;
            }
        }
    }
    acc
}

fn normalised(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
    v.iter().map(|x| x / n).collect()
}

#[test]
fn hidden_router_rows_equal_a_reference_computation() {
    let fx = Fx::new();
    let b = fx.base.display();
    let pos: [&[&str]; 2] = [&["w3 w4 w5", "w6 w7"], &["w20 w21", "w40 w41 w42 w43"]];
    let neg: [&[&str]; 2] = [&["w50 w51"], &[]];
    for mode in ["hidden", "hidden_avg"] {
        let out = fx.root.join(mode);
        let yaml = format!(
            "base_model: {b}\ngate_mode: {mode}\nexperts:\n\
             - source_model: {b}\n  positive_prompts: [\"w3 w4 w5\", \"w6 w7\"]\n  negative_prompts: [\"w50 w51\"]\n\
             - source_model: {b}\n  positive_prompts: [\"w20 w21\", \"w40 w41 w42 w43\"]\n"
        );
        let report = mix(&yaml, &out).unwrap();
        let c = Checkpoint::open(&out).unwrap();
        let average = mode == "hidden_avg";
        for e in 0..2 {
            let mut want = mean_state(&fx.base, pos[e], average);
            if !neg[e].is_empty() {
                let n = mean_state(&fx.base, neg[e], average);
                for (a, b) in want.iter_mut().zip(n) {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x -= y);
                }
            }
            for (l, w) in want.iter().enumerate() {
                let gate = c
                    .read_f32(&format!("model.layers.{l}.block_sparse_moe.gate.weight"))
                    .unwrap();
                let h = tiny_cfg().hidden;
                let row = &gate[e * h..(e + 1) * h];
                for (g, x) in row.iter().zip(normalised(w)) {
                    assert!(
                        (f64::from(*g) - x).abs() < 1e-5,
                        "{mode} e{e} l{l}: {g} vs {x}"
                    );
                }
            }
        }
        // The record names the prompts by digest and the init mode.
        let rec = MixRecord::read(&out).unwrap();
        assert_eq!(rec.experts, report.record.experts);
        assert_eq!(rec.parameters, report.record.parameters);
        assert_eq!(rec.router.init, mode);
        assert_eq!(rec.experts[0].negative_prompts, 1);
        let digest = |p: &[&str]| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(
                serde_json::to_string(p).unwrap().as_bytes(),
            ))
        };
        assert_eq!(rec.experts[1].positive_prompts_sha256, digest(pos[1]));
        assert_eq!(rec.router.check.condition_numbers.len(), 2);
    }
}

#[test]
fn cheap_embed_rows_and_degenerate_warning_and_counts() {
    let fx = Fx::new();
    let b = fx.base.display();
    let shared: Vec<String> = (3..33).map(|i| format!("w{i}")).collect();
    let p0 = format!("{} w40", shared.join(" "));
    let p1 = format!("{} w41", shared.join(" "));
    let out = fx.root.join("cheap");
    let yaml = format!(
        "base_model: {b}\ngate_mode: cheap_embed\nexperts:\n\
         - source_model: {b}\n  positive_prompts: [\"{p0}\"]\n\
         - source_model: {b}\n  positive_prompts: [\"{p1}\"]\n"
    );
    let report = mix(&yaml, &out).unwrap();
    let c = Checkpoint::open(&fx.base).unwrap();
    let emb = c.read_f32("model.embed_tokens.weight").unwrap();
    let h = tiny_cfg().hidden;
    let o = Checkpoint::open(&out).unwrap();
    for (e, p) in [&p0, &p1].iter().enumerate() {
        let mut v = vec![0f64; h];
        for id in prompt_ids(p) {
            for (a, x) in v
                .iter_mut()
                .zip(&emb[id as usize * h..(id as usize + 1) * h])
            {
                *a += f64::from(*x);
            }
        }
        let v = normalised(&v);
        for l in 0..2 {
            let g = o
                .read_f32(&format!("model.layers.{l}.block_sparse_moe.gate.weight"))
                .unwrap();
            for (x, y) in g[e * h..(e + 1) * h].iter().zip(&v) {
                assert!((f64::from(*x) - y).abs() < 1e-5);
            }
        }
    }
    // 31 of 32 tokens shared: the two rows are nearly parallel.
    assert_eq!(report.record.router.check.degenerate_layers, vec![0, 1]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("near-degenerate")),
        "{:?}",
        report.warnings
    );

    // Parameter counts against the written tensors.
    let (mut stem, mut experts, mut router) = (0u64, 0u64, 0u64);
    for n in o.names() {
        let k = o.meta(n).unwrap().numel() as u64;
        if n.contains(".gate.weight") {
            router += k;
        } else if n.contains(".experts.") {
            experts += k;
        } else {
            stem += k;
        }
    }
    let p = report.parameters;
    assert_eq!((p.stem, p.experts, p.router), (stem, experts, router));
    assert_eq!(p.total, stem + experts + router);
    // top-2 of 2 experts: everything is active.
    assert_eq!(p.active, p.total);
    let t = tiny_cfg();
    assert_eq!(experts, 2 * 2 * 3 * (t.hidden * t.intermediate) as u64);
}

// ---------- LoRA-MoE ----------

fn f64_matmul_t(x: &[f64], w: &[f32], rows: usize, inp: usize, out: usize) -> Vec<f64> {
    // x [rows, inp] · wᵀ, w [out, inp]
    let mut y = vec![0f64; rows * out];
    for r in 0..rows {
        for o in 0..out {
            y[r * out + o] = (0..inp)
                .map(|i| x[r * inp + i] * f64::from(w[o * inp + i]))
                .sum();
        }
    }
    y
}

#[test]
fn lora_moe_module_matches_a_plain_f64_loop() {
    let (inp, out, n) = (12, 10, 3);
    let ranks = [2, 4, 3];
    let mut rng = SplitMix64::new(5);
    let mut rand =
        |len: usize| -> Vec<f32> { (0..len).map(|_| (rng.next_normal() * 0.3) as f32).collect() };
    let w = rand(out * inp);
    let router = rand(n * inp);
    let experts: Vec<(Vec<f32>, Vec<f32>, f64)> = ranks
        .iter()
        .enumerate()
        .map(|(e, r)| (rand(r * inp), rand(out * r), 0.5 + e as f64))
        .collect();
    let x = rand(5 * inp);
    let xs: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    for (norm, k) in [
        (GateNorm::Softmax, 1),
        (GateNorm::Softmax, 2),
        (GateNorm::Sigmoid, 3),
    ] {
        let t = |v: &[f32], s: (usize, usize)| Tensor::from_vec(v.to_vec(), s, &CPU).unwrap();
        let moe = LoraMoe::new(
            t(&router, (n, inp)),
            &experts
                .iter()
                .zip(ranks)
                .map(|((a, b, s), r)| (t(a, (r, inp)), t(b, (out, r)), *s))
                .collect::<Vec<_>>(),
            k,
            norm,
        )
        .unwrap();
        let mut lin = LoraLinear::new(t(&w, (out, inp)));
        lin.moe = Some(moe);
        let got = lin
            .forward(&t(&x, (5, inp)))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Reference: y = W x + Σ_{e∈top-k} g_e s_e B_e A_e x.
        let base = f64_matmul_t(&xs, &w, 5, inp, out);
        let logits = f64_matmul_t(&xs, &router, 5, inp, n);
        for row in 0..5 {
            let l = &logits[row * n..(row + 1) * n];
            let g: Vec<f64> = match norm {
                GateNorm::Sigmoid => l.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
                GateNorm::Softmax => {
                    let m = l.iter().copied().fold(f64::MIN, f64::max);
                    let p: Vec<f64> = l.iter().map(|v| (v - m).exp()).collect();
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
                    let keep = &order[..k];
                    let s: f64 = keep.iter().map(|e| p[*e]).sum();
                    (0..n)
                        .map(|e| if keep.contains(&e) { p[e] / s } else { 0.0 })
                        .collect()
                }
            };
            for o in 0..out {
                let mut y = base[row * out + o];
                for (e, (a, b, s)) in experts.iter().enumerate() {
                    let r = ranks[e];
                    let ax: Vec<f64> = (0..r)
                        .map(|j| {
                            (0..inp)
                                .map(|i| f64::from(a[j * inp + i]) * xs[row * inp + i])
                                .sum()
                        })
                        .collect();
                    let bax: f64 = (0..r).map(|j| f64::from(b[o * r + j]) * ax[j]).sum();
                    y += g[e] * s * bax;
                }
                let d = (f64::from(got[row][o]) - y).abs();
                assert!(
                    d < 1e-4,
                    "{norm:?} k{k} [{row},{o}]: {} vs {y}",
                    got[row][o]
                );
            }
        }
    }
}

#[test]
fn lora_moe_with_one_expert_at_weight_one_equals_the_adapter() {
    // Module level: one expert, softmax over one expert gives weight exactly 1.
    let (inp, out, r) = (8, 6, 2);
    let w = Tensor::randn(0f32, 0.3, (out, inp), &CPU).unwrap();
    let a = Tensor::randn(0f32, 0.3, (r, inp), &CPU).unwrap();
    let b = Tensor::randn(0f32, 0.3, (out, r), &CPU).unwrap();
    let router = Tensor::randn(0f32, 1.0, (1, inp), &CPU).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, inp), &CPU).unwrap();
    let mut plain = LoraLinear::new(w.clone());
    plain
        .adapters
        .push(LoraAdapter::new(a.clone(), b.clone(), 2.0));
    let mut routed = LoraLinear::new(w);
    routed.moe = Some(LoraMoe::new(router, &[(a, b, 2.0)], 1, GateNorm::Softmax).unwrap());
    let d = max_diff(&plain.forward(&x).unwrap(), &routed.forward(&x).unwrap());
    assert!(d < 1e-6, "{d}");

    // Model level: a bundle of the same adapter twice (weights sum to 1) equals base + adapter,
    // loaded through `model::load` of the bundle directory too.
    let fx = Fx::new();
    let cfg = model::read_config(&fx.base).unwrap();
    let ad = fx.root.join("lora");
    write_tiny_adapter(
        &ad,
        &cfg,
        4,
        8.0,
        &["q_proj", "v_proj", "down_proj"],
        3,
        false,
    )
    .unwrap();
    let out = fx.root.join("bundle");
    let yaml = format!(
        "base_model: {}\ngate_mode: random\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&ad, &[]), (&ad, &[])])
    );
    let report = mix_adapters(&yaml, &out).unwrap();
    assert_eq!(report.kind, "lora_moe");
    let (mixed, bundle) = load_bundle(&out, &CPU, DType::F32, true).unwrap();
    assert_eq!(bundle.modules.len(), 3 * 2);
    let mut want = load(&fx.base);
    want.add_adapter_dir(&ad).unwrap();
    let d = max_diff(&logits(&mixed, &IDS), &logits(&want, &IDS));
    assert!(d < 1e-5, "{d}");
    let via_load = load(&out);
    let d = max_diff(&logits(&via_load, &IDS), &logits(&want, &IDS));
    assert!(d < 1e-5, "model::load of the bundle: {d}");
    // Generation runs on the mixture.
    let ids = model::generate_ids(
        &mixed,
        &IDS[..3],
        &model::GenerateOptions {
            max_new_tokens: 4,
            eos_token_ids: Some(vec![]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ids.len(), 4);
}

#[test]
fn lora_moe_bundle_of_different_ranks_is_padded_and_records_digests() {
    let fx = Fx::new();
    let cfg = model::read_config(&fx.base).unwrap();
    let (a1, a2) = (fx.root.join("a1"), fx.root.join("a2"));
    write_tiny_adapter(&a1, &cfg, 2, 4.0, &["q_proj", "up_proj"], 1, false).unwrap();
    write_tiny_adapter(&a2, &cfg, 6, 6.0, &["q_proj", "up_proj"], 2, false).unwrap();
    let out = fx.root.join("bundle");
    let yaml = format!(
        "base_model: {}\ngate_mode: hidden\nexperts_per_token: 1\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&a1, &["w3 w4"]), (&a2, &["w30 w31"])])
    );
    let report = mix_adapters(&yaml, &out).unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("zero-padded")),
        "{:?}",
        report.warnings
    );
    let bundle = read_bundle(&out).unwrap();
    assert_eq!(bundle.rank, 6);
    assert_eq!(
        bundle
            .experts
            .iter()
            .map(|e| (e.rank, e.scale))
            .collect::<Vec<_>>(),
        vec![(2, 2.0), (6, 1.0)]
    );
    let sha = |p: &Path| clreg_engine::merge::record::sha256_file(p).unwrap();
    assert_eq!(
        report.record.experts[1].files[1].sha256,
        sha(&a2.join("adapter_model.safetensors"))
    );
    assert!(bundle.base.digest.starts_with("sha256:"));
    assert!(out.join(BUNDLE_JSON).is_file() && out.join(MIX_RECORD).is_file());

    // Each module's output equals the f64-free reference of the routed sum, top-1.
    let (m, _) = load_bundle(&out, &CPU, DType::F32, false).unwrap();
    let module = "model.layers.1.self_attn.q_proj";
    let lin = m.linear(module).unwrap();
    let x = Tensor::randn(0f32, 1.0, (5, cfg.hidden_size), &CPU).unwrap();
    let gates = lin.moe.as_ref().unwrap().gates(&x).unwrap();
    let mut want = lin.base.forward(&x).unwrap();
    for (e, dir) in [&a1, &a2].iter().enumerate() {
        let mut single = load(&fx.base);
        single.add_adapter_dir(dir).unwrap();
        let l = single.linear(module).unwrap();
        let delta = (l.forward(&x).unwrap() - l.base.forward(&x).unwrap()).unwrap();
        let g = gates.narrow(1, e, 1).unwrap();
        want = (want + delta.broadcast_mul(&g).unwrap()).unwrap();
    }
    let d = max_diff(&lin.forward(&x).unwrap(), &want);
    assert!(d < 1e-5, "{d}");
    // top-1: each row has exactly one weight of 1.
    for row in gates.to_vec2::<f32>().unwrap() {
        assert_eq!(row.iter().filter(|v| **v == 1.0).count(), 1, "{row:?}");
    }

    // A base that is not the recorded one is refused when verifying.
    let other = fx.root.join("other");
    write_base(&other, &tiny_cfg(), 99);
    let moved = fx.root.join("bundle2");
    std::fs::create_dir_all(&moved).unwrap();
    for f in [BUNDLE_JSON, "clreg_moe.safetensors"] {
        let text = std::fs::read(out.join(f)).unwrap();
        let text = if f == BUNDLE_JSON {
            String::from_utf8(text)
                .unwrap()
                .replace(&fx.base.display().to_string(), &other.display().to_string())
                .into_bytes()
        } else {
            text
        };
        std::fs::write(moved.join(f), text).unwrap();
    }
    let e = load_bundle(&moved, &CPU, DType::F32, true).unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert!(e.to_string().contains("built on"), "{e}");
}

#[test]
fn svd_decomposition_at_full_rank_reproduces_the_delta() {
    let mut rng = SplitMix64::new(11);
    for (out, inp) in [(6, 9), (9, 6), (7, 7)] {
        let delta: Vec<f32> = (0..out * inp).map(|_| rng.next_normal() as f32).collect();
        let full = out.min(inp);
        let (a, b) = decompose_delta(&delta, out, inp, full);
        assert_eq!((a.len(), b.len()), (full * inp, out * full));
        for o in 0..out {
            for i in 0..inp {
                let ba: f64 = (0..full)
                    .map(|k| f64::from(b[o * full + k]) * f64::from(a[k * inp + i]))
                    .sum();
                let d = (ba - f64::from(delta[o * inp + i])).abs();
                assert!(d < 1e-5, "({out},{inp}) [{o},{i}]: {d}");
            }
        }
        // Rank 1 keeps the largest singular direction: its error is below the delta's norm.
        let (a1, b1) = decompose_delta(&delta, out, inp, 1);
        let (mut err, mut norm) = (0f64, 0f64);
        for o in 0..out {
            for i in 0..inp {
                let x = f64::from(delta[o * inp + i]);
                err += (x - f64::from(b1[o]) * f64::from(a1[i])).powi(2);
                norm += x * x;
            }
        }
        assert!(err < norm * 0.95, "{err} vs {norm}");
    }

    // A full fine-tune as a LoRA expert: at full rank the bundle reproduces the fine-tune.
    let fx = Fx::new();
    let ft = fx.ft("ft", 5, true);
    let out = fx.root.join("dec");
    let t = tiny_cfg();
    let yaml = format!(
        "base_model: {}\ngate_mode: random\nrank: {}\nlora_targets: [gate_proj, up_proj, down_proj]\nexperts:\n{}",
        fx.base.display(),
        t.hidden.min(t.intermediate),
        yaml_experts(&[(&ft, &[]), (&ft, &[])])
    );
    mix_adapters(&yaml, &out).unwrap();
    let (m, _) = load_bundle(&out, &CPU, DType::F32, false).unwrap();
    let d = max_diff(&logits(&m, &IDS), &logits(&load(&ft), &IDS));
    assert!(d < 1e-4, "{d}");
}

// ---------- router training ----------

/// Replaces the fixture's base by one with a large output layer, so that predictions are
/// peaked and experts differ.
fn peak_base(fx: &mut Fx) {
    let peaked = fx.root.join("peaked");
    std::fs::create_dir_all(&peaked).unwrap();
    let c = Checkpoint::open(&fx.base).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = c
        .names()
        .iter()
        .map(|n| {
            let mut v = c.read_f32(n).unwrap();
            if n == "lm_head.weight" {
                v.iter_mut().for_each(|x| *x *= 20.0);
            }
            (n.clone(), c.meta(n).unwrap().shape.clone(), v)
        })
        .collect();
    write_st(&peaked.join("model.safetensors"), &tensors);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fx.base.join(f), peaked.join(f)).unwrap();
    }
    fx.base = peaked;
}

/// Six sequences sampled from each model after a task token of its own, so that the expert
/// that wrote a sequence predicts it best: the token ids, and each as its words.
fn sample_tasks(models: &[Llama]) -> (Vec<Vec<u32>>, Vec<Vec<String>>) {
    let (mut data, mut words) = (Vec::new(), Vec::new());
    for (e, m) in models.iter().enumerate() {
        for s in 0..6u64 {
            let start = [1u32, 10 + 20 * e as u32];
            let opts = model::GenerateOptions {
                max_new_tokens: 14,
                temperature: 1.0,
                seed: s + 10 * e as u64,
                eos_token_ids: Some(vec![]),
                ..Default::default()
            };
            let sampled = model::generate_ids(m, &start, &opts).unwrap();
            let ids: Vec<u32> = start.iter().chain(&sampled).copied().collect();
            words.push(
                ids[1..]
                    .iter()
                    .map(|i| clreg_engine::tiny::tiny_word(*i as usize))
                    .collect(),
            );
            data.push(ids);
        }
    }
    (data, words)
}

#[test]
fn router_training_lowers_the_loss_where_each_expert_is_best_at_its_task() {
    let mut fx = Fx::new();
    peak_base(&mut fx);
    // Top-2 of two experts: with top-1 the renormalised weight is always 1 and only the
    // auxiliary loss would reach the router.
    // Two experts far apart; each task's text is sampled from its own expert, after a task
    // token, so the expert that wrote it predicts it best.
    let fts = [fx.root.join("e0"), fx.root.join("e1")];
    for (e, p) in fts.iter().enumerate() {
        fine_tune(&fx.base, p, 300 + e as u64, 0.3, true);
    }
    let (data, words) = sample_tasks(&[load(&fts[0]), load(&fts[1])]);
    let lines: Vec<String> = words
        .iter()
        .map(|w| serde_json::json!({"text": w.join(" ")}).to_string())
        .collect();
    let calib = fx.root.join("calib.jsonl");
    std::fs::write(&calib, lines.join("\n")).unwrap();
    let yaml = format!(
        "base_model: {}\ngate_mode: random\nseed: 4\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&fts[0], &[]), (&fts[1], &[])])
    );
    let untrained = fx.root.join("untrained");
    mix(&yaml, &untrained).unwrap();
    let before = train::mean_loss(&load(&untrained), &data).unwrap();

    let trained = fx.root.join("trained");
    let mut opts = RouterTraining::new(&calib);
    opts.steps = 60;
    opts.learning_rate = 0.05;
    let steps = std::cell::Cell::new(0);
    let report = mix_mixtral(
        &MoeRecipe::from_yaml(&yaml).unwrap(),
        &trained,
        Some(&opts),
        &no_progress,
        &|p: train::TrainProgress| {
            assert!(p.loss.is_finite() && p.tokens_per_s > 0.0);
            if p.step.is_multiple_of(10) {
                eprintln!("step {} loss {:.4} aux {:.4}", p.step, p.loss, p.aux_loss);
            }
            steps.set(p.step);
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(steps.get(), 60);
    let after = train::mean_loss(&load(&trained), &data).unwrap();
    eprintln!("routing loss before {before:.4}, after {after:.4}");
    assert!(after < before - 0.05, "before {before}, after {after}");
    let rec = report.record.training.unwrap();
    assert_eq!((rec.steps, rec.sequences), (60, 12));
    assert_eq!(rec.aux_loss_coef, 0.01);
    // Only the routers changed.
    let (u, t) = (
        Checkpoint::open(&untrained).unwrap(),
        Checkpoint::open(&trained).unwrap(),
    );
    for n in u.names() {
        let same = u.read_f32(n).unwrap() == t.read_f32(n).unwrap();
        assert_eq!(same, !n.ends_with("gate.weight"), "{n}");
    }
}

#[test]
fn lora_moe_router_training_lowers_the_loss_and_changes_only_the_routers() {
    let mut fx = Fx::new();
    peak_base(&mut fx);
    let cfg = model::read_config(&fx.base).unwrap();
    let ads = [fx.root.join("a0"), fx.root.join("a1")];
    let targets = ["q_proj", "v_proj", "up_proj", "down_proj"];
    // Strong adapters (scale 100), so that which expert reads a token matters.
    for (e, p) in ads.iter().enumerate() {
        write_tiny_adapter(p, &cfg, 4, 400.0, &targets, 40 + e as u64, false).unwrap();
    }
    let with_adapter = |ad: &Path| {
        let mut m = load(&fx.base);
        m.add_adapter_dir(ad).unwrap();
        m
    };
    let (data, words) = sample_tasks(&[with_adapter(&ads[0]), with_adapter(&ads[1])]);
    // The calibration set as a TRACE file (what a mix job carries): the first word is the
    // prompt, the rest the answer; joined as calibration joins them, the same text.
    let trace: Vec<serde_json::Value> = words
        .iter()
        .map(|w| serde_json::json!({"prompt": w[0], "answer": w[1..].join(" ")}))
        .collect();
    let calib = fx.root.join("calib.json");
    std::fs::write(&calib, serde_json::to_string(&trace).unwrap()).unwrap();
    let yaml = format!(
        "base_model: {}\ngate_mode: random\nseed: 4\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&ads[0], &[]), (&ads[1], &[])])
    );
    let recipe = MoeRecipe::from_yaml(&yaml).unwrap();
    let untrained = fx.root.join("untrained");
    mix_adapters(&yaml, &untrained).unwrap();
    let bundle_loss = |dir: &Path| {
        let (m, _) = load_bundle(dir, &CPU, DType::F32, true).unwrap();
        train::mean_loss(&m, &data).unwrap()
    };
    let before = bundle_loss(&untrained);

    let trained = fx.root.join("trained");
    let mut opts = RouterTraining::new(&calib);
    opts.steps = 60;
    opts.learning_rate = 0.2;
    let steps = std::cell::Cell::new(0);
    let report = mix_lora(
        &recipe,
        &trained,
        Some(&opts),
        &no_progress,
        &|p: train::TrainProgress| {
            assert!(p.loss.is_finite() && p.aux_loss.is_finite());
            steps.set(p.step);
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(steps.get(), 60);
    let after = bundle_loss(&trained);
    // (Here: 4.24 before, 3.75 after; each adapter alone on its own task's text: 2.88.)
    eprintln!("LoRA-MoE routing loss before {before:.4}, after {after:.4}");
    assert!(after < before - 0.2, "before {before}, after {after}");
    let rec = report.record.training.clone().unwrap();
    assert_eq!((rec.steps, rec.sequences), (60, 12));
    assert_eq!(
        rec.data_sha256,
        clreg_engine::merge::record::sha256_file(&calib).unwrap()
    );
    // Only the routers changed, every one of them: 4 modules × 2 layers.
    let weights = |dir: &Path| {
        candle_core::safetensors::load(dir.join("clreg_moe.safetensors"), &CPU).unwrap()
    };
    let (u, t) = (weights(&untrained), weights(&trained));
    assert_eq!(u.len(), t.len());
    let mut routers = 0;
    for (k, a) in &u {
        let same = max_diff(a, &t[k]) == 0.0;
        let router = k.ends_with(".router.weight");
        routers += usize::from(router);
        assert_eq!(same, !router, "{k}");
    }
    assert_eq!(routers, 8);
    // The record's lineage names the calibration set on the base's edge.
    let prov = clreg_engine::provenance::read(&trained).unwrap().unwrap();
    assert_eq!(prov.inputs[0].datasets, vec![rec.data_sha256.clone()]);
    assert_eq!(prov.inputs[0].params["router_training"]["steps"], 60);
}

#[test]
fn load_balancing_loss_matches_its_definition() {
    // Two layers' logits, 3 tokens, 3 experts, top-1.
    let l1 = Tensor::new(&[[2f32, 0., 0.], [0., 1., 0.], [3., 0., 1.]], &CPU).unwrap();
    let l2 = Tensor::new(&[[0f32, 0., 5.], [1., 0., 0.], [0., 2., 0.]], &CPU).unwrap();
    let got = train::load_balancing_loss(&[l1.clone(), l2.clone()], 1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rows: Vec<Vec<f64>> = [l1, l2]
        .iter()
        .flat_map(|t| t.to_vec2::<f32>().unwrap())
        .map(|r| {
            let e: Vec<f64> = r.iter().map(|v| f64::from(*v).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect();
    let mut f = [0f64; 3];
    let mut p = [0f64; 3];
    for r in &rows {
        let best = (0..3).max_by(|a, b| r[*a].total_cmp(&r[*b])).unwrap();
        f[best] += 1.0 / 6.0;
        for e in 0..3 {
            p[e] += r[e] / 6.0;
        }
    }
    let want: f64 = 3.0 * (0..3).map(|e| f[e] * p[e]).sum::<f64>();
    assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
}

// ---------- bad input ----------

fn assert_refused(yaml: &str, out: &Path, code: &str, needle: &str) {
    let e = mix(yaml, out).unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
    assert!(!out.exists(), "output left behind");
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn bad_inputs_are_refused_and_leave_nothing() {
    let fx = Fx::new();
    let b = fx.base.display();
    let ft = fx.ft("ft", 1, false);
    let out = fx.root.join("out");
    let two = |other: &Path| {
        format!(
            "base_model: {b}\ngate_mode: random\nexperts:\n{}",
            yaml_experts(&[(&ft, &[]), (other, &[])])
        )
    };
    // Different hidden size.
    let small = fx.root.join("small");
    write_base(
        &small,
        &TinyConfig {
            hidden: 16,
            ..tiny_cfg()
        },
        7,
    );
    assert_refused(&two(&small), &out, "incompatible_expert", "hidden_size");
    // Different architecture.
    let mistral = fx.root.join("mistral");
    fine_tune(&fx.base, &mistral, 2, 0.01, false);
    let cfg = std::fs::read_to_string(mistral.join("config.json")).unwrap();
    std::fs::write(
        mistral.join("config.json"),
        cfg.replace("LlamaForCausalLM", "MistralForCausalLM"),
    )
    .unwrap();
    assert_refused(&two(&mistral), &out, "incompatible_expert", "architectures");
    // An expert fine-tuned from another base (same shapes, other weights).
    let foreign = fx.root.join("foreign");
    write_base(&foreign, &tiny_cfg(), 12345);
    assert_refused(
        &two(&foreign),
        &out,
        "incompatible_expert",
        "not fine-tuned from",
    );
    // Fewer than two experts.
    let one = format!(
        "base_model: {b}\ngate_mode: random\nexperts:\n{}",
        yaml_experts(&[(&ft, &[])])
    );
    assert_refused(&one, &out, "invalid_recipe", "at least two");
    // top-k larger than the number of experts.
    let k3 = format!("{}experts_per_token: 3\n", two(&ft));
    assert_refused(&k3, &out, "invalid_recipe", "experts_per_token 3");
    // Missing prompts for hidden.
    let hidden = format!(
        "base_model: {b}\ngate_mode: hidden\nexperts:\n{}",
        yaml_experts(&[(&ft, &["w3"]), (&fx.base, &[])])
    );
    assert_refused(&hidden, &out, "invalid_recipe", "no positive_prompts");
    // Identical prompt sets.
    let same = format!(
        "base_model: {b}\ngate_mode: hidden\nexperts:\n{}",
        yaml_experts(&[(&ft, &["w3 w4"]), (&fx.base, &["w3 w4"])])
    );
    assert_refused(&same, &out, "invalid_recipe", "same prompts");
    // Unknown keys and gate modes.
    assert_refused(
        &format!("{}noise: 0.1\n", two(&ft)),
        &out,
        "invalid_recipe",
        "noise",
    );
    assert_refused(
        &two(&ft).replace("gate_mode: random", "gate_mode: psychic"),
        &out,
        "invalid_recipe",
        "psychic",
    );
    // An adapter in a full-weight mixture.
    let cfg = model::read_config(&fx.base).unwrap();
    let ad = fx.root.join("ad");
    write_tiny_adapter(&ad, &cfg, 2, 4.0, &["q_proj"], 1, false).unwrap();
    assert_refused(&two(&ad), &out, "incompatible_expert", "--lora");

    // LoRA-MoE: adapters with different targets are refused.
    let ad2 = fx.root.join("ad2");
    write_tiny_adapter(&ad2, &cfg, 2, 4.0, &["v_proj"], 1, false).unwrap();
    let yaml = format!(
        "base_model: {b}\ngate_mode: random\nexperts:\n{}",
        yaml_experts(&[(&ad, &[]), (&ad2, &[])])
    );
    let e = mix_adapters(&yaml, &out).unwrap_err();
    assert_eq!(e.code(), "incompatible_expert");
    assert!(e.to_string().contains("same modules"), "{e}");
    assert!(!out.exists());
    // A full checkpoint without `rank` cannot become a LoRA expert.
    let yaml = format!(
        "base_model: {b}\ngate_mode: random\nexperts:\n{}",
        yaml_experts(&[(&ad, &[]), (&ft, &[])])
    );
    let e = mix_adapters(&yaml, &out).unwrap_err();
    assert!(e.to_string().contains("set `rank`"), "{e}");

    // Cancelled: nothing left.
    let recipe = MoeRecipe::from_yaml(&two(&ft)).unwrap();
    let e = mix_mixtral(
        &recipe,
        &out,
        None,
        &no_progress,
        &no_train_progress,
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert_eq!(e.code(), "cancelled");
    assert!(!out.exists());
}

#[test]
fn mixture_config_is_a_mixtral_config() {
    let fx = Fx::new();
    let ft = fx.ft("ft", 1, false);
    let out = fx.root.join("out");
    let yaml = format!(
        "base_model: {}\ngate_mode: random\ndtype: bfloat16\nexperts:\n{}",
        fx.base.display(),
        yaml_experts(&[(&ft, &[]), (&fx.base, &[])])
    );
    mix(&yaml, &out).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["MixtralForCausalLM"])
    );
    assert_eq!(cfg["model_type"], "mixtral");
    assert_eq!(cfg["num_local_experts"], 2);
    assert_eq!(cfg["num_experts_per_tok"], 2);
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    assert!(out.join("tokenizer.json").is_file());
    let c = Checkpoint::open(&out).unwrap();
    let parsed = c.llama_config().unwrap().unwrap();
    let want: HashMap<String, Vec<u64>> = parsed.expected_shapes().into_iter().collect();
    let got: HashMap<String, Vec<u64>> = c
        .names()
        .iter()
        .map(|n| {
            let m = c.meta(n).unwrap();
            assert_eq!(m.dtype, "BF16");
            (n.clone(), m.shape.iter().map(|d| *d as u64).collect())
        })
        .collect();
    assert_eq!(got, want);
}
