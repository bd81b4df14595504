//! The admin API checks its bearer token before it reads a byte of the body:
//! a caller without the token learns nothing from how its body is judged
//! (400, 413, 415) and cannot make the gateway buffer it.

mod common;

use axum::Router;
use common::{config, send, serve};
use http::Method;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send a POST whose headers promise `len` body bytes, send only the first
/// 16 KiB of it, and return the status line the gateway answers with.
async fn post_promising(addr: std::net::SocketAddr, auth: &str, len: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /admin/purge HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n{{\"paths\":[\"{}",
        "a".repeat(16 * 1024)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        other => format!("no answer: {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_token_is_401_whatever_the_body() {
    let origin = serve(Router::new()).await;
    let gw = gateway::spawn(config(origin, "all", &["--admin-token", "right-token"]))
        .await
        .unwrap();
    let purge = format!("http://{}/admin/purge", gw.admin_addr);
    let json = ("content-type", "application/json");
    for (auth, ct, body) in [
        (Some("Bearer wrong-token"), Some(json), "{{{ not json"),
        (None, Some(json), "{{{ not json"),
        (
            Some("Bearer wrong-token"),
            None,
            "{\"paths\":[\"/items/1\"]}",
        ),
        (Some("Bearer right-token-but-longer"), Some(json), "[]"),
        (
            Some("Basic right-token"),
            Some(json),
            "{\"paths\":[\"nope\"]}",
        ),
    ] {
        let mut headers = Vec::new();
        headers.extend(auth.map(|a| ("authorization", a)));
        headers.extend(ct);
        let a = send(Method::POST, &purge, &headers, body).await;
        assert_eq!(a.status, 401, "{auth:?} {ct:?} {body:?}: {}", a.body);
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    // A huge body behind a wrong token is refused before it is read.
    let line = post_promising(gw.admin_addr, "Authorization: Bearer wrong\r\n", 50 << 20).await;
    assert!(line.starts_with("HTTP/1.1 401"), "{line}");
    let line = post_promising(gw.admin_addr, "", 50 << 20).await;
    assert!(line.starts_with("HTTP/1.1 401"), "{line}");

    // With the right token the body is judged as before.
    let ok = [("authorization", "Bearer right-token"), json];
    let bad = send(Method::POST, &purge, &ok, "{{{ not json").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let bad = send(Method::POST, &purge, &ok, "{\"paths\":[\"nope\"]}").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let good = send(Method::POST, &purge, &ok, "{\"paths\":[\"/items/1\"]}").await;
    assert_eq!(good.status, 200, "{}", good.body);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_disabled_admin_api_is_403_whatever_the_body() {
    let origin = serve(Router::new()).await;
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let a = send(
        Method::POST,
        &format!("http://{}/admin/warm", gw.admin_addr),
        &[("content-type", "application/json")],
        "{{{ not json",
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    gw.shutdown().await.unwrap();
}
