//! `clreg_merge.json`: the recipe record written beside a merge's output (method, flavour,
//! parameters, seeds, inputs with the sha256 of each file, output dtype, clreg version).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::FormatError;
use crate::merge::recipe::{MergePlan, Recipe};

/// The record's file name.
pub const RECORD: &str = "clreg_merge.json";

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FormatError> {
    let io = |e: std::io::Error| FormatError::io(&path.display().to_string(), e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Where the sha256 of an input file comes from: hashing the file, or a digest the caller has
/// already verified for exactly this file (a blob the registry stores, a file the CLI pulled and
/// checked, keyed by path, size, mtime and inode). Hashing the inputs of a merge or mix for its
/// provenance record is a quarter of its CPU time; known digests skip it.
pub trait DigestSource: Send + Sync {
    /// The lowercase hex sha256 of the file at `path`.
    fn sha256(&self, path: &Path) -> Result<String, FormatError>;
}

/// The default source: read and hash every file.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashFiles;

impl DigestSource for HashFiles {
    fn sha256(&self, path: &Path) -> Result<String, FormatError> {
        sha256_file(path)
    }
}

/// The digest source of a recipe. Not part of the recipe's YAML, and never part of its
/// meaning: two recipes that differ only here are equal.
#[derive(Clone)]
pub struct Digests(pub Arc<dyn DigestSource>);

impl Default for Digests {
    fn default() -> Self {
        Self(Arc::new(HashFiles))
    }
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digests")
    }
}

impl PartialEq for Digests {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One hashed input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileHash {
    pub file: String,
    pub sha256: String,
}

/// One input of the merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// `base` or `model`.
    pub role: String,
    pub path: PathBuf,
    /// `checkpoint` or `adapter`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    pub files: Vec<FileHash>,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub clreg_version: String,
    pub method: String,
    pub flavour: String,
    /// `checkpoint` or `adapter`.
    pub output_kind: String,
    /// The output dtype, or `as base` with the base's dtypes.
    pub output_dtype: String,
    pub compute_dtype: String,
    pub plan: MergePlan,
    pub rng: String,
    pub inputs: Vec<InputRecord>,
    pub recipe: Recipe,
}

/// The description of the DARE mask generator stored in every record.
pub fn rng_description() -> String {
    "DARE masks: key = splitmix64(seed ^ fnv1a64(tensor) ^ (model+1)*0x9e3779b97f4a7c15); \
     element j kept iff (splitmix64 output j+1 from key >> 11) / 2^53 < density \
     (clreg_engine::merge::sparsify::dare_keep)"
        .to_string()
}

/// One input and the files of it to hash.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFiles {
    pub role: String,
    pub path: PathBuf,
    pub kind: String,
    /// (weight, density) of a model input.
    pub weight_density: Option<(f64, f64)>,
    pub files: Vec<PathBuf>,
}

/// Hashes the listed files of each input in parallel (or takes their digests from `digests`).
pub fn hash_inputs(
    inputs: Vec<InputFiles>,
    digests: &Digests,
) -> Result<Vec<InputRecord>, FormatError> {
    inputs
        .into_par_iter()
        .map(
            |InputFiles {
                 role,
                 path,
                 kind,
                 weight_density: wd,
                 files,
             }| {
                let files = files
                    .par_iter()
                    .map(|f| {
                        Ok(FileHash {
                            file: f
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                            sha256: digests.0.sha256(f)?,
                        })
                    })
                    .collect::<Result<Vec<_>, FormatError>>()?;
                Ok(InputRecord {
                    role,
                    path,
                    kind,
                    weight: wd.map(|w| w.0),
                    density: wd.map(|w| w.1),
                    files,
                })
            },
        )
        .collect()
}
