//! `clreg_mix.json`: the record written beside every mixture (kind, base and experts with their
//! file digests, router init mode, prompts' digests, seed, top-k, condition numbers, parameter
//! counts, router training, warnings, the recipe).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::FormatError;
use crate::merge::record::FileHash;
use crate::moe::recipe::MoeRecipe;
use crate::moe::router::RouterCheck;

/// The record's file name.
pub const MIX_RECORD: &str = "clreg_mix.json";

/// Parameter counts of a mixture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    /// Everything shared by all experts: embeddings, attention, norms, output layer.
    pub stem: u64,
    /// All experts' own parameters.
    pub experts: u64,
    pub router: u64,
    pub total: u64,
    /// What one token runs through: stem, routers and top-k experts.
    pub active: u64,
}

/// One expert in the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertRecord {
    pub source: PathBuf,
    /// `checkpoint` or `adapter`.
    pub kind: String,
    pub files: Vec<FileHash>,
    pub positive_prompts: usize,
    pub negative_prompts: usize,
    /// sha256 of the JSON array of the positive prompts.
    pub positive_prompts_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompts_sha256: Option<String>,
    /// LoRA-MoE: the expert's rank before padding, and its scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
}

/// How the routers were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterRecord {
    pub init: String,
    pub seed: u64,
    pub top_k: usize,
    /// `softmax` (top-k, renormalised) or `sigmoid` (dense).
    pub gate_norm: String,
    #[serde(flatten)]
    pub check: RouterCheck,
}

/// Router training, when it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub data: PathBuf,
    pub data_sha256: String,
    pub steps: usize,
    pub learning_rate: f64,
    pub aux_loss_coef: f64,
    pub seed: u64,
    pub sequences: usize,
    pub first_loss: f64,
    pub last_loss: f64,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixRecord {
    pub clreg_version: String,
    /// `mixtral` (full experts) or `lora_moe`.
    pub kind: String,
    pub base: PathBuf,
    pub base_files: Vec<FileHash>,
    pub experts: Vec<ExpertRecord>,
    pub router: RouterRecord,
    pub parameters: ParamCounts,
    pub output_dtype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
    pub warnings: Vec<String>,
    pub recipe: MoeRecipe,
}

impl MixRecord {
    /// Writes the record into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), FormatError> {
        crate::formats::output::write_json(&dir.join(MIX_RECORD), self)
    }

    /// Reads the record of `dir`.
    pub fn read(dir: &Path) -> Result<Self, FormatError> {
        let path = dir.join(MIX_RECORD);
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| FormatError::io(&name, e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| FormatError::io(&name, e.to_string()))
    }
}
