//! Measurement helpers: latency histograms, cache-status counters, and the
//! analysis of origin-sim's query log (per-second buckets, hot-key bursts per
//! TTL boundary).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cache_status::CacheClass;

/// Requests slower than this are counted separately (`over_150ms`): steadier
/// than a percentile on a noisy machine (see the measurement protocol).
pub const SLOW_THRESHOLD: Duration = Duration::from_millis(150);

/// Highest latency a histogram records, in microseconds (larger values saturate).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A new latency histogram in microseconds with `sigfig` significant digits.
pub fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig)
        .expect("static histogram bounds are valid")
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
        if latency > SLOW_THRESHOLD {
            self.slow += 1;
        }
    }

    /// The 99th percentile so far in milliseconds (0 when empty).
    pub fn p99_ms(&self) -> f64 {
        us_to_ms(self.hist.value_at_quantile(0.99))
    }

    /// The summary of what was recorded.
    pub fn summary(&self) -> LatencyStats {
        let h = &self.hist;
        let empty = h.is_empty();
        LatencyStats {
            count: h.len(),
            mean_ms: if empty {
                0.0
            } else {
                round3(h.mean() / 1000.0)
            },
            p50_ms: us_to_ms(h.value_at_quantile(0.50)),
            p90_ms: us_to_ms(h.value_at_quantile(0.90)),
            p99_ms: us_to_ms(h.value_at_quantile(0.99)),
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
    /// Requests recorded.
    pub count: u64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
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
        self.update_rate();
    }

    fn update_rate(&mut self) {
        let denom = self.hits + self.misses;
        self.miss_rate = (denom > 0).then(|| round6(self.misses as f64 / denom as f64));
    }

    /// Hit ratio in percent over hits + misses (0 when neither).
    pub fn hit_percent(&self) -> f64 {
        let denom = self.hits + self.misses;
        if denom == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / denom as f64
        }
    }
}

/// One query from origin-sim's `GET /stats/queries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginQuery {
    /// Start of the query, ms since the Unix epoch.
    pub t_ms: u64,
    /// Item id queried.
    pub id: u64,
    /// HTTP status origin-sim answered.
    #[serde(default)]
    pub status: u16,
    /// How long the query took, ms.
    #[serde(default)]
    pub duration_ms: u64,
}

/// The body of origin-sim's `GET /stats/queries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OriginQueries {
    /// Every recorded query.
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

/// The gap that separates bursts: `min(ttl / 4, 500 ms)`, or 500 ms without a TTL.
pub fn burst_gap(ttl: Option<Duration>) -> Duration {
    // A herd's queries start within one rebuild time of each other (ms
    // apart); successive boundaries are a TTL apart. A quarter TTL, capped
    // at 500 ms, separates the two even for early refreshes.
    ttl.map_or(BURST_GAP_CAP, |t| {
        (t / BURST_GAP_TTL_DIVISOR).min(BURST_GAP_CAP)
    })
}

/// Group query start times (ms, any order) into bursts: sorted, a new burst
/// begins wherever the gap to the previous start exceeds `gap`.
pub fn group_bursts(times_ms: &[u64], gap: Duration) -> Bursts {
    let gap_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
    let mut sorted = times_ms.to_vec();
    sorted.sort_unstable();
    let mut sizes: Vec<u64> = Vec::new();
    let mut prev: Option<u64> = None;
    for t in sorted {
        match (prev, sizes.last_mut()) {
            (Some(p), Some(last)) if t - p <= gap_ms => *last += 1,
            _ => sizes.push(1),
        }
        prev = Some(t);
    }
    let total: u64 = sizes.iter().sum();
    Bursts {
        gap_ms,
        boundaries: sizes.len() as u64,
        mean_per_boundary: if sizes.is_empty() {
            0.0
        } else {
            round3(total as f64 / sizes.len() as f64)
        },
        max_per_boundary: sizes.iter().copied().max().unwrap_or(0),
        sizes,
    }
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
    /// Origin queries per status code.
    pub status: BTreeMap<String, u64>,
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
    start_ms: u64,
    end_ms: u64,
    hot_key: u64,
    ttl: Option<Duration>,
) -> OriginSummary {
    let in_window: Vec<&OriginQuery> = queries
        .iter()
        .filter(|q| q.t_ms >= start_ms && q.t_ms <= end_ms)
        .collect();
    let seconds = ((end_ms.saturating_sub(start_ms)) / 1000 + 1) as usize;
    let mut per_second = vec![0u64; seconds];
    let mut hot_per_second = vec![0u64; seconds];
    let mut status = BTreeMap::new();
    let mut hot_times = Vec::new();
    for q in &in_window {
        let s = ((q.t_ms - start_ms) / 1000) as usize;
        per_second[s] += 1;
        if q.id == hot_key {
            hot_per_second[s] += 1;
            hot_times.push(q.t_ms);
        }
        *status.entry(q.status.to_string()).or_insert(0u64) += 1;
    }
    OriginSummary {
        url: url.to_string(),
        window_start_ms: start_ms,
        window_end_ms: end_ms,
        total_queries: in_window.len() as u64,
        hot_queries: hot_times.len() as u64,
        max_queries_per_second: per_second.iter().copied().max().unwrap_or(0),
        status,
        hot_bursts: group_bursts(&hot_times, burst_gap(ttl)),
        hot_queries_per_ttl: ttl.filter(|t| !t.is_zero() && end_ms > start_ms).map(|t| {
            let windows = (end_ms - start_ms) as f64 / t.as_millis() as f64;
            round3(hot_times.len() as f64 / windows)
        }),
        per_second,
        hot_per_second,
    }
}

