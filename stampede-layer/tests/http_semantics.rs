//! HTTP semantics of the core cache (RFC 9111 for a shared cache): HEAD from
//! a cached GET, what is not stored, what bypasses, and the origin's TTL.

mod common;

use common::*;
use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderValue, Method};
use stampede_layer::{
    BoxError, CacheStore, MemoryStore, Mitigations, SharedStore, StampedeLayer, StampedeService,
};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Origin answering `v<n>`, plus the headers the path asks for:
/// `/no-store`, `/private`, `/cookie`, `/max-age`.
fn stack() -> (Calls, Arc<MemoryStore>, StampedeService<Body>) {
    let (calls, origin) = origin(|n, req| async move {
        let mut resp = respond(200, format!("v{n}"));
        let h = resp.headers_mut();
        match req.uri().path() {
            "/no-store" => {
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            "/private" => {
                h.insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=60"),
                );
            }
            "/cookie" => {
                h.insert(SET_COOKIE, HeaderValue::from_static("session=abc"));
            }
            "/max-age" => {
                h.insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=100"),
                );
            }
            "/huge" => {
                h.insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static(
                        "max-age=18446744073709551615, stale-while-revalidate=99999999999999999999",
                    ),
                );
            }
            _ => {}
        }
        Ok::<_, BoxError>(resp)
    });
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let svc = StampedeLayer::new(store)
        .mitigations(Mitigations::NONE)
        .ttl(Duration::from_secs(5))
        .service(origin);
    (calls, memory, svc)
}

#[tokio::test]
async fn head_is_served_from_a_cached_get_without_body() {
    let (calls, _, svc) = stack();
    read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    let resp = svc
        .oneshot(request(Method::HEAD, "/items/1"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let (status, cs, body) = read(resp).await;
    assert_eq!(status, 200);
    assert!(is_hit(&cs), "{cs}");
    assert!(body.is_empty(), "HEAD has no body");
    assert_eq!(calls.total(), 1);
}

#[tokio::test]
async fn no_store_private_and_set_cookie_are_not_stored() {
    let (calls, store, svc) = stack();
    for (i, path) in ["/no-store", "/private", "/cookie"].into_iter().enumerate() {
        for round in 0..2 {
            let (status, cs, _) = read(svc.clone().oneshot(get(path)).await.unwrap()).await;
            assert_eq!(status, 200);
            assert!(!is_hit(&cs) && !cs.contains("stored"), "{path}: {cs}");
            if round == 1 {
                assert!(
                    cs.contains("fwd=bypass; fwd-status=200; detail=hit-for-miss"),
                    "{path}: {cs}"
                );
            }
            assert_eq!(calls.total(), 2 * i + round + 1, "{path}");
        }
        // Only a hit-for-miss marker: no response stored for anyone.
        let held = store.get(&key(path)).await.unwrap();
        assert!(
            held.as_ref().is_some_and(|e| e.is_hit_for_miss()),
            "{path}: {held:?}"
        );
    }
    // The control: a plain response is stored.
    read(svc.clone().oneshot(get("/plain")).await.unwrap()).await;
    assert!(store.get(&key("/plain")).await.unwrap().is_some());
}

#[tokio::test]
async fn credentialed_requests_bypass_the_cache() {
    let (calls, store, svc) = stack();
    read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    for (name, value) in [(AUTHORIZATION, "Bearer secret"), (COOKIE, "session=abc")] {
        let mut req = get("/items/1");
        req.headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
        let (_, cs, _) = read(svc.clone().oneshot(req).await.unwrap()).await;
        assert!(!is_hit(&cs) && cs.contains("fwd=bypass"), "{name}: {cs}");
        // …and their answers are not stored for others.
        let mut req = get(&format!("/private-{name}"));
        req.headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
        read(svc.clone().oneshot(req).await.unwrap()).await;
        let held = store.get(&key(&format!("/private-{name}"))).await.unwrap();
        assert!(held.is_none(), "{held:?}");
    }
    assert_eq!(calls.total(), 5);
}

/// An origin lifetime past any clock (`u64::MAX` seconds, and more) is
/// clamped to 2^31 s (RFC 9111 §1.2.2), not overflowed into a past deadline.
#[tokio::test]
async fn huge_lifetimes_are_clamped_not_overflowed() {
    let (calls, store, svc) = stack();
    let (status, cs, _) = read(svc.clone().oneshot(get("/huge")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(cs.contains("stored"), "{cs}");
    let e = store.get(&key("/huge")).await.unwrap().unwrap();
    let clamp = (1u64 << 31) * 1000;
    let lifetime = e.fresh_until_ms - e.stored_at_ms;
    assert!((clamp - 1000..=clamp).contains(&lifetime), "{lifetime} ms");
    assert!(e.stale_until_ms >= e.fresh_until_ms);
    let (_, cs, _) = read(svc.oneshot(get("/huge")).await.unwrap()).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(calls.total(), 1);
}

#[tokio::test]
async fn origin_max_age_sets_the_ttl() {
    let (_, store, svc) = stack();
    let (_, cs, _) = read(svc.clone().oneshot(get("/max-age")).await.unwrap()).await;
    assert!(cs.contains("stored"), "{cs}");
    assert!((99..=100).contains(&ttl_param(&cs).unwrap()), "{cs}");
    let e = store.get(&key("/max-age")).await.unwrap().unwrap();
    // Counted from the request (RFC 9111 §4.2.3): the origin's response
    // delay comes off the lifetime.
    let lifetime = e.fresh_until_ms - e.stored_at_ms;
    assert!(
        (99_000..=100_000).contains(&lifetime),
        "max-age=100 beats the 5 s default: {lifetime} ms"
    );
    let e = {
        read(svc.oneshot(get("/items/1")).await.unwrap()).await;
        store.get(&key("/items/1")).await.unwrap().unwrap()
    };
    assert_eq!(
        e.fresh_until_ms - e.stored_at_ms,
        5_000,
        "the default without max-age"
    );
}
