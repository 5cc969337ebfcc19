//! Seeded tiny Llama models and LoRA adapters in Hugging Face / PEFT layout, for tests and demos.
//!
//! Values come from a self-contained splitmix64 generator (Box–Muller normals × 0.02), seeded
//! per tensor from the seed and the tensor's name, so a model's weights do not depend on how it
//! is sharded.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, View};
use serde_json::json;

use crate::config::LlamaConfig;
use crate::error::FormatError;
use crate::formats::output::write_json;

/// The size of a tiny Llama.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tie: bool,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 256,
            tie: false,
        }
    }
}

/// The splitmix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let (u1, u2) = (self.next_unit(), self.next_unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn tensor_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    SplitMix64::new(seed ^ h).next_u64()
}

/// An owned f32 tensor, serialisable by the `safetensors` crate.
struct F32Tensor {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl F32Tensor {
    fn fill(shape: &[u64], f: impl FnMut() -> f32) -> Self {
        let shape: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
        let n: usize = shape.iter().product();
        let data = std::iter::repeat_with(f)
            .take(n)
            .flat_map(f32::to_le_bytes)
            .collect();
        Self { shape, data }
    }

    fn normal(shape: &[u64], seed: u64, name: &str) -> Self {
        let mut rng = SplitMix64::new(tensor_seed(seed, name));
        Self::fill(shape, || (rng.next_normal() * 0.02) as f32)
    }
}

impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The Hugging Face config of a tiny Llama.
pub fn tiny_llama_config(t: &TinyConfig) -> LlamaConfig {
    let extra = [
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("attention_bias", json!(false)),
        ("mlp_bias", json!(false)),
        ("initializer_range", json!(0.02)),
        ("use_cache", json!(true)),
    ];
    LlamaConfig {
        architectures: vec!["LlamaForCausalLM".to_string()],
        model_type: "llama".to_string(),
        hidden_size: t.hidden,
        intermediate_size: t.intermediate,
        num_hidden_layers: t.layers,
        num_attention_heads: t.heads,
        num_key_value_heads: t.kv_heads,
        vocab_size: t.vocab,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        max_position_embeddings: 2048,
        tie_word_embeddings: t.tie,
        torch_dtype: Some("float32".to_string()),
        head_dim: None,
        hidden_act: "silu".to_string(),
        extra: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

/// Writes a file readable by everyone (0644), as Hugging Face tools do.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    std::fs::write(path, bytes).map_err(|e| io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io(path, e))?;
    }
    Ok(())
}

fn write_safetensors(path: &Path, tensors: &[(String, F32Tensor)]) -> Result<(), FormatError> {
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| io(path, e))?;
    write_file(path, &bytes)
}

