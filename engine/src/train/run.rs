//! The training loop: data → micro-batches → forward, answer-token cross-entropy (+ O-LoRA) →
//! backward → accumulated gradients → clipping → AdamW, with checkpoints, progress and cancel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::TrainError;
use super::checkpoint::{self, State, Stored};
use super::config::{DataSchedule, Method, TrainConfig};
use super::grads::{accumulate, set_var};
use super::model_setup::{self, Setup};
use super::olora;
use super::optim::{self, AdamW};
use super::record::{self, BaseInput, DataCounts, DataInput, RECORD, StepRecord, TrainRecord};
use super::shards::Shards;
use crate::adapter::{AdapterConfig, TargetModules};
use crate::data::{self, Batch, EncodeOptions, Encoded, Mixture, Schedule};
use crate::formats::{CheckpointWriter, LoraPair, OutDtype, Staging, TensorSpec};
use crate::merge::record::sha256_file;
use crate::model::{self, DropoutStream, Llama, LoraDropout, OpsMode, fused};
use crate::tiny::SplitMix64;

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The base checkpoint (Hugging Face directory with `tokenizer.json`).
    pub base: PathBuf,
    /// Earlier rounds' adapters, oldest first: merged into the weights or stacked, as
    /// `config.mode` says; O-LoRA keeps the new adapter orthogonal to them.
    pub adapters: Vec<PathBuf>,
    /// The current task's TRACE files (one task).
    pub data: Vec<PathBuf>,
    /// Earlier tasks' TRACE files, one task each (replay and joint).
    pub past: Vec<PathBuf>,
    /// Where the adapter or checkpoint goes (must not exist or be empty).
    pub output: PathBuf,
    /// Where checkpoints go; `None` writes none.
    pub checkpoint_dir: Option<PathBuf>,
    /// Write a checkpoint every this many optimizer steps.
    pub checkpoint_every: Option<usize>,
    /// Continue from the newest checkpoint in `checkpoint_dir`.
    pub resume: bool,
    pub config: TrainConfig,
    pub device: Device,
}

