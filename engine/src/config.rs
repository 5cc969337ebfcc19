//! Llama-family `config.json`: parsing, sanity checks, and the tensor shapes it implies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::FormatError;

/// The architectures clreg handles, as named in `architectures`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "MixtralForCausalLM",
];
/// The `model_type`s clreg handles.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "mixtral"];

fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".to_string()
}

/// A Hugging Face Llama/Mistral `config.json`.
///
/// `num_key_value_heads` is 0 when the file omits it; [`parse`] fills in
/// `num_attention_heads` (as transformers does). Keys clreg does not use are kept in `extra`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Every other key of the file, kept so that writing the config back loses nothing.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Parses and checks a `config.json`.
///
/// Checks: a Llama-family architecture, positive sizes, heads divisible by key-value heads, and
/// (when `head_dim` is not given) hidden size divisible by heads. When `head_dim` is given, as
/// in Mistral-Nemo, `heads * head_dim` may differ from the hidden size.
pub fn parse(bytes: &[u8], file: &str) -> Result<LlamaConfig, FormatError> {
    let bad = |reason: String| FormatError::model(file, reason);
    let mut cfg: LlamaConfig = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "cannot read the model config: {e}; it must be a Hugging Face config.json of a \
             Llama-family model"
        ))
    })?;
    if cfg.num_key_value_heads == 0 {
        cfg.num_key_value_heads = cfg.num_attention_heads;
    }
    if let Some(arch) = cfg
        .architectures
        .iter()
        .find(|a| !SUPPORTED_ARCHITECTURES.contains(&a.as_str()))
    {
        return Err(bad(format!(
            "architecture {arch} is not supported: clreg handles Llama-family models ({}); \
             push a model of one of these architectures",
            SUPPORTED_ARCHITECTURES.join(", ")
        )));
    }
    if !cfg.model_type.is_empty() && !SUPPORTED_MODEL_TYPES.contains(&cfg.model_type.as_str()) {
        return Err(bad(format!(
            "model_type {} is not supported: clreg handles Llama-family models ({})",
            cfg.model_type,
            SUPPORTED_MODEL_TYPES.join(", ")
        )));
    }
    if cfg.architectures.is_empty() && cfg.model_type.is_empty() {
        return Err(bad("neither `architectures` nor `model_type` is set; add \
                        \"architectures\": [\"LlamaForCausalLM\"]"
            .to_string()));
    }
    for (key, value) in [
        ("hidden_size", cfg.hidden_size),
        ("intermediate_size", cfg.intermediate_size),
        ("num_hidden_layers", cfg.num_hidden_layers),
        ("num_attention_heads", cfg.num_attention_heads),
        ("vocab_size", cfg.vocab_size),
    ] {
        if value == 0 {
            return Err(bad(format!("`{key}` is 0; it must be positive")));
        }
    }
    if cfg.head_dim == Some(0) {
        return Err(bad(
            "`head_dim` is 0; it must be positive or absent".to_string()
        ));
    }
    if cfg.head_dim.is_none() && !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not divisible by num_attention_heads {}; fix the config or set \
             `head_dim`",
            cfg.hidden_size, cfg.num_attention_heads
        )));
    }
    if !cfg
        .num_attention_heads
        .is_multiple_of(cfg.num_key_value_heads)
    {
        return Err(bad(format!(
            "num_attention_heads {} is not divisible by num_key_value_heads {}; fix the config",
            cfg.num_attention_heads, cfg.num_key_value_heads
        )));
    }
    if let Some(n) = cfg.num_local_experts() {
        let k = cfg.num_experts_per_tok();
        if n == 0 || k == 0 || k > n {
            return Err(bad(format!(
                "num_local_experts {n} and num_experts_per_tok {k}: both must be positive and \
                 top-k at most the number of experts"
            )));
        }
    }
    if cfg.rms_norm_eps.is_nan() || cfg.rms_norm_eps <= 0.0 {
        return Err(bad(format!(
            "rms_norm_eps {} must be positive",
            cfg.rms_norm_eps
        )));
    }
    Ok(cfg)
}

impl LlamaConfig {
    /// The number of experts per layer of a Mixtral-layout model (`num_local_experts`), `None`
    /// for a dense model.
    pub fn num_local_experts(&self) -> Option<usize> {
        self.extra
            .get("num_local_experts")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
    }

