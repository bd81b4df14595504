//! TtlJitter: keys written together get TTLs spread over
//! `[1 - f, 1 + f] × TTL`; without it they all expire together.

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::{CacheStore, MemoryStore, Mitigations, SharedStore, StampedeLayer};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const TTL_MS: u64 = 10_000;

/// Fill 200 keys at once; the stored fresh lifetimes, in ms.
async fn stored_lifetimes(jitter: bool) -> Vec<u64> {
    let (_, origin) = slow_origin(Duration::ZERO);
    let memory = Arc::new(MemoryStore::default());
    let store: SharedStore = memory.clone();
    let svc = StampedeLayer::new(store)
        .mitigations({
            let mut m = Mitigations::NONE;
            m.jitter = jitter;
            m
        })
        .jitter(0.2)
        .ttl(Duration::from_millis(TTL_MS))
        .service(origin);
    let paths: Vec<String> = (0..200).map(|i| format!("/items/{i}")).collect();
    for resp in join_all(paths.iter().map(|p| svc.clone().oneshot(get(p)))).await {
        assert!(cache_status(&resp.unwrap()).contains("stored"));
    }
    let mut lifetimes = Vec::new();
    for p in &paths {
        let e = memory.get(&key(p)).await.unwrap().unwrap();
        lifetimes.push(e.fresh_until_ms - e.stored_at_ms);
    }
    lifetimes
}

#[tokio::test]
async fn jitter_spreads_stored_ttls() {
    let lifetimes = stored_lifetimes(true).await;
    let (min, max) = (
        *lifetimes.iter().min().unwrap(),
        *lifetimes.iter().max().unwrap(),
    );
    assert!(
        lifetimes.iter().all(|l| (8_000..=12_000).contains(l)),
        "within [0.8, 1.2] × TTL: {min}..{max}"
    );
    // 200 uniform draws: both tails of the range are reached.
    assert!(
        min < 8_500 && max > 11_500,
        "spread across the range: {min}..{max}"
    );
    let below = lifetimes.iter().filter(|l| **l < TTL_MS).count();
    assert!(
        (60..=140).contains(&below),
        "centred on the TTL: {below}/200 below"
    );
    let mut distinct = lifetimes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 150,
        "{} distinct lifetimes",
        distinct.len()
    );
}

#[tokio::test]
async fn without_jitter_ttls_are_equal() {
    let lifetimes = stored_lifetimes(false).await;
    assert!(lifetimes.iter().all(|l| *l == TTL_MS), "{lifetimes:?}");
}
