//! One interface for every long engine operation, shared by `clreg local …` and the registry's
//! workers: a serde [`JobSpec`] whose inputs are local paths the caller resolved, one
//! [`RunContext`] (cancel flag, progress events, digest source, device), one [`run`], one
//! [`JobError`] carrying a [`Code`].
//!
//! A worker hands a spec to a child process as JSON and reads its [`JobEvent`]s back as JSON
//! lines; the CLI prints them. Nothing here knows about HTTP, databases or tokio.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::eval::{EvalOptions, Metric, TaskReport};
use crate::merge::record::Digests;
use crate::merge::{MergeReport, Recipe};
use crate::moe::{MixReport, MoeRecipe, RouterTraining, TrainProgress};
use crate::train::{DataCounts, DataInput};
use crate::train::{TrainConfig, TrainEvent, TrainJob, TrainRecord};

/// What to run. Every path is local: the caller (CLI or worker) resolved and staged inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    Merge(MergeSpec),
    Mix(MixSpec),
    Train(TrainSpec),
    Eval(EvalSpec),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeSpec {
    /// The recipe with local model paths.
    pub recipe: Recipe,
    pub output: PathBuf,
}

/// Which mixture a mix job writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MixLayout {
    /// Fine-tunes into a Mixtral checkpoint.
    #[default]
    Mixtral,
    /// Adapters into a LoRA-MoE bundle.
    LoraMoe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixSpec {
    pub recipe: MoeRecipe,
    pub output: PathBuf,
    #[serde(default)]
    pub layout: MixLayout,
    /// Train the routers on this data before the mixture is written.
    #[serde(default)]
    pub router_training: Option<RouterTraining>,
}

/// [`TrainJob`] without the device, which the run context gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSpec {
    pub base: PathBuf,
    #[serde(default)]
    pub adapters: Vec<PathBuf>,
    pub data: Vec<PathBuf>,
    #[serde(default)]
    pub past: Vec<PathBuf>,
    pub output: PathBuf,
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    #[serde(default)]
    pub resume: bool,
    pub config: TrainConfig,
}

/// One task of an evaluation: a TRACE file scored with one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTask {
    pub name: String,
    pub path: PathBuf,
    pub metric: Metric,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSpec {
    /// A Hugging Face checkpoint directory with `tokenizer.json`.
    pub model: PathBuf,
    /// Adapters stacked on it, in order.
    #[serde(default)]
    pub adapters: Vec<PathBuf>,
    /// When `model` is a LoRA-MoE bundle: its base's directory, used instead of the path the
    /// bundle records (the mixing machine's) and checked against the bundle's base digest.
    #[serde(default)]
    pub bundle_base: Option<PathBuf>,
    pub tasks: Vec<EvalTask>,
    #[serde(default)]
    pub options: EvalOptions,
    /// Where the JSON report goes, if anywhere.
    #[serde(default)]
    pub output: Option<PathBuf>,
}

/// Where tensor work runs. Written `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: use cpu or cuda:N")),
        }
    }
}

impl TryFrom<String> for Device {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// The candle device; `cuda:N` needs a build with the `cuda` feature and that GPU.
    pub fn candle(self) -> Result<candle_core::Device, JobError> {
        match self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            Device::Cuda(n) => candle_core::Device::new_cuda(n).map_err(|e| JobError {
                code: Code::InvalidOption,
                message: format!(
                    "device cuda:{n} is not available ({e}); build with `--features cuda` on a machine with that GPU, or use cpu"
                ),
            }),
        }
    }
}

/// What a running job reports. Owned and serialisable: a worker's child process writes one JSON
/// line per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Tensors written so far (merge, mix); `bytes_total` is 0 where it is not known ahead.
    Write {
        tensors_done: usize,
        tensors_total: usize,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// One router-training step of a mix.
    RouterStep(TrainProgress),
    /// Before the first training step: the data, the counts each task gives, the step count.
    Plan {
        data: Vec<DataInput>,
        counts: DataCounts,
        steps: usize,
        trainable_parameters: usize,
    },
    /// After each training step.
    Step {
        step: usize,
        steps: usize,
        loss: f64,
        lr: f64,
        tokens_per_second: f64,
        eta_seconds: f64,
    },
    /// A training checkpoint was written.
    Checkpoint { step: usize, path: PathBuf },
    /// Examples of one evaluation task done so far.
    Evaluating {
        task: String,
        done: usize,
        total: usize,
    },
    /// One evaluation task finished.
    Scored {
        task: String,
        metric: Metric,
        score: f64,
        n: usize,
        seconds: f64,
    },
    /// Something the user should know.
    Note { message: String },
}

