//! Continue-training on the engine's Llama model: sequential LoRA (merged or stacked), full
//! fine-tuning, O-LoRA, and replay or joint data schedules, with AdamW, checkpoints that resume
//! bit for bit, and a `clreg_train.json` record of everything that shaped the result.
//!
//! The server schedules the same [`train`] function the CLI's `clreg local train` calls.

mod checkpoint;
pub mod config;
mod error;
mod grads;
mod model_setup;
pub mod olora;
pub mod optim;
mod record;
mod run;
mod shards;

pub use config::{
    DataSchedule, LoraOptions, LrSchedule, Method, OloraOptions, OrthVariant, SequentialMode,
    TrainConfig,
};
pub use error::TrainError;
pub use record::{DataCounts, DataInput, RECORD, StepRecord, TrainRecord};
pub use run::{TrainEvent, TrainJob, train};
