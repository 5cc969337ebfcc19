//! Mixture-of-experts mixing, as mergekit-moe and moetify do it: full fine-tunes into the
//! Mixtral layout ([`mix_mixtral`]), LoRA adapters into LoRA-MoE bundles ([`mix_lora`]),
//! router initialisation from prompts ([`router`]) and router training ([`train`]).

pub mod build;
pub mod decompose;
pub mod error;
pub mod lora_moe;
pub mod recipe;
pub mod record;
pub mod router;
pub mod train;

pub use build::{MixReport, mix_mixtral};
pub use error::MoeError;
pub use lora_moe::{LoraMoeBundle, load_bundle, mix_lora};
pub use recipe::{GateMode, MoePlan, MoeRecipe};
pub use record::{MIX_RECORD, MixRecord, ParamCounts};
pub use train::{RouterSettings, RouterTraining, TrainProgress};
