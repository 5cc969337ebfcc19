//! Entity for the `artifact_files` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "artifact_files")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub artifact_id: String,
    pub path: String,
    pub digest: String,
    pub size: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
