//! Dataset content a job uses, under the collaboration's policy (decided by [`crate::policy`]).
//!
//! Carried content (the only kind in `semi`): its sha256 must be the digest of a manifest the
//! submitter registered in the collaboration; it is kept under the job-scoped key
//! `jobs/<job>/data/<hex>` (outside `blobs/`, so no route reads it), copied only into the
//! running job's scratch directory, and deleted from both when the job ends; [`sweep`] removes
//! what a crash left. Stored content (`full` only) is the registered dataset's blob.
//!
//! The job's recorded request keeps the digests, never the content.

use std::path::{Path, PathBuf};

use clreg_types::{Digest, ErrorCode, JobData, Policy, Role};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest as _, Sha256};

use crate::db::entities::{dataset, job};
use crate::error::ApiError;
use crate::policy::{self, DataUse};
use crate::state::AppState;

/// The store key of a dataset carried by job `id`.
pub fn carried_key(id: uuid::Uuid, digest: &Digest) -> StorePath {
    StorePath::from(format!("jobs/{id}/data/{}", digest.hex()))
}

/// Which use a dataset of a train job makes: the current task's data, or earlier tasks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRole {
    Current,
    Past,
}

/// The policy question one dataset of a job asks.
pub fn data_use(d: &JobData, role: DataRole, evaluating: bool) -> DataUse {
    match (d.content.is_some(), evaluating, role) {
        (true, false, _) => DataUse::TrainOnCarried,
        (true, true, _) => DataUse::EvalOnCarried,
        (false, true, _) => DataUse::EvalOnStored,
        (false, false, DataRole::Current) => DataUse::TrainOnStored,
        (false, false, DataRole::Past) => DataUse::ReplayOrJoint,
    }
}

