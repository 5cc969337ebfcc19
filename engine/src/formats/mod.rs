//! Hugging Face checkpoints and PEFT adapters read and written tensor by tensor.
//!
//! The workspace forbids `unsafe`, so files are not memory-mapped: each tensor is read with
//! positional reads (`pread`) straight into an `f32` buffer, in pieces, when it is needed. A merge
//! thus holds a few tensors per input in memory, never a whole model, and the page cache does the
//! rest.

pub mod checkpoint;
pub mod dtype;
pub mod lora;
pub mod output;
pub mod staging;
pub mod stfile;
pub mod writer;
pub mod yaml;

pub use checkpoint::Checkpoint;
pub use dtype::OutDtype;
pub use lora::{LoraAdapter, LoraPair};
pub use staging::Staging;
pub use writer::{CheckpointWriter, SafetensorsWriter, TensorSpec};
