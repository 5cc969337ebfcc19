//! Workers: claim a queued job (or one whose lease lapsed) under a lease, renew it by heartbeat
//! while a child process does the work, and end the job exactly once.
//!
//! Claiming is one statement: `UPDATE … WHERE id = (SELECT … LIMIT 1 [FOR UPDATE SKIP LOCKED])
//! RETURNING *`, so two workers never hold one job. Every ending (and the start) is written
//! only while this worker still holds the lease, in the transaction that commits the outputs,
//! so a job whose lease lapsed and that another worker took over can never commit twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clreg_engine::Code;
use clreg_engine::job::{Device, JobEvent, JobOutput};
use clreg_types::{CommitArtifact, ErrorCode, JobResult};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, sea_query::Expr,
};
use serde_json::json;

use super::kinds::Staged;
use super::runner::{Child, Line, Order};
use super::stage;
use crate::artifacts::{self, Author};
use crate::db::entities::{artifact, collaboration, job, user};
use crate::error::ApiError;
use crate::state::AppState;

/// How often an idle worker looks for work (jobs queued through this process wake it at once).
const POLL: Duration = Duration::from_millis(500);
/// How often a worker removes what ended (or crashed) jobs left in the store and on disk.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// The most log text a job keeps (the newest part).
const MAX_LOG: usize = 64 << 10;

/// One worker: runs jobs until `shutdown` resolves (between jobs, or cancelling the one it
/// runs).
pub async fn run(state: AppState, name: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let device: Device = state.config.worker_device.parse().unwrap_or_default();
    tracing::info!(worker = %name, %device, "worker started");
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            match super::data::sweep(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "removed what ended jobs left behind"),
                Err(e) => tracing::warn!(error = %e.message, "job sweep failed"),
            }
            last_sweep = Some(std::time::Instant::now());
        }
        match claim(&state, &name, device).await {
            Ok(Some(job)) => {
                let id = job.id;
                if let Err(e) = execute(&state, &name, device, job, &mut shutdown).await {
                    tracing::warn!(job = %id, error = %e.message, "job ended without a record");
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = state.job_queued.notified() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e.message, "claiming a job failed");
                tokio::time::sleep(POLL).await;
            }
        }
    }
    tracing::info!(worker = %name, "worker stopped");
}

fn lease_until(state: &AppState) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(i64::try_from(state.config.job_lease_secs).unwrap_or(30))
}

/// Takes the oldest job this worker can run, with its `job.started` ledger event.
pub async fn claim(
    state: &AppState,
    worker: &str,
    device: Device,
) -> Result<Option<job::Model>, ApiError> {
    let backend = state.db.get_database_backend();
    let skip_locked = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let kind = match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
    };
    // A worker that hands train jobs to a cluster with GPUs takes those that require CUDA.
    let executor = &state.config.executor;
    let gpus_elsewhere = match executor.kind {
        super::executor::ExecutorKind::Slurm => executor.slurm.gpus_per_node > 0,
        super::executor::ExecutorKind::Kubernetes => executor.kubernetes.gpus > 0,
        _ => false,
    };
    let sql = format!(
        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, \
           attempts = attempts + 1, started_at = COALESCE(started_at, $3), \
           message = 'running on ' || $1 \
         WHERE id = (SELECT id FROM jobs \
           WHERE (state = 'queued' OR (state = 'running' AND lease_expires_at < $3)) \
             AND (requires IS NULL OR requires = $4 OR ($5 AND kind = 'train')) \
           ORDER BY created_at LIMIT 1{skip_locked}) \
         RETURNING *"
    );
    let (worker, now, until) = (worker.to_string(), Utc::now(), lease_until(state));
    crate::db::write(&state.db, |txn| {
        let statement = Statement::from_sql_and_values(
            backend,
            sql.clone(),
            [
                worker.clone().into(),
                until.into(),
                now.into(),
                kind.into(),
                gpus_elsewhere.into(),
            ],
        );
        let worker = worker.clone();
        Box::pin(async move {
            let Some(claimed) = job::Entity::find().from_raw_sql(statement).one(txn).await? else {
                return Ok(None);
            };
            let collab = collab_of(txn, claimed.collab_id).await?;
            crate::db::lock_collab(txn, collab.id).await?;
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "job.started",
                &worker,
                json!({"job": claimed.id, "attempt": claimed.attempts}),
            )
            .await?;
            Ok(Some(claimed))
        })
    })
    .await
}

