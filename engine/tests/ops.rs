//! The fused training ops (`model::fused`) against straightforward loops written here: forward
//! values in f32 and f64, gradients against central finite differences in f64, inputs with
//! odd strides, and a tiny model whose loss and LoRA gradients must not depend on the ops mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Tensor, Var};
use clreg_engine::model::{self, LINEAR_MODULES, OpsMode, fused};
use clreg_engine::tiny::{SplitMix64, TinyConfig, write_tiny_llama};

const CPU: Device = Device::Cpu;

/// Uniform values in [-1, 1) from a seed.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect()
}

fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &CPU)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| / max(max |b|, 1e-12).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// The gradient of the scalar `f` at `x` (f64) by central differences.
fn numeric_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) -> Vec<f64> {
    let h = 1e-5;
    let xs = flat(x);
    (0..xs.len())
        .map(|i| {
            let at = |d: f64| {
                let mut v = xs.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x.shape(), &CPU).unwrap();
                f(&t).to_scalar::<f64>().unwrap()
            };
            (at(h) - at(-h)) / (2.0 * h)
        })
        .collect()
}

/// The gradient of the scalar `f` at `x` by backpropagation.
fn backprop_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) -> Vec<f64> {
    let var = Var::from_tensor(x).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    flat(grads.get(&var).expect("the input got no gradient"))
}

fn assert_grad(name: &str, x: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) {
    let (analytic, numeric) = (backprop_grad(x, f), numeric_grad(x, f));
    let err = rel_err(&analytic, &numeric);
    assert!(err <= 1e-6, "{name}: gradient relative error {err:e}");
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-3),
        "{name}: the check is vacuous, the gradient is ~0"
    );
}

/// `Σ y ⊙ r` for a fixed random `r`: a scalar whose gradient is `r` pulled back through `y`.
fn project(y: &Tensor, seed: u64) -> Tensor {
    let r = random(y.dims(), seed, y.dtype());
    (y * r).unwrap().sum_all().unwrap()
}

// ---- straightforward references ----

