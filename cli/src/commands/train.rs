//! `clreg local train|eval|bwt|synth`: continue-training, evaluation, transfer metrics and the
//! synthetic task suite on local files.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use clreg_engine::bwt::{ScoreMatrix, transfer};
use clreg_engine::eval::{EvalOptions, Metric};
use clreg_engine::job::{EvalSpec, EvalTask, JobEvent, JobOutput, JobSpec, TrainSpec};
use clreg_engine::merge::record::Digests;
use clreg_engine::train::{
    DataSchedule, LoraOptions, LrSchedule, Method, OloraOptions, OrthVariant, SequentialMode,
    TrainConfig,
};

use crate::args::{BwtArgs, EvalArgs, SplitArgs, SynthArgs, TrainArgs, TrainSettings};
use crate::commands::Ctx;
use crate::commands::job::run_local;
use crate::error::{ExitStatus, LocalError};

pub(crate) fn config_of(a: &TrainSettings) -> TrainConfig {
    TrainConfig {
        method: match a.method.as_str() {
            "fft" => Method::Fft,
            "olora" => Method::Olora,
            _ => Method::Lora,
        },
        mode: if a.mode == "stacked" {
            SequentialMode::Stacked
        } else {
            SequentialMode::Merged
        },
        lora: LoraOptions {
            r: a.r,
            alpha: a.alpha,
            dropout: a.dropout,
            rslora: a.rslora,
            targets: a.targets.clone(),
        },
        fft_params: a.fft_params.clone(),
        olora: OloraOptions {
            lambda: a.lambda,
            variant: if a.orth == "sq" {
                OrthVariant::Sq
            } else {
                OrthVariant::L1
            },
            lambda2: a.lambda2,
        },
        schedule: match (a.replay, a.joint) {
            (_, true) => DataSchedule::Joint,
            (Some(fraction), false) => DataSchedule::Replay { fraction },
            (None, false) => DataSchedule::Plain,
        },
        lr: a.lr,
        lr_schedule: match a.lr_schedule.as_str() {
            "linear" => LrSchedule::Linear,
            "cosine" => LrSchedule::Cosine,
            _ => LrSchedule::Constant,
        },
        warmup_steps: a.warmup,
        weight_decay: a.weight_decay,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        epochs: a.epochs,
        max_steps: a.max_steps,
        max_len: a.max_len,
        packing: a.packing,
        clip_grad: (a.clip_grad > 0.0).then_some(a.clip_grad),
        seed: a.seed,
        ..TrainConfig::default()
    }
}

fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub async fn train(ctx: &Ctx, a: TrainArgs) -> Result<ExitStatus> {
    let checkpoint_dir = a.checkpoint_dir.clone().or_else(|| {
        (a.checkpoint_every.is_some() || a.resume).then(|| {
            let mut name = a.output.as_os_str().to_os_string();
            name.push(".ckpt");
            PathBuf::from(name)
        })
    });
    let spec = JobSpec::Train(TrainSpec {
        base: a.base.clone(),
        adapters: a.adapter.clone(),
        data: a.data.clone(),
        past: a.past.clone(),
        output: a.output.clone(),
        checkpoint_dir,
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        config: config_of(&a.settings),
    });
    let quiet = ctx.out.is_quiet();
    let last_print: Mutex<Option<Instant>> = Mutex::new(None);
    let report = move |e: JobEvent| {
        if quiet {
            return;
        }
        match e {
            JobEvent::Plan {
                data,
                counts,
                steps,
                trainable_parameters,
            } => {
                for d in data {
                    eprintln!(
                        "data: task {} ({}) {} — {} examples",
                        d.task,
                        d.role,
                        d.path.display(),
                        d.examples
                    );
                }
                eprintln!(
                    "per epoch: {:?} examples by task; truncated: {} prompts, {} answers; \
                     {} answer tokens of {}",
                    counts.per_epoch,
                    counts.truncated_prompt,
                    counts.truncated_answer,
                    counts.answer_tokens,
                    counts.tokens
                );
                eprintln!("training {trainable_parameters} parameters for {steps} steps");
            }
            JobEvent::Note { message } => eprintln!("note: {message}"),
            JobEvent::Step {
                step,
                steps,
                loss,
                lr,
                tokens_per_second,
                eta_seconds,
            } => {
                let mut last = last_print.lock().unwrap_or_else(|p| p.into_inner());
                let due = last.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0);
                if due || step == steps {
                    eprintln!(
                        "step {step}/{steps}  loss {loss:.4}  lr {lr:.2e}  \
                         {tokens_per_second:.0} tok/s  ETA {}",
                        hms(eta_seconds)
                    );
                    *last = Some(Instant::now());
                }
            }
            JobEvent::Checkpoint { step, path } => {
                eprintln!("checkpoint at step {step}: {}", path.display());
            }
            _ => {}
        }
    };
    let JobOutput::Train(record) = run_local(spec, Digests::default(), report).await? else {
        return Err(LocalError::protocol("a train job returned another kind of output").into());
    };
    let summary = serde_json::json!({
        "output": a.output,
        "output_kind": record.output_kind,
        "steps": record.steps,
        "final_loss": record.losses.last().map(|s| s.loss),
        "tokens_per_second": record.tokens_per_second,
        "wall_seconds": record.wall_seconds,
        "trainable_parameters": record.trainable_parameters,
    });
    ctx.out.emit(&summary, || {
        format!(
            "trained {} ({} steps, final loss {:.4}, {:.0} tok/s, {:.1} s) into {}",
            record.output_kind,
            record.steps,
            record.losses.last().map(|s| s.loss).unwrap_or(f64::NAN),
            record.tokens_per_second,
            record.wall_seconds,
            a.output.display()
        )
    })?;
    Ok(ExitStatus::Success)
}

