//! Entity for the `blobs` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "blobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    pub size: i64,
    pub created_at: DateTimeUtc,
    /// What the upload's NaN / infinity scan found; `None` for blobs stored before it existed.
    pub weights_check: Option<WeightsCheck>,
    /// The first tensor with a NaN or infinite element, when `weights_check` is `NonFinite`.
    pub non_finite_tensor: Option<String>,
    pub non_finite_element: Option<i64>,
}

/// The outcome of [`clreg_engine::finite_scan`] on a blob's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum WeightsCheck {
    #[sea_orm(string_value = "not_safetensors")]
    NotSafetensors,
    /// A header too large to buffer in the stream: checked at commit instead.
    #[sea_orm(string_value = "unscanned")]
    Unscanned,
    #[sea_orm(string_value = "finite")]
    Finite,
    #[sea_orm(string_value = "non_finite")]
    NonFinite,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
