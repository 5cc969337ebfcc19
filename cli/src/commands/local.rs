//! `clreg local …`: engine work on local files, no server involved.

use anyhow::Result;
use clreg_engine::tiny::{TinyConfig, write_tiny_llama};

use crate::args::TinyArgs;
use crate::commands::Ctx;
use crate::error::{ExitStatus, LocalError};

pub fn tiny(ctx: &Ctx, a: TinyArgs) -> Result<ExitStatus> {
    if a.output.join("config.json").exists() || a.output.join("model.safetensors").exists() {
        return Err(LocalError::usage(format!(
            "{} already holds a model; choose an empty directory",
            a.output.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&a.output)?;
    let t = TinyConfig {
        hidden: a.hidden,
        intermediate: a.intermediate,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        vocab: a.vocab,
        tie: a.tie,
    };
    write_tiny_llama(&a.output, &t, a.seed, a.shard_bytes)
        .map_err(|e| LocalError::usage(e.to_string()))?;
    let parameters = clreg_engine::tiny::tiny_llama_config(&t).parameters();
    let summary = serde_json::json!({"dir": a.output, "seed": a.seed, "parameters": parameters});
    ctx.out.emit(&summary, || {
        format!(
            "wrote a {parameters}-parameter Llama (seed {}) to {}",
            a.seed,
            a.output.display()
        )
    })?;
    Ok(ExitStatus::Success)
}
