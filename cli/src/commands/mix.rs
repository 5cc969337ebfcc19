//! `clreg local mix`: a mixture of experts from a mergekit-moe YAML recipe — fine-tunes into a
//! Mixtral checkpoint, or adapters into a LoRA-MoE bundle — with optional router training.

use anyhow::Result;
use clreg_engine::job::{JobEvent, JobOutput, JobSpec, MixLayout, MixSpec};
use clreg_engine::moe::{MoeRecipe, RouterSettings};

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
    let router_training = a
        .router
        .settings(a.router.train_router.is_some())?
        .zip(a.router.train_router.as_ref())
        .map(|(settings, data)| {
            RouterSettings {
                seed: recipe.seed.unwrap_or(0),
                ..settings
            }
            .with_data(data)
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

impl crate::args::RouterArgs {
    /// The router training asked for (`None` without calibration data), checked; settings
    /// given without data are refused rather than ignored.
    pub fn settings(&self, has_data: bool) -> Result<Option<RouterSettings>, LocalError> {
        if !has_data {
            if self.steps.is_some() || self.lr.is_some() || self.aux_coef.is_some() {
                return Err(LocalError::usage(
                    "--steps, --lr and --aux-coef set router training: give its calibration data \
                     with --train-router",
                ));
            }
            return Ok(None);
        }
        let d = RouterSettings::default();
        let settings = RouterSettings {
            steps: self.steps.unwrap_or(d.steps),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            aux_loss_coef: self.aux_coef.unwrap_or(d.aux_loss_coef),
            ..d
        };
        settings
            .check()
            .map_err(|e| LocalError::usage(format!("router training: {e}")))?;
        Ok(Some(settings))
    }
}
