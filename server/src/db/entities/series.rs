//! Entity for the `series` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "series")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collab_id: i64,
    pub name: String,
    pub base_id: String,
    /// JSON array of columns, `task` or `task:metric`.
    pub tasks: String,
    /// JSON array: the round each column was trained in; null for column j in round j + 1.
    pub round_of_task: Option<String>,
    pub description: String,
    pub created_by: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