/// Writes a seeded tiny Llama in Hugging Face layout: `config.json`, `generation_config.json`
/// and `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards of at most
/// `shard_bytes` each (a larger tensor gets a shard of its own) plus
/// `model.safetensors.index.json`. Norm weights are 1.
pub fn write_tiny_llama(
    dir: &Path,
    t: &TinyConfig,
    seed: u64,
    shard_bytes: Option<u64>,
) -> Result<(), FormatError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let cfg = tiny_llama_config(t);
    let cfg_json = serde_json::to_value(&cfg).map_err(|e| io(dir, e))?;
    write_json(&dir.join("config.json"), &cfg_json)?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2}),
    )?;

    let tensors: Vec<(String, F32Tensor)> = cfg
        .expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let tensor = if shape.len() == 1 {
                F32Tensor::fill(&shape, || 1.0)
            } else {
                F32Tensor::normal(&shape, seed, &name)
            };
            (name, tensor)
        })
        .collect();

    let Some(limit) = shard_bytes else {
        return write_safetensors(&dir.join("model.safetensors"), &tensors);
    };
    let mut shards: Vec<Vec<(String, F32Tensor)>> = Vec::new();
    let mut current_bytes = 0u64;
    for (name, tensor) in tensors {
        let n = tensor.data.len() as u64;
        match shards.last_mut() {
            Some(last) if current_bytes + n <= limit => {
                last.push((name, tensor));
                current_bytes += n;
            }
            _ => {
                shards.push(vec![(name, tensor)]);
                current_bytes = n;
            }
        }
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        for (name, tensor) in shard {
            weight_map.insert(name.clone(), file.clone());
            total += tensor.data.len() as u64;
        }
        write_safetensors(&dir.join(&file), shard)?;
    }
    write_json(
        &dir.join("model.safetensors.index.json"),
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

/// Writes a seeded LoRA adapter for `base` in PEFT layout (`adapter_config.json`,
/// `adapter_model.safetensors`): one A/B pair for every module of `base` whose name ends with a
/// target (every layer). A and B are N(0, 0.02²); B is zero when `zero_b`, so the adapter leaves
/// the model unchanged.
pub fn write_tiny_adapter(
    dir: &Path,
    base: &LlamaConfig,
    r: usize,
    alpha: f64,
    targets: &[&str],
    seed: u64,
    zero_b: bool,
) -> Result<(), FormatError> {
    let file = "adapter_config.json";
    if r == 0 {
        return Err(FormatError::adapter(file, "r must be positive"));
    }
    let mut tensors = Vec::new();
    for target in targets {
        let before = tensors.len();
        for (name, shape) in base.expected_tensors() {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let last = module.rsplit('.').next().unwrap_or(module);
            let [out, inp] = shape.as_slice() else {
                continue;
            };
            if last != *target {
                continue;
            }
            let a = format!("base_model.model.{module}.lora_A.weight");
            let b = format!("base_model.model.{module}.lora_B.weight");
            let a_t = F32Tensor::normal(&[r as u64, *inp], seed, &a);
            let b_t = if zero_b {
                F32Tensor::fill(&[*out, r as u64], || 0.0)
            } else {
                F32Tensor::normal(&[*out, r as u64], seed, &b)
            };
            tensors.push((a, a_t));
            tensors.push((b, b_t));
        }
        if tensors.len() == before {
            return Err(FormatError::adapter(
                file,
                format!("target `{target}` matches no linear module of the base model"),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write_json(
        &dir.join(file),
        &json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": r,
            "lora_alpha": alpha,
            "lora_dropout": 0.0,
            "target_modules": targets,
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "base_model_name_or_path": null,
            "modules_to_save": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        }),
    )?;
    write_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
}

/// The word of token `id` in the tiny tokenizer: `<unk>`, `<s>`, `</s>` for 0–2, else `w{id}`.
pub fn tiny_word(id: usize) -> String {
    match id {
        0 => "<unk>".to_string(),
        1 => "<s>".to_string(),
        2 => "</s>".to_string(),
        _ => format!("w{id}"),
    }
}

/// Writes `tokenizer.json` for a tiny Llama: a word-level vocabulary of `t.vocab` words split on
/// whitespace, id `i` being [`tiny_word`]`(i)`, with `<s>` (1, the model's bos) and `</s>`
/// (2, its eos) as special tokens. Needs a vocabulary of at least 3.
pub fn write_tiny_tokenizer(dir: &Path, t: &TinyConfig) -> Result<(), FormatError> {
    let file = dir.join("tokenizer.json");
    if t.vocab < 3 {
        return Err(io(
            &file,
            "the tiny tokenizer needs a vocabulary of at least 3",
        ));
    }
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..t.vocab).map(|i| (tiny_word(i), json!(i))).collect();
    let added: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            json!({"id": i, "content": tiny_word(i), "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write_json(
        &file,
        &json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        }),
    )
}

/// The vocabulary of the byte tokenizer: `<unk>`, `<s>`, `</s>` and the 256 bytes.
pub const BYTE_VOCAB: usize = 259;

/// GPT-2's byte-to-symbol map (tokenizers: pre_tokenizers/byte_level.rs `bytes_char`): printable
/// bytes stand for themselves, the others for U+0100 upwards in byte order.
fn byte_symbols() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
                next += 1;
                c
            }
        })
        .collect()
}

/// Writes `tokenizer.json` for a byte-level tiny model: BPE without merges over GPT-2's 256
/// byte symbols (byte `b` is id `b + 3`), a ByteLevel pre-tokenizer (no prefix space) and
/// decoder, and the specials of [`write_tiny_tokenizer`]: `<unk>` 0, `<s>` 1, `</s>` 2.
/// Every UTF-8 text round-trips; a model over it needs a vocabulary of [`BYTE_VOCAB`].
pub fn write_byte_tokenizer(dir: &Path) -> Result<(), FormatError> {
    let file = dir.join("tokenizer.json");
    let mut vocab = serde_json::Map::new();
    for i in 0..3 {
        vocab.insert(tiny_word(i), json!(i));
    }
    for (b, c) in byte_symbols().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(b + 3));
    }
    let added: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            json!({"id": i, "content": tiny_word(i), "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
               "use_regex": true});
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write_json(
        &file,
        &json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": []},
        }),
    )
}
