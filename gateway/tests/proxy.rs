//! The gateway as a reverse proxy: headers, errors, pass-through, Cache-Status,
//! the admin listener and the pre-warm gate — real HTTP on 127.0.0.1.

mod common;

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::get;
use common::{config, get as http_get, send, serve};
use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An origin that echoes request headers and counts calls, plus slow and
/// versioned routes.
async fn test_origin() -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let version = Arc::new(AtomicU64::new(1));
    let (c, v, v2) = (calls.clone(), version.clone(), version.clone());
    let app = Router::new()
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let mut names: Vec<String> =
                    headers.keys().map(|k| k.as_str().to_owned()).collect();
                names.sort();
                let host = headers
                    .get("host")
                    .map(|h| h.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (
                    [
                        ("connection", "x-origin-private"),
                        ("x-origin-private", "1"),
                    ],
                    format!("host={host} headers={}", names.join(",")),
                )
            }),
        )
        .route(
            "/items/{id}",
            get(move |Path(id): Path<u64>| {
                let c = c.clone();
                let v = v.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    format!("{{\"id\":{id},\"version\":{}}}", v.load(Ordering::SeqCst))
                }
            })
            .put(move || {
                let v = v2.clone();
                async move { format!("{}", v.fetch_add(1, Ordering::SeqCst) + 1) }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/private",
            get(|| async { ([("cache-control", "private, max-age=60")], "mine") }),
        );
    (serve(app).await, calls, version)
}

