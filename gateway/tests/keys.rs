//! Shaping the cache key and the credential rule from the command line:
//! `--key-header` (a tenant header scopes the key), `--preserve-host` (one
//! gateway in front of several sites), `--credential-header` (an API key
//! bypasses the cache like `Authorization`).

mod common;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use common::{config, send, serve};
use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An origin answering with the tenant and the host it was asked for.
async fn origin() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/page",
        get(move |headers: HeaderMap| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let value = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                (
                    [("cache-control", "max-age=60")],
                    format!("tenant={} host={}", value("x-tenant"), value("host")),
                )
            }
        }),
    );
    (serve(app).await, calls)
}

#[tokio::test]
async fn a_key_header_scopes_the_cache_per_tenant() {
    let (origin, calls) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--key-header", "X-Tenant"]))
        .await
        .unwrap();
    let url = format!("http://{}/page", gw.addr);
    for tenant in ["a", "b", "a", "b"] {
        let r = send(Method::GET, &url, &[("x-tenant", tenant)], "").await;
        assert!(
            r.body.starts_with(&format!("tenant={tenant} ")),
            "{}",
            r.body
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one fill per tenant");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn preserve_host_forwards_the_clients_host_and_scopes_by_it() {
    let (origin, calls) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--preserve-host"]))
        .await
        .unwrap();
    let url = format!("http://{}/page", gw.addr);
    for host in ["one.example", "two.example", "one.example"] {
        let r = send(Method::GET, &url, &[("host", host)], "").await;
        assert!(r.body.ends_with(&format!("host={host}")), "{}", r.body);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one fill per host");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_credential_header_bypasses_the_cache() {
    let (origin, calls) = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--credential-header", "x-api-key"]))
        .await
        .unwrap();
    let url = format!("http://{}/page", gw.addr);
    send(Method::GET, &url, &[], "").await;
    let keyed = send(Method::GET, &url, &[("x-api-key", "secret")], "").await;
    assert!(
        keyed.cache_status().contains("fwd=bypass"),
        "{}",
        keyed.cache_status()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "never answered from the cache"
    );
    gw.shutdown().await.unwrap();
}
