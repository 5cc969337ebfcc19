//! A Hugging Face checkpoint directory (one `model.safetensors` or shards with an index),
//! opened for tensor-by-tensor reading.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{self, LlamaConfig};
use crate::error::FormatError;
use crate::formats::dtype::OutDtype;
use crate::formats::stfile::{RawTensor, StFile};
use crate::inspect::{CONFIG, INDEX};

/// The single-file checkpoint name.
pub const SINGLE: &str = "model.safetensors";

/// Where one tensor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    /// As stored: `F32`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::weight_files`].
    pub file: usize,
}

impl TensorMeta {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<StFile>,
    /// Names in a stable order: shard order, then data offset within the shard.
    order: Vec<String>,
    tensors: HashMap<String, TensorMeta>,
    config_json: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

impl Checkpoint {
    /// Opens `dir`: `model.safetensors.index.json` and its shards when the index exists, else
    /// `model.safetensors`. Every header is checked; no tensor data is read.
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        let dir_name = dir.display().to_string();
        let index_path = dir.join(INDEX);
        let (files, weight_map) = if index_path.is_file() {
            let text = std::fs::read(&index_path).map_err(|e| io_err(&index_path, e))?;
            let index: Index = serde_json::from_slice(&text).map_err(|e| {
                FormatError::model(
                    &index_path.display().to_string(),
                    format!("cannot read the shard index: {e}"),
                )
            })?;
            let mut shard_names: Vec<&String> = index.weight_map.values().collect();
            shard_names.sort();
            shard_names.dedup();
            let mut files = Vec::new();
            for s in shard_names {
                if s.contains('/') || s.contains('\\') || s == ".." {
                    return Err(FormatError::model(
                        &index_path.display().to_string(),
                        format!("shard `{s}` is not a plain file name"),
                    ));
                }
                files.push(StFile::open(&dir.join(s))?);
            }
            (files, Some(index.weight_map))
        } else if dir.join(SINGLE).is_file() {
            (vec![StFile::open(&dir.join(SINGLE))?], None)
        } else {
            return Err(FormatError::model(
                &dir_name,
                format!(
                    "neither `{SINGLE}` nor `{INDEX}` is in the directory; it is not a Hugging Face checkpoint"
                ),
            ));
        };

        let mut order = Vec::new();
        let mut tensors = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.names_in_file_order() {
                let Some(t) = f.info().get(name) else {
                    continue;
                };
                let file_name = f.path().display().to_string();
                if let Some(map) = &weight_map {
                    let want = map.get(name).map(String::as_str);
                    let have = f.path().file_name().and_then(|n| n.to_str());
                    if want != have {
                        return Err(FormatError::model(
                            &file_name,
                            format!(
                                "tensor `{name}` is in this shard but the index puts it in {}",
                                want.map_or("no shard".to_string(), |w| format!("`{w}`"))
                            ),
                        ));
                    }
                }
                let meta = TensorMeta {
                    name: name.to_string(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.iter().map(|d| *d as usize).collect(),
                    file: i,
                };
                if tensors.insert(name.to_string(), meta).is_some() {
                    return Err(FormatError::model(
                        &file_name,
                        format!("tensor `{name}` appears in two shards"),
                    ));
                }
                order.push(name.to_string());
            }
        }
        if let Some(map) = &weight_map
            && let Some((name, shard)) = map.iter().find(|(n, _)| !tensors.contains_key(*n))
        {
            return Err(FormatError::model(
                &index_path.display().to_string(),
                format!("the index puts tensor `{name}` in `{shard}`, which does not hold it"),
            ));
        }

        let cfg_path = dir.join(CONFIG);
        let config_json = if cfg_path.is_file() {
            let text = std::fs::read(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
            Some(serde_json::from_slice(&text).map_err(|e| {
                FormatError::model(
                    &cfg_path.display().to_string(),
                    format!("config.json is not JSON: {e}"),
                )
            })?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            order,
            tensors,
            config_json,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names in a stable order (shard order, then position in the shard).
    pub fn names(&self) -> &[String] {
        &self.order
    }

    pub fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The paths of the weight files, in shard order.
    pub fn weight_files(&self) -> Vec<&Path> {
        self.files.iter().map(StFile::path).collect()
    }

    /// `config.json` as JSON, when the directory has one.
    pub fn config_json(&self) -> Option<&serde_json::Value> {
        self.config_json.as_ref()
    }

    /// `config.json` parsed as a Llama-family config, when present.
    pub fn llama_config(&self) -> Result<Option<LlamaConfig>, FormatError> {
        let path = self.dir.join(CONFIG);
        match &self.config_json {
            None => Ok(None),
            Some(v) => {
                config::parse(v.to_string().as_bytes(), &path.display().to_string()).map(Some)
            }
        }
    }

    /// The dtype most of the tensors are stored in (by element count), when it is one clreg
    /// writes.
    pub fn main_dtype(&self) -> Option<OutDtype> {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for t in self.tensors.values() {
            *count.entry(t.dtype.as_str()).or_default() += t.numel();
        }
        count
            .into_iter()
            .max_by_key(|(d, n)| (*n, *d))
            .and_then(|(d, _)| OutDtype::from_safetensors(d))
    }

    fn file_of(&self, name: &str) -> Result<&StFile, FormatError> {
        self.tensors
            .get(name)
            .and_then(|m| self.files.get(m.file))
            .ok_or_else(|| {
                FormatError::model(
                    &self.dir.display().to_string(),
                    format!("the checkpoint has no tensor `{name}`"),
                )
            })
    }

    /// The raw bytes of `name`.
    pub fn read_raw(&self, name: &str) -> Result<RawTensor, FormatError> {
        self.file_of(name)?.read_raw(name)
    }

    /// `name`'s stored bytes in place ([`StFile::raw_bytes`]).
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], FormatError> {
        self.file_of(name)?.raw_bytes(name)
    }

    /// `name` as `f32` (from F32, F16 or BF16; other dtypes are an error naming the tensor).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, FormatError> {
        self.file_of(name)?.read_f32(name)
    }

    /// [`Checkpoint::read_f32`] into a reused buffer ([`StFile::read_f32_into`]).
    pub fn read_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<(), FormatError> {
        self.file_of(name)?.read_f32_into(name, out)
    }

    /// `name` in place when it is aligned little-endian `F32` ([`StFile::f32_slice`]).
    pub fn f32_slice(&self, name: &str) -> Result<Option<&[f32]>, FormatError> {
        self.file_of(name)?.f32_slice(name)
    }

    /// Releases `name`'s pages once it is consumed ([`StFile::release`]).
    pub fn release(&self, name: &str) {
        if let Ok(f) = self.file_of(name) {
            f.release(name);
        }
    }
}