async fn collab_of<C: ConnectionTrait>(db: &C, id: i64) -> Result<collaboration::Model, ApiError> {
    collaboration::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::internal("job without collaboration"))
}

/// How a job ended without outputs, as the worker records it.
enum Ending {
    Failed {
        code: String,
        message: String,
    },
    Cancelled(String),
    /// An eval job's scores of `artifact`.
    Evaluated {
        artifact: String,
        reports: Vec<clreg_engine::eval::TaskReport>,
    },
}

/// Runs a claimed job to its end and records that end.
async fn execute(
    state: &AppState,
    worker: &str,
    device: Device,
    claimed: job::Model,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let id = claimed.id;
    // Each attempt its own scratch: a worker that lost the lease cannot clear another's.
    let scratch = stage::job_dir(state, id).join(claimed.attempts.to_string());
    // The lease is renewed for the whole attempt (staging and upload included), not only
    // while the child runs.
    let renewal = {
        let (state, worker) = (state.clone(), worker.to_string());
        tokio::spawn(async move {
            let every = Duration::from_secs((state.config.job_lease_secs / 3).max(1));
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = renew(&state, id, &worker).await {
                    tracing::warn!(job = %id, error = %e.message, "renewing a lease failed; trying again");
                }
            }
        })
    };
    let result = if claimed.cancel_requested {
        // Its worker died after a cancel request: end it now.
        Ok(Outcome::Cancelled("cancelled on request".to_string()))
    } else {
        run_job(state, worker, device, &claimed, &scratch, shutdown).await
    };
    renewal.abort();
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    let (ending, prepared) = match result {
        Ok(Outcome::Done(prepared)) => (None, Some(prepared)),
        Ok(Outcome::Evaluated { artifact, reports }) => {
            (Some(Ending::Evaluated { artifact, reports }), None)
        }
        Ok(Outcome::Cancelled(why)) => (Some(Ending::Cancelled(why)), None),
        Ok(Outcome::LeaseLost) => {
            tracing::warn!(job = %id, "lease lost; another worker runs this job");
            return Ok(());
        }
        // The database (or a contended write) failed the attempt, not the job: it runs again,
        // here or at another worker, up to `MAX_ATTEMPTS`.
        Err(e) if e.code == ErrorCode::Busy.as_str() && claimed.attempts < MAX_ATTEMPTS => {
            tracing::warn!(job = %id, attempt = claimed.attempts, error = %e.message, "the attempt met an unavailable database; the job runs again");
            if let Err(e) = release(state, id, worker, &e.message).await {
                // Still unavailable: the lease lapses on its own.
                tracing::warn!(job = %id, error = %e.message, "handing the job back failed");
            }
            return Ok(());
        }
        Err(e) => (
            Some(Ending::Failed {
                code: e.code,
                message: e.message,
            }),
            None,
        ),
    };
    // No data carried for the job may outlive it: it goes before the job is seen to end,
    // while this worker still holds it (the renewal just succeeded).
    if renew(state, id, worker).await? {
        super::data::forget(state.store.as_ref(), id).await?;
    }
    let finished = match finish(state, worker, &claimed, ending, prepared).await {
        Ok(f) => f,
        // The outputs were refused at commit (the quota, a name of another kind, …): the job
        // fails with that refusal instead of staying claimed and running again.
        Err(e) if !matches!(e.code, ErrorCode::Busy | ErrorCode::Internal) => {
            let ending = Ending::Failed {
                code: e.code.as_str().to_string(),
                message: e.message,
            };
            finish(state, worker, &claimed, Some(ending), None).await?
        }
        Err(e) => return Err(e),
    };
    if finished {
        let _ = tokio::fs::remove_dir_all(stage::job_dir(state, id)).await;
    }
    Ok(())
}

