//! The mixing recipe: mergekit-moe's YAML subset (`base_model`, `gate_mode`, `experts` with
//! `source_model` and prompts, `experts_per_token`, `dtype`) plus a few clreg keys, checked and
//! resolved into a [`MoePlan`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::formats::dtype::OutDtype;
use crate::model::GateNorm;
use crate::moe::error::MoeError;

/// How routers are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMode {
    /// Per layer, the base's hidden state at the last token of each prompt, averaged.
    Hidden,
    /// As `hidden`, with the mean over the prompt's tokens instead of the last token.
    HiddenAvg,
    /// The normalised sum of the prompts' token embeddings, the same for every layer.
    CheapEmbed,
    /// N(0, 0.02²), seeded.
    Random,
    /// A zero router: every expert gets the same weight, all experts active (dense).
    Uniform,
}

impl GateMode {
    pub const ALL: [(&'static str, GateMode); 5] = [
        ("hidden", GateMode::Hidden),
        ("hidden_avg", GateMode::HiddenAvg),
        ("cheap_embed", GateMode::CheapEmbed),
        ("random", GateMode::Random),
        ("uniform", GateMode::Uniform),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, m)| *m)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether the mode reads the experts' prompts.
    pub fn needs_prompts(self) -> bool {
        matches!(self, Self::Hidden | Self::HiddenAvg | Self::CheapEmbed)
    }
}

/// A recipe as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeRecipe {
    pub base_model: PathBuf,
    /// `hidden` (default), `hidden_avg`, `cheap_embed`, `random` or `uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_mode: Option<String>,
    pub experts: Vec<RecipeExpert>,
    /// Top-k (default 2; every expert with `uniform`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts_per_token: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// clreg: the seed of `random` routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// clreg: average the non-MLP tensors over the experts instead of taking the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_non_mlp: Option<bool>,
    /// clreg, LoRA-MoE: `softmax` (top-k, default) or `sigmoid` (dense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_norm: Option<GateNorm>,
    /// clreg, LoRA-MoE: the rank of LoRA experts made from full fine-tunes (truncated SVD of
    /// the delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// clreg, LoRA-MoE: the modules full fine-tunes are decomposed on (default: all seven).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u64>,
    /// Where input digests come from (not in the YAML; hashing by default).
    #[serde(skip)]
    pub digests: crate::merge::record::Digests,
}

/// One expert of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeExpert {
    pub source_model: PathBuf,
    #[serde(default)]
    pub positive_prompts: Vec<String>,
    #[serde(default)]
    pub negative_prompts: Vec<String>,
    /// clreg: a calibration file of positive prompts (one per line, or JSON lines with
    /// `prompt` or `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_file: Option<PathBuf>,
}

/// One expert with its prompts read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanExpert {
    pub source: PathBuf,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

/// A checked recipe with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoePlan {
    pub base: PathBuf,
    pub gate_mode: GateMode,
    pub experts: Vec<PlanExpert>,
    pub top_k: usize,
    /// `None`: each tensor keeps its source dtype.
    pub dtype: Option<OutDtype>,
    pub seed: u64,
    pub average_non_mlp: bool,
    pub gate_norm: GateNorm,
    pub rank: Option<usize>,
    pub lora_targets: Vec<String>,
    pub shard_size: u64,
    pub warnings: Vec<String>,
}

/// The seven linear modules LoRA experts made from full fine-tunes cover by default.
pub const DEFAULT_LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Reads a prompts file: JSON lines with `prompt` or `text`, else one prompt per line.
pub fn read_prompts_file(path: &Path) -> Result<Vec<String>, MoeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MoeError::input(path.display(), format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                MoeError::input(path.display(), format!("line {}: not JSON: {e}", i + 1))
            })?;
            let p = ["prompt", "text"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|s| s.as_str()));
            let Some(p) = p else {
                return Err(MoeError::input(
                    path.display(),
                    format!("line {}: no string `prompt` or `text`", i + 1),
                ));
            };
            out.push(p.to_string());
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(MoeError::input(path.display(), "holds no prompts"));
    }
    Ok(out)
}

