//! DistributedLock against a real redis-server: two "instances" are two
//! separately built stacks, each with its own `RedisStore`, on one Redis.

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::testing::{RedisServer, fill};
use stampede_layer::{
    BoxError, CacheStore, LeaseOptions, Mitigations, RedisStore, SharedStore, StampedeLayer,
    StampedeService,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt};

const LOCK_ONLY: Mitigations = {
    let mut m = Mitigations::NONE;
    m.lock = true;
    m
};

/// One instance: its own Redis connection pool and its own stack.
async fn instance<O>(
    server: &RedisServer,
    origin: O,
    mitigations: Mitigations,
    lock_ttl: Duration,
    lock_wait: Duration,
) -> (RedisStore, StampedeService<Body>)
where
    O: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    O::Future: Send + 'static,
{
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    let store: SharedStore = Arc::new(redis.clone());
    let svc = StampedeLayer::new(store)
        .mitigations(mitigations)
        .ttl(Duration::from_secs(30))
        .stale_ttl(Duration::ZERO)
        .lock_ttl(lock_ttl)
        .lock_wait(lock_wait)
        .service(origin);
    (redis, svc)
}

async fn one_rebuild_fleet_wide(mitigations: Mitigations) -> Vec<String> {
    let server = RedisServer::start();
    let (calls, origin) = slow_origin(Duration::from_millis(200));
    let wait = Duration::from_secs(2);
    let (_, a) = instance(&server, origin.clone(), mitigations, wait, wait).await;
    let (_, b) = instance(&server, origin, mitigations, wait, wait).await;

    let reqs = (0..20).map(|i| {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        svc.oneshot(get("/items/1"))
    });
    let mut statuses = Vec::new();
    for resp in join_all(reqs).await {
        let (status, cs, body) = read(resp.unwrap()).await;
        assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]), "{cs}");
        statuses.push(cs);
    }
    assert_eq!(
        calls.total(),
        1,
        "one origin call fleet-wide: {statuses:#?}"
    );
    statuses
}

#[tokio::test]
async fn lock_excludes_across_instances() {
    let statuses = one_rebuild_fleet_wide(LOCK_ONLY).await;
    let leader = statuses
        .iter()
        .position(|cs| cs.contains("fwd="))
        .expect("one request went to the origin");
    // Every loser is answered from the cache: most wait on the lock; one
    // scheduled after the leader released it takes the lock and finds the
    // entry on its re-check (`detail=recheck`), which is as good.
    let from_cache = |cs: &&String| {
        is_hit(cs) && (cs.contains("detail=lock-wait") || cs.contains("detail=recheck"))
    };
    let losers: Vec<_> = statuses
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(i, cs)| (i % 2 != leader % 2, cs))
        .collect();
    assert!(
        losers.iter().all(|(_, cs)| from_cache(cs)),
        "losers are answered from the cache: {statuses:#?}"
    );
    // The exclusion is fleet-wide: the other instance's requests waited on
    // the lock this one held.
    assert!(
        losers
            .iter()
            .any(|(other, cs)| *other && cs.contains("detail=lock-wait")),
        "the other instance waited on the lock: {statuses:#?}"
    );
}

#[tokio::test]
async fn full_stack_makes_one_rebuild_across_instances() {
    one_rebuild_fleet_wide({
        let mut m = Mitigations::ALL;
        m.jitter = false;
        m
    })
    .await;
}

