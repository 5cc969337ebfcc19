//! Artifact inspection over in-memory files: the input is split into the files of a checkpoint
//! or adapter (config, weights, shard index, adapter config and weights) and inspected as every
//! kind, against a tiny base's shapes. Any result is fine; a panic is not.
#![no_main]

use std::collections::BTreeMap;

use clreg_engine::error::FormatError;
use clreg_engine::inspect::{FileAccess, Kind, inspect_artifact};
use libfuzzer_sys::fuzz_target;

struct Mem(BTreeMap<String, Vec<u8>>);

impl FileAccess for Mem {
    fn size(&self, path: &str) -> Option<u64> {
        self.0.get(path).map(|b| b.len() as u64)
    }

    fn read_range(&self, path: &str, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
        let io = |reason: &str| FormatError::Io {
            file: path.to_string(),
            reason: reason.to_string(),
        };
        let bytes = self.0.get(path).ok_or_else(|| io("missing"))?;
        bytes
            .get(start as usize..end as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io("out of range"))
    }
}

const NAMES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model-00001-of-00002.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "clreg_moe.json",
];

fuzz_target!(|data: &[u8]| {
    let files: BTreeMap<String, Vec<u8>> = data
        .split(|&b| b == 0xff)
        .zip(NAMES)
        .map(|(bytes, name)| (name.to_string(), bytes.to_vec()))
        .collect();
    let paths: Vec<String> = files.keys().cloned().collect();
    let access = Mem(files);
    let base = clreg_engine::tiny::tiny_llama_config(&clreg_engine::tiny::TinyConfig::default());
    let shapes: BTreeMap<String, Vec<u64>> = base.expected_tensors().into_iter().collect();
    for kind in [
        Kind::Base,
        Kind::Checkpoint,
        Kind::Adapter,
        Kind::Mixture,
        Kind::Other,
    ] {
        let _ = inspect_artifact(kind, &access, &paths, Some(&shapes));
        let _ = inspect_artifact(kind, &access, &paths, None);
    }
});
