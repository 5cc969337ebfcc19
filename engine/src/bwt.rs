//! Backward and forward transfer, relative forgetting and gain over the base model, from the
//! matrix of scores after each training round (REFERENCE.md, "Backward transfer and friends").

use serde::{Deserialize, Serialize};

/// Scores of every task after every round of sequential training, plus the base model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreMatrix {
    /// Column names (score columns; a task tested on two sets has two columns).
    pub tasks: Vec<String>,
    /// R[t][j]: after round t (rounds == tasks trained in order), task j
    pub rounds: Vec<Vec<f64>>,
    /// b_j: the base model's score on column j.
    pub base: Option<Vec<f64>>,
    /// The round (1-based) in which each column's task was trained. `None` means column j was
    /// trained in round j + 1, which needs as many columns as rounds. The study's Tables 3 and 4
    /// have 8 columns for 7 rounds: `[1, 2, 3, 4, 5, 6, 7, 7]` (MetaMath tested on GSM8K and
    /// GSM8K-CoT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_of_task: Option<Vec<usize>>,
}

/// What [`transfer`] computes; every figure is a fraction (0.1 = 10 %).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReport {
    /// Mean over columns trained before the last round T of R[T][j] − R[r_j][j] (r_j the column's
    /// round); with one column per round this is 1/(T−1) · Σ_{j<T} (R[T][j] − R[j][j]).
    pub bwt: f64,
    /// Mean over columns trained after round 1 of R[r_j − 1][j] − b_j; needs the base scores.
    pub fwt: Option<f64>,
    /// Per column: (R[T][j] − R[r_j][j]) / R[r_j][j]; `None` for columns trained in the last round
    /// and where R[r_j][j] ≤ 0.
    pub relative_bwt: Vec<Option<f64>>,
    /// Per column: (R[T][j] − b_j) / b_j, `None` where b_j ≤ 0; present with base scores.
    pub gain: Option<Vec<Option<f64>>>,
    /// (mean_j R[T][j] − mean_j b_j) / mean_j b_j: the gain of the averages, as the study's AVE
    /// column; `None` without base scores or when their mean is ≤ 0.
    pub average_gain: Option<f64>,
    /// mean_j R[T][j].
    pub final_average: f64,
    /// Which normalisation each figure uses, in words, for reports.
    pub normalisation: String,
}

/// A score matrix [`transfer`] cannot use; the message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BwtError {
    #[error("{rounds} round(s) of scores: transfer needs at least 2 rounds")]
    TooFewRounds { rounds: usize },
    #[error("the matrix has no task columns: name at least one task")]
    NoTasks,
    #[error("round {round} has {len} scores for {tasks} tasks: every round needs one per task")]
    Ragged {
        round: usize,
        len: usize,
        tasks: usize,
    },
    #[error("the base row has {len} scores for {tasks} tasks: give one per task")]
    BaseLength { len: usize, tasks: usize },
    #[error("{what} is {value}: every score must be a finite number")]
    NotFinite { what: String, value: f64 },
    #[error("round_of_task: {reason}")]
    RoundOfTask { reason: String },
    #[error(
        "every task was trained in the last round, so nothing can be forgotten: set \
         round_of_task to the round each task was trained in"
    )]
    NoEarlierTask,
}

impl BwtError {
    /// The stable code of this error on the wire.
    pub fn code(&self) -> crate::code::Code {
        match self {
            Self::TooFewRounds { .. } => crate::code::Code::TooFewRounds,
            Self::NoTasks => crate::code::Code::NoTasks,
            Self::Ragged { .. } => crate::code::Code::RaggedMatrix,
            Self::BaseLength { .. } => crate::code::Code::BaseLength,
            Self::NotFinite { .. } => crate::code::Code::NotFinite,
            Self::RoundOfTask { .. } => crate::code::Code::InvalidRoundOfTask,
            Self::NoEarlierTask => crate::code::Code::NoEarlierTask,
        }
    }
}