/// A duration in whole microseconds, saturating.
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to milliseconds, rounded to 3 decimals.
pub fn us_to_ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_status::classify;

    #[test]
    fn burst_gap_rule() {
        assert_eq!(burst_gap(None), Duration::from_millis(500));
        assert_eq!(
            burst_gap(Some(Duration::from_secs(1))),
            Duration::from_millis(250)
        );
        assert_eq!(
            burst_gap(Some(Duration::from_secs(5))),
            Duration::from_millis(500)
        );
        assert_eq!(
            burst_gap(Some(Duration::from_millis(200))),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn groups_bursts() {
        let b = group_bursts(&[], Duration::from_millis(500));
        assert_eq!(
            (b.boundaries, b.max_per_boundary, b.mean_per_boundary),
            (0, 0, 0.0)
        );

        // Unsorted input; gaps of exactly 500 stay in the burst, 501 split.
        let t = [5_000, 0, 10, 20, 520, 1_021, 1_030, 5_001, 5_002, 5_003];
        let b = group_bursts(&t, Duration::from_millis(500));
        assert_eq!(b.sizes, vec![4, 2, 4]);
        assert_eq!(b.boundaries, 3);
        assert_eq!(b.max_per_boundary, 4);
        assert!((b.mean_per_boundary - 3.333).abs() < 1e-9);
        assert_eq!(b.gap_ms, 500);
    }

    #[test]
    fn analyses_origin_window() {
        let q = |t_ms, id| OriginQuery {
            t_ms,
            id,
            status: 200,
            duration_ms: 1,
        };
        let start = 1_000_000;
        let qs = [
            q(start - 1, 1), // before the window
            q(start, 1),
            q(start + 5, 1),
            q(start + 7, 42),
            q(start + 999, 1),
            q(start + 1_000, 7),
            q(start + 2_600, 1),
            q(start + 2_601, 1),
            q(start + 3_001, 1), // after the window
        ];
        let o = analyse_origin(
            "http://o",
            &qs,
            start,
            start + 3_000,
            1,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(o.total_queries, 7);
        assert_eq!(o.hot_queries, 5);
        assert_eq!(o.per_second, vec![4, 1, 2, 0]);
        assert_eq!(o.hot_per_second, vec![3, 0, 2, 0]);
        assert_eq!(o.max_queries_per_second, 4);
        // Gap = min(ttl / 4, 500 ms) = 500 ms: start, +5 | +999 | +2600, +2601.
        assert_eq!(o.hot_bursts.gap_ms, 500);
        assert_eq!(o.hot_bursts.sizes, vec![2, 1, 2]);
        assert_eq!(o.status.get("200"), Some(&7));
    }

    #[test]
    fn counts_cache_and_latency() {
        let mut c = CacheCounts::default();
        assert_eq!(c.miss_rate, None);
        c.add(&classify(Some("stampede; hit; ttl=3")));
        c.add(&classify(Some("stampede; hit; ttl=-2")));
        c.add(&classify(Some("stampede; fwd=miss; collapsed")));
        c.add(&classify(Some("stampede; fwd=miss")));
        c.add(&classify(None));
        assert_eq!(
            (c.hits, c.stale_hits, c.misses, c.collapsed, c.unknown),
            (2, 1, 2, 1, 1)
        );
        assert_eq!(c.miss_rate, Some(0.5));
        assert_eq!(c.fwd.get("miss"), Some(&2));

        let mut l = LatencyRecorder::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        l.record(Duration::from_millis(200));
        let s = l.summary();
        assert_eq!(s.count, 101);
        assert_eq!(s.over_150ms, 1);
        assert!((s.p50_ms - 51.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 200.0).abs() < 0.2, "{s:?}");
    }
}
