//! PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_{A,B}.weight`, read module by module and written whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::adapter::{self, AdapterConfig};
use crate::error::FormatError;
use crate::formats::dtype::OutDtype;
use crate::formats::staging::Staging;
use crate::formats::stfile::StFile;
use crate::formats::writer::{SafetensorsWriter, TensorSpec};
use crate::inspect::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

/// The key prefix PEFT writes.
pub const PREFIX: &str = "base_model.model.";

/// The key of `module`'s A matrix.
pub fn a_key(module: &str) -> String {
    format!("{PREFIX}{module}.lora_A.weight")
}

/// The key of `module`'s B matrix.
pub fn b_key(module: &str) -> String {
    format!("{PREFIX}{module}.lora_B.weight")
}

/// One module's LoRA matrices in `f32`: `a` is `[r, inp]`, `b` is `[out, r]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub r: usize,
    pub inp: usize,
    pub out: usize,
}

impl LoraPair {
    /// ΔW = `scale` · B·A, laid out `[out, inp]`, or `[inp, out]` (transposed) when
    /// `fan_in_fan_out`; the products are accumulated in `f64`.
    pub fn delta(&self, scale: f64, fan_in_fan_out: bool) -> Vec<f32> {
        let (r, inp, out) = (self.r, self.inp, self.out);
        let mut d = vec![0f32; out * inp];
        if fan_in_fan_out {
            // Row i of the [inp, out] layout: d[i][o] = s · Σ_k B[o][k] A[k][i].
            d.par_chunks_mut(out.max(1))
                .enumerate()
                .for_each(|(i, row)| {
                    for (o, x) in row.iter_mut().enumerate() {
                        let mut acc = 0f64;
                        for k in 0..r {
                            acc += f64::from(self.b[o * r + k]) * f64::from(self.a[k * inp + i]);
                        }
                        *x = (scale * acc) as f32;
                    }
                });
        } else {
            d.par_chunks_mut(inp.max(1))
                .enumerate()
                .for_each(|(o, row)| {
                    let mut acc = vec![0f64; inp];
                    for k in 0..r {
                        let c = f64::from(self.b[o * r + k]);
                        if c == 0.0 {
                            continue;
                        }
                        for (x, a) in acc.iter_mut().zip(&self.a[k * inp..(k + 1) * inp]) {
                            *x += c * f64::from(*a);
                        }
                    }
                    for (x, a) in row.iter_mut().zip(acc) {
                        *x = (scale * a) as f32;
                    }
                });
        }
        d
    }
}