impl MoeRecipe {
    /// Parses a recipe from YAML; unknown keys are refused, naming the key and its line.
    pub fn from_yaml(text: &str) -> Result<Self, MoeError> {
        crate::formats::yaml::check_recipe_text(text).map_err(MoeError::recipe)?;
        serde_yaml::from_str(text).map_err(|e| MoeError::recipe(e.to_string()))
    }

    /// Checks the recipe and fills in defaults; prompt files are read here.
    pub fn resolve(&self) -> Result<MoePlan, MoeError> {
        let mode_name = self.gate_mode.as_deref().unwrap_or("hidden");
        let gate_mode = GateMode::parse(mode_name).ok_or_else(|| {
            let names: Vec<&str> = GateMode::ALL.iter().map(|(n, _)| *n).collect();
            MoeError::recipe(format!(
                "unknown gate_mode `{mode_name}`; clreg offers {}",
                names.join(", ")
            ))
        })?;
        let n = self.experts.len();
        if n < 2 {
            return Err(MoeError::recipe(format!(
                "`experts` lists {n} expert(s); a mixture needs at least two"
            )));
        }
        let mut warnings = Vec::new();
        let top_k = match (gate_mode, self.experts_per_token) {
            (GateMode::Uniform, Some(k)) if k != n => {
                warnings.push(format!(
                    "gate_mode uniform mixes every expert densely: experts_per_token {k} \
                     becomes {n}"
                ));
                n
            }
            (GateMode::Uniform, _) => n,
            (_, Some(k)) => k,
            (_, None) => 2,
        };
        if top_k == 0 || top_k > n {
            return Err(MoeError::recipe(format!(
                "experts_per_token {top_k} must be between 1 and the number of experts ({n})"
            )));
        }
        let dtype = match &self.dtype {
            None => None,
            Some(d) => Some(OutDtype::parse(d).ok_or_else(|| {
                MoeError::recipe(format!(
                    "dtype `{d}` is not one of float32, float16, bfloat16"
                ))
            })?),
        };
        let mut experts = Vec::with_capacity(n);
        for (i, e) in self.experts.iter().enumerate() {
            let mut positive = e.positive_prompts.clone();
            if let Some(f) = &e.prompts_file {
                positive.extend(read_prompts_file(f)?);
            }
            if gate_mode.needs_prompts() && positive.is_empty() {
                return Err(MoeError::recipe(format!(
                    "expert {i} (`{}`) has no positive_prompts (or prompts_file); gate_mode \
                     {} routes by prompts: give each expert a few prompts of its task, or use \
                     gate_mode random",
                    e.source_model.display(),
                    gate_mode.name()
                )));
            }
            experts.push(PlanExpert {
                source: e.source_model.clone(),
                positive,
                negative: e.negative_prompts.clone(),
            });
        }
        if gate_mode.needs_prompts()
            && experts
                .iter()
                .all(|e| e.positive == experts[0].positive && e.negative == experts[0].negative)
        {
            return Err(MoeError::recipe(
                "every expert has the same prompts, so every router row would be the same and \
                 routing would be arbitrary; give each expert prompts of its own task",
            ));
        }
        if self.rank == Some(0) {
            return Err(MoeError::recipe("rank must be positive"));
        }
        let lora_targets = self
            .lora_targets
            .clone()
            .unwrap_or_else(|| DEFAULT_LORA_TARGETS.iter().map(|s| s.to_string()).collect());
        Ok(MoePlan {
            base: self.base_model.clone(),
            gate_mode,
            experts,
            top_k,
            dtype,
            seed: self.seed.unwrap_or(0),
            average_non_mlp: self.average_non_mlp.unwrap_or(false),
            gate_norm: self.gate_norm.unwrap_or_default(),
            rank: self.rank,
            lora_targets,
            shard_size: self
                .shard_size
                .unwrap_or(crate::merge::recipe::DEFAULT_SHARD_SIZE),
            warnings,
        })
    }
}
