//! Floating-point dtypes of tensor files and their conversion to and from `f32`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The dtypes clreg computes from and writes: `float32`, `float16`, `bfloat16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutDtype {
    Float32,
    Float16,
    Bfloat16,
}

impl OutDtype {
    /// Parses `float32`/`float16`/`bfloat16` (also `fp32`, `f32`, `fp16`, `f16`, `bf16`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "float32" | "fp32" | "f32" => Some(Self::Float32),
            "float16" | "fp16" | "f16" | "half" => Some(Self::Float16),
            "bfloat16" | "bf16" => Some(Self::Bfloat16),
            _ => None,
        }
    }

    /// The dtype of a safetensors dtype name (`F32`, `F16`, `BF16`).
    pub fn from_safetensors(dtype: &str) -> Option<Self> {
        match dtype {
            "F32" => Some(Self::Float32),
            "F16" => Some(Self::Float16),
            "BF16" => Some(Self::Bfloat16),
            _ => None,
        }
    }

    /// The safetensors name: `F32`, `F16`, `BF16`.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::Float32 => "F32",
            Self::Float16 => "F16",
            Self::Bfloat16 => "BF16",
        }
    }

    /// The PyTorch name, as `torch_dtype` in config.json writes it.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Float16 => "float16",
            Self::Bfloat16 => "bfloat16",
        }
    }

    /// The candle dtype tensors of this type compute in.
    pub fn candle(self) -> candle_core::DType {
        match self {
            Self::Float32 => candle_core::DType::F32,
            Self::Float16 => candle_core::DType::F16,
            Self::Bfloat16 => candle_core::DType::BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Float32 => 4,
            Self::Float16 | Self::Bfloat16 => 2,
        }
    }
}

impl std::fmt::Display for OutDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// Elements converted per rayon task.
const PAR_CHUNK: usize = 1 << 16;

/// Converts little-endian `bytes` of `dtype` into `out` (`out.len()` elements).
pub fn decode_into(dtype: OutDtype, bytes: &[u8], out: &mut [f32]) {
    let size = dtype.size();
    out.par_chunks_mut(PAR_CHUNK)
        .zip(bytes.par_chunks(PAR_CHUNK * size))
        .for_each(|(o, b)| match dtype {
            OutDtype::Float32 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                    *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            OutDtype::Float16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            OutDtype::Bfloat16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        });
}

/// Encodes `data` as little-endian `dtype` (round to nearest even for the 16-bit types).
pub fn encode(dtype: OutDtype, data: &[f32]) -> Vec<u8> {
    let size = dtype.size();
    let mut out = vec![0u8; data.len() * size];
    out.par_chunks_mut(PAR_CHUNK * size)
        .zip(data.par_chunks(PAR_CHUNK))
        .for_each(|(o, d)| match dtype {
            OutDtype::Float32 => {
                for (c, x) in o.chunks_exact_mut(4).zip(d) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            OutDtype::Float16 => {
                for (c, x) in o.chunks_exact_mut(2).zip(d) {
                    c.copy_from_slice(&half::f16::from_f32(*x).to_le_bytes());
                }
            }
            OutDtype::Bfloat16 => {
                for (c, x) in o.chunks_exact_mut(2).zip(d) {
                    c.copy_from_slice(&half::bf16::from_f32(*x).to_le_bytes());
                }
            }
        });
    out
}
