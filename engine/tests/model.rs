//! The Llama model, LoRA hooks, generation and GGUF import, checked against numbers: candle-
//! transformers' reference Llama, hand-merged weights, and GGUF blocks decoded by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, DType, Device, IndexOp, Module, Tensor, Var};
use clreg_engine::config::LlamaConfig;
use clreg_engine::gguf;
use clreg_engine::model::{
    self, GenerateOptions, Llama, LoraAdapter, LoraLinear, ModelError, OpsMode,
};
use clreg_engine::tiny::{
    TinyConfig, tiny_llama_config, write_tiny_adapter, write_tiny_llama, write_tiny_tokenizer,
};

const CPU: Device = Device::Cpu;

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

fn ids(batch: usize, seq: usize, vocab: usize, seed: u32) -> Tensor {
    let v: Vec<u32> = (0..batch * seq)
        .map(|i| (i as u32 * 7919 + seed * 104_729 + 13) % vocab as u32)
        .collect();
    Tensor::from_vec(v, (batch, seq), &CPU).unwrap()
}

fn tiny(dir: &Path, t: &TinyConfig, seed: u64) -> (Llama, LlamaConfig) {
    write_tiny_llama(dir, t, seed, None).unwrap();
    model::load(dir, &CPU, DType::F32).unwrap()
}

fn reference_logits(dir: &Path, cfg: &LlamaConfig, ids: &Tensor) -> Tensor {
    use candle_transformers::models::llama as reference;
    let config = reference::Config {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        vocab_size: cfg.vocab_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        num_key_value_heads: cfg.kv_heads(),
        use_flash_attn: false,
        rms_norm_eps: cfg.rms_norm_eps,
        rope_theta: cfg.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: cfg.max_position_embeddings,
        tie_word_embeddings: cfg.tie_word_embeddings,
    };
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &CPU).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &CPU);
    let llama = reference::Llama::load(vb, &config).unwrap();
    let mut cache = reference::Cache::new(false, DType::F32, &config, &CPU).unwrap();
    llama.forward(ids, 0, &mut cache).unwrap()
}

#[test]
fn logits_match_candle_transformers_llama() {
    let configs = [
        // Grouped-query attention (4 heads, 2 kv heads), untied.
        TinyConfig::default(),
        // Multi-head attention, tied embeddings.
        TinyConfig {
            kv_heads: 4,
            tie: true,
            ..TinyConfig::default()
        },
        // 8 heads sharing 2 kv heads, tied, 3 layers.
        TinyConfig {
            heads: 8,
            kv_heads: 2,
            layers: 3,
            tie: true,
            ..TinyConfig::default()
        },
    ];
    for (i, t) in configs.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut model, cfg) = tiny(tmp.path(), t, 11 + i as u64);
        let input = ids(2, 9, t.vocab, i as u32);
        let want = reference_logits(tmp.path(), &cfg, &input);
        for mode in [OpsMode::Differentiable, OpsMode::Fast] {
            model.set_ops_mode(mode);
            let ours = model.forward(&input, 0, None).unwrap();
            assert_eq!(ours.dims(), [2, 9, t.vocab]);
            let last = Llama::last_logits(&ours).unwrap();
            let d = max_diff(&last, &want);
            // Logits are O(0.1) here; a mismatch in RoPE, GQA or norms would be O(1e-2).
            let spread = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            eprintln!("config {i} {mode:?}: max |ours - reference| = {d:e} (|logit| ≤ {spread})");
            assert!(d < 1e-5, "config {i} {mode:?}: {d}");
            assert!(spread > 1e-3);
        }
    }
}

#[test]
fn fast_and_differentiable_paths_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let (model, _) = tiny(tmp.path(), &t, 5);
    let input = ids(2, 12, t.vocab, 3);
    let a = model
        .forward_with(&input, 0, None, OpsMode::Differentiable)
        .unwrap();
    let b = model.forward_with(&input, 0, None, OpsMode::Fast).unwrap();
    let d = max_diff(&a, &b);
    eprintln!("fast vs differentiable, all positions: {d:e}");
    assert!(d < 1e-5, "{d}");
}

