//! `clreg local mix`: a mixture of experts from a mergekit-moe YAML recipe — fine-tunes into a
//! Mixtral checkpoint, or adapters into a LoRA-MoE bundle — with optional router training.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clreg_engine::moe::{self, MoeRecipe, RouterTraining};

use crate::args::MixArgs;
use crate::commands::Ctx;
use crate::error::{ExitStatus, LocalError};

pub async fn mix(ctx: &Ctx, a: MixArgs) -> Result<ExitStatus> {
    let text = std::fs::read_to_string(&a.config)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", a.config.display())))?;
    let mut recipe = MoeRecipe::from_yaml(&text)
        .map_err(|e| LocalError::usage(format!("{}: {e}", a.config.display())))?;
    recipe.digests = crate::digests::cached(ctx.cache()?);
    if a.seed.is_some() {
        recipe.seed = a.seed;
    }
    if a.lora && a.train_router.is_some() {
        return Err(LocalError::usage(
            "--train-router trains the routers of a Mixtral mixture; it does not apply to --lora",
        )
        .into());
    }
    let training = a.train_router.as_ref().map(|data| RouterTraining {
        steps: a.steps,
        learning_rate: a.lr,
        aux_loss_coef: a.aux_coef,
        seed: recipe.seed.unwrap_or(0),
        ..RouterTraining::new(data)
    });

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let on_ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.total(0, "mixing");
    let out = a.output.clone();
    let (lora, quiet) = (a.lora, !ctx.out.progress());
    let result = tokio::task::spawn_blocking(move || {
        let report = |p: clreg_engine::merge::Progress| {
            bar.set_length(p.tensors_total as u64);
            bar.set_position(p.tensors_done as u64);
        };
        let train_report = |p: moe::TrainProgress| {
            if !quiet && (p.step == 1 || p.step == p.steps || p.step.is_multiple_of(10)) {
                eprintln!(
                    "router training step {}/{}: loss {:.4} (aux {:.4}), {:.0} tokens/s",
                    p.step, p.steps, p.loss, p.aux_loss, p.tokens_per_s
                );
            }
        };
        let done = if lora {
            moe::mix_lora(&recipe, &out, &report, &cancel)
        } else {
            moe::mix_mixtral(
                &recipe,
                &out,
                training.as_ref(),
                &report,
                &train_report,
                &cancel,
            )
        };
        bar.finish_and_clear();
        done
    })
    .await?;
    on_ctrl_c.abort();
    let report = result.map_err(|e| LocalError::refused(e.code(), e.to_string()))?;
    for warning in &report.warnings {
        ctx.out.note(&format!("warning: {warning}"));
    }
    let p = report.parameters;
    ctx.out.emit(&report, || {
        format!(
            "mixed {} experts ({}, router {}, top-{}) into {}: {} parameters ({} stem, {} \
             experts, {} router), {} active per token",
            report.record.experts.len(),
            report.kind,
            report.record.router.init,
            report.record.router.top_k,
            report.out_dir.display(),
            p.total,
            p.stem,
            p.experts,
            p.router,
            p.active
        )
    })?;
    Ok(ExitStatus::Success)
}
