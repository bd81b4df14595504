//! Fencing with real processes (gateway binaries, redis-server, an origin with
//! item versions), the hostile scenarios of issue #19: a leader paused past
//! its lock on a never-cached and on a cached key, a lock-less fill racing a
//! purge, a purge during a Redis outage, one client's junk variant.
//!
//! `STAMPEDE_TEST_GATEWAY_BIN=<older gateway> cargo test -p gateway --test
//! fencing` runs them against another build: each of these failed on the
//! gateway before the fence records (see docs/LAYERS.md, "Fencing").

mod common;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{GatewayProcess, VersionedOrigin, get as http_get, report, send, serve, version};
use http::Method;
use stampede_layer::testing::RedisServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TOKEN: &str = "fencing-test-token";

async fn purge(gw: &GatewayProcess, path: &str) -> common::Answer {
    send(
        Method::POST,
        &gw.admin_url("/admin/purge"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        &format!("{{\"paths\":[\"{path}\"]}}"),
    )
    .await
}

/// The versions two gateways serve for `path` (and their `Cache-Status`).
async fn served(gws: &[&GatewayProcess], path: &str) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for gw in gws {
        let a = http_get(&gw.url(path)).await;
        out.push((version(&a.body), a.cache_status()));
    }
    out
}

/// Issue #19's scenario: two gateways on one Redis (`--lock-ttl 300ms`),
/// origin answering in 1.5 s. Gateway 1 starts the rebuild and is paused
/// 0.2 s later; the item is updated at the origin; gateway 2 rebuilds it
/// (version 2, stored); gateway 1 resumes 2 s after its pause and its fill
/// of version 1 lands late. It must be refused: both gateways then serve
/// version 2. `warm`: the key held an (expired) entry before.
async fn paused_leader(warm: bool) {
    let redis = RedisServer::start();
    let origin = VersionedOrigin::start(Duration::from_millis(1500)).await;
    let ttl = if warm { "4s" } else { "30s" };
    let origin_url = origin.url();
    let redis_url = redis.url();
    let args = [
        "--origin",
        &origin_url,
        "--redis",
        &redis_url,
        "--lock-ttl",
        "300ms",
        "--ttl",
        ttl,
        "--mitigations",
        "all",
        "--stale-ttl",
        "0s",
        "--stale-if-error",
        "0s",
        "--xfetch-beta",
        "0",
        "--jitter",
        "0",
        "--upstream-timeout",
        "10s",
    ];
    let g1 = GatewayProcess::start("g1", &args).await;
    let g2 = GatewayProcess::start("g2", &args).await;
    let path = if warm { "/items/8" } else { "/items/7" };
    let id: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
    if warm {
        let first = http_get(&g1.url(path)).await;
        assert_eq!(version(&first.body), Some(1), "{}", first.body);
        // Expired, still held (retained for revalidation): a rebuild with
        // the old entry in hand.
        tokio::time::sleep(Duration::from_millis(4300)).await;
    }
    let gets = origin.gets();
    let leader = tokio::spawn({
        let url = g1.url(path);
        async move { http_get(&url).await }
    });
    origin.wait_gets(gets + 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    g1.pause();
    let paused_at = std::time::Instant::now();
    assert_eq!(origin.update(id), 2);
    // Past g1's lock TTL: it cannot renew while paused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = http_get(&g2.url(path)).await;
    assert_eq!(version(&second.body), Some(2), "{}", second.cache_status());
    assert!(
        second.cache_status().contains("stored"),
        "{}",
        second.cache_status()
    );
    tokio::time::sleep(Duration::from_millis(2000).saturating_sub(paused_at.elapsed())).await;
    g1.resume();
    let leader = leader.await.unwrap();
    assert_eq!(
        version(&leader.body),
        Some(1),
        "the paused leader's own client gets its answer"
    );
    // Past the near caches' bound (1 s): what the store holds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = served(&[&g1, &g2], path).await;
    let rejections = g1.counter("stampede_fencing_rejections_total", "").await;
    report(
        &format!(
            "fencing::paused_leader_{}",
            if warm { "warm" } else { "cold" }
        ),
        serde_json::json!({
            "leader's late fill": leader.cache_status(),
            "served afterwards (g1, g2)": format!("{after:?}"),
            "fencing rejections on g1": rejections,
        }),
    );
    for (v, cs) in &after {
        assert_eq!(
            *v,
            Some(2),
            "an old version won after the paused leader resumed: {cs}"
        );
    }
    assert!(
        !leader.cache_status().contains("stored"),
        "the late fill was stored: {}",
        leader.cache_status()
    );
    assert_eq!(rejections, 1.0, "one fencing rejection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_never_wins_on_a_cold_key() {
    paused_leader(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_never_wins_on_a_warm_key() {
    paused_leader(true).await;
}

/// Finding 1 of #19: a fill without the lock (here: `--mitigations
/// single-flight`) used to draw its token when it landed, beating the purge
/// that came after it started. Now it draws a ticket before it asks the
/// origin, and the purge refuses it. In-process store and Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockless_fill_does_not_undo_a_purge() {
    let redis = RedisServer::start();
    let origin = VersionedOrigin::start(Duration::from_millis(1500)).await;
    let origin_url = origin.url();
    let redis_url = redis.url();
    for (store, id) in [("memory", 3), ("redis", 4)] {
        let mut args = vec![
            "--origin",
            &origin_url,
            "--mitigations",
            "single-flight",
            "--ttl",
            "30s",
            "--admin-token",
            TOKEN,
            "--upstream-timeout",
            "10s",
        ];
        if store == "redis" {
            args.extend(["--redis", &redis_url]);
        }
        let gw = GatewayProcess::start(store, &args).await;
        let path = format!("/items/{id}");
        let gets = origin.gets();
        let first = tokio::spawn({
            let url = gw.url(&path);
            async move { http_get(&url).await }
        });
        origin.wait_gets(gets + 1).await;
        origin.update(id);
        let purged = purge(&gw, &path).await;
        assert_eq!(purged.status, StatusCode::OK, "{store}: {}", purged.body);
        let first = first.await.unwrap();
        assert_eq!(version(&first.body), Some(1));
        let after = http_get(&gw.url(&path)).await;
        assert_eq!(
            version(&after.body),
            Some(2),
            "{store}: the purge was undone by a fill that started before it ({})",
            after.cache_status()
        );
    }
}

/// Finding 3 of #19: with Redis unreachable (the breaker open) a purge reaches
/// only this gateway's fallback; the admin API says so (503, `failed`)
/// instead of answering `purged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_redis_outage_is_reported_as_failed() {
    let redis = RedisServer::start();
    let origin = VersionedOrigin::start(Duration::ZERO).await;
    let origin_url = origin.url();
    let redis_url = redis.url();
    let gw = GatewayProcess::start(
        "g",
        &[
            "--origin",
            &origin_url,
            "--redis",
            &redis_url,
            "--admin-token",
            TOKEN,
        ],
    )
    .await;
    assert_eq!(version(&http_get(&gw.url("/items/1")).await.body), Some(1));
    redis.pause();
    // A few requests open the breaker (each pays the command timeout).
    for _ in 0..4 {
        http_get(&gw.url("/items/2")).await;
    }
    let answer = purge(&gw, "/items/1").await;
    redis.resume();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a purge Redis never saw was reported done: {}",
        answer.body
    );
    assert!(answer.body.contains("/items/1"), "{}", answer.body);
}

/// An origin that answers by `Accept`: `application/json` → 200, cacheable,
/// `Vary: Accept`; `x/junk` → 406 (no freshness: not storable); `x/cookie` →
/// 200 with `Set-Cookie`. Counts the JSON answers.
async fn negotiating_origin() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let json_calls = Arc::new(AtomicU64::new(0));
    let calls = json_calls.clone();
    let app = Router::new().route(
        "/page",
        get(move |headers: HeaderMap| {
            let calls = calls.clone();
            async move {
                let accept = headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let vary = [("vary", "Accept"), ("cache-control", "max-age=60")];
                match accept.as_str() {
                    "x/junk" => {
                        (StatusCode::NOT_ACCEPTABLE, [("vary", "Accept")], "no").into_response()
                    }
                    "x/cookie" => (
                        [
                            ("vary", "Accept"),
                            ("cache-control", "max-age=60"),
                            ("set-cookie", "session=attacker"),
                        ],
                        "cookie",
                    )
                        .into_response(),
                    _ => {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        (vary, format!("{{\"version\":{n}}}")).into_response()
                    }
                }
            }
        }),
    );
    (serve(app).await, json_calls)
}

