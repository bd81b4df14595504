//! Prometheus recorder and the origin's metric names (listed in the README's metrics table).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter, label `status`: `/items` queries served.
pub const QUERIES_TOTAL: &str = "origin_queries_total";
/// Gauge: queries holding or waiting for a pool connection.
pub const INFLIGHT_QUERIES: &str = "origin_inflight_queries";
/// Histogram, label `status`: request start (pool wait included) to response.
pub const QUERY_DURATION_SECONDS: &str = "origin_query_duration_seconds";
/// Histogram: time spent waiting for a pool connection.
pub const POOL_WAIT_SECONDS: &str = "origin_pool_wait_seconds";
/// Counter: `PUT /items/{id}` version bumps.
pub const WRITES_TOTAL: &str = "origin_writes_total";

/// Histogram buckets (seconds) for every `*_seconds` metric: 1 ms … 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
    2.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram buffers are drained when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .expect("bucket list is not empty")
}

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// Safe to call any number of times, from any crate: the first call installs
/// and later calls return the same handle. If some other recorder was already
/// installed as the global one (e.g. by another crate in the same test
/// process), this logs a warning and returns the handle of a recorder that is
/// *not* installed: `/metrics` then renders nothing, but nothing panics.
pub fn install_prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => {
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("prometheus-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(UPKEEP_INTERVAL);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot start the metrics upkeep thread: {e}");
                }
                describe();
                handle
            }
            Err(e) => {
                tracing::warn!(
                    "a global metrics recorder is already installed ({e}); \
                     origin-sim's /metrics will render an empty, detached recorder"
                );
                builder().build_recorder().handle()
            }
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(QUERIES_TOTAL, "/items queries served, by HTTP status");
    describe_gauge!(
        INFLIGHT_QUERIES,
        "queries holding or waiting for a pool connection"
    );
    describe_histogram!(
        QUERY_DURATION_SECONDS,
        Unit::Seconds,
        "request start (including pool wait) to response"
    );
    describe_histogram!(
        POOL_WAIT_SECONDS,
        Unit::Seconds,
        "time spent waiting for a pool connection"
    );
    describe_counter!(WRITES_TOTAL, "PUT /items/{id} version bumps");
}
