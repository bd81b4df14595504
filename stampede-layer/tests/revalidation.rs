//! RFC 9111 freshness and validation through the whole stack: a stale entry
//! with a validator is revalidated with the cache's own conditional request
//! and a 304 freshens it without a body; `no-cache` revalidates before every
//! use; `must-revalidate` is never served stale; the origin's `Age` counts;
//! targeted fields win; an upstream `Cache-Status` is kept.

mod common;

use common::*;
use http::header::{AGE, CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, StatusCode};
use metrics_util::debugging::DebuggingRecorder;
use stampede_layer::{
    BoxError, CacheConfig, CacheStore, MemoryStore, Mitigations, SharedStore, StampedeLayer,
    StampedeService,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// The whole stack in strict mode (no operator TTLs) over `origin`.
fn strict<S>(origin: S) -> (Arc<MemoryStore>, StampedeService<Body>)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let config = {
        let mut c = CacheConfig::default();
        c.ttl = Duration::ZERO;
        c.stale_ttl = Duration::ZERO;
        c.stale_if_error = Duration::ZERO;
        c
    };
    let svc = StampedeLayer::new(store)
        .mitigations(Mitigations::ALL)
        .cache_config(config)
        .jitter(0.0)
        .service(origin);
    (memory, svc)
}

#[tokio::test]
async fn a_304_freshens_the_stored_entry_without_a_body() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (calls, origin) = origin(|n, req| async move {
        let validated = req
            .headers()
            .get(IF_NONE_MATCH)
            .is_some_and(|v| v == "\"v1\"");
        let mut resp = if validated {
            respond(304, "")
        } else {
            respond(200, format!("body {n}"))
        };
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        h.insert(ETAG, HeaderValue::from_static("\"v1\""));
        h.insert("x-generation", HeaderValue::from(n as u64));
        Ok::<_, BoxError>(resp)
    });
    let (store, svc) = strict(origin);
    let (status, cs, body) = read(svc.clone().oneshot(get("/doc")).await.unwrap()).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"body 1"[..]));
    assert!(cs.contains("stored"), "{cs}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let resp = svc.clone().oneshot(get("/doc")).await.unwrap();
    assert_eq!(
        resp.headers()["x-generation"],
        "2",
        "the 304's headers replace the stored ones"
    );
    let (status, cs, body) = read(resp).await;
    assert_eq!(status, 200, "the client gets the full stored response");
    assert_eq!(
        body, "body 1",
        "the stored body, never re-sent by the origin"
    );
    assert!(
        cs.contains("fwd=stale; fwd-status=304") && cs.contains("stored"),
        "{cs}"
    );
    assert_eq!(calls.total(), 2);
    let held = store.get(&key("/doc")).await.unwrap().unwrap();
    assert!(
        held.is_fresh(stampede_layer::store::now_ms()),
        "freshened for another max-age"
    );
    let (_, cs, _) = read(svc.oneshot(get("/doc")).await.unwrap()).await;
    assert!(is_hit(&cs), "{cs}");
    assert_eq!(counter(&snapshotter, "stampede_revalidated_total", &[]), 1);
}

#[tokio::test]
async fn no_cache_revalidates_before_every_use_and_must_revalidate_is_never_stale() {
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let (calls, origin) = origin(move |_, req| {
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                return Ok::<_, BoxError>(respond(503, "down"));
            }
            let cc = if req.uri().path() == "/no-cache" {
                "no-cache"
            } else {
                "max-age=1, must-revalidate, stale-if-error=60"
            };
            let validated = req.headers().contains_key(IF_NONE_MATCH);
            let mut resp = if validated {
                respond(304, "")
            } else {
                respond(200, "full")
            };
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static(cc));
            resp.headers_mut()
                .insert(ETAG, HeaderValue::from_static("\"e\""));
            Ok(resp)
        }
    });
    let (_, svc) = strict(origin);
    for round in 0..3 {
        let (status, cs, body) = read(svc.clone().oneshot(get("/no-cache")).await.unwrap()).await;
        assert_eq!(
            (status.as_u16(), body.as_ref()),
            (200, &b"full"[..]),
            "{cs}"
        );
        assert!(
            !is_hit(&cs),
            "round {round}: every use goes to the origin: {cs}"
        );
    }
    assert_eq!(calls.total(), 3);
    read(svc.clone().oneshot(get("/strict")).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    fail.store(true, Ordering::SeqCst);
    let (status, cs, _) = read(svc.oneshot(get("/strict")).await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "never stale, even with stale-if-error: {cs}"
    );
}

#[tokio::test]
async fn received_age_counts_and_every_stored_answer_says_its_age() {
    let (calls, origin) = origin(|_, req| async move {
        let mut resp = respond(200, "x");
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        if req.uri().path() == "/old" {
            h.insert(AGE, HeaderValue::from_static("3600"));
        } else {
            h.insert(AGE, HeaderValue::from_static("20"));
        }
        Ok::<_, BoxError>(resp)
    });
    let (_, svc) = strict(origin);
    for _ in 0..2 {
        read(svc.clone().oneshot(get("/old")).await.unwrap()).await;
    }
    assert_eq!(
        calls.total(),
        2,
        "already older than max-age on arrival: never fresh"
    );
    read(svc.clone().oneshot(get("/young")).await.unwrap()).await;
    let resp = svc.oneshot(get("/young")).await.unwrap();
    let age: u64 = resp.headers()[AGE].to_str().unwrap().parse().unwrap();
    assert!(
        (20..=21).contains(&age),
        "the received age plus its time in storage: {age}"
    );
    let (_, cs, _) = read(resp).await;
    assert!(is_hit(&cs) && ttl_param(&cs).unwrap() <= 40, "{cs}");
}

#[tokio::test]
async fn targeted_fields_win_and_upstream_cache_status_is_kept() {
    let (calls, origin) = origin(|_, req| async move {
        let mut resp = respond(200, "x");
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        h.insert(
            "cache-status",
            HeaderValue::from_static("upstream; fwd=uri-miss"),
        );
        if req.uri().path() == "/ours" {
            h.insert(
                "stampede-cache-control",
                HeaderValue::from_static("no-store"),
            );
        }
        Ok::<_, BoxError>(resp)
    });
    let (_, svc) = strict(origin);
    read(svc.clone().oneshot(get("/cdn")).await.unwrap()).await;
    let (_, cs, _) = read(svc.clone().oneshot(get("/cdn")).await.unwrap()).await;
    assert!(
        cs.starts_with("upstream; fwd=uri-miss, stampede; hit"),
        "{cs}"
    );
    for _ in 0..2 {
        read(svc.clone().oneshot(get("/ours")).await.unwrap()).await;
    }
    assert_eq!(
        calls.total(),
        3,
        "Stampede-Cache-Control: no-store wins over CDN-Cache-Control"
    );
}