/// What a run reports while it works.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Before the first step: the data, the counts each task contributes, the step count.
    Plan {
        data: &'a [DataInput],
        counts: &'a DataCounts,
        steps: usize,
        trainable_parameters: usize,
    },
    /// Something the user should know (a resumed run, an O-LoRA term that is zero, …).
    Note(&'a str),
    /// After each optimizer step.
    Step {
        step: usize,
        steps: usize,
        loss: f64,
        lr: f64,
        tokens_per_second: f64,
        eta_seconds: f64,
    },
    /// A checkpoint was written.
    Checkpoint { step: usize, path: &'a Path },
}

struct Task {
    encoded: Vec<Encoded>,
}

fn check_cancel(cancel: &AtomicBool, step: usize) -> Result<(), TrainError> {
    if cancel.load(Ordering::Relaxed) {
        Err(TrainError::Cancelled { step })
    } else {
        Ok(())
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Reads and tokenises the data of a job; the current task is task 0.
#[allow(clippy::type_complexity)]
fn load_data(
    job: &TrainJob,
    tok: &tokenizers::Tokenizer,
    eos: u32,
) -> Result<(Vec<Task>, Vec<DataInput>, DataCounts), TrainError> {
    let cfg = &job.config;
    if job.data.is_empty() {
        return Err(TrainError::InvalidConfig(
            "no training data: pass the current task's TRACE file with --data".into(),
        ));
    }
    let opts = EncodeOptions {
        max_len: cfg.max_len,
    };
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    if cfg.schedule == DataSchedule::Joint {
        for f in job.data.iter().chain(&job.past) {
            groups.push(("current".into(), vec![f.clone()]));
        }
        for g in groups.iter_mut().skip(job.data.len()) {
            g.0 = "past".into();
        }
    } else {
        groups.push(("current".into(), job.data.clone()));
        for f in &job.past {
            groups.push(("past".into(), vec![f.clone()]));
        }
    }
    let mut tasks = Vec::new();
    let mut inputs = Vec::new();
    let mut counts = DataCounts::default();
    for (task, (role, files)) in groups.into_iter().enumerate() {
        let mut encoded = Vec::new();
        for f in files {
            let examples = data::read_trace(&f)?;
            let (enc, stats) =
                data::encode_all(tok, &examples, eos, &opts, &f.display().to_string())?;
            counts.examples += stats.examples;
            counts.truncated_prompt += stats.truncated_prompt;
            counts.truncated_answer += stats.truncated_answer;
            counts.tokens += stats.tokens;
            counts.answer_tokens += stats.answer_tokens;
            inputs.push(DataInput {
                task,
                role: role.clone(),
                sha256: sha256_file(&f)?,
                path: f,
                examples: enc.len(),
            });
            encoded.extend(enc);
        }
        tasks.push(Task { encoded });
    }
    Ok((tasks, inputs, counts))
}

/// The micro-batches of optimizer step `step`.
fn step_batches(
    cfg: &TrainConfig,
    mixture: &Mixture,
    tasks: &[Task],
    step: usize,
    pad: u32,
    epoch_cache: &mut Option<(usize, Vec<data::Draw>)>,
) -> Vec<Batch> {
    let per_step = cfg.batch_size * cfg.grad_accum;
    let epoch_len = mixture.len().max(1);
    let mut items: Vec<&Encoded> = Vec::with_capacity(per_step);
    for p in step * per_step..(step + 1) * per_step {
        let (epoch, i) = (p / epoch_len, p % epoch_len);
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *epoch_cache = Some((epoch, mixture.epoch(epoch)));
        }
        if let Some((_, draws)) = epoch_cache.as_ref()
            && let Some(d) = draws.get(i)
            && let Some(e) = tasks.get(d.task).and_then(|t| t.encoded.get(d.index))
        {
            items.push(e);
        }
    }
    if cfg.packing {
        data::pack_batches(&items, cfg.batch_size, cfg.max_len, pad)
    } else {
        items
            .chunks(cfg.batch_size)
            .map(|c| data::pad_batch(c, pad))
            .collect()
    }
}

/// Trains as `job` says and writes the adapter or checkpoint plus `clreg_train.json`.
pub fn train(
    job: &TrainJob,
    progress: &mut dyn FnMut(TrainEvent<'_>),
    cancel: &AtomicBool,
) -> Result<TrainRecord, TrainError> {
    let cfg = &job.config;
    cfg.check()?;
    // Refuse an occupied output before any work.
    let staging = Staging::new(&job.output)?;

    let tok_path = job.base.join("tokenizer.json");
    let tok = model::load_tokenizer(&tok_path)?;
    let config = model::read_config(&job.base)?;
    let eos = data::eos_id(&tok, &config.eos_token_ids())?;
    let (tasks, data_inputs, mut counts) = load_data(job, &tok, eos)?;
    let schedule = match cfg.schedule {
        DataSchedule::Plain => Schedule::Plain,
        DataSchedule::Replay { fraction } => Schedule::Replay { fraction },
        DataSchedule::Joint => Schedule::Joint,
    };
    if cfg.schedule == DataSchedule::Plain && tasks.len() > 1 {
        return Err(TrainError::InvalidConfig(
            "--past data is only used by replay or joint training; add --replay FRACTION or \
             --joint, or drop --past"
                .into(),
        ));
    }
    let sizes: Vec<usize> = tasks.iter().map(|t| t.encoded.len()).collect();
    let mixture = Mixture::new(schedule, &sizes, cfg.seed)?;
    counts.per_epoch = mixture.counts();
    let per_step = cfg.batch_size * cfg.grad_accum;
    let steps = cfg
        .max_steps
        .unwrap_or_else(|| (cfg.epochs * mixture.len()).div_ceil(per_step).max(1));

    let Setup {
        model,
        params,
        lora_modules,
        earlier_a,
        base_files,
        adapters,
        tensor_order,
        weights,
        ..
    } = model_setup::setup(&job.base, &job.adapters, cfg, &job.device)?;
    let trainable: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let mut notes = Vec::new();
    if cfg.method == Method::Olora && earlier_a.is_empty() {
        notes.push(
            "O-LoRA without earlier adapters: the orthogonality term is zero, so this run is \
             plain LoRA (pass the earlier rounds' adapters with --adapter)"
                .to_string(),
        );
    }
    // One model per shard: the same tensors and variables, each with its own dropout stream.
    let shards = Shards::new(rayon::current_num_threads(), cfg.batch_size)?;
    let workers: Vec<(Llama, Arc<DropoutStream>)> = (0..shards.count())
        .map(|_| {
            let mut model = model.clone();
            let stream = Arc::new(DropoutStream::default());
            if cfg.lora.dropout > 0.0 && cfg.method.trains_adapter() {
                for (i, (module, _, _)) in lora_modules.iter().enumerate() {
                    if let Some(adapter) =
                        model.linear_mut(module).and_then(|l| l.adapters.last_mut())
                    {
                        adapter.dropout = Some(Arc::new(LoraDropout {
                            p: cfg.lora.dropout,
                            module: i as u64,
                            stream: stream.clone(),
                        }));
                    }
                }
            }
            (model, stream)
        })
        .collect();
    drop(model);
    for n in &notes {
        progress(TrainEvent::Note(n));
    }
    progress(TrainEvent::Plan {
        data: &data_inputs,
        counts: &counts,
        steps,
        trainable_parameters: trainable,
    });

    // Master copies of the parameters, which AdamW updates and the variables mirror.
    let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.var.dims().to_vec()).collect();
    let mut values: Vec<Vec<f32>> = params
        .iter()
        .map(|p| to_vec(p.var.as_tensor()))
        .collect::<Result<_, _>>()?;
    let sizes: Vec<usize> = values.iter().map(Vec::len).collect();
    let mut adam = AdamW::new(cfg, &sizes);
    let mut losses: Vec<StepRecord> = Vec::new();
    let mut tokens_total = 0usize;
    let mut wall_before = 0.0;
    let mut start_step = 0;
    let mut resumed_from = None;
    let mut last_checkpoint: Option<PathBuf> = None;
    if job.resume {
        let r = resume(job, &params, &shapes, &base_files, &data_inputs)?;
        values = r.values;
        adam.moments = r.moments;
        adam.steps = r.step as u64;
        start_step = r.step;
        losses = r.losses;
        tokens_total = r.tokens;
        wall_before = r.wall_seconds;
        resumed_from = Some(r.step);
        let note = format!("resuming from {} (step {})", r.dir.display(), r.step);
        last_checkpoint = Some(r.dir);
        progress(TrainEvent::Note(&note));
        notes.push(note);
    }

    let run_started = Instant::now();
    let mut epoch_cache = None;
    let mut run_tokens = 0usize;
    // The step's gradient sums, kept from step to step (zeroed, not allocated again).
    let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0f32; n]).collect();
    for step in start_step..steps {
        check_cancel(cancel, step)?;
        let step_started = Instant::now();
        let batches = step_batches(cfg, &mixture, &tasks, step, eos, &mut epoch_cache);
        let answer_tokens: usize = batches.iter().map(|b| b.answer_tokens).sum();
        grads.par_iter_mut().for_each(|g| g.fill(0.0));
        let mut loss_sum = 0.0;
        let mut orth_value = None;
        let mut step_tokens = 0;
        let mut any_loss = false;
        for (micro, batch) in batches.iter().enumerate() {
            // Dropout masks follow from (seed, step, micro-batch) alone.
            let key = SplitMix64::new(cfg.seed ^ ((step as u64) << 20 | micro as u64)).next_u64();
            step_tokens += batch.rows * batch.len;
            let shard_results = shards.run(batch.rows, |shard, rows| {
                let (model, stream) = &workers[shard];
                stream.set(key, rows.start * batch.len);
                let Some(ce) = answer_loss(model, batch, rows, answer_tokens, &job.device)? else {
                    return Ok(None);
                };
                let loss = ce.to_scalar::<f32>()? as f64;
                Ok::<_, TrainError>(Some((loss, ce.backward()?)))
            });
            // Added in shard order, so a run is the same bit for bit however threads finish.
            for result in shard_results {
                if let Some((loss, store)) = result? {
                    loss_sum += loss;
                    accumulate(&store, &params, &mut grads)?;
                    any_loss = true;
                }
            }
        }
        // The O-LoRA term depends on the parameters only: once per optimizer step.
        if any_loss && cfg.method == Method::Olora {
            let term = olora_term(cfg, &params, &lora_modules, &earlier_a, &job.device)?;
            orth_value = Some(term.to_scalar::<f32>()? as f64);
            accumulate(&term.backward()?, &params, &mut grads)?;
        }
        let total = loss_sum + orth_value.unwrap_or(0.0);
        if !total.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                loss: total,
                checkpoint: last_checkpoint,
            });
        }
        let grad_norm = match cfg.clip_grad {
            Some(max) => optim::clip(&mut grads, max),
            None => optim::global_norm(&grads),
        };
        let lr = optim::learning_rate(cfg, step, steps);
        adam.step(&mut values, &grads, lr);
        for ((p, v), shape) in params.iter().zip(&values).zip(&shapes) {
            set_var(&p.var, v, shape)?;
        }
        run_tokens += step_tokens;
        tokens_total += step_tokens;
        losses.push(StepRecord {
            step: step + 1,
            loss: loss_sum,
            orth: orth_value,
            lr,
            grad_norm,
            tokens: step_tokens,
            seconds: step_started.elapsed().as_secs_f64(),
        });
        let elapsed = run_started.elapsed().as_secs_f64();
        let done = step + 1 - start_step;
        progress(TrainEvent::Step {
            step: step + 1,
            steps,
            loss: loss_sum,
            lr,
            tokens_per_second: run_tokens as f64 / elapsed.max(1e-9),
            eta_seconds: elapsed / done as f64 * (steps - step - 1) as f64,
        });
        if let (Some(root), Some(every)) = (&job.checkpoint_dir, job.checkpoint_every)
            && every > 0
            && (step + 1) % every == 0
            && step + 1 < steps
        {
            let stored: Vec<Stored<'_>> = params
                .iter()
                .zip(&values)
                .zip(&shapes)
                .map(|((p, v), s)| Stored {
                    name: &p.name,
                    shape: s,
                    values: v,
                })
                .collect();
            let state = State {
                step: step + 1,
                config: cfg.clone(),
                base_files: base_files.clone(),
                data: data_inputs.clone(),
                losses: losses.clone(),
                tokens: tokens_total,
                wall_seconds: wall_before + run_started.elapsed().as_secs_f64(),
            };
            let path = checkpoint::save(root, &stored, &adam, &state)?;
            progress(TrainEvent::Checkpoint {
                step: step + 1,
                path: &path,
            });
            last_checkpoint = Some(path);
        }
    }
    check_cancel(cancel, steps)?;

    // The output.
    let out = staging.path();
    let output_kind = if cfg.method.trains_adapter() {
        write_adapter(out, cfg, &job.base, &lora_modules, &values, &shapes)?;
        "adapter"
    } else {
        write_checkpoint(out, &job.base, &tensor_order, &weights)?;
        "checkpoint"
    };
    let wall = wall_before + run_started.elapsed().as_secs_f64();
    let record = TrainRecord {
        clreg_version: env!("CARGO_PKG_VERSION").to_string(),
        config: cfg.clone(),
        output_kind: output_kind.to_string(),
        base: BaseInput {
            path: job.base.clone(),
            files: base_files,
        },
        adapters,
        data: data_inputs,
        counts,
        steps,
        epochs: (steps * per_step) as f64 / mixture.len().max(1) as f64,
        trainable_parameters: trainable,
        seeds: record::seeds_description(cfg.seed),
        resumed_from,
        notes,
        losses,
        wall_seconds: wall,
        tokens: tokens_total,
        tokens_per_second: run_tokens as f64 / run_started.elapsed().as_secs_f64().max(1e-9),
    };
    crate::formats::output::write_json(&out.join(RECORD), &record)?;
    staging.commit()?;
    Ok(record)
}