const NORMALISATION: &str = "bwt and fwt: absolute score differences, averaged over tasks; \
    relative_bwt: (R[T][j] - R[j][j]) / R[j][j]; gain: (R[T][j] - b_j) / b_j; average_gain: \
    (mean_j R[T][j] - mean_j b_j) / mean_j b_j (the gain of the averages, as the study's tables)";

/// Computes BWT, FWT, relative BWT and gains of `m` (see [`TransferReport`]).
pub fn transfer(m: &ScoreMatrix) -> Result<TransferReport, BwtError> {
    let t = m.rounds.len();
    let k = m.tasks.len();
    if t < 2 {
        return Err(BwtError::TooFewRounds { rounds: t });
    }
    if k == 0 {
        return Err(BwtError::NoTasks);
    }
    for (i, row) in m.rounds.iter().enumerate() {
        if row.len() != k {
            return Err(BwtError::Ragged {
                round: i + 1,
                len: row.len(),
                tasks: k,
            });
        }
        if let Some((j, v)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(BwtError::NotFinite {
                what: format!("the score of `{}` after round {}", m.tasks[j], i + 1),
                value: *v,
            });
        }
    }
    if let Some(base) = &m.base {
        if base.len() != k {
            return Err(BwtError::BaseLength {
                len: base.len(),
                tasks: k,
            });
        }
        if let Some((j, v)) = base.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(BwtError::NotFinite {
                what: format!("the base score of `{}`", m.tasks[j]),
                value: *v,
            });
        }
    }
    let round_of: Vec<usize> = match &m.round_of_task {
        Some(r) => {
            if r.len() != k {
                return Err(BwtError::RoundOfTask {
                    reason: format!("{} entries for {k} tasks: give one round per task", r.len()),
                });
            }
            if let Some((j, bad)) = r.iter().enumerate().find(|(_, r)| **r == 0 || **r > t) {
                return Err(BwtError::RoundOfTask {
                    reason: format!(
                        "`{}` is given round {bad}; rounds are numbered 1 to {t}",
                        m.tasks[j]
                    ),
                });
            }
            r.clone()
        }
        None if k == t => (1..=t).collect(),
        None => {
            return Err(BwtError::RoundOfTask {
                reason: format!(
                    "{k} tasks but {t} rounds: say in which round each task was trained"
                ),
            });
        }
    };

    let last = &m.rounds[t - 1];
    let at = |round: usize, j: usize| m.rounds[round - 1][j];
    let earlier: Vec<usize> = (0..k).filter(|&j| round_of[j] < t).collect();
    if earlier.is_empty() {
        return Err(BwtError::NoEarlierTask);
    }
    let bwt = earlier
        .iter()
        .map(|&j| last[j] - at(round_of[j], j))
        .sum::<f64>()
        / earlier.len() as f64;
    let relative_bwt = (0..k)
        .map(|j| {
            let learned = at(round_of[j], j);
            (round_of[j] < t && learned > 0.0).then(|| (last[j] - learned) / learned)
        })
        .collect();

    let final_average = mean(last);
    let (mut fwt, mut gain, mut average_gain) = (None, None, None);
    if let Some(base) = &m.base {
        let later: Vec<usize> = (0..k).filter(|&j| round_of[j] >= 2).collect();
        if !later.is_empty() {
            fwt = Some(
                later
                    .iter()
                    .map(|&j| at(round_of[j] - 1, j) - base[j])
                    .sum::<f64>()
                    / later.len() as f64,
            );
        }
        gain = Some(
            (0..k)
                .map(|j| (base[j] > 0.0).then(|| (last[j] - base[j]) / base[j]))
                .collect(),
        );
        let base_mean = mean(base);
        average_gain = (base_mean > 0.0).then(|| (final_average - base_mean) / base_mean);
    }
    Ok(TransferReport {
        bwt,
        fwt,
        relative_bwt,
        gain,
        average_gain,
        final_average,
        normalisation: NORMALISATION.to_string(),
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}
