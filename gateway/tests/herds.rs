//! One origin request per herd on every path (issue #20), with real gateway
//! processes and a real Redis: a cold large object, a hot large object, a
//! failing origin, an origin slower than the lock, and `Vary:
//! Accept-Encoding` — each on one gateway and on a fleet, each asserting
//! the origin requests and what every client received (bytes intact).
//!
//! Timing goals are the issue's; the assertions leave room for a debug build
//! on a shared 2-core machine and the measured figures are reported
//! (`RELIABILITY` lines).

mod common;

use common::{
    GatewayProcess, NEGOTIATED_TEXT, ScenarioOrigin, big_body_intact, get_streamed, report,
};
use stampede_layer::testing::RedisServer;
use std::time::{Duration, Instant};

/// `n` gateways in front of `origin` (on `redis` when given), `extra` flags.
async fn fleet(
    origin: &ScenarioOrigin,
    redis: Option<&RedisServer>,
    n: usize,
    extra: &[&str],
) -> Vec<GatewayProcess> {
    let origin_url = origin.url();
    let redis_url = redis.map(RedisServer::url);
    let mut args = vec!["--origin", origin_url.as_str(), "--upstream-timeout", "10s"];
    if let Some(url) = &redis_url {
        args.extend(["--redis", url.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut out = Vec::new();
    for i in 0..n {
        out.push(GatewayProcess::start(&format!("g{i}"), &args).await);
    }
    out
}

const MIB: u64 = 1024 * 1024;

/// Row 1: 50 concurrent clients on a cold 4 MiB object whose first byte
/// leaves the origin at 0.5 s and the last at ~1.4 s. One origin request;
/// every client gets its first byte as the origin sends it (streamed to every
/// waiter of the flight), and every byte intact.
async fn cold_large_object(redis: Option<&RedisServer>, gateways: usize) -> (usize, Duration) {
    let origin = ScenarioOrigin::start().await;
    let gws = fleet(&origin, redis, gateways, &[]).await;
    let size = 4 * MIB;
    let path = format!("/big/{size}?first_ms=500&total_ms=1400&max_age=60");
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let url = gws[i % gws.len()].url(&path);
            tokio::spawn(async move { get_streamed(&url, &[], started).await })
        })
        .collect();
    let mut slowest_first = Duration::ZERO;
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(big_body_intact(&r.body, size), "a client got a broken body");
        slowest_first = slowest_first.max(r.first_byte);
    }
    let origin_requests = origin.requests("/big").len();
    report(
        &format!("herds::cold_large_object ({gateways} gateway(s))"),
        serde_json::json!({
            "clients": 50, "object": "4 MiB",
            "origin requests": origin_requests,
            "slowest client's first byte (s)": format!("{:.2}", slowest_first.as_secs_f64()),
        }),
    );
    (origin_requests, slowest_first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_large_object_is_fetched_once_and_streamed_to_every_waiter() {
    let (requests, first) = cold_large_object(None, 1).await;
    assert_eq!(requests, 1, "one origin request for the herd");
    // The origin's last byte leaves at ~1.4 s: a client served only after the
    // whole download would see its first byte after that.
    assert!(
        first < Duration::from_millis(1200),
        "slowest first byte {first:?}: not streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_large_object_is_fetched_once_by_a_fleet() {
    let redis = RedisServer::start();
    let (requests, first) = cold_large_object(Some(&redis), 3).await;
    assert_eq!(requests, 1, "one origin request for the fleet's herd");
    // The other gateways read the body from Redis as the leader writes it.
    assert!(
        first < Duration::from_millis(1200),
        "slowest first byte {first:?}: not streamed across the fleet"
    );
}

/// Row 2: a hot 4 MiB object with `max-age=2`, 12 clients looping: stored
/// (it is within `--max-object-size`), so the origin sees about one request
/// per TTL, not one per client request.
async fn hot_large_object(redis: Option<&RedisServer>, gateways: usize) {
    let origin = ScenarioOrigin::start().await;
    let gws = fleet(&origin, redis, gateways, &["--stale-ttl", "0s"]).await;
    let size = 4 * MIB;
    let path = format!("/big/{size}?max_age=2");
    let run = Duration::from_secs(6);
    let started = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let url = gws[i % gws.len()].url(&path);
            tokio::spawn(async move {
                let mut served = 0;
                while started.elapsed() < run {
                    let r = get_streamed(&url, &[], started).await;
                    assert_eq!(r.status, 200);
                    assert!(big_body_intact(&r.body, size), "broken body");
                    served += 1;
                }
                served
            })
        })
        .collect();
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap();
    }
    let requests = origin.requests("/big").len();
    report(
        &format!("herds::hot_large_object ({gateways} gateway(s))"),
        serde_json::json!({
            "client requests served": served, "origin requests": requests,
            "run (s)": run.as_secs(), "max-age (s)": 2,
        }),
    );
    // One per TTL boundary (3 in 6 s; the `Date` rounding shortens a
    // lifetime by up to 1 s), jitter and the first fill: at most 7.
    assert!(
        requests <= 7,
        "{requests} origin requests for {served} client requests"
    );
    assert!(served > requests * 3, "clients were served from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_large_object_is_cached() {
    hot_large_object(None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_large_object_is_cached_by_a_fleet_in_redis_chunks() {
    let redis = RedisServer::start();
    hot_large_object(Some(&redis), 2).await;
    // Stored in chunks: no single huge value in Redis.
    let keys = redis.cli(&["--scan"]);
    let biggest = keys
        .lines()
        .filter(|k| !k.ends_with(":f") && !k.ends_with(":l"))
        .map(|k| {
            let kind = redis.cli(&["TYPE", k]);
            match kind.as_str() {
                "string" => redis.cli(&["STRLEN", k]).parse::<u64>().unwrap(),
                "hash" => redis.cli(&["HSTRLEN", k, "d"]).parse::<u64>().unwrap_or(0),
                _ => 0,
            }
        })
        .max()
        .unwrap_or(0);
    assert!(
        biggest <= MIB,
        "a single Redis value of {biggest} bytes: store large entries in chunks"
    );
}

/// Row 3: the origin answers 503 (`no-store`) after 0.4 s; 20 concurrent
/// clients. The failed rebuild releases every waiter with its outcome — on
/// this gateway, and on the fleet's others through the lock — instead of
/// each going to the origin in turn.
async fn failing_origin(redis: Option<&RedisServer>, gateways: usize) -> (usize, Duration) {
    let origin = ScenarioOrigin::start().await;
    let gws = fleet(&origin, redis, gateways, &[]).await;
    let started = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let url = gws[i % gws.len()].url("/fail?ms=400");
            tokio::spawn(async move { get_streamed(&url, &[], started).await })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for c in clients {
        let r = c.await.unwrap();
        assert!(r.status.is_server_error(), "{}", r.status);
        assert!(
            r.headers.get("retry-after").is_some() || r.status == 503,
            "a failure answer says when to retry"
        );
        slowest = slowest.max(r.done);
    }
    let requests = origin.requests("/fail").len();
    report(
        &format!("herds::failing_origin ({gateways} gateway(s))"),
        serde_json::json!({
            "clients": 20, "origin requests": requests,
            "slowest client (s)": format!("{:.2}", slowest.as_secs_f64()),
        }),
    );
    (requests, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_gets_one_request_per_herd() {
    let (requests, slowest) = failing_origin(None, 1).await;
    assert!(requests <= 2, "{requests} origin requests");
    assert!(slowest < Duration::from_millis(900), "slowest {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_gets_one_request_per_herd_from_a_fleet() {
    let redis = RedisServer::start();
    let (requests, slowest) = failing_origin(Some(&redis), 2).await;
    assert!(requests <= 2, "{requests} origin requests");
    assert!(slowest < Duration::from_millis(900), "slowest {slowest:?}");
}

/// Row 4: an origin slower (3 s) than the lock TTL (2 s, the default), three
/// gateways, the full stack: one rebuild in flight, never a second one
/// started by a waiter whose wait ended while the leader's lease was renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_slower_than_the_lock_gets_one_rebuild_in_flight() {
    let redis = RedisServer::start();
    let origin = ScenarioOrigin::start().await;
    let gws = fleet(&origin, Some(&redis), 3, &[]).await;
    let started = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let url = gws[i % gws.len()].url("/slow?ms=3000");
            tokio::spawn(async move { get_streamed(&url, &[], started).await })
        })
        .collect();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"slow answer");
    }
    let in_flight = origin.max_in_flight("/slow");
    report(
        "herds::slow_origin (3 gateways)",
        serde_json::json!({
            "origin latency / lock TTL": "3 s / 2 s",
            "rebuilds in flight at most": in_flight,
            "origin requests": origin.requests("/slow").len(),
        }),
    );
    assert_eq!(in_flight, 1);
    assert_eq!(origin.requests("/slow").len(), 1);
}

/// Row 5: `Vary: Accept-Encoding` and three client populations (`gzip,
/// deflate, br, zstd`; `gzip`; none), looping with `max-age=2`, an origin
/// answering in 200 ms, the gateway's defaults (stale-while-revalidate on)
/// but TTL jitter.
/// One stored representation (gzip) serves all three — decompressed for the
/// clients that do not accept gzip — and it is refreshed once per lifetime,
/// at expiry (stale served meanwhile), not early: the origin sees one
/// request per TTL, not one per population.
async fn negotiated(redis: Option<&RedisServer>, gateways: usize) {
    let origin = ScenarioOrigin::start().await;
    // TTL jitter off: it may shorten each origin lifetime by up to a fifth
    // (by design, measured by the ladder's multi-key rung), which would make
    // the count below depend on its draws.
    let gws = fleet(&origin, redis, gateways, &["--jitter", "0"]).await;
    let populations: [&[(&str, &str)]; 3] = [
        &[("accept-encoding", "gzip, deflate, br, zstd")],
        &[("accept-encoding", "gzip")],
        &[],
    ];
    let run = Duration::from_secs(9);
    let started = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let url = gws[i % gws.len()].url("/negotiated?ms=200&max_age=2");
            let headers = populations[i % 3];
            tokio::spawn(async move {
                let mut served = 0;
                while started.elapsed() < run {
                    let r = get_streamed(&url, headers, started).await;
                    assert_eq!(r.status, 200);
                    let gzip = r
                        .headers
                        .get("content-encoding")
                        .is_some_and(|v| v == "gzip");
                    let text = if gzip {
                        use std::io::Read;
                        let mut out = String::new();
                        flate2::read::GzDecoder::new(&r.body[..])
                            .read_to_string(&mut out)
                            .expect("valid gzip");
                        out
                    } else {
                        String::from_utf8(r.body.to_vec()).unwrap()
                    };
                    assert_eq!(text, NEGOTIATED_TEXT.repeat(200), "gzip: {gzip}");
                    let accepts_gzip = headers.iter().any(|(_, v)| v.contains("gzip"));
                    assert!(
                        !gzip || accepts_gzip,
                        "gzip sent to a client that does not accept it"
                    );
                    served += 1;
                }
                served
            })
        })
        .collect();
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap();
    }
    let requests = origin.requests("/negotiated").len();
    report(
        &format!("herds::vary_accept_encoding ({gateways} gateway(s))"),
        serde_json::json!({
            "client requests served": served, "origin requests": requests,
            "populations": 3, "run (s)": run.as_secs(), "max-age (s)": 2,
            "origin delay (ms)": 200,
        }),
    );
    // The first fill at 0 s, then one refresh per lifetime: each answer
    // arrives 0.2 s old (RFC 9111 §4.2.3 counts the response delay), so it
    // is fresh for 1.8 s and the refresh at expiry lands 0.2 s later — fills
    // start at 0, 2, 4, 6 and 8 s: 5 in 9 s, whatever the populations (one
    // stored variant per population would be three times that; XFetch
    // refreshing early on top of stale-while-revalidate made it 6-7).
    assert!(requests <= 5, "{requests} origin requests for {served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_one_stored_representation() {
    negotiated(None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_one_stored_representation_in_a_fleet() {
    let redis = RedisServer::start();
    negotiated(Some(&redis), 2).await;
}
