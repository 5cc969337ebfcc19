//! Entity for the `users` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub created_at: DateTimeUtc,
    /// Tokens issued at or before this second are refused (set when keys are revoked).
    pub tokens_valid_after: Option<DateTimeUtc>,
    /// A disabled user's keys and tokens are refused.
    pub disabled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