/// Whether any dataset travelled with the job (its record marks carried data).
fn carries_data(j: &job::Model) -> bool {
    serde_json::from_str::<clreg_types::SubmitJob>(&j.request).is_ok_and(|r| {
        r.data
            .iter()
            .chain(&r.past)
            .chain(r.tasks.iter().map(|t| &t.data))
            .any(|d| d.content.is_some())
    })
}

/// Attempts a job gets when the database fails them (a crash, a restart, a long contention);
/// past that it fails with the database's error.
const MAX_ATTEMPTS: i32 = 5;

/// Hands a running job back: its lease ends now, so the next claim (any worker's) runs it
/// again as a new attempt.
async fn release(
    state: &AppState,
    id: uuid::Uuid,
    worker: &str,
    why: &str,
) -> Result<(), ApiError> {
    job::Entity::update_many()
        .col_expr(job::Column::LeaseExpiresAt, Expr::value(Utc::now()))
        .col_expr(
            job::Column::Message,
            Expr::value(format!("{why}; the job runs again")),
        )
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::LeaseOwner.eq(worker))
        .filter(job::Column::State.eq(job::StateValue::Running))
        .exec(&state.db)
        .await?;
    Ok(())
}

/// Extends this worker's lease on a job; `false` if it no longer holds the job.
async fn renew(state: &AppState, id: uuid::Uuid, worker: &str) -> Result<bool, ApiError> {
    let updated = job::Entity::update_many()
        .col_expr(job::Column::LeaseExpiresAt, Expr::value(lease_until(state)))
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::LeaseOwner.eq(worker))
        .filter(job::Column::State.eq(job::StateValue::Running))
        .exec(&state.db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// The roles a user holds in a collaboration now.
pub(super) async fn submitter_roles(
    state: &AppState,
    collab_id: i64,
    user_id: i64,
) -> Result<Vec<clreg_types::Role>, ApiError> {
    use crate::db::entities::member;
    Ok(member::Entity::find()
        .filter(member::Column::CollabId.eq(collab_id))
        .filter(member::Column::UserId.eq(user_id))
        .all(&state.db)
        .await?
        .into_iter()
        .filter_map(|m| m.role.parse().ok())
        .collect())
}

enum Outcome {
    Done(Box<artifacts::Prepared>),
    Evaluated {
        artifact: String,
        reports: Vec<clreg_engine::eval::TaskReport>,
    },
    Cancelled(String),
    LeaseLost,
}

/// Why a job failed, as it records it: the engine's own code (`invalid_tokenizer`,
/// `non_finite_loss`, …) or the registry's (`policy_forbids`, `not_found`, …).
pub(super) struct Failure {
    pub code: String,
    pub message: String,
}

impl From<sea_orm::DbErr> for Failure {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.message,
        }
    }
}

pub(super) fn engine_failure(code: Code, message: String) -> Failure {
    Failure {
        code: code.as_str().to_string(),
        message,
    }
}

