//! Importing a Llama GGUF file (llama.cpp) as a Hugging Face checkpoint directory: dequantized
//! weights in Hugging Face names and layout, config.json from the metadata, and tokenizer.json.

mod names;
mod tokenizer;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::config::LlamaConfig;
use crate::model::ModelError;
pub use names::{Permuted, hf_name, permute_qk, unpermute_qk};

/// The GGUF tensor types clreg dequantizes.
pub const SUPPORTED_TYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// What an import produced.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub out_dir: PathBuf,
    /// The number of tensors written.
    pub tensors: usize,
    pub parameters: u64,
    /// How many tensors each GGUF type held (`Q4_1` …).
    pub source_types: BTreeMap<String, usize>,
    /// GGUF tensors not imported (`rope_freqs.weight` …).
    pub skipped: Vec<String>,
    /// Whether tokenizer.json was written.
    pub tokenizer: bool,
    /// Things the caller should know (no tokenizer, RoPE scaling ignored …).
    pub warnings: Vec<String>,
    pub config: LlamaConfig,
}

/// A dequantized tensor in its output dtype, for the `safetensors` writer.
struct Raw {
    shape: Vec<usize>,
    data: RawData,
}

enum RawData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    Bf16(Vec<half::bf16>),
}

// safetensors files are little-endian; the byte casts below assume the host is too.
#[cfg(not(target_endian = "little"))]
compile_error!("GGUF import writes safetensors by casting memory and needs a little-endian host");

impl Raw {
    fn new(t: &Tensor, dtype: DType) -> candle_core::Result<Self> {
        let flat = t.to_dtype(dtype)?.flatten_all()?;
        let data = match dtype {
            DType::F16 => RawData::F16(flat.to_vec1()?),
            DType::BF16 => RawData::Bf16(flat.to_vec1()?),
            _ => RawData::F32(flat.to_vec1()?),
        };
        Ok(Self {
            shape: t.dims().to_vec(),
            data,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            RawData::F32(v) => bytemuck::cast_slice(v),
            RawData::F16(v) => bytemuck::cast_slice(v),
            RawData::Bf16(v) => bytemuck::cast_slice(v),
        }
    }
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        match self.data {
            RawData::F32(_) => safetensors::Dtype::F32,
            RawData::F16(_) => safetensors::Dtype::F16,
            RawData::Bf16(_) => safetensors::Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

fn torch_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

/// Reads a GGUF metadata number of any integer width.
fn meta_usize(content: &Content, key: &str) -> Option<usize> {
    content
        .metadata
        .get(key)
        .and_then(tokenizer::int)
        .map(|v| v as usize)
}

fn meta_f64(content: &Content, key: &str) -> Option<f64> {
    match content.metadata.get(key)? {
        Value::F32(v) => Some(f64::from(*v)),
        Value::F64(v) => Some(*v),
        other => tokenizer::int(other).map(|v| v as f64),
    }
}

/// The Hugging Face config of the model a GGUF file holds.
fn config_from_metadata(
    content: &Content,
    file: &str,
    dtype: DType,
    warnings: &mut Vec<String>,
) -> Result<LlamaConfig, ModelError> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(ModelError::gguf(
            file,
            format!(
                "general.architecture is `{arch}`; clreg imports Llama-family GGUF files \
                 (`llama`) only"
            ),
        ));
    }
    let need = |key: &str| {
        meta_usize(content, &format!("llama.{key}")).ok_or_else(|| {
            ModelError::gguf(
                file,
                format!("metadata key `llama.{key}` is missing or not a number"),
            )
        })
    };
    let hidden = need("embedding_length")?;
    let intermediate = need("feed_forward_length")?;
    let layers = need("block_count")?;
    let heads = need("attention.head_count")?;
    let kv_heads = meta_usize(content, "llama.attention.head_count_kv").unwrap_or(heads);
    let eps = meta_f64(content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
    let theta = meta_f64(content, "llama.rope.freq_base").unwrap_or(10000.0);
    let ctx = meta_usize(content, "llama.context_length").unwrap_or(2048);
    if heads == 0 || kv_heads == 0 {
        return Err(ModelError::gguf(
            file,
            "attention head counts must be positive",
        ));
    }
    let head_dim =
        meta_usize(content, "llama.attention.key_length").filter(|d| *d != hidden / heads);
    let rope_dim = meta_usize(content, "llama.rope.dimension_count");
    let effective_head_dim = head_dim.unwrap_or(hidden / heads);
    if rope_dim.is_some_and(|d| d != effective_head_dim) {
        return Err(ModelError::gguf(
            file,
            format!(
                "llama.rope.dimension_count {rope_dim:?} differs from the head size \
                 {effective_head_dim}; partial RoPE is not supported"
            ),
        ));
    }
    if let Some(scaling) = content
        .metadata
        .get("llama.rope.scaling.type")
        .and_then(|v| v.to_string().ok())
        && scaling != "none"
    {
        warnings.push(format!(
            "RoPE scaling `{scaling}` is ignored: the imported model uses plain RoPE"
        ));
    }
    let Some(embed) = content.tensor_infos.get("token_embd.weight") else {
        return Err(ModelError::gguf(
            file,
            "tensor `token_embd.weight` is missing",
        ));
    };
    let vocab = embed.shape.dims().first().copied().unwrap_or(0);
    let tie = !content.tensor_infos.contains_key("output.weight");
    let mut extra = BTreeMap::new();
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = tokenizer::token_id(content, key) {
            extra.insert(name.to_string(), json!(id));
        }
    }
    let cfg = LlamaConfig {
        architectures: vec!["LlamaForCausalLM".to_string()],
        model_type: "llama".to_string(),
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        vocab_size: vocab,
        rms_norm_eps: eps,
        rope_theta: theta,
        max_position_embeddings: ctx,
        tie_word_embeddings: tie,
        torch_dtype: Some(torch_dtype(dtype).to_string()),
        head_dim,
        hidden_act: "silu".to_string(),
        extra,
    };
    // The same checks a pushed config.json gets.
    let bytes = serde_json::to_vec(&cfg).map_err(|e| ModelError::gguf(file, e.to_string()))?;
    crate::config::parse(&bytes, file)?;
    Ok(cfg)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| ModelError::io(path.display(), e))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| ModelError::io(path.display(), e))
}

