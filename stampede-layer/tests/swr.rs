//! StaleWhileRevalidate: a stale entry is answered at once while one
//! background refresh runs; stale-if-error answers an origin failure with the
//! stale copy in hand.

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::{
    BoxError, CacheConfig, CacheStore, MemoryStore, Mitigations, SharedStore, StampedeLayer,
    StampedeService,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt};

fn stack<O>(
    origin: O,
    mitigations: Mitigations,
    config: CacheConfig,
) -> (Arc<MemoryStore>, StampedeService<Body>)
where
    O: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    O::Future: Send + 'static,
{
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let svc = StampedeLayer::new(store)
        .mitigations(mitigations)
        .cache_config(config)
        .service(origin);
    (memory, svc)
}

const SWR: Mitigations = {
    let mut m = Mitigations::NONE;
    m.swr = true;
    m.single_flight = true;
    m.lock = true;
    m
};

#[tokio::test]
async fn stale_is_served_at_once_while_one_refresh_runs() {
    let (calls, origin) = slow_origin(Duration::from_millis(200));
    let config = {
        let mut c = CacheConfig::default();
        c.ttl = Duration::from_millis(300);
        c.stale_ttl = Duration::from_secs(10);
        c
    };
    let (store, svc) = stack(origin, SWR, config);
    let (_, cs, body) = read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(body, "v1", "{cs}");
    tokio::time::sleep(Duration::from_millis(400)).await; // now stale

    // Twenty stale reads: all answered at once, from the cache, stale.
    let started = Instant::now();
    let resps = join_all((0..20).map(|_| svc.clone().oneshot(get("/items/1")))).await;
    let elapsed = started.elapsed();
    for resp in resps {
        let (status, cs, body) = read(resp.unwrap()).await;
        assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]));
        assert!(is_hit(&cs), "{cs}");
        assert!(
            ttl_param(&cs).unwrap() < 0,
            "stale is a hit with a negative ttl: {cs}"
        );
    }
    assert!(
        elapsed < Duration::from_millis(150),
        "stale answers do not wait for the 200 ms rebuild: {elapsed:?}"
    );

    // Exactly one background refresh, and then the entry is fresh with the new body.
    calls.wait_total(2).await;
    tokio::time::timeout(Duration::from_secs(3), async {
        while calls.inflight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(calls.total(), 2, "one refresh for twenty stale reads");
    let held = store.get(&key("/items/1")).await.unwrap().unwrap();
    assert_eq!(held.body, "v2");
    let (_, cs, body) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(body, "v2");
    assert!(is_hit(&cs) && ttl_param(&cs).unwrap() >= 0, "{cs}");
    assert_eq!(calls.total(), 2);
}

/// An entry past its SWR window but within stale-if-error: the request goes
/// to the origin with the stale copy in hand.
fn error_window_config() -> CacheConfig {
    {
        let mut c = CacheConfig::default();
        c.ttl = Duration::from_millis(100);
        c.stale_ttl = Duration::ZERO;
        c.stale_if_error = Duration::from_secs(60);
        c
    }
}

/// Origin: call 1 answers `v1`, later calls fail with a 500 or an error.
fn failing_origin(
    as_500: bool,
) -> (
    Calls,
    impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
) {
    origin(move |n, _| async move {
        match n {
            1 => Ok(respond(200, "v1")),
            _ if as_500 => Ok(respond(500, "origin broke")),
            _ => Err::<_, BoxError>("connection refused".into()),
        }
    })
}

async fn stale_if_error(
    mitigations: Mitigations,
    as_500: bool,
) -> (http::StatusCode, String, bytes::Bytes, usize) {
    let (calls, origin) = failing_origin(as_500);
    let (_, svc) = stack(origin, mitigations, error_window_config());
    let (status, _, _) = read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(150)).await; // past fresh and SWR windows
    let Ok(resp) = svc.oneshot(get("/items/1")).await;
    // An origin failure is an answer, its error attached.
    let failure = resp
        .extensions()
        .get::<stampede_layer::OriginFailure>()
        .map(|f| f.0.to_string());
    let (status, cs, body) = read(resp).await;
    (status, failure.unwrap_or(cs), body, calls.total())
}

#[tokio::test]
async fn stale_if_error_serves_stale_on_origin_500() {
    let (status, cs, body, calls) = stale_if_error(SWR, true).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]), "{cs}");
    assert!(is_hit(&cs) && cs.contains("detail=stale-if-error"), "{cs}");
    assert!(ttl_param(&cs).unwrap() < 0, "{cs}");
    assert_eq!(calls, 2, "the origin was asked");
}

#[tokio::test]
async fn stale_if_error_serves_stale_on_origin_error() {
    let (status, cs, body, calls) = stale_if_error(SWR, false).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]), "{cs}");
    assert!(is_hit(&cs) && cs.contains("detail=stale-if-error"), "{cs}");
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn without_swr_the_500_and_the_error_go_through() {
    let no_swr = {
        let mut m = SWR;
        m.swr = false;
        m
    };
    let (status, cs, body, _) = stale_if_error(no_swr, true).await;
    assert_eq!(
        (status.as_u16(), body.as_ref()),
        (500, &b"origin broke"[..]),
        "{cs}"
    );
    assert!(!is_hit(&cs), "{cs}");
    let (status, err, _, _) = stale_if_error(no_swr, false).await;
    assert_eq!(
        status,
        http::StatusCode::BAD_GATEWAY,
        "the error surfaces: {err}"
    );
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn origin_stale_while_revalidate_directive_sets_the_window() {
    // The origin grants 1 s fresh + a 10 s SWR window; the configured SWR window is zero.
    let (calls, origin) = origin(|n, _| async move {
        let mut resp = respond(200, format!("v{n}"));
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=1, stale-while-revalidate=10"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, BoxError>(resp)
    });
    let mut config = error_window_config();
    config.ttl = Duration::from_secs(30);
    let (store, svc) = stack(origin, SWR, config);
    read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    let held = store.get(&key("/items/1")).await.unwrap().unwrap();
    // Fresh for max-age less the age it had on arrival (the origin's 100 ms).
    assert_eq!(
        held.fresh_until_ms - held.stored_at_ms + held.initial_age_ms,
        1_000
    );
    assert!(
        (100..300).contains(&held.initial_age_ms),
        "{}",
        held.initial_age_ms
    );
    assert_eq!(held.stale_until_ms - held.fresh_until_ms, 10_000);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let started = Instant::now();
    let (_, cs, body) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    assert!(started.elapsed() < Duration::from_millis(80));
    assert_eq!(body, "v1");
    assert!(is_hit(&cs) && ttl_param(&cs).unwrap() < 0, "{cs}");
    calls.wait_total(2).await;
}