#[test]
fn kv_cache_matches_full_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let (model, _) = tiny(tmp.path(), &t, 6);
    let input = ids(1, 10, t.vocab, 4);
    for mode in [OpsMode::Differentiable, OpsMode::Fast] {
        let full = model.forward_with(&input, 0, None, mode).unwrap();
        let mut cache = model.new_cache();
        // A 4-token prefill, then one token at a time.
        let pre = model
            .forward_with(&input.narrow(1, 0, 4).unwrap(), 0, Some(&mut cache), mode)
            .unwrap();
        let mut worst = max_diff(&pre, &full.narrow(1, 0, 4).unwrap());
        for pos in 4..10 {
            let step = model
                .forward_with(
                    &input.narrow(1, pos, 1).unwrap(),
                    pos,
                    Some(&mut cache),
                    mode,
                )
                .unwrap();
            worst = worst.max(max_diff(&step, &full.narrow(1, pos, 1).unwrap()));
        }
        eprintln!("{mode:?}: KV-cache vs full forward, every position: {worst:e}");
        assert!(worst < 1e-5, "{mode:?}: {worst}");
        assert_eq!(cache.len(), 10);
        // An offset that disagrees with the cache is refused, not silently wrong.
        let e = model
            .forward_with(&input.narrow(1, 0, 1).unwrap(), 3, Some(&mut cache), mode)
            .unwrap_err();
        assert_eq!(e.code(), "invalid_option");
    }
}

/// Loads every tensor of a checkpoint's `model.safetensors` as f64 rows.
fn read_f64(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &CPU)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let dims = t.dims().to_vec();
            let v = t
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (k, (dims, v))
        })
        .collect()
}

/// W ← W + s·B·A for every module of the adapter in `adapter_dir`, in plain f64 loops.
fn merge_by_hand(
    weights: &mut HashMap<String, (Vec<usize>, Vec<f64>)>,
    adapter_dir: &Path,
    scale: f64,
) {
    let adapter = read_f64_file(&adapter_dir.join("adapter_model.safetensors"));
    for (name, (a_dims, a)) in &adapter {
        let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let (_, b) = &adapter[&format!("base_model.model.{module}.lora_B.weight")];
        let (w_dims, w) = weights.get_mut(&format!("{module}.weight")).unwrap();
        let (r, inp) = (a_dims[0], a_dims[1]);
        let out = w_dims[0];
        assert_eq!(w_dims[1], inp);
        for o in 0..out {
            for i in 0..inp {
                let delta: f64 = (0..r).map(|k| b[o * r + k] * a[k * inp + i]).sum();
                w[o * inp + i] += scale * delta;
            }
        }
    }
}

fn read_f64_file(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    candle_core::safetensors::load(path, &CPU)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let dims = t.dims().to_vec();
            let v = t
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (k, (dims, v))
        })
        .collect()
}