fn rms_norm_ref(x: &[f64], w: &[f64], d: usize, eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter()
                .zip(w)
                .map(move |(v, w)| v * inv * w)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// RoPE of `x` laid out `[rows, seq, d]` (rows = batch·heads).
fn rope_ref(x: &[f64], cos: &[f64], sin: &[f64], seq: usize, d: usize) -> Vec<f64> {
    let half = d / 2;
    let mut out = vec![0.0; x.len()];
    for (r, row) in x.chunks(d).enumerate() {
        let p = r % seq;
        for j in 0..half {
            let (c, s) = (cos[p * half + j], sin[p * half + j]);
            out[r * d + j] = row[j] * c - row[j + half] * s;
            out[r * d + j + half] = row[j + half] * c + row[j] * s;
        }
    }
    out
}

fn softmax_ref(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            row.iter()
                .map(move |v| (v - max).exp() / sum)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cross_entropy_ref(logits: &[f64], targets: &[u32], weights: &[f64], vocab: usize) -> f64 {
    logits
        .chunks(vocab)
        .zip(targets)
        .zip(weights)
        .map(|((row, t), w)| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            w * (lse - row[*t as usize])
        })
        .sum()
}

/// `x` `[m, k]` · `w` `[n, k]`ᵀ.
fn matmul_t_ref(x: &[f64], w: &[f64], k: usize) -> Vec<f64> {
    x.chunks(k)
        .flat_map(|row| {
            w.chunks(k)
                .map(|wr| row.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>())
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- RMSNorm ----

#[test]
fn rms_norm_forward_matches_reference_for_any_layout() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        let w = random(&[7], 2, dtype);
        let eps = 1e-5;
        // Contiguous, transposed (gathered) and narrowed (unit-stride rows with gaps).
        let base = random(&[2, 7, 3], 1, dtype);
        let wide = random(&[2, 3, 9], 3, dtype);
        let inputs = [
            random(&[2, 3, 7], 4, dtype),
            base.transpose(1, 2).unwrap(),
            wide.narrow(2, 1, 7).unwrap(),
        ];
        for x in &inputs {
            let got = fused::rms_norm(x, &w, eps).unwrap();
            assert_eq!(got.dims(), [2, 3, 7]);
            let want = rms_norm_ref(&flat(x), &flat(&w), 7, eps);
            let err = rel_err(&flat(&got), &want);
            assert!(err < tol, "{dtype:?}: relative error {err:e}");
            // The composed op computes in f32 whatever the input's dtype.
            let composed = model::ops::rms_norm(x, &w, eps, OpsMode::Differentiable).unwrap();
            assert!(rel_err(&flat(&got), &flat(&composed)) < 1e-5);
        }
    }
}

#[test]
fn rms_norm_gradients_match_finite_differences() {
    let w = random(&[6], 5, DType::F64);
    let x = random(&[6, 4], 6, DType::F64);
    // x enters transposed: rows of the op are columns of the variable.
    assert_grad("rms_norm dx", &x, &|x| {
        project(&fused::rms_norm(&x.t().unwrap(), &w, 1e-3).unwrap(), 7)
    });
    let xt = x.t().unwrap();
    assert_grad("rms_norm dw", &w, &|w| {
        project(&fused::rms_norm(&xt, w, 1e-3).unwrap(), 7)
    });
}

#[test]
fn rms_norm_weight_without_gradient_gets_none() {
    let x = Var::from_tensor(&random(&[3, 5], 8, DType::F64)).unwrap();
    let w = random(&[5], 9, DType::F64);
    let grads = project(&fused::rms_norm(x.as_tensor(), &w, 1e-6).unwrap(), 10)
        .backward()
        .unwrap();
    assert!(grads.get(&x).is_some());
    assert!(grads.get(&w).is_none());
}

// ---- RoPE ----

fn rope_tables(seq: usize, half: usize, dtype: DType) -> (Tensor, Tensor) {
    let angles: Vec<f64> = (0..seq * half)
        .map(|i| (i / half) as f64 * 10f64.powf(-((i % half) as f64) / half as f64))
        .collect();
    let cos: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
    let t = |v: Vec<f64>| {
        Tensor::from_vec(v, (seq, half), &CPU)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    (t(cos), t(sin))
}

#[test]
fn rope_forward_matches_reference_for_transposed_input() {
    let (b, h, s, d) = (2, 3, 5, 8);
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
        let (cos, sin) = rope_tables(s, d / 2, dtype);
        // [b, s, h, d] → [b, h, s, d], as attention splits heads: unit-stride rows, no copy.
        let x = random(&[b, s, h, d], 11, dtype).transpose(1, 2).unwrap();
        assert!(!x.is_contiguous());
        let got = fused::rope(&x, &cos, &sin).unwrap();
        let want = rope_ref(
            &flat(&x.contiguous().unwrap()),
            &flat(&cos),
            &flat(&sin),
            s,
            d,
        );
        assert!(rel_err(&flat(&got), &want) < tol, "{dtype:?}");
        let composed = model::ops::rope(&x, &cos, &sin, OpsMode::Differentiable).unwrap();
        assert!(rel_err(&flat(&got), &flat(&composed)) < tol);
    }
}

#[test]
fn rope_gradient_matches_finite_differences() {
    let (cos, sin) = rope_tables(4, 3, DType::F64);
    let x = random(&[2, 4, 2, 6], 12, DType::F64);
    assert_grad("rope dx", &x, &|x| {
        project(
            &fused::rope(&x.transpose(1, 2).unwrap(), &cos, &sin).unwrap(),
            13,
        )
    });
}

#[test]
fn rope_rejects_tables_of_the_wrong_shape() {
    let (cos, sin) = rope_tables(4, 3, DType::F32);
    let x = random(&[1, 1, 5, 6], 14, DType::F32);
    assert!(fused::rope(&x, &cos, &sin).is_err());
}

// ---- softmax ----

#[test]
fn softmax_forward_matches_reference() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
        // Large logits check the max shift; the transpose checks a gathered layout.
        let x = (random(&[3, 11, 4], 15, dtype) * 30.0)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let got = fused::softmax_last_dim(&x).unwrap();
        let want = softmax_ref(&flat(&x.contiguous().unwrap()), 11);
        assert!(rel_err(&flat(&got), &want) < tol, "{dtype:?}");
        let composed = model::ops::softmax_last_dim(&x, OpsMode::Differentiable).unwrap();
        assert!(rel_err(&flat(&got), &flat(&composed)) < tol);
    }
}

#[test]
fn softmax_gradient_matches_finite_differences() {
    let x = random(&[3, 2, 7], 16, DType::F64);
    assert_grad("softmax dx", &x, &|x| {
        project(
            &fused::softmax_last_dim(&x.narrow(2, 1, 5).unwrap()).unwrap(),
            17,
        )
    });
}

// ---- cross-entropy ----