/// What a run continues from.
struct Resumed {
    dir: PathBuf,
    step: usize,
    values: Vec<Vec<f32>>,
    moments: Vec<optim::Moments>,
    losses: Vec<StepRecord>,
    tokens: usize,
    wall_seconds: f64,
}

/// Loads the newest checkpoint of `job.checkpoint_dir` into the variables, refusing one written
/// with other settings, another base or other data.
fn resume(
    job: &TrainJob,
    params: &[model_setup::Param],
    shapes: &[Vec<usize>],
    base_files: &[crate::merge::record::FileHash],
    data_inputs: &[DataInput],
) -> Result<Resumed, TrainError> {
    let Some(root) = &job.checkpoint_dir else {
        return Err(TrainError::InvalidConfig(
            "--resume needs the checkpoint directory (--checkpoint-dir)".into(),
        ));
    };
    let Some(dir) = checkpoint::list(root).pop() else {
        return Err(TrainError::Resume {
            checkpoint: root.display().to_string(),
            reason: "it holds no checkpoint (step-N directories)".into(),
        });
    };
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let loaded = checkpoint::load(&dir, &names)?;
    let bad = |reason: String| TrainError::Resume {
        checkpoint: dir.display().to_string(),
        reason,
    };
    if loaded.state.config != job.config {
        return Err(bad(
            "it was written with other training settings; resume with the same options".into(),
        ));
    }
    if loaded.state.base_files != base_files || loaded.state.data != data_inputs {
        return Err(bad(
            "it was written for another base model or other data files".into(),
        ));
    }
    for ((p, v), shape) in params.iter().zip(&loaded.params).zip(shapes) {
        if v.len() != p.var.elem_count() {
            return Err(bad(format!("parameter `{}` has another size", p.name)));
        }
        p.var
            .set(&Tensor::from_vec(v.clone(), shape.as_slice(), &job.device)?)?;
    }
    Ok(Resumed {
        step: loaded.state.step,
        values: loaded.params,
        moments: loaded.moments,
        losses: loaded.state.losses,
        tokens: loaded.state.tokens,
        wall_seconds: loaded.state.wall_seconds,
        dir,
    })
}

