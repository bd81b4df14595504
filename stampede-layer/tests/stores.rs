//! Both store backends against the same contract: round-trip, delete, expiry
//! after the stale window, fenced (conditional) writes, and — Redis — a
//! corrupt or foreign value under the entry key reads as a decode error,
//! which the stack treats as a miss and counts.

mod common;

use common::*;
use fred::prelude::*;
use stampede_layer::testing::RedisServer;
use stampede_layer::{
    CacheStore, MemoryStore, Mitigations, NearCacheConfig, NearCacheStore, PutOutcome, RedisStore,
    SharedStore, StampedeLayer, StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

async fn round_trip_and_delete(store: &dyn CacheStore) {
    let mut e = entry("hello", 5_000, 5_000, 0);
    assert_eq!(
        store.put(&key("/a"), &e).await.unwrap(),
        PutOutcome::Written
    );
    let got = store.get(&key("/a")).await.unwrap().unwrap();
    // A write without a lock takes the key's next token as it lands.
    assert!(
        got.fence > 0,
        "{}: unlocked write got no token",
        store.backend()
    );
    e.fence = got.fence;
    assert_eq!(*got, e);
    assert_eq!(store.get(&key("/b")).await.unwrap(), None);
    store.delete(&key("/a")).await.unwrap();
    assert_eq!(store.get(&key("/a")).await.unwrap(), None);
    // Deleting an absent key is not an error.
    store.delete(&key("/a")).await.unwrap();
}

async fn expires_after_the_stale_window(store: &dyn CacheStore) {
    // Fresh 100 ms, then stale 200 ms: kept through the stale window, gone after.
    store
        .put(&key("/exp"), &entry("x", 100, 200, 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(180)).await;
    let stale = store.get(&key("/exp")).await.unwrap();
    assert!(
        stale.is_some(),
        "{}: an entry must outlive its fresh TTL by the stale window",
        store.backend()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.get(&key("/exp")).await.unwrap(),
        None,
        "{}: gone after the stale window",
        store.backend()
    );
}

async fn fenced_writes(store: &dyn CacheStore) {
    let k = key("/fenced");
    assert_eq!(
        store.put(&k, &entry("new", 5_000, 0, 7)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        store.put(&k, &entry("old", 5_000, 0, 6)).await.unwrap(),
        PutOutcome::Fenced { current: 7 },
        "{}: an older token must be refused",
        store.backend()
    );
    let held = store.get(&k).await.unwrap().unwrap();
    assert_eq!((held.body.as_ref(), held.fence), (&b"new"[..], 7));
    // The same or a newer token writes.
    assert_eq!(
        store.put(&k, &entry("same", 5_000, 0, 7)).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        store.put(&k, &entry("newer", 5_000, 0, 8)).await.unwrap(),
        PutOutcome::Written
    );
    let held = store.get(&k).await.unwrap().unwrap();
    assert_eq!((held.body.as_ref(), held.fence), (&b"newer"[..], 8));
}

async fn lock_is_exclusive(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/lock");
    let lease = a
        .try_lock(&k, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.try_lock(&k, Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );
    assert!(a.unlock(&k, &lease).await.unwrap());
    let next = b
        .try_lock(&k, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(next.token > lease.token, "fencing tokens are monotonic");
    // Only the owner releases.
    assert!(!a.unlock(&k, &lease).await.unwrap());
    assert!(b.unlock(&k, &next).await.unwrap());
}

#[tokio::test]
async fn memory_store_contract() {
    let store = MemoryStore::default();
    round_trip_and_delete(&store).await;
    fenced_writes(&store).await;
    lock_is_exclusive(&store, &store).await;
    expires_after_the_stale_window(&store).await;
}

#[tokio::test]
async fn redis_store_contract() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let b = RedisStore::connect(&server.url()).await.unwrap();
    round_trip_and_delete(&a).await;
    fenced_writes(&a).await;
    // Another instance sees the same entries and the same lock.
    assert_eq!(b.get(&key("/fenced")).await.unwrap().unwrap().fence, 8);
    lock_is_exclusive(&a, &b).await;
    expires_after_the_stale_window(&a).await;
}

async fn near(redis: &RedisStore, ttl: Duration) -> NearCacheStore<RedisStore> {
    let config = NearCacheConfig {
        ttl,
        ..Default::default()
    };
    NearCacheStore::with_redis_invalidation(redis.clone(), config, redis)
        .await
        .expect("subscribe")
}

#[tokio::test]
async fn near_cache_over_redis_contract() {
    let server = RedisServer::start();
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    let a = near(&redis, Duration::from_secs(1)).await;
    let b = near(&redis, Duration::from_secs(1)).await;
    round_trip_and_delete(&a).await;
    fenced_writes(&a).await;
    assert_eq!(b.get(&key("/fenced")).await.unwrap().unwrap().fence, 8);
    lock_is_exclusive(&a, &b).await;
    expires_after_the_stale_window(&a).await;
}

/// Poll `store` until `key` reads `want` (None: absent); the time it took.
async fn until_reads(store: &dyn CacheStore, path: &str, want: Option<&str>) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let got = store.get(&key(path)).await.unwrap();
        let body = got.map(|e| String::from_utf8_lossy(&e.body).into_owned());
        if body.as_deref() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: still {body:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn near_cache_deletes_reach_every_instance_and_a_lost_subscriber_clears_it() {
    let server = RedisServer::start();
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    // A bound far longer than the test: only an invalidation can explain a change.
    let long = Duration::from_secs(60);
    let (a, b) = (near(&redis, long).await, near(&redis, long).await);
    let k = key("/items/1");
    redis.put(&k, &entry("v1", 60_000, 0, 1)).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(s.get(&k).await.unwrap().unwrap().body, "v1");
    }
    // Behind their backs (a write without a delete): both keep serving v1.
    redis.put(&k, &entry("v2", 60_000, 0, 2)).await.unwrap();
    for s in [&a, &b] {
        let got = s.get(&k).await.unwrap().unwrap();
        assert_eq!(got.body, "v1", "served from the near copy");
    }
    // A delete through one drops the copy everywhere (every variant too).
    a.delete(&k.clone().with_variant(Some("lang=de".into())))
        .await
        .unwrap();
    let took = until_reads(&b, "/items/1", None).await;
    assert!(
        took < Duration::from_millis(100),
        "remote invalidation took {took:?}"
    );
    assert_eq!(a.get(&k).await.unwrap(), None);

    // A subscriber that loses its connection clears its near cache.
    redis.put(&k, &entry("v3", 60_000, 0, 3)).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().body, "v3");
    redis.put(&k, &entry("v4", 60_000, 0, 4)).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().body, "v3");
    let killed: i64 = redis
        .pool()
        .next()
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .unwrap();
    assert!(killed >= 2, "killed {killed} subscriber connections");
    until_reads(&b, "/items/1", Some("v4")).await;
    // …and, resubscribed, still hears deletes.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let numsub: Vec<fred::types::Value> = redis
            .pool()
            .next()
            .custom(
                fred::types::CustomCommand::new_static("PUBSUB", None, false),
                vec!["NUMSUB".to_owned(), redis.invalidation_channel()],
            )
            .await
            .unwrap();
        if numsub.get(1).and_then(|v| v.as_i64()) == Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never resubscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.put(&k, &entry("v5", 60_000, 0, 5)).await.unwrap();
    until_reads(&b, "/items/1", Some("v5")).await;
    redis.put(&k, &entry("v6", 60_000, 0, 6)).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().body, "v5");
    a.delete(&k).await.unwrap();
    let took = until_reads(&b, "/items/1", None).await;
    assert!(
        took < Duration::from_millis(100),
        "after the reconnect: {took:?}"
    );
}

#[tokio::test]
async fn redis_corrupt_or_foreign_entry_is_a_counted_miss() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let server = RedisServer::start();
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    let (calls, origin) = slow_origin(Duration::ZERO);
    let store: SharedStore = Arc::new(redis.clone());
    let svc = StampedeLayer::new(store)
        .mitigations(Mitigations::NONE)
        .ttl(Duration::from_secs(30))
        .service(origin);

    let cases: [(&str, &[u8]); 3] = [
        ("/foreign", b"hello, not ours"),
        ("/corrupt", b"SLe\x01\xff\xff\xff\xff\xff"),
        ("/version", b"SLe\x63whatever"),
    ];
    for (i, (path, raw)) in cases.into_iter().enumerate() {
        let entry_key = redis.entry_key(&key(path));
        let _: i64 = redis
            .pool()
            .hset(
                &entry_key,
                ("d", fred::types::Value::Bytes(raw.to_vec().into())),
            )
            .await
            .unwrap();
        assert!(
            matches!(redis.get(&key(path)).await, Err(StoreError::Decode(_))),
            "{path} must read as a decode error"
        );

        // Through the stack: a miss (origin called), answered 200, and then refilled.
        let (status, cs, body) = read(svc.clone().oneshot(get(path)).await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(!is_hit(&cs), "{path}: {cs}");
        assert_eq!(calls.total(), i + 1);
        assert_eq!(body, format!("v{}", i + 1));
        let (_, cs, _) = read(svc.clone().oneshot(get(path)).await.unwrap()).await;
        assert!(is_hit(&cs), "{path}: the fill replaced the bad value: {cs}");
    }
    let decode_errors = counter(
        &metrics,
        "stampede_store_errors_total",
        &[("backend", "redis"), ("op", "decode")],
    );
    assert!(decode_errors >= 3, "decode errors counted: {decode_errors}");
}
