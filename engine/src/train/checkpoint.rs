//! Training checkpoints: `<dir>/step-<N>/` holds the trainable parameters, AdamW's moments and
//! the run's state, each in f32 exactly as in memory, so a resumed run continues bit for bit.
//! Written through a staging directory; the two newest are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::TrainConfig;
use super::optim::{AdamW, Moments};
use super::record::{DataInput, StepRecord};
use crate::formats::{OutDtype, SafetensorsWriter, Staging, TensorSpec, stfile::StFile};
use crate::merge::record::FileHash;

const PARAMS: &str = "params.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";
const KEEP: usize = 2;

/// Everything about a run besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Optimizer steps completed.
    pub step: usize,
    pub config: TrainConfig,
    pub base_files: Vec<FileHash>,
    pub data: Vec<DataInput>,
    pub losses: Vec<StepRecord>,
    pub tokens: usize,
    pub wall_seconds: f64,
}

/// A parameter as the checkpoint stores it.
pub struct Stored<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: &'a [f32],
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Format(crate::error::FormatError::io(
        &path.display().to_string(),
        e.to_string(),
    ))
}

/// Writes checkpoint `step` under `root` and prunes older ones; returns its directory.
pub fn save(
    root: &Path,
    params: &[Stored<'_>],
    adam: &AdamW,
    state: &State,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let target = root.join(format!("step-{:07}", state.step));
    let staging = Staging::new(&target)?;
    let specs = params
        .iter()
        .map(|p| TensorSpec::new(p.name, p.shape.to_vec(), OutDtype::Float32))
        .collect();
    let mut w = SafetensorsWriter::create(&staging.path().join(PARAMS), specs)?;
    for p in params {
        w.write(p.name, p.values)?;
    }
    w.finish()?;
    let mut specs = Vec::new();
    for p in params {
        specs.push(TensorSpec::new(
            format!("m.{}", p.name),
            p.shape.to_vec(),
            OutDtype::Float32,
        ));
        specs.push(TensorSpec::new(
            format!("v.{}", p.name),
            p.shape.to_vec(),
            OutDtype::Float32,
        ));
    }
    let mut w = SafetensorsWriter::create(&staging.path().join(OPTIMIZER), specs)?;
    for (p, mo) in params.iter().zip(&adam.moments) {
        w.write(&format!("m.{}", p.name), &mo.m)?;
        w.write(&format!("v.{}", p.name), &mo.v)?;
    }
    w.finish()?;
    let state_path = staging.path().join(STATE);
    let text = serde_json::to_string_pretty(state).map_err(|e| io(&state_path, e))?;
    std::fs::write(&state_path, text).map_err(|e| io(&state_path, e))?;
    let dir = staging.commit()?;
    let mut all = list(root);
    while all.len() > KEEP {
        let old = all.remove(0);
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dir)
}

/// Checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE).exists().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// A loaded checkpoint.
pub struct Loaded {
    pub state: State,
    pub params: Vec<Vec<f32>>,
    pub moments: Vec<Moments>,
}

/// Reads the checkpoint in `dir` for parameters `names`.
pub fn load(dir: &Path, names: &[&str]) -> Result<Loaded, TrainError> {
    let bad = |reason: String| TrainError::Resume {
        checkpoint: dir.display().to_string(),
        reason,
    };
    let state_path = dir.join(STATE);
    let bytes = std::fs::read(&state_path).map_err(|e| bad(format!("no {STATE}: {e}")))?;
    let state: State =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{STATE} is unreadable: {e}")))?;
    let params_file = StFile::open(&dir.join(PARAMS))?;
    let opt_file = StFile::open(&dir.join(OPTIMIZER))?;
    let mut params = Vec::new();
    let mut moments = Vec::new();
    for name in names {
        if params_file.info().get(name).is_none() {
            return Err(bad(format!(
                "it has no parameter `{name}`: it was written by a run with other settings"
            )));
        }
        params.push(params_file.read_f32(name)?);
        moments.push(Moments {
            m: opt_file.read_f32(&format!("m.{name}"))?,
            v: opt_file.read_f32(&format!("v.{name}"))?,
        });
    }
    if params_file.info().tensors.len() != names.len() {
        return Err(bad(format!(
            "it holds {} parameters, this run trains {}",
            params_file.info().tensors.len(),
            names.len()
        )));
    }
    Ok(Loaded {
        state,
        params,
        moments,
    })
}
