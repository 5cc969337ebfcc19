//! What every output directory shares besides its tensors: JSON files written the same way
//! (records, configs, descriptions: pretty, newline-terminated) and the side files copied from
//! the model the output derives from. Merges, mixes, training and the tiny-model writer use
//! these; outputs are staged ([`super::Staging`]) and their tensors written by
//! [`super::CheckpointWriter`].

use std::path::Path;

use serde::Serialize;

use crate::error::FormatError;

/// Files an output copies from the model it derives from (the config is each writer's own).
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn io(path: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::io(&path.display().to_string(), e.to_string())
}

/// Writes `value` as pretty JSON with a final newline.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), FormatError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| io(path, e))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| io(path, e))
}

/// Copies every [`SIDE_FILES`] entry `from` has into `to`.
pub fn copy_side_files(from: &Path, to: &Path) -> Result<(), FormatError> {
    for name in SIDE_FILES {
        let src = from.join(name);
        if src.is_file() {
            let dst = to.join(name);
            std::fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
        }
    }
    Ok(())
}
