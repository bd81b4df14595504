//! Slow, idle and greedy clients against a real gateway (issue 11): the
//! header-read timeout, the keep-alive idle timeout, the request-header size
//! limit and the connection cap, on both listeners, while normal traffic is
//! served. Every assertion on time is "closed within the timeout plus a
//! generous slack", never a performance figure.

mod common;

use axum::Router;
use axum::routing::get;
use common::{config, get as http_get, serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slack on every "closed within" assertion (the machine is shared).
const SLACK: Duration = Duration::from_secs(4);

async fn origin() -> SocketAddr {
    serve(Router::new().route("/items/{id}", get(|| async { "{\"id\":1}" }))).await
}

const REQUEST: &[u8] = b"GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n";

/// Read one whole `200` answer to [`REQUEST`] from `s` (the body ends the answer).
async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&out).ends_with("{\"id\":1}") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => panic!(
                "no whole answer ({other:?}): {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Wait until the server closes `s` (EOF or reset), writing `trickle` every
/// 300 ms meanwhile when given. `None` if still open after `limit`; else the
/// time it took and whatever the server sent.
async fn wait_closed(
    s: &mut TcpStream,
    trickle: Option<&[u8]>,
    limit: Duration,
) -> Option<(Duration, String)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((t0.elapsed(), String::from_utf8_lossy(&got).into_owned()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                if let Some(line) = trickle
                    && s.write_all(line).await.is_err()
                {
                    return Some((t0.elapsed(), String::from_utf8_lossy(&got).into_owned()));
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_within_the_timeouts_while_traffic_is_served() {
    let header_timeout = Duration::from_secs(1);
    let idle_timeout = Duration::from_secs(2);
    let gw = gateway::spawn(config(
        origin().await,
        "all",
        &["--header-read-timeout", "1s", "--idle-timeout", "2s"],
    ))
    .await
    .unwrap();
    let (addr, admin) = (gw.addr, gw.admin_addr);
    let mut clients = Vec::new();
    for i in 0..60 {
        let target = if i % 4 == 0 { admin } else { addr };
        let kind = i % 3;
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(target).await.unwrap();
            let (limit, closed) = match kind {
                // Slowloris: a header line every 300 ms, never the blank line.
                0 => {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                        .await
                        .unwrap();
                    let closed =
                        wait_closed(&mut s, Some(b"X-Slow: 1\r\n"), Duration::from_secs(12));
                    (header_timeout, closed.await)
                }
                // Connects and sends nothing: the first request's header clock runs from accept.
                1 => (
                    header_timeout,
                    wait_closed(&mut s, None, Duration::from_secs(12)).await,
                ),
                // One request, then idle on a kept-alive connection.
                _ => {
                    let path = if target == admin {
                        "/healthz"
                    } else {
                        "/items/1"
                    };
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
                    (
                        idle_timeout,
                        wait_closed(&mut s, None, Duration::from_secs(12)).await,
                    )
                }
            };
            (kind, limit, closed)
        }));
    }
    // Normal traffic meanwhile: fresh connections, and a client that sends its
    // request in pieces but completes it within the header timeout.
    let mut served = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            http_get(&format!("http://{addr}/items/1")).await.status,
            200
        );
        served += 1;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for part in REQUEST.chunks(12) {
            s.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
        served += 1;
    }
    let mut figures = [Duration::ZERO; 3];
    for c in clients {
        let (kind, limit, closed) = c.await.unwrap();
        let (took, sent) = closed.unwrap_or_else(|| {
            panic!("client kind {kind} still open after 12 s (timeout {limit:?})")
        });
        assert!(
            took >= limit.mul_f64(0.8) && took <= limit + SLACK,
            "client kind {kind}: closed after {took:?}, timeout {limit:?}"
        );
        assert!(
            !sent.contains("200 OK"),
            "kind {kind} was answered: {sent:?}"
        );
        figures[kind] = figures[kind].max(took);
    }
    assert!(served >= 4, "{served}");
    common::report(
        "slow_and_idle_clients",
        serde_json::json!({
            "clients": 60,
            "header_read_timeout_ms": 1000,
            "idle_timeout_ms": 2000,
            "max_close_ms": {
                "slowloris": figures[0].as_millis() as u64,
                "silent": figures[1].as_millis() as u64,
                "idle_keepalive": figures[2].as_millis() as u64,
            },
            "normal_requests_served": served,
        }),
    );
    gw.shutdown().await.unwrap();
}

/// Send `head` (a request whose headers may be huge) from a separate task and
/// read what the server answers, until it closes or 5 s pass.
async fn send_head(addr: SocketAddr, head: String) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        wr
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out.ends_with(b"{\"id\":1}") && !out.ends_with(b"ok\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

fn head_with(path: &str, header_bytes: usize) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(header_bytes)
    )
}

#[tokio::test]
async fn request_headers_over_the_limit_get_431() {
    let origin = origin().await;
    // Default limit: 64 KiB.
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let huge = send_head(gw.addr, head_with("/items/1", 200_000)).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{:.80?}", huge);
    let admin = send_head(gw.admin_addr, head_with("/healthz", 200_000)).await;
    assert!(admin.starts_with("HTTP/1.1 431"), "{:.80?}", admin);
    let under = send_head(gw.addr, head_with("/items/1", 60_000)).await;
    assert!(under.starts_with("HTTP/1.1 200"), "{:.80?}", under);
    gw.shutdown().await.unwrap();

    let gw = gateway::spawn(config(origin, "all", &["--max-header-bytes", "8192"]))
        .await
        .unwrap();
    let over = send_head(gw.addr, head_with("/items/1", 10_000)).await;
    assert!(over.starts_with("HTTP/1.1 431"), "{:.80?}", over);
    let under = send_head(gw.addr, head_with("/items/1", 6_000)).await;
    assert!(under.starts_with("HTTP/1.1 200"), "{:.80?}", under);
    gw.shutdown().await.unwrap();
}

/// Connect and complete one request on a kept-alive connection.
async fn kept_alive(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    s
}

/// A connection over the cap: what the server sends before closing it.
async fn refused(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let closed = wait_closed(&mut s, None, Duration::from_secs(3)).await;
    let (_, sent) = closed.expect("a connection over the cap is closed at once, not kept");
    sent
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503() {
    let gw = gateway::spawn(config(
        origin().await,
        "all",
        &[
            "--max-connections",
            "4",
            "--admin-max-connections",
            "2",
            "--idle-timeout",
            "60s",
            "--header-read-timeout",
            "30s",
        ],
    ))
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(kept_alive(gw.addr, REQUEST).await);
    }
    let sent = refused(gw.addr).await;
    assert!(sent.starts_with("HTTP/1.1 503"), "{sent:?}");
    assert!(sent.contains("connection: close"), "{sent:?}");

    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let admin_held = [
        kept_alive(gw.admin_addr, health).await,
        kept_alive(gw.admin_addr, health).await,
    ];
    assert!(refused(gw.admin_addr).await.starts_with("HTTP/1.1 503"));

    // A slot freed is a slot reused; the held connections still work.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let _ = s.write_all(REQUEST).await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = held.pop().unwrap();
    s.write_all(REQUEST).await.unwrap();
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"));
    drop(admin_held);
    drop(held);
    drop(s);
    gw.shutdown().await.unwrap();
}