/// Checks every dataset of a submission: policy and roles, digest, registration, format.
#[allow(clippy::too_many_arguments)]
pub async fn check(
    state: &AppState,
    collab: &crate::db::entities::collaboration::Model,
    policy: Policy,
    roles: &[Role],
    submitter: i64,
    data: &[JobData],
    role: DataRole,
    evaluating: bool,
) -> Result<(), ApiError> {
    for d in data {
        policy::decide(&collab.name, policy, roles, data_use(d, role, evaluating))?;
        let registered = dataset::Entity::find()
            .filter(dataset::Column::CollabId.eq(collab.id))
            .filter(dataset::Column::Digest.eq(d.digest.hex()))
            .one(&state.db)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidDataset,
                    format!(
                        "dataset {} is not registered in `{}`; register its manifest first (`clreg dataset push`)",
                        d.digest, collab.name
                    ),
                )
            })?;
        match &d.content {
            Some(content) => {
                if registered.registered_by != submitter {
                    return Err(ApiError::new(
                        ErrorCode::PolicyForbids,
                        format!(
                            "dataset {} was registered by another member; a job may carry only content of datasets its submitter registered",
                            d.digest
                        ),
                    ));
                }
                let actual = Digest::from_bytes(Sha256::digest(content.as_bytes()).into());
                if actual != d.digest {
                    return Err(ApiError::new(
                        ErrorCode::DigestMismatch,
                        format!(
                            "the content carried for {} hashes to {actual}; send the content of the registered dataset",
                            d.digest
                        ),
                    ));
                }
                let bytes = content.clone().into_bytes();
                let name = registered.name.clone();
                let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
                tokio::task::spawn_blocking(move || {
                    clreg_engine::trace::validate_trace(&bytes, &name)
                })
                .await
                .map_err(ApiError::internal)??;
            }
            None => {
                if !registered.content_stored {
                    return Err(ApiError::not_found(format!(
                        "stored content of dataset {} (only its manifest was registered); send the content with the job",
                        d.digest
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Keeps carried content under the job and returns the datasets as the job's record keeps
/// them: the digest, and for carried data an empty `content` that says "under the job".
pub async fn keep_carried(
    store: &dyn ObjectStore,
    id: uuid::Uuid,
    data: &[JobData],
) -> Result<Vec<JobData>, ApiError> {
    let mut stripped = Vec::with_capacity(data.len());
    for d in data {
        if let Some(content) = &d.content {
            store
                .put(
                    &carried_key(id, &d.digest),
                    content.clone().into_bytes().into(),
                )
                .await?;
        }
        stripped.push(JobData {
            digest: d.digest.clone(),
            content: d.content.as_ref().map(|_| String::new()),
        });
    }
    Ok(stripped)
}

/// Writes a job's datasets into its scratch directory and returns their paths, in order.
pub async fn stage(
    state: &AppState,
    id: uuid::Uuid,
    data: &[JobData],
    scratch: &Path,
) -> Result<Vec<PathBuf>, ApiError> {
    let dir = scratch.join("data");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let mut paths = Vec::with_capacity(data.len());
    for d in data {
        let path = dir.join(format!("{}.json", d.digest.hex()));
        let key = match &d.content {
            Some(_) => carried_key(id, &d.digest),
            None => crate::blobs::blob_key(&d.digest),
        };
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(ApiError::internal)?;
        let mut stream = state.store.get(&key).await?.into_stream();
        while let Some(piece) = stream.next().await {
            tokio::io::AsyncWriteExt::write_all(&mut file, &piece?)
                .await
                .map_err(ApiError::internal)?;
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Deletes everything kept under job `id` in the store.
pub async fn forget(store: &dyn ObjectStore, id: uuid::Uuid) -> Result<(), ApiError> {
    let prefix = StorePath::from(format!("jobs/{id}"));
    let keys: Vec<_> = store
        .list(Some(&prefix))
        .map(|m| m.map(|m| m.location))
        .collect()
        .await;
    for key in keys {
        match store.delete(&key?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes carried content and scratch directories of jobs that have ended (a worker that
/// crashed cannot clean up after itself). Returns how many jobs it cleaned.
pub async fn sweep(state: &AppState) -> Result<usize, ApiError> {
    let mut cleaned = 0;
    let ended = |s: job::StateValue| {
        matches!(
            s,
            job::StateValue::Succeeded | job::StateValue::Failed | job::StateValue::Cancelled
        )
    };
    // Store: every `jobs/<id>/` prefix of an ended (or unknown) job.
    let listed: Vec<_> = state
        .store
        .list(Some(&StorePath::from("jobs")))
        .collect()
        .await;
    let mut ids = std::collections::BTreeSet::new();
    // Content of a job being submitted is written before its row commits: an unknown job's
    // objects are left alone for an hour.
    let mut young = std::collections::BTreeSet::new();
    for meta in listed {
        let meta = meta?;
        let recent = chrono::Utc::now() - meta.last_modified < chrono::Duration::hours(1);
        if recent
            && let Some(id) = meta
                .location
                .parts()
                .nth(1)
                .and_then(|p| p.as_ref().parse::<uuid::Uuid>().ok())
        {
            young.insert(id);
        }
        if let Some(id) = meta
            .location
            .parts()
            .nth(1)
            .and_then(|p| p.as_ref().parse::<uuid::Uuid>().ok())
        {
            ids.insert(id);
        }
    }
    // Local scratch directories.
    let scratch_root = state.config.data_dir.join("jobs");
    if let Ok(entries) = std::fs::read_dir(&scratch_root) {
        for e in entries.flatten() {
            if let Some(id) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<uuid::Uuid>().ok())
            {
                ids.insert(id);
            }
        }
    }
    for id in ids {
        let row = job::Entity::find_by_id(id).one(&state.db).await?;
        let gone = match row {
            Some(j) => ended(j.state),
            None => !young.contains(&id),
        };
        if gone {
            forget(state.store.as_ref(), id).await?;
            let _ = std::fs::remove_dir_all(scratch_root.join(id.to_string()));
            cleaned += 1;
        }
    }
    Ok(cleaned)
}
