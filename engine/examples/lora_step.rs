//! Times LoRA training steps (forward, loss, backward, SGD update) on a real model directory so
//! the cost of each part of a step is visible:
//!
//! `cargo run --release -p clreg-engine --example lora_step -- <model dir> [--mode train|differentiable]
//! [--steps N] [--batch 4] [--seq 128] [--rank 8]`
//!
//! `train` runs the fused ops (`OpsMode::Train` + `fused::cross_entropy`); `differentiable` the
//! composed candle ops and candle-nn's cross-entropy, as a baseline. Set `RAYON_NUM_THREADS` to
//! fix the thread count. The process environment matters as much as the ops (measured on 2
//! cores): set `GLIBC_TUNABLES` and `CANDLE_NUM_THREADS` as `clreg_engine::process_env::ENGINE_ENV`
//! lists them. The glibc settings stop the unmapping and re-faulting of the step's large buffers
//! (~3.4 → ~2.4 s/step); one candle thread keeps candle's spinning element-wise pool from
//! fighting the gemm's rayon threads when the machine is busy.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clreg_engine::model::{self, LINEAR_MODULES, OpsMode, fused};
use clreg_engine::tiny::SplitMix64;

struct Args {
    dir: PathBuf,
    mode: OpsMode,
    steps: usize,
    batch: usize,
    seq: usize,
    rank: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        dir: PathBuf::new(),
        mode: OpsMode::Train,
        steps: 3,
        batch: 4,
        seq: 128,
        rank: 8,
    };
    let number = |v: Option<String>, name: &str| -> Result<usize, String> {
        v.as_deref()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} needs a positive number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => {
                args.mode = match it.next().as_deref() {
                    Some("train") => OpsMode::Train,
                    Some("differentiable") => OpsMode::Differentiable,
                    other => {
                        return Err(format!("--mode is train or differentiable, not {other:?}"));
                    }
                }
            }
            "--steps" => args.steps = number(it.next(), "--steps")?,
            "--batch" => args.batch = number(it.next(), "--batch")?,
            "--seq" => args.seq = number(it.next(), "--seq")?,
            "--rank" => args.rank = number(it.next(), "--rank")?,
            _ if args.dir.as_os_str().is_empty() && !a.starts_with("--") => args.dir = a.into(),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if args.dir.as_os_str().is_empty() {
        return Err(
            "usage: lora_step <model dir> [--mode train|differentiable] [--steps N] \
                    [--batch 4] [--seq 128] [--rank 8]"
                .into(),
        );
    }
    Ok(args)
}

/// The peak resident memory of this process in MiB, where Linux reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    // glibc hands large freed buffers back to the kernel and faults them in again on the next
    // allocation; a step allocates gigabytes, so this is worth seeing next to the timings.
    println!(
        "GLIBC_TUNABLES={:?} CANDLE_NUM_THREADS={:?}",
        std::env::var("GLIBC_TUNABLES").ok(),
        std::env::var("CANDLE_NUM_THREADS").ok()
    );
    let device = Device::Cpu;
    let t0 = Instant::now();
    let (mut llama, cfg) = model::load(&args.dir, &device, DType::F32)?;
    let vars = llama.add_trainable_adapters(&LINEAR_MODULES, args.rank, 2.0, 42)?;
    println!(
        "loaded {} layers, vocab {} in {:.2} s; {} adapters of rank {}; mode {:?}; {} threads",
        cfg.num_hidden_layers,
        cfg.vocab_size,
        t0.elapsed().as_secs_f64(),
        vars.len(),
        args.rank,
        args.mode,
        rayon::current_num_threads()
    );

    let (b, s) = (args.batch, args.seq);
    let n = b * s;
    let mut rng = SplitMix64::new(7);
    let tokens: Vec<u32> = (0..b * (s + 1))
        .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
        .collect();
    let all = Tensor::from_vec(tokens, (b, s + 1), &device)?;
    let input = all.narrow(1, 0, s)?.contiguous()?;
    let targets = all.narrow(1, 1, s)?.contiguous()?.flatten_all()?;
    let weights = Tensor::full(1.0f32 / n as f32, n, &device)?;
    let lr = 1e-3;

    let mut totals = [0f64; 5];
    let mut fastest = f64::INFINITY;
    for step in 0..args.steps {
        let start = Instant::now();
        let logits = llama.forward_with(&input, 0, None, args.mode)?;
        let logits = logits.reshape((n, cfg.vocab_size))?;
        let t_fwd = start.elapsed().as_secs_f64();
        let loss = match args.mode {
            OpsMode::Train => fused::cross_entropy(&logits, &targets, &weights)?,
            _ => candle_nn::loss::cross_entropy(&logits, &targets)?,
        };
        let loss_value = loss.to_scalar::<f32>()?;
        let t_loss = start.elapsed().as_secs_f64() - t_fwd;
        let grads = loss.backward()?;
        let t_bwd = start.elapsed().as_secs_f64() - t_fwd - t_loss;
        for (_, a, bv) in &vars {
            for v in [a, bv] {
                if let Some(g) = grads.get(v) {
                    v.set(&(v.as_tensor() - (g * lr)?)?)?;
                }
            }
        }
        drop(grads);
        let total = start.elapsed().as_secs_f64();
        let t_upd = total - t_fwd - t_loss - t_bwd;
        println!(
            "step {step}: loss {loss_value:.4}  {total:.3} s  {:.1} tok/s  (forward {t_fwd:.3}, \
             loss {t_loss:.3}, backward {t_bwd:.3}, update {t_upd:.3})",
            n as f64 / total
        );
        if step > 0 || args.steps == 1 {
            fastest = fastest.min(total);
            for (acc, v) in totals.iter_mut().zip([total, t_fwd, t_loss, t_bwd, t_upd]) {
                *acc += v;
            }
        }
    }
    let counted = if args.steps > 1 { args.steps - 1 } else { 1 } as f64;
    let [total, f, l, bw, u] = totals.map(|t| t / counted);
    println!(
        "mean over {counted} step(s) after the first: {total:.3} s/step, {:.1} tok/s; forward \
         {f:.3}, loss {l:.3}, backward {bw:.3}, update {u:.3}; fastest {fastest:.3} s \
         ({:.1} tok/s); peak RSS {:.0} MiB",
        n as f64 / total,
        n as f64 / fastest,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
