//! Building the model a run trains: the base's weights in f32, earlier adapters merged into them
//! or stacked frozen on top, and the trainable variables (a fresh LoRA, or the chosen weights for
//! full fine-tuning).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::{Method, SequentialMode, TrainConfig};
use super::record::{RECORD, TrainRecord};
use crate::formats::LoraAdapter as AdapterFile;
use crate::merge::record::{FileHash, sha256_file};
use crate::model::{self, Llama};

/// One trainable parameter: its name in the output and its variable.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

/// An earlier round's adapter as the record lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterInput {
    pub path: PathBuf,
    pub files: Vec<FileHash>,
}

/// The model ready to train.
pub struct Setup {
    pub model: Llama,
    pub params: Vec<Param>,
    /// LoRA: the new adapter's modules and their `(A, B)` parameter indices in `params`.
    pub lora_modules: Vec<(String, usize, usize)>,
    /// O-LoRA: per module, the earlier adapters' A matrices (frozen).
    pub earlier_a: BTreeMap<String, Vec<Tensor>>,
    pub base_files: Vec<FileHash>,
    pub adapters: Vec<AdapterInput>,
    /// The base's tensors in the order they are written back (FFT output).
    pub tensor_order: Vec<String>,
    /// FFT: every weight of the model by name (variables for the trained ones).
    pub weights: HashMap<String, Tensor>,
}

fn hash_files(files: &[PathBuf]) -> Result<Vec<FileHash>, TrainError> {
    use rayon::prelude::*;
    Ok(files
        .par_iter()
        .map(|f| {
            Ok(FileHash {
                file: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256: sha256_file(f)?,
            })
        })
        .collect::<Result<Vec<_>, crate::error::FormatError>>()?)
}

/// Whether FFT trains `name` given the `fft_params` selectors (empty = everything).
pub fn fft_trains(selectors: &[String], name: &str) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| name.contains(s.as_str()))
}

/// Refuses an earlier adapter whose own training record names a different base.
fn check_adapter_base(dir: &Path, base_files: &[FileHash]) -> Result<(), TrainError> {
    let path = dir.join(RECORD);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    let Ok(record) = serde_json::from_slice::<TrainRecord>(&bytes) else {
        return Ok(());
    };
    if record.base.files != base_files {
        return Err(TrainError::BaseMismatch {
            adapter: dir.display().to_string(),
            reason: format!(
                "its {RECORD} lists base files {} with other contents than the given base; pass \
                 the base it was trained on (--base), or train a new adapter",
                record
                    .base
                    .files
                    .iter()
                    .map(|f| f.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(())
}

/// Loads the base, applies the earlier adapters as `cfg.mode` says, and creates the trainable
/// variables.
pub fn setup(
    base: &Path,
    adapters: &[PathBuf],
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Setup, TrainError> {
    let config = model::read_config(base)?;
    let files = model::weight_files(base)?;
    let base_files = hash_files(&files)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut tensor_order = Vec::new();
    for (name, t) in model::read_tensors(&files)? {
        tensor_order.push(name.clone());
        tensors.insert(name, t.to_dtype(DType::F32)?);
    }
    tensor_order.sort();

    let mut adapter_inputs = Vec::new();
    let mut earlier_a: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
    let mut stacked = Vec::new();
    for dir in adapters {
        check_adapter_base(dir, &base_files)?;
        let file = AdapterFile::open(dir)?;
        let mut modules = Vec::new();
        for module in file.modules() {
            let key = format!("{module}.weight");
            let Some(w) = tensors.get(&key) else {
                return Err(TrainError::BaseMismatch {
                    adapter: dir.display().to_string(),
                    reason: format!("it adapts `{module}`, which the base does not have"),
                });
            };
            let Some(pair) = file.read(module)? else {
                continue;
            };
            if w.dims() != [pair.out, pair.inp] {
                return Err(TrainError::BaseMismatch {
                    adapter: dir.display().to_string(),
                    reason: format!(
                        "module `{module}` has A [{}, {}] and B [{}, {}], but the base weight is \
                         {:?}",
                        pair.r,
                        pair.inp,
                        pair.out,
                        pair.r,
                        w.dims()
                    ),
                });
            }
            modules.push((module.to_string(), pair));
        }
        for (module, pair) in modules {
            let a = Tensor::from_vec(pair.a.clone(), (pair.r, pair.inp), &Device::Cpu)?;
            earlier_a
                .entry(module.clone())
                .or_default()
                .push(a.to_device(device)?);
            if cfg.mode == SequentialMode::Merged {
                let key = format!("{module}.weight");
                let scale = file.scale(&module);
                let delta = pair.delta(scale, file.config().fan_in_fan_out);
                let delta = Tensor::from_vec(delta, (pair.out, pair.inp), &Device::Cpu)?;
                if let Some(w) = tensors.get_mut(&key) {
                    *w = (&*w + delta)?;
                }
            }
        }
        if cfg.mode == SequentialMode::Stacked {
            stacked.push(dir.clone());
        }
        adapter_inputs.push(AdapterInput {
            path: dir.clone(),
            files: hash_files(&[
                dir.join("adapter_config.json"),
                dir.join("adapter_model.safetensors"),
            ])?,
        });
    }

    let mut params = Vec::new();
    if cfg.method == Method::Fft {
        for name in &tensor_order {
            if fft_trains(&cfg.fft_params, name)
                && let Some(t) = tensors.get_mut(name)
            {
                let var = Var::from_tensor(&t.to_device(device)?)?;
                *t = var.as_tensor().clone();
                params.push(Param {
                    name: name.clone(),
                    var,
                });
            }
        }
        if params.is_empty() {
            return Err(TrainError::InvalidConfig(format!(
                "fft_params {:?} select no weight of the base; use names such as `mlp`, \
                 `layers.3.`, `embed_tokens`",
                cfg.fft_params
            )));
        }
    }
    let weights = tensors.clone();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let mut model = Llama::new(&config, vb).map_err(|e| {
        TrainError::Model(model::ModelError::model(
            base.display(),
            format!("the weights do not fit config.json: {e}"),
        ))
    })?;
    for dir in &stacked {
        model.add_adapter_dir(dir)?;
    }
    let mut lora_modules = Vec::new();
    if cfg.method.trains_adapter() {
        let targets: Vec<&str> = cfg.lora.targets.iter().map(String::as_str).collect();
        let added =
            model.add_trainable_adapters(&targets, cfg.lora.r, cfg.lora.scale(), cfg.seed)?;
        for (module, a, b) in added {
            let ia = params.len();
            params.push(Param {
                name: format!("{module}.lora_A"),
                var: a,
            });
            params.push(Param {
                name: format!("{module}.lora_B"),
                var: b,
            });
            lora_modules.push((module, ia, ia + 1));
        }
    }
    Ok(Setup {
        model,
        params,
        lora_modules,
        earlier_a,
        base_files,
        adapters: adapter_inputs,
        tensor_order,
        weights: if cfg.method == Method::Fft {
            weights
        } else {
            HashMap::new()
        },
    })
}