    /// The experts each token is routed to (`num_experts_per_tok`, Mixtral's default 2).
    pub fn num_experts_per_tok(&self) -> usize {
        self.extra
            .get("num_experts_per_tok")
            .and_then(serde_json::Value::as_u64)
            .map_or(2, |n| n as usize)
    }

    /// The end-of-sequence token ids (`eos_token_id`, a number or a list; none when absent).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        match self.extra.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| v as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The size of one attention head: `head_dim` when given, else hidden size / heads.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The number of key-value heads, with the transformers default when it is 0 (unset).
    pub fn kv_heads(&self) -> usize {
        if self.num_key_value_heads == 0 {
            self.num_attention_heads
        } else {
            self.num_key_value_heads
        }
    }

    /// Every tensor the model must hold, in checkpoint order (embeddings, layers by number,
    /// final norm, output layer). `lm_head.weight` is left out when the embeddings are tied.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let h = self.hidden_size as u64;
        let inter = self.intermediate_size as u64;
        let vocab = self.vocab_size as u64;
        let hd = self.head_dim() as u64;
        let q = self.num_attention_heads as u64 * hd;
        let kv = self.kv_heads() as u64 * hd;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            out.extend([
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            ]);
            match self.num_local_experts() {
                None => out.extend([
                    (format!("{p}.mlp.gate_proj.weight"), vec![inter, h]),
                    (format!("{p}.mlp.up_proj.weight"), vec![inter, h]),
                    (format!("{p}.mlp.down_proj.weight"), vec![h, inter]),
                ]),
                Some(n) => {
                    let moe = format!("{p}.block_sparse_moe");
                    out.push((format!("{moe}.gate.weight"), vec![n as u64, h]));
                    for e in 0..n {
                        out.extend([
                            (format!("{moe}.experts.{e}.w1.weight"), vec![inter, h]),
                            (format!("{moe}.experts.{e}.w2.weight"), vec![h, inter]),
                            (format!("{moe}.experts.{e}.w3.weight"), vec![inter, h]),
                        ]);
                    }
                }
            }
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            ]);
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![vocab, h]));
        }
        out
    }

    /// [`Self::expected_tensors`] as a map from name to shape.
    pub fn expected_shapes(&self) -> BTreeMap<String, Vec<u64>> {
        self.expected_tensors().into_iter().collect()
    }

    /// The number of parameters the config implies (a tied output layer counted once).
    pub fn parameters(&self) -> u64 {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SMOL: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
        "hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
        "num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
        "tie_word_embeddings":true,"rope_theta":100000,"torch_dtype":"bfloat16",
        "bos_token_id":0}"#;

    #[test]
    fn smollm2_135m_has_its_published_parameter_count() {
        let cfg = parse(SMOL.as_bytes(), "config.json").unwrap();
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.parameters(), 134_515_008);
        assert!(!cfg.expected_shapes().contains_key("lm_head.weight"));
        assert_eq!(cfg.extra.get("bos_token_id"), Some(&serde_json::json!(0)));
    }

    #[test]
    fn kv_heads_default_to_heads() {
        let s = SMOL.replace("\"num_key_value_heads\":3,", "");
        assert_eq!(parse(s.as_bytes(), "c").unwrap().num_key_value_heads, 9);
    }

    #[test]
    fn refusals() {
        let e = parse(
            SMOL.replace("LlamaForCausalLM", "GPT2LMHeadModel")
                .as_bytes(),
            "c",
        );
        assert!(
            e.unwrap_err()
                .reason()
                .contains("architecture GPT2LMHeadModel is not supported")
        );
        let e = parse(
            SMOL.replace("\"num_key_value_heads\":3", "\"num_key_value_heads\":2")
                .as_bytes(),
            "c",
        );
        assert!(
            e.unwrap_err()
                .reason()
                .contains("not divisible by num_key_value_heads")
        );
        let e = parse(
            SMOL.replace("\"hidden_size\":576", "\"hidden_size\":577")
                .as_bytes(),
            "c",
        );
        assert!(
            e.unwrap_err()
                .reason()
                .contains("not divisible by num_attention_heads")
        );
        let e = parse(b"[1]", "c").unwrap_err();
        assert_eq!(e.code(), "invalid_model");
    }
}
