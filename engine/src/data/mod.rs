//! Training data for continue-training: TRACE examples, splits, tokenisation, batches and the
//! replay/joint mixtures of tasks.

pub mod batch;
pub mod encode;
pub mod example;
pub mod schedule;
pub mod split;

pub use batch::{Batch, pack_batches, pad_batch};
pub use encode::{EncodeOptions, EncodeStats, Encoded, Truncation, encode, encode_all, eos_id};
pub use example::{Example, parse_trace, read_trace};
pub use schedule::{Draw, Mixture, Schedule, ScheduleError};
pub use split::{SplitError, Splits, split};
