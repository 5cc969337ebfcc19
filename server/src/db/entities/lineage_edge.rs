//! Entity for the `lineage_edges` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "lineage_edges")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub parent_id: String,
    pub child_id: String,
    pub relation: String,
    pub method: String,
    pub params: String,
    pub datasets: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