#[test]
fn cross_entropy_forward_matches_reference() {
    let (n, vocab) = (6, 37);
    let targets: Vec<u32> = vec![0, 36, 5, 17, 17, 2];
    let w = vec![0.5, 1.0, 0.0, 2.0, 0.25, 1.5];
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-13 };
        let logits = (random(&[n, vocab], 18, dtype) * 8.0).unwrap();
        let t = Tensor::new(targets.as_slice(), &CPU).unwrap();
        let wt = Tensor::new(w.as_slice(), &CPU)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let got = flat(&fused::cross_entropy(&logits, &t, &wt).unwrap())[0];
        let want = cross_entropy_ref(&flat(&logits), &targets, &w, vocab);
        assert!(
            ((got - want) / want).abs() < tol,
            "{dtype:?}: {got} vs {want}"
        );
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let (n, vocab) = (4, 9);
    let t = Tensor::new(&[3u32, 0, 8, 3], &CPU).unwrap();
    let w = Tensor::new(&[0.7f64, 0.0, 1.3, 0.4], &CPU).unwrap();
    let logits = (random(&[vocab, n], 19, DType::F64) * 3.0).unwrap();
    // Scaling the loss checks that the incoming gradient is applied; the transpose checks a
    // gathered layout.
    assert_grad("cross_entropy dlogits", &logits, &|l| {
        (fused::cross_entropy(&l.t().unwrap(), &t, &w).unwrap() * 2.5).unwrap()
    });
    // The zero-weight row gets a zero gradient.
    let var = Var::from_tensor(&logits.t().unwrap().contiguous().unwrap()).unwrap();
    let grads = fused::cross_entropy(var.as_tensor(), &t, &w)
        .unwrap()
        .backward()
        .unwrap();
    let g = flat(grads.get(&var).unwrap());
    assert!(g[vocab..2 * vocab].iter().all(|v| *v == 0.0));
    assert!(grads.get(&w).is_none());
}

#[test]
fn cross_entropy_rejects_bad_targets() {
    let logits = random(&[2, 5], 20, DType::F32);
    let w = Tensor::new(&[1f32, 1.0], &CPU).unwrap();
    let out_of_range = Tensor::new(&[1u32, 5], &CPU).unwrap();
    assert!(fused::cross_entropy(&logits, &out_of_range, &w).is_err());
    let short = Tensor::new(&[1u32], &CPU).unwrap();
    assert!(fused::cross_entropy(&logits, &short, &w).is_err());
}

// ---- frozen linear ----

#[test]
fn linear_frozen_forward_matches_reference() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-13 };
        let w = random(&[5, 7], 21, dtype);
        // A transposed input takes the copy path; a contiguous one goes straight to the gemm.
        for x in [
            random(&[2, 3, 7], 22, dtype),
            random(&[2, 7, 3], 23, dtype).transpose(1, 2).unwrap(),
        ] {
            let got = fused::linear_frozen(&x, &w).unwrap();
            assert_eq!(got.dims(), [2, 3, 5]);
            let want = matmul_t_ref(&flat(&x.contiguous().unwrap()), &flat(&w), 7);
            assert!(rel_err(&flat(&got), &want) < tol, "{dtype:?}");
        }
    }
}

#[test]
fn linear_frozen_x_gradient_equals_matmul_and_weight_gets_none() {
    let x = Var::from_tensor(&random(&[2, 3, 7], 24, DType::F64)).unwrap();
    let w = Var::from_tensor(&random(&[5, 7], 25, DType::F64)).unwrap();
    let loss = |y: Tensor| project(&y.tanh().unwrap(), 26);

    let grads = loss(fused::linear_frozen(x.as_tensor(), w.as_tensor()).unwrap())
        .backward()
        .unwrap();
    let plain = loss(x.broadcast_matmul(&w.t().unwrap()).unwrap())
        .backward()
        .unwrap();
    let got = flat(grads.get(&x).unwrap());
    let want = flat(plain.get(&x).unwrap());
    assert!(rel_err(&got, &want) < 1e-13);
    assert!(plain.get(&w).is_some(), "the plain matmul does compute it");
    assert!(grads.get(&w).is_none(), "the frozen weight got a gradient");

    // `linear` keeps the weight's gradient when the weight is trained.
    let grads = loss(fused::linear(x.as_tensor(), w.as_tensor()).unwrap())
        .backward()
        .unwrap();
    let gw = flat(grads.get(&w).unwrap());
    assert!(rel_err(&gw, &flat(plain.get(&w).unwrap())) < 1e-13);
}

#[test]
fn linear_frozen_gradient_matches_finite_differences() {
    let w = random(&[4, 6], 27, DType::F64);
    let x = random(&[3, 6], 28, DType::F64);
    assert_grad("linear_frozen dx", &x, &|x| {
        project(&fused::linear_frozen(x, &w).unwrap().sqr().unwrap(), 29)
    });
}

// ---- a tiny model end to end ----

