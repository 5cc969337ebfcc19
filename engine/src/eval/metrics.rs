//! The metric names clreg knows, the dispatch from a name to its scoring function, and the two
//! accuracy metrics (`exact`, `first_char`).

use std::fmt;
use std::str::FromStr;

use super::EvalError;

/// How a task's predictions are scored. Names on disk and on the command line are snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The whole answer, see [`exact`].
    Exact,
    /// The first character of the answer, see [`first_char`].
    FirstChar,
    /// ROUGE-L F1, see [`super::rouge_l`].
    RougeL,
    /// Edit similarity, see [`super::edit_sim`].
    EditSim,
    /// SARI against the source, see [`super::sari`].
    Sari,
    /// The final number, see [`super::final_number`].
    FinalNumber,
    /// Multiple choice by log-likelihood (`acc_norm`), see [`super::score_choices`].
    Mc,
}

impl Metric {
    /// Every metric, in the order error messages list them.
    pub const ALL: [Metric; 7] = [
        Metric::Exact,
        Metric::FirstChar,
        Metric::RougeL,
        Metric::EditSim,
        Metric::Sari,
        Metric::FinalNumber,
        Metric::Mc,
    ];

    /// The name on disk: `exact`, `first_char`, `rouge_l`, `edit_sim`, `sari`, `final_number`,
    /// `mc`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Exact => "exact",
            Metric::FirstChar => "first_char",
            Metric::RougeL => "rouge_l",
            Metric::EditSim => "edit_sim",
            Metric::Sari => "sari",
            Metric::FinalNumber => "final_number",
            Metric::Mc => "mc",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| EvalError::UnknownMetric {
                name: s.to_string(),
                known: Metric::ALL.map(Metric::name).join(", "),
            })
    }
}

/// Scores one generated `prediction` against `answer` (and `source`, which only SARI reads).
///
/// [`Metric::Mc`] is scored by log-likelihood, not from text (see [`super::score_choices`]);
/// given a text here — the choice the model picked — it is scored as [`exact`].
pub fn score(metric: Metric, prediction: &str, answer: &str, source: &str) -> f64 {
    match metric {
        Metric::Exact | Metric::Mc => exact(prediction, answer),
        Metric::FirstChar => first_char(prediction, answer),
        Metric::RougeL => super::rouge_l(prediction, answer),
        Metric::EditSim => super::edit_sim(prediction, answer),
        Metric::Sari => super::sari(source, prediction, &[answer]),
        Metric::FinalNumber => super::final_number(prediction, answer),
    }
}

/// 1 when `pred` and `answer` are equal after trimming Unicode whitespace at both ends, else 0.
/// Case, inner whitespace and punctuation count. An empty (or all-space) prediction or answer
/// scores 0, as TRACE's `caculate_accuracy`, which skips such pairs but still divides by them.
pub fn exact(pred: &str, answer: &str) -> f64 {
    let (p, a) = (pred.trim(), answer.trim());
    if p.is_empty() || a.is_empty() {
        return 0.0;
    }
    f64::from(u8::from(p == a))
}

/// 1 when the first non-whitespace characters of `pred` and `answer` are the same character
/// (case-sensitive: `a` ≠ `A`), else 0; 0 when either has none. The study's code scores C-STANCE,
/// FOMC and ScienceQA-style answers ("A", "B", …) this way.
pub fn first_char(pred: &str, answer: &str) -> f64 {
    match (
        pred.trim_start().chars().next(),
        answer.trim_start().chars().next(),
    ) {
        (Some(p), Some(a)) => f64::from(u8::from(p == a)),
        _ => 0.0,
    }
}
