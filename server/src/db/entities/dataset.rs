//! Entity for the `datasets` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "datasets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collab_id: i64,
    pub digest: String,
    pub name: String,
    pub task: String,
    pub metric: String,
    pub size: i64,
    pub examples: i64,
    pub license: String,
    pub content_stored: bool,
    pub registered_by: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
