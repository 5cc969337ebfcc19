//! Model merging, streamed tensor by tensor: linear, task arithmetic, TIES and DARE in the
//! mergekit and PEFT flavours, LoRA into full weights, and LoRA → LoRA (`cat`, `svd`,
//! `peft_ab`), as the method reference defines them. Entry point: [`run_recipe`].

pub mod error;
pub mod linear;
pub mod lora_out;
pub mod mergekit;
pub mod peft;
pub mod recipe;
pub mod record;
pub mod run;
pub mod sparsify;
pub mod svd;
pub mod task;

pub use error::MergeError;
pub use recipe::{Flavour, MergePlan, Method, Recipe};
pub use run::{MergeReport, Progress, merge_and_unload, run_recipe};
