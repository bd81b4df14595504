//! Faults with real processes: Redis killed mid-load and restarted, an origin
//! that goes down with stale copies in hand. Bounded in time, 127.0.0.1 only.

mod common;

use axum::Router;
use axum::routing::get;
use common::{config, get as http_get, report, serve};
use stampede_layer::store::CacheKey;
use stampede_layer::testing::RedisServer;
use stampede_layer::{CacheStore, RedisStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

async fn counting_origin(
    delay: Duration,
) -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicBool>) {
    let calls = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (c, f) = (calls.clone(), failing.clone());
    let app = Router::new().route(
        "/items/{id}",
        get(move |axum::extract::Path(id): axum::extract::Path<u64>| {
            let c = c.clone();
            let f = f.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                if f.load(Ordering::SeqCst) {
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "boom".to_owned())
                } else {
                    (http::StatusCode::OK, format!("{{\"id\":{id}}}"))
                }
            }
        }),
    );
    (serve(app).await, calls, failing)
}

/// Redis hangs, then dies, mid-load: the gateway keeps answering every request from the
/// in-process fallback (no per-request timeouts piling up), and goes back
/// to Redis by itself once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived_and_recovered_from() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let url = redis.url();
    let (origin, _calls, _) = counting_origin(Duration::from_millis(20)).await;
    let gw = gateway::spawn(config(origin, "all", &["--redis", &url, "--ttl", "300ms"]))
        .await
        .unwrap();
    let base = format!("http://{}", gw.addr);

    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let stop = stop.clone();
        let base = base.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = if i.is_multiple_of(4) {
                    2 + (w * 1000 + i) % 50
                } else {
                    1
                };
                let t = Instant::now();
                let a = http_get(&format!("{base}/items/{id}")).await;
                if t.elapsed() > Duration::from_millis(200) {
                    slow += 1;
                }
                done.lock().unwrap().push(Instant::now());
                if a.status == 200 {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed, slow)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.pause(); // hung: every command would run into its timeout
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.kill(); // gone: connections refused
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _redis = RedisServer::start_on(port, &[]);
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed, mut slow) = (0, 0, 0);
    for w in workers {
        let (o, f, s) = w.await.unwrap();
        ok += o;
        failed += f;
        slow += s;
    }
    assert!(ok > 200, "too little traffic: {ok}");
    // While Redis hangs, requests keep flowing at cache speed (the breaker
    // routes to the in-process store) instead of each waiting out Redis
    // command timeouts (a few per second per client without the breaker).
    let during_hang = done
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > paused + Duration::from_millis(500) && **t < resumed)
        .count();
    eprintln!("requests answered in the last second of the hang: {during_hang}");
    assert!(
        during_hang > 100,
        "only {during_hang} requests answered while Redis hung"
    );
    assert_eq!(failed, 0, "requests failed during the Redis outage");
    eprintln!("ok={ok} failed={failed} slower than 200ms={slow}");

    // Back on Redis: a new key written through the gateway lands in Redis.
    let a = http_get(&format!("{base}/items/777")).await;
    assert_eq!(a.status, 200);
    let direct = RedisStore::connect(&url).await.unwrap();
    let key = CacheKey::new(&http::Method::GET, &"/items/777".parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while direct.get(&key).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the gateway never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        http_get(&format!("{base}/items/777")).await;
    }
    let back_on_redis = restarted.elapsed();
    report(
        "Redis hangs (SIGSTOP 1.5 s), then is killed and restarted, under load",
        serde_json::json!({
            "requests": ok + failed,
            "failed": failed,
            "answered_in_last_second_of_hang": during_hang,
            "slower_than_200ms": slow,
            "back_on_redis_after_restart_ms": back_on_redis.as_millis() as u64,
        }),
    );
    let metrics = http_get(&format!("http://{}/metrics", gw.admin_addr))
        .await
        .body;
    assert!(metrics.contains("stampede_store_circuit_open"), "{metrics}");
    gw.shutdown().await.unwrap();
}

/// The origin fails with stale copies in hand: they are served
/// (stale-if-error); a key never cached gets a quick error, not a hang.
#[tokio::test]
async fn origin_errors_serve_stale_copies() {
    let (origin, _calls, failing) = counting_origin(Duration::from_millis(5)).await;
    let gw = gateway::spawn(config(
        origin,
        "all",
        &[
            "--ttl",
            "200ms",
            "--stale-ttl",
            "200ms",
            "--stale-if-error",
            "30s",
        ],
    ))
    .await
    .unwrap();
    let base = format!("http://{}", gw.addr);
    assert_eq!(http_get(&format!("{base}/items/1")).await.status, 200);
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await; // past TTL + SWR window
    for _ in 0..5 {
        let a = http_get(&format!("{base}/items/1")).await;
        assert_eq!(a.status, 200, "{}", a.cache_status());
        assert!(a.cache_status().contains("; hit"), "{}", a.cache_status());
        assert!(a.body.contains("\"id\":1"));
    }
    let t = Instant::now();
    let never = http_get(&format!("{base}/items/2")).await;
    let never_cached_ms = t.elapsed().as_millis() as u64;
    assert_eq!(never.status, 500);
    assert!(t.elapsed() < Duration::from_secs(1));
    report(
        "Origin answers 5xx past the TTL and SWR window",
        serde_json::json!({
            "stale_answers_served": 5,
            "failed_for_cached_keys": 0,
            "never_cached_key_error_ms": never_cached_ms,
        }),
    );
    gw.shutdown().await.unwrap();
}
