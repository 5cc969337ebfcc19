//! Entity for the `purges` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "purges")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collab_id: i64,
    /// The dataset content's digest (hex).
    pub digest: String,
    pub requested_at: DateTimeUtc,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the bytes were confirmed gone (or found to be another reference's to keep).
    pub done_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
