//! The tamper-evident ledger: per-collaboration hash chains appended inside the writing transaction.

use chrono::Utc;
use clreg_types::{LedgerEvent, LedgerScheme};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};

use crate::db::entities::ledger_event;
use crate::error::ApiError;

pub const GENESIS: &str = clreg_types::LEDGER_GENESIS;

fn chain_of(collab_id: Option<i64>) -> String {
    match collab_id {
        Some(id) => format!("collab:{id}"),
        None => "system".to_string(),
    }
}

/// Appends an event to the chain of `collab` (or the server-wide chain for `None`). Call it with
/// the transaction that makes the change, so the event exists exactly when the change does.
/// `(chain, seq)` is unique: two concurrent appends cannot both succeed with the same parent (the
/// loser's transaction is re-run by [`crate::db::write`]; collaboration chains are serialised
/// earlier by [`crate::db::lock_collab`]).
pub async fn append<C: ConnectionTrait>(
    db: &C,
    collab: Option<(i64, &str)>,
    kind: &str,
    actor: &str,
    payload: serde_json::Value,
) -> Result<(), ApiError> {
    let chain = chain_of(collab.map(|c| c.0));
    let last = ledger_event::Entity::find()
        .filter(ledger_event::Column::Chain.eq(&chain))
        .order_by_desc(ledger_event::Column::Seq)
        .one(db)
        .await?;
    let (seq, prev_hash) = match last {
        Some(e) => (e.seq + 1, e.hash),
        None => (1, GENESIS.to_string()),
    };
    // Stored as text with microseconds so every backend returns exactly what was hashed.
    let now = Utc::now();
    let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // New events are hashed over their RFC 8785 form (the scheme is recorded with each event;
    // older `v1` events keep verifying as they were written).
    let scheme = LedgerScheme::Jcs;
    let hash = clreg_types::ledger_hash(
        scheme,
        &prev_hash,
        seq,
        collab.map(|c| c.1),
        kind,
        actor,
        &now,
        &payload,
    )
    .map_err(ApiError::internal)?;
    let stored_payload =
        serde_jcs::to_string(&payload).map_err(|e| ApiError::internal(e.to_string()))?;
    ledger_event::ActiveModel {
        chain: Set(chain),
        collab_id: Set(collab.map(|c| c.0)),
        seq: Set(seq),
        kind: Set(kind.to_string()),
        actor: Set(actor.to_string()),
        payload: Set(stored_payload),
        created_at: Set(created_at),
        prev_hash: Set(prev_hash),
        hash: Set(hash),
        scheme: Set(scheme.as_str().to_string()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

pub fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// The events of one chain, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    collab: Option<(i64, &str)>,
) -> Result<Vec<LedgerEvent>, ApiError> {
    let rows = ledger_event::Entity::find()
        .filter(ledger_event::Column::Chain.eq(chain_of(collab.map(|c| c.0))))
        .order_by_asc(ledger_event::Column::Seq)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            let created_at = chrono::DateTime::parse_from_rfc3339(&r.created_at)
                .map_err(|e| ApiError::internal(format!("ledger timestamp: {e}")))?
                .with_timezone(&Utc);
            let payload = serde_json::from_str(&r.payload)
                .map_err(|e| ApiError::internal(format!("ledger payload: {e}")))?;
            let scheme = r
                .scheme
                .parse::<LedgerScheme>()
                .map_err(|e| ApiError::internal(format!("ledger scheme: {e}")))?;
            Ok(LedgerEvent {
                scheme,
                seq: r.seq,
                collab: collab.map(|c| c.1.to_string()),
                kind: r.kind,
                actor: r.actor,
                payload,
                created_at,
                prev_hash: r.prev_hash,
                hash: r.hash,
            })
        })
        .collect()
}

/// Recomputes every hash of a chain; `Err` names the first event that does not verify.
pub fn verify(events: &[LedgerEvent]) -> Result<(), String> {
    clreg_types::transparency::verify_chain(events)
}
