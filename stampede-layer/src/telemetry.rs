//! What the stack reports about itself: metric names, help texts and
//! start-up registration, the herd's fingerprint settings, and the hot-key
//! report.
//!
//! The layers record through the `metrics` facade; the binary chooses the
//! exporter. [`register`] describes every metric and creates its zero-valued
//! series up front, so dashboards and alert rules see `0`, not "no data",
//! before the first miss, shed or store error. [`HotKeys`] (fed by
//! [`StampedeLayer::hot_keys`](crate::StampedeLayer::hot_keys)) reports the
//! most requested keys.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use stampede_layer::telemetry::{self, HotKeys};
//! use stampede_layer::{MemoryStore, StampedeLayer};
//!
//! telemetry::register("memory"); // zero-valued series, once at start-up
//! let hot = HotKeys::new(10, Duration::from_secs(60), 10_000);
//! let layer = StampedeLayer::new(Arc::new(MemoryStore::default())).hot_keys(hot.clone());
//! // Later, for an admin endpoint:
//! for key in hot.top() {
//!     println!("{} {:.1}/s", key.key, key.requests_per_second);
//! }
//! # let _ = layer;
//! ```

pub use crate::fingerprint::{
    DEFAULT_HERD_WINDOW, REBUILDS_BUCKETS, REBUILDS_PER_KEY_WINDOW, STALE_AGE_BUCKETS,
    STALE_SERVED_AGE, set_herd_window,
};
pub use crate::hot_keys::{HotKey, HotKeys};
use crate::status::Outcome;
use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use std::time::Duration;

/// Outcome label values of `stampede_requests_total`.
pub(crate) const OUTCOMES: [&str; 8] = [
    "hit",
    "miss",
    "stale",
    "collapsed",
    "lock_wait_hit",
    "negative_hit",
    "shed",
    "bypass",
];

