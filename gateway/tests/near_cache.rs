//! The near cache in front of Redis, black box: real gateway processes on a
//! real Redis. A purge through one gateway's admin API reaches every gateway
//! at once (Redis pub/sub), and hot-key hits stop costing a Redis command
//! each (`INFO stats` deltas around the hits).

mod common;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use common::{GatewayProcess, send, serve};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stampede_layer::testing::RedisServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "near-cache-test-token";

/// A gateway on `redis` in front of `origin` (TTL 60 s), with `extra` flags.
async fn gateway(
    origin: std::net::SocketAddr,
    redis: &str,
    name: &str,
    extra: &[&str],
) -> GatewayProcess {
    let origin = format!("http://{origin}");
    let mut args = vec![
        "--origin",
        &origin,
        "--redis",
        redis,
        "--ttl",
        "60s",
        "--admin-token",
        TOKEN,
    ];
    args.extend_from_slice(extra);
    GatewayProcess::start(name, &args).await
}

/// An origin whose answer carries a version the test changes.
async fn versioned_origin() -> (Arc<AtomicU64>, Arc<AtomicU64>, std::net::SocketAddr) {
    let (version, calls) = (Arc::new(AtomicU64::new(1)), Arc::new(AtomicU64::new(0)));
    let (v, c) = (version.clone(), calls.clone());
    let addr = serve(Router::new().route(
        "/items/{id}",
        get(move || {
            let (v, c) = (v.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                format!("{{\"version\":{}}}", v.load(Ordering::SeqCst))
            }
        }),
    ))
    .await;
    (version, calls, addr)
}

/// One keep-alive client for many requests: (body, Cache-Status).
#[derive(Clone)]
struct Http(Client<HttpConnector, Empty<Bytes>>);

impl Http {
    fn new() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    async fn get(&self, url: &str) -> (String, String) {
        let req = Request::get(url).body(Empty::new()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.0.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8_lossy(&body).into_owned(), status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_gateway_within_100ms() {
    let redis = RedisServer::start();
    let (version, _calls, origin) = versioned_origin().await;
    // A near-cache bound far beyond the test: only the invalidation can
    // explain a gateway answering the new version.
    let near = ["--near-cache-ttl", "60s"];
    let mut gateways = Vec::new();
    for name in ["near-a", "near-b", "near-c"] {
        gateways.push(gateway(origin, &redis.url(), name, &near).await);
    }
    let http = Http::new();
    for g in &gateways {
        for _ in 0..3 {
            let (body, _) = http.get(&g.url("/items/1")).await;
            assert_eq!(body, r#"{"version":1}"#);
        }
        let (_, status) = http.get(&g.url("/items/1")).await;
        assert!(status.contains("; hit"), "warm: {status}");
        assert!(
            g.counter("stampede_near_cache_hits_total", "").await >= 1.0,
            "hits served from the near cache"
        );
    }

    version.store(2, Ordering::SeqCst);
    for g in &gateways {
        let (body, _) = http.get(&g.url("/items/1")).await;
        assert_eq!(body, r#"{"version":1}"#, "cached until purged");
    }
    let purge = send(
        Method::POST,
        &gateways[0].admin_url("/admin/purge"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        r#"{"paths":["/items/1"]}"#,
    )
    .await;
    let purged = Instant::now();
    assert_eq!(purge.status, 200, "{}", purge.body);
    assert!(purge.body.contains(r#""purged":1"#), "{}", purge.body);

    let waits = futures_util::future::join_all(gateways.iter().map(|g| {
        let (http, url) = (http.clone(), g.url("/items/1"));
        async move {
            loop {
                let (body, _) = http.get(&url).await;
                if body == r#"{"version":2}"# {
                    return purged.elapsed();
                }
                assert!(
                    purged.elapsed() < Duration::from_secs(5),
                    "{url}: still {body} 5 s after the purge"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }))
    .await;
    eprintln!("new version visible after the purge: {waits:?}");
    for (g, took) in gateways.iter().zip(&waits) {
        assert!(
            *took <= Duration::from_millis(100),
            "gateway on :{} answered the new version {took:?} after the purge",
            g.port
        );
    }
    for g in &gateways[1..] {
        let remote = g
            .counter(
                "stampede_near_cache_invalidations_total",
                r#"source="remote""#,
            )
            .await;
        assert!(remote >= 1.0, "the invalidation came over pub/sub");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_hits_cost_at_most_a_hundredth_of_a_redis_command() {
    const HITS: usize = 1000;
    let redis = RedisServer::start();
    let (_version, calls, origin) = versioned_origin().await;
    // The default near-cache bound.
    let g = gateway(origin, &redis.url(), "near-hits", &[]).await;
    let http = Http::new();
    for _ in 0..3 {
        http.get(&g.url("/items/1")).await;
    }
    let before = redis.info_field("stats", "total_commands_processed");
    let stats_before = redis.cli(&["INFO", "commandstats"]);
    let started = Instant::now();
    let clients = 4;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url) = (http.clone(), g.url("/items/1"));
            tokio::spawn(async move {
                let mut hits = 0;
                // Paced over about 2.5 s: steady state spans several
                // near-cache bounds (1 s), each ending in one re-read.
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..HITS / clients {
                    tick.tick().await;
                    let (_, status) = http.get(&url).await;
                    hits += usize::from(status.contains("; hit"));
                }
                hits
            })
        })
        .collect();
    let mut hits = 0;
    for t in tasks {
        hits += t.await.unwrap();
    }
    let took = started.elapsed();
    let stats_after = redis.cli(&["INFO", "commandstats"]);
    // The INFO calls since (and including) `before`'s are counted; this
    // reading itself is not.
    let commands = redis.info_field("stats", "total_commands_processed") - before - 3;
    assert_eq!(hits, HITS, "every request a hit");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one origin call: the fill");
    let per_hit = commands as f64 / HITS as f64;
    eprintln!("{HITS} hits in {took:?}: {commands} Redis commands ({per_hit} per hit)");
    assert!(
        per_hit <= 0.01,
        "{commands} Redis commands for {HITS} hits in {took:?}\nbefore: {stats_before}\nafter: {stats_after}"
    );
    assert!(
        took < Duration::from_secs(1) || commands >= 1,
        "past the 1 s bound the near copy is re-read from Redis"
    );
    assert!(g.counter("stampede_near_cache_hits_total", "").await >= (HITS - 10) as f64);
}
