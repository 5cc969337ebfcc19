//! `clreg local …`: engine work on local files, no server involved.

use anyhow::Result;
use clreg_engine::tiny::{TinyConfig, write_tiny_llama};

use clreg_engine::formats::dtype::OutDtype;
use clreg_engine::job::{Device, JobEvent, JobOutput, JobSpec, MergeSpec};
use clreg_engine::merge::{Flavour, Recipe};

use crate::args::{GenerateArgs, ImportGgufArgs, MergeArgs, TinyArgs};
use crate::commands::Ctx;
use crate::commands::job::{cancel_on_ctrl_c, run_local};
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
        vocab: if a.tokenizer == "bytes" {
            a.vocab.max(clreg_engine::tiny::BYTE_VOCAB)
        } else {
            a.vocab
        },
        tie: a.tie,
    };
    write_tiny_llama(&a.output, &t, a.seed, a.shard_bytes)
        .and_then(|()| {
            if a.tokenizer == "bytes" {
                clreg_engine::tiny::write_byte_tokenizer(&a.output)
            } else {
                clreg_engine::tiny::write_tiny_tokenizer(&a.output, &t)
            }
        })
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
    if let Some(flavour) = a.flavour {
        recipe.flavour = Some(flavour);
    }
    if a.seed.is_some() {
        recipe.seed = a.seed;
    }
    let spec = JobSpec::Merge(MergeSpec {
        recipe,
        output: a.output.clone(),
    });
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.total(0, "merging");
    let shown = bar.clone();
    let output = run_local(spec, crate::digests::cached(ctx.cache()?), move |e| {
        if let JobEvent::Write {
            bytes_done,
            bytes_total,
            ..
        } = e
            && bytes_total > 0
        {
            shown.set_length(bytes_total);
            shown.set_position(bytes_done);
        }
    })
    .await;
    bar.finish_and_clear();
    let JobOutput::Merge(report) = output? else {
        return Err(LocalError::protocol("a merge job returned another kind of output").into());
    };
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

pub async fn import_gguf(ctx: &Ctx, a: ImportGgufArgs) -> Result<ExitStatus> {
    let dtype = OutDtype::parse(&a.dtype)
        .unwrap_or(OutDtype::Float32)
        .candle();
    let (cancel, on_ctrl_c) = cancel_on_ctrl_c();
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.total(0, "importing");
    let (file, out) = (a.file.clone(), a.output.clone());
    let result = tokio::task::spawn_blocking(move || {
        let report = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let done = clreg_engine::gguf::import(&file, &out, dtype, &report, &cancel);
        bar.finish_and_clear();
        done
    })
    .await?;
    on_ctrl_c.abort();
    let report = result.map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    for warning in &report.warnings {
        ctx.out.note(&format!("warning: {warning}"));
    }
    let summary = serde_json::json!({
        "dir": report.out_dir, "tensors": report.tensors, "parameters": report.parameters,
        "source_types": report.source_types, "skipped": report.skipped, "tokenizer": report.tokenizer,
        "warnings": report.warnings,
    });
    ctx.out.emit(&summary, || {
        format!(
            "imported {} tensors ({} parameters, from {:?}) into {}",
            report.tensors,
            report.parameters,
            report.source_types,
            report.out_dir.display()
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn generate(ctx: &Ctx, a: GenerateArgs) -> Result<ExitStatus> {
    use clreg_engine::model::{self, GenerateOptions};
    let started = std::time::Instant::now();
    let result =
        tokio::task::spawn_blocking(move || -> Result<(String, usize, f64), model::ModelError> {
            let device = Device::Cpu
                .candle()
                .map_err(|e| model::ModelError::InvalidOption(e.message))?;
            let (mut llama, _) = model::load(&a.model, &device, OutDtype::Float32.candle())?;
            for dir in &a.adapter {
                llama.add_adapter_dir(dir)?;
            }
            let tokenizer = model::load_tokenizer(&a.model.join("tokenizer.json"))?;
            let options = GenerateOptions {
                max_new_tokens: a.max_tokens,
                temperature: a.temperature,
                top_p: a.top_p,
                seed: a.seed,
                ..GenerateOptions::default()
            };
            let generating = std::time::Instant::now();
            let encoding = tokenizer.encode(a.prompt.as_str(), true).map_err(|e| {
                model::ModelError::InvalidOption(format!("cannot tokenize the prompt: {e}"))
            })?;
            let ids = model::generate_ids(&llama, encoding.get_ids(), &options)?;
            let seconds = generating.elapsed().as_secs_f64();
            let text = tokenizer
                .decode(&ids, true)
                .map_err(|e| model::ModelError::InvalidOption(format!("cannot decode: {e}")))?;
            Ok((text, ids.len(), seconds))
        })
        .await?;
    let (text, tokens, generate_seconds) =
        result.map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    ctx.out.note(&format!(
        "{tokens} tokens in {generate_seconds:.2} s ({:.1} tokens/s; {seconds:.2} s with loading)",
        tokens as f64 / generate_seconds.max(1e-9)
    ));
    ctx.out.emit(
        &serde_json::json!({"text": text, "tokens": tokens, "seconds": seconds,
            "generate_seconds": generate_seconds}),
        || text.clone(),
    )?;
    Ok(ExitStatus::Success)
}
