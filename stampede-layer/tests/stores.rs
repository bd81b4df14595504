//! Every store backend against the same contract
//! ([`stampede_layer::testing::contract`]: round-trip, delete, expiry after
//! the stale window, leases and fenced writes), and — Redis — leases that do
//! not survive a flush or a restart, keys that all expire, and a corrupt or
//! foreign value under the entry key that reads as a decode error, which the
//! stack treats as a miss and counts.

mod common;

use common::*;
use fred::prelude::*;
use stampede_layer::store::{PutOutcome, Refusal};
use stampede_layer::testing::{RedisServer, contract, fill};
use stampede_layer::{
    CacheStore, MemoryStore, Mitigations, NearCacheConfig, NearCacheStore, RedisStore, SharedStore,
    StampedeLayer, StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn memory_store_contract() {
    let store = MemoryStore::default();
    contract::run(&store, &store).await;
}

#[tokio::test]
async fn redis_store_contract() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let b = RedisStore::connect(&server.url()).await.unwrap();
    contract::run(&a, &b).await;
}

/// What a lease's validity rests on can vanish — `FLUSHALL`, a restart
/// without persistence, an evicted record — and each ends in a refusal,
/// never in an old write landing (finding 5 of #19: tokens used to restart
/// at 1, so an old lease matched a new one).
#[tokio::test]
async fn redis_leases_do_not_survive_a_flush_or_a_restart() {
    let mut server = RedisServer::start();
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let b = RedisStore::connect(&server.url()).await.unwrap();
    let k = key("/items/7");
    let ttl = Duration::from_secs(30);
    // FLUSHALL while a rebuild holds its lease; a new rebuild writes first.
    let before = a.try_lock(&k, ttl).await.unwrap().acquired().unwrap();
    server.cli(&["FLUSHALL"]);
    let after = b.try_lock(&k, ttl).await.unwrap().acquired().unwrap();
    assert_eq!(after.token.seq, before.token.seq, "the counter restarted…");
    assert_ne!(
        after.token.epoch, before.token.epoch,
        "…in a new incarnation"
    );
    assert_eq!(
        b.put(&k, &entry("v2", 60_000, 0, 0), &after).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        a.put(&k, &entry("v1", 60_000, 0, 0), &before)
            .await
            .unwrap(),
        PutOutcome::Fenced(Refusal::LeaseLost)
    );
    // An evicted record (as allkeys-lru may do): the same.
    let held = a.ticket(&k, ttl).await.unwrap();
    let record = a.entry_key(&k).replace(":e", ":f");
    assert_eq!(server.cli(&["DEL", &record]), "1");
    assert_eq!(
        a.put(&k, &entry("v3", 60_000, 0, 0), &held).await.unwrap(),
        PutOutcome::Fenced(Refusal::LeaseLost)
    );
    assert_eq!(
        b.get(&k).await.unwrap().unwrap().body,
        "v2",
        "nothing older landed"
    );
    // A restart without persistence.
    let before = a.ticket(&k, ttl).await.unwrap();
    server.kill();
    let _server = RedisServer::start_on(server.port(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        match a.put(&k, &entry("v4", 60_000, 0, 0), &before).await {
            Ok(outcome) => break outcome,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("Redis never came back: {err}"),
        }
    };
    assert_eq!(outcome, PutOutcome::Fenced(Refusal::LeaseLost));
}

/// Nothing the protocol writes outlives its purpose: entries expire with
/// their stale window, fence records with the last lease drawn on them, and
/// a purge of a key without a lease in flight leaves nothing behind.
#[tokio::test]
async fn redis_keys_all_expire() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let ttl = Duration::from_millis(200);
    for i in 0..50 {
        let k = key(&format!("/items/{i}"));
        let lease = a.try_lock(&k, ttl).await.unwrap().acquired().unwrap();
        a.put(&k, &entry("x", 100, 100, 0), &lease).await.unwrap();
        a.unlock(&k, &lease).await.unwrap();
        if i % 2 == 0 {
            a.delete(&k).await.unwrap();
        }
        a.delete(&key(&format!("/never/{i}"))).await.unwrap();
    }
    let keys = server.cli(&["--scan"]);
    for k in keys.lines() {
        let ttl: i64 = server.cli(&["PTTL", k]).parse().unwrap();
        assert_ne!(ttl, -1, "{k} has no expiry");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.cli(&["DBSIZE"]), "0", "{}", server.cli(&["--scan"]));
}

/// A tag's index in Redis is bounded: past `max_tag_members` the keys kept
/// the shortest leave it and their entries are deleted (a purge never
/// misses an entry the index dropped); it expires with its entries.
#[tokio::test]
async fn redis_tag_index_is_bounded_and_takes_what_it_drops_with_it() {
    let server = RedisServer::start();
    let a = RedisStore::builder(server.url())
        .max_tag_members(5)
        .connect()
        .await
        .unwrap();
    let tagged = |i: u64| {
        let mut e = entry(&format!("v{i}"), 1_000 + i * 100, 0, 0);
        e.headers
            .push(("surrogate-key".into(), b"bounded".to_vec()));
        e
    };
    for i in 0..20 {
        assert_eq!(
            fill(&a, &key(&format!("/bounded{i}")), &tagged(i))
                .await
                .unwrap(),
            PutOutcome::Written
        );
    }
    let mut live = Vec::new();
    for i in 0..20 {
        if a.get(&key(&format!("/bounded{i}")))
            .await
            .unwrap()
            .is_some()
        {
            live.push(i);
        }
    }
    assert_eq!(live, (15..20).collect::<Vec<_>>(), "the 5 kept the longest");
    let purge = a
        .purge_tag("bounded", stampede_layer::store::PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!((purge.hit, purge.keys.len()), (5, 5));
    // Expires with its entries (kept 1.0 to 2.9 s): nothing left after.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let keys = server.cli(&["--scan"]);
    assert!(
        keys.lines()
            .all(|k| !k.contains(":{t:") || k.ends_with(":p")),
        "{keys}"
    );
}

async fn near(redis: &RedisStore, ttl: Duration) -> NearCacheStore<RedisStore> {
    let mut config = NearCacheConfig::default();
    config.ttl = ttl;
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
    contract::run(&a, &b).await;
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
    fill(&redis, &k, &entry("v1", 60_000, 0, 0)).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(s.get(&k).await.unwrap().unwrap().body, "v1");
    }
    // Behind their backs (a write without a delete): both keep serving v1.
    fill(&redis, &k, &entry("v2", 60_000, 0, 0)).await.unwrap();
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
    fill(&redis, &k, &entry("v3", 60_000, 0, 0)).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().body, "v3");
    fill(&redis, &k, &entry("v4", 60_000, 0, 0)).await.unwrap();
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
    fill(&redis, &k, &entry("v5", 60_000, 0, 0)).await.unwrap();
    until_reads(&b, "/items/1", Some("v5")).await;
    fill(&redis, &k, &entry("v6", 60_000, 0, 0)).await.unwrap();
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
