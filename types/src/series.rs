//! Round series and their reports: the score matrix of a continual-learning run (rows: rounds,
//! columns: tasks), with backward and forward transfer and the gain over the base.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /collaborations/{c}/series`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSeries {
    /// A name (`NAME_PATTERN`).
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// The base model (a reference); its scores are the matrix's base row.
    pub base: String,
    /// The columns, in training order: `task` or `task:metric` (needed when a task was scored
    /// with more than one metric).
    pub tasks: Vec<String>,
    /// The round (1-based) each column's task is trained in; by default column j in round
    /// j + 1. The study's 8 columns for 7 rounds: `[1, 2, 3, 4, 5, 6, 7, 7]`.
    #[serde(default)]
    pub round_of_task: Option<Vec<usize>>,
    #[serde(default)]
    pub description: String,
}

/// `POST /collaborations/{c}/series/{s}/rounds`: the next round.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRound {
    /// The artifact after this round (a reference): an adapter, checkpoint or merge of the
    /// series' base.
    pub artifact: String,
}

/// One round of a series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SeriesRound {
    /// 1-based.
    pub round: usize,
    /// The artifact's id.
    pub artifact: String,
    pub added_by: String,
    pub added_at: DateTime<Utc>,
}

/// A series as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    pub collab: String,
    pub name: String,
    /// The base model's id.
    pub base: String,
    pub tasks: Vec<String>,
    pub round_of_task: Option<Vec<usize>>,
    pub description: String,
    pub rounds: Vec<SeriesRound>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// One row of the score matrix: a round's artifact (or the base) and its score per column,
/// `null` where no evaluation exists yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScoreRow {
    /// 0 for the base row.
    pub round: usize,
    pub artifact: String,
    pub scores: Vec<Option<f64>>,
}

/// Backward and forward transfer of a complete matrix; every figure a fraction (0.1 = 10 %).
/// The definitions are in `normalisation` and REFERENCE.md, "Backward transfer and friends".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub bwt: f64,
    pub fwt: Option<f64>,
    /// Per column of the matrix the figures cover.
    pub relative_bwt: Vec<Option<f64>>,
    pub gain: Option<Vec<Option<f64>>>,
    pub average_gain: Option<f64>,
    pub final_average: f64,
    pub normalisation: String,
}

/// `GET /collaborations/{c}/series/{s}/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesReport {
    pub collab: String,
    pub series: String,
    /// Rounds 1..=`rounds` are covered.
    pub rounds: usize,
    pub tasks: Vec<String>,
    pub base: ScoreRow,
    pub matrix: Vec<ScoreRow>,
    /// Every empty cell the figures need, named (`round 2 (lab/r2:1): fomc`).
    pub missing: Vec<String>,
    /// The columns `transfer` covers: those whose task was trained by the last round.
    pub transfer_tasks: Vec<String>,
    /// Present once the matrix over `transfer_tasks` is complete and has two rounds.
    pub transfer: Option<Transfer>,
    /// Why `transfer` is absent, when it is.
    pub pending: Option<String>,
    /// The BWT history: the snapshot taken when each round's evaluations were complete.
    #[serde(default)]
    pub history: Vec<HistoryPoint>,
}

/// The figures of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPoint {
    pub round: usize,
    pub bwt: Option<f64>,
    pub fwt: Option<f64>,
    pub final_average: Option<f64>,
    pub average_gain: Option<f64>,
    pub taken_at: DateTime<Utc>,
}
