//! Streaming safetensors writers: the header is written first (every shape is known up front),
//! then each tensor as it is produced, so no output is ever held whole in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::FormatError;
use crate::formats::checkpoint::SINGLE;
use crate::formats::dtype::{self, OutDtype};
use crate::inspect::INDEX;

/// One tensor to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: OutDtype,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, dtype: OutDtype) -> Self {
        Self {
            name: name.into(),
            shape,
            dtype,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

/// One safetensors file written tensor by tensor, in the order of its specs.
#[derive(Debug)]
pub struct SafetensorsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    specs: Vec<TensorSpec>,
    next: usize,
}

impl SafetensorsWriter {
    /// Creates `path` and writes its header (with `__metadata__: {"format": "pt"}`).
    pub fn create(path: &Path, specs: Vec<TensorSpec>) -> Result<Self, FormatError> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".to_string(), json!({"format": "pt"}));
        let mut offset = 0u64;
        for s in &specs {
            let end = offset + s.bytes();
            let entry = json!({
                "dtype": s.dtype.safetensors_name(),
                "shape": s.shape,
                "data_offsets": [offset, end],
            });
            if header.insert(s.name.clone(), entry).is_some() {
                return Err(io_err(path, format!("tensor `{}` is listed twice", s.name)));
            }
            offset = end;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        // Pad to 8 bytes, as the safetensors library does, so the data is aligned.
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let file = File::create(path).map_err(|e| io_err(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&(text.len() as u64).to_le_bytes())
            .and_then(|()| out.write_all(&text))
            .map_err(|e| io_err(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            specs,
            next: 0,
        })
    }

    /// The name of the next tensor to write, if any.
    pub fn next_name(&self) -> Option<&str> {
        self.specs.get(self.next).map(|s| s.name.as_str())
    }

    /// Writes tensor `name` (must be the next one) from `f32`, converted to its dtype.
    pub fn write(&mut self, name: &str, data: &[f32]) -> Result<(), FormatError> {
        let spec = self.check_next(name, data.len())?;
        let bytes = dtype::encode(spec.dtype, data);
        self.write_bytes(&bytes)
    }

    /// Writes tensor `name` (must be the next one) from bytes already in its dtype.
    pub fn write_raw(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        let spec = self.specs.get(self.next).cloned();
        let numel = spec
            .as_ref()
            .map_or(0, |s| bytes.len() / s.dtype.size().max(1));
        let spec = self.check_next(name, numel)?;
        if bytes.len() as u64 != spec.bytes() {
            return Err(io_err(
                &self.path,
                format!(
                    "tensor `{name}`: {} bytes, expected {}",
                    bytes.len(),
                    spec.bytes()
                ),
            ));
        }
        self.write_bytes(bytes)
    }

    fn check_next(&mut self, name: &str, numel: usize) -> Result<TensorSpec, FormatError> {
        let Some(spec) = self.specs.get(self.next).cloned() else {
            return Err(io_err(
                &self.path,
                format!("tensor `{name}` written after the last planned tensor"),
            ));
        };
        if spec.name != name || spec.numel() != numel {
            return Err(io_err(
                &self.path,
                format!(
                    "tensor `{name}` ({numel} elements) written where `{}` ({} elements) was planned",
                    spec.name,
                    spec.numel()
                ),
            ));
        }
        self.next += 1;
        Ok(spec)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(bytes).map_err(|e| io_err(&self.path, e))
    }

    /// Flushes and closes the file; every planned tensor must have been written.
    pub fn finish(mut self) -> Result<PathBuf, FormatError> {
        if let Some(name) = self.next_name() {
            return Err(io_err(
                &self.path,
                format!("tensor `{name}` was never written"),
            ));
        }
        self.out.flush().map_err(|e| io_err(&self.path, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&self.path, e.error()))?;
        file.sync_all().map_err(|e| io_err(&self.path, e))?;
        Ok(self.path)
    }
}

/// A checkpoint written shard by shard into a directory: `model.safetensors` when everything
/// fits in one shard, else `model-0000i-of-0000N.safetensors` plus
/// `model.safetensors.index.json` (`metadata.total_size`, `weight_map`).
#[derive(Debug)]
pub struct CheckpointWriter {
    dir: PathBuf,
    shards: Vec<(String, Vec<TensorSpec>)>,
    current: Option<SafetensorsWriter>,
    shard: usize,
    total_size: u64,
}

impl CheckpointWriter {
    /// Plans the shards: tensors in the given order, a new shard when the next tensor would push
    /// a shard past `shard_bytes` (a larger tensor gets a shard of its own); `None` means one file.
    pub fn create(
        dir: &Path,
        specs: Vec<TensorSpec>,
        shard_bytes: Option<u64>,
    ) -> Result<Self, FormatError> {
        let total_size = specs.iter().map(TensorSpec::bytes).sum();
        let mut groups: Vec<Vec<TensorSpec>> = Vec::new();
        let mut current = 0u64;
        for s in specs {
            let n = s.bytes();
            match groups.last_mut() {
                Some(last) if shard_bytes.is_none_or(|limit| current + n <= limit) => {
                    last.push(s);
                    current += n;
                }
                _ => {
                    groups.push(vec![s]);
                    current = n;
                }
            }
        }
        if groups.is_empty() {
            groups.push(Vec::new());
        }
        let count = groups.len();
        let shards = groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let name = if count == 1 {
                    SINGLE.to_string()
                } else {
                    format!("model-{:05}-of-{count:05}.safetensors", i + 1)
                };
                (name, g)
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            current: None,
            shard: 0,
            total_size,
        })
    }

    /// The file names of the planned shards.
    pub fn shard_names(&self) -> Vec<&str> {
        self.shards.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The total number of tensor bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    fn writer(&mut self) -> Result<&mut SafetensorsWriter, FormatError> {
        loop {
            if let Some(w) = &self.current
                && w.next_name().is_some()
            {
                break;
            }
            if let Some(done) = self.current.take() {
                done.finish()?;
                self.shard += 1;
            }
            let Some((name, specs)) = self.shards.get(self.shard) else {
                return Err(io_err(&self.dir, "more tensors written than planned"));
            };
            let w = SafetensorsWriter::create(&self.dir.join(name), specs.clone())?;
            self.current = Some(w);
        }
        self.current
            .as_mut()
            .ok_or_else(|| io_err(&self.dir, "no shard open"))
    }

    /// Writes the next tensor from `f32`.
    pub fn write(&mut self, name: &str, data: &[f32]) -> Result<(), FormatError> {
        self.writer()?.write(name, data)
    }

    /// Writes the next tensor from bytes already in its dtype.
    pub fn write_raw(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        self.writer()?.write_raw(name, bytes)
    }

    /// Closes the last shard and writes the index when there are several.
    pub fn finish(mut self) -> Result<Vec<String>, FormatError> {
        if let Some(w) = self.current.take() {
            w.finish()?;
            self.shard += 1;
        }
        // Shards with no tensors (only when nothing was planned) are still written.
        while let Some((name, specs)) = self.shards.get(self.shard) {
            if !specs.is_empty() {
                return Err(io_err(
                    &self.dir,
                    format!("tensor `{}` was never written", specs[0].name),
                ));
            }
            SafetensorsWriter::create(&self.dir.join(name), Vec::new())?.finish()?;
            self.shard += 1;
        }
        let names: Vec<String> = self.shards.iter().map(|(n, _)| n.clone()).collect();
        if self.shards.len() > 1 {
            let weight_map: BTreeMap<&str, &str> = self
                .shards
                .iter()
                .flat_map(|(file, specs)| {
                    specs.iter().map(move |s| (s.name.as_str(), file.as_str()))
                })
                .collect();
            let index = json!({
                "metadata": {"total_size": self.total_size},
                "weight_map": weight_map,
            });
            let path = self.dir.join(INDEX);
            let mut text = serde_json::to_string_pretty(&index).map_err(|e| io_err(&path, e))?;
            text.push('\n');
            std::fs::write(&path, text).map_err(|e| io_err(&path, e))?;
        }
        Ok(names)
    }
}
