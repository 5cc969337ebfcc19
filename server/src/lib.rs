//! The clreg registry server: HTTP API, authorization, storage, lineage and the ledger.

pub mod admin;
pub mod artifacts;
pub mod auth;
pub mod authz;
pub mod blobs;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod evaluations;
pub mod gc;
pub mod jobs;
pub mod ledger;
pub mod lineage;
pub mod policy;
pub mod purge;
pub mod quota;
pub mod ratelimit;
pub mod routes;
pub mod series;
pub mod state;
pub mod transparency;
pub mod uploads;

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
                match uploads::sweep_expired(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired upload sessions removed"),
                    Err(e) => tracing::warn!(error = e.message, "upload sweep failed"),
                }
                match purge::run(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purges = n, "dataset content purged"),
                    Err(e) => tracing::warn!(error = e.message, "purge run failed"),
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
    let limits = (
        Duration::from_secs(state.config.header_read_timeout_secs.max(1)),
        state.config.max_connections.max(1),
    );
    let app = routes::app(state);
    let result = serve_connections(listener, app, limits, shutdown).await;
    sweeper.abort();
    collector.abort();
    let _ = stop_workers.send(true);
    for w in workers {
        let _ = w.await;
    }
    result
}

/// Accepts connections until `shutdown` resolves, then drains them. Each connection gets a
/// header-read timeout (a client has that long to send a request's headers, which also ends
/// idle keep-alive connections), and at most `max_connections` are open: more are closed at
/// once. (axum::serve runs hyper without a timer, so its header timeouts never fire.)
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    (header_read_timeout, max_connections): (Duration, usize),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1 only: the header-read timeout then runs from a connection's first byte (the auto
    // builder's version sniffing has none, and HTTP/2 has no idle limit here).
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "connection limit reached; closing a new connection");
            continue;
        };
        // The peer's address for handlers that limit by it (the token exchange).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = builder
            .serve_connection(TokioIo::new(socket), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // In-flight requests finish; a download that would outlast this is cut.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown began; closing them");
    }
    Ok(())
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
