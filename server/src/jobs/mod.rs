//! Jobs: engine work the registry runs for its members, behind the authorization table and the
//! policy module. A submission resolves every artifact reference (the submitter must be able
//! to download each input) and is stored with its ledger event; workers ([`worker`]) claim
//! jobs under a lease, stage inputs ([`stage`]), run the engine in a child process
//! ([`runner`]) and commit the outputs as artifacts with their lineage, exactly once.
//!
//! Kinds: `merge`, `mix` (a Mixtral checkpoint, or a LoRA-MoE bundle with `lora`), `train` and
//! `eval`; train and eval data travel with the request or are stored, as the policy allows
//! ([`data`]). What each kind builds and commits is in `kinds`.

pub mod data;
pub mod executor;
mod kinds;
pub mod runner;
pub mod stage;
pub mod worker;

use std::collections::BTreeMap;

use chrono::Utc;
use clreg_types::{ErrorBody, ErrorCode, Job, JobKind, JobResult, JobState, SubmitJob};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

use crate::artifacts::{self, member_collabs};
use crate::auth::Caller;
use crate::authz::{Access, Action};
use crate::db::entities::{collaboration, job, user};
use crate::error::ApiError;
use crate::state::AppState;

/// The references a merge recipe names: `base_model` and every `models[].model`.
pub fn recipe_refs(recipe: &clreg_engine::merge::Recipe) -> Vec<String> {
    let mut refs: Vec<String> = recipe
        .base_model
        .iter()
        .chain(recipe.models.iter().map(|m| &m.model))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    refs.dedup();
    refs
}

/// The references a mix recipe names: `base_model` and every `experts[].source_model`.
pub fn mix_refs(recipe: &clreg_engine::moe::MoeRecipe) -> Vec<String> {
    let mut refs: Vec<String> = std::iter::once(&recipe.base_model)
        .chain(recipe.experts.iter().map(|e| &e.source_model))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    refs.dedup();
    refs
}

/// A merge recipe, checked whole (method, parameters, models) at submission: a recipe the
/// engine would refuse is never queued.
fn parse_merge_recipe(text: &str) -> Result<clreg_engine::merge::Recipe, ApiError> {
    let invalid = |e: clreg_engine::merge::MergeError| {
        ApiError::new(ErrorCode::BadRequest, format!("invalid merge recipe: {e}"))
    };
    let recipe = clreg_engine::merge::Recipe::from_yaml(text).map_err(invalid)?;
    recipe.resolve().map_err(invalid)?;
    Ok(recipe)
}

