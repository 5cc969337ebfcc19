//! One `.safetensors` file opened for reading: its checked header, and tensors read on demand.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::FormatError;
use crate::formats::dtype::{self, OutDtype};
use crate::safetensors_header::{self, SafetensorsInfo, TensorInfo};

/// Bytes read per positional read while decoding a tensor.
const READ_PIECE: usize = 8 << 20;

/// A tensor's raw bytes as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    /// As stored: `F32`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// An open safetensors file.
#[derive(Debug)]
pub struct StFile {
    path: PathBuf,
    file: File,
    info: SafetensorsInfo,
    data_start: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0usize;
        while done < buf.len() {
            let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

impl StFile {
    /// Opens `path` and checks its header (names, dtypes, offsets, size).
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let size = file.metadata().map_err(|e| io_err(path, e))?.len();
        let mut prefix = [0u8; 8];
        if size >= 8 {
            read_at(&file, &mut prefix, 0).map_err(|e| io_err(path, e))?;
        }
        let n = safetensors_header::header_len(&prefix, size, &name)?;
        let len = usize::try_from(n).map_err(|e| io_err(path, e))?;
        let mut header = vec![0u8; len];
        read_at(&file, &mut header, 8).map_err(|e| io_err(path, e))?;
        let info = safetensors_header::parse_header(&header, size, &name)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            info,
            data_start: 8 + n,
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

    /// The raw bytes of tensor `name`.
    pub fn read_raw(&self, name: &str) -> Result<RawTensor, FormatError> {
        let t = self.tensor(name)?;
        let len = usize::try_from(t.end - t.begin).map_err(|e| io_err(&self.path, e))?;
        let mut bytes = vec![0u8; len];
        read_at(&self.file, &mut bytes, self.data_start + t.begin)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(RawTensor {
            dtype: t.dtype.clone(),
            shape: t.shape.iter().map(|d| *d as usize).collect(),
            bytes,
        })
    }

    /// Tensor `name` as `f32` (from F32, F16 or BF16), read in pieces so that only the `f32`
    /// result is held in full.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, FormatError> {
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
        let size = dtype.size();
        let numel = usize::try_from(t.numel()).map_err(|e| io_err(&self.path, e))?;
        let mut out = vec![0f32; numel];
        let piece_elems = READ_PIECE / size;
        let mut buf = vec![0u8; piece_elems.min(numel) * size];
        for (i, chunk) in out.chunks_mut(piece_elems.max(1)).enumerate() {
            let bytes = &mut buf[..chunk.len() * size];
            let offset = self.data_start + t.begin + (i * piece_elems * size) as u64;
            read_at(&self.file, bytes, offset).map_err(|e| io_err(&self.path, e))?;
            dtype::decode_into(dtype, bytes, chunk);
        }
        Ok(out)
    }
}