/// Describe every metric and create its zero-valued series for `backend`.
pub fn register(backend: &'static str) {
    describe_counter!(
        "stampede_requests_total",
        "Client requests by how the cache answered them"
    );
    describe_histogram!(
        "stampede_request_duration_seconds",
        Unit::Seconds,
        "Time from request to response headers, by outcome"
    );
    describe_counter!(
        "stampede_origin_requests_total",
        "Requests sent to the origin, by status code (or error)"
    );
    describe_histogram!(
        "stampede_rebuild_duration_seconds",
        Unit::Seconds,
        "Time one origin rebuild took"
    );
    describe_histogram!(
        "stampede_lock_wait_seconds",
        Unit::Seconds,
        "Time a lock loser waited for the winner's fill"
    );
    describe_counter!(
        "stampede_lock_acquisitions_total",
        "Rebuild-lock attempts by result"
    );
    describe_counter!(
        "stampede_fencing_rejections_total",
        "Cache writes refused because a newer fencing token already wrote"
    );
    describe_counter!(
        "stampede_lock_renewals_total",
        "Lease renewals of held rebuild locks, by result"
    );
    describe_counter!(
        "stampede_fill_deadline_exceeded_total",
        "Rebuilds cut at the whole-fill deadline"
    );
    describe_counter!(
        "stampede_background_refreshes_total",
        "Background refreshes started, by trigger"
    );
    describe_gauge!(
        "stampede_inflight_rebuilds",
        "Origin rebuilds in flight in this instance"
    );
    describe_counter!(
        "stampede_store_errors_total",
        "Failed store operations (decode failures are treated as misses)"
    );
    describe_gauge!(
        "stampede_store_circuit_open",
        "1 while the store's circuit breaker routes to the in-process fallback"
    );
    describe_counter!(
        "stampede_shed_total",
        "Requests the overload gate answered 503"
    );
    describe_counter!(
        "stampede_revalidated_total",
        "Stale entries the origin confirmed with 304 Not Modified (no body transferred)"
    );
    describe_counter!(
        "stampede_uncacheable_total",
        "Origin answers that could be neither stored nor shared, by reason"
    );
    describe_counter!(
        "stampede_near_cache_hits_total",
        "Store reads answered from the near cache (no Redis round trip)"
    );
    describe_counter!(
        "stampede_near_cache_misses_total",
        "Store reads the near cache passed to the store of record"
    );
    describe_counter!(
        "stampede_near_cache_invalidations_total",
        "Near-cache invalidations: local deletes, deletes announced by other instances, full resets"
    );
    describe_gauge!(
        "stampede_hot_key_requests_per_second",
        "Request rate of the hottest keys, by rank"
    );

    crate::fingerprint::register();
    for outcome in OUTCOMES {
        metrics::counter!("stampede_requests_total", "outcome" => outcome).increment(0);
        let _ = metrics::histogram!("stampede_request_duration_seconds", "outcome" => outcome);
    }
    metrics::counter!("stampede_origin_requests_total", "status" => "200").increment(0);
    let _ = metrics::histogram!("stampede_rebuild_duration_seconds");
    for result in ["filled", "timeout"] {
        let _ = metrics::histogram!("stampede_lock_wait_seconds", "result" => result);
    }
    for result in ["acquired", "contended", "error"] {
        metrics::counter!("stampede_lock_acquisitions_total", "result" => result).increment(0);
    }
    metrics::counter!("stampede_fencing_rejections_total").increment(0);
    for result in ["renewed", "lost", "error"] {
        metrics::counter!("stampede_lock_renewals_total", "result" => result).increment(0);
    }
    metrics::counter!("stampede_fill_deadline_exceeded_total").increment(0);
    for trigger in ["swr", "xfetch"] {
        metrics::counter!("stampede_background_refreshes_total", "trigger" => trigger).increment(0);
    }
    metrics::gauge!("stampede_inflight_rebuilds").increment(0.0);
    for op in ["get", "put", "delete", "lock", "decode"] {
        metrics::counter!("stampede_store_errors_total", "backend" => backend, "op" => op)
            .increment(0);
    }
    metrics::gauge!("stampede_store_circuit_open", "backend" => backend).set(0.0);
    for reason in ["inflight", "queue", "background"] {
        metrics::counter!("stampede_shed_total", "reason" => reason).increment(0);
    }
    metrics::counter!("stampede_revalidated_total").increment(0);
    for reason in crate::policy::NotShareable::ALL {
        metrics::counter!("stampede_uncacheable_total", "reason" => reason.as_str()).increment(0);
    }
    metrics::counter!("stampede_near_cache_hits_total").increment(0);
    metrics::counter!("stampede_near_cache_misses_total").increment(0);
    for source in ["local", "remote", "reset"] {
        metrics::counter!("stampede_near_cache_invalidations_total", "source" => source)
            .increment(0);
    }
    for rank in 1..=10 {
        metrics::gauge!("stampede_hot_key_requests_per_second", "rank" => rank.to_string())
            .set(0.0);
    }
}

/// The per-request series (`stampede_requests_total` and
/// `stampede_request_duration_seconds` by outcome), looked up once: a
/// request records through these handles instead of resolving name and
/// labels in the recorder's registry each time. Handles belong to the
/// recorder current when [`RequestMetrics::new`] runs.
#[derive(Clone, Debug)]
pub(crate) struct RequestMetrics {
    requests: [Counter; 8],
    durations: [Histogram; 8],
}

impl RequestMetrics {
    /// Look up every outcome's handles in the current recorder.
    pub(crate) fn new() -> Self {
        Self {
            requests: Outcome::ALL.map(|o| {
                metrics::counter!("stampede_requests_total", "outcome" => o.as_str())
            }),
            durations: Outcome::ALL.map(|o| {
                metrics::histogram!("stampede_request_duration_seconds", "outcome" => o.as_str())
            }),
        }
    }

    /// Count one request answered with `outcome` after `elapsed`.
    pub(crate) fn record(&self, outcome: Outcome, elapsed: Duration) {
        self.requests[outcome.index()].increment(1);
        self.durations[outcome.index()].record(elapsed.as_secs_f64());
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn cached_handles_record_by_outcome() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let m = RequestMetrics::new();
            m.record(Outcome::Hit, Duration::from_millis(1));
            m.record(Outcome::Hit, Duration::from_millis(2));
            m.record(Outcome::Stale, Duration::from_millis(3));
        });
        let counts: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) if n > 0 => {
                    let label = key.key().labels().next()?.value().to_owned();
                    Some((label, n))
                }
                _ => None,
            })
            .collect();
        let mut counts = counts;
        counts.sort();
        assert_eq!(counts, [("hit".into(), 2), ("stale".into(), 1)]);
    }
}
