//! `clreg merge` (a job the registry runs) and `clreg jobs ls|show|logs|cancel|wait`.

use std::time::Duration;

use anyhow::Result;
use clreg_types::{Digest, Evaluation, Job, JobData, JobKind, JobState, JobTask, SubmitJob};
use reqwest::Method;
use sha2::{Digest as _, Sha256};

use super::Ctx;
use crate::args::{
    EvalJobArgs, EvaluationsArgs, JobIdArgs, MergeJobArgs, MixJobArgs, TrainJobArgs,
};
use crate::client::{Client, seg};
use crate::error::{ExitStatus, LocalError};
use crate::output::{short_time, table};

/// `clreg merge`: submits a merge job; with `--wait`, follows it to its end.
pub async fn merge(ctx: &Ctx, a: MergeJobArgs) -> Result<ExitStatus> {
    let recipe = read_recipe(&a.config)?;
    recipe_job(ctx, JobKind::Merge, a, recipe, false, vec![], None).await
}

/// The recipe file's text, sent as is (its references resolve on the server).
fn read_recipe(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", path.display())))?)
}

/// `clreg mix`: submits a mix job from a mergekit-moe recipe of references; with
/// `--train-router`, its calibration set travels with the job (or is named by digest).
pub async fn mix(ctx: &Ctx, a: MixJobArgs) -> Result<ExitStatus> {
    let mut data = carried(a.router.train_router.as_slice())?;
    data.extend(stored(a.train_router_dataset.as_slice())?);
    let text = read_recipe(&a.job.config)?;
    let config = match a.router.settings(!data.is_empty())? {
        Some(settings) => {
            // The recipe's `seed` orders the calibration sequences too, as in `clreg local mix`.
            let recipe = clreg_engine::moe::MoeRecipe::from_yaml(&text)
                .map_err(|e| LocalError::usage(format!("{}: {e}", a.job.config.display())))?;
            let seeded = clreg_engine::moe::RouterSettings {
                seed: recipe.seed.unwrap_or(0),
                ..settings
            };
            Some(serde_json::to_value(seeded)?)
        }
        None => None,
    };
    recipe_job(ctx, JobKind::Mix, a.job, text, a.lora, data, config).await
}

async fn recipe_job(
    ctx: &Ctx,
    kind: JobKind,
    a: MergeJobArgs,
    recipe: String,
    lora: bool,
    data: Vec<JobData>,
    config: Option<serde_json::Value>,
) -> Result<ExitStatus> {
    let req = SubmitJob {
        kind,
        name: Some(a.name.clone()),
        recipe: Some(recipe),
        lora,
        requires: a.requires.clone(),
        description: a.description.clone(),
        base: None,
        adapters: vec![],
        data,
        past: vec![],
        config,
        artifact: None,
        tasks: vec![],
    };
    submit(ctx, &a.collab, &a.name, req, a.wait).await
}

/// Datasets that travel with a job: each file's content and its digest.
fn carried(files: &[std::path::PathBuf]) -> Result<Vec<JobData>> {
    files
        .iter()
        .map(|f| {
            let content = std::fs::read_to_string(f)
                .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", f.display())))?;
            Ok(JobData {
                digest: Digest::from_bytes(Sha256::digest(content.as_bytes()).into()),
                content: Some(content),
            })
        })
        .collect()
}

/// Stored datasets, by digest.
fn stored(digests: &[String]) -> Result<Vec<JobData>> {
    digests
        .iter()
        .map(|d| {
            let digest = Digest::parse_lenient(d)
                .map_err(|e| LocalError::usage(format!("`{d}` is not a dataset digest: {e}")))?;
            Ok(JobData {
                digest,
                content: None,
            })
        })
        .collect()
}

/// `clreg train`: submits a train job; carried data is read from the files named.
pub async fn train(ctx: &Ctx, a: TrainJobArgs) -> Result<ExitStatus> {
    let mut data = carried(&a.data)?;
    data.extend(stored(&a.dataset)?);
    if data.is_empty() {
        return Err(LocalError::usage(
            "give the current task's data: --data FILE (carried) or --dataset DIGEST (stored)",
        )
        .into());
    }
    let mut past = carried(&a.past)?;
    past.extend(stored(&a.past_dataset)?);
    let config = super::train::config_of(&a.settings);
    let req = SubmitJob {
        kind: JobKind::Train,
        name: Some(a.name.clone()),
        recipe: None,
        lora: false,
        requires: a.requires.clone(),
        description: String::new(),
        base: Some(a.base.clone()),
        adapters: a.adapter.clone(),
        data,
        past,
        config: Some(serde_json::to_value(&config)?),
        artifact: None,
        tasks: vec![],
    };
    submit(ctx, &a.collab, &a.name, req, a.wait).await
}