/// Σ over the answer positions of the batch's rows `rows` of (−log p(target)) / `answer_tokens`
/// (the whole step's count, so micro-batches and their shards add up to the step's mean);
/// `None` when those rows have no answer token. The output layer runs only on those positions.
fn answer_loss(
    model: &Llama,
    batch: &Batch,
    rows: std::ops::Range<usize>,
    answer_tokens: usize,
    dev: &Device,
) -> Result<Option<Tensor>, TrainError> {
    let span = rows.start * batch.len..rows.end * batch.len;
    let (mask, targets) = (&batch.mask[span.clone()], &batch.targets[span.clone()]);
    let picked: Vec<u32> = (0..mask.len() as u32)
        .filter(|&i| mask[i as usize] > 0.0)
        .collect();
    if picked.is_empty() {
        return Ok(None);
    }
    let scale = 1.0 / answer_tokens.max(1) as f32;
    let targets: Vec<u32> = picked.iter().map(|&i| targets[i as usize]).collect();
    let weights: Vec<f32> = picked.iter().map(|&i| mask[i as usize] * scale).collect();
    let picked = Tensor::new(picked.as_slice(), dev)?;
    let input = Tensor::from_slice(&batch.input[span], (rows.len(), batch.len), dev)?;
    let hidden = model.hidden_states(&input, OpsMode::Train)?;
    let width = hidden.dim(2)?;
    let hidden = hidden
        .reshape((rows.len() * batch.len, width))?
        .index_select(&picked, 0)?;
    let logits = fused::linear(&hidden, model.lm_head())?;
    let loss = fused::cross_entropy(
        &logits,
        &Tensor::new(targets.as_slice(), dev)?,
        &Tensor::new(weights.as_slice(), dev)?,
    )?;
    Ok(Some(loss))
}

