//! `origin-sim`: a deliberately slow HTTP origin that saturates like a database.
//!
//! Every `GET /items/{id}` runs a real SQL query through an sqlx pool and then
//! keeps its pool connection for the configured latency, so once the pool is
//! full requests queue and latency grows, the way a database saturates. See
//! the "Interface contract → origin-sim" section of the design for the
//! endpoints, and the README's metrics table for the metrics.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = origin_sim::Config { latency_ms: 50, items: 100, ..Default::default() };
//! let (addr, _task) = origin_sim::spawn(config).await?;
//! println!("origin at http://{addr}/items/1");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
mod db;
mod routes;
pub mod scenario;
mod stats;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use scenario::RequestRecord;
pub use stats::QueryRecord;
pub use telemetry::install_prometheus;

/// Validates `config`, opens (and seeds) the database and returns the router.
///
/// `metrics` is what `GET /metrics` renders; pass [`install_prometheus`]'s
/// handle. The database (including the temporary file behind
/// `sqlite::memory:`) lives as long as the returned router.
pub async fn build_app(config: &Config, metrics: PrometheusHandle) -> anyhow::Result<axum::Router> {
    config.validate()?;
    let db = db::Database::open(&config.database, config.db_connections, config.items).await?;
    let state = routes::AppState::new(config, db, metrics)?;
    let scenario = scenario::router(config.stats_capacity);
    Ok(routes::router(Arc::new(state)).merge(scenario))
}

/// Builds the app and serves it on `listener` until `shutdown` completes,
/// then drains open connections.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = build_app(&config, metrics).await?;
    serve_app(app, listener, &config, shutdown).await
}

async fn serve_app(
    app: axum::Router,
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(
        %addr,
        database = %db::redact(&config.database),
        items = config.items,
        latency_ms = config.latency_ms,
        db_connections = config.db_connections,
        "origin-sim listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("origin-sim stopped");
    Ok(())
}

/// For tests: binds `127.0.0.1:0` (ignoring `config.listen`), serves in a
/// spawned task and returns the bound address and the task handle (abort it
/// to stop). Database errors are returned here, before the task starts.
pub async fn spawn(config: Config) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    let metrics = install_prometheus();
    let app = build_app(&config, metrics).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let task =
        tokio::spawn(
            async move { serve_app(app, listener, &config, std::future::pending()).await },
        );
    Ok((addr, task))
}
