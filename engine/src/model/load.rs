//! Loading a Hugging Face checkpoint directory (config.json + single or sharded safetensors).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{Llama, ModelError};
use crate::config::LlamaConfig;
use crate::formats::stfile::StFile;

/// Reads `config.json` of a checkpoint directory.
pub fn read_config(dir: &Path) -> Result<LlamaConfig, ModelError> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(path.display(), e))?;
    Ok(crate::config::parse(&bytes, &path.display().to_string())?)
}

/// The safetensors files of a checkpoint: the shards named by `model.safetensors.index.json`
/// when it exists, else `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let bytes = std::fs::read(&index).map_err(|e| ModelError::io(index.display(), e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::model(index.display(), format!("not JSON: {e}")))?;
        let Some(map) = value.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(ModelError::model(
                index.display(),
                "no `weight_map` object; re-save the checkpoint with save_pretrained",
            ));
        };
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            let Some(file) = file.as_str() else {
                return Err(ModelError::model(
                    index.display(),
                    format!("weight_map entry for `{tensor}` is not a file name"),
                ));
            };
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(ModelError::model(
                    index.display(),
                    format!(
                        "weight_map entry for `{tensor}` names `{file}`, outside the checkpoint"
                    ),
                ));
            }
            files.insert(file.to_string());
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::model(
        dir.display(),
        "no model.safetensors or model.safetensors.index.json; clreg loads safetensors checkpoints",
    ))
}

/// Reads every tensor of the given safetensors files onto the CPU, as stored.
///
/// Each tensor is copied once, from the file's memory map ([`StFile`]) into its tensor, and its
/// pages then leave the resident set: the peak is the model plus one tensor, where reading the
/// whole file first (as `candle_core::safetensors::load` does) held a second copy of it.
pub fn read_tensors(files: &[std::path::PathBuf]) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut all = HashMap::new();
    for file in files {
        let bad = |e: &dyn std::fmt::Display| {
            ModelError::model(file.display(), format!("cannot read tensors: {e}"))
        };
        let st = StFile::open(file).map_err(|e| bad(&e))?;
        for t in &st.info().tensors {
            let dtype: DType = t.dtype.to_lowercase().parse().map_err(|_| {
                bad(&format!(
                    "tensor `{}` has dtype {}, which candle cannot hold",
                    t.name, t.dtype
                ))
            })?;
            let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
            let bytes = st.raw_bytes(&t.name).map_err(|e| bad(&e))?;
            let tensor =
                Tensor::from_raw_buffer(bytes, dtype, &shape, &Device::Cpu).map_err(|e| bad(&e))?;
            st.release(&t.name);
            all.insert(t.name.clone(), tensor);
        }
    }
    Ok(all)
}

/// Loads the model of a Hugging Face checkpoint directory onto `device`, its weights converted
/// to `dtype` (f32, f16 or bf16 files alike). A Mixtral-layout config loads the sparse MoE
/// feed-forward; a LoRA-MoE bundle directory (`clreg_moe.json`) loads its base with the routed
/// experts.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<(Llama, LlamaConfig), ModelError> {
    if !dir.join("config.json").exists() && dir.join(crate::moe::lora_moe::BUNDLE_JSON).is_file() {
        // A LoRA-MoE bundle: its base with the routed experts on top.
        let (model, _) = crate::moe::lora_moe::load_bundle(dir, device, dtype, false)
            .map_err(|e| ModelError::model(dir.display(), e.to_string()))?;
        let cfg = model.config().clone();
        return Ok((model, cfg));
    }
    let cfg = read_config(dir)?;
    if cfg.hidden_act != "silu" {
        return Err(ModelError::model(
            dir.join("config.json").display(),
            format!(
                "hidden_act `{}` is not supported; clreg runs silu (SwiGLU) models",
                cfg.hidden_act
            ),
        ));
    }
    if cfg.extra.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(ModelError::model(
            dir.join("config.json").display(),
            "rope_scaling is set; clreg runs plain RoPE only",
        ));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if cfg.extra.get(key) == Some(&serde_json::Value::Bool(true)) {
            return Err(ModelError::model(
                dir.join("config.json").display(),
                format!("{key} is true; clreg runs Llama models without linear biases"),
            ));
        }
    }
    let files = weight_files(dir)?;
    let tensors = read_tensors(&files)?;
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let model = Llama::new(&cfg, vb).map_err(|e| {
        ModelError::model(
            dir.display(),
            format!("the weights do not fit config.json: {e}"),
        )
    })?;
    Ok((model, cfg))
}
