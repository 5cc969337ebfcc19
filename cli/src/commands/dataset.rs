//! `clreg dataset push|ls|pull`: TRACE datasets, whose content is shared only under `full`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clreg_types::{Collaboration, Dataset, Digest, Policy, RegisterDataset};
use serde_json::json;

use super::Ctx;
use crate::client::seg;
use crate::download::fetch;
use crate::error::{ExitStatus, LocalError};
use crate::hashing;
use crate::output::{human_size, short, short_time, table};
use crate::progress::{Progress, Tracker};
use crate::upload::Uploader;
use clreg_engine::trace::validate_trace;

pub struct PushDataset {
    pub file: PathBuf,
    pub collab: String,
    pub task: String,
    pub metric: String,
    pub name: Option<String>,
    pub license: String,
    pub manifest_only: bool,
}

pub async fn push(ctx: &Ctx, a: PushDataset) -> Result<ExitStatus> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
            .context("the file has no usable name; pass --name")?,
    };
    clreg_types::check_name(&name).map_err(|e| LocalError::usage(format!("{e}; pass --name")))?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let examples = validate_trace(&bytes, &a.file.display().to_string())
        .map_err(|e| LocalError::verify("invalid_dataset", e.to_string()))?;
    let digest = hashing::digest_bytes(&bytes);
    let size = bytes.len() as u64;
    drop(bytes);

    let client = ctx.client()?;
    let collab: Collaboration = client
        .get(&format!("/collaborations/{}", seg(&a.collab)))
        .await?;
    let store_content = collab.policy == Policy::Full && !a.manifest_only;
    if store_content {
        let uploader = Uploader::new(client.clone(), ctx.cache()?);
        let progress = Progress::new(ctx.out.progress());
        let total = progress.total(size, "upload");
        let bar = Tracker::new(&progress, &total, size, &name);
        let pushed = uploader.push_file(&a.file, &bar).await;
        bar.finish();
        total.finish_and_clear();
        let pushed = pushed?;
        if pushed.digest != digest {
            return Err(LocalError::verify(
                "file_changed",
                format!(
                    "{} changed while it was being pushed; push again",
                    a.file.display()
                ),
            )
            .into());
        }
    } else if collab.policy == Policy::Semi {
        ctx.out.note(&format!(
            "note: `{}` has a semi policy: only the manifest is registered, the content stays local",
            collab.name
        ));
    } else {
        ctx.out
            .note("note: --manifest-only: the content stays local");
    }
    let req = RegisterDataset {
        name,
        task: a.task,
        metric: a.metric,
        digest,
        size,
        examples: examples as u64,
        license: a.license,
        store_content,
    };
    let d: Dataset = client
        .post(
            &format!("/collaborations/{}/datasets", seg(&a.collab)),
            &req,
        )
        .await?;
    ctx.out.emit(&d, || {
        format!(
            "registered dataset {} ({} examples, {}) {}{}",
            d.name,
            d.examples,
            human_size(d.size),
            d.digest,
            if d.content_stored {
                ", content stored"
            } else {
                ", manifest only"
            }
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn ls(ctx: &Ctx, collab: &str) -> Result<ExitStatus> {
    let list: Vec<Dataset> = ctx
        .client()?
        .get(&format!("/collaborations/{}/datasets", seg(collab)))
        .await?;
    ctx.out.emit(&list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.task.clone(),
                    d.metric.clone(),
                    d.examples.to_string(),
                    human_size(d.size),
                    if d.content_stored { "yes" } else { "no" }.to_string(),
                    short_time(&d.created_at),
                    short(&d.digest.to_string(), 19).to_string(),
                ]
            })
            .collect();
        table(
            &[
                "NAME", "TASK", "METRIC", "EXAMPLES", "SIZE", "STORED", "CREATED", "DIGEST",
            ],
            &rows,
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn pull(ctx: &Ctx, digest: &str, collab: &str, output: &Path) -> Result<ExitStatus> {
    let digest = Digest::parse_lenient(digest).map_err(|e| LocalError::usage(e.to_string()))?;
    let client = ctx.client()?;
    let list: Vec<Dataset> = client
        .get(&format!("/collaborations/{}/datasets", seg(collab)))
        .await?;
    let Some(d) = list.into_iter().find(|d| d.digest == digest) else {
        return Err(crate::error::ApiError {
            status: 404,
            code: "not_found".into(),
            message: format!("dataset {digest} is not registered in `{collab}`"),
        }
        .into());
    };
    let api_path = format!("/collaborations/{}/datasets/{digest}/content", seg(collab));
    let progress = Progress::new(ctx.out.progress());
    let total = progress.total(d.size, "pull");
    let bar = Tracker::new(&progress, &total, d.size, &d.name);
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = crate::download::staging_dir(dir, &digest.hex())?;
    let r = fetch(
        &client,
        &api_path,
        output,
        &staging.join("content.partial"),
        &digest,
        d.size,
        &*ctx.cache()?,
        &bar,
    )
    .await;
    bar.finish();
    total.finish_and_clear();
    r?;
    crate::download::remove_staging(&staging);
    let path = output.display().to_string();
    ctx.out.emit(
        &json!({"digest": digest, "size": d.size, "path": path}),
        || {
            format!(
                "pulled dataset {} ({}) into {path}",
                d.name,
                human_size(d.size)
            )
        },
    )?;
    Ok(ExitStatus::Success)
}
