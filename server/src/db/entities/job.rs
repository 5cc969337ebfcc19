//! Entity for the `jobs` table (schema in migrations/; keep the two in step).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub collab_id: i64,
    pub submitted_by: i64,
    pub kind: KindValue,
    pub state: StateValue,
    pub name: Option<String>,
    /// The `SubmitJob` request as JSON.
    pub request: String,
    /// The artifact ids the request's references resolved to at submission (JSON map).
    pub inputs: String,
    pub requires: Option<String>,
    pub progress: f64,
    pub message: String,
    pub log: String,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub cancel_requested: bool,
    /// `JobResult` as JSON.
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum KindValue {
    #[sea_orm(string_value = "merge")]
    Merge,
    #[sea_orm(string_value = "mix")]
    Mix,
    #[sea_orm(string_value = "train")]
    Train,
    #[sea_orm(string_value = "eval")]
    Eval,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum StateValue {
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl From<KindValue> for clreg_types::JobKind {
    fn from(k: KindValue) -> Self {
        match k {
            KindValue::Merge => Self::Merge,
            KindValue::Mix => Self::Mix,
            KindValue::Train => Self::Train,
            KindValue::Eval => Self::Eval,
        }
    }
}

impl From<clreg_types::JobKind> for KindValue {
    fn from(k: clreg_types::JobKind) -> Self {
        match k {
            clreg_types::JobKind::Merge => Self::Merge,
            clreg_types::JobKind::Mix => Self::Mix,
            clreg_types::JobKind::Train => Self::Train,
            clreg_types::JobKind::Eval => Self::Eval,
        }
    }
}

impl From<StateValue> for clreg_types::JobState {
    fn from(s: StateValue) -> Self {
        match s {
            StateValue::Queued => Self::Queued,
            StateValue::Running => Self::Running,
            StateValue::Succeeded => Self::Succeeded,
            StateValue::Failed => Self::Failed,
            StateValue::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
