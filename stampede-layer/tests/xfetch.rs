//! XFetch: on a hot key the entry is refreshed in the background before it
//! expires, so no request meets the cliff; with beta 0 it is not; a slow
//! origin does not make refreshes chain.

mod common;

use common::*;
use stampede_layer::store::now_ms;
use stampede_layer::{CacheStore, MemoryStore, Mitigations, SharedStore, StampedeLayer};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Run {
    /// `fresh_until` of the first entry.
    first_expiry_ms: u64,
    /// Start times of the origin calls.
    origin_calls_ms: Vec<u64>,
    /// Cache-Status of every request after the first.
    statuses: Vec<String>,
}

/// A hot key: one request every ~2 ms from the first fill until 200 ms past
/// the first entry's expiry. TTL 600 ms; every rebuild takes 50 ms (XFetch's delta).
async fn hot_key(beta: f64) -> Run {
    hot_key_for(beta, Duration::from_millis(50), 200).await
}

/// [`hot_key`] with rebuilds taking `rebuild`, reading until `past_ms` after
/// the first entry's expiry.
async fn hot_key_for(beta: f64, rebuild: Duration, past_ms: u64) -> Run {
    let (calls, origin) = slow_origin(rebuild);
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let svc = StampedeLayer::new(store)
        .mitigations({
            let mut m = Mitigations::NONE;
            m.xfetch = true;
            m.single_flight = true;
            m
        })
        .ttl(Duration::from_millis(600))
        .stale_ttl(Duration::ZERO)
        .xfetch_beta(beta)
        .service(origin);

    read(svc.clone().oneshot(get("/hot")).await.unwrap()).await;
    let first = memory.get(&key("/hot")).await.unwrap().unwrap();
    assert!(
        u128::from(first.rebuild_ms) >= rebuild.as_millis(),
        "delta is measured: {}",
        first.rebuild_ms
    );
    let mut statuses = Vec::new();
    while now_ms() < first.fresh_until_ms + past_ms {
        let (status, cs, _) = read(svc.clone().oneshot(get("/hot")).await.unwrap()).await;
        assert_eq!(status, 200);
        statuses.push(cs);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Run {
        first_expiry_ms: first.fresh_until_ms,
        origin_calls_ms: calls.start_times(),
        statuses,
    }
}

#[tokio::test]
async fn hot_key_is_refreshed_before_expiry() {
    let run = hot_key(2.0).await;
    assert!(
        run.statuses.len() > 100,
        "a hot key: {}",
        run.statuses.len()
    );
    assert!(
        run.origin_calls_ms.len() >= 2,
        "a refresh ran: {:?}",
        run.origin_calls_ms
    );
    assert!(
        run.origin_calls_ms[1] < run.first_expiry_ms,
        "the origin saw the rebuild before fresh_until ({} ≥ {})",
        run.origin_calls_ms[1],
        run.first_expiry_ms
    );
    let misses: Vec<_> = run.statuses.iter().filter(|cs| !is_hit(cs)).collect();
    assert!(misses.is_empty(), "no request meets the expiry: {misses:?}");
}

#[tokio::test]
async fn beta_zero_never_refreshes_early() {
    let run = hot_key(0.0).await;
    assert!(
        run.origin_calls_ms.len() >= 2,
        "the entry expired and was rebuilt"
    );
    assert!(
        run.origin_calls_ms[1] >= run.first_expiry_ms,
        "no early refresh with beta 0"
    );
    assert!(
        run.statuses.iter().any(|cs| !is_hit(cs)),
        "a request meets the expiry (a miss)"
    );
}

#[tokio::test]
async fn slow_origin_does_not_chain_refreshes() {
    // Rebuilds take half the TTL: the paper's per-read test would refresh
    // right after every fill. Here a refresh never starts before the entry it
    // replaces is half its lifetime old, and one runs at a time.
    let (ttl, rebuild) = (600, 300);
    let run = hot_key_for(1.0, Duration::from_millis(rebuild), 2 * ttl).await;
    let starts = &run.origin_calls_ms;
    assert!(starts.len() >= 3, "refreshes ran: {starts:?}");
    let slack = 30; // timer and scheduling
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] + slack >= rebuild + ttl / 2,
            "a refresh started {} ms after the previous one: {starts:?}",
            pair[1] - pair[0]
        );
    }
}
