//! AdamW with PyTorch's semantics (decoupled weight decay, bias correction), the learning-rate
//! schedules, and global-norm gradient clipping. State lives in plain `f32` vectors so that a
//! checkpoint can save it and a resumed run continue bit for bit.

use rayon::prelude::*;

use super::config::{LrSchedule, TrainConfig};

/// The learning rate of optimizer step `step` (0-based) out of `total`: linear warm-up from 0
/// over `warmup` steps, then constant, linear decay to 0, or half-cosine decay to 0.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let warmup = cfg.warmup_steps;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match cfg.lr_schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Linear => cfg.lr * (1.0 - progress),
        LrSchedule::Cosine => cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// AdamW over a fixed list of parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken so far (bias correction uses `steps + 1` for the next one).
    pub steps: u64,
    pub moments: Vec<Moments>,
}

impl AdamW {
    pub fn new(cfg: &TrainConfig, sizes: &[usize]) -> Self {
        Self {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            steps: 0,
            moments: sizes
                .iter()
                .map(|&n| Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                })
                .collect(),
        }
    }

    /// One update: `params[i] -= lr · (m̂ / (√v̂ + eps) + wd · p)`, as torch.optim.AdamW.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, self.eps as f32);
        for ((p, g), mo) in params.iter_mut().zip(grads).zip(&mut self.moments) {
            p.par_chunks_mut(1 << 14)
                .zip(g.par_chunks(1 << 14))
                .zip(
                    mo.m.par_chunks_mut(1 << 14)
                        .zip(mo.v.par_chunks_mut(1 << 14)),
                )
                .for_each(|((p, g), (m, v))| {
                    for i in 0..p.len() {
                        let gi = g[i];
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let denom = v[i].sqrt() / bc2_sqrt + eps;
                        p[i] = p[i] * decay - step_size * m[i] / denom;
                    }
                });
        }
    }
}

/// The global L2 norm of all gradients.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .par_iter()
        .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Scales every gradient so the global norm is at most `max` (PyTorch's `clip_grad_norm_`,
/// factor max / (norm + 1e-6)). Returns the norm before clipping.
pub fn clip(grads: &mut [Vec<f32>], max: f64) -> f64 {
    let norm = global_norm(grads);
    let factor = max / (norm + 1e-6);
    if factor < 1.0 {
        let f = factor as f32;
        grads
            .par_iter_mut()
            .for_each(|g| g.iter_mut().for_each(|x| *x *= f));
    }
    norm
}