/// Writes `weights` (rounded to f32) as a checkpoint next to the base's config.json.
fn write_checkpoint(base: &Path, out: &Path, weights: &HashMap<String, (Vec<usize>, Vec<f64>)>) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(base.join("config.json"), out.join("config.json")).unwrap();
    let tensors: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, (dims, v))| {
            let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
            (
                k.clone(),
                Tensor::from_vec(v, dims.as_slice(), &CPU).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
}

#[test]
fn lora_zero_b_is_identity_and_merged_equals_unmerged() {
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = tmp.path().join("base");
    let t = TinyConfig::default();
    let (base, cfg) = tiny(&base_dir, &t, 21);
    let input = ids(2, 8, t.vocab, 9);
    let base_logits = base.forward(&input, 0, None).unwrap();
    let all = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];

    // B = 0: the adapter changes nothing.
    let zero = tmp.path().join("zero");
    write_tiny_adapter(&zero, &cfg, 4, 8.0, &all, 1, true).unwrap();
    let mut m = base.clone();
    assert_eq!(m.add_adapter_dir(&zero).unwrap(), 7 * t.layers);
    let d = max_diff(&m.forward(&input, 0, None).unwrap(), &base_logits);
    eprintln!("zero-B adapter vs base: {d:e}");
    assert_eq!(d, 0.0);

    // A non-zero adapter (r = 4, alpha = 64: s = 16) changes the logits …
    let (r, alpha) = (4usize, 64.0);
    let scale = alpha / r as f64;
    let a1 = tmp.path().join("a1");
    write_tiny_adapter(&a1, &cfg, r, alpha, &all, 2, false).unwrap();
    let mut m1 = base.clone();
    m1.add_adapter_dir(&a1).unwrap();
    let lora1 = m1.forward(&input, 0, None).unwrap();
    let changed = max_diff(&lora1, &base_logits);

    // … exactly as merging W + s·B·A into the weights does.
    let mut merged = read_f64(&base_dir);
    merge_by_hand(&mut merged, &a1, scale);
    let merged_dir = tmp.path().join("merged1");
    write_checkpoint(&base_dir, &merged_dir, &merged);
    let (mm, _) = model::load(&merged_dir, &CPU, DType::F32).unwrap();
    let d_merged = max_diff(&mm.forward(&input, 0, None).unwrap(), &lora1);
    eprintln!("adapter changes logits by {changed:e}; merged vs unmerged: {d_merged:e}");
    assert!(changed > 1e-3, "{changed}");
    assert!(d_merged < 1e-5 && d_merged < changed / 100.0, "{d_merged}");

    // Two stacked adapters (different targets and seeds) = both merged.
    let a2 = tmp.path().join("a2");
    write_tiny_adapter(&a2, &cfg, 2, 32.0, &["q_proj", "down_proj"], 3, false).unwrap();
    let mut m12 = m1.clone();
    m12.add_adapter_dir(&a2).unwrap();
    let stacked = m12.forward(&input, 0, None).unwrap();
    merge_by_hand(&mut merged, &a2, 16.0);
    let merged_dir2 = tmp.path().join("merged12");
    write_checkpoint(&base_dir, &merged_dir2, &merged);
    let (mm2, _) = model::load(&merged_dir2, &CPU, DType::F32).unwrap();
    let d_stacked = max_diff(&mm2.forward(&input, 0, None).unwrap(), &stacked);
    let changed2 = max_diff(&stacked, &lora1);
    eprintln!(
        "second adapter changes logits by {changed2:e}; stacked vs both merged: {d_stacked:e}"
    );
    assert!(changed2 > 1e-3);
    assert!(d_stacked < 1e-5, "{d_stacked}");

    // At one module, stacked output = base + each adapter's own effect.
    let q = "model.layers.0.self_attn.q_proj";
    let lin = m12.linear(q).unwrap();
    assert_eq!(lin.adapters.len(), 2);
    let x = Tensor::randn(0f32, 1.0, (3, t.hidden), &CPU).unwrap();
    let y_base = lin.base.forward(&x).unwrap();
    let mut sum = y_base.clone();
    for adapter in &lin.adapters {
        let single = LoraLinear {
            base: lin.base.clone(),
            adapters: vec![adapter.clone()],
            moe: None,
        };
        sum = (sum + (single.forward(&x).unwrap() - &y_base).unwrap()).unwrap();
    }
    let d_mod = max_diff(&lin.forward(&x).unwrap(), &sum);
    eprintln!("module-level stacked vs sum of effects: {d_mod:e}");
    assert!(d_mod < 1e-6);
}

#[test]
fn adapter_errors_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let (base, _) = tiny(&tmp.path().join("base"), &t, 1);
    // An adapter for a wider model does not fit.
    let wide = tiny_llama_config(&TinyConfig {
        hidden: 32,
        heads: 2,
        kv_heads: 2,
        ..TinyConfig::default()
    });
    let a = tmp.path().join("a");
    write_tiny_adapter(&a, &wide, 4, 8.0, &["q_proj"], 1, false).unwrap();
    let mut m = base.clone();
    let e = m.add_adapter_dir(&a).unwrap_err();
    assert_eq!(e.code(), "invalid_adapter");
    assert!(e.to_string().contains("self_attn.q_proj"), "{e}");
    // Nothing was applied.
    assert!(
        m.linear("model.layers.1.self_attn.q_proj")
            .unwrap()
            .adapters
            .is_empty()
    );
}

fn cross_entropy(model: &Llama, input: &Tensor) -> Tensor {
    let logits = model.forward(input, 0, None).unwrap();
    let (b, s, v) = logits.dims3().unwrap();
    let pred = logits
        .narrow(1, 0, s - 1)
        .unwrap()
        .reshape((b * (s - 1), v))
        .unwrap();
    let target = input.narrow(1, 1, s - 1).unwrap().flatten_all().unwrap();
    candle_nn::loss::cross_entropy(&pred, &target).unwrap()
}