/// Finding 4 of #19: one client's junk variant (a 406, or an answer that sets
/// a cookie) used to write a hit-for-miss marker over the URL's one entry
/// slot, ahead of the Vary check: every client then went to the origin,
/// uncoordinated, for `--hit-for-miss-ttl`. Now a 4xx never marks the key, a
/// marker applies to its own variant only, and never replaces a stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_junk_variant_does_not_switch_caching_off() {
    let (origin, json_calls) = negotiating_origin().await;
    let origin_url = format!("http://{origin}");
    let gw = GatewayProcess::start("g", &["--origin", &origin_url]).await;
    let json = [("accept", "application/json")];
    let first = send(Method::GET, &gw.url("/page"), &json, "").await;
    assert_eq!(first.status, StatusCode::OK);
    for junk in ["x/junk", "x/cookie"] {
        let a = send(Method::GET, &gw.url("/page"), &[("accept", junk)], "").await;
        assert_ne!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{junk}");
    }
    let clients = (0..10).map(|_| {
        let url = gw.url("/page");
        tokio::spawn(async move { send(Method::GET, &url, &json, "").await })
    });
    let mut statuses = Vec::new();
    for c in clients {
        let a = c.await.unwrap();
        statuses.push(a.cache_status());
    }
    assert_eq!(
        json_calls.load(Ordering::SeqCst),
        1,
        "the junk variants switched caching off for everyone: {statuses:?}"
    );
}
