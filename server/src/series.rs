//! Round series: an ordered chain of artifacts (rounds 1..T) of one base with a task list. The
//! report is the score matrix R from the collaboration's evaluations (rows: rounds, columns:
//! tasks, plus the base row) and the engine's BWT, FWT and gains over it. When a round's row
//! becomes complete, the report over rounds 1..r is kept as a snapshot, so the BWT history over
//! rounds survives later rounds and re-evaluations.

use std::collections::BTreeMap;

use chrono::Utc;
use clreg_types::{
    AddRound, ArtifactKind, CreateSeries, ErrorCode, HistoryPoint, ScoreRow, Series, SeriesReport,
    SeriesRound, Transfer,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use crate::artifacts;
use crate::auth::Caller;
use crate::authz::{Access, Action};
use crate::db::entities::{
    artifact, collaboration, evaluation, series, series_round, series_snapshot, user,
};
use crate::error::ApiError;
use crate::state::AppState;

/// The most columns a series may have.
const MAX_TASKS: usize = 256;
/// The most rounds a series may have (every snapshot is a report over its rounds so far).
const MAX_ROUNDS: usize = 64;

/// Creates a series of `access.collab` (with its ledger event).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: CreateSeries,
) -> Result<Series, ApiError> {
    access.require(Action::SubmitJob)?;
    clreg_types::check_name(&req.name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
    if req.tasks.is_empty() || req.tasks.len() > MAX_TASKS {
        return Err(ApiError::bad_request(format!(
            "{} task(s): a series needs 1 to {MAX_TASKS}, in training order",
            req.tasks.len()
        )));
    }
    for (j, t) in req.tasks.iter().enumerate() {
        if t.trim().is_empty() || t.len() > 160 {
            return Err(ApiError::bad_request(format!(
                "task {} is empty or too long: give 1-160 characters (`task` or `task:metric`)",
                j + 1
            )));
        }
        if req.tasks[..j].contains(t) {
            return Err(ApiError::bad_request(format!("task `{t}` is listed twice")));
        }
    }
    if let Some(rot) = &req.round_of_task
        && (rot.len() != req.tasks.len() || rot.contains(&0))
    {
        return Err(ApiError::bad_request(format!(
            "round_of_task has {} entries for {} tasks: give each task the round (from 1) it is trained in",
            rot.len(),
            req.tasks.len()
        )));
    }
    let base = readable(state, caller, &req.base).await?;
    if base.kind != ArtifactKind::Base.as_str() {
        return Err(ApiError::bad_request(format!(
            "`{}` is a {}, not a base model: a series starts from a base",
            req.base, base.kind
        )));
    }
    let tasks = serde_json::to_string(&req.tasks).map_err(ApiError::internal)?;
    let rot = req
        .round_of_task
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    let row = crate::db::write(&state.db, |txn| {
        let (collab, req, base_id) = (access.collab.clone(), req.clone(), base.id.clone());
        let (tasks, rot, actor, user_id) =
            (tasks.clone(), rot.clone(), caller.name.clone(), caller.id);
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            if find_in(txn, collab.id, &req.name).await.is_ok() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "series `{}` already exists in `{}`: choose another name",
                        req.name, collab.name
                    ),
                ));
            }
            let row = series::ActiveModel {
                collab_id: Set(collab.id),
                name: Set(req.name.clone()),
                base_id: Set(base_id.clone()),
                tasks: Set(tasks),
                round_of_task: Set(rot),
                description: Set(req.description.clone()),
                created_by: Set(user_id),
                created_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "series.created",
                &actor,
                json!({"series": req.name, "base": base_id, "tasks": req.tasks,
                       "round_of_task": req.round_of_task}),
            )
            .await?;
            Ok(row)
        })
    })
    .await?;
    to_wire(&state.db, &access.collab, &row).await
}

