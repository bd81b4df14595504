//! A fleet on a bad day, with real processes (redis-server, gateways, an
//! HTTP origin) on 127.0.0.1, bounded in time: an origin slower than the
//! lock, a purge racing a rebuild, a flood of distinct keys, a gateway
//! started while Redis is down.

mod common;

use axum::Router;
use axum::routing::get;
use common::{config, get as http_get, report, send, serve};
use http::Method;
use stampede_layer::testing::{RedisServer, free_port};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An origin whose `/items/{id}` takes `delay`, answers `v<n>` (n counts its
/// calls) with `max-age`, and records how many calls ran at once at most.
struct Origin {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicU64>,
    max_in_flight: Arc<AtomicU64>,
}

async fn origin(delay: Duration, max_age: u64) -> Origin {
    let calls = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let (c, f, m) = (calls.clone(), in_flight.clone(), max_in_flight.clone());
    let app = Router::new().route(
        "/items/{id}",
        get(move || {
            let (c, f, m) = (c.clone(), f.clone(), m.clone());
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                f.fetch_sub(1, Ordering::SeqCst);
                (
                    [("cache-control", format!("max-age={max_age}"))],
                    format!("v{n}"),
                )
            }
        })
        .post(|| async { "posted" }),
    );
    Origin {
        addr: serve(app).await,
        calls,
        max_in_flight,
    }
}

