//! `clreg_train.json`: the record written beside every training output — settings, seeds, the
//! sha256 of every input, data counts, the loss of every step, wall time and throughput.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::model_setup::AdapterInput;
use crate::merge::record::FileHash;

/// The record's file name.
pub const RECORD: &str = "clreg_train.json";

/// The base model of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseInput {
    pub path: PathBuf,
    pub files: Vec<FileHash>,
}

/// One dataset file of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInput {
    /// The task index in the schedule (0 = the current task).
    pub task: usize,
    /// `current` or `past`.
    pub role: String,
    pub path: PathBuf,
    pub sha256: String,
    pub examples: usize,
}

/// What tokenisation did to the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataCounts {
    /// Examples each task contributes per epoch (task 0 first).
    pub per_epoch: Vec<usize>,
    pub examples: usize,
    pub truncated_prompt: usize,
    pub truncated_answer: usize,
    pub tokens: usize,
    pub answer_tokens: usize,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// Mean cross-entropy per answer token.
    pub loss: f64,
    /// The O-LoRA term (λ-weighted), when it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orth: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    /// Token positions processed (rows × length of every micro-batch, padding included).
    pub tokens: usize,
    /// Wall time of the step (data, forward, backward, optimizer).
    pub seconds: f64,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub clreg_version: String,
    pub config: TrainConfig,
    /// `adapter` (PEFT) or `checkpoint` (Hugging Face).
    pub output_kind: String,
    pub base: BaseInput,
    pub adapters: Vec<AdapterInput>,
    pub data: Vec<DataInput>,
    pub counts: DataCounts,
    pub steps: usize,
    pub epochs: f64,
    pub trainable_parameters: usize,
    /// How the seeds were used, so that a run can be repeated.
    pub seeds: String,
    /// The step this run resumed from, when it did.
    pub resumed_from: Option<usize>,
    pub notes: Vec<String>,
    pub losses: Vec<StepRecord>,
    pub wall_seconds: f64,
    pub tokens: usize,
    pub tokens_per_second: f64,
}

/// The description of seed use stored in every record.
pub fn seeds_description(seed: u64) -> String {
    format!(
        "seed {seed}: data order of epoch e = clreg_engine::data::Mixture(seed) epoch e; LoRA A of \
         module i = Kaiming-uniform from splitmix64(seed ^ i*0x9e3779b97f4a7c15), B = 0; LoRA \
         dropout key of step s, micro-batch m = splitmix64(seed ^ (s << 20 | m)) first output \
         (clreg_engine::model::LoraDropout)"
    )
}