/// Appends the next round; its evaluations, if any exist already, may complete a snapshot.
pub async fn add_round(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    name: &str,
    req: AddRound,
) -> Result<Series, ApiError> {
    access.require(Action::SubmitJob)?;
    let found = find_in(&state.db, access.collab.id, name).await?;
    let a = readable(state, caller, &req.artifact).await?;
    if a.kind == ArtifactKind::Base.as_str() || a.base_id.as_deref() != Some(&found.base_id) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not built on the series' base model: a round is an adapter, checkpoint, merge or mixture of it",
            req.artifact
        )));
    }
    let row = crate::db::write(&state.db, |txn| {
        let (collab, found, artifact_id) = (access.collab.clone(), found.clone(), a.id.clone());
        let (actor, user_id) = (caller.name.clone(), caller.id);
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let rounds = rounds_of(txn, found.id).await?;
            if rounds.len() >= MAX_ROUNDS {
                return Err(ApiError::bad_request(format!(
                    "series `{}` has {MAX_ROUNDS} rounds, the most a series may have; start another",
                    found.name
                )));
            }
            let round = rounds.len() + 1;
            series_round::ActiveModel {
                series_id: Set(found.id),
                round: Set(i32::try_from(round).map_err(ApiError::internal)?),
                artifact_id: Set(artifact_id.clone()),
                added_by: Set(user_id),
                added_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "series.round_added",
                &actor,
                json!({"series": found.name, "round": round, "artifact": artifact_id}),
            )
            .await?;
            refresh(txn, &collab, &found, round, &actor).await?;
            Ok(found)
        })
    })
    .await?;
    to_wire(&state.db, &access.collab, &row).await
}

/// The series called `name` in a collaboration.
pub async fn find_in<C: ConnectionTrait>(
    db: &C,
    collab_id: i64,
    name: &str,
) -> Result<series::Model, ApiError> {
    series::Entity::find()
        .filter(series::Column::CollabId.eq(collab_id))
        .filter(series::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("series `{name}`")))
}

async fn readable(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> Result<artifact::Model, ApiError> {
    let readable = artifacts::member_collabs(state, caller.id, Action::Read).await?;
    artifacts::find(state, reference, &readable).await
}

async fn rounds_of<C: ConnectionTrait>(
    db: &C,
    series_id: i64,
) -> Result<Vec<series_round::Model>, ApiError> {
    Ok(series_round::Entity::find()
        .filter(series_round::Column::SeriesId.eq(series_id))
        .order_by_asc(series_round::Column::Round)
        .all(db)
        .await?)
}

fn columns(s: &series::Model) -> Result<(Vec<String>, Option<Vec<usize>>), ApiError> {
    let tasks: Vec<String> = serde_json::from_str(&s.tasks).map_err(ApiError::internal)?;
    let rot = s
        .round_of_task
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(ApiError::internal)?;
    Ok((tasks, rot))
}

/// The wire form of a series.
pub async fn to_wire<C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    s: &series::Model,
) -> Result<Series, ApiError> {
    let (tasks, round_of_task) = columns(s)?;
    let mut names = BTreeMap::new();
    let mut name_of = async |id: i64| -> Result<String, ApiError> {
        if let Some(n) = names.get(&id) {
            return Ok(String::clone(n));
        }
        let n = user::Entity::find_by_id(id)
            .one(db)
            .await?
            .map(|u| u.name)
            .unwrap_or_default();
        names.insert(id, n.clone());
        Ok(n)
    };
    let mut rounds = Vec::new();
    for r in rounds_of(db, s.id).await? {
        rounds.push(SeriesRound {
            round: usize::try_from(r.round).unwrap_or(0),
            artifact: r.artifact_id,
            added_by: name_of(r.added_by).await?,
            added_at: r.added_at,
        });
    }
    Ok(Series {
        collab: collab.name.clone(),
        name: s.name.clone(),
        base: s.base_id.clone(),
        tasks,
        round_of_task,
        description: s.description.clone(),
        rounds,
        created_by: name_of(s.created_by).await?,
        created_at: s.created_at,
    })
}