impl JobEvent {
    /// How far along the job is, in [0, 1], where the event tells.
    pub fn fraction(&self) -> Option<f64> {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| (a / b).clamp(0.0, 1.0));
        match self {
            JobEvent::Write {
                tensors_done,
                tensors_total,
                bytes_done,
                bytes_total,
            } => ratio(*bytes_done as f64, *bytes_total as f64)
                .or_else(|| ratio(*tensors_done as f64, *tensors_total as f64)),
            JobEvent::RouterStep(p) => ratio(p.step as f64, p.steps as f64),
            JobEvent::Step { step, steps, .. } => ratio(*step as f64, *steps as f64),
            JobEvent::Evaluating { done, total, .. } => ratio(*done as f64, *total as f64),
            _ => None,
        }
    }
}

/// What a job produced. Adjacently tagged: the reports have `kind` fields of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "output", rename_all = "snake_case")]
pub enum JobOutput {
    Merge(MergeReport),
    Mix(MixReport),
    Train(TrainRecord),
    Eval { reports: Vec<TaskReport> },
}

/// Why a job failed: a stable code and a message that says what to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub code: Code,
    pub message: String,
}

macro_rules! job_error_from {
    ($($t:ty),+) => {$(
        impl From<$t> for JobError {
            fn from(e: $t) -> Self {
                JobError { code: e.code(), message: e.to_string() }
            }
        }
    )+};
}

job_error_from!(
    crate::FormatError,
    crate::merge::MergeError,
    crate::moe::MoeError,
    crate::train::TrainError,
    crate::model::ModelError
);

/// Everything a run needs besides its spec.
pub struct RunContext<'a> {
    /// Set to stop between steps; the job then fails with `cancelled` and writes nothing.
    pub cancel: &'a AtomicBool,
    pub events: &'a (dyn Fn(JobEvent) + Sync),
    /// Where input digests for provenance records come from (a cache, or the registry).
    pub digests: Digests,
    pub device: Device,
}

/// Runs one job to its end.
pub fn run(spec: &JobSpec, ctx: &RunContext<'_>) -> Result<JobOutput, JobError> {
    match spec {
        JobSpec::Merge(m) => {
            let mut recipe = m.recipe.clone();
            recipe.digests = ctx.digests.clone();
            let progress = |p: crate::merge::Progress| (ctx.events)(write_event(&p));
            Ok(JobOutput::Merge(crate::merge::run_recipe(
                &recipe, &m.output, &progress, ctx.cancel,
            )?))
        }
        JobSpec::Mix(m) => {
            let mut recipe = m.recipe.clone();
            recipe.digests = ctx.digests.clone();
            let progress = |p: crate::merge::Progress| (ctx.events)(write_event(&p));
            let step = |p: TrainProgress| (ctx.events)(JobEvent::RouterStep(p));
            let mix = match m.layout {
                MixLayout::LoraMoe => crate::moe::mix_lora,
                MixLayout::Mixtral => crate::moe::mix_mixtral,
            };
            let report = mix(
                &recipe,
                &m.output,
                m.router_training.as_ref(),
                &progress,
                &step,
                ctx.cancel,
            )?;
            Ok(JobOutput::Mix(report))
        }
        JobSpec::Train(t) => {
            let job = TrainJob {
                base: t.base.clone(),
                adapters: t.adapters.clone(),
                data: t.data.clone(),
                past: t.past.clone(),
                output: t.output.clone(),
                checkpoint_dir: t.checkpoint_dir.clone(),
                checkpoint_every: t.checkpoint_every,
                resume: t.resume,
                config: t.config.clone(),
                device: ctx.device.candle()?,
            };
            let mut events = |e: TrainEvent<'_>| (ctx.events)(train_event(e));
            Ok(JobOutput::Train(crate::train::train(
                &job,
                &mut events,
                ctx.cancel,
            )?))
        }
        JobSpec::Eval(e) => evaluate(e, ctx),
    }
}

fn write_event(p: &crate::merge::Progress) -> JobEvent {
    JobEvent::Write {
        tensors_done: p.tensors_done,
        tensors_total: p.tensors_total,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
    }
}

