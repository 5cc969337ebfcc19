//! Training data for continue-training: TRACE examples, splits, tokenisation, batches and the
//! replay/joint mixtures of tasks.

pub mod example;

pub use example::{Example, parse_trace, read_trace};
