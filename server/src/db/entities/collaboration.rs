//! Entity for the `collaborations` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "collaborations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub policy: PolicyValue,
    pub description: String,
    pub created_by: i64,
    pub created_at: DateTimeUtc,
}

/// The policy column, parsed once here: a row holding anything else fails to load instead of
/// being read as one policy in one place and another elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum PolicyValue {
    #[sea_orm(string_value = "semi")]
    Semi,
    #[sea_orm(string_value = "full")]
    Full,
}

impl From<PolicyValue> for clreg_types::Policy {
    fn from(p: PolicyValue) -> Self {
        match p {
            PolicyValue::Semi => clreg_types::Policy::Semi,
            PolicyValue::Full => clreg_types::Policy::Full,
        }
    }
}

impl From<clreg_types::Policy> for PolicyValue {
    fn from(p: clreg_types::Policy) -> Self {
        match p {
            clreg_types::Policy::Semi => PolicyValue::Semi,
            clreg_types::Policy::Full => PolicyValue::Full,
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