/// One cell: the score on a column (`task` or `task:metric`) among an artifact's evaluations
/// `rows`, or why there is none.
fn cell(rows: &[evaluation::Model], column: &str) -> Result<f64, String> {
    // `task:metric` when the part after the last colon names a metric it was scored with.
    let matching: Vec<&evaluation::Model> = match column.rsplit_once(':') {
        Some((task, metric)) if rows.iter().any(|e| e.task == task && e.metric == metric) => rows
            .iter()
            .filter(|e| e.task == task && e.metric == metric)
            .collect(),
        _ => rows.iter().filter(|e| e.task == column).collect(),
    };
    match matching.as_slice() {
        [] => Err(String::new()),
        [one] => Ok(one.score),
        many => Err(format!(
            " (scored with {}: name one as {column}:METRIC)",
            many.iter()
                .map(|e| e.metric.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The report over rounds 1..=`upto` (all rounds when `None`), without history.
pub async fn report<C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    s: &series::Model,
    upto: Option<usize>,
) -> Result<SeriesReport, ApiError> {
    let (tasks, rot) = columns(s)?;
    let mut rounds = rounds_of(db, s.id).await?;
    if let Some(upto) = upto {
        rounds.truncate(upto);
    }
    let t = rounds.len();
    let refs = artifact_refs(
        db,
        collab,
        rounds
            .iter()
            .map(|r| r.artifact_id.as_str())
            .chain([s.base_id.as_str()]),
    )
    .await?;
    // The columns the figures cover: tasks trained by round T.
    let used: Vec<usize> = (0..tasks.len())
        .filter(|&j| match &rot {
            Some(rot) => rot[j] <= t,
            None => j < t,
        })
        .collect();
    let mut missing = Vec::new();
    let mut row_of = async |round: usize, artifact: &str| -> Result<ScoreRow, ApiError> {
        // One query per row, not per cell.
        let evaluations = evaluation::Entity::find()
            .filter(evaluation::Column::CollabId.eq(collab.id))
            .filter(evaluation::Column::ArtifactId.eq(artifact))
            .all(db)
            .await?;
        let mut scores = Vec::with_capacity(tasks.len());
        for (j, column) in tasks.iter().enumerate() {
            match cell(&evaluations, column) {
                Ok(v) => scores.push(Some(v)),
                Err(why) => {
                    if used.contains(&j) {
                        let who = if round == 0 {
                            "base".to_string()
                        } else {
                            format!("round {round}")
                        };
                        let name = refs
                            .get(artifact)
                            .cloned()
                            .unwrap_or_else(|| artifact.to_string());
                        missing.push(format!("{who} ({name}): {column}{why}"));
                    }
                    scores.push(None);
                }
            }
        }
        Ok(ScoreRow {
            round,
            artifact: artifact.to_string(),
            scores,
        })
    };
    let base = row_of(0, &s.base_id).await?;
    let mut matrix = Vec::with_capacity(t);
    for r in &rounds {
        matrix.push(row_of(usize::try_from(r.round).unwrap_or(0), &r.artifact_id).await?);
    }
    let pick =
        |row: &ScoreRow| -> Option<Vec<f64>> { used.iter().map(|&j| row.scores[j]).collect() };
    let rows: Option<Vec<Vec<f64>>> = matrix.iter().map(pick).collect();
    let (transfer, pending) = match rows {
        _ if t < 2 => (
            None,
            Some(format!(
                "{t} round(s): transfer needs at least two; add round {}",
                t + 1
            )),
        ),
        None => (
            None,
            Some(format!(
                "{} score(s) missing among rounds 1-{t}: run eval jobs or import their results",
                missing.iter().filter(|m| m.starts_with("round")).count()
            )),
        ),
        Some(rows) => {
            let m = clreg_engine::bwt::ScoreMatrix {
                tasks: used.iter().map(|&j| tasks[j].clone()).collect(),
                rounds: rows,
                base: pick(&base),
                round_of_task: rot
                    .as_ref()
                    .map(|rot| used.iter().map(|&j| rot[j]).collect()),
            };
            match clreg_engine::bwt::transfer(&m) {
                Ok(r) => (
                    Some(Transfer {
                        bwt: r.bwt,
                        fwt: r.fwt,
                        relative_bwt: r.relative_bwt,
                        gain: r.gain,
                        average_gain: r.average_gain,
                        final_average: r.final_average,
                        normalisation: r.normalisation,
                    }),
                    None,
                ),
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    Ok(SeriesReport {
        collab: collab.name.clone(),
        series: s.name.clone(),
        rounds: t,
        transfer_tasks: used.iter().map(|&j| tasks[j].clone()).collect(),
        tasks,
        base,
        matrix,
        missing,
        transfer,
        pending,
        history: Vec::new(),
    })
}

/// `collab/name:version` of each artifact.
/// `collab/name:version` of each artifact of the series' own collaboration. Artifacts of other
/// collaborations keep their ids: every member of this one reads the report, and not all of
/// them may know the other collaboration's names.
async fn artifact_refs<'a, C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    ids: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let ids: Vec<&str> = ids.collect();
    let rows = artifact::Entity::find()
        .filter(artifact::Column::Id.is_in(ids))
        .filter(artifact::Column::CollabId.eq(collab.id))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|a| {
            let reference = format!("{}/{}:{}", collab.name, a.name, a.version);
            (a.id, reference)
        })
        .collect())
}

/// The report with its history of snapshots.
pub async fn report_with_history<C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    s: &series::Model,
) -> Result<SeriesReport, ApiError> {
    let mut out = report(db, collab, s, None).await?;
    for snap in series_snapshot::Entity::find()
        .filter(series_snapshot::Column::SeriesId.eq(s.id))
        .order_by_asc(series_snapshot::Column::Round)
        .all(db)
        .await?
    {
        let r: SeriesReport = serde_json::from_str(&snap.report).map_err(ApiError::internal)?;
        let t = r.transfer.as_ref();
        out.history.push(HistoryPoint {
            round: usize::try_from(snap.round).unwrap_or(0),
            bwt: t.map(|t| t.bwt),
            fwt: t.and_then(|t| t.fwt),
            final_average: t.map(|t| t.final_average),
            average_gain: t.and_then(|t| t.average_gain),
            taken_at: snap.created_at,
        });
    }
    Ok(out)
}

/// Snapshots every report over rounds 1..r, for r ≥ `from`, whose rounds are all scored on
/// the columns it covers (a re-evaluation replaces the snapshot), each with its ledger event.
async fn refresh<C: ConnectionTrait>(
    txn: &C,
    collab: &collaboration::Model,
    s: &series::Model,
    from: usize,
    actor: &str,
) -> Result<(), ApiError> {
    let total = rounds_of(txn, s.id).await?.len();
    for r in from.max(1)..=total {
        let report = report(txn, collab, s, Some(r)).await?;
        if report.missing.iter().any(|m| m.starts_with("round")) {
            continue;
        }
        let round = i32::try_from(r).map_err(ApiError::internal)?;
        series_snapshot::Entity::delete_many()
            .filter(series_snapshot::Column::SeriesId.eq(s.id))
            .filter(series_snapshot::Column::Round.eq(round))
            .exec(txn)
            .await?;
        series_snapshot::ActiveModel {
            series_id: Set(s.id),
            round: Set(round),
            report: Set(serde_json::to_string(&report).map_err(ApiError::internal)?),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        let t = report.transfer.as_ref();
        crate::ledger::append(
            txn,
            Some((collab.id, &collab.name)),
            "series.snapshot",
            actor,
            json!({"series": s.name, "round": r, "bwt": t.map(|t| t.bwt),
                   "fwt": t.and_then(|t| t.fwt), "final_average": t.map(|t| t.final_average)}),
        )
        .await?;
    }
    Ok(())
}

/// After evaluations of `artifact` were recorded in `collab`: refreshes the snapshots of every
/// series of the collaboration it is the base or a round of.
pub async fn evaluated<C: ConnectionTrait>(
    txn: &C,
    collab: &collaboration::Model,
    artifact: &str,
    actor: &str,
) -> Result<(), ApiError> {
    let all = series::Entity::find()
        .filter(series::Column::CollabId.eq(collab.id))
        .all(txn)
        .await?;
    for s in all {
        let from = if s.base_id == artifact {
            Some(1)
        } else {
            rounds_of(txn, s.id)
                .await?
                .iter()
                .find(|r| r.artifact_id == artifact)
                .map(|r| usize::try_from(r.round).unwrap_or(1))
        };
        if let Some(from) = from {
            refresh(txn, collab, &s, from, actor).await?;
        }
    }
    Ok(())
}
