//! Merge recipes: the mergekit YAML subset clreg reads, and its resolution into a checked plan
//! with every default filled in.
//!
//! ```yaml
//! merge_method: ties          # linear, task_arithmetic, ties, dare_ties, dare_linear, cat, svd, peft_ab
//! base_model: ./base
//! models:
//!   - model: ./a              # a checkpoint directory or a PEFT adapter directory
//!     parameters: {weight: 1.0, density: 0.5}
//! parameters: {lambda: 1.0, normalize: true, rescale: false}
//! dtype: bfloat16             # float32, float16, bfloat16; default: the base's
//! tokenizer_source: base      # the only source clreg supports
//! flavour: mergekit           # clreg: mergekit or peft
//! seed: 0                     # clreg: seeds DARE masks
//! ```
//!
//! Unknown keys are refused, naming the key. `parameters.int8_mask` is accepted and ignored (it
//! only changes mergekit's mask dtype). clreg extras in `parameters`: `sign_method`
//! (`sum`/`count`, alias `total`/`frequency`), `rank` (svd), `combination` (peft_ab: `linear`,
//! `ties`, `dare_ties`, `dare_linear`, `magnitude_prune`); top level: `shard_size` (bytes).
//! A model's `weight` defaults to 1 and its `density` to 1.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::formats::dtype::OutDtype;
use crate::merge::error::MergeError;
use crate::merge::peft::PeftCombination;
use crate::merge::task::SignMethod;

/// The merge methods clreg runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Linear,
    TaskArithmetic,
    Ties,
    DareTies,
    DareLinear,
    Cat,
    Svd,
    PeftAb,
}

impl Method {
    pub const ALL: &'static [(&'static str, Method)] = &[
        ("linear", Method::Linear),
        ("task_arithmetic", Method::TaskArithmetic),
        ("ties", Method::Ties),
        ("dare_ties", Method::DareTies),
        ("dare_linear", Method::DareLinear),
        ("cat", Method::Cat),
        ("svd", Method::Svd),
        ("peft_ab", Method::PeftAb),
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

    /// Whether the output is a LoRA adapter rather than a full checkpoint.
    pub fn outputs_adapter(self) -> bool {
        matches!(self, Self::Cat | Self::Svd | Self::PeftAb)
    }
}

/// Which tool's semantics the TIES/DARE family follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    #[default]
    Mergekit,
    Peft,
}

/// A recipe as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub merge_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<PathBuf>,
    #[serde(default)]
    pub models: Vec<RecipeModel>,
    #[serde(default)]
    pub parameters: RecipeParameters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavour: Option<Flavour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u64>,
    /// Where input digests come from (not in the YAML; hashing by default).
    #[serde(skip)]
    pub digests: crate::merge::record::Digests,
}

/// One input of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeModel {
    pub model: PathBuf,
    #[serde(default)]
    pub parameters: ModelParameters,
}

/// Per-model parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
}

/// Global parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_mask: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_method: Option<SignMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combination: Option<PeftCombination>,
}

/// One input of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanModel {
    pub path: PathBuf,
    pub weight: f64,
    pub density: f64,
}

/// A checked recipe with every default filled in; this is what the record stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergePlan {
    pub method: Method,
    pub flavour: Flavour,
    pub base: Option<PathBuf>,
    pub models: Vec<PlanModel>,
    pub lambda: f64,
    pub normalize: bool,
    pub rescale: bool,
    pub sign_method: SignMethod,
    pub seed: u64,
    /// `None`: each output tensor keeps its base tensor's dtype.
    pub dtype: Option<OutDtype>,
    pub shard_size: Option<u64>,
    /// svd: the output rank (default: the largest input rank).
    pub rank: Option<usize>,
    /// peft_ab: the combination applied to A and B.
    pub combination: Option<PeftCombination>,
    pub warnings: Vec<String>,
}

/// Hugging Face's default shard size.
pub const DEFAULT_SHARD_SIZE: u64 = 5_000_000_000;

impl Recipe {
    /// Parses a recipe from YAML; unknown keys are refused, naming the key and its line.
    pub fn from_yaml(text: &str) -> Result<Self, MergeError> {
        crate::formats::yaml::check_recipe_text(text).map_err(MergeError::recipe)?;
        serde_yaml::from_str(text).map_err(|e| MergeError::recipe(e.to_string()))
    }

