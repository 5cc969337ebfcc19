//! The clreg registry server: HTTP API, authorization, storage, lineage and the ledger.

pub mod admin;
pub mod artifacts;
pub mod auth;
pub mod authz;
pub mod blobs;
pub mod config;
pub mod db;
pub mod error;
pub mod evaluations;
pub mod gc;
pub mod jobs;
pub mod ledger;
pub mod policy;
pub mod quota;
pub mod routes;
pub mod series;
pub mod state;

use std::future::Future;
use std::time::Duration;

pub use config::Config;
pub use state::AppState;

/// Serves the application on an already-bound listener until `shutdown` resolves, then drains
/// in-flight requests and stops the in-process workers (`config.workers`; a running job is
/// cancelled between steps and recorded as such). Tests bind 127.0.0.1:0 and pass the listener in.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tick.tick().await;
                match blobs::sweep_expired(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired upload sessions removed"),
                    Err(e) => tracing::warn!(error = e.message, "upload sweep failed"),
                }
            }
        }
    });
    let collector = tokio::spawn({
        let state = state.clone();
        async move {
            let every = state.config.blob_gc_every_secs;
            if every == 0 {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await; // not at start: after the first period
            loop {
                tick.tick().await;
                let grace = chrono::Duration::seconds(
                    i64::try_from(state.config.blob_gc_grace_secs).unwrap_or(i64::MAX / 2),
                );
                match gc::collect(&state, grace, true).await {
                    Ok(r) if r.deleted > 0 => {
                        tracing::info!(
                            blobs = r.deleted,
                            bytes = r.bytes,
                            "unreferenced blobs collected"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = e.message, "blob collection failed"),
                }
            }
        }
    });
    let (stop_workers, workers) = start_workers(&state, state.config.workers, "serve");
    let app = routes::app(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    collector.abort();
    let _ = stop_workers.send(true);
    for w in workers {
        let _ = w.await;
    }
    result
}

/// Starts `n` job workers named `<host-ish prefix>-<pid>-<i>`; send `true` to stop them.
pub fn start_workers(
    state: &AppState,
    n: usize,
    prefix: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handles = (0..n)
        .map(|i| {
            let name = format!(
                "{prefix}-{}-{i}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            tokio::spawn(jobs::worker::run(state.clone(), name, stopped.clone()))
        })
        .collect();
    (stop, handles)
}
