//! Every stable error code the engine gives, and what kind of failure each is. One enum, so the
//! server's wire codes and the CLI's exit statuses are exhaustive matches, not string guesses.

use serde::{Deserialize, Serialize};

/// What a failure asks of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An input file (model, adapter, dataset, tokenizer, results) is not what it must be.
    Input,
    /// The settings (options, recipe, schedule) ask for something impossible.
    Settings,
    /// Stopped on request; nothing was written.
    Cancelled,
    /// The machine: a file could not be read or written.
    Io,
    /// The computation itself failed (a kernel error, a loss that is not finite).
    Compute,
}

macro_rules! codes {
    ($($variant:ident => ($text:literal, $kind:ident)),+ $(,)?) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Code { $($variant),+ }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text),+ }
            }

            pub fn kind(self) -> Kind {
                match self { $(Code::$variant => Kind::$kind),+ }
            }
        }
    };
}

codes! {
    InvalidSafetensors => ("invalid_safetensors", Input),
    NonFiniteWeights => ("non_finite_weights", Input),
    InvalidModel => ("invalid_model", Input),
    InvalidAdapter => ("invalid_adapter", Input),
    AdapterMismatch => ("adapter_mismatch", Input),
    InvalidDataset => ("invalid_dataset", Input),
    InvalidTokenizer => ("invalid_tokenizer", Input),
    InvalidGguf => ("invalid_gguf", Input),
    UnsupportedGgufType => ("unsupported_gguf_type", Input),
    InvalidResults => ("invalid_results", Input),
    IncompatibleExpert => ("incompatible_expert", Input),
    IncompatibleModel => ("incompatible_model", Input),
    ShapeMismatch => ("shape_mismatch", Input),
    MissingTensor => ("missing_tensor", Input),
    UnsupportedDtype => ("unsupported_dtype", Input),
    BaseMismatch => ("base_mismatch", Input),
    EmptyTask => ("empty_task", Input),
    InvalidOption => ("invalid_option", Settings),
    InvalidRecipe => ("invalid_recipe", Settings),
    InvalidInput => ("invalid_input", Settings),
    UnknownMetric => ("unknown_metric", Settings),
    ResumeMismatch => ("resume_mismatch", Settings),
    NoPastData => ("no_past_data", Settings),
    BadReplayFraction => ("bad_replay_fraction", Settings),
    BadSplitFraction => ("bad_split_fraction", Settings),
    SplitTooSmall => ("split_too_small", Settings),
    NoTasks => ("no_tasks", Settings),
    TooFewRounds => ("too_few_rounds", Settings),
    RaggedMatrix => ("ragged_matrix", Settings),
    BaseLength => ("base_length", Settings),
    NotFinite => ("not_finite", Settings),
    InvalidRoundOfTask => ("invalid_round_of_task", Settings),
    NoEarlierTask => ("no_earlier_task", Settings),
    OutputExists => ("output_exists", Settings),
    Cancelled => ("cancelled", Cancelled),
    IoError => ("io_error", Io),
    ComputeError => ("compute_error", Compute),
    NonFiniteLoss => ("non_finite_loss", Compute),
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So `assert_eq!(err.code(), "cancelled")` reads as it did when codes were strings.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialise_as_their_text() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_string())
            );
        }
    }
}
