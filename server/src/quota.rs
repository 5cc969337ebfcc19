//! The per-collaboration storage quota: the distinct blobs a collaboration's artifacts and
//! stored datasets hold may total at most `collab_quota_bytes`. Checked in the transaction
//! that adds files (under the collaboration's lock), so concurrent commits cannot overshoot.
//! Usage is one aggregate query over subqueries: no list of a collaboration's blobs is loaded
//! or bound as parameters, whatever its size.

use std::collections::BTreeSet;

use clreg_types::ErrorCode;
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::db::entities::{artifact, artifact_file, blob, collaboration, dataset};
use crate::error::ApiError;

/// Blobs held by `collab_id`: a file of one of its artifacts, or a dataset it stores.
fn held_by(collab_id: i64) -> Condition {
    let files = Query::select()
        .column((artifact_file::Entity, artifact_file::Column::Digest))
        .from(artifact_file::Entity)
        .inner_join(
            artifact::Entity,
            Expr::col((artifact::Entity, artifact::Column::Id))
                .equals((artifact_file::Entity, artifact_file::Column::ArtifactId)),
        )
        .and_where(Expr::col((artifact::Entity, artifact::Column::CollabId)).eq(collab_id))
        .to_owned();
    let datasets = Query::select()
        .column(dataset::Column::Digest)
        .from(dataset::Entity)
        .and_where(dataset::Column::CollabId.eq(collab_id))
        .and_where(dataset::Column::ContentStored.eq(true))
        .to_owned();
    Condition::any()
        .add(blob::Column::Digest.in_subquery(files))
        .add(blob::Column::Digest.in_subquery(datasets))
}

/// The bytes of the distinct blobs a collaboration holds.
pub async fn usage<C: ConnectionTrait>(db: &C, collab_id: i64) -> Result<u64, ApiError> {
    let total: Option<i64> = blob::Entity::find()
        .filter(held_by(collab_id))
        .select_only()
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back.
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(size), 0) AS BIGINT)"),
            "total",
        )
        .into_tuple()
        .one(db)
        .await?;
    Ok(total.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
}

/// Refuses adding `new` (digest hex, size) to `collab` when the quota would be exceeded
/// (`quota` 0: none). Blobs the collaboration already holds cost nothing again.
pub async fn check<C: ConnectionTrait>(
    db: &C,
    collab: &collaboration::Model,
    new: impl IntoIterator<Item = (String, u64)>,
    quota: u64,
) -> Result<(), ApiError> {
    if quota == 0 {
        return Ok(());
    }
    let new: Vec<(String, u64)> = new.into_iter().collect();
    // At most a manifest's files (4096): bound as parameters.
    let held: BTreeSet<String> = blob::Entity::find()
        .filter(held_by(collab.id))
        .filter(blob::Column::Digest.is_in(new.iter().map(|(d, _)| d.clone())))
        .select_only()
        .column(blob::Column::Digest)
        .into_tuple::<String>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut added = BTreeSet::new();
    let mut extra = 0u64;
    for (digest, size) in new {
        if !held.contains(&digest) && added.insert(digest) {
            extra += size;
        }
    }
    if extra == 0 {
        return Ok(());
    }
    let bytes = usage(db, collab.id).await?;
    if bytes + extra > quota {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "`{}` holds {bytes} bytes of its {quota}-byte quota; these {extra} new bytes \
                 would exceed it; ask the server admin to raise collab_quota_bytes",
                collab.name
            ),
        ));
    }
    Ok(())
}
