//! Issue 23: fills that survive their clients. A rebuild runs detached from
//! whichever client started it:
//!
//! * the leader's client disconnects 100 ms into a 1 s fill: the 20 requests
//!   waiting on it still get the whole answer, and the origin is asked once —
//!   on one gateway, and across a fleet of two on one Redis;
//! * 20 waiters disconnect (HTTP/1: the socket closed; HTTP/2: `RST_STREAM`
//!   on one connection): each leaves at once — the gateway's task count drops
//!   while the fill is still running — the fill goes on and stores its
//!   answer, and tasks and memory return to the idle level.
//!
//! Real processes: the gateway binary, read through its `/metrics`
//! (`gateway_runtime_alive_tasks`) and `/proc/<pid>/status` (`VmRSS`).

mod common;

use common::{GatewayProcess, VersionedOrigin, rss_kib};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tasks a rebuild in flight may hold besides its waiters: the leader's
/// connection, the detached flight, the lock holder, its lease renewal, the
/// body pump, the origin connection.
const LEADER_TASKS: f64 = 8.0;
/// Origin connections a round may leave in the client's pool (a task each,
/// until the pool's idle timeout): not held by any client.
const POOLED: f64 = 2.0;

/// An HTTP/1.1 GET of `path` on a raw socket, left open (the caller closes
/// it by dropping it, or reads the answer).
async fn open_get(port: u16, path: &str) -> TcpStream {
    open_get_with(port, path, "Connection: close\r\n").await
}