/// λ · Σ_modules Σ_i L_orth(A_i, A_t) (+ λ₂ · Σ‖p‖₂ over the new parameters).
fn olora_term(
    cfg: &TrainConfig,
    params: &[model_setup::Param],
    lora_modules: &[(String, usize, usize)],
    earlier_a: &std::collections::BTreeMap<String, Vec<Tensor>>,
    dev: &Device,
) -> Result<Tensor, TrainError> {
    let mut orth = Tensor::zeros((), candle_core::DType::F32, dev)?;
    for (module, ia, _) in lora_modules {
        if let Some(old) = earlier_a.get(module) {
            let a = params[*ia].var.as_tensor();
            orth = (orth + olora::orth_loss(a, old, cfg.olora.variant)?)?;
        }
    }
    let mut term = (orth * cfg.olora.lambda)?;
    if cfg.olora.lambda2 > 0.0 {
        let all: Vec<Tensor> = params.iter().map(|p| p.var.as_tensor().clone()).collect();
        term = (term + (olora::l2_loss(&all)? * cfg.olora.lambda2)?)?;
    }
    Ok(term)
}

/// Writes the new adapter (PEFT layout, f32) from the trained values.
fn write_adapter(
    out: &Path,
    cfg: &TrainConfig,
    base: &Path,
    lora_modules: &[(String, usize, usize)],
    values: &[Vec<f32>],
    shapes: &[Vec<usize>],
) -> Result<(), TrainError> {
    let modules: Vec<(String, LoraPair)> = lora_modules
        .iter()
        .map(|(module, ia, ib)| {
            let pair = LoraPair {
                a: values[*ia].clone(),
                b: values[*ib].clone(),
                r: shapes[*ia][0],
                inp: shapes[*ia][1],
                out: shapes[*ib][0],
            };
            (module.clone(), pair)
        })
        .collect();
    let adapter_cfg = adapter_config(cfg, base);
    crate::formats::lora::write_adapter_into(out, &adapter_cfg, &modules, OutDtype::Float32)?;
    Ok(())
}

