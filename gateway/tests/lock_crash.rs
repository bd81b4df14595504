//! A gateway killed (SIGKILL) while it holds a rebuild lock: the other
//! instances take over after the lock TTL; their waits are bounded by the
//! lock wait; nobody hangs. Real gateway processes and a real Redis.

mod common;

use axum::Router;
use axum::routing::get;
use common::{GatewayProcess, get as http_get, report, serve};
use stampede_layer::testing::RedisServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A gateway on `redis` in front of `origin`: single-flight and the lock
/// (lock TTL 1 s), TTL 30 s.
async fn gateway(origin: std::net::SocketAddr, redis: &str, name: &str) -> GatewayProcess {
    let origin = format!("http://{origin}");
    let args = [
        "--origin",
        &origin,
        "--redis",
        redis,
        "--mitigations",
        "single-flight,lock",
        "--lock-ttl",
        "1s",
        "--ttl",
        "30s",
    ];
    GatewayProcess::start(name, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_lock_holder_is_taken_over_after_the_lock_ttl() {
    let redis = RedisServer::start();
    // The first rebuild hangs (the holder will die in it); later ones are quick.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let origin = serve(Router::new().route(
        "/items/{id}",
        get(move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                "{\"id\":1}"
            }
        }),
    ))
    .await;
    let mut holder = gateway(origin, &redis.url(), "holder").await;
    let survivor = gateway(origin, &redis.url(), "survivor").await;

    let holder_port = holder.port;
    let doomed = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri = format!("http://127.0.0.1:{holder_port}/items/1")
            .parse()
            .unwrap();
        let _ = client.get(uri).await;
    });
    // Wait until the holder is inside its rebuild (it holds the lock), then kill it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never started its rebuild"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let locked_at = Instant::now();
    holder.kill();
    doomed.abort();

    // Several concurrent waiters on the survivor: bounded by the lock wait
    // (= lock TTL, 1 s), then one takes over and the rest get its fill.
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let url = format!("http://127.0.0.1:{}/items/1", survivor.port);
        waiters.push(tokio::spawn(async move {
            let a = http_get(&url).await;
            (a.status, locked_at.elapsed())
        }));
    }
    let mut waits = Vec::new();
    for w in waiters {
        let (status, took) = w.await.unwrap();
        waits.push(took.as_millis() as u64);
        assert_eq!(status, 200);
        assert!(
            took >= Duration::from_millis(700),
            "took over before the lock TTL: {took:?}"
        );
        assert!(
            took < Duration::from_secs(4),
            "waited {took:?}: not bounded by the lock wait"
        );
    }
    // One rebuild by the survivor for all five waiters (plus the dead one's).
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    report(
        "Lock holder SIGKILLed mid-rebuild (lock TTL 1 s), 5 waiters on another instance",
        serde_json::json!({
            "waiters": waits.len(),
            "failed": 0,
            "min_wait_ms": waits.iter().min(),
            "max_wait_ms": waits.iter().max(),
            "origin_rebuilds_after_crash": 1,
        }),
    );
}