#[test]
fn gradients_reach_var_backed_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let (mut model, _) = tiny(tmp.path(), &t, 31);
    let input = ids(2, 8, t.vocab, 2);

    // Non-zero A and B on layer 0's q_proj (the path that crosses RoPE, softmax and two
    // RMSNorms) and on layer 1's down_proj.
    let mut vars = Vec::new();
    for (module, out, inp) in [
        ("model.layers.0.self_attn.q_proj", t.hidden, t.hidden),
        ("model.layers.1.mlp.down_proj", t.hidden, t.intermediate),
    ] {
        let a = Var::from_tensor(&(Tensor::randn(0f32, 0.5, (4, inp), &CPU).unwrap())).unwrap();
        let b = Var::from_tensor(&(Tensor::randn(0f32, 0.5, (out, 4), &CPU).unwrap())).unwrap();
        model
            .add_adapter(module, LoraAdapter::from_vars(a.clone(), b.clone(), 2.0))
            .unwrap();
        vars.push((module, a, b));
    }
    let loss = cross_entropy(&model, &input);
    let grads = loss.backward().unwrap();
    let mut all = Vec::new();
    for (module, a, b) in &vars {
        for (which, v) in [("A", a), ("B", b)] {
            let g = grads.get(v.as_tensor()).expect("a gradient");
            let norm = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
            let norm = norm.to_scalar::<f32>().unwrap();
            eprintln!("{module} {which}: |grad| = {norm:e}");
            assert!(norm > 1e-6, "{module} {which}: {norm}");
            all.push((v.clone(), g.clone()));
        }
    }

    // The gradient is the true one: the directional derivative along it, by central
    // differences, equals its norm.
    let norm2: f32 = all
        .iter()
        .map(|(_, g)| {
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum();
    let norm = norm2.sqrt();
    let h = 1e-2f64;
    let originals: Vec<Tensor> = all
        .iter()
        .map(|(v, _)| v.as_tensor().copy().unwrap())
        .collect();
    let at = |sign: f64| {
        for ((v, g), orig) in all.iter().zip(&originals) {
            let step = (g * (sign * h / f64::from(norm))).unwrap();
            v.set(&(orig + step).unwrap()).unwrap();
        }
        f64::from(cross_entropy(&model, &input).to_scalar::<f32>().unwrap())
    };
    let numeric = (at(1.0) - at(-1.0)) / (2.0 * h);
    let rel = (numeric - f64::from(norm)).abs() / f64::from(norm);
    eprintln!(
        "directional derivative: autograd {norm:e}, finite differences {numeric:e} (rel {rel:e})"
    );
    assert!(rel < 2e-2, "{rel}");

    // Fresh trainable adapters start as the identity (B = 0), and B gets a gradient.
    let (mut fresh, _) = model::load(tmp.path(), &CPU, DType::F32).unwrap();
    let before = fresh.forward(&input, 0, None).unwrap();
    let vs = fresh
        .add_trainable_adapters(&["q_proj", "v_proj", "down_proj"], 4, 2.0, 7)
        .unwrap();
    assert_eq!(vs.len(), 3 * t.layers);
    assert_eq!(
        max_diff(&fresh.forward(&input, 0, None).unwrap(), &before),
        0.0
    );
    let grads = cross_entropy(&fresh, &input).backward().unwrap();
    for (module, _, b) in &vs {
        let g = grads.get(b.as_tensor()).expect("a gradient for B");
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0, "{module}");
    }
}