/// Reads a GGUF header with candle's reader. candle 0.11 bounds string, array and count
/// lengths by the file size, but divides by `general.alignment` unchecked, so a file declaring
/// an alignment of 0 panics inside it (tests/corpus/hostile/gguf/alignment_zero.gguf): that
/// panic is caught here and becomes `invalid_gguf`, like every other malformed header.
fn read_content<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
    file: &str,
) -> Result<Content, ModelError> {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(reader)));
    match read {
        Ok(Ok(content)) => Ok(content),
        Ok(Err(e)) => Err(ModelError::gguf(
            file,
            format!("cannot read the GGUF header: {e}"),
        )),
        Err(_) => Err(ModelError::gguf(
            file,
            "cannot read the GGUF header: it is malformed (e.g. `general.alignment` is 0); \
             re-export the file",
        )),
    }
}

/// Checks a GGUF file's header and metadata as [`import`] does before converting any tensor,
/// and returns the Hugging Face config it describes (the fuzz target `gguf` runs this).
pub fn check_header<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
    file: &str,
) -> Result<LlamaConfig, ModelError> {
    let content = read_content(reader, file)?;
    config_from_metadata(&content, file, DType::F32, &mut Vec::new())
}

/// Imports the Llama GGUF file `gguf_path` into a new Hugging Face checkpoint directory
/// `out_dir` (which must not exist or be empty): every tensor dequantized and converted to
/// `dtype` (f32, f16 or bf16), Q/K rows brought back to the half-split RoPE layout,
/// `config.json`, `generation_config.json` and, for byte-level BPE vocabularies,
/// `tokenizer.json`. Files are written to a temporary sibling directory that is renamed into
/// place at the end. `progress(done, total)` is called after each tensor; setting `cancel`
/// stops the import between tensors with [`ModelError::Cancelled`].
pub fn import(
    gguf_path: &Path,
    out_dir: &Path,
    dtype: DType,
    progress: &dyn Fn(usize, usize),
    cancel: &AtomicBool,
) -> Result<ImportReport, ModelError> {
    let file = gguf_path.display().to_string();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(ModelError::InvalidOption(format!(
            "cannot write {dtype:?} weights; choose f32, f16 or bf16"
        )));
    }
    if out_dir.exists() {
        let empty = std::fs::read_dir(out_dir)
            .map_err(|e| ModelError::io(out_dir.display(), e))?
            .next()
            .is_none();
        if !empty {
            return Err(ModelError::InvalidOption(format!(
                "`{}` exists and is not empty; choose a new output directory",
                out_dir.display()
            )));
        }
    }
    let mut reader = BufReader::new(File::open(gguf_path).map_err(|e| ModelError::io(&file, e))?);
    let content = read_content(&mut reader, &file)?;

    let mut warnings = Vec::new();
    let cfg = config_from_metadata(&content, &file, dtype, &mut warnings)?;
    let expected = cfg.expected_shapes();

    // Plan every tensor (and refuse unsupported types) before doing any work.
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut plan = Vec::new();
    let mut skipped = Vec::new();
    let mut source_types = BTreeMap::new();
    for name in names {
        let Some(info) = content.tensor_infos.get(name) else {
            continue;
        };
        let Some((hf, permuted)) = hf_name(name) else {
            skipped.push(name.clone());
            continue;
        };
        if !SUPPORTED_TYPES.contains(&info.ggml_dtype) {
            return Err(ModelError::UnsupportedGgufType {
                file,
                tensor: name.clone(),
                dtype: format!("{:?}", info.ggml_dtype),
                supported: SUPPORTED_TYPES
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let shape: Vec<u64> = info.shape.dims().iter().map(|d| *d as u64).collect();
        match expected.get(&hf) {
            None => {
                return Err(ModelError::gguf(
                    &file,
                    format!("tensor `{name}` ({hf}) does not belong to a model of this config"),
                ));
            }
            Some(want) if *want != shape => {
                return Err(ModelError::gguf(
                    &file,
                    format!("tensor `{name}` has shape {shape:?}; the metadata implies {want:?}"),
                ));
            }
            Some(_) => {}
        }
        *source_types
            .entry(format!("{:?}", info.ggml_dtype))
            .or_insert(0usize) += 1;
        plan.push((name.clone(), hf, permuted));
    }
    if let Some((missing, _)) = expected
        .iter()
        .find(|(hf, _)| !plan.iter().any(|(_, p, _)| p == *hf))
    {
        return Err(ModelError::gguf(
            &file,
            format!("the file has no tensor for `{missing}`"),
        ));
    }
    if !skipped.is_empty() {
        warnings.push(format!("tensors not imported: {}", skipped.join(", ")));
    }

    let tok = match tokenizer::from_gguf(&content) {
        Ok(t) => Some(t),
        Err(reason) => {
            warnings.push(format!("no tokenizer.json written: {reason}"));
            None
        }
    };

    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let leaf = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    let tmp = parent.join(format!(".{leaf}.import-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(tmp.display(), e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(tmp.display(), e))?;
    let result = write_checkpoint(
        &mut reader,
        &content,
        &file,
        &plan,
        &cfg,
        dtype,
        tok.as_ref(),
        &tmp,
        progress,
        cancel,
    );
    let parameters = match result {
        Ok(p) => p,
        Err(e) => {
            // Best effort: the error that stopped the import matters more.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out_dir.exists() {
        std::fs::remove_dir(out_dir).map_err(|e| ModelError::io(out_dir.display(), e))?;
    }
    std::fs::rename(&tmp, out_dir).map_err(|e| ModelError::io(out_dir.display(), e))?;
    Ok(ImportReport {
        out_dir: out_dir.to_path_buf(),
        tensors: plan.len(),
        parameters,
        source_types,
        skipped,
        tokenizer: tok.is_some(),
        warnings,
        config: cfg,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_checkpoint(
    reader: &mut BufReader<File>,
    content: &Content,
    file: &str,
    plan: &[(String, String, Permuted)],
    cfg: &LlamaConfig,
    dtype: DType,
    tok: Option<&tokenizers::Tokenizer>,
    dir: &Path,
    progress: &dyn Fn(usize, usize),
    cancel: &AtomicBool,
) -> Result<u64, ModelError> {
    let mut tensors: HashMap<String, Raw> = HashMap::new();
    let mut parameters = 0u64;
    for (i, (name, hf, permuted)) in plan.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ModelError::Cancelled);
        }
        let bad = |e: candle_core::Error| {
            ModelError::gguf(file, format!("cannot read tensor `{name}`: {e}"))
        };
        let q = content.tensor(reader, name, &Device::Cpu).map_err(bad)?;
        let mut t = q.dequantize(&Device::Cpu).map_err(bad)?;
        t = match permuted {
            Permuted::No => t,
            Permuted::Query => unpermute_qk(&t, cfg.num_attention_heads).map_err(bad)?,
            Permuted::Key => unpermute_qk(&t, cfg.kv_heads()).map_err(bad)?,
        };
        parameters += t.elem_count() as u64;
        tensors.insert(hf.clone(), Raw::new(&t, dtype).map_err(bad)?);
        progress(i + 1, plan.len());
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ModelError::Cancelled);
    }
    let cfg_json = serde_json::to_value(cfg).map_err(|e| ModelError::io("config.json", e))?;
    write_json(&dir.join("config.json"), &cfg_json)?;
    let mut gen_cfg = serde_json::Map::new();
    gen_cfg.insert("_from_model_config".into(), json!(true));
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = cfg.extra.get(key) {
            gen_cfg.insert(key.into(), v.clone());
        }
    }
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::Value::Object(gen_cfg),
    )?;
    if let Some(tok) = tok {
        let path = dir.join("tokenizer.json");
        tok.save(&path, false)
            .map_err(|e| ModelError::tokenizer(path.display(), e))?;
    }
    let path = dir.join("model.safetensors");
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let mut ordered: Vec<(&String, &Raw)> = tensors.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(ordered, Some(meta), &path)
        .map_err(|e| ModelError::io(path.display(), e))?;
    Ok(parameters)
}