#[tokio::test]
async fn proxies_and_strips_hop_by_hop_headers() {
    let (origin, _, _) = test_origin().await;
    let gw = gateway::spawn(config(origin, "none", &[])).await.unwrap();
    let a = send(
        Method::GET,
        &format!("http://{}/echo", gw.addr),
        &[
            ("connection", "x-client-private"),
            ("x-client-private", "1"),
            ("x-kept", "1"),
            ("host", "evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains(&format!("host={origin}")), "{}", a.body);
    assert!(a.body.contains("x-kept"), "{}", a.body);
    assert!(!a.body.contains("x-client-private"), "{}", a.body);
    assert!(!a.headers.contains_key("x-origin-private"));
    assert!(a.cache_status().starts_with("stampede"), "{:?}", a.headers);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_origin_is_502_quickly() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = gateway::spawn(config(closed, "all", &[])).await.unwrap();
    let t = Instant::now();
    let a = http_get(&format!("http://{}/items/1", gw.addr)).await;
    assert_eq!(a.status, 502);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn stalled_origin_is_504_at_the_upstream_timeout() {
    let (origin, _, _) = test_origin().await;
    let gw = gateway::spawn(config(origin, "none", &[])).await.unwrap();
    let t = Instant::now();
    let a = http_get(&format!("http://{}/slow", gw.addr)).await;
    assert_eq!(a.status, 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn caches_gets_and_passes_writes_through_invalidating() {
    let (origin, calls, _) = test_origin().await;
    let gw = gateway::spawn(config(origin, "none", &["--ttl", "30s"]))
        .await
        .unwrap();
    let url = format!("http://{}/items/7", gw.addr);
    let first = http_get(&url).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    let second = http_get(&url).await;
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A write passes through (not cached) and invalidates the GET entry.
    let put = send(Method::PUT, &url, &[], "").await;
    assert_eq!(put.status, 200);
    assert!(
        put.cache_status().contains("fwd=method"),
        "{}",
        put.cache_status()
    );
    let third = http_get(&url).await;
    assert!(
        third.cache_status().contains("fwd="),
        "{}",
        third.cache_status()
    );
    assert!(third.body.contains("\"version\":2"), "{}", third.body);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // HEAD is answered from the cached GET, without a body.
    let head = send(Method::HEAD, &url, &[], "").await;
    assert!(
        head.cache_status().contains("; hit"),
        "{}",
        head.cache_status()
    );
    assert!(head.body.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn private_and_credentialed_answers_are_not_cached() {
    let (origin, calls, _) = test_origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--ttl", "30s"]))
        .await
        .unwrap();
    let private = format!("http://{}/private", gw.addr);
    http_get(&private).await;
    let again = http_get(&private).await;
    assert!(
        !again.cache_status().contains("; hit"),
        "{}",
        again.cache_status()
    );

    let url = format!("http://{}/items/9", gw.addr);
    for _ in 0..2 {
        let a = send(Method::GET, &url, &[("authorization", "Bearer x")], "").await;
        assert!(
            a.cache_status().contains("fwd=bypass"),
            "{}",
            a.cache_status()
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn entries_expire_after_the_ttl_without_mitigations() {
    let (origin, calls, _) = test_origin().await;
    let gw = gateway::spawn(config(
        origin,
        "none",
        &["--ttl", "300ms", "--stale-ttl", "1s"],
    ))
    .await
    .unwrap();
    let url = format!("http://{}/items/3", gw.addr);
    http_get(&url).await;
    assert!(http_get(&url).await.cache_status().contains("; hit"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = http_get(&url).await;
    assert!(
        after.cache_status().contains("fwd=stale"),
        "{}",
        after.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_listener_health_metrics_and_token() {
    let (origin, _, _) = test_origin().await;
    let cfg = config(origin, "all", &["--admin-token", "s3cret"]);
    let gw = gateway::spawn(cfg).await.unwrap();
    let admin = format!("http://{}", gw.admin_addr);
    assert_eq!(http_get(&format!("{admin}/healthz")).await.status, 200);
    assert_eq!(http_get(&format!("{admin}/readyz")).await.status, 200);
    http_get(&format!("http://{}/items/1", gw.addr)).await;

    let hot = format!("{admin}/admin/hot-keys");
    assert_eq!(http_get(&hot).await.status, 401);
    let wrong = send(Method::GET, &hot, &[("authorization", "Bearer nope")], "").await;
    assert_eq!(wrong.status, 401);
    let ok = send(Method::GET, &hot, &[("authorization", "Bearer s3cret")], "").await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("hot_keys"));
    let with_query = format!("{hot}?with_query=1");
    let ok = send(
        Method::GET,
        &with_query,
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let purge = send(
        Method::POST,
        &format!("{admin}/admin/purge"),
        &[
            ("authorization", "Bearer s3cret"),
            ("content-type", "application/json"),
        ],
        r#"{"paths":["/items/1"]}"#,
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.body);
    let after = http_get(&format!("http://{}/items/1", gw.addr)).await;
    assert!(
        after.cache_status().contains("fwd=uri-miss"),
        "{}",
        after.cache_status()
    );

    // The admin API is not on the proxy listener.
    let on_proxy = send(
        Method::GET,
        &format!("http://{}/admin/hot-keys", gw.addr),
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert!(!on_proxy.body.contains("hot_keys"));
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let (origin, _, _) = test_origin().await;
    // No token, and an empty one (an unset compose variable): both keep it off.
    for extra in [&[][..], &["--admin-token", ""][..]] {
        let gw = gateway::spawn(config(origin, "all", extra)).await.unwrap();
        let a = send(
            Method::POST,
            &format!("http://{}/admin/warm", gw.admin_addr),
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer "),
            ],
            r#"{"paths":["/items/1"]}"#,
        )
        .await;
        assert_eq!(a.status, 403, "{extra:?}");
        gw.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn readyz_waits_for_the_warm_list() {
    let (origin, calls, _) = test_origin().await;
    let dir = tempfile_dir();
    let list = dir.join("warm.txt");
    let paths: String = (1..=20).map(|i| format!("/items/{i}\n")).collect();
    std::fs::write(&list, format!("# warm these first\n{paths}")).unwrap();
    let list_s = list.to_str().unwrap().to_owned();
    let gw = gateway::spawn(config(
        origin,
        "all",
        &["--warm-list", &list_s, "--ttl", "30s"],
    ))
    .await
    .unwrap();
    let admin = format!("http://{}", gw.admin_addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&format!("{admin}/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    let a = http_get(&format!("http://{}/items/5", gw.addr)).await;
    assert!(a.cache_status().contains("; hit"), "{}", a.cache_status());
    gw.shutdown().await.unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gateway-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn two_gateways_share_a_redis_cache() {
    let redis = stampede_layer::testing::RedisServer::start();
    let (origin, calls, _) = test_origin().await;
    let url = redis.url();
    let a = gateway::spawn(config(origin, "all", &["--redis", &url, "--ttl", "30s"]))
        .await
        .unwrap();
    let b = gateway::spawn(config(origin, "all", &["--redis", &url, "--ttl", "30s"]))
        .await
        .unwrap();
    http_get(&format!("http://{}/items/4", a.addr)).await;
    let from_b = http_get(&format!("http://{}/items/4", b.addr)).await;
    assert!(
        from_b.cache_status().contains("; hit"),
        "{}",
        from_b.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
