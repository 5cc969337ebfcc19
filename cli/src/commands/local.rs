//! `clreg local …`: engine work on local files, no server involved.

use anyhow::Result;
use clreg_engine::tiny::{TinyConfig, write_tiny_llama};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clreg_engine::merge::{Flavour, Recipe, run_recipe};

use crate::args::{MergeArgs, TinyArgs};
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

pub async fn merge(ctx: &Ctx, a: MergeArgs) -> Result<ExitStatus> {
    let text = std::fs::read_to_string(&a.config)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", a.config.display())))?;
    let mut recipe = Recipe::from_yaml(&text)
        .map_err(|e| LocalError::usage(format!("{}: {e}", a.config.display())))?;
    if let Some(flavour) = &a.flavour {
        recipe.flavour = Some(if flavour == "peft" {
            Flavour::Peft
        } else {
            Flavour::Mergekit
        });
    }
    if a.seed.is_some() {
        recipe.seed = a.seed;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::Relaxed);
            }
        })
    };
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.total(0, "merging");
    let out = a.output.clone();
    let result = tokio::task::spawn_blocking(move || {
        let report = |p: clreg_engine::merge::Progress| {
            if p.bytes_total > 0 {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
            }
        };
        let done = run_recipe(&recipe, &out, &report, &cancel);
        bar.finish_and_clear();
        done
    })
    .await?;
    on_ctrl_c.abort();
    let report = result.map_err(|e| LocalError::refused(e.code(), e.to_string()))?;
    for warning in &report.warnings {
        ctx.out.note(&format!("warning: {warning}"));
    }
    ctx.out.emit(&report, || {
        format!(
            "merged {} tensors ({} {}, {}) into {} [{}]",
            report.tensors,
            report.method.name(),
            if report.flavour == Flavour::Peft {
                "peft"
            } else {
                "mergekit"
            },
            report.output_dtype,
            report.out_dir.display(),
            report.output_kind
        )
    })?;
    Ok(ExitStatus::Success)
}
