//! Evaluations: one score per (collaboration, artifact, task, metric), recorded by eval jobs
//! or imported from lm-evaluation-harness and TRACE result files. Each record is a ledger event
//! and may complete a round of a series (a snapshot of its report).

use chrono::Utc;
use clreg_types::{ErrorCode, Evaluation, ImportEvaluations, ResultsFormat};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

use crate::artifacts;
use crate::auth::Caller;
use crate::authz::{Access, Action};
use crate::db::entities::{collaboration, evaluation, user};
use crate::error::ApiError;
use crate::state::AppState;

/// One score to record.
#[derive(Debug, Clone)]
pub struct Score {
    pub task: String,
    pub metric: String,
    /// In [0, 1].
    pub score: f64,
    pub n: u64,
    /// Where it came from (the engine's task report without examples, or the import's source).
    pub report: serde_json::Value,
}

/// Who records, and for which job.
pub struct Recorder<'a> {
    pub user_id: i64,
    /// The ledger's actor (a user, or the worker that ran the job).
    pub actor: &'a str,
    pub job: Option<uuid::Uuid>,
}

/// Records `scores` of `artifact` (the newest of each task and metric replaces the older),
/// each with its ledger event, then refreshes the snapshots of series it belongs to.
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    collab: &collaboration::Model,
    artifact: &str,
    by: &Recorder<'_>,
    scores: &[Score],
) -> Result<Vec<i64>, ApiError> {
    let now = Utc::now();
    let mut ids = Vec::with_capacity(scores.len());
    for s in scores {
        evaluation::Entity::delete_many()
            .filter(evaluation::Column::CollabId.eq(collab.id))
            .filter(evaluation::Column::ArtifactId.eq(artifact))
            .filter(evaluation::Column::Task.eq(s.task.as_str()))
            .filter(evaluation::Column::Metric.eq(s.metric.as_str()))
            .exec(txn)
            .await?;
        let row = evaluation::ActiveModel {
            collab_id: Set(collab.id),
            artifact_id: Set(artifact.to_string()),
            task: Set(s.task.clone()),
            metric: Set(s.metric.clone()),
            score: Set(s.score),
            n: Set(i64::try_from(s.n).unwrap_or(i64::MAX)),
            job_id: Set(by.job),
            report: Set(s.report.to_string()),
            created_by: Set(by.user_id),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        crate::ledger::append(
            txn,
            Some((collab.id, &collab.name)),
            "evaluation.recorded",
            by.actor,
            json!({"job": by.job, "evaluation": row.id, "artifact": artifact,
                   "task": s.task, "metric": s.metric, "score": s.score, "n": s.n}),
        )
        .await?;
        ids.push(row.id);
    }
    crate::series::evaluated(txn, collab, artifact, by.actor).await?;
    Ok(ids)
}

/// The wire form of an evaluation.
pub async fn to_wire<C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    e: evaluation::Model,
) -> Result<Evaluation, ApiError> {
    let created_by = user::Entity::find_by_id(e.created_by)
        .one(db)
        .await?
        .map(|u| u.name)
        .unwrap_or_default();
    Ok(Evaluation {
        id: e.id,
        collab: collab.name.clone(),
        artifact: e.artifact_id,
        task: e.task,
        metric: e.metric,
        score: e.score,
        n: u64::try_from(e.n).unwrap_or(0),
        job: e.job_id,
        created_by,
        created_at: e.created_at,
    })
}

/// Imports a results file's scores of an artifact the caller may read. Only scores are kept:
/// a TRACE file's generations and labels (dataset content) are read and dropped.
pub async fn import(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: ImportEvaluations,
) -> Result<Vec<Evaluation>, ApiError> {
    access.require(Action::SubmitJob)?;
    let readable = artifacts::member_collabs(state, caller.id, Action::Read).await?;
    let artifact = artifacts::find(state, &req.artifact, &readable).await?;
    let file = req
        .file
        .clone()
        .unwrap_or_else(|| "the results file".into());
    // Parsing (and rescoring) up to 64 MiB is CPU work: on a blocking thread, under the permit.
    let scores = {
        let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
        let (req, file) = (req.clone(), file.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<Score>, ApiError> {
            let invalid = |e: clreg_engine::eval::EvalError| {
                ApiError::new(crate::error::wire_code(e.code()), e.to_string())
            };
            let scores: Vec<Score> = match req.format {
                ResultsFormat::LmEval => {
                    if req.task.is_some() || req.metric.is_some() {
                        return Err(ApiError::bad_request(
                            "an lm-evaluation-harness file names its tasks and metrics: drop `task` and `metric`",
                        ));
                    }
                    let imported =
                        clreg_engine::eval::import::import_harness(req.content.as_bytes(), &file)
                            .map_err(invalid)?;
                    imported
                        .tasks
                        .into_iter()
                        .map(|t| Score {
                            report: json!({"source": "lm_eval", "file": file, "key": t.key}),
                            task: t.task,
                            metric: t.metric,
                            score: t.score,
                            n: t.n.unwrap_or(0) as u64,
                        })
                        .collect()
                }
                ResultsFormat::Trace => {
                    let task = req.task.clone().ok_or_else(|| {
                        ApiError::bad_request("a TRACE results file holds one task: name it in `task`")
                    })?;
                    let results = clreg_engine::eval::import::import_trace(req.content.as_bytes(), &file)
                        .map_err(invalid)?;
                    let n = results.results.len() as u64;
                    let (metric, score, key) = match &req.metric {
                        Some(m) => {
                            let metric = crate::jobs::metric_of(m)?;
                            let score = results.rescore(metric).ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "cannot rescore with `{m}`: the file holds no generations (or `mc` needs the model)"
                                ))
                            })?;
                            (m.clone(), score, None)
                        }
                        None => {
                            let (key, score) = results.score().ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "{file} has none of accuracy, similarity, sari, rouge-L in `eval`: pass `metric` to rescore its generations"
                                ))
                            })?;
                            (key.to_string(), score, Some(key))
                        }
                    };
                    vec![Score {
                        task,
                        metric,
                        score,
                        n,
                        report: json!({"source": "trace", "file": file, "key": key}),
                    }]
                }
            };
            Ok(scores)
        })
        .await
        .map_err(ApiError::internal)??
    };
    if scores.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{file} holds no usable score (acc_norm, acc or exact_match)"
        )));
    }
    for s in &scores {
        if s.task.trim().is_empty() || s.task.len() > 128 || s.metric.len() > 32 {
            return Err(ApiError::bad_request(format!(
                "task `{}` / metric `{}`: a task name is 1-128 characters, a metric at most 32",
                s.task, s.metric
            )));
        }
        if !(s.score.is_finite() && (0.0..=1.0).contains(&s.score)) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "{}: score {} is not in [0, 1]; scores are fractions (0.85, not 85)",
                    s.task, s.score
                ),
            ));
        }
    }
    let ids = crate::db::write(&state.db, |txn| {
        let (collab, artifact_id, scores) =
            (access.collab.clone(), artifact.id.clone(), scores.clone());
        let (actor, user_id) = (caller.name.clone(), caller.id);
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let by = Recorder {
                user_id,
                actor: &actor,
                job: None,
            };
            record(txn, &collab, &artifact_id, &by, &scores).await
        })
    })
    .await?;
    let rows = evaluation::Entity::find()
        .filter(evaluation::Column::Id.is_in(ids))
        .all(&state.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for e in rows {
        out.push(to_wire(&state.db, &access.collab, e).await?);
    }
    Ok(out)
}