fn read_suite(dir: &Path) -> Result<clreg_engine::synth::Suite, LocalError> {
    let manifest = dir.join("suite.json");
    let bytes = std::fs::read(&manifest).map_err(|e| {
        LocalError::usage(format!(
            "cannot read {}: {e}; write a suite with `clreg local synth`",
            manifest.display()
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| LocalError::usage(format!("{}: {e}", manifest.display())))
}

fn parse_metric(name: &str, context: &str) -> Result<Metric, LocalError> {
    name.parse()
        .map_err(|e| LocalError::usage(format!("{context}: {e}")))
}

/// The metric of a task file given without one: from the `suite.json` of the suite it belongs
/// to (`DIR/<task>/<split>.json`), else `mc` when every example has choices.
fn infer_metric(path: &Path) -> Result<Metric, LocalError> {
    let unknown = || {
        LocalError::usage(format!(
            "cannot tell the metric of {}: write it as FILE:METRIC (metrics: {})",
            path.display(),
            Metric::ALL
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if let Some(root) = path.parent().and_then(Path::parent)
        && root.join("suite.json").exists()
    {
        let suite = read_suite(root)?;
        let rel = path.strip_prefix(root).unwrap_or(path);
        for t in &suite.tasks {
            if [&t.train, &t.eval, &t.test]
                .iter()
                .any(|f| Path::new(f) == rel)
            {
                return parse_metric(&t.metric, "suite.json");
            }
        }
        if Path::new(&suite.old_knowledge.test) == rel {
            return parse_metric(&suite.old_knowledge.metric, "suite.json");
        }
    }
    let examples = clreg_engine::data::read_trace(path)
        .map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    if examples.iter().all(|e| e.choices.is_some()) {
        Ok(Metric::Mc)
    } else {
        Err(unknown())
    }
}

/// The tasks of an eval: `FILE[:METRIC]` arguments and a suite's test sets.
fn eval_tasks(a: &EvalArgs) -> Result<Vec<(String, PathBuf, Metric)>, LocalError> {
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let (path, metric) = match spec.rsplit_once(':') {
            Some((file, m)) if m.parse::<Metric>().is_ok() => {
                (PathBuf::from(file), parse_metric(m, spec)?)
            }
            _ => {
                let path = PathBuf::from(spec);
                let metric = infer_metric(&path)?;
                (path, metric)
            }
        };
        let name = path
            .parent()
            .and_then(Path::file_name)
            .or(path.file_stem())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string());
        tasks.push((name, path, metric));
    }
    if let Some(dir) = &a.suite {
        let suite = read_suite(dir)?;
        for t in &suite.tasks {
            let metric = parse_metric(&t.metric, "suite.json")?;
            tasks.push((t.name.clone(), dir.join(&t.test), metric));
        }
        let ok = &suite.old_knowledge;
        let metric = parse_metric(&ok.metric, "suite.json")?;
        tasks.push((ok.name.clone(), dir.join(&ok.test), metric));
    }
    if tasks.is_empty() {
        return Err(LocalError::usage(
            "no tasks: pass --tasks FILE[:METRIC]… or --suite DIR",
        ));
    }
    Ok(tasks)
}

pub async fn eval(ctx: &Ctx, a: EvalArgs) -> Result<ExitStatus> {
    let tasks = eval_tasks(&a)?;
    let spec = JobSpec::Eval(EvalSpec {
        model: a.model.clone(),
        adapters: a.adapter.clone(),
        bundle_base: None,
        tasks: tasks
            .into_iter()
            .map(|(name, path, metric)| EvalTask { name, path, metric })
            .collect(),
        options: EvalOptions {
            batch_size: a.batch_size,
            max_new_tokens: a.max_tokens,
            limit: a.limit,
            ..EvalOptions::default()
        },
        output: a.output.clone(),
    });
    let quiet = ctx.out.is_quiet();
    let report = move |e: JobEvent| {
        if quiet {
            return;
        }
        match e {
            JobEvent::Evaluating { task, done, total }
                if done == total || done.is_multiple_of(32) =>
            {
                eprintln!("{task}: {done}/{total}");
            }
            JobEvent::Scored {
                task,
                metric,
                score,
                n,
                seconds,
            } => eprintln!(
                "{task}: {} = {score:.4} over {n} examples ({seconds:.1} s)",
                metric_name(metric)
            ),
            _ => {}
        }
    };
    let JobOutput::Eval { reports } = run_local(spec, Digests::default(), report).await? else {
        return Err(LocalError::protocol("an eval job returned another kind of output").into());
    };
    ctx.out.emit(&reports, || {
        reports
            .iter()
            .map(|r| {
                format!(
                    "{:<16} {:<12} {:.4}  (n = {})",
                    r.task,
                    metric_name(r.metric),
                    r.score,
                    r.n
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(ExitStatus::Success)
}

fn metric_name(m: Metric) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub fn bwt(ctx: &Ctx, a: BwtArgs) -> Result<ExitStatus> {
    let bytes = std::fs::read(&a.matrix)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", a.matrix.display())))?;
    let matrix: ScoreMatrix = serde_json::from_slice(&bytes).map_err(|e| {
        LocalError::usage(format!(
            "{}: not a score matrix ({e}); expected {{\"tasks\": [...], \"rounds\": [[...]], \
             \"base\": [...]}}",
            a.matrix.display()
        ))
    })?;
    let report =
        transfer(&matrix).map_err(|e| LocalError::refused("invalid_matrix", e.to_string()))?;
    let pct = |x: f64| format!("{:+.1}%", 100.0 * x);
    let opt = |x: Option<f64>| x.map(pct).unwrap_or_else(|| "—".into());
    ctx.out.emit(&report, || {
        let mut lines = vec![
            format!("BWT  {}", pct(report.bwt)),
            format!("FWT  {}", opt(report.fwt)),
            format!("final average  {:.4}", report.final_average),
            format!("average gain over base  {}", opt(report.average_gain)),
            String::new(),
            format!("{:<16} {:>12} {:>10}", "task", "relative BWT", "gain"),
        ];
        for (j, task) in matrix.tasks.iter().enumerate() {
            let gain = report
                .gain
                .as_ref()
                .and_then(|g| g.get(j).copied().flatten());
            lines.push(format!(
                "{task:<16} {:>12} {:>10}",
                opt(report.relative_bwt.get(j).copied().flatten()),
                opt(gain)
            ));
        }
        lines.push(String::new());
        lines.push(report.normalisation.clone());
        lines.join("\n")
    })?;
    Ok(ExitStatus::Success)
}

pub fn synth(ctx: &Ctx, a: SynthArgs) -> Result<ExitStatus> {
    let sizes = clreg_engine::synth::SuiteSizes {
        train: a.train,
        eval: a.eval,
        test: a.test,
    };
    let suite = clreg_engine::synth::write_suite(&a.output, a.seed, sizes)
        .map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    ctx.out.emit(&suite, || {
        let mut lines: Vec<String> = suite
            .tasks
            .iter()
            .map(|t| {
                format!(
                    "{:<12} {:<15} {:<12} train {} / eval {} / test {}",
                    t.name, t.kind, t.metric, t.counts.train, t.counts.eval, t.counts.test
                )
            })
            .collect();
        lines.push(format!(
            "{:<12} {:<15} {:<12} test {}",
            suite.old_knowledge.name, "old knowledge", suite.old_knowledge.metric, "facts"
        ));
        lines.push(format!(
            "wrote the suite (seed {}) to {}",
            suite.seed,
            a.output.display()
        ));
        lines.join("\n")
    })?;
    Ok(ExitStatus::Success)
}

pub fn split(ctx: &Ctx, a: SplitArgs) -> Result<ExitStatus> {
    let examples = clreg_engine::data::read_trace(&a.file)
        .map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    let parts = clreg_engine::data::split(examples, a.eval, a.test, a.seed)
        .map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    let files = [
        ("train", &parts.train),
        ("eval", &parts.eval),
        ("test", &parts.test),
    ];
    for (name, _) in &files {
        let path = a.output.join(format!("{name}.json"));
        if path.exists() {
            return Err(LocalError::usage(format!(
                "{} exists; choose another output directory",
                path.display()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(&a.output)
        .map_err(|e| LocalError::usage(format!("cannot create {}: {e}", a.output.display())))?;
    for (name, examples) in &files {
        let path = a.output.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(examples)? + "\n";
        std::fs::write(&path, text)
            .map_err(|e| LocalError::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let counts = serde_json::json!({
        "train": parts.train.len(), "eval": parts.eval.len(), "test": parts.test.len(),
        "seed": a.seed, "dir": a.output,
    });
    ctx.out.emit(&counts, || {
        format!(
            "train {} / eval {} / test {} examples (seed {}) in {}",
            parts.train.len(),
            parts.eval.len(),
            parts.test.len(),
            a.seed,
            a.output.display()
        )
    })?;
    Ok(ExitStatus::Success)
}
