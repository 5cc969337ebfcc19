//! Entity for the `ledger_events` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub chain: String,
    pub collab_id: Option<i64>,
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub payload: String,
    pub created_at: String,
    pub prev_hash: String,
    pub hash: String,
    /// `clreg_types::LedgerScheme` as text: how `hash` was computed.
    pub scheme: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