/// Checks a submission, resolves its inputs, and queues it (with its ledger event).
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: SubmitJob,
) -> Result<job::Model, ApiError> {
    access.require(required_action(&req))?;
    if let Some(requires) = &req.requires
        && !matches!(requires.as_str(), "cpu" | "cuda")
    {
        return Err(ApiError::bad_request(format!(
            "`requires` is `{requires}`: use cpu or cuda"
        )));
    }
    let name = match (req.kind, &req.name) {
        (JobKind::Eval, _) => None,
        (_, Some(name)) => {
            clreg_types::check_name(name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
            Some(name.clone())
        }
        (kind, None) => {
            return Err(ApiError::bad_request(format!(
                "a {kind} job produces an artifact: give it a `name`"
            )));
        }
    };
    let id = Uuid::new_v4();
    let mut req = req;
    // Every dataset the job names, decided by the policy as a use of `role`.
    let check_data = async |set: &[clreg_types::JobData], role, evaluating| {
        let policy = access.policy();
        data::check(
            state,
            &access.collab,
            policy,
            &access.roles,
            caller.id,
            set,
            role,
            evaluating,
        )
        .await
    };
    let refs = match req.kind {
        JobKind::Merge => {
            let text = req.recipe.as_deref().ok_or_else(|| {
                ApiError::bad_request("a merge job needs a `recipe` (mergekit YAML)")
            })?;
            if req.config.is_some() {
                return Err(ApiError::bad_request(
                    "a merge job takes no `config`: its settings (method, weights, densities, seed) are in the recipe",
                ));
            }
            recipe_refs(&parse_merge_recipe(text)?)
        }
        JobKind::Train => {
            let config = train_config(&req)?;
            if req.data.is_empty() {
                return Err(ApiError::bad_request(
                    "a train job needs `data`: the current task's dataset (carried content or a stored dataset's digest)",
                ));
            }
            check_data(&req.data, data::DataRole::Current, false).await?;
            check_data(&req.past, data::DataRole::Past, false).await?;
            if !matches!(config.schedule, clreg_engine::train::DataSchedule::Plain)
                && req.past.is_empty()
            {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "a replay or joint schedule needs `past`: earlier tasks' datasets",
                ));
            }
            let base = req.base.clone().ok_or_else(|| {
                ApiError::bad_request("a train job needs `base`: the base model's reference")
            })?;
            std::iter::once(base)
                .chain(req.adapters.iter().cloned())
                .collect()
        }
        JobKind::Eval => {
            let artifact = req.artifact.clone().ok_or_else(|| {
                ApiError::bad_request("an eval job needs `artifact`: the reference to score")
            })?;
            if req.tasks.is_empty() {
                return Err(ApiError::bad_request(
                    "an eval job needs `tasks`: each a task name, a metric and its data",
                ));
            }
            for t in &req.tasks {
                metric_of(&t.metric)?;
                if t.task.trim().is_empty() || t.task.len() > 128 {
                    return Err(ApiError::bad_request(
                        "a task name must be 1-128 characters",
                    ));
                }
            }
            eval_settings(&req)?;
            let data: Vec<clreg_types::JobData> =
                req.tasks.iter().map(|t| t.data.clone()).collect();
            check_data(&data, data::DataRole::Current, true).await?;
            vec![artifact]
        }
        JobKind::Mix => {
            let text = req.recipe.as_deref().ok_or_else(|| {
                ApiError::bad_request("a mix job needs a `recipe` (mergekit-moe YAML)")
            })?;
            let recipe = clreg_engine::moe::MoeRecipe::from_yaml(text)
                .map_err(|e| ApiError::bad_request(format!("invalid mix recipe: {e}")))?;
            // A path on the server is never read for a client.
            if recipe.experts.iter().any(|e| e.prompts_file.is_some()) {
                return Err(ApiError::bad_request(
                    "`prompts_file` names a file on your machine: put the prompts in `positive_prompts` (and `negative_prompts`) instead",
                ));
            }
            // Checked whole (gate mode, prompts, experts) now, not when a worker runs it.
            recipe
                .resolve()
                .map_err(|e| ApiError::bad_request(format!("invalid mix recipe: {e}")))?;
            if !req.past.is_empty() {
                return Err(ApiError::bad_request(
                    "a mix job takes no `past` data: its one dataset (`data`) is the routers' calibration set",
                ));
            }
            if router_settings(&req)?.is_some() {
                check_data(&req.data, data::DataRole::Current, false).await?;
            }
            mix_refs(&recipe)
        }
    };
    // Every input: an artifact the submitter may download.
    let downloadable = member_collabs(state, caller.id, Action::Download).await?;
    let mut inputs = BTreeMap::new();
    for reference in refs {
        let found = artifacts::find(state, &reference, &downloadable)
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotFound => ApiError::not_found(format!(
                    "input artifact `{reference}` (or you may not download it)"
                )),
                _ => e,
            })?;
        if req.kind == JobKind::Train && req.base.as_deref() == Some(reference.as_str()) {
            check_train_base(&reference, &found.kind, train_config(&req)?.method)?;
        }
        inputs.insert(reference, found.id);
    }
    // Carried data is kept under the job from here on; the record keeps only digests.
    let kept = async {
        req.data = data::keep_carried(state.store.as_ref(), id, &req.data).await?;
        req.past = data::keep_carried(state.store.as_ref(), id, &req.past).await?;
        for t in &mut req.tasks {
            let kept =
                data::keep_carried(state.store.as_ref(), id, std::slice::from_ref(&t.data)).await?;
            t.data = kept.into_iter().next().unwrap_or_else(|| t.data.clone());
        }
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = kept {
        let _ = data::forget(state.store.as_ref(), id).await;
        return Err(e);
    }
    let request = serde_json::to_string(&req).map_err(ApiError::internal)?;
    let inputs = serde_json::to_string(&inputs).map_err(ApiError::internal)?;
    let queued = crate::db::write(&state.db, |txn| {
        let collab = access.collab.clone();
        let (request, inputs, name) = (request.clone(), inputs.clone(), name.clone());
        let (actor, user_id, kind, requires) =
            (caller.name.clone(), caller.id, req.kind, req.requires.clone());
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let row = job::ActiveModel {
                id: Set(id),
                collab_id: Set(collab.id),
                submitted_by: Set(user_id),
                kind: Set(kind.into()),
                state: Set(job::StateValue::Queued),
                name: Set(name.clone()),
                request: Set(request),
                inputs: Set(inputs.clone()),
                requires: Set(requires),
                progress: Set(0.0),
                message: Set("queued".to_string()),
                log: Set(String::new()),
                attempts: Set(0),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                cancel_requested: Set(false),
                result: Set(None),
                error_code: Set(None),
                error_message: Set(None),
                created_at: Set(Utc::now()),
                started_at: Set(None),
                finished_at: Set(None),
            }
            .insert(txn)
            .await?;
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "job.submitted",
                &actor,
                json!({"job": id, "kind": kind, "name": name,
                       "inputs": serde_json::from_str::<serde_json::Value>(&inputs).unwrap_or_default()}),
            )
            .await?;
            Ok(row)
        })
    })
    .await;
    match &queued {
        Ok(_) => state.job_queued.notify_waiters(),
        // Nothing queued: nothing of its data may stay.
        Err(_) => {
            let _ = data::forget(state.store.as_ref(), id).await;
        }
    }
    queued
}

