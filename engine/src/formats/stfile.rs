//! One `.safetensors` file opened for reading: its checked header, and tensors read on demand.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::FormatError;
use crate::formats::dtype::{self, OutDtype};
use crate::formats::mapped::Mapped;
use crate::safetensors_header::{self, SafetensorsInfo, TensorInfo};

/// A tensor's raw bytes as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    /// As stored: `F32`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// An open safetensors file, memory-mapped ([`super::mapped`]).
#[derive(Debug)]
pub struct StFile {
    path: PathBuf,
    map: Mapped,
    info: SafetensorsInfo,
    data_start: usize,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

impl StFile {
    /// Opens `path` and checks its header (names, dtypes, offsets, size).
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let map = Mapped::new(&file).map_err(|e| io_err(path, e))?;
        let bytes = map.bytes();
        let size = bytes.len() as u64;
        let mut prefix = [0u8; 8];
        if let Some(p) = bytes.get(..8) {
            prefix.copy_from_slice(p);
        }
        let n = safetensors_header::header_len(&prefix, size, &name)?;
        let len = usize::try_from(n).map_err(|e| io_err(path, e))?;
        let header = bytes
            .get(8..8 + len)
            .ok_or_else(|| io_err(path, "the header runs past the end of the file"))?;
        let info = safetensors_header::parse_header(header, size, &name)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            info,
            data_start: 8 + len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header, tensors sorted by name.
    pub fn info(&self) -> &SafetensorsInfo {
        &self.info
    }

    /// The tensor names in file order (by data offset).
    pub fn names_in_file_order(&self) -> Vec<&str> {
        let mut t: Vec<&TensorInfo> = self.info.tensors.iter().collect();
        t.sort_by_key(|t| t.begin);
        t.into_iter().map(|t| t.name.as_str()).collect()
    }

    fn tensor(&self, name: &str) -> Result<&TensorInfo, FormatError> {
        self.info.get(name).ok_or_else(|| {
            FormatError::model(
                &self.path.display().to_string(),
                format!("tensor `{name}` is not in this file"),
            )
        })
    }

    /// Where tensor `name`'s bytes lie in the map.
    fn range(&self, t: &TensorInfo) -> Result<Range<usize>, FormatError> {
        let to = |v: u64| usize::try_from(v).map_err(|e| io_err(&self.path, e));
        // parse_header checked the offsets against the file's size.
        Ok(self.data_start + to(t.begin)?..self.data_start + to(t.end)?)
    }

    fn bytes_of(&self, t: &TensorInfo) -> Result<&[u8], FormatError> {
        let range = self.range(t)?;
        self.map.bytes().get(range).ok_or_else(|| {
            io_err(
                &self.path,
                format!("tensor `{}` lies past the end of the file", t.name),
            )
        })
    }

    /// The raw bytes of tensor `name` (a copy; the map's pages are then released).
    pub fn read_raw(&self, name: &str) -> Result<RawTensor, FormatError> {
        let t = self.tensor(name)?;
        let raw = RawTensor {
            dtype: t.dtype.clone(),
            shape: t.shape.iter().map(|d| *d as usize).collect(),
            bytes: self.bytes_of(t)?.to_vec(),
        };
        self.release(name);
        Ok(raw)
    }

    /// The stored bytes of tensor `name` in place, without a copy (for copying a tensor to an
    /// output unchanged); [`StFile::release`] it once written.
    pub fn raw_bytes(&self, name: &str) -> Result<&[u8], FormatError> {
        self.bytes_of(self.tensor(name)?)
    }

    /// Tensor `name` as `f32` (from F32, F16 or BF16), decoded straight from the map, whose
    /// pages are then released.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, FormatError> {
        let mut out = Vec::new();
        self.read_f32_into(name, &mut out)?;
        Ok(out)
    }

    /// [`StFile::read_f32`] into `out`, resized to the tensor's length (a buffer kept across
    /// tensors is not allocated again).
    pub fn read_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<(), FormatError> {
        let t = self.tensor(name)?;
        let dtype = OutDtype::from_safetensors(&t.dtype).ok_or_else(|| {
            FormatError::model(
                &self.path.display().to_string(),
                format!(
                    "tensor `{name}` has dtype {}; clreg computes on F32, F16 and BF16 tensors \
                     only: convert the checkpoint",
                    t.dtype
                ),
            )
        })?;
        let numel = usize::try_from(t.numel()).map_err(|e| io_err(&self.path, e))?;
        out.truncate(numel);
        out.resize(numel, 0.0);
        dtype::decode_into(dtype, self.bytes_of(t)?, out);
        self.release(name);
        Ok(())
    }

    /// Tensor `name` in place, without a copy, when it is stored as `F32` at a 4-byte aligned
    /// offset on a little-endian machine (as every safetensors writer lays it out); `None`
    /// otherwise, and the caller reads it with [`StFile::read_f32`].
    pub fn f32_slice(&self, name: &str) -> Result<Option<&[f32]>, FormatError> {
        let t = self.tensor(name)?;
        if t.dtype != "F32" || cfg!(target_endian = "big") {
            return Ok(None);
        }
        Ok(bytemuck::try_cast_slice(self.bytes_of(t)?).ok())
    }

    /// Tells the kernel that tensor `name` was consumed: its pages leave the resident set
    /// (advice; the tensor can still be read).
    pub fn release(&self, name: &str) {
        if let Some(range) = self.info.get(name).and_then(|t| self.range(t).ok()) {
            self.map.release(range);
        }
    }
}