/// `clreg eval`: submits an eval job.
pub async fn eval(ctx: &Ctx, a: EvalJobArgs) -> Result<ExitStatus> {
    // Optional in the grammar only so that `clreg eval import …` parses.
    let (Some(artifact), Some(collab)) = (a.artifact.clone(), a.collab.clone()) else {
        return Err(LocalError::usage(
            "give the artifact to score and --collab: clreg eval REF --collab C --task NAME:METRIC:FILE",
        )
        .into());
    };
    let split = |spec: &str| -> Result<(String, String, String)> {
        let mut parts = spec.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(m), Some(rest)) if !n.is_empty() && !m.is_empty() && !rest.is_empty() => {
                Ok((n.to_string(), m.to_string(), rest.to_string()))
            }
            _ => Err(LocalError::usage(format!(
                "`{spec}`: write a task as NAME:METRIC:FILE (or NAME:METRIC:DIGEST with --stored-task)"
            ))
            .into()),
        }
    };
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let (task, metric, file) = split(spec)?;
        let content = std::fs::read_to_string(&file)
            .map_err(|e| LocalError::usage(format!("cannot read {file}: {e}")))?;
        tasks.push(JobTask {
            task,
            metric,
            data: JobData {
                digest: Digest::from_bytes(Sha256::digest(content.as_bytes()).into()),
                content: Some(content),
            },
        });
    }
    for spec in &a.stored_tasks {
        let (task, metric, digest) = split(spec)?;
        let digest = Digest::parse_lenient(&digest)
            .map_err(|e| LocalError::usage(format!("`{digest}` is not a dataset digest: {e}")))?;
        tasks.push(JobTask {
            task,
            metric,
            data: JobData {
                digest,
                content: None,
            },
        });
    }
    if tasks.is_empty() {
        return Err(LocalError::usage("give at least one --task or --stored-task").into());
    }
    let settings = clreg_engine::eval::EvalSettings {
        batch_size: a.batch_size,
        max_new_tokens: a.max_tokens,
        limit: a.limit,
    };
    settings
        .check()
        .map_err(|e| LocalError::usage(format!("invalid evaluation settings: {e}")))?;
    let config = (settings != Default::default())
        .then(|| serde_json::to_value(settings))
        .transpose()?;
    let req = SubmitJob {
        kind: JobKind::Eval,
        name: None,
        recipe: None,
        lora: false,
        requires: a.requires.clone(),
        description: String::new(),
        base: None,
        adapters: vec![],
        data: vec![],
        past: vec![],
        config,
        artifact: Some(artifact.clone()),
        tasks,
    };
    submit(ctx, &collab, &artifact, req, a.wait).await
}

/// `clreg evaluations`: the collaboration's scores.
pub async fn evaluations(ctx: &Ctx, a: EvaluationsArgs) -> Result<ExitStatus> {
    let mut path = format!("/collaborations/{}/evaluations", seg(&a.collab));
    if let Some(artifact) = &a.artifact {
        path.push_str(&format!("?artifact={}", seg(artifact)));
    }
    let rows: Vec<Evaluation> = ctx.client()?.get(&path).await?;
    ctx.out.emit(&rows, || {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|e| {
                vec![
                    e.artifact.chars().take(12).collect(),
                    e.task.clone(),
                    e.metric.clone(),
                    format!("{:.4}", e.score),
                    e.n.to_string(),
                    short_time(&e.created_at),
                ]
            })
            .collect();
        table(
            &["ARTIFACT", "TASK", "METRIC", "SCORE", "N", "WHEN"],
            &table_rows,
        )
    })?;
    Ok(ExitStatus::Success)
}

