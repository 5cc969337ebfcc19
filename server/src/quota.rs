//! The per-collaboration storage quota: the distinct blobs a collaboration's artifacts and
//! stored datasets hold may total at most `collab_quota_bytes`. Checked in the transaction
//! that adds files (under the collaboration's lock), so concurrent commits cannot overshoot.

use std::collections::BTreeSet;

use clreg_types::ErrorCode;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::db::entities::{artifact, artifact_file, blob, collaboration, dataset};
use crate::error::ApiError;

/// The digests (hex) a collaboration holds and their total size.
pub async fn usage<C: ConnectionTrait>(
    db: &C,
    collab_id: i64,
) -> Result<(BTreeSet<String>, u64), ApiError> {
    let ids: Vec<String> = artifact::Entity::find()
        .filter(artifact::Column::CollabId.eq(collab_id))
        .all(db)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let mut digests: BTreeSet<String> = artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|f| f.digest)
        .collect();
    digests.extend(
        dataset::Entity::find()
            .filter(dataset::Column::CollabId.eq(collab_id))
            .filter(dataset::Column::ContentStored.eq(true))
            .all(db)
            .await?
            .into_iter()
            .map(|d| d.digest),
    );
    let bytes = blob::Entity::find()
        .filter(blob::Column::Digest.is_in(digests.iter().cloned()))
        .all(db)
        .await?
        .iter()
        .map(|b| u64::try_from(b.size).unwrap_or(0))
        .sum();
    Ok((digests, bytes))
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
    let (held, bytes) = usage(db, collab.id).await?;
    let mut added = BTreeSet::new();
    let mut extra = 0u64;
    for (digest, size) in new {
        if !held.contains(&digest) && added.insert(digest) {
            extra += size;
        }
    }
    if extra > 0 && bytes + extra > quota {
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
