//! Garbage collection of blobs nothing refers to: no artifact file, no stored dataset, and no
//! upload within the grace period (a fresh upload is about to be committed). `clreg-server
//! admin gc` reports them (dry run) or deletes them (`--apply`); `serve` runs it daily.

use chrono::Utc;
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Select};
use serde_json::json;

use crate::blobs::blob_key;
use crate::db::entities::{artifact_file, blob, blob_grant, dataset};
use crate::error::ApiError;
use crate::state::AppState;

/// What a collection found (and, applied, removed).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Digests (hex) and sizes of the unreferenced blobs.
    pub blobs: Vec<(String, u64)>,
    pub bytes: u64,
    /// How many were deleted (0 in a dry run).
    pub deleted: usize,
    /// Upload sessions that left objects behind (chunks, part files of a crash) but no longer
    /// exist, untouched for the grace period or an hour, whichever is shorter: found, and
    /// removed when applied.
    pub stale_parts: usize,
}

/// Leftovers of upload sessions that no longer exist (see [`crate::uploads::orphaned`]),
/// untouched for `grace` or an hour, whichever is shorter.
async fn stale_uploads(
    state: &AppState,
    grace: chrono::Duration,
    apply: bool,
) -> Result<usize, ApiError> {
    use crate::db::entities::upload;
    let live: std::collections::HashSet<uuid::Uuid> = upload::Entity::find()
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| u.id)
        .collect();
    let age = grace.min(chrono::Duration::hours(1));
    let stale = crate::uploads::orphaned(state, &live, age).await?;
    if apply {
        for id in &stale {
            crate::uploads::remove_objects(state, *id).await;
        }
    }
    Ok(stale.len())
}

/// Blobs created before `cutoff` that nothing refers to and nobody uploaded since `cutoff`.
fn unreferenced(cutoff: chrono::DateTime<Utc>) -> Select<blob::Entity> {
    blob::Entity::find()
        .filter(blob::Column::CreatedAt.lt(cutoff))
        .filter(
            blob::Column::Digest.not_in_subquery(
                Query::select()
                    .column(artifact_file::Column::Digest)
                    .from(artifact_file::Entity)
                    .to_owned(),
            ),
        )
        .filter(
            blob::Column::Digest.not_in_subquery(
                Query::select()
                    .column(dataset::Column::Digest)
                    .from(dataset::Entity)
                    .and_where(dataset::Column::ContentStored.eq(true))
                    .to_owned(),
            ),
        )
        .filter(
            blob::Column::Digest.not_in_subquery(
                Query::select()
                    .column(blob_grant::Column::Digest)
                    .from(blob_grant::Entity)
                    .and_where(blob_grant::Column::GrantedAt.gt(cutoff))
                    .to_owned(),
            ),
        )
}

/// Finds the blobs unreferenced for longer than `grace`; with `apply`, deletes each (row and
/// grants in a transaction that checks again, then the stored object) and records one ledger
/// event on the server chain.
pub async fn collect(
    state: &AppState,
    grace: chrono::Duration,
    apply: bool,
) -> Result<Report, ApiError> {
    let cutoff = Utc::now() - grace;
    let found = unreferenced(cutoff)
        .order_by_asc(blob::Column::Digest)
        .all(&state.db)
        .await?;
    let mut report = Report {
        stale_parts: stale_uploads(state, grace, apply).await?,
        ..Report::default()
    };
    for b in &found {
        let size = u64::try_from(b.size).unwrap_or(0);
        report.bytes += size;
        report.blobs.push((b.digest.clone(), size));
    }
    if !apply || found.is_empty() {
        return Ok(report);
    }
    for b in found {
        let digest = b.digest.clone();
        let gone = crate::db::write(&state.db, |txn| {
            let digest = digest.clone();
            Box::pin(async move {
                // Still unreferenced inside the transaction that removes it.
                let still = unreferenced(cutoff)
                    .filter(blob::Column::Digest.eq(digest.as_str()))
                    .one(txn)
                    .await?
                    .is_some();
                if !still {
                    return Ok(false);
                }
                blob_grant::Entity::delete_many()
                    .filter(blob_grant::Column::Digest.eq(digest.as_str()))
                    .exec(txn)
                    .await?;
                blob::Entity::delete_by_id(digest.clone()).exec(txn).await?;
                Ok(true)
            })
        })
        .await?;
        if !gone {
            continue;
        }
        let parsed = clreg_types::Digest::parse_lenient(&digest).map_err(ApiError::internal)?;
        match state.store.delete(&blob_key(&parsed)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(%digest, error = %e, "deleting a collected blob's object failed")
            }
        }
        report.deleted += 1;
    }
    let (deleted, bytes) = (report.deleted, report.bytes);
    crate::db::write(&state.db, |txn| {
        Box::pin(async move {
            crate::ledger::append(
                txn,
                None,
                "blobs.collected",
                "admin",
                json!({"blobs": deleted, "bytes": bytes}),
            )
            .await
        })
    })
    .await?;
    Ok(report)
}