/// What a train job may start from: a base model, or for full fine-tuning also a fine-tuned
/// checkpoint (sequential FFT continues from the previous round's). Adapters train on a base
/// only: an adapter's recorded base is its base model, which scoring and pulls apply it to.
fn check_train_base(
    reference: &str,
    kind: &str,
    method: clreg_engine::train::Method,
) -> Result<(), ApiError> {
    use clreg_types::ArtifactKind::{Base, Checkpoint};
    let fft = method == clreg_engine::train::Method::Fft;
    if kind == Base.as_str() || (fft && kind == Checkpoint.as_str()) {
        return Ok(());
    }
    let what = if fft {
        "full fine-tuning starts from a base or a checkpoint"
    } else {
        "an adapter trains on a base model (earlier rounds go in `adapters`; a checkpoint can be continued with method fft)"
    };
    Err(ApiError::bad_request(format!(
        "`{reference}` is a {kind}: {what}"
    )))
}

/// The engine metric a task names.
pub fn metric_of(name: &str) -> Result<clreg_engine::eval::Metric, ApiError> {
    serde_json::from_value(json!(name)).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown metric `{name}`: use exact, first_char, rouge_l, edit_sim, sari, final_number or mc"
        ))
    })
}

/// What a submission needs to be allowed: training on data (a train job, or a mix that
/// trains its routers) needs [`Action::SubmitTrain`], other jobs [`Action::SubmitJob`].
pub fn required_action(req: &SubmitJob) -> Action {
    let trains = match req.kind {
        JobKind::Train => true,
        JobKind::Mix => !req.data.is_empty(),
        JobKind::Merge | JobKind::Eval => false,
    };
    if trains {
        Action::SubmitTrain
    } else {
        Action::SubmitJob
    }
}

/// The router training of a mix job, checked: `None` without `data`; with it, exactly one
/// dataset (the calibration set) and the settings in `config` (defaults where absent).
pub fn router_settings(
    req: &SubmitJob,
) -> Result<Option<clreg_engine::moe::RouterSettings>, ApiError> {
    match (req.data.len(), &req.config) {
        (0, None) => Ok(None),
        (0, Some(_)) => Err(ApiError::bad_request(
            "a mix job's `config` sets router training: give its calibration set in `data`",
        )),
        (1, config) => {
            let settings: clreg_engine::moe::RouterSettings =
                serde_json::from_value(config.clone().unwrap_or_else(|| json!({})))
                    .map_err(|e| ApiError::bad_request(format!("invalid router `config`: {e}")))?;
            settings
                .check()
                .map_err(|e| ApiError::bad_request(format!("invalid router `config`: {e}")))?;
            Ok(Some(settings))
        }
        (n, _) => Err(ApiError::bad_request(format!(
            "a mix job trains its routers on one calibration set; `data` names {n}"
        ))),
    }
}

