//! Measurement helpers, black-box: `Cache-Status` classification, latency
//! and cache counters, origin-sim query log analysis.

use std::time::Duration;

use stampede_bench::cache_status::classify;
use stampede_bench::stats::{
    CacheCounts, LatencyRecorder, OriginQueries, OriginQuery, analyse_origin, burst_gap,
    group_bursts, max_in_flight,
};

#[test]
fn classifies_cache_status() {
    let c = classify(Some("stampede; hit; ttl=3"));
    assert!(c.hit && !c.stale && !c.miss && !c.collapsed && !c.unknown);

    let c = classify(Some("stampede; hit; ttl=-1; detail=swr"));
    assert!(c.hit && c.stale && !c.miss);

    let c = classify(Some("stampede; fwd=uri-miss; fwd-status=200; collapsed"));
    assert!(!c.hit && c.miss && c.collapsed);
    assert_eq!(c.fwd.as_deref(), Some("uri-miss"));

    let c = classify(Some("stampede; fwd=bypass"));
    assert!(c.miss && !c.collapsed);
    assert_eq!(c.fwd.as_deref(), Some("bypass"));

    let c = classify(None);
    assert!(c.unknown && !c.hit && !c.miss);
    assert!(classify(Some("")).unknown);
    // Not a structured field list: unknown, never a panic.
    assert!(classify(Some("\"abc; hit")).unknown);

    // hit=?0 is not a hit; the stampede member wins over a later cache.
    let c = classify(Some("stampede; fwd=miss, cdn; hit"));
    assert!(c.miss && !c.hit);
    let c = classify(Some("cdn; hit=?0; fwd=miss"));
    assert!(c.miss && !c.hit);
    // A quoted cache name.
    assert!(classify(Some("\"my cache\"; hit")).hit);
}

#[test]
fn burst_gap_rule() {
    let ms = Duration::from_millis;
    assert_eq!(burst_gap(None), ms(500));
    assert_eq!(burst_gap(Some(Duration::from_secs(1))), ms(250));
    assert_eq!(burst_gap(Some(Duration::from_secs(5))), ms(500));
    assert_eq!(burst_gap(Some(ms(200))), ms(50));
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

fn q(t_ms: u64, id: u64, status: u16, duration_ms: u64) -> OriginQuery {
    let q =
        serde_json::json!({"t_ms": t_ms, "id": id, "status": status, "duration_ms": duration_ms});
    serde_json::from_value(q).unwrap()
}

#[test]
fn analyses_origin_window() {
    let start = 1_000_000;
    let ok = |t, id| q(t, id, 200, 1);
    let qs = [
        ok(start - 1, 1), // before the window
        ok(start, 1),
        ok(start + 5, 1),
        ok(start + 7, 42),
        ok(start + 999, 1),
        ok(start + 1_000, 7),
        ok(start + 2_600, 1),
        ok(start + 2_601, 1),
        ok(start + 3_001, 1), // after the window
    ];
    let o = analyse_origin(
        "http://o",
        &qs,
        (start, start + 3_000),
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

/// The revalidation columns: 304s and body bytes, from a stats payload as
/// origin-sim sends it (an older origin-sim without `bytes` counts 0).
#[test]
fn counts_304s_and_body_bytes_from_a_stats_payload() {
    let payload = r#"{"queries":[
        {"t_ms":1000,"id":1,"status":200,"duration_ms":200,"pool_wait_ms":0,"bytes":420},
        {"t_ms":3000,"id":1,"status":304,"duration_ms":200,"pool_wait_ms":0,"bytes":0},
        {"t_ms":3005,"id":7,"status":200,"duration_ms":200,"pool_wait_ms":0,"bytes":421},
        {"t_ms":5000,"id":1,"status":304,"duration_ms":200,"pool_wait_ms":0,"bytes":0},
        {"t_ms":5100,"id":1001,"status":404,"duration_ms":0,"pool_wait_ms":0,"bytes":31},
        {"t_ms":9000,"id":1,"status":200,"duration_ms":200,"pool_wait_ms":0,"bytes":999},
        {"t_ms":5200,"id":2,"status":200,"duration_ms":200}
    ]}"#;
    let log: OriginQueries = serde_json::from_str(payload).unwrap();
    let o = analyse_origin(
        "http://o",
        &log.queries,
        (1000, 6000),
        1,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(o.total_queries, 6);
    assert_eq!(o.status.get("304"), Some(&2));
    assert_eq!(o.status.get("200"), Some(&3));
    assert_eq!(o.body_bytes, 420 + 421 + 31);
    assert_eq!(o.hot_queries, 3);
}

#[test]
fn max_in_flight_overlaps_half_open_intervals() {
    assert_eq!(max_in_flight(&[]), 0);
    // [0,3000) [1000,4000) [2000,5000) overlap 3 at once; [5000,8000)
    // starts as the third ends; [9000,9000) is instantaneous.
    let qs = [0, 1000, 2000, 5000].map(|t| q(t, 1, 200, 3000));
    assert_eq!(max_in_flight(&qs), 3);
    assert_eq!(max_in_flight(&qs[2..]), 1);
    assert_eq!(max_in_flight(&[q(9000, 1, 200, 0)]), 0);
}

#[test]
fn counts_cache_and_latency() {
    let mut c = CacheCounts::default();
    assert_eq!(c.miss_rate, None);
    for h in [
        "stampede; hit; ttl=3",
        "stampede; hit; ttl=-2",
        "stampede; fwd=miss; collapsed",
        "stampede; fwd=miss",
    ] {
        c.add(&classify(Some(h)));
    }
    c.add(&classify(None));
    assert_eq!(
        (c.hits, c.stale_hits, c.misses, c.collapsed, c.unknown),
        (2, 1, 2, 1, 1)
    );
    assert_eq!(c.miss_rate, Some(0.5));
    assert_eq!(c.hit_percent(), 50.0);
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
