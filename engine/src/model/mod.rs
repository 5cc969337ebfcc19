//! A Llama-family causal LM on candle with LoRA hooks: loading Hugging Face checkpoints,
//! full-sequence and KV-cached forward passes, PEFT adapters, and text generation.
//!
//! The default forward pass is built from differentiable ops only, so a loss reaches every
//! trainable LoRA parameter; [`OpsMode::Fast`] swaps in candle's fused kernels for inference.

mod adapters;
mod error;
pub mod fused;
mod generate;
mod llama;
mod load;
mod lora;
pub mod moe;
pub mod ops;

pub use error::ModelError;
pub use generate::{GenerateOptions, generate, generate_ids, load_tokenizer};
pub use llama::{Attention, Block, Cache, LINEAR_MODULES, Llama, Mlp};
pub use load::{load, read_config, read_tensors, weight_files};
pub use lora::{DropoutStream, LoraAdapter, LoraDropout, LoraLinear};
pub use moe::{FeedForward, GateNorm, LoraMoe, SparseMoe};
pub use ops::OpsMode;