/// The training settings of a train job, checked.
/// The settings in an eval job's `config` (defaults where absent), checked.
pub fn eval_settings(req: &SubmitJob) -> Result<clreg_engine::eval::EvalSettings, ApiError> {
    let value = req.config.clone().unwrap_or_else(|| json!({}));
    let settings: clreg_engine::eval::EvalSettings = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid evaluation `config`: {e}")))?;
    settings
        .check()
        .map_err(|e| ApiError::bad_request(format!("invalid evaluation `config`: {e}")))?;
    Ok(settings)
}

pub fn train_config(req: &SubmitJob) -> Result<clreg_engine::train::TrainConfig, ApiError> {
    let value = req.config.clone().unwrap_or_else(|| json!({}));
    let config: clreg_engine::train::TrainConfig = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid training `config`: {e}")))?;
    config.check().map_err(|e| {
        ApiError::new(
            crate::error::wire_code(e.code()),
            format!("invalid training `config`: {e}"),
        )
    })?;
    Ok(config)
}

/// Cancels a job: a queued one at once, a running one when its worker next hears (between
/// steps). Owners cancel any job, others their own.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    id: Uuid,
) -> Result<job::Model, ApiError> {
    let row = crate::db::write(&state.db, |txn| {
        let collab = access.collab.clone();
        let (actor, user_id) = (caller.name.clone(), caller.id);
        let owner = access.roles.contains(&clreg_types::Role::Owner);
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let found = job::Entity::find_by_id(id)
                .filter(job::Column::CollabId.eq(collab.id))
                .one(txn)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("job {id}")))?;
            if !owner && found.submitted_by != user_id {
                return Err(ApiError::forbidden(
                    "only an owner may cancel another member's job",
                ));
            }
            let state: JobState = found.state.into();
            if state.is_final() {
                return Err(ApiError::conflict(format!(
                    "job {id} has already ended ({state}); nothing to cancel"
                )));
            }
            let mut active: job::ActiveModel = found.clone().into();
            if state == JobState::Queued {
                active.state = Set(job::StateValue::Cancelled);
                active.finished_at = Set(Some(Utc::now()));
                active.message = Set(format!("cancelled by {actor} before it started"));
                active.error_code = Set(Some("cancelled".into()));
                active.error_message = Set(Some(format!("cancelled by {actor}")));
                crate::ledger::append(
                    txn,
                    Some((collab.id, &collab.name)),
                    "job.cancelled",
                    &actor,
                    json!({"job": id}),
                )
                .await?;
            } else {
                active.cancel_requested = Set(true);
                active.message = Set(format!("cancel requested by {actor}"));
            }
            Ok(active.update(txn).await?)
        })
    })
    .await?;
    if row.state == job::StateValue::Cancelled {
        // It never ran: what it carried goes now (or, failing that, with the next sweep).
        if let Err(e) = data::forget(state.store.as_ref(), id).await {
            tracing::warn!(job = %id, error = %e.message, "removing a cancelled job's data failed");
        }
    }
    Ok(row)
}

/// The wire form of a job.
pub async fn to_wire(state: &AppState, j: job::Model) -> Result<Job, ApiError> {
    let collab = collaboration::Entity::find_by_id(j.collab_id)
        .one(&state.db)
        .await?
        .map(|c| c.name)
        .unwrap_or_default();
    let submitter = user::Entity::find_by_id(j.submitted_by)
        .one(&state.db)
        .await?
        .map(|u| u.name)
        .unwrap_or_default();
    let result = match &j.result {
        Some(text) => Some(serde_json::from_str::<JobResult>(text).map_err(ApiError::internal)?),
        None => None,
    };
    let error = match (&j.error_code, &j.error_message) {
        (Some(code), message) => Some(ErrorBody {
            code: code.clone(),
            message: message.clone().unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Job {
        id: j.id,
        collab,
        kind: j.kind.into(),
        state: j.state.into(),
        name: j.name,
        submitted_by: submitter,
        progress: j.progress,
        message: j.message,
        attempts: j.attempts,
        requires: j.requires,
        result,
        error,
        created_at: j.created_at,
        started_at: j.started_at,
        finished_at: j.finished_at,
    })
}