/// [`open_get`] with `extra` header lines: without `Connection: close` a
/// plain GET is served by the gateway's HTTP/1.1 lane, with it by hyper.
async fn open_get_with(port: u16, path: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Read a whole `Connection: close` answer (10 s at most).
async fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer timed out")
        .expect("answer failed");
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway's alive tokio tasks, as its `/metrics` says (refreshed every second).
async fn tasks(gw: &GatewayProcess) -> f64 {
    gw.counter("gateway_runtime_alive_tasks", "").await
}

/// Wait for the next refresh of the task gauge and return it.
async fn tasks_now(gw: &GatewayProcess) -> f64 {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tasks(gw).await
}

/// The idle task count: the gauge once it is steady (two equal readings).
async fn idle_tasks(gw: &GatewayProcess) -> f64 {
    let mut last = tasks_now(gw).await;
    for _ in 0..10 {
        let now = tasks_now(gw).await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn assert_whole_answer(answer: &str, version: u64) {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_eq!(common::version(body), Some(version), "{answer}");
}

/// The leader's client goes away 100 ms into a 1 s fill while 20 requests
/// wait on it (on `gateways`, round-robin): one origin request, 20 whole answers.
async fn leader_disconnects(gateways: &[&GatewayProcess], origin: &VersionedOrigin, path: &str) {
    let leader = open_get(gateways[0].port, path).await;
    origin.wait_gets(1).await;
    let t0 = Instant::now();
    let mut waiters = Vec::new();
    for i in 0..20 {
        let (port, path) = (gateways[i % gateways.len()].port, path.to_owned());
        waiters.push(tokio::spawn(async move {
            read_all(open_get(port, &path).await).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed())).await;
    drop(leader); // the leader's client disconnects mid-fill
    for w in waiters {
        assert_whole_answer(&w.await.unwrap(), 1);
    }
    assert_eq!(origin.gets(), 1, "the origin was asked once");
    // The fill stored its answer: the next request is a hit.
    let next = common::get(&gateways[0].url(path)).await;
    assert!(next.is_hit(), "{}", next.cache_status());
    assert_eq!(origin.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_disconnects_mid_fill_does_not_cancel_it() {
    let origin = VersionedOrigin::start(Duration::from_secs(1)).await;
    let gw =
        GatewayProcess::start("leader-gone", &["--origin", &origin.url(), "--ttl", "30s"]).await;
    leader_disconnects(&[&gw], &origin, "/items/1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_disconnects_mid_fill_does_not_cancel_it_across_a_fleet() {
    let redis = stampede_layer::testing::RedisServer::start();
    let origin = VersionedOrigin::start(Duration::from_secs(1)).await;
    let args = [
        "--origin",
        &origin.url(),
        "--ttl",
        "30s",
        "--redis",
        &redis.url(),
    ];
    let (g1, g2) = (
        GatewayProcess::start("fleet-1", &args).await,
        GatewayProcess::start("fleet-2", &args).await,
    );
    leader_disconnects(&[&g1, &g2], &origin, "/items/1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_disconnect_leave_at_once_and_free_what_they_held() {
    // A 3 s fill: long enough to see the waiters gone while it still runs.
    let origin = VersionedOrigin::start(Duration::from_secs(3)).await;
    let gw =
        GatewayProcess::start("waiters-gone", &["--origin", &origin.url(), "--ttl", "30s"]).await;
    // Warm up (allocator, pools, metrics) with one whole round, then idle.
    origin.set_delay(Duration::from_millis(200));
    let mut warm = Vec::new();
    for _ in 0..21 {
        let port = gw.port;
        warm.push(tokio::spawn(async move {
            read_all(open_get(port, "/items/99").await).await
        }));
    }
    for w in warm {
        assert_whole_answer(&w.await.unwrap(), 1);
    }
    origin.set_delay(Duration::from_secs(3));
    let idle = idle_tasks(&gw).await;
    let idle_rss = rss_kib(gw.pid());

    for round in 0..2u64 {
        let path = format!("/items/{}", round + 1);
        let gets = origin.gets();
        let leader = open_get(gw.port, &path).await;
        origin.wait_gets(gets + 1).await;
        // Round 0: hyper serves the waiters; round 1: the HTTP/1.1 lane
        // (kept-alive plain GETs), which must notice a close while it waits.
        let extra = if round == 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        let mut waiters = Vec::new();
        for _ in 0..20 {
            waiters.push(open_get_with(gw.port, &path, extra).await);
        }
        let busy = tasks_now(&gw).await; // ~1.1 s into the 3 s fill
        assert!(
            busy >= idle + 20.0,
            "round {round}: 21 connections, tasks {busy} (idle {idle})"
        );
        drop(waiters); // HTTP/1: every waiter closes its socket
        let left = tasks_now(&gw).await; // ~2.2 s: the fill still runs
        assert_eq!(origin.gets(), gets + 1, "one rebuild");
        // Left: the leader's connection and the rebuild's own tasks (the
        // detached flight, the lock holder and its lease renewal).
        assert!(
            left <= idle + LEADER_TASKS,
            "round {round}: waiters gone, tasks still {left} (idle {idle}, busy {busy})"
        );
        // The fill goes on to its end: the leader's answer, and it is stored.
        assert_whole_answer(&read_all(leader).await, 1);
        let next = common::get(&gw.url(&path)).await;
        assert!(next.is_hit(), "{}", next.cache_status());
        assert_eq!(origin.gets(), gets + 1);
    }
    let after = idle_tasks(&gw).await;
    assert!(
        after <= idle + POOLED,
        "tasks {after} after, {idle} idle before"
    );
    let rss = rss_kib(gw.pid());
    assert!(
        rss <= idle_rss + 8 * 1024,
        "memory {rss} KiB after, {idle_rss} KiB idle before"
    );
    common::report(
        "waiters_that_disconnect_leave_at_once_and_free_what_they_held",
        serde_json::json!({ "idle_tasks": idle, "tasks_after": after, "idle_rss_kib": idle_rss, "rss_after_kib": rss }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_waiters_that_reset_their_streams_leave_at_once() {
    let origin = VersionedOrigin::start(Duration::from_secs(3)).await;
    let gw = GatewayProcess::start(
        "h2-waiters-gone",
        &["--origin", &origin.url(), "--ttl", "30s"],
    )
    .await;
    // Warm up (allocator, HTTP/2 state, metrics) with one whole round on
    // another key, then idle: the bounds below are about what a round with
    // resets leaves behind, not about first use.
    origin.set_delay(Duration::from_millis(200));
    h2_round(gw.port, "/items/70").await;
    origin.set_delay(Duration::from_secs(3));
    let gets = origin.gets();
    let idle = idle_tasks(&gw).await;
    let idle_rss = rss_kib(gw.pid());

    // One HTTP/2 connection: the leader's stream and 20 waiters' streams.
    let tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let get = || {
        http::Request::get("http://localhost/items/7")
            .body(())
            .unwrap()
    };
    let mut send = send.ready().await.unwrap();
    let (leader, _) = send.send_request(get(), true).unwrap();
    origin.wait_gets(gets + 1).await;
    let mut waiters = Vec::new();
    for _ in 0..20 {
        send = send.ready().await.unwrap();
        let (resp, stream) = send.send_request(get(), true).unwrap();
        waiters.push((resp, stream));
    }
    let busy = tasks_now(&gw).await;
    assert!(
        busy >= idle + 20.0,
        "21 streams, tasks {busy} (idle {idle})"
    );
    for (resp, mut stream) in waiters {
        stream.send_reset(h2::Reason::CANCEL); // RST_STREAM
        drop(resp);
    }
    let left = tasks_now(&gw).await;
    assert_eq!(origin.gets(), gets + 1);
    assert!(
        left <= idle + LEADER_TASKS,
        "streams reset, tasks still {left} (idle {idle}, busy {busy})"
    );
    // The leader's stream, on the same connection, gets the whole answer.
    let resp = tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = h2_body(resp).await;
    assert_eq!(common::version(&String::from_utf8_lossy(&bytes)), Some(1));
    let next = common::get(&gw.url("/items/7")).await;
    assert!(next.is_hit(), "{}", next.cache_status());
    assert_eq!(origin.gets(), gets + 1);
    drop(send);
    conn.abort();
    let after = idle_tasks(&gw).await;
    assert!(
        after <= idle + POOLED,
        "tasks {after} after, {idle} idle before"
    );
    let rss = rss_kib(gw.pid());
    assert!(
        rss <= idle_rss + 8 * 1024,
        "memory {rss} KiB after, {idle_rss} KiB before"
    );
}

/// One whole HTTP/2 round on `path`: a leader and 20 waiters on one
/// connection, every answer read to its end.
async fn h2_round(port: u16, path: &str) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut answers = Vec::new();
    for _ in 0..21 {
        send = send.ready().await.unwrap();
        let req = http::Request::get(format!("http://localhost{path}"))
            .body(())
            .unwrap();
        answers.push(send.send_request(req, true).unwrap().0);
    }
    for answer in answers {
        let resp = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .unwrap()
            .unwrap();
        h2_body(resp).await;
    }
    drop(send);
    conn.abort();
}

/// An HTTP/2 answer's whole body, its flow-control window released as read.
async fn h2_body(resp: http::Response<h2::RecvStream>) -> Vec<u8> {
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    bytes
}
