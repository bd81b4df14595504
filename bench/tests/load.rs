//! `run_load` against real HTTP servers on 127.0.0.1 (tiny axum apps).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use stampede_bench::{LoadConfig, LoadSummary, run_load};

#[derive(Clone)]
struct AppState {
    /// Shared by both listeners: even answers are hits, odd ones collapsed misses.
    alternate: Arc<AtomicU64>,
    /// Per listener: `/items` requests served.
    served: Arc<AtomicU64>,
    /// `/flaky` answers 503 while this is below `FLAKY_FAILURES`.
    flaky: Arc<AtomicU64>,
}

const FLAKY_FAILURES: u64 = 5;

async fn item(State(s): State<AppState>) -> impl IntoResponse {
    s.served.fetch_add(1, Ordering::SeqCst);
    let n = s.alternate.fetch_add(1, Ordering::SeqCst);
    let cs = if n % 2 == 0 {
        "stampede; hit; ttl=3"
    } else {
        "stampede; fwd=miss; collapsed"
    };
    ([("cache-status", cs)], "{\"id\":1}")
}

async fn flaky(State(s): State<AppState>) -> StatusCode {
    if s.flaky.fetch_add(1, Ordering::SeqCst) < FLAKY_FAILURES {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "late"
}

/// A known query log relative to `since_ms`, with two entries outside any
/// load window (the real origin-sim may ignore `since_ms`).
async fn stats(Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let s: u64 = q.get("since_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let entry =
        |t_ms: u64, id: u64| json!({"t_ms": t_ms, "id": id, "status": 200, "duration_ms": 200});
    axum::Json(json!({"queries": [
        entry(s - 5_000, 1),
        entry(s, 1), entry(s + 5, 2), entry(s + 10, 1), entry(s + 20, 1),
        entry(s + 700, 1), entry(s + 710, 1),
        entry(s + 1_100, 3), entry(s + 1_300, 1), entry(s + 1_900, 4),
        entry(s + 600_000, 1),
    ]}))
}

/// Start one listener; returns its base URL and its state.
async fn server(alternate: Arc<AtomicU64>) -> (String, AppState) {
    let state = AppState {
        alternate,
        served: Arc::default(),
        flaky: Arc::default(),
    };
    let app = Router::new()
        .route("/items/{id}", get(item))
        .route("/flaky/{id}", get(flaky))
        .route("/slow/{id}", get(slow))
        .route("/stats/queries", get(stats))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn quick(targets: Vec<String>) -> LoadConfig {
    LoadConfig {
        targets,
        concurrency: 1,
        duration: Duration::from_millis(300),
        seed: Some(1),
        origin: None,
        ..LoadConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_round_robin_hot_fraction_cache_status_and_origin_bursts() {
    let alternate = Arc::new(AtomicU64::new(0));
    let (a, sa) = server(alternate.clone()).await;
    let (b, sb) = server(alternate).await;
    let cfg = LoadConfig {
        targets: vec![a.clone(), b.clone()],
        concurrency: 4,
        duration: Duration::from_secs(2),
        hot_fraction: 0.8,
        keys: 1000,
        ttl: Some(Duration::from_secs(2)),
        seed: Some(42),
        origin: Some(a.clone()),
        ..LoadConfig::default()
    };
    let t0 = Instant::now();
    let s = run_load(&cfg, false).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let n = s.requests;
    assert!(n > 200, "too few requests: {n}");

    // Round-robin: one global counter, no retries → split within one request,
    // and each server saw exactly what the bench says it sent.
    assert_eq!(s.per_target.len(), 2);
    assert_eq!(s.per_target[0].target, a);
    let (na, nb) = (s.per_target[0].requests, s.per_target[1].requests);
    assert!(na.abs_diff(nb) <= 1, "{na} vs {nb}");
    assert_eq!(na, sa.served.load(Ordering::SeqCst));
    assert_eq!(nb, sb.served.load(Ordering::SeqCst));

    // Hot fraction: 0.8 plus the uniform draws that land on key 1.
    let hot = s.latency.hot.count as f64 / n as f64;
    assert!((hot - 0.8).abs() < 0.05, "hot fraction {hot}");
    assert_eq!(s.latency.hot.count + s.latency.other.count, n);
    assert_eq!(s.latency.all.count, n);

    // Cache-Status alternates hit / collapsed miss.
    let c = &s.cache.all;
    assert_eq!(c.hits + c.misses, n);
    assert!(c.hits.abs_diff(c.misses) <= 1, "{c:?}");
    assert_eq!(c.collapsed, c.misses);
    assert_eq!((c.stale_hits, c.unknown), (0, 0));
    assert_eq!(c.fwd.get("miss"), Some(&c.misses));
    assert!((c.miss_rate.unwrap() - 0.5).abs() < 0.01);
    assert_eq!(s.cache.hot.hits + s.cache.other.hits, c.hits);

    assert_eq!(s.status.get("200"), Some(&n));
    assert_eq!(
        (s.errors.total, s.failed_requests, s.retries, s.attempts),
        (0, 0, 0, n)
    );

    // Origin: in-window queries only, 1 s buckets, hot bursts split at 500 ms
    // (min(ttl / 4, 500 ms) with the 2 s TTL).
    let o = s.origin.as_ref().expect("origin section");
    assert_eq!(s.origin_error, None);
    assert_eq!(o.total_queries, 9);
    assert_eq!(o.hot_queries, 6);
    assert_eq!(o.max_queries_per_second, 6);
    assert_eq!(&o.per_second[..2], &[6, 3]);
    assert_eq!(o.hot_bursts.gap_ms, 500);
    assert_eq!(o.hot_bursts.sizes, vec![3, 2, 1]);
    assert_eq!(o.hot_bursts.boundaries, 3);
    assert_eq!(o.hot_bursts.max_per_boundary, 3);
    assert!((o.hot_bursts.mean_per_boundary - 2.0).abs() < 1e-9);

    // Timeline: covers the run, adds up.
    assert!(s.timeline.len() >= 2);
    assert_eq!(s.timeline.iter().map(|t| t.requests).sum::<u64>(), n);
    assert_eq!(s.timeline[0].origin_queries, Some(6));
    assert_eq!(s.timeline[1].hot_origin_queries, Some(1));
    assert!(s.timeline[0].p99_ms.is_some());

    // The summary round-trips through JSON.
    let back: LoadSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.config.duration, Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_count_on_5xx() {
    let (a, _) = server(Arc::default()).await;
    let cfg = LoadConfig {
        path_prefix: "/flaky/".into(),
        retries: 2,
        backoff: Duration::from_millis(1),
        ..quick(vec![a])
    };
    let s = run_load(&cfg, false).await.unwrap();
    // Request 1: 503, 503, 503 (gives up); request 2: 503, 503, 200; then 200s.
    assert!(s.requests >= 2);
    assert_eq!(s.retries, 4);
    assert_eq!(s.attempts, s.requests + 4);
    assert_eq!(s.status.get("503"), Some(&1));
    assert_eq!(s.status.get("200"), Some(&(s.requests - 1)));
    assert_eq!(s.failed_requests, 1);
    assert_eq!((s.errors.total, s.attempt_errors.total), (0, 0));
    assert_eq!(s.cache.all.unknown, s.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_counts_as_error_and_stops_bounded() {
    let (a, _) = server(Arc::default()).await;
    let cfg = LoadConfig {
        path_prefix: "/slow/".into(),
        concurrency: 2,
        timeout: Duration::from_millis(200),
        ..quick(vec![a])
    };
    let t0 = Instant::now();
    let s = run_load(&cfg, false).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );
    // Each worker: 0–200 ms times out, 200–400 ms times out, then stops.
    assert_eq!(s.requests, 4);
    assert_eq!(s.errors.timeout, 4);
    assert_eq!(s.errors.total, 4);
    assert_eq!(s.failed_requests, 4);
    assert!(s.status.is_empty());
    assert!(s.latency.all.p50_ms >= 190.0, "{:?}", s.latency.all);
    assert_eq!(s.latency.all.over_150ms, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_and_unreachable_origin() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = LoadConfig {
        duration: Duration::from_millis(200),
        retries: 1,
        backoff: Duration::from_millis(1),
        origin: Some(dead.clone()),
        ..quick(vec![dead])
    };
    let s = run_load(&cfg, false).await.unwrap();
    assert!(s.requests >= 1);
    assert_eq!(s.errors.connect, s.requests);
    assert_eq!(s.attempt_errors.connect, s.attempts);
    assert!(s.retries >= 1);
    assert!(s.origin.is_none());
    assert!(s.origin_error.is_some());
    assert!(s.timeline.iter().all(|t| t.origin_queries.is_none()));
}

#[tokio::test]
async fn invalid_configs_are_rejected() {
    let ok = LoadConfig::default();
    assert!(ok.validate().is_ok());
    let bad = [
        LoadConfig {
            targets: vec![],
            ..ok.clone()
        },
        LoadConfig {
            targets: vec!["https://x:1".into()],
            ..ok.clone()
        },
        LoadConfig {
            targets: vec!["not a url".into()],
            ..ok.clone()
        },
        LoadConfig {
            hot_fraction: 1.5,
            ..ok.clone()
        },
        LoadConfig {
            concurrency: 0,
            ..ok.clone()
        },
        LoadConfig {
            keys: 0,
            ..ok.clone()
        },
        LoadConfig {
            path_prefix: "items/".into(),
            ..ok.clone()
        },
        LoadConfig {
            origin: Some("ftp://o".into()),
            ..ok.clone()
        },
    ];
    for cfg in bad {
        assert!(run_load(&cfg, false).await.is_err(), "{cfg:?}");
    }
}
