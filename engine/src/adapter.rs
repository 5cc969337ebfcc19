//! PEFT LoRA adapters: `adapter_config.json` and the check of adapter tensors against a base.
//!
//! `target_modules` as a JSON list matches a module whose name equals an entry or ends with
//! `.` + entry, as PEFT does. As a single string PEFT treats it as a regular expression over the
//! full module name; clreg has no regex engine, so a string that is a plain module name (letters,
//! digits, `_`, `.`) is treated as a list of one, `"all-linear"` allows every linear module, and
//! any other pattern is accepted without the target-membership check (shapes are still checked
//! against the base).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::FormatError;
use crate::safetensors_header::SafetensorsInfo;

/// `target_modules` as PEFT writes it: a list of module names or one regex string.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl TargetModules {
    /// Whether the module called `module` (full dotted path) is targeted; `None` when the
    /// pattern is a regex clreg cannot evaluate.
    pub fn matches(&self, module: &str) -> Option<bool> {
        match self {
            Self::List(list) => Some(list.iter().any(|t| suffix_match(module, t))),
            Self::Pattern(p) if p == "all-linear" => Some(!module.ends_with("lm_head")),
            Self::Pattern(p) if is_plain_name(p) => Some(suffix_match(module, p)),
            Self::Pattern(_) => None,
        }
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `module` is `target` or ends with `.target`.
fn suffix_match(module: &str, target: &str) -> bool {
    module == target
        || module
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn default_r() -> u64 {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".to_string()
}

/// A PEFT `adapter_config.json` for LoRA. Keys clreg does not use are kept in `extra`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    #[serde(default)]
    pub peft_type: String,
    #[serde(default = "default_r")]
    pub r: u64,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: TargetModules,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, u64>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl AdapterConfig {
    /// The LoRA scale s: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        self.scale_with(self.r, self.lora_alpha)
    }

    /// The scale of one module, after `rank_pattern` and `alpha_pattern`.
    pub fn scale_for(&self, module: &str) -> f64 {
        self.scale_with(self.rank_for(module), self.alpha_for(module))
    }

    fn scale_with(&self, r: u64, alpha: f64) -> f64 {
        let r = r as f64;
        if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        }
    }

    /// The rank of one module: the longest `rank_pattern` key that `module` ends with (at a
    /// `.` boundary), else `r`. PEFT takes the first matching key in file order; with plain
    /// module names both pick the same unless two keys overlap.
    pub fn rank_for(&self, module: &str) -> u64 {
        longest_match(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r)
    }

    /// The alpha of one module, from `alpha_pattern` as [`Self::rank_for`] does.
    pub fn alpha_for(&self, module: &str) -> f64 {
        longest_match(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha)
    }
}

fn longest_match<'a, V>(patterns: &'a BTreeMap<String, V>, module: &str) -> Option<&'a V> {
    patterns
        .iter()
        .filter(|(k, _)| suffix_match(module, k))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| v)
}

