//! Entity for the `evaluations` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "evaluations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collab_id: i64,
    pub artifact_id: String,
    pub task: String,
    pub metric: String,
    pub score: f64,
    pub n: i64,
    pub job_id: Option<Uuid>,
    /// The engine's task report as JSON (no examples when the data travelled with the job).
    pub report: String,
    pub created_by: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