async fn run_job(
    state: &AppState,
    worker: &str,
    device: Device,
    claimed: &job::Model,
    scratch: &std::path::Path,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Outcome, Failure> {
    let request: clreg_types::SubmitJob =
        serde_json::from_str(&claimed.request).map_err(ApiError::internal)?;
    let inputs: BTreeMap<String, String> =
        serde_json::from_str(&claimed.inputs).map_err(ApiError::internal)?;
    let submitter = user::Entity::find_by_id(claimed.submitted_by)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal("job without submitter"))?;
    let collab = collab_of(&state.db, claimed.collab_id).await?;
    // The submitter must still hold a role that may submit this kind here (a removed member's
    // queued job does not run) and be able to download every input.
    let action = super::required_action(&request);
    let held = submitter_roles(state, collab.id, submitter.id).await?;
    if !held.iter().any(|r| action.roles().contains(r)) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} no longer holds a role in `{}` that may run this job; submit it again if that changes",
                submitter.name, collab.name
            ),
        )
        .into());
    }
    let downloadable =
        artifacts::member_collabs(state, submitter.id, crate::authz::Action::Download).await?;
    let mut staged = Staged::default();
    for (reference, artifact_id) in &inputs {
        let row = artifact::Entity::find_by_id(artifact_id)
            .one(&state.db)
            .await?
            .filter(|a| downloadable.contains(&a.collab_id))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "input `{reference}` is no longer readable by {}; submit the job again",
                        submitter.name
                    ),
                )
            })?;
        let dir = staged.stage(state, artifact_id).await?;
        staged.dirs.insert(reference.clone(), dir);
        staged.rows.insert(reference.clone(), row);
    }
    std::fs::create_dir_all(scratch).map_err(ApiError::internal)?;
    let output = scratch.join("output");
    let cx = super::kinds::Context {
        state,
        job: claimed.id,
        collab: &collab,
        submitter: &submitter,
        downloadable: &downloadable,
        scratch,
        output: &output,
    };
    let spec = super::kinds::spec(&cx, &request, &mut staged).await?;
    let executor = &state.config.executor;
    let external = request.kind == clreg_types::JobKind::Train
        && executor.kind != super::executor::ExecutorKind::Engine;
    // What an external run's record is checked against: the settings and every dataset's
    // digest (the inputs' digests are the registry's, in `staged.digests`).
    let checks = match (&spec, external) {
        (clreg_engine::job::JobSpec::Train(t), true) => {
            let files: Vec<PathBuf> = t.data.iter().chain(&t.past).cloned().collect();
            let data = tokio::task::spawn_blocking(move || {
                files
                    .into_iter()
                    .map(|f| Ok((f.clone(), clreg_engine::merge::record::sha256_file(&f)?)))
                    .collect::<Result<Vec<_>, clreg_engine::FormatError>>()
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| engine_failure(e.code(), e.to_string()))?;
            Some((t.config.clone(), data))
        }
        _ => None,
    };
    let order = Order {
        spec,
        device,
        digests: staged.digests.clone().into_iter().collect(),
    };
    let (mut child, runs_in) = if external {
        let invocation = super::executor::Invocation {
            job: claimed.id,
            attempt: claimed.attempts,
            dir: scratch.join("external"),
        };
        let run = super::executor::Run::start(
            std::sync::Arc::new(executor.clone()),
            invocation,
            &state.config.data_dir,
            &order,
        )
        .await
        .map_err(|m| ApiError::new(ErrorCode::ExecutorFailed, m))?;
        (
            Running::External(run),
            format!("the {} executor", executor.kind),
        )
    } else {
        let program = match &state.config.job_runner {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(ApiError::internal)?,
        };
        let child = Child::start(&program, &order).await.map_err(|e| {
            ApiError::internal(format!("cannot start {} run-job: {e}", program.display()))
        })?;
        (Running::Local(child), program.display().to_string())
    };

    let mut heartbeat = tokio::time::interval(Duration::from_secs(
        (state.config.job_lease_secs / 3).max(1),
    ));
    heartbeat.tick().await;
    let mut progress = (0.0f64, String::new());
    let mut log = vec![format!(
        "attempt {} on {worker} ({device}): {} input artifact(s) staged, running in {runs_in}",
        claimed.attempts,
        inputs.len(),
    )];
    let mut cancelled: Option<String> = None;
    let finished = loop {
        tokio::select! {
            line = child.next() => match line.map_err(ApiError::internal)? {
                Some(Line::Event(e)) => {
                    if let Some(f) = e.fraction() {
                        progress.0 = f;
                    }
                    progress.1 = describe(&e);
                    if !matches!(e, JobEvent::Write { .. } | JobEvent::Evaluating { .. }) {
                        log.push(progress.1.clone());
                    }
                }
                Some(Line::Done(output)) => {
                    log.push(progress.1.clone());
                    break Ok(output);
                }
                Some(Line::Failed(e)) => break Err(e),
                None => {
                    if let Some(why) = cancelled {
                        child.wait().await;
                        return Ok(Outcome::Cancelled(why));
                    }
                    return Err(child.ended_without_result().await.into());
                }
            },
            _ = heartbeat.tick() => {
                let lines = std::mem::take(&mut log);
                let beaten = match beat(state, claimed.id, worker, progress.0, &progress.1, &lines).await {
                    Ok(b) => b,
                    Err(e) => {
                        // A busy database is no reason to fail the job: the renewal task keeps
                        // the lease, the next beat writes the lines.
                        tracing::warn!(job = %claimed.id, error = %e.message, "a heartbeat failed");
                        log.extend(lines);
                        continue;
                    }
                };
                match beaten {
                    Beat::Held { cancel_requested } => {
                        if cancel_requested && cancelled.is_none() {
                            cancelled = Some("cancelled on request".to_string());
                            child.cancel().await;
                        }
                    }
                    Beat::Lost => {
                        child.kill().await;
                        return Ok(Outcome::LeaseLost);
                    }
                }
            }
            _ = shutdown.changed() => {
                if cancelled.is_none() {
                    cancelled = Some("cancelled: the worker shut down".to_string());
                    child.cancel().await;
                }
            }
        }
    };
    child.wait().await;
    if !log.is_empty()
        && let Err(e) = beat(state, claimed.id, worker, progress.0, &progress.1, &log).await
    {
        tracing::warn!(job = %claimed.id, error = %e.message, "writing the job's last log lines failed");
    }
    let output_report = match finished {
        Ok(o) => *o,
        Err(e) if e.code == Code::Cancelled => {
            return Ok(Outcome::Cancelled(
                cancelled.unwrap_or_else(|| e.message.clone()),
            ));
        }
        Err(e) => return Err(engine_failure(e.code, e.message)),
    };
    if let JobOutput::Eval { reports } = output_report {
        let artifact = request
            .artifact
            .as_ref()
            .and_then(|r| staged.rows.get(r))
            .map(|a| a.id.clone())
            .ok_or_else(|| ApiError::internal("eval job without its artifact"))?;
        return Ok(Outcome::Evaluated { artifact, reports });
    }
    // An external run's record is checked before anything of it is believed.
    if let Some((config, data)) = &checks {
        let record = output.join(clreg_engine::train::RECORD);
        std::fs::read(&record)
            .map_err(|e| format!("cannot read {}: {e}", record.display()))
            .and_then(|b| {
                serde_json::from_slice::<clreg_engine::train::TrainRecord>(&b)
                    .map_err(|e| format!("{} is not a training record: {e}", record.display()))
            })
            .and_then(|r| super::executor::verify_record(&r, config, &staged.digests, data))
            .map_err(|m| {
                ApiError::new(
                    ErrorCode::ExecutorFailed,
                    format!("the external run's output is refused: {m}"),
                )
            })?;
    }
    // Outputs → blobs the submitter holds → a prepared commit with its lineage.
    let provenance = clreg_engine::provenance::read(&output)
        .map_err(|e| engine_failure(e.code(), e.to_string()))?
        .ok_or_else(|| ApiError::internal("the run wrote no record of its inputs"))?;
    let plan = super::kinds::commit_plan(&staged, &output_report, &provenance)?;
    let files = stage::upload_dir(state, &output, submitter.id).await?;
    let author = Author {
        id: submitter.id,
        name: submitter.name.clone(),
    };
    let request_commit = CommitArtifact {
        name: claimed.name.clone().unwrap_or_default(),
        kind: plan.kind,
        base: plan.base,
        files,
        parents: plan.parents,
        description: request.description.clone(),
    };
    let prepared =
        artifacts::prepare(state, &author, &collab, plan.inspect, request_commit).await?;
    Ok(Outcome::Done(Box::new(prepared)))
}

