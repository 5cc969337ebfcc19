//! `clreg local mix`: a mixture of experts from a mergekit-moe YAML recipe — fine-tunes into a
//! Mixtral checkpoint, or adapters into a LoRA-MoE bundle — with optional router training.

use anyhow::Result;
use clreg_engine::job::{JobEvent, JobOutput, JobSpec, MixLayout, MixSpec};
use clreg_engine::moe::{MoeRecipe, RouterTraining};

use crate::args::MixArgs;
use crate::commands::Ctx;
use crate::commands::job::run_local;
use crate::error::{ExitStatus, LocalError};

pub async fn mix(ctx: &Ctx, a: MixArgs) -> Result<ExitStatus> {
    let text = std::fs::read_to_string(&a.config)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", a.config.display())))?;
    let mut recipe = MoeRecipe::from_yaml(&text)
        .map_err(|e| LocalError::usage(format!("{}: {e}", a.config.display())))?;
    let digests = crate::digests::cached(ctx.cache()?);
    if a.seed.is_some() {
        recipe.seed = a.seed;
    }
    if a.lora && a.train_router.is_some() {
        return Err(LocalError::usage(
            "--train-router trains the routers of a Mixtral mixture; it does not apply to --lora",
        )
        .into());
    }
    let router_training = a.train_router.as_ref().map(|data| RouterTraining {
        steps: a.steps,
        learning_rate: a.lr,
        aux_loss_coef: a.aux_coef,
        seed: recipe.seed.unwrap_or(0),
        ..RouterTraining::new(data)
    });
    let spec = JobSpec::Mix(MixSpec {
        recipe,
        output: a.output.clone(),
        layout: if a.lora {
            MixLayout::LoraMoe
        } else {
            MixLayout::Mixtral
        },
        router_training,
    });
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.total(0, "mixing");
    let shown = bar.clone();
    let quiet = !ctx.out.progress();
    let output = run_local(spec, digests, move |e| match e {
        JobEvent::Write {
            tensors_done,
            tensors_total,
            ..
        } => {
            shown.set_length(tensors_total as u64);
            shown.set_position(tensors_done as u64);
        }
        JobEvent::RouterStep(p)
            if !quiet && (p.step == 1 || p.step == p.steps || p.step.is_multiple_of(10)) =>
        {
            eprintln!(
                "router training step {}/{}: loss {:.4} (aux {:.4}), {:.0} tokens/s",
                p.step, p.steps, p.loss, p.aux_loss, p.tokens_per_s
            );
        }
        _ => {}
    })
    .await;
    bar.finish_and_clear();
    let JobOutput::Mix(report) = output? else {
        return Err(LocalError::protocol("a mix job returned another kind of output").into());
    };
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
