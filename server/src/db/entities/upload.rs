//! Entity for the `uploads` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: i64,
    /// Bytes committed: the sum of the session's chunks.
    pub offset: i64,
    /// No longer written (chunks are counted in `upload_chunks`).
    pub parts: i64,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// No longer written: sessions are not tied to a server process.
    pub instance: Option<String>,
    /// The running checks as of `offset` (`uploads::Checks` as JSON); NULL for a session from
    /// before sessions moved between processes.
    pub state: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