/// A job's work in progress: the engine in a child process, or a job an external executor
/// runs ([`super::executor`]). Both speak in [`Line`]s.
enum Running {
    Local(Child),
    External(super::executor::Run),
}

impl Running {
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        match self {
            Running::Local(c) => c.next().await,
            Running::External(r) => r.next().await,
        }
    }

    async fn cancel(&mut self) {
        match self {
            Running::Local(c) => c.cancel().await,
            Running::External(r) => r.cancel().await,
        }
    }

    async fn kill(&mut self) {
        match self {
            Running::Local(c) => c.kill().await,
            Running::External(r) => r.kill().await,
        }
    }

    async fn wait(&mut self) {
        match self {
            Running::Local(c) => {
                let _ = c.wait().await;
            }
            Running::External(r) => r.wait().await,
        }
    }

    /// Why a job that stopped writing lines gave no result.
    async fn ended_without_result(&mut self) -> ApiError {
        match self {
            Running::Local(c) => match c.wait().await {
                Ok(status) => ApiError::internal(format!(
                    "the job's process ended without a result ({status}); it may have run out of memory"
                )),
                Err(e) => ApiError::internal(e),
            },
            Running::External(r) => {
                let why = r.ended_why().await;
                r.wait().await;
                ApiError::new(ErrorCode::ExecutorFailed, why)
            }
        }
    }
}