/// Parses and checks an `adapter_config.json`.
pub fn parse(bytes: &[u8], file: &str) -> Result<AdapterConfig, FormatError> {
    let bad = |reason: String| FormatError::adapter(file, reason);
    let cfg: AdapterConfig = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "cannot read the adapter config: {e}; it must be a PEFT adapter_config.json"
        ))
    })?;
    if cfg.peft_type != "LORA" {
        return Err(bad(format!(
            "peft_type is `{}`: clreg handles LoRA adapters only; set \"peft_type\": \"LORA\"",
            cfg.peft_type
        )));
    }
    if cfg.r == 0 {
        return Err(bad("`r` is 0; the LoRA rank must be positive".to_string()));
    }
    if let Some((k, _)) = cfg.rank_pattern.iter().find(|(_, r)| **r == 0) {
        return Err(bad(format!(
            "rank_pattern `{k}` is 0; ranks must be positive"
        )));
    }
    if !cfg.lora_alpha.is_finite() {
        return Err(bad(format!(
            "lora_alpha {} must be a finite number",
            cfg.lora_alpha
        )));
    }
    if !(0.0..1.0).contains(&cfg.lora_dropout) {
        return Err(bad(format!(
            "lora_dropout {} must be in [0, 1)",
            cfg.lora_dropout
        )));
    }
    if cfg.use_dora {
        return Err(bad(
            "use_dora is true: clreg handles plain LoRA only; retrain without DoRA".to_string(),
        ));
    }
    if !["none", "all", "lora_only"].contains(&cfg.bias.as_str()) {
        return Err(bad(format!(
            "bias `{}` must be none, all or lora_only",
            cfg.bias
        )));
    }
    match &cfg.target_modules {
        TargetModules::List(l) if l.is_empty() => {
            return Err(bad(
                "target_modules is empty; list the modules the adapter changes".to_string(),
            ));
        }
        TargetModules::Pattern(p) if p.is_empty() => {
            return Err(bad("target_modules is empty".to_string()));
        }
        _ => {}
    }
    Ok(cfg)
}

/// What an adapter that fits its base holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterSummary {
    pub r: u64,
    pub lora_alpha: f64,
    /// The last path segments of the adapted modules, sorted and unique.
    pub target_modules: Vec<String>,
    /// The number of adapted modules.
    pub modules: usize,
    /// The number of adapter parameters.
    pub parameters: u64,
    pub use_rslora: bool,
}

const PREFIX: &str = "base_model.model.";

