//! External executors: a worker hands its `train` jobs to the scheduler an organisation already
//! runs (Slurm, Kubernetes) or to any command, instead of running the engine itself. Everything
//! around the run stays the worker's: the policy gate, staging, the lease, the commit with its
//! lineage, and removing job-scoped data when the run ends.
//!
//! The contract is the one `clreg-server run-job` speaks over its pipes, moved onto a shared
//! filesystem (the worker's `data_dir`, mounted at the same path where the job runs):
//!
//! - the worker writes `order.json` ([`super::runner::Order`]) and the shipped PyTorch + PEFT
//!   trainer (`trainer/clreg_trainer.py`, the copy built into this binary) into the attempt's
//!   directory, and starts the rendered job;
//! - the job appends [`super::runner::Line`]s to `progress.jsonl`: events, then `done` or
//!   `failed`; the worker follows the file as it grows;
//! - the job writes its output (a PEFT adapter or a Hugging Face checkpoint with
//!   `clreg_train.json`) into the spec's `output`, which the worker checks against what it
//!   staged ([`verify_record`]) and commits.
//!
//! Rendering ([`render_command`], [`render_slurm`], [`render_kubernetes`]) is pure, so the
//! script and manifest are snapshot-tested; [`Run`] starts them and follows them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clreg_engine::train::TrainRecord;
use serde::Deserialize;

mod render;
mod run;

pub use render::{render_command, render_kubernetes, render_slurm, shell_quote};
pub use run::Run;

/// The trainer a rendered job runs, built into the worker so that both always agree.
pub const TRAINER: &str = include_str!("../../../../trainer/clreg_trainer.py");

/// Who runs a worker's train jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// The worker's own engine, in a child process.
    #[default]
    Engine,
    /// A local command rendered from a template (`command`).
    Command,
    /// A Slurm batch job, submitted with `sbatch --wait`.
    Slurm,
    /// A Kubernetes Job, applied with `kubectl` and polled.
    Kubernetes,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "engine" => Ok(Self::Engine),
            "command" => Ok(Self::Command),
            "slurm" => Ok(Self::Slurm),
            "kubernetes" => Ok(Self::Kubernetes),
            _ => Err(format!(
                "`{s}` is not an executor: use engine, command, slurm or kubernetes"
            )),
        }
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Engine => "engine",
            Self::Command => "command",
            Self::Slurm => "slurm",
            Self::Kubernetes => "kubernetes",
        })
    }
}

/// `[executor]` of the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    /// The Python where the job runs, with torch, transformers, peft and accelerate; taken as
    /// written (`python3`, `/shared/venv/bin/python`).
    pub python: String,
    /// `command`: the command line, run by `sh -c`. Placeholders (each shell-quoted):
    /// `{python}` (verbatim), `{trainer}`, `{order}`, `{progress}`, `{dir}`, `{name}`, `{job}`,
    /// `{attempt}`. Default: `{python} {trainer} --order {order} --progress {progress}`.
    pub command: String,
    /// Extra `accelerate launch` options when a job has several GPUs (`--use_fsdp …`).
    pub accelerate_args: String,
    /// How often the state of a Kubernetes Job is read, in seconds.
    pub poll_secs: u64,
    pub slurm: SlurmConfig,
    pub kubernetes: KubernetesConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Engine,
            python: "python3".into(),
            command: "{python} {trainer} --order {order} --progress {progress}".into(),
            accelerate_args: String::new(),
            poll_secs: 10,
            slurm: SlurmConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// `[executor.slurm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub nodes: u32,
    pub gpus_per_node: u32,
    pub cpus_per_task: Option<u32>,
    /// `--mem`, as Slurm writes it (`64G`).
    pub mem: Option<String>,
    /// `--time`, as Slurm writes it (`04:00:00`).
    pub time: Option<String>,
    /// Further `#SBATCH` options, each as on the command line (`--qos=high`).
    pub options: Vec<String>,
    /// Shell lines run before the trainer (`module load cuda/12.4`, `source /shared/venv/bin/activate`).
    pub setup: Vec<String>,
    pub sbatch: String,
    pub scancel: String,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            nodes: 1,
            gpus_per_node: 1,
            cpus_per_task: None,
            mem: None,
            time: None,
            options: Vec::new(),
            setup: Vec::new(),
            sbatch: "sbatch".into(),
            scancel: "scancel".into(),
        }
    }
}

/// `[executor.kubernetes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    pub namespace: String,
    /// An image with Python, torch, transformers, peft and accelerate.
    pub image: String,
    pub gpus: u32,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// The PersistentVolumeClaim holding the worker's `data_dir`; mounted at the same path.
    pub volume_claim: String,
    pub service_account: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// Seconds Kubernetes keeps a finished Job (the worker deletes it first when it can).
    pub ttl_secs_after_finished: u32,
    pub kubectl: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            image: String::new(),
            gpus: 1,
            cpu: None,
            memory: None,
            volume_claim: String::new(),
            service_account: None,
            node_selector: BTreeMap::new(),
            ttl_secs_after_finished: 600,
            kubectl: "kubectl".into(),
        }
    }
}

const PLACEHOLDERS: [&str; 8] = [
    "python", "trainer", "order", "progress", "dir", "name", "job", "attempt",
];

