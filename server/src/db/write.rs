//! Write transactions that concurrent writers cannot break, on both backends.
//!
//! - SQLite: `BEGIN IMMEDIATE` takes the write lock before the first read, so a transaction never
//!   reads a snapshot that another writer then invalidates (`SQLITE_BUSY_SNAPSHOT`, "database is
//!   locked", which SQLite's busy timeout does not cover). Within one process writers queue on an
//!   async mutex rather than polling SQLite's busy handler; across processes (`clreg-server admin`,
//!   standalone workers) the busy timeout makes them wait.
//! - PostgreSQL: read-then-write sequences inside one collaboration (version numbers, the ledger's
//!   sequence) are serialised by [`lock_collab`], a row lock on the collaboration.
//! - Both: a transient failure (busy, serialization failure, deadlock, or a unique violation
//!   from a race another writer won) re-runs the whole transaction, a bounded number of times;
//!   each closure re-reads what it depends on, so a re-run sees the winner's change. If it still
//!   fails the client gets `busy` (503 with `Retry-After`), never a 500.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clreg_types::ErrorCode;
use rand::Rng as _;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::db::entities::collaboration;
use crate::error::ApiError;

/// Runs of a transaction before `busy` reaches the client.
const ATTEMPTS: u32 = 8;

/// One writer at a time per process on SQLite (its nature); PostgreSQL needs no such lock.
static SQLITE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The future a write closure returns; it borrows the transaction.
pub type TxnFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'c>>;

/// Runs `f` in a write transaction, committing on `Ok` and rolling back on `Err`; re-runs it on a
/// transient conflict (see the module docs). `f` may run more than once: it must clone what it
/// needs from its environment rather than move it.
pub async fn write<T, F>(db: &DatabaseConnection, f: F) -> Result<T, ApiError>
where
    T: Send,
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxnFuture<'c, T> + Send + Sync,
{
    let sqlite = db.get_database_backend() == DbBackend::Sqlite;
    let mut attempt = 1;
    loop {
        let result = {
            let _writer = if sqlite {
                Some(SQLITE_WRITER.lock().await)
            } else {
                None
            };
            run_once(db, &f).await
        };
        match result {
            Err(e) if e.code == ErrorCode::Busy && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e.message, "write transaction conflicted; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn run_once<T, F>(db: &DatabaseConnection, f: &F) -> Result<T, ApiError>
where
    F: for<'c> Fn(&'c DatabaseTransaction) -> TxnFuture<'c, T>,
{
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    match f(&txn).await {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

/// 10 ms, 20 ms, … up to 640 ms, each scaled by a random factor in [0.5, 1.5) so that writers
/// that collided do not collide again.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    Duration::from_micros((base as f64 * 1000.0 * jitter) as u64)
}

/// Serialises writers of one collaboration until the transaction ends: `SELECT … FOR UPDATE` on
/// its row on PostgreSQL; on SQLite the transaction already holds the database's write lock.
/// Call it first in any transaction that allocates a version or appends to the collaboration's
/// ledger chain.
pub async fn lock_collab<C: ConnectionTrait>(txn: &C, collab_id: i64) -> Result<(), ApiError> {
    collaboration::Entity::find_by_id(collab_id)
        .lock_exclusive()
        .one(txn)
        .await?;
    Ok(())
}

/// Whether a database error is one that re-running the transaction can cure.
pub fn is_transient(e: &sea_orm::DbErr) -> bool {
    if crate::ledger::is_unique_violation(e) {
        return true;
    }
    let runtime = match e {
        sea_orm::DbErr::Exec(r) | sea_orm::DbErr::Query(r) | sea_orm::DbErr::Conn(r) => r,
        sea_orm::DbErr::ConnectionAcquire(_) => return true,
        _ => return false,
    };
    let sea_orm::RuntimeErr::SqlxError(sqlx) = runtime else {
        return false;
    };
    if matches!(
        sqlx.as_ref(),
        sea_orm::sqlx::Error::PoolTimedOut | sea_orm::sqlx::Error::WorkerCrashed
    ) {
        return true;
    }
    let Some(code) = sqlx.as_database_error().and_then(|d| d.code()) else {
        return false;
    };
    matches!(
        code.as_ref(),
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes (BUSY_SNAPSHOT = 517,
        // BUSY_RECOVERY = 261, BUSY_TIMEOUT = 773, LOCKED_SHAREDCACHE = 262).
        "5" | "6" | "261" | "262" | "517" | "773"
        // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
        | "40001" | "40P01" | "55P03"
    )
}
