//! Forwarding headers (RFC 9110 §7.6.3, RFC 7239), seen by an origin that
//! echoes what it received: the gateway adds `Via` both ways and replaces (by
//! default) or appends to the client's `X-Forwarded-For` / `Forwarded`.

mod common;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use common::{config, send, serve};
use http::Method;

/// Every value of `name`, comma-joined ("" when absent).
fn all(h: &HeaderMap, name: &str) -> String {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An origin answering each `/echo/{n}` with the forwarding headers it got.
async fn echo_origin() -> std::net::SocketAddr {
    serve(Router::new().route(
        "/echo/{n}",
        get(|h: HeaderMap| async move {
            (
                [("via", "1.1 origin-side")],
                serde_json::json!({
                    "xff": all(&h, "x-forwarded-for"),
                    "forwarded": all(&h, "forwarded"),
                    "via": all(&h, "via"),
                    "x-real-ip": all(&h, "x-real-ip"),
                })
                .to_string(),
            )
        }),
    ))
    .await
}

const SPOOFED: [(&str, &str); 4] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("via", "1.0 client-side"),
];

#[tokio::test]
async fn client_forwarding_headers_are_replaced_by_default_and_via_is_added() {
    let gw = gateway::spawn(config(echo_origin().await, "all", &["--ttl", "30s"]))
        .await
        .unwrap();
    let url = format!("http://{}/echo/1", gw.addr);
    let a = send(Method::GET, &url, &SPOOFED, "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let seen: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(seen["xff"], "127.0.0.1", "{seen}");
    assert_eq!(seen["forwarded"], "for=127.0.0.1", "{seen}");
    assert_eq!(seen["x-real-ip"], "", "{seen}");
    assert_eq!(seen["via"], "1.0 client-side, 1.1 stampede", "{seen}");
    assert_eq!(all(&a.headers, "via"), "1.1 origin-side, 1.1 stampede");
    // A cached answer is forwarded too: one Via of ours, not one per hit.
    let hit = send(Method::GET, &url, &[], "").await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(all(&hit.headers, "via"), "1.1 origin-side, 1.1 stampede");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn append_keeps_the_client_chain_and_adds_the_peer() {
    let gw = gateway::spawn(config(
        echo_origin().await,
        "all",
        &["--forwarded-headers", "append", "--via", "edge-7"],
    ))
    .await
    .unwrap();
    let a = send(
        Method::GET,
        &format!("http://{}/echo/2", gw.addr),
        &SPOOFED,
        "",
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(seen["xff"], "6.6.6.6, 127.0.0.1", "{seen}");
    // Only `for=` survives from the client's Forwarded: `host=`/`proto=` are
    // outside the cache key (a poisoning vector), like X-Forwarded-Host.
    assert_eq!(seen["forwarded"], "for=6.6.6.6, for=127.0.0.1", "{seen}");
    assert_eq!(seen["x-real-ip"], "6.6.6.6", "{seen}");
    assert_eq!(seen["via"], "1.0 client-side, 1.1 edge-7", "{seen}");
    assert_eq!(all(&a.headers, "via"), "1.1 origin-side, 1.1 edge-7");
    gw.shutdown().await.unwrap();
}