impl ExecutorConfig {
    /// Refuses settings that cannot work, saying what to change.
    pub fn check(&self, data_dir: &Path) -> Result<(), String> {
        if self.kind == ExecutorKind::Engine {
            return Ok(());
        }
        if !data_dir.is_absolute() {
            return Err(format!(
                "executor `{}` needs an absolute data_dir (now `{}`) on a filesystem the jobs see at the same path",
                self.kind,
                data_dir.display()
            ));
        }
        if self.kind == ExecutorKind::Command {
            let mut rest = self.command.as_str();
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').ok_or_else(|| {
                    "executor.command has a `{` without `}`: placeholders are {name}".to_string()
                })? + open;
                let word = &rest[open + 1..close];
                if !PLACEHOLDERS.contains(&word) {
                    return Err(format!(
                        "executor.command names `{{{word}}}`: use {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    ));
                }
                rest = &rest[close + 1..];
            }
        }
        if self.kind == ExecutorKind::Kubernetes {
            if self.kubernetes.image.trim().is_empty() {
                return Err("executor.kubernetes.image is empty: name an image with Python, torch, transformers, peft and accelerate".into());
            }
            if self.kubernetes.volume_claim.trim().is_empty() {
                return Err("executor.kubernetes.volume_claim is empty: name the PersistentVolumeClaim that holds the worker's data_dir".into());
            }
        }
        if self.kind == ExecutorKind::Slurm && (self.slurm.nodes == 0) {
            return Err("executor.slurm.nodes is 0: give at least 1".into());
        }
        Ok(())
    }
}

/// One attempt of one job, as an executor runs it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub job: uuid::Uuid,
    pub attempt: i32,
    /// The attempt's directory on the shared filesystem.
    pub dir: PathBuf,
}

impl Invocation {
    /// A name every scheduler accepts (Kubernetes: lowercase, ≤ 63 characters).
    pub fn name(&self) -> String {
        let id = self.job.simple().to_string();
        format!("clreg-{}-{}", &id[..12], self.attempt)
    }
    pub fn order(&self) -> PathBuf {
        self.dir.join("order.json")
    }
    pub fn progress(&self) -> PathBuf {
        self.dir.join("progress.jsonl")
    }
    pub fn trainer(&self) -> PathBuf {
        self.dir.join("clreg_trainer.py")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("executor.log")
    }
}

/// Checks an external run's record against what the worker gave it: the same settings, and
/// for every input file and dataset the digest the registry holds. A trainer elsewhere writes
/// the record the lineage comes from, so nothing in it is taken on trust.
pub fn verify_record(
    record: &TrainRecord,
    config: &clreg_engine::train::TrainConfig,
    known: &std::collections::HashMap<PathBuf, String>,
    data: &[(PathBuf, String)],
) -> Result<(), String> {
    if &record.config != config {
        return Err(
            "the trainer's clreg_train.json records other settings than the job's".to_string(),
        );
    }
    let inputs = std::iter::once((&record.base.path, &record.base.files))
        .chain(record.adapters.iter().map(|a| (&a.path, &a.files)));
    for (dir, files) in inputs {
        if files.is_empty() {
            return Err(format!(
                "the trainer's record lists no file of input {}",
                dir.display()
            ));
        }
        for f in files {
            let path = dir.join(&f.file);
            match known.get(&path) {
                Some(hex) if *hex == f.sha256 => {}
                Some(hex) => {
                    return Err(format!(
                        "the trainer's record gives {} sha256 {}, but the registry's is {hex}",
                        path.display(),
                        f.sha256
                    ));
                }
                None => {
                    return Err(format!(
                        "the trainer's record names {}, which the worker did not stage",
                        path.display()
                    ));
                }
            }
        }
    }
    let given: BTreeMap<&Path, &str> = data
        .iter()
        .map(|(p, h)| (p.as_path(), h.as_str()))
        .collect();
    if record.data.len() != given.len() {
        return Err(format!(
            "the trainer's record lists {} dataset files, the job gave {}",
            record.data.len(),
            given.len()
        ));
    }
    for d in &record.data {
        match given.get(d.path.as_path()) {
            Some(hex) if *hex == d.sha256 => {}
            _ => {
                return Err(format!(
                    "the trainer's record names dataset {} with sha256 {}, which the job did not give it",
                    d.path.display(),
                    d.sha256
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused_with_what_to_change() {
        let abs = Path::new("/srv/clreg");
        let with = |f: &dyn Fn(&mut ExecutorConfig)| {
            let mut c = ExecutorConfig::default();
            f(&mut c);
            c.check(abs)
        };
        assert!(
            ExecutorConfig::default()
                .check(Path::new("relative"))
                .is_ok()
        );
        let relative = ExecutorConfig {
            kind: ExecutorKind::Command,
            ..Default::default()
        }
        .check(Path::new("clreg-data"))
        .unwrap_err();
        assert!(relative.contains("absolute data_dir"), "{relative}");
        let placeholder = with(&|c| {
            c.kind = ExecutorKind::Command;
            c.command = "{python} {script}".into();
        })
        .unwrap_err();
        assert!(placeholder.contains("`{script}`"), "{placeholder}");
        let image = with(&|c| c.kind = ExecutorKind::Kubernetes).unwrap_err();
        assert!(image.contains("kubernetes.image"), "{image}");
        let claim = with(&|c| {
            c.kind = ExecutorKind::Kubernetes;
            c.kubernetes.image = "img".into();
        })
        .unwrap_err();
        assert!(claim.contains("volume_claim"), "{claim}");
        assert!(with(&|c| c.kind = ExecutorKind::Slurm).is_ok());
        assert!("pbs".parse::<ExecutorKind>().unwrap_err().contains("slurm"));
    }
}
