//! clreg's tensor work: checks that what users push is a well-formed model, adapter or dataset.
//!
//! Everything here is synchronous and reads only what it must (safetensors headers, JSON
//! configs); the server calls it from blocking threads, the CLI directly.

pub mod adapter;
pub mod bwt;
pub mod code;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod finite_scan;
pub mod formats;
pub mod gguf;
pub mod inspect;
pub mod job;
pub mod merge;
pub mod model;
pub mod moe;
pub mod process_env;
pub mod provenance;
pub mod safetensors_header;
pub mod synth;
pub mod tiny;
pub mod trace;
pub mod train;

pub use code::{Code, Kind};
pub use error::FormatError;
