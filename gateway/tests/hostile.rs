//! Hostile and broken input: malformed requests, huge URIs and headers, an
//! origin that sends garbage or stalls mid-body, oversized bodies, cache
//! poisoning attempts, `Vary` and `max-age` semantics. The gateway answers
//! (4xx/5xx, never a hang or a crash) and keeps serving afterwards.

mod common;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use common::{config, get as http_get, send, serve};
use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn origin() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/items/{id}",
            get(move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    "{\"id\":1}"
                }
            }),
        )
        .route(
            "/reflect",
            get(|h: HeaderMap| async move {
                let fwd = h
                    .get("x-forwarded-host")
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_else(|| "none".into());
                format!("<a href=\"https://{fwd}/\">home</a>")
            }),
        )
        .route(
            "/lang",
            get(|h: HeaderMap| async move {
                let lang = h
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_else(|| "en".into());
                ([("vary", "Accept-Language")], format!("hello in {lang}"))
            }),
        )
        .route(
            "/short",
            get(|| async { ([("cache-control", "max-age=1")], "short-lived") }),
        )
        .route("/big", get(|| async { "x".repeat(2 * 1024 * 1024) }));
    (serve(app).await, calls)
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_gateway_keeps_serving() {
    let (origin, _) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let garbage = raw(gw.addr, b"GARBAGE\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let bad_header = raw(
        gw.addr,
        b"GET /items/1 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(bad_header.starts_with("HTTP/1.1 400"), "{bad_header:?}");
    let huge_uri = format!(
        "GET /items/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "9".repeat(200_000)
    );
    let answer = raw(gw.addr, huge_uri.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{:?}",
        &answer[..answer.len().min(100)]
    );
    let huge_header = format!(
        "GET /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let answer = raw(gw.addr, huge_header.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{:?}",
        &answer[..answer.len().min(100)]
    );
    // Invalid percent-encoding is a normal request, not a crash.
    let odd = http_get(&format!("http://{}/items/%zz%", gw.addr)).await;
    assert!(
        odd.status.as_u16() < 500 || odd.status == 502,
        "{}",
        odd.status
    );
    // Still serving.
    assert_eq!(
        http_get(&format!("http://{}/items/1", gw.addr))
            .await
            .status,
        200
    );
    gw.shutdown().await.unwrap();
}

/// A TCP "origin" that answers every connection with `reply`, then (if
/// `stall`) keeps the connection open without sending more.
async fn raw_origin(reply: &'static [u8], stall: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_origin_sending_garbage_is_a_502() {
    let origin = raw_origin(b"THIS IS NOT HTTP\r\n\r\n", false).await;
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let a = http_get(&format!("http://{}/items/1", gw.addr)).await;
    assert_eq!(a.status, 502);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_origin_stalling_mid_body_does_not_hang_the_gateway() {
    let origin = raw_origin(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
        true,
    )
    .await;
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let t = Instant::now();
    let a = http_get(&format!("http://{}/items/1", gw.addr)).await;
    // The cache buffers the body: the stall (500 ms upstream timeout in the
    // test config) turns into a 502 instead of a hang, and nothing is cached.
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_buffer_limit_stream_through_uncached() {
    let (origin, _) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--max-body-bytes", "1048576"]))
        .await
        .unwrap();
    let url = format!("http://{}/big", gw.addr);
    for _ in 0..2 {
        let a = http_get(&url).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), 2 * 1024 * 1024, "the body arrives whole");
        assert!(!a.cache_status().contains("stored"), "{}", a.cache_status());
        assert!(!a.cache_status().contains("; hit"), "{}", a.cache_status());
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn unkeyed_headers_cannot_poison_the_cache() {
    let (origin, _) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--ttl", "30s"]))
        .await
        .unwrap();
    let url = format!("http://{}/reflect", gw.addr);
    let attack = send(
        Method::GET,
        &url,
        &[("x-forwarded-host", "evil.example")],
        "",
    )
    .await;
    assert!(!attack.body.contains("evil"), "{}", attack.body);
    let victim = http_get(&url).await;
    assert!(
        victim.cache_status().contains("; hit"),
        "{}",
        victim.cache_status()
    );
    assert!(!victim.body.contains("evil"), "{}", victim.body);
    // Equivalent URIs share one entry; a different query does not.
    let a = http_get(&format!("http://{}/items/1?b=2&a=1", gw.addr)).await;
    let b = http_get(&format!("http://{}/items/1?a=1&b=2", gw.addr)).await;
    assert!(!a.cache_status().contains("; hit"));
    assert!(b.cache_status().contains("; hit"), "{}", b.cache_status());
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn vary_and_max_age_are_honoured() {
    let (origin, _) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--ttl", "30s"]))
        .await
        .unwrap();
    let url = format!("http://{}/lang", gw.addr);
    let en = send(Method::GET, &url, &[("accept-language", "en")], "").await;
    assert_eq!(en.body, "hello in en");
    let fr = send(Method::GET, &url, &[("accept-language", "fr")], "").await;
    assert_eq!(fr.body, "hello in fr", "served another language's entry");
    assert!(
        fr.cache_status().contains("vary-miss"),
        "{}",
        fr.cache_status()
    );

    let short = format!("http://{}/short", gw.addr);
    http_get(&short).await;
    assert!(http_get(&short).await.cache_status().contains("; hit"));
    let ttl = http_get(&short).await.cache_status();
    assert!(
        ttl.contains("ttl=0") || ttl.contains("ttl=1"),
        "max-age=1 must win over --ttl 30s: {ttl}"
    );
    gw.shutdown().await.unwrap();
}
