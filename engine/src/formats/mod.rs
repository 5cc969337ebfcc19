//! Hugging Face checkpoints and PEFT adapters read and written tensor by tensor.
//!
//! Input files are memory-mapped ([`mapped`], the workspace's one use of `unsafe`): a tensor is
//! decoded from the page cache into an `f32` buffer when it is needed, or used in place when it
//! is aligned little-endian `F32`, and its pages are released once it is consumed. A merge thus
//! holds a few tensors per input in memory, never a whole model.

pub mod checkpoint;
pub mod dtype;
pub mod lora;
pub mod mapped;
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