/// The loss and the LoRA gradients of one batch under `mode`, the loss through
/// `fused::cross_entropy` (both modes) so only the model's ops differ.
fn loss_and_grads(tie: bool, mode: OpsMode) -> (f64, Vec<Vec<f64>>) {
    let t = TinyConfig {
        tie,
        ..TinyConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_llama(tmp.path(), &t, 31, None).unwrap();
    let (mut llama, cfg) = model::load(tmp.path(), &CPU, DType::F32).unwrap();
    let vars = llama
        .add_trainable_adapters(&LINEAR_MODULES, 4, 2.0, 32)
        .unwrap();
    // B starts at zero, which would leave A without gradient: give it values.
    for (i, (_, _, b)) in vars.iter().enumerate() {
        let v = (random(b.dims(), 100 + i as u64, DType::F32) * 0.05).unwrap();
        b.set(&v).unwrap();
    }
    let (batch, seq) = (2, 9);
    let ids: Vec<u32> = (0..batch * (seq + 1))
        .map(|i| ((i * 7919 + 13) % t.vocab) as u32)
        .collect();
    let all = Tensor::from_vec(ids, (batch, seq + 1), &CPU).unwrap();
    let input = all.narrow(1, 0, seq).unwrap().contiguous().unwrap();
    let targets = all.narrow(1, 1, seq).unwrap().flatten_all().unwrap();
    let n = batch * seq;
    let weights = Tensor::full(1f32 / n as f32, n, &CPU).unwrap();
    let logits = llama
        .forward_with(&input, 0, None, mode)
        .unwrap()
        .reshape((n, cfg.vocab_size))
        .unwrap();
    let loss = fused::cross_entropy(&logits, &targets, &weights).unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .flat_map(|(name, a, b)| {
            [a, b].map(|v| {
                flat(
                    grads
                        .get(v)
                        .unwrap_or_else(|| panic!("{name} got no gradient")),
                )
            })
        })
        .collect();
    (flat(&loss)[0], g)
}

#[test]
fn tiny_model_train_mode_matches_differentiable_loss_and_lora_gradients() {
    for tie in [false, true] {
        let (loss_d, grads_d) = loss_and_grads(tie, OpsMode::Differentiable);
        let (loss_t, grads_t) = loss_and_grads(tie, OpsMode::Train);
        assert!(
            ((loss_t - loss_d) / loss_d).abs() < 1e-5,
            "tie {tie}: loss {loss_t} vs {loss_d}"
        );
        // Gradient sizes for a uniform-ish prediction are ~1e-4.. compare relative to each
        // tensor's largest entry.
        for (i, (t, d)) in grads_t.iter().zip(&grads_d).enumerate() {
            let err = rel_err(t, d);
            assert!(err < 1e-5, "tie {tie}: gradient {i} relative error {err:e}");
            assert!(d.iter().any(|v| *v != 0.0), "gradient {i} is all zero");
        }
    }
}

#[test]
fn tiny_model_cross_entropy_matches_candle_nn_mean_loss() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_llama(tmp.path(), &TinyConfig::default(), 33, None).unwrap();
    let (llama, cfg) = model::load(tmp.path(), &CPU, DType::F32).unwrap();
    let ids = Tensor::new(&[[5u32, 9, 200, 31, 7, 7]], &CPU).unwrap();
    let n = 6;
    let logits = llama
        .forward_with(&ids, 0, None, OpsMode::Train)
        .unwrap()
        .reshape((n, cfg.vocab_size))
        .unwrap();
    let targets = Tensor::new(&[9u32, 200, 31, 7, 7, 1], &CPU).unwrap();
    let weights = Tensor::full(1f32 / n as f32, n, &CPU).unwrap();
    let got = flat(&fused::cross_entropy(&logits, &targets, &weights).unwrap())[0];
    let want = flat(&candle_nn::loss::cross_entropy(&logits, &targets).unwrap())[0];
    assert!(((got - want) / want).abs() < 1e-6, "{got} vs {want}");
}

// ---- SwiGLU ----

#[test]
fn swiglu_forward_matches_reference() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
        let g = (random(&[3, 40_000], 40, dtype) * 6.0).unwrap();
        // A transposed `up` takes the gathered path.
        let u = random(&[40_000, 3], 41, dtype).t().unwrap();
        let got = fused::swiglu(&g, &u).unwrap();
        let want: Vec<f64> = flat(&g)
            .iter()
            .zip(flat(&u.contiguous().unwrap()))
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        assert!(rel_err(&flat(&got), &want) < tol, "{dtype:?}");
    }
}

#[test]
fn swiglu_gradients_match_finite_differences() {
    let g = (random(&[4, 5], 42, DType::F64) * 3.0).unwrap();
    let u = random(&[4, 5], 43, DType::F64);
    assert_grad("swiglu dgate", &g, &|g| {
        project(&fused::swiglu(g, &u).unwrap(), 44)
    });
    assert_grad("swiglu dup", &u, &|u| {
        project(
            &fused::swiglu(&g, &u.t().unwrap().t().unwrap()).unwrap(),
            44,
        )
    });
    assert!(fused::swiglu(&g, &u.t().unwrap()).is_err());
}
