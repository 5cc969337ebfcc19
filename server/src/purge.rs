//! The purge queue. Tightening a collaboration from `full` to `semi` removes every reader's
//! access to its stored dataset content in one transaction, and queues one purge per dataset in
//! that same transaction. [`run`] then deletes each blob that nothing else holds (a stored
//! dataset of another `full` collaboration, an artifact file), retrying what fails on each run —
//! right after the tightening and every five minutes in `serve` — and records `dataset.purged`
//! in the collaboration's ledger only once it is true: the bytes are gone (`blob_deleted: true`)
//! or are held by another reference that keeps them (`retained_by`).
//!
//! Known gap, shared with `gc`: an upload of the very same bytes finishing between the row's
//! removal and the object's deletion loses its object; the client's next commit then fails and
//! it uploads again.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

use crate::blobs::blob_key;
use crate::db::entities::{artifact_file, blob, blob_grant, collaboration, dataset, purge};
use crate::error::ApiError;
use crate::state::AppState;

/// Queues the purge of `digests` (hex), the content of datasets of `collab_id` that no longer
/// stores it. Call inside the transaction that tightens the policy.
pub async fn queue<C: ConnectionTrait>(
    txn: &C,
    collab_id: i64,
    digests: &[String],
) -> Result<(), ApiError> {
    let now = Utc::now();
    for digest in digests {
        purge::ActiveModel {
            collab_id: Set(collab_id),
            digest: Set(digest.clone()),
            requested_at: Set(now),
            attempts: Set(0),
            last_error: Set(None),
            done_at: Set(None),
            ..Default::default()
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// What still holds a purged digest's bytes, legitimately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Artifact,
    Dataset,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Self::Artifact => "artifact",
            Self::Dataset => "dataset",
        }
    }
}

async fn holder<C: ConnectionTrait>(db: &C, digest: &str) -> Result<Option<Holder>, ApiError> {
    let stored = dataset::Entity::find()
        .filter(dataset::Column::Digest.eq(digest))
        .filter(dataset::Column::ContentStored.eq(true))
        .one(db)
        .await?;
    if stored.is_some() {
        return Ok(Some(Holder::Dataset));
    }
    let file = artifact_file::Entity::find()
        .filter(artifact_file::Column::Digest.eq(digest))
        .one(db)
        .await?;
    Ok(file.map(|_| Holder::Artifact))
}

/// Works through the pending purges; returns how many were completed. A purge that fails stays
/// pending with its error and attempt count.
pub async fn run(state: &AppState) -> Result<usize, ApiError> {
    let pending = purge::Entity::find()
        .filter(purge::Column::DoneAt.is_null())
        .all(&state.db)
        .await?;
    let mut done = 0;
    for p in pending {
        match attempt(state, &p).await {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(digest = %p.digest, error = e.message, "purging dataset content failed; will retry");
                let mut active: purge::ActiveModel = p.into();
                active.attempts = Set(active.attempts.take().unwrap_or(0) + 1);
                active.last_error = Set(Some(e.message));
                active.update(&state.db).await?;
            }
        }
    }
    Ok(done)
}

async fn attempt(state: &AppState, p: &purge::Model) -> Result<(), ApiError> {
    // The rows first, in a transaction that checks nothing holds the bytes any more.
    let digest = p.digest.clone();
    let held = crate::db::write(&state.db, |txn| {
        let digest = digest.clone();
        Box::pin(async move {
            let held = holder(txn, &digest).await?;
            if held.is_none() {
                blob_grant::Entity::delete_many()
                    .filter(blob_grant::Column::Digest.eq(digest.as_str()))
                    .exec(txn)
                    .await?;
                blob::Entity::delete_by_id(digest).exec(txn).await?;
            }
            Ok(held)
        })
    })
    .await?;
    // Then the bytes: a failure here leaves the purge pending, and the next run deletes them.
    if held.is_none() {
        let parsed = clreg_types::Digest::parse_lenient(&p.digest).map_err(ApiError::internal)?;
        match state.store.delete(&blob_key(&parsed)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let id = p.id;
    let collab_id = p.collab_id;
    let digest = p.digest.clone();
    crate::db::write(&state.db, |txn| {
        let digest = digest.clone();
        Box::pin(async move {
            let Some(row) = purge::Entity::find_by_id(id).one(txn).await? else {
                return Ok(());
            };
            if row.done_at.is_some() {
                return Ok(()); // another process finished it
            }
            let collab = collaboration::Entity::find_by_id(collab_id)
                .one(txn)
                .await?
                .ok_or_else(|| ApiError::internal("purge of a collaboration that is gone"))?;
            let mut active: purge::ActiveModel = row.into();
            active.done_at = Set(Some(Utc::now()));
            active.update(txn).await?;
            let payload = match held {
                None => json!({"digest": digest, "blob_deleted": true}),
                Some(h) => {
                    json!({"digest": digest, "blob_deleted": false, "retained_by": h.as_str()})
                }
            };
            crate::ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "dataset.purged",
                "server",
                payload,
            )
            .await?;
            Ok(())
        })
    })
    .await
}

/// Purges not yet done, oldest first: what `admin` and tests inspect.
pub async fn pending(state: &AppState) -> Result<Vec<purge::Model>, ApiError> {
    Ok(purge::Entity::find()
        .filter(purge::Column::DoneAt.is_null())
        .all(&state.db)
        .await?)
}