/// Three gateways on one Redis; an origin three times slower than the lock.
/// With lease renewal the stale hot key is rebuilt by one gateway at a time;
/// without it the lock expires mid-rebuild and the others take over.
async fn slow_origin_run(renewal: bool) -> (u64, u64) {
    let redis = RedisServer::start();
    let url = redis.url();
    let origin = origin(Duration::from_millis(1500), 1).await;
    let mut flags = vec![
        "--redis",
        &url,
        "--upstream-timeout",
        "5s",
        "--lock-ttl",
        "500ms",
        "--stale-ttl",
        "20s",
        "--jitter",
        "0",
        "--xfetch-beta",
        "0",
    ];
    if !renewal {
        flags.push("--no-lock-renewal");
    }
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(
            gateway::spawn(config(origin.addr, "all", &flags))
                .await
                .unwrap(),
        );
    }
    // Fill the hot key, then let it go stale (max-age=1).
    assert_eq!(
        http_get(&format!("http://{}/items/1", gws[0].addr))
            .await
            .body,
        "v1"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.max_in_flight.store(0, Ordering::SeqCst);
    let before = origin.calls.load(Ordering::SeqCst);
    // 2.5 s of reads at every gateway: each is answered stale at once and
    // asks for a background refresh of the (slow) hot key.
    let stop = Instant::now() + Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for gw in &gws {
        let url = format!("http://{}/items/1", gw.addr);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let a = http_get(&url).await;
                assert_eq!(a.status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let the rebuilds in flight finish before reading the counters.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let max = origin.max_in_flight.load(Ordering::SeqCst);
    let calls = origin.calls.load(Ordering::SeqCst) - before;
    for gw in gws {
        gw.shutdown().await.unwrap();
    }
    (max, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_slower_than_the_lock_gets_one_rebuild_at_a_time() {
    let (renewed_max, renewed_calls) = slow_origin_run(true).await;
    let (expired_max, expired_calls) = slow_origin_run(false).await;
    report(
        "fleet_faults::an_origin_slower_than_the_lock_gets_one_rebuild_at_a_time",
        serde_json::json!({
            "origin latency / lock TTL": "1.5 s / 0.5 s, 3 gateways",
            "hot-key rebuilds in flight at once, with renewal": renewed_max,
            "origin calls in 2.5 s, with renewal": renewed_calls,
            "hot-key rebuilds in flight at once, without renewal": expired_max,
            "origin calls in 2.5 s, without renewal": expired_calls,
        }),
    );
    assert_eq!(renewed_max, 1, "renewed lock: one rebuild at a time");
    assert!(
        expired_max >= 2,
        "without renewal the lock expires mid-rebuild and another gateway takes over \
         (the failure this test guards against): {expired_max}"
    );
}

/// A purge that lands while a rebuild is in flight wins: the rebuild's
/// answer (fetched before the purge) is refused by the store, so the next
/// request goes to the origin instead of being served the purged version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_rebuild_is_not_undone_by_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let origin = origin(Duration::from_millis(600), 60).await;
    for store in ["memory", "redis"] {
        let mut flags = vec!["--admin-token", "t", "--upstream-timeout", "5s"];
        if store == "redis" {
            flags.extend(["--redis", &url]);
        }
        let gw = gateway::spawn(config(origin.addr, "all", &flags))
            .await
            .unwrap();
        let path = format!("/items/{}", free_port());
        let item = format!("http://{}{path}", gw.addr);
        let calls_before = origin.calls.load(Ordering::SeqCst);
        let first = tokio::spawn({
            let item = item.clone();
            async move { http_get(&item).await.body }
        });
        // Purge while the rebuild is at the origin (its lock, and token, taken).
        let deadline = Instant::now() + Duration::from_secs(5);
        while origin.calls.load(Ordering::SeqCst) == calls_before {
            assert!(
                Instant::now() < deadline,
                "{store}: the rebuild never reached the origin"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let purge = send(
            Method::POST,
            &format!("http://{}/admin/purge", gw.admin_addr),
            &[
                ("authorization", "Bearer t"),
                ("content-type", "application/json"),
            ],
            &format!("{{\"paths\":[\"{path}\"]}}"),
        )
        .await;
        assert_eq!(purge.status, 200, "{store}: {}", purge.body);
        let before_purge = first.await.unwrap();
        let after = http_get(&item).await;
        assert_ne!(
            after.body,
            before_purge,
            "{store}: the answer fetched before the purge was stored after it ({})",
            after.cache_status()
        );
        // The new answer is cached as usual.
        assert_eq!(http_get(&item).await.body, after.body, "{store}");
        gw.shutdown().await.unwrap();
    }
}

/// A flood of distinct keys (a random query string per request, 404s and
/// 200s, a POST that invalidates) leaves nothing behind: every key the
/// gateway writes (entry, lock, fence record) expires with what it serves or
/// the last lease drawn on it, and a purge adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_leaves_redis_as_it_found_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let origin = origin(Duration::ZERO, 1).await;
    let gw = gateway::spawn(config(
        origin.addr,
        "all",
        &[
            "--redis",
            &url,
            "--stale-ttl",
            "1s",
            "--stale-if-error",
            "1s",
            "--negative-ttl",
            "1s",
            "--jitter",
            "0",
        ],
    ))
    .await
    .unwrap();
    let base = format!("http://{}", gw.addr);
    let memory_before = redis.info_field("memory", "used_memory");
    const N: u64 = 2000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(8) {
                let a = http_get(&format!("{base}/items/1?flood={i}")).await;
                assert_eq!(a.status, 200);
                if i % 10 == 0 {
                    // An unsafe method invalidates (and fences) the key.
                    let p = send(Method::POST, &format!("{base}/items/1?flood={i}"), &[], "").await;
                    assert_eq!(p.status, 200);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let flood_end = Instant::now();
    let keys_after_flood: u64 = redis.cli(&["DBSIZE"]).parse().unwrap();
    let memory_after_flood = redis.info_field("memory", "used_memory");
    assert!(keys_after_flood > 0, "the flood reached Redis");
    // Every key has an expiry: nothing can outlive what it serves.
    let keys = redis.cli(&["--scan"]);
    let mut without_expiry = Vec::new();
    for key in keys.lines().take(500) {
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        if ttl == -1 {
            without_expiry.push(key.to_owned());
        }
    }
    assert!(
        without_expiry.is_empty(),
        "keys without expiry: {without_expiry:?}"
    );
    // Entries live 1 s fresh + 1 s stale, fence records a lock TTL (2 s) past
    // the last lease drawn on them: nothing is left. (Polled: the last
    // entries of a slow flood, and background refreshes still landing,
    // expire a little later.)
    let left = 0;
    let keys_after_expiry: u64 = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let keys: u64 = redis.cli(&["DBSIZE"]).parse().unwrap();
        if keys <= left || flood_end.elapsed() > Duration::from_secs(8) {
            break keys;
        }
    };
    let drained_after = flood_end.elapsed();
    let memory_after_expiry = redis.info_field("memory", "used_memory");
    report(
        "fleet_faults::a_flood_of_distinct_keys_leaves_redis_as_it_found_it",
        serde_json::json!({
            "distinct keys requested": N,
            "of them invalidated by a POST": N / 10,
            "flood duration (s)": format!("{flood_secs:.1}"),
            "Redis keys right after the flood": keys_after_flood,
            "Redis keys once the entries expired": keys_after_expiry,
            "seconds from the flood's end until then": format!("{:.1}", drained_after.as_secs_f64()),
            "Redis used_memory before / after the flood / once expired (bytes)":
                format!("{memory_before} / {memory_after_flood} / {memory_after_expiry}"),
        }),
    );
    // Nothing is left.
    assert!(
        keys_after_expiry <= left,
        "{keys_after_expiry} keys left after expiry"
    );
    gw.shutdown().await.unwrap();
}

const PASSWORD: &str = "hunter2-s3cret";

/// The gateway binary, killed (by PID) when dropped, its stderr in a file.
struct Running {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("gateway-{}.log", free_port()));
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start gateway");
        Running { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Poll `url` until `ok` accepts the answer (at most `within`).
async fn until(
    url: &str,
    within: Duration,
    ok: impl Fn(&common::Answer) -> bool,
) -> common::Answer {
    let deadline = Instant::now() + within;
    loop {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), client.get(url.parse().unwrap())).await
        {
            use http_body_util::BodyExt;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let answer = common::Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            if ok(&answer) {
                return answer;
            }
        }
        assert!(Instant::now() < deadline, "{url}: no acceptable answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway started while Redis is down comes up on its in-process
/// fallback, serves, says `degraded` on /readyz (503 with
/// --readyz-requires-redis), and joins Redis once it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_during_a_redis_outage_comes_up_and_joins_later() {
    let origin = origin(Duration::ZERO, 60).await;
    let port = free_port();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let (listen, admin) = (free_port(), free_port());
    let args = |listen: u16, admin: u16, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--redis",
            &url,
            "--origin",
            &format!("http://{}", origin.addr),
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let started = Instant::now();
    let a = args(listen, admin, &[]);
    let gw = Running::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let ready = until(
        &format!("http://127.0.0.1:{admin}/readyz"),
        Duration::from_secs(10),
        |a| a.status == 200,
    )
    .await;
    let up_after = started.elapsed();
    assert!(ready.body.contains("degraded"), "{}", ready.body);
    let served = until(
        &format!("http://127.0.0.1:{listen}/items/1"),
        Duration::from_secs(5),
        |a| a.status == 200,
    )
    .await;
    assert_eq!(served.body, "v1");

    // The strict variant keeps itself out of the load balancer meanwhile.
    let (listen2, admin2) = (free_port(), free_port());
    let b = args(listen2, admin2, &["--readyz-requires-redis"]);
    let strict = Running::start(&b.iter().map(String::as_str).collect::<Vec<_>>());
    until(
        &format!("http://127.0.0.1:{admin2}/healthz"),
        Duration::from_secs(10),
        |a| a.status == 200,
    )
    .await;
    let r = http_get(&format!("http://127.0.0.1:{admin2}/readyz")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("degraded"), "{}", r.body);

    // Redis appears: both join it by themselves.
    let redis = RedisServer::start_on(port, &["--requirepass", PASSWORD]);
    let joined_at = Instant::now();
    for admin in [admin, admin2] {
        until(
            &format!("http://127.0.0.1:{admin}/readyz"),
            Duration::from_secs(15),
            |a| a.status == 200 && a.body == "ready\n",
        )
        .await;
    }
    let joined_after = joined_at.elapsed();
    // Fills now land in Redis.
    let fresh = until(
        &format!("http://127.0.0.1:{listen}/items/2"),
        Duration::from_secs(5),
        |a| a.status == 200,
    )
    .await;
    assert!(fresh.body.starts_with('v'));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: u64 = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port().to_string(),
                "-a",
                PASSWORD,
                "--no-auth-warning",
                "DBSIZE",
            ])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0);
        if keys > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fill reached Redis after it appeared"
        );
        http_get(&format!("http://127.0.0.1:{listen}/items/{}", free_port())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The join is logged (polled every 250 ms by the gateway).
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = gw.logs() + &strict.logs();
        if logs.matches("Redis reached").count() >= 2 || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(logs.contains("cannot reach Redis yet"), "{logs}");
    assert_eq!(logs.matches("Redis reached").count(), 2, "{logs}");
    assert!(!logs.contains(PASSWORD), "the password was logged");
    report(
        "fleet_faults::a_gateway_started_during_a_redis_outage_comes_up_and_joins_later",
        serde_json::json!({
            "ready (degraded) after start (ms)": up_after.as_millis() as u64,
            "ready on Redis after it appeared (ms)": joined_after.as_millis() as u64,
        }),
    );
}