/// Checks the tensors of `adapter_model.safetensors` against the config and the base shapes.
pub fn check_against_base(
    cfg: &AdapterConfig,
    adapter: &SafetensorsInfo,
    base_shapes: &BTreeMap<String, Vec<u64>>,
    file: &str,
) -> Result<AdapterSummary, FormatError> {
    let invalid = |reason: String| FormatError::adapter(file, reason);
    let mismatch = |reason: String| FormatError::mismatch(file, reason);

    // module -> (A, B)
    let mut modules: BTreeMap<&str, [Option<&crate::safetensors_header::TensorInfo>; 2]> =
        BTreeMap::new();
    for t in &adapter.tensors {
        let name = t.name.as_str();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return Err(invalid(format!(
                "tensor `{name}` is not a PEFT LoRA key; keys look like \
                 `base_model.model.<module>.lora_A.weight`: save the adapter with PEFT"
            )));
        };
        if name.contains("lora_embedding_A") || name.contains("lora_embedding_B") {
            return Err(invalid(format!(
                "tensor `{name}`: LoRA on embeddings is not supported; drop embed_tokens from \
                 target_modules and retrain"
            )));
        }
        if name.contains("lora_magnitude_vector") {
            return Err(invalid(format!(
                "tensor `{name}`: DoRA adapters are not supported; retrain without use_dora"
            )));
        }
        let (module, slot) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else if cfg.modules_to_save.is_some() {
            return Err(invalid(format!(
                "tensor `{name}` is a full module copy (modules_to_save); clreg stores LoRA \
                 weights only: remove modules_to_save and retrain"
            )));
        } else {
            return Err(invalid(format!(
                "tensor `{name}` is neither `.lora_A.weight` nor `.lora_B.weight`; remove it or \
                 save the adapter with PEFT (no adapter name in the keys)"
            )));
        };
        if !matches!(t.dtype.as_str(), "F16" | "BF16" | "F32" | "F64") {
            return Err(invalid(format!(
                "tensor `{name}` has dtype {}; LoRA weights must be F16, BF16, F32 or F64",
                t.dtype
            )));
        }
        modules.entry(module).or_default()[slot] = Some(t);
    }
    if modules.is_empty() {
        return Err(invalid(
            "the adapter holds no LoRA tensors; save it with PEFT's save_pretrained".to_string(),
        ));
    }

    let mut targets = BTreeSet::new();
    let mut parameters = 0u64;
    for (module, [a, b]) in &modules {
        let (Some(a), Some(b)) = (a, b) else {
            let (have, missing) = if a.is_some() {
                ("lora_A", "lora_B")
            } else {
                ("lora_B", "lora_A")
            };
            return Err(invalid(format!(
                "module `{module}` has {have} but no {missing} \
                 (`{PREFIX}{module}.{missing}.weight`); the file is incomplete: re-save the adapter"
            )));
        };
        let last = module.rsplit('.').next().unwrap_or(module);
        if cfg.target_modules.matches(module) == Some(false) {
            return Err(invalid(format!(
                "module `{module}` has LoRA tensors but `{last}` is not in target_modules; add it \
                 to target_modules or remove its tensors"
            )));
        }
        let base_name = format!("{module}.weight");
        let Some(base) = base_shapes.get(&base_name) else {
            return Err(mismatch(format!(
                "tensor `{}` adapts `{base_name}`, which the base model does not have; train the \
                 adapter on this base or pick the base it was trained on",
                a.name
            )));
        };
        let (out, inp) = match (base.as_slice(), cfg.fan_in_fan_out) {
            ([o, i], false) => (*o, *i),
            ([i, o], true) => (*o, *i),
            _ => {
                return Err(mismatch(format!(
                    "tensor `{}` adapts `{base_name}`, which has shape {base:?}; LoRA needs a 2-D \
                     linear weight",
                    a.name
                )));
            }
        };
        let r = cfg.rank_for(module);
        for (t, want) in [(a, [r, inp]), (b, [out, r])] {
            if t.shape != want {
                return Err(mismatch(format!(
                    "tensor `{}` has shape {:?} but base tensor `{base_name}` {base:?} with r={r} \
                     needs {want:?}; train the adapter on this base or fix `r` in \
                     adapter_config.json",
                    t.name, t.shape
                )));
            }
        }
        parameters += a.numel() + b.numel();
        targets.insert(last.to_string());
    }
    Ok(AdapterSummary {
        r: cfg.r,
        lora_alpha: cfg.lora_alpha,
        target_modules: targets.into_iter().collect(),
        modules: modules.len(),
        parameters,
        use_rslora: cfg.use_rslora,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn target_modules_list_or_string() {
        let c = parse(br#"{"peft_type":"LORA","target_modules":"q_proj"}"#, "a").unwrap();
        assert_eq!(
            c.target_modules.matches("model.layers.0.self_attn.q_proj"),
            Some(true)
        );
        assert_eq!(
            c.target_modules.matches("model.layers.0.self_attn.xq_proj"),
            Some(false)
        );
        let c = parse(
            br#"{"peft_type":"LORA","target_modules":".*\\.(q|v)_proj"}"#,
            "a",
        )
        .unwrap();
        assert_eq!(
            c.target_modules.matches("model.layers.0.self_attn.q_proj"),
            None
        );
        let c = parse(
            br#"{"peft_type":"LORA","target_modules":["q_proj","v_proj"]}"#,
            "a",
        )
        .unwrap();
        assert_eq!(c.target_modules.matches("a.v_proj"), Some(true));
    }

    #[test]
    fn scale_and_patterns() {
        let c = parse(
            br#"{"peft_type":"LORA","r":16,"lora_alpha":32,"target_modules":["q_proj"],
                "rank_pattern":{"q_proj":4,"layers.1.self_attn.q_proj":2}}"#,
            "a",
        )
        .unwrap();
        assert_eq!(c.scale(), 2.0);
        assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj"), 4);
        assert_eq!(c.rank_for("model.layers.1.self_attn.q_proj"), 2);
        assert_eq!(c.rank_for("model.layers.11.self_attn.q_proj"), 4);
        assert_eq!(c.scale_for("model.layers.0.self_attn.q_proj"), 8.0);
        let c = AdapterConfig {
            use_rslora: true,
            ..c
        };
        assert_eq!(c.scale(), 8.0);
    }
}