fn describe(e: &JobEvent) -> String {
    match e {
        JobEvent::Write {
            tensors_done,
            tensors_total,
            ..
        } => format!("wrote {tensors_done}/{tensors_total} tensors"),
        JobEvent::RouterStep(p) => {
            format!("router step {}/{}: loss {:.4}", p.step, p.steps, p.loss)
        }
        JobEvent::Plan { steps, .. } => format!("training for {steps} steps"),
        JobEvent::Step {
            step, steps, loss, ..
        } => format!("step {step}/{steps}: loss {loss:.4}"),
        JobEvent::Checkpoint { step, .. } => format!("checkpoint at step {step}"),
        JobEvent::Evaluating { task, done, total } => format!("{task}: {done}/{total}"),
        JobEvent::Scored {
            task,
            metric,
            score,
            ..
        } => format!("{task}: {metric:?} = {score:.4}"),
        JobEvent::Note { message } => message.clone(),
    }
}

enum Beat {
    Held { cancel_requested: bool },
    Lost,
}

/// Renews the lease and writes progress and new log lines, while this worker holds the job.
async fn beat(
    state: &AppState,
    id: uuid::Uuid,
    worker: &str,
    progress: f64,
    message: &str,
    log: &[String],
) -> Result<Beat, ApiError> {
    let found = job::Entity::find_by_id(id).one(&state.db).await?;
    let Some(found) = found.filter(|j| {
        j.state == job::StateValue::Running && j.lease_owner.as_deref() == Some(worker)
    }) else {
        return Ok(Beat::Lost);
    };
    let mut text = found.log.clone();
    for line in log {
        text.push_str(line);
        text.push('\n');
    }
    if text.len() > MAX_LOG {
        let cut = text.len() - MAX_LOG;
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(cut);
        text = text[cut..].to_string();
    }
    let updated = job::Entity::update_many()
        .col_expr(job::Column::LeaseExpiresAt, Expr::value(lease_until(state)))
        .col_expr(job::Column::Progress, Expr::value(progress))
        .col_expr(job::Column::Message, Expr::value(message.to_string()))
        .col_expr(job::Column::Log, Expr::value(text))
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::LeaseOwner.eq(worker))
        .filter(job::Column::State.eq(job::StateValue::Running))
        .exec(&state.db)
        .await?;
    if updated.rows_affected == 0 {
        return Ok(Beat::Lost);
    }
    Ok(Beat::Held {
        cancel_requested: found.cancel_requested,
    })
}

