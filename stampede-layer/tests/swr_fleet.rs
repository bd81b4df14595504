//! SWR across a fleet without the lock layer: each instance serves stale at
//! once, and the background refresh claims the key in the shared store first,
//! so one instance refreshes — one origin call fleet-wide, not one per instance.

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::testing::RedisServer;
use stampede_layer::{CacheConfig, Mitigations, RedisStore, SharedStore, StampedeLayer};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_background_refresh_per_fleet() {
    let redis = RedisServer::start();
    let (calls, origin) = slow_origin(Duration::from_millis(200));
    let config = {
        let mut c = CacheConfig::default();
        c.ttl = Duration::from_millis(300);
        c.stale_ttl = Duration::from_secs(10);
        c
    };
    let swr_only = {
        let mut m = Mitigations::NONE;
        m.single_flight = true;
        m.swr = true;
        m
    };
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let store: SharedStore = Arc::new(RedisStore::connect(&redis.url()).await.unwrap());
        fleet.push(
            StampedeLayer::new(store)
                .mitigations(swr_only)
                .cache_config(config.clone())
                .service(origin.clone()),
        );
    }
    let (_, cs, _) = read(fleet[0].clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert!(cs.contains("stored"), "{cs}");
    assert_eq!(calls.total(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await; // stale everywhere

    // Every instance gets stale reads at the same moment.
    let reads = (0..30).map(|i| fleet[i % 3].clone().oneshot(get("/items/1")));
    for resp in join_all(reads).await {
        let (status, cs, body) = read(resp.unwrap()).await;
        assert_eq!(status, 200);
        assert!(is_hit(&cs) && ttl_param(&cs).unwrap() < 0, "{cs}");
        assert_eq!(body, "v1");
    }
    calls.wait_total(2).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // let every refresh finish
    assert_eq!(
        calls.total(),
        2,
        "one refresh for the fleet, not one per instance"
    );
    let (_, cs, body) = read(fleet[2].clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(body, "v2", "{cs}");
}
