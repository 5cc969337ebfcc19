//! Evaluation of a model on a task: per-example metrics, multiple-choice log-likelihood scoring,
//! the batched evaluation runner, and importers of scores computed by other tools.
//!
//! Every score is in [0, 1]; a task's score is the mean over its examples, empty outputs
//! included (REFERENCE.md, "Evaluation").

pub mod choice;
pub mod edit_sim;
pub mod error;
pub mod import;
pub mod metrics;
pub mod number;
pub mod rouge;
pub mod run;
pub mod sari;

pub use choice::{ChoiceScores, score_choices};
pub use edit_sim::edit_sim;
pub use error::EvalError;
pub use import::{HarnessImport, HarnessScore, TraceResults, import_harness, import_trace};
pub use metrics::{Metric, exact, first_char, score};
pub use number::final_number;
pub use rouge::rouge_l;
pub use run::{EvalOptions, EvalSettings, ReportExample, TaskReport, evaluate_task};
pub use sari::sari;