    /// Checks the recipe and fills in defaults.
    pub fn resolve(&self) -> Result<MergePlan, MergeError> {
        let names: Vec<&str> = Method::ALL.iter().map(|(n, _)| *n).collect();
        let method = Method::parse(&self.merge_method).ok_or_else(|| {
            MergeError::recipe(format!(
                "unknown merge_method `{}`; clreg offers {}",
                self.merge_method,
                names.join(", ")
            ))
        })?;
        let p = &self.parameters;
        let mut warnings = Vec::new();
        if p.int8_mask.is_some() {
            warnings.push(
                "parameters.int8_mask is ignored: it only changes mergekit's mask dtype"
                    .to_string(),
            );
        }
        if let Some(src) = &self.tokenizer_source
            && src != "base"
        {
            return Err(MergeError::recipe(format!(
                "tokenizer_source `{src}` is not supported; clreg copies the base model's \
                 tokenizer (`tokenizer_source: base`)"
            )));
        }
        if self.models.is_empty() {
            return Err(MergeError::recipe(
                "`models` is empty; list the models to merge",
            ));
        }
        let flavour = self.flavour.unwrap_or_default();
        let family = matches!(method, Method::Ties | Method::DareTies | Method::DareLinear);
        if self.flavour.is_some() && !family {
            warnings.push(format!(
                "flavour only changes ties, dare_ties and dare_linear; {} ignores it",
                method.name()
            ));
        }
        let peft_flavoured = family && flavour == Flavour::Peft;
        if peft_flavoured || method == Method::PeftAb {
            for (key, set) in [
                ("normalize", p.normalize.is_some()),
                ("rescale", p.rescale.is_some()),
            ] {
                if set {
                    return Err(MergeError::recipe(format!(
                        "parameters.{key} does not apply to the PEFT flavour (it divides by the \
                         count of agreeing entries and rescales DARE by 1/density); remove it or \
                         use `flavour: mergekit`"
                    )));
                }
            }
        }
        if p.rank.is_some() && method != Method::Svd {
            return Err(MergeError::recipe("parameters.rank applies to svd only"));
        }
        if p.combination.is_some() && method != Method::PeftAb {
            return Err(MergeError::recipe(
                "parameters.combination applies to peft_ab only",
            ));
        }
        if p.rank == Some(0) {
            return Err(MergeError::recipe("parameters.rank must be positive"));
        }
        let (default_normalize, default_rescale) = match method {
            Method::Linear => (true, false),
            Method::Ties => (true, false),
            Method::DareTies | Method::DareLinear => (false, true),
            _ => (false, false),
        };
        let normalize = p.normalize.unwrap_or(default_normalize);
        let rescale = p.rescale.unwrap_or(default_rescale);
        let lambda = p.lambda.unwrap_or(1.0);
        if !lambda.is_finite() {
            return Err(MergeError::recipe(
                "parameters.lambda must be a finite number",
            ));
        }
        let mut models = Vec::new();
        for m in &self.models {
            let weight = m.parameters.weight.unwrap_or(1.0);
            let density = m.parameters.density.unwrap_or(1.0);
            let name = m.model.display();
            if !weight.is_finite() {
                return Err(MergeError::recipe(format!(
                    "model `{name}`: weight must be finite"
                )));
            }
            if !(density > 0.0 && density <= 1.0) {
                return Err(MergeError::recipe(format!(
                    "model `{name}`: density {density} must be in (0, 1]"
                )));
            }
            models.push(PlanModel {
                path: m.model.clone(),
                weight,
                density,
            });
        }
        let needs_base = matches!(
            method,
            Method::TaskArithmetic | Method::Ties | Method::DareTies | Method::DareLinear
        );
        if needs_base && self.base_model.is_none() {
            return Err(MergeError::recipe(format!(
                "{} needs `base_model`: task vectors are differences to the base",
                method.name()
            )));
        }
        let total: f64 = models.iter().map(|m| m.weight).sum();
        let divides_by_total = matches!(
            method,
            Method::Linear | Method::TaskArithmetic | Method::DareLinear
        ) && normalize;
        if divides_by_total && total.abs() < 1e-8 {
            return Err(MergeError::recipe(format!(
                "the weights sum to {total} and normalize is on, so the merge would divide by \
                 zero; change the weights or set `normalize: false`"
            )));
        }
        let dtype = match &self.dtype {
            None => None,
            Some(d) => Some(OutDtype::parse(d).ok_or_else(|| {
                MergeError::recipe(format!(
                    "dtype `{d}` is not supported; use float32, float16 or bfloat16"
                ))
            })?),
        };
        Ok(MergePlan {
            method,
            flavour: if method == Method::PeftAb {
                Flavour::Peft
            } else {
                flavour
            },
            base: self.base_model.clone(),
            models,
            lambda,
            normalize,
            rescale,
            sign_method: p.sign_method.unwrap_or_default(),
            seed: self.seed.unwrap_or(0),
            dtype,
            shard_size: Some(self.shard_size.unwrap_or(DEFAULT_SHARD_SIZE)),
            rank: p.rank,
            combination: (method == Method::PeftAb)
                .then(|| p.combination.unwrap_or(PeftCombination::Ties)),
            warnings,
        })
    }
}