#[test]
fn generation_greedy_sampled_and_eos() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let (model, _) = tiny(tmp.path(), &t, 41);
    write_tiny_tokenizer(tmp.path(), &t).unwrap();
    let tok = model::load_tokenizer(&tmp.path().join("tokenizer.json")).unwrap();
    let prompt = "w10 w20 w30";
    let enc = tok.encode(prompt, true).unwrap();
    assert_eq!(enc.get_ids(), [10, 20, 30]);

    // Greedy with the cache = argmax of full forwards, token by token.
    let opts = GenerateOptions {
        max_new_tokens: 6,
        eos_token_ids: Some(vec![]),
        ..GenerateOptions::default()
    };
    let got = model::generate_ids(&model, &[10, 20, 30], &opts).unwrap();
    let mut seq = vec![10u32, 20, 30];
    for _ in 0..6 {
        let input = Tensor::new(seq.as_slice(), &CPU)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward(&input, 0, None).unwrap();
        let next = logits
            .i((0, seq.len() - 1))
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        seq.push(next);
    }
    assert_eq!(got, seq[3..]);
    let text = model::generate(&model, &tok, prompt, opts.clone()).unwrap();
    let want: Vec<String> = got
        .iter()
        .map(|i| clreg_engine::tiny::tiny_word(*i as usize))
        .collect();
    assert_eq!(text, want.join(" "));

    // Stopping at eos: the first greedy token as eos ends generation after it.
    let stop = GenerateOptions {
        eos_token_ids: Some(vec![got[0]]),
        ..opts.clone()
    };
    assert_eq!(
        model::generate_ids(&model, &[10, 20, 30], &stop).unwrap(),
        [got[0]]
    );

    // Sampling is reproducible from the seed and differs across seeds.
    let sampled = |seed| {
        let o = GenerateOptions {
            temperature: 5.0,
            top_p: Some(0.95),
            seed,
            max_new_tokens: 12,
            ..opts.clone()
        };
        model::generate_ids(&model, &[10, 20, 30], &o).unwrap()
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));
    assert!(sampled(3).iter().all(|i| (*i as usize) < t.vocab));

    let bad = GenerateOptions {
        top_p: Some(1.5),
        ..opts
    };
    assert_eq!(
        model::generate_ids(&model, &[1], &bad).unwrap_err().code(),
        "invalid_option"
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// llama.cpp's Q/K permutation, in plain index arithmetic: GGUF row `h·d + 2j + t` holds
/// Hugging Face row `h·d + t·d/2 + j`.
fn permute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for t in 0..2 {
                let dst = h * d + 2 * j + t;
                let src = h * d + t * d / 2 + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn unpermute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for t in 0..2 {
                let src = h * d + 2 * j + t;
                let dst = h * d + t * d / 2 + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes raw GGUF tensor bytes by the block layouts of ggml.
fn decode_blocks(dtype: GgmlDType, data: &[u8]) -> Vec<f32> {
    match dtype {
        GgmlDType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlDType::F16 => data.chunks_exact(2).map(|c| f16_at(c, 0)).collect(),
        GgmlDType::Q8_0 => data
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16_at(b, 0);
                b[2..34]
                    .iter()
                    .map(move |q| d * f32::from(*q as i8))
                    .collect::<Vec<_>>()
            })
            .collect(),
        GgmlDType::Q4_0 => data
            .chunks_exact(18)
            .flat_map(|b| {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                let lo = qs.iter().map(move |q| d * (f32::from(q & 0xF) - 8.0));
                let hi = qs.iter().map(move |q| d * (f32::from(q >> 4) - 8.0));
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        GgmlDType::Q4_1 => data
            .chunks_exact(20)
            .flat_map(|b| {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                let lo = qs.iter().map(move |q| d * f32::from(q & 0xF) + m);
                let hi = qs.iter().map(move |q| d * f32::from(q >> 4) + m);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        other => panic!("no decoder for {other:?}"),
    }
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (layer, module) = rest.split_once('.').unwrap();
            let short = match module {
                "self_attn.q_proj.weight" => "attn_q",
                "self_attn.k_proj.weight" => "attn_k",
                "self_attn.v_proj.weight" => "attn_v",
                "self_attn.o_proj.weight" => "attn_output",
                "mlp.gate_proj.weight" => "ffn_gate",
                "mlp.up_proj.weight" => "ffn_up",
                "mlp.down_proj.weight" => "ffn_down",
                "input_layernorm.weight" => "attn_norm",
                "post_attention_layernorm.weight" => "ffn_norm",
                other => panic!("{other}"),
            };
            format!("blk.{layer}.{short}.weight")
        }
    }
}

/// GPT-2's byte → printable character map.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|x| !printable(*x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

/// A byte-level BPE vocabulary of `vocab` tokens: the 256 bytes (id = byte), `he` (256),
/// `Ġt` (257), `<|endoftext|>` (258), then fillers.
fn bpe_tokens(vocab: usize) -> Vec<String> {
    let mut t: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    t.push("he".into());
    t.push("Ġt".into());
    t.push("<|endoftext|>".into());
    while t.len() < vocab {
        t.push(format!("<extra_{}>", t.len()));
    }
    t
}

/// Writes the tiny Llama in `hf_dir` as a GGUF file the way llama.cpp does (Q/K rows permuted),
/// each tensor in the type `dtype_of` picks; returns the GGUF-layout tensors written.
fn write_gguf(
    hf_dir: &Path,
    cfg: &LlamaConfig,
    path: &Path,
    pre: &str,
    dtype_of: &dyn Fn(&str) -> GgmlDType,
) -> HashMap<String, QTensor> {
    let weights = read_f64(hf_dir);
    let mut tensors = Vec::new();
    for (name, _) in cfg.expected_tensors() {
        let (dims, v) = &weights[&name];
        let mut v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
        if name.ends_with("q_proj.weight") {
            v = permute_rows(&v, dims[0], dims[1], cfg.num_attention_heads);
        } else if name.ends_with("k_proj.weight") {
            v = permute_rows(&v, dims[0], dims[1], cfg.kv_heads());
        }
        let t = Tensor::from_vec(v, dims.as_slice(), &CPU).unwrap();
        let g = gguf_name(&name);
        let q = QTensor::quantize(&t, dtype_of(&g)).unwrap();
        tensors.push((g, q));
    }
    let tokens = bpe_tokens(cfg.vocab_size);
    let mut types = vec![Value::I32(1); tokens.len()];
    types[258] = Value::I32(3);
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(cfg.hidden_size as u32)),
        (
            "llama.feed_forward_length",
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.block_count",
            Value::U32(cfg.num_hidden_layers as u32),
        ),
        (
            "llama.attention.head_count",
            Value::U32(cfg.num_attention_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(cfg.kv_heads() as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        (
            "llama.rope.dimension_count",
            Value::U32(cfg.head_dim() as u32),
        ),
        (
            "llama.context_length",
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![
                Value::String("h e".into()),
                Value::String("Ġ t".into()),
            ]),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(258)),
        ("tokenizer.ggml.eos_token_id", Value::U32(258)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    tensors.into_iter().collect()
}

fn no_progress(_: usize, _: usize) {}

#[test]
fn gguf_f32_import_gives_back_the_hf_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let t = TinyConfig {
        vocab: 259,
        ..TinyConfig::default()
    };
    let (model, cfg) = tiny(&hf, &t, 51);
    let path = tmp.path().join("tiny.gguf");
    write_gguf(&hf, &cfg, &path, "smollm", &|_| GgmlDType::F32);

    let out = tmp.path().join("imported");
    let calls = std::sync::Mutex::new(Vec::new());
    let progress = |done: usize, total: usize| calls.lock().unwrap().push((done, total));
    let report = gguf::import(&path, &out, DType::F32, &progress, &AtomicBool::new(false)).unwrap();
    let n = cfg.expected_tensors().len();
    assert_eq!(report.tensors, n);
    assert_eq!(report.parameters, cfg.parameters());
    assert!(report.tokenizer);
    assert_eq!(calls.lock().unwrap().last(), Some(&(n, n)));

    // Every tensor comes back bit for bit, Q/K unpermuted.
    let want = read_f64(&hf);
    let got = read_f64(&out);
    assert_eq!(got.len(), want.len());
    for (name, (dims, v)) in &want {
        let (gd, gv) = &got[name];
        assert_eq!(gd, dims, "{name}");
        assert!(gv == v, "{name} differs");
    }
    let (imported, icfg) = model::load(&out, &CPU, DType::F32).unwrap();
    assert_eq!(icfg.hidden_size, cfg.hidden_size);
    assert_eq!(icfg.kv_heads(), cfg.kv_heads());
    assert_eq!(icfg.tie_word_embeddings, cfg.tie_word_embeddings);
    assert_eq!(
        icfg.extra.get("eos_token_id"),
        Some(&serde_json::json!(258))
    );
    let input = ids(1, 7, t.vocab, 1);
    let d = max_diff(
        &imported.forward(&input, 0, None).unwrap(),
        &model.forward(&input, 0, None).unwrap(),
    );
    eprintln!("imported F32 GGUF vs original, logits: {d:e}");
    assert_eq!(d, 0.0);

    // The smollm tokenizer: digits split, no leading space, merges applied.
    let tok = model::load_tokenizer(&out.join("tokenizer.json")).unwrap();
    let enc = tok.encode("the 12 the", false).unwrap();
    // "the" → t + he; " " → Ġ; "1", "2"; " the" → Ġt + he.
    assert_eq!(enc.get_ids(), [116, 256, 32, 49, 50, 257, 256]);
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "the 12 the");
    assert_eq!(tok.encode("<|endoftext|>", false).unwrap().get_ids(), [258]);
}

#[test]
fn gguf_quantized_tensors_dequantize_by_the_block_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let t = TinyConfig {
        vocab: 259,
        tie: true,
        ..TinyConfig::default()
    };
    let (model, cfg) = tiny(&hf, &t, 61);
    let path = tmp.path().join("q.gguf");
    let pick = |name: &str| {
        if name.contains("norm") {
            GgmlDType::F32
        } else if name.contains("attn_q") || name.contains("ffn_up") {
            GgmlDType::Q8_0
        } else if name.contains("attn_k") || name.contains("ffn_down") {
            GgmlDType::Q4_0
        } else if name.contains("attn_v") || name.contains("ffn_gate") {
            GgmlDType::Q4_1
        } else {
            GgmlDType::F16
        }
    };
    let written = write_gguf(&hf, &cfg, &path, "gpt2", &pick);
    let out = tmp.path().join("imported");
    let report = gguf::import(
        &path,
        &out,
        DType::F32,
        &no_progress,
        &AtomicBool::new(false),
    )
    .unwrap();
    for (ty, count) in [
        ("Q8_0", 4),
        ("Q4_0", 4),
        ("Q4_1", 4),
        ("F16", 3),
        ("F32", 5),
    ] {
        assert_eq!(report.source_types.get(ty), Some(&count), "{ty}");
    }
    let got = read_f64(&out);
    let original = read_f64(&hf);
    for (name, _) in cfg.expected_tensors() {
        let q = &written[&gguf_name(&name)];
        let (rows, cols) = match q.shape().dims() {
            [r, c] => (*r, *c),
            [n] => (1, *n),
            _ => unreachable!(),
        };
        let mut want = decode_blocks(q.dtype(), &q.data().unwrap());
        if name.ends_with("q_proj.weight") {
            want = unpermute_rows(&want, rows, cols, cfg.num_attention_heads);
        } else if name.ends_with("k_proj.weight") {
            want = unpermute_rows(&want, rows, cols, cfg.kv_heads());
        }
        let (_, have) = &got[&name];
        let worst = want
            .iter()
            .zip(have)
            .map(|(w, h)| (f64::from(*w) - h).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-7, "{name}: {worst}");
        // And the quantisation stays near the original weights (σ = 0.02).
        let (_, orig) = &original[&name];
        let err = orig
            .iter()
            .zip(have)
            .map(|(o, h)| (o - h).abs())
            .fold(0.0, f64::max);
        let bound = match q.dtype() {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 => 0.02,
            GgmlDType::Q8_0 => 1e-3,
            _ => 1e-4,
        };
        assert!(err < bound, "{name} ({:?}): {err}", q.dtype());
    }
    // The quantized model still predicts like the original.
    let (imported, _) = model::load(&out, &CPU, DType::F32).unwrap();
    let input = ids(1, 6, t.vocab, 5);
    let d = max_diff(
        &imported.forward(&input, 0, None).unwrap(),
        &model.forward(&input, 0, None).unwrap(),
    );
    eprintln!("imported quantized GGUF vs original, logits: {d:e}");
    assert!(d > 0.0 && d < 0.1, "{d}");

    // The GPT-2 pre-tokenizer (not smollm) adds a prefix space: "the" → Ġt + he.
    let tok = model::load_tokenizer(&out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.encode("the", false).unwrap().get_ids(), [257, 256]);
}

#[test]
fn gguf_refusals_and_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let t = TinyConfig {
        vocab: 259,
        ..TinyConfig::default()
    };
    let (_, cfg) = tiny(&hf, &t, 71);
    let path = tmp.path().join("q81.gguf");
    write_gguf(&hf, &cfg, &path, "gpt2", &|name: &str| {
        if name == "blk.1.ffn_up.weight" {
            GgmlDType::Q8_1
        } else {
            GgmlDType::F32
        }
    });
    let out = tmp.path().join("out");
    let e = gguf::import(
        &path,
        &out,
        DType::F32,
        &no_progress,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert_eq!(e.code(), "unsupported_gguf_type");
    let msg = e.to_string();
    assert!(
        msg.contains("blk.1.ffn_up.weight") && msg.contains("Q8_1"),
        "{msg}"
    );
    assert!(!out.exists());

    let ok = tmp.path().join("ok.gguf");
    write_gguf(&hf, &cfg, &ok, "gpt2", &|_| GgmlDType::F32);
    let e = gguf::import(&ok, &out, DType::F32, &no_progress, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(e, ModelError::Cancelled));
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("import"))
        .collect();
    assert!(leftovers.is_empty());

    // A non-empty output directory is refused; f16 output works.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("x"), b"x").unwrap();
    let e = gguf::import(&ok, &out, DType::F32, &no_progress, &AtomicBool::new(false)).unwrap_err();
    assert_eq!(e.code(), "invalid_option");
    let half_dir = tmp.path().join("half");
    gguf::import(
        &ok,
        &half_dir,
        DType::F16,
        &no_progress,
        &AtomicBool::new(false),
    )
    .unwrap();
    let st = candle_core::safetensors::load(half_dir.join("model.safetensors"), &CPU).unwrap();
    assert!(st.values().all(|t| t.dtype() == DType::F16));
    let (m16, _) = model::load(&half_dir, &CPU, DType::F32).unwrap();
    assert_eq!(m16.dtype(), DType::F32);
}

#[test]
fn sharded_and_bf16_checkpoints_load() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TinyConfig::default();
    let single = tmp.path().join("single");
    let sharded = tmp.path().join("sharded");
    let (m1, _) = tiny(&single, &t, 81);
    write_tiny_llama(&sharded, &t, 81, Some(40_000)).unwrap();
    assert!(sharded.join("model.safetensors.index.json").exists());
    let (m2, _) = model::load(&sharded, &CPU, DType::F32).unwrap();
    let input = ids(1, 5, t.vocab, 8);
    let a = m1.forward(&input, 0, None).unwrap();
    assert_eq!(max_diff(&a, &m2.forward(&input, 0, None).unwrap()), 0.0);
    let (mb, _) = model::load(&single, &CPU, DType::BF16).unwrap();
    assert_eq!(mb.dtype(), DType::BF16);
    let b = mb.forward(&input, 0, None).unwrap();
    let d = max_diff(&a, &b);
    eprintln!("bf16 vs f32 logits: {d:e}");
    assert!(d < 5e-2, "{d}");

    // A missing tensor is named.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(single.join("config.json"), broken.join("config.json")).unwrap();
    let mut ts = candle_core::safetensors::load(single.join("model.safetensors"), &CPU).unwrap();
    ts.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&ts, broken.join("model.safetensors")).unwrap();
    let e = model::load(&broken, &CPU, DType::F32).unwrap_err();
    assert_eq!(e.code(), "invalid_model");
    assert!(e.to_string().contains("model.layers.1.mlp.up_proj"), "{e}");
}

