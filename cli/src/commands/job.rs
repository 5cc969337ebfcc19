//! Runs an engine job on this machine for `clreg local merge|mix|train|eval`: parse → spec →
//! [`run_local`] → print. Ctrl-C cancels between steps (exit 130, nothing written).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clreg_engine::job::{self, Device, JobEvent, JobOutput, JobSpec, RunContext};
use clreg_engine::merge::record::Digests;

use crate::error::LocalError;

/// Runs `spec` on a blocking thread, handing every event to `on_event`.
pub async fn run_local(
    spec: JobSpec,
    digests: Digests,
    on_event: impl Fn(JobEvent) + Send + Sync + 'static,
) -> Result<JobOutput> {
    let (cancel, on_ctrl_c) = cancel_on_ctrl_c();
    let result = tokio::task::spawn_blocking(move || {
        let ctx = RunContext {
            cancel: &cancel,
            events: &on_event,
            digests,
            device: Device::Cpu,
        };
        job::run(&spec, &ctx)
    })
    .await?;
    on_ctrl_c.abort();
    result.map_err(|e| LocalError::engine(e.code, e.message).into())
}

/// A flag Ctrl-C sets, and the task that waits for it (abort it when done).
pub(crate) fn cancel_on_ctrl_c() -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let task = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    (cancel, task)
}