/// Records the end of a job, with its outputs, only while this worker holds the job; `false`
/// when another worker holds it now.
async fn finish(
    state: &AppState,
    worker: &str,
    claimed: &job::Model,
    ending: Option<Ending>,
    prepared: Option<Box<artifacts::Prepared>>,
) -> Result<bool, ApiError> {
    let id = claimed.id;
    let carried = carries_data(claimed);
    let ending = std::sync::Arc::new(ending);
    let prepared = std::sync::Arc::new(prepared);
    crate::db::write(&state.db, |txn| {
        let (ending, prepared, worker) = (ending.clone(), prepared.clone(), worker.to_string());
        let (collab_id, claimed_by) = (claimed.collab_id, claimed.submitted_by);
        Box::pin(async move {
            let collab = collab_of(txn, collab_id).await?;
            crate::db::lock_collab(txn, collab.id).await?;
            let Some(current) = job::Entity::find_by_id(id)
                .filter(job::Column::State.eq(job::StateValue::Running))
                .filter(job::Column::LeaseOwner.eq(worker.as_str()))
                .one(txn)
                .await?
            else {
                return Ok(false); // another worker holds it now
            };
            let mut active: job::ActiveModel = current.into();
            let now = Utc::now();
            active.finished_at = sea_orm::Set(Some(now));
            active.lease_owner = sea_orm::Set(None);
            active.lease_expires_at = sea_orm::Set(None);
            let (event, payload) = match (&*ending, &*prepared) {
                (None, Some(prepared)) => {
                    let (created, model) = artifacts::insert(txn, prepared).await?;
                    let result = JobResult {
                        artifacts: vec![model.id.clone()],
                        evaluations: vec![],
                    };
                    active.state = sea_orm::Set(job::StateValue::Succeeded);
                    active.progress = sea_orm::Set(1.0);
                    active.message =
                        sea_orm::Set(format!("committed {}:{}", model.name, model.version));
                    active.result = sea_orm::Set(Some(
                        serde_json::to_string(&result).map_err(ApiError::internal)?,
                    ));
                    (
                        "job.succeeded",
                        json!({"job": id, "artifacts": result.artifacts, "created": created}),
                    )
                }
                (Some(Ending::Evaluated { artifact, reports }), _) => {
                    let mut scores = Vec::with_capacity(reports.len());
                    for report in reports {
                        scores.push(crate::evaluations::Score {
                            task: report.task.clone(),
                            metric: serde_json::to_value(report.metric)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            score: report.score,
                            n: report.n as u64,
                            report: serde_json::to_value(report).map_err(ApiError::internal)?,
                        });
                    }
                    let by = crate::evaluations::Recorder {
                        user_id: claimed_by,
                        actor: &worker,
                        job: Some(id),
                    };
                    let ids =
                        crate::evaluations::record(txn, &collab, artifact, &by, &scores).await?;
                    let result = JobResult {
                        artifacts: vec![],
                        evaluations: ids,
                    };
                    active.state = sea_orm::Set(job::StateValue::Succeeded);
                    active.progress = sea_orm::Set(1.0);
                    active.message =
                        sea_orm::Set(format!("recorded {} evaluation(s)", reports.len()));
                    active.result = sea_orm::Set(Some(
                        serde_json::to_string(&result).map_err(ApiError::internal)?,
                    ));
                    (
                        "job.succeeded",
                        json!({"job": id, "evaluations": result.evaluations}),
                    )
                }
                (Some(Ending::Cancelled(why)), _) => {
                    active.state = sea_orm::Set(job::StateValue::Cancelled);
                    active.message = sea_orm::Set(why.clone());
                    active.error_code = sea_orm::Set(Some("cancelled".into()));
                    active.error_message = sea_orm::Set(Some(why.clone()));
                    ("job.cancelled", json!({"job": id, "reason": why}))
                }
                (Some(Ending::Failed { code, message }), _) => {
                    // The engine's message may quote the data (an answer it could not
                    // encode); data that travelled with the job must not outlive it.
                    let message = if carried {
                        format!(
                            "the job failed with `{code}`; the details quote data that travelled with the job and are withheld: run `clreg local` on your copy to see them"
                        )
                    } else {
                        message.clone()
                    };
                    active.state = sea_orm::Set(job::StateValue::Failed);
                    active.message = sea_orm::Set(format!("failed: {message}"));
                    active.error_code = sea_orm::Set(Some(code.clone()));
                    active.error_message = sea_orm::Set(Some(message));
                    ("job.failed", json!({"job": id, "code": code}))
                }
                _ => return Err(ApiError::internal("a job ending without an outcome")),
            };
            sea_orm::ActiveModelTrait::update(active, txn).await?;
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                event,
                &worker,
                payload,
            )
            .await?;
            Ok(true)
        })
    })
    .await
}