#[tokio::test]
async fn fencing_rejects_the_write_of_an_expired_lock_holder() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let server = RedisServer::start();
    // Call 1 (instance A, paused: it cannot renew) outlives its 150 ms lock;
    // call 2 (instance B) is quick.
    let (calls, origin) = origin(|n, _| async move {
        let (delay, body) = if n == 1 { (700, "old") } else { (50, "new") };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(respond(200, body))
    });
    let ttl = Duration::from_millis(150);
    let (redis, _) = instance(&server, origin.clone(), LOCK_ONLY, ttl, ttl).await;
    let paused = StampedeLayer::new(Arc::new(redis.clone()) as SharedStore)
        .mitigations(LOCK_ONLY)
        .ttl(Duration::from_secs(30))
        .lock_ttl(ttl)
        .lease({
            let mut c = LeaseOptions::default();
            c.renew = false;
            c
        });
    let a = paused.service(origin.clone());
    let (_, b) = instance(&server, origin, LOCK_ONLY, ttl, ttl).await;

    let started = Instant::now();
    let slow = tokio::spawn(a.oneshot(get("/items/1")));
    calls.wait_inflight(1).await;
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(started.elapsed())).await;
    // A's lock has expired: B takes it (a new lease) and fills first.
    let (status, cs, body) = read(b.oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"new"[..]), "{cs}");
    assert!(cs.contains("stored"), "{cs}");
    assert_eq!(calls.total(), 2);

    // A's rebuild ends: its client gets its answer, but the write is refused.
    let (status, cs, body) = read(slow.await.unwrap().unwrap()).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"old"[..]));
    assert!(
        cs.contains("detail=fenced") && !cs.contains("stored"),
        "{cs}"
    );

    let held = redis.get(&key("/items/1")).await.unwrap().unwrap();
    assert_eq!(held.body, "new", "the stale holder's write was rejected");
    assert_eq!(
        counter(
            &metrics,
            "stampede_fencing_rejections_total",
            &[("reason", "lease-lost")]
        ),
        1
    );
}

#[tokio::test]
async fn a_lock_never_released_is_taken_over_once_it_expires() {
    let server = RedisServer::start();
    let (calls, origin) = slow_origin(Duration::from_millis(50));
    let wait = Duration::from_millis(300);
    let (redis, svc) = instance(&server, origin, LOCK_ONLY, Duration::from_secs(2), wait).await;
    // A holder that never releases nor renews (crashed mid-rebuild): its
    // lock lives out its TTL, 1 s, and no longer. Without a stale copy the
    // waiter waits past `wait` — a live holder would still be renewing — and
    // takes the lock over once it expired.
    let lock_ttl = Duration::from_secs(1);
    let zombie = redis.try_lock(&key("/items/1"), lock_ttl).await.unwrap();
    assert!(zombie.acquired().is_some());

    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(get("/items/1")))
        .await
        .expect("the lock wait must be bounded")
        .unwrap();
    let elapsed = started.elapsed();
    let (status, cs, body) = read(resp).await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]), "{cs}");
    assert!(
        elapsed >= lock_ttl && elapsed < lock_ttl + Duration::from_millis(600),
        "waited {elapsed:?}, lock TTL {lock_ttl:?}"
    );
    assert_eq!(
        calls.total(),
        1,
        "once the lock expired the waiter rebuilds itself"
    );
    // Its fill serves the next request.
    let (_, cs, _) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    assert!(is_hit(&cs), "{cs}");
    assert_eq!(calls.total(), 1);
}

#[tokio::test]
async fn a_lock_never_released_serves_the_stale_copy_past_the_bound() {
    let server = RedisServer::start();
    let (calls, origin) = slow_origin(Duration::from_millis(50));
    let wait = Duration::from_millis(200);
    let (redis, svc) = instance(&server, origin, LOCK_ONLY, Duration::from_secs(2), wait).await;
    // An entry past its fresh TTL, kept for stale-if-error, and a stuck lock.
    let mut old = entry("stale body", 0, 0, 1);
    old.error_until_ms += 60_000;
    fill(&redis, &key("/items/1"), &old).await.unwrap();
    let _zombie = redis
        .try_lock(&key("/items/1"), Duration::from_secs(30))
        .await
        .unwrap()
        .acquired()
        .unwrap();

    let started = Instant::now();
    let (status, cs, body) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    let elapsed = started.elapsed();
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"stale body"[..]));
    assert!(is_hit(&cs) && cs.contains("detail=lock-timeout"), "{cs}");
    assert!(ttl_param(&cs).unwrap() < 0, "{cs}");
    assert!(
        elapsed >= wait && elapsed < wait + Duration::from_millis(500),
        "{elapsed:?}"
    );
    assert_eq!(calls.total(), 0);
}
