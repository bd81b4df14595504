//! OverloadGate: past its budget, origin-bound work is answered 503 +
//! `Retry-After` at once; cache hits are never shed; a stale copy in hand
//! (with SWR's stale-if-error) turns the shed into a stale answer.

mod common;

use common::*;
use stampede_layer::testing::fill;
use stampede_layer::{
    CacheConfig, MemoryStore, Mitigations, SharedStore, StampedeLayer, StampedeService,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const ORIGIN_DELAY: Duration = Duration::from_millis(500);

fn stack(mitigations: Mitigations) -> (Calls, Arc<MemoryStore>, StampedeService<Body>) {
    let (calls, origin) = slow_origin(ORIGIN_DELAY);
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let svc = StampedeLayer::new(store)
        .mitigations(mitigations)
        .cache_config({
            let mut c = CacheConfig::default();
            c.ttl = Duration::from_secs(30);
            c.stale_ttl = Duration::ZERO;
            c.stale_if_error = Duration::from_secs(60);
            c
        })
        .overload_budget(2, Duration::ZERO)
        .service(origin);
    (calls, memory, svc)
}

const GATE: Mitigations = {
    let mut m = Mitigations::NONE;
    m.overload_gate = true;
    m
};

/// Keep the origin's two slots busy with two slow misses.
fn saturate(
    svc: &StampedeService<Body>,
) -> Vec<
    tokio::task::JoinHandle<
        Result<http::Response<stampede_layer::CacheBody>, std::convert::Infallible>,
    >,
> {
    ["/slow/1", "/slow/2"]
        .into_iter()
        .map(|p| tokio::spawn(svc.clone().oneshot(get(p))))
        .collect()
}

#[tokio::test]
async fn sheds_origin_bound_work_fast_and_keeps_serving_hits() {
    let (calls, store, svc) = stack(GATE);
    fill(&*store, &key("/hot"), &entry("hot body", 30_000, 0, 0))
        .await
        .unwrap();
    let slow = saturate(&svc);
    calls.wait_inflight(2).await;

    let started = Instant::now();
    let resp = svc.clone().oneshot(get("/items/3")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        cache_status(&resp).contains("detail=shed"),
        "{}",
        cache_status(&resp)
    );
    assert!(
        elapsed < Duration::from_millis(100),
        "shed at once, not queued: {elapsed:?}"
    );
    assert_eq!(
        calls.total(),
        2,
        "the shed request never reached the origin"
    );

    // Hits keep being answered during the overload.
    for _ in 0..20 {
        let (status, cs, body) = read(svc.clone().oneshot(get("/hot")).await.unwrap()).await;
        assert_eq!((status.as_u16(), body.as_ref()), (200, &b"hot body"[..]));
        assert!(is_hit(&cs), "{cs}");
    }
    assert!(
        started.elapsed() < ORIGIN_DELAY,
        "all of it during the overload"
    );
    assert_eq!(calls.inflight(), 2);

    for r in slow {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    // Budget free again: the next miss goes through.
    let resp = svc.oneshot(get("/items/3")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

async fn stale_during_overload(mitigations: Mitigations) -> (u16, String, bytes::Bytes, Duration) {
    let (calls, store, svc) = stack(mitigations);
    // Past its fresh TTL, still within stale-if-error.
    let mut stale = entry("stale body", 0, 0, 0);
    stale.error_until_ms += 60_000;
    fill(&*store, &key("/items/7"), &stale).await.unwrap();
    let slow = saturate(&svc);
    calls.wait_inflight(2).await;
    let started = Instant::now();
    let (status, cs, body) = read(svc.oneshot(get("/items/7")).await.unwrap()).await;
    let elapsed = started.elapsed();
    assert_eq!(calls.total(), 2);
    for r in slow {
        r.await.unwrap().unwrap();
    }
    (status.as_u16(), cs, body, elapsed)
}

#[tokio::test]
async fn stale_copy_with_swr_turns_the_shed_into_a_stale_answer() {
    let (status, cs, body, elapsed) = stale_during_overload({
        let mut m = GATE;
        m.swr = true;
        m
    })
    .await;
    assert_eq!((status, body.as_ref()), (200, &b"stale body"[..]), "{cs}");
    assert!(is_hit(&cs) && ttl_param(&cs).unwrap() < 0, "{cs}");
    assert!(cs.contains("detail=stale-if-error"), "{cs}");
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
}

#[tokio::test]
async fn without_swr_the_shed_is_a_503() {
    let (status, cs, _, elapsed) = stale_during_overload(GATE).await;
    assert_eq!(status, 503, "{cs}");
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
}
