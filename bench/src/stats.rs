//! Measurement helpers: latency histograms, cache-status counters, and the
//! analysis of origin-sim's query log (per-second buckets, hot-key bursts per
//! TTL boundary, statuses and body bytes, queries in flight at once).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cache_status::CacheClass;

/// Requests slower than this are counted separately (`over_150ms`): steadier
/// than a percentile on a noisy machine (see the measurement protocol).
pub const SLOW_THRESHOLD: Duration = Duration::from_millis(150);

/// A latency histogram in microseconds (up to an hour) with `sigfig` digits.
pub fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, sigfig).expect("static bounds are valid")
}

/// Latency of one class of requests, accumulated in an hdrhistogram (µs).
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
    slow: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            hist: new_histogram(3),
            slow: 0,
        }
    }
}

impl LatencyRecorder {
    /// Record one request's latency.
    pub fn record(&mut self, latency: Duration) {
        self.hist.saturating_record(duration_us(latency));
        self.slow += u64::from(latency > SLOW_THRESHOLD);
    }

    /// The 99th percentile so far in milliseconds (0 when empty).
    pub fn p99_ms(&self) -> f64 {
        us_to_ms(self.hist.value_at_quantile(0.99))
    }

    /// The summary of what was recorded.
    pub fn summary(&self) -> LatencyStats {
        let (h, q) = (&self.hist, |q| us_to_ms(self.hist.value_at_quantile(q)));
        LatencyStats {
            count: h.len(),
            mean_ms: if h.is_empty() {
                0.0
            } else {
                round(h.mean() / 1000.0, 3)
            },
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: us_to_ms(h.max()),
            over_150ms: self.slow,
        }
    }
}

/// Latency percentiles of one class of requests (all / hot key / other keys).
/// Latency is first send to final answer (including retries and back-off);
/// failed requests are included with the time they took to fail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests slower than [`SLOW_THRESHOLD`] (150 ms).
    pub over_150ms: u64,
}

/// Cache outcome counts, from the `Cache-Status` header of final answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCounts {
    /// Responses with a `hit` parameter (fresh or stale).
    pub hits: u64,
    /// Hits with a negative `ttl` (served stale); included in `hits`.
    pub stale_hits: u64,
    /// Responses with `fwd=` and no `hit` (went to the origin).
    pub misses: u64,
    /// Responses marked `collapsed` (shared another request's rebuild).
    pub collapsed: u64,
    /// Responses without a `Cache-Status` header (e.g. straight from the origin).
    pub unknown: u64,
    /// `misses / (hits + misses)`; `null` when there was neither.
    pub miss_rate: Option<f64>,
    /// Counts per `fwd` value (`miss`, `bypass`, `stale`, …).
    pub fwd: BTreeMap<String, u64>,
}

impl CacheCounts {
    /// Count one classified response.
    pub fn add(&mut self, c: &CacheClass) {
        self.unknown += u64::from(c.unknown);
        self.hits += u64::from(c.hit);
        self.stale_hits += u64::from(c.stale);
        self.misses += u64::from(c.miss);
        self.collapsed += u64::from(c.collapsed);
        if let Some(f) = &c.fwd {
            *self.fwd.entry(f.clone()).or_default() += 1;
        }
        let seen = self.hits + self.misses;
        self.miss_rate = (seen > 0).then(|| round(self.misses as f64 / seen as f64, 6));
    }

    /// Hit ratio in percent over hits + misses (0 when neither).
    pub fn hit_percent(&self) -> f64 {
        100.0 - self.miss_rate.map_or(100.0, |m| m * 100.0)
    }
}

/// One query from origin-sim's `GET /stats/queries`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginQuery {
    /// Start of the query, ms since the Unix epoch.
    pub t_ms: u64,
    /// Item id queried.
    pub id: u64,
    /// HTTP status origin-sim answered (304 to a matching conditional GET).
    #[serde(default)]
    pub status: u16,
    /// How long the query took, ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// Body bytes sent (0 for a 304; 0 from an origin-sim that predates it).
    #[serde(default)]
    pub bytes: u64,
}

/// The body of origin-sim's `GET /stats/queries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OriginQueries {
    pub queries: Vec<OriginQuery>,
}

/// Hot-key origin queries grouped into bursts, one per TTL boundary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bursts {
    /// Gap (ms) above which two consecutive hot-key queries start a new burst.
    pub gap_ms: u64,
    /// Number of bursts (TTL boundaries that reached the origin, the cold fill included).
    pub boundaries: u64,
    /// Mean origin queries per burst (0 when none).
    pub mean_per_boundary: f64,
    /// Largest burst.
    pub max_per_boundary: u64,
    /// Size of each burst in time order.
    pub sizes: Vec<u64>,
}

/// Bursts are separated by gaps longer than a TTL divided by this…
pub const BURST_GAP_TTL_DIVISOR: u32 = 4;
/// …but at most this (the gap without a TTL).
pub const BURST_GAP_CAP: Duration = Duration::from_millis(500);

/// The gap that separates bursts: `min(ttl / 4, 500 ms)`, or 500 ms without a
/// TTL. A herd's queries start within one rebuild time of each other (ms
/// apart); successive boundaries are a TTL apart. A quarter TTL, capped at
/// 500 ms, separates the two even for early refreshes.
pub fn burst_gap(ttl: Option<Duration>) -> Duration {
    ttl.map_or(BURST_GAP_CAP, |t| {
        (t / BURST_GAP_TTL_DIVISOR).min(BURST_GAP_CAP)
    })
}