fn train_event(e: TrainEvent<'_>) -> JobEvent {
    match e {
        TrainEvent::Plan {
            data,
            counts,
            steps,
            trainable_parameters,
        } => JobEvent::Plan {
            data: data.to_vec(),
            counts: counts.clone(),
            steps,
            trainable_parameters,
        },
        TrainEvent::Note(n) => JobEvent::Note {
            message: n.to_string(),
        },
        TrainEvent::Step {
            step,
            steps,
            loss,
            lr,
            tokens_per_second,
            eta_seconds,
        } => JobEvent::Step {
            step,
            steps,
            loss,
            lr,
            tokens_per_second,
            eta_seconds,
        },
        TrainEvent::Checkpoint { step, path } => JobEvent::Checkpoint {
            step,
            path: path.to_path_buf(),
        },
    }
}

fn evaluate(spec: &EvalSpec, ctx: &RunContext<'_>) -> Result<JobOutput, JobError> {
    if spec.tasks.is_empty() {
        return Err(JobError {
            code: Code::NoTasks,
            message: "an evaluation needs at least one task".into(),
        });
    }
    let device = ctx.device.candle()?;
    let dtype = candle_core::DType::F32;
    let mut model = match &spec.bundle_base {
        Some(base) => {
            crate::moe::lora_moe::load_bundle_on(&spec.model, base, &device, dtype, true)?.0
        }
        None => crate::model::load(&spec.model, &device, dtype)?.0,
    };
    for dir in &spec.adapters {
        model.add_adapter_dir(dir)?;
    }
    let tok = crate::model::load_tokenizer(&spec.model.join("tokenizer.json"))?;
    let eos = model.eos_token_ids();
    let mut reports = Vec::new();
    for task in &spec.tasks {
        let examples = crate::data::read_trace(&task.path)?;
        let mut progress = |done: usize, total: usize| {
            (ctx.events)(JobEvent::Evaluating {
                task: task.name.clone(),
                done,
                total,
            })
        };
        let report = crate::eval::evaluate_task(
            &model,
            &tok,
            &task.name,
            &examples,
            task.metric,
            &eos,
            &spec.options,
            &mut progress,
            ctx.cancel,
        )?;
        (ctx.events)(JobEvent::Scored {
            task: task.name.clone(),
            metric: task.metric,
            score: report.score,
            n: report.n,
            seconds: report.seconds,
        });
        reports.push(report);
    }
    if let Some(out) = &spec.output {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| JobError {
            code: Code::IoError,
            message: format!("cannot encode the report: {e}"),
        })? + "\n";
        std::fs::write(out, text).map_err(|e| JobError {
            code: Code::IoError,
            message: format!("cannot write {}: {e}", out.display()),
        })?;
    }
    Ok(JobOutput::Eval { reports })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn devices_read_and_write_as_text() {
        for (text, device) in [("cpu", Device::Cpu), ("cuda:1", Device::Cuda(1))] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
            assert_eq!(device.to_string(), text);
            let json = serde_json::to_string(&device).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Device>(&json).unwrap(), device);
        }
        assert!("gpu".parse::<Device>().is_err());
    }

    /// A worker reads a job's output back from JSON: every kind of output must survive the
    /// trip (a mix report's own `kind` once collided with the tag).
    #[test]
    fn a_mix_output_reads_back_from_json() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let tiny = crate::tiny::TinyConfig::default();
        std::fs::create_dir_all(&base).unwrap();
        crate::tiny::write_tiny_llama(&base, &tiny, 1, None).unwrap();
        let recipe = MoeRecipe::from_yaml(&format!(
            "base_model: {0}\ngate_mode: random\nseed: 2\nexperts:\n  - source_model: {0}\n  - source_model: {0}\n",
            base.display()
        ))
        .unwrap();
        let spec = JobSpec::Mix(MixSpec {
            recipe,
            output: dir.path().join("out"),
            layout: MixLayout::Mixtral,
            router_training: None,
        });
        let cancel = AtomicBool::new(false);
        let ctx = RunContext {
            cancel: &cancel,
            events: &|_| {},
            digests: Digests::default(),
            device: Device::Cpu,
        };
        let output = run(&spec, &ctx).unwrap();
        let json = serde_json::to_string(&output).unwrap();
        assert_eq!(serde_json::from_str::<JobOutput>(&json).unwrap(), output);
    }
}