/// An open adapter directory.
#[derive(Debug)]
pub struct LoraAdapter {
    dir: PathBuf,
    config: AdapterConfig,
    file: StFile,
    modules: BTreeSet<String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

impl LoraAdapter {
    /// Opens `dir`, parses `adapter_config.json` and checks that every tensor is a PEFT LoRA
    /// key and that every module has both A and B with matching rank.
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let cfg_name = cfg_path.display().to_string();
        let bytes = std::fs::read(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
        let config = adapter::parse(&bytes, &cfg_name)?;
        let file = StFile::open(&dir.join(ADAPTER_WEIGHTS))?;
        let file_name = file.path().display().to_string();
        let bad = |reason: String| FormatError::adapter(&file_name, reason);
        let mut modules = BTreeSet::new();
        for t in &file.info().tensors {
            let name = t.name.as_str();
            let rest = name.strip_prefix(PREFIX);
            let module = rest.and_then(|r| {
                r.strip_suffix(".lora_A.weight")
                    .or_else(|| r.strip_suffix(".lora_B.weight"))
            });
            let Some(module) = module else {
                return Err(bad(format!(
                    "tensor `{name}` is not a PEFT LoRA key (`{PREFIX}<module>.lora_A.weight`)"
                )));
            };
            if OutDtype::from_safetensors(&t.dtype).is_none() {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {}; LoRA weights must be F32, F16 or BF16",
                    t.dtype
                )));
            }
            modules.insert(module.to_string());
        }
        for module in &modules {
            let (a, b) = (a_key(module), b_key(module));
            let (Some(at), Some(bt)) = (file.info().get(&a), file.info().get(&b)) else {
                return Err(bad(format!(
                    "module `{module}` lacks `{a}` or `{b}`; every module needs both"
                )));
            };
            let ok = at.shape.len() == 2 && bt.shape.len() == 2 && at.shape[0] == bt.shape[1];
            if !ok {
                return Err(bad(format!(
                    "module `{module}`: lora_A {:?} and lora_B {:?} do not share a rank \
                     (A is [r, in], B is [out, r])",
                    at.shape, bt.shape
                )));
            }
        }
        if modules.is_empty() {
            return Err(bad("the adapter holds no LoRA tensors".to_string()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            file,
            modules,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// The weights file.
    pub fn file(&self) -> &StFile {
        &self.file
    }

    /// The adapted modules (e.g. `model.layers.0.self_attn.q_proj`), sorted.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(String::as_str)
    }

    pub fn has_module(&self, module: &str) -> bool {
        self.modules.contains(module)
    }

    /// The dtype of the A matrices.
    pub fn dtype(&self) -> Option<OutDtype> {
        self.file
            .info()
            .tensors
            .first()
            .and_then(|t| OutDtype::from_safetensors(&t.dtype))
    }

    /// The LoRA scale of `module` (after rank and alpha patterns, rsLoRA included).
    pub fn scale(&self, module: &str) -> f64 {
        self.config.scale_for(module)
    }

    /// `module`'s matrices in `f32`, or `None` when the adapter does not touch it.
    pub fn read(&self, module: &str) -> Result<Option<LoraPair>, FormatError> {
        if !self.has_module(module) {
            return Ok(None);
        }
        let (ak, bk) = (a_key(module), b_key(module));
        let a = self.file.read_f32(&ak)?;
        let b = self.file.read_f32(&bk)?;
        let shape = |k: &str| {
            self.file
                .info()
                .get(k)
                .map(|t| t.shape.iter().map(|d| *d as usize).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (sa, sb) = (shape(&ak), shape(&bk));
        let (Some(&r), Some(&inp), Some(&out)) = (sa.first(), sa.get(1), sb.first()) else {
            return Err(FormatError::adapter(
                &self.file.path().display().to_string(),
                format!("module `{module}` has malformed shapes"),
            ));
        };
        Ok(Some(LoraPair { a, b, r, inp, out }))
    }

    /// ΔW of `module` in the base weight's layout, or `None` when the adapter does not touch it.
    pub fn delta(&self, module: &str) -> Result<Option<Vec<f32>>, FormatError> {
        Ok(self
            .read(module)?
            .map(|p| p.delta(self.scale(module), self.config.fan_in_fan_out)))
    }
}

/// Writes an adapter into `dir` (an existing, empty directory): the config as given and every
/// module's A and B in `dtype`.
pub fn write_adapter_into(
    dir: &Path,
    config: &AdapterConfig,
    modules: &[(String, LoraPair)],
    dtype: OutDtype,
) -> Result<(), FormatError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let mut text = serde_json::to_string_pretty(config).map_err(|e| io_err(&cfg_path, e))?;
    text.push('\n');
    std::fs::write(&cfg_path, text).map_err(|e| io_err(&cfg_path, e))?;
    let mut specs = Vec::new();
    for (m, p) in modules {
        specs.push(TensorSpec::new(a_key(m), vec![p.r, p.inp], dtype));
        specs.push(TensorSpec::new(b_key(m), vec![p.out, p.r], dtype));
    }
    let mut w = SafetensorsWriter::create(&dir.join(ADAPTER_WEIGHTS), specs)?;
    for (m, p) in modules {
        w.write(&a_key(m), &p.a)?;
        w.write(&b_key(m), &p.b)?;
    }
    w.finish()?;
    Ok(())
}

/// Writes an adapter to `dir` all or nothing (through `dir.partial-<pid>`).
pub fn save_adapter(
    dir: &Path,
    config: &AdapterConfig,
    modules: &[(String, LoraPair)],
    dtype: OutDtype,
) -> Result<PathBuf, FormatError> {
    let staging = Staging::new(dir)?;
    write_adapter_into(staging.path(), config, modules, dtype)?;
    staging.commit()
}