/// Group query start times (ms, any order) into bursts: sorted, a new burst
/// begins wherever the gap to the previous start exceeds `gap`.
pub fn group_bursts(times_ms: &[u64], gap: Duration) -> Bursts {
    let gap_ms = gap.as_millis() as u64;
    let mut sorted = times_ms.to_vec();
    sorted.sort_unstable();
    let mut sizes: Vec<u64> = Vec::new();
    for (i, t) in sorted.iter().enumerate() {
        match sizes.last_mut() {
            Some(last) if t - sorted[i - 1] <= gap_ms => *last += 1,
            _ => sizes.push(1),
        }
    }
    let mean = sorted.len() as f64 / sizes.len().max(1) as f64;
    Bursts {
        gap_ms,
        boundaries: sizes.len() as u64,
        mean_per_boundary: round(mean, 3),
        max_per_boundary: sizes.iter().copied().max().unwrap_or(0),
        sizes,
    }
}

/// The most queries in flight at the same time, from their start and
/// duration (half-open intervals: one ending as another starts do not overlap).
pub fn max_in_flight<'a>(queries: impl IntoIterator<Item = &'a OriginQuery>) -> u64 {
    let mut edges: Vec<(u64, i64)> = queries
        .into_iter()
        .flat_map(|q| [(q.t_ms, 1), (q.t_ms + q.duration_ms, -1)])
        .collect();
    edges.sort_unstable();
    let running = edges.iter().scan(0i64, |n, (_, d)| {
        *n += d;
        Some(*n)
    });
    running.max().unwrap_or(0).max(0) as u64
}

/// What origin-sim saw during the load window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginSummary {
    /// The origin base URL queried.
    pub url: String,
    /// Window start (load start), ms since the Unix epoch.
    pub window_start_ms: u64,
    /// Window end (load end), ms since the Unix epoch.
    pub window_end_ms: u64,
    /// Origin queries that started inside the window.
    pub total_queries: u64,
    /// Of those, queries for the hot key.
    pub hot_queries: u64,
    /// Most origin queries started in any one second of the window.
    pub max_queries_per_second: u64,
    /// Origin queries per status code (`304`: revalidated without a body).
    pub status: BTreeMap<String, u64>,
    /// Origin queries per status code per 1 s bucket from the window start.
    #[serde(default)]
    pub status_per_second: BTreeMap<String, Vec<u64>>,
    /// Body bytes origin-sim sent for those queries.
    #[serde(default)]
    pub body_bytes: u64,
    /// Hot-key queries grouped per TTL boundary.
    pub hot_bursts: Bursts,
    /// Hot-key queries per TTL of wall time (`hot_queries / (window / ttl)`);
    /// `None` without `--ttl`. Early refreshes (XFetch) can exceed 1 here while
    /// every boundary still costs one query.
    pub hot_queries_per_ttl: Option<f64>,
    /// Queries per 1 s bucket from the window start (index = second).
    pub per_second: Vec<u64>,
    /// Hot-key queries per 1 s bucket from the window start.
    pub hot_per_second: Vec<u64>,
}

/// Analyse origin queries: keep those with `t_ms` in `[start_ms, end_ms]`,
/// bucket them per second from `start_ms`, and group hot-key queries into bursts.
pub fn analyse_origin(
    url: &str,
    queries: &[OriginQuery],
    (start_ms, end_ms): (u64, u64),
    hot_key: u64,
    ttl: Option<Duration>,
) -> OriginSummary {
    let seconds = ((end_ms.saturating_sub(start_ms)) / 1000 + 1) as usize;
    let mut o = OriginSummary {
        url: url.to_string(),
        window_start_ms: start_ms,
        window_end_ms: end_ms,
        per_second: vec![0; seconds],
        hot_per_second: vec![0; seconds],
        ..OriginSummary::default()
    };
    let mut hot_times = Vec::new();
    for q in queries
        .iter()
        .filter(|q| (start_ms..=end_ms).contains(&q.t_ms))
    {
        let s = ((q.t_ms - start_ms) / 1000) as usize;
        o.per_second[s] += 1;
        if q.id == hot_key {
            o.hot_per_second[s] += 1;
            hot_times.push(q.t_ms);
        }
        *o.status.entry(q.status.to_string()).or_default() += 1;
        let per_second = o.status_per_second.entry(q.status.to_string());
        per_second.or_insert_with(|| vec![0; seconds])[s] += 1;
        o.body_bytes += q.bytes;
        o.total_queries += 1;
    }
    o.hot_queries = hot_times.len() as u64;
    o.max_queries_per_second = o.per_second.iter().copied().max().unwrap_or(0);
    o.hot_bursts = group_bursts(&hot_times, burst_gap(ttl));
    o.hot_queries_per_ttl = ttl.filter(|t| !t.is_zero() && end_ms > start_ms).map(|t| {
        round(
            o.hot_queries as f64 * t.as_millis() as f64 / (end_ms - start_ms) as f64,
            3,
        )
    });
    o
}

/// A duration in whole microseconds, saturating.
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to milliseconds, rounded to 3 decimals.
pub fn us_to_ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 3)
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
