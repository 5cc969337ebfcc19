//! Entity for the `upload_chunks` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upload_chunks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub upload_id: Uuid,
    /// The chunk's first byte in the blob; one chunk per start, so two requests racing to
    /// commit the same bytes cannot both win.
    #[sea_orm(primary_key, auto_increment = false)]
    pub start: i64,
    pub len: i64,
    /// Names the chunk's object, `uploads/<upload_id>/<start>-<attempt>`.
    pub attempt: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