/// The PEFT `adapter_config.json` of the new adapter.
fn adapter_config(cfg: &TrainConfig, base: &Path) -> AdapterConfig {
    AdapterConfig {
        peft_type: "LORA".into(),
        r: cfg.lora.r as u64,
        lora_alpha: cfg.lora.alpha,
        target_modules: TargetModules::List(cfg.lora.targets.clone()),
        lora_dropout: cfg.lora.dropout,
        bias: "none".into(),
        use_rslora: cfg.lora.rslora,
        use_dora: false,
        fan_in_fan_out: false,
        base_model_name_or_path: Some(base.display().to_string()),
        task_type: Some("CAUSAL_LM".into()),
        modules_to_save: None,
        rank_pattern: Default::default(),
        alpha_pattern: Default::default(),
        extra: Default::default(),
    }
}

/// Writes the trained full model in the base's dtype, with its config and tokenizer files.
fn write_checkpoint(
    out: &Path,
    base: &Path,
    order: &[String],
    weights: &std::collections::HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    let ckpt = crate::formats::Checkpoint::open(base)?;
    let dtype = ckpt.main_dtype().unwrap_or(OutDtype::Float32);
    let mut specs = Vec::new();
    for name in order {
        if let Some(t) = weights.get(name) {
            specs.push(TensorSpec::new(name.clone(), t.dims().to_vec(), dtype));
        }
    }
    let mut w = CheckpointWriter::create(out, specs, Some(5 << 30))?;
    for name in order {
        if let Some(t) = weights.get(name) {
            w.write(name, &to_vec(t)?)?;
        }
    }
    w.finish()?;
    for side in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        let from = base.join(side);
        if from.exists() {
            std::fs::copy(&from, out.join(side)).map_err(|e| {
                TrainError::Format(crate::error::FormatError::io(
                    &from.display().to_string(),
                    e.to_string(),
                ))
            })?;
        }
    }
    Ok(())
}