#[test]
fn permutation_helpers_invert_each_other() {
    let w = Tensor::arange(0f32, 8.0 * 3.0, &CPU)
        .unwrap()
        .reshape((8, 3))
        .unwrap();
    let p = gguf::permute_qk(&w, 2).unwrap();
    let by_hand = permute_rows(&w.flatten_all().unwrap().to_vec1().unwrap(), 8, 3, 2);
    assert_eq!(p.flatten_all().unwrap().to_vec1::<f32>().unwrap(), by_hand);
    let back = gguf::unpermute_qk(&p, 2).unwrap();
    assert_eq!(max_diff(&back, &w), 0.0);
}

/// The real check: SmolLM2-135M-Instruct as a Q4_1 GGUF, imported and asked a question.
/// Run with `CLREG_SMOLLM2_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf cargo test -p
/// clreg-engine --test model -- --ignored smollm2`.
#[test]
#[ignore = "needs a SmolLM2 GGUF file (CLREG_SMOLLM2_GGUF)"]
fn smollm2_gguf_knows_the_capital_of_france() {
    let Some(path) = std::env::var_os("CLREG_SMOLLM2_GGUF") else {
        eprintln!("CLREG_SMOLLM2_GGUF is not set; skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2");
    let started = std::time::Instant::now();
    let report = gguf::import(
        Path::new(&path),
        &out,
        DType::F32,
        &no_progress,
        &AtomicBool::new(false),
    )
    .unwrap();
    eprintln!(
        "import: {:?} in {:?}",
        report.source_types,
        started.elapsed()
    );
    eprintln!("warnings: {:?}", report.warnings);
    let (model, _) = model::load(&out, &CPU, DType::F32).unwrap();
    let tok = model::load_tokenizer(&out.join("tokenizer.json")).unwrap();
    let enc = tok.encode("The capital of France is", true).unwrap();
    assert_eq!(enc.get_ids(), [504, 3575, 282, 4649, 314]);
    // Ids from transformers (AutoTokenizer with gguf_file=) on the same file.
    let enc = tok
        .encode("In 2023, 1234 apples cost $56.78!\n  Hello  world", true)
        .unwrap();
    assert_eq!(
        enc.get_ids(),
        [
            788, 216, 34, 32, 34, 35, 28, 216, 33, 34, 35, 36, 13855, 1708, 1885, 37, 38, 30, 39,
            40, 17, 3805, 38699, 216, 905
        ]
    );
    let started = std::time::Instant::now();
    let text = model::generate(
        &model,
        &tok,
        "The capital of France is",
        GenerateOptions {
            max_new_tokens: 8,
            ..GenerateOptions::default()
        },
    )
    .unwrap();
    eprintln!("generated {text:?} in {:?}", started.elapsed());
    assert!(text.contains("Paris"), "{text}");
}