/// Submits a job; with `wait`, follows it to its end.
async fn submit(
    ctx: &Ctx,
    collab: &str,
    name: &str,
    req: SubmitJob,
    wait: bool,
) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let job: Job = client
        .post(&format!("/collaborations/{}/jobs", seg(collab)), &req)
        .await?;
    if !wait {
        ctx.out.emit(&job, || {
            format!(
                "job {} queued ({} → {collab}/{name}); follow it with `clreg jobs wait {}`",
                job.id, job.kind, job.id
            )
        })?;
        return Ok(ExitStatus::Success);
    }
    ctx.out.note(&format!("job {} queued", job.id));
    follow(ctx, &client, &job.id.to_string()).await
}

pub async fn ls(ctx: &Ctx, collab: &str) -> Result<ExitStatus> {
    let jobs: Vec<Job> = ctx
        .client()?
        .get(&format!("/collaborations/{}/jobs", seg(collab)))
        .await?;
    ctx.out.emit(&jobs, || {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.id.to_string(),
                    j.kind.to_string(),
                    j.state.to_string(),
                    format!("{:.0}%", j.progress * 100.0),
                    j.name.clone().unwrap_or_default(),
                    j.submitted_by.clone(),
                    short_time(&j.created_at),
                ]
            })
            .collect();
        table(
            &["ID", "KIND", "STATE", "DONE", "NAME", "BY", "SUBMITTED"],
            &rows,
        )
    })?;
    Ok(ExitStatus::Success)
}

fn describe(j: &Job) -> String {
    let mut lines = vec![
        format!("job {} ({}) in {}", j.id, j.kind, j.collab),
        format!(
            "state: {} ({:.0}%) — {}",
            j.state,
            j.progress * 100.0,
            j.message
        ),
        format!(
            "submitted by {} at {}",
            j.submitted_by,
            short_time(&j.created_at)
        ),
        format!("attempts: {}", j.attempts),
    ];
    if let Some(result) = &j.result {
        for id in &result.artifacts {
            lines.push(format!("artifact: {id}"));
        }
    }
    if let Some(e) = &j.error {
        lines.push(format!("error[{}]: {}", e.code, e.message));
    }
    lines.join("\n")
}

pub async fn show(ctx: &Ctx, a: JobIdArgs) -> Result<ExitStatus> {
    let job: Job = ctx.client()?.get(&format!("/jobs/{}", seg(&a.id))).await?;
    ctx.out.emit(&job, || describe(&job))?;
    Ok(ExitStatus::Success)
}

pub async fn logs(ctx: &Ctx, a: JobIdArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let resp = client
        .send(client.request(Method::GET, &format!("/jobs/{}/log", seg(&a.id))))
        .await?;
    let text = resp.text().await?;
    ctx.out
        .emit(&serde_json::json!({ "log": text }), || text.clone())?;
    Ok(ExitStatus::Success)
}

pub async fn cancel(ctx: &Ctx, a: JobIdArgs) -> Result<ExitStatus> {
    let job: Job = ctx
        .client()?
        .post(
            &format!("/jobs/{}/cancel", seg(&a.id)),
            &serde_json::json!({}),
        )
        .await?;
    ctx.out.emit(&job, || match job.state {
        JobState::Cancelled => format!("job {} cancelled", job.id),
        _ => format!(
            "job {} will stop at its next step (`clreg jobs wait {}`)",
            job.id, job.id
        ),
    })?;
    Ok(ExitStatus::Success)
}

pub async fn wait(ctx: &Ctx, a: JobIdArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    follow(ctx, &client, &a.id).await
}

/// Polls a job with a progress bar until it ends; the exit status is its outcome.
async fn follow(ctx: &Ctx, client: &Client, id: &str) -> Result<ExitStatus> {
    let progress = crate::progress::Progress::new(ctx.out.progress());
    let bar = progress.fraction();
    let job = loop {
        let job: Job = client.get(&format!("/jobs/{}", seg(id))).await?;
        bar.set_position((job.progress * 1000.0) as u64);
        bar.set_message(job.message.clone());
        if job.state.is_final() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    ctx.out.emit(&job, || describe(&job))?;
    Ok(match job.state {
        JobState::Succeeded => ExitStatus::Success,
        JobState::Cancelled => ExitStatus::Cancelled,
        _ => match job.error.as_ref().map(|e| e.code.as_str()) {
            Some("internal") => ExitStatus::Server,
            _ => ExitStatus::Refused,
        },
    })
}
