//! SingleFlight: concurrent rebuilds of one key in one process become one
//! origin call. The stack is `StampedeLayer` with single-flight as its only
//! mitigation (the flight map's own bound is a unit test in
//! `src/single_flight.rs`).

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::store::{
    CacheKey, CachedResponse, FencingToken, LockAttempt, LockLease, PutOutcome, RebuildFailure,
};
use stampede_layer::{
    BoxError, CacheConfig, CacheStore, MemoryStore, Mitigations, OriginFailure, SharedStore,
    StampedeLayer, StampedeService, StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tower::{Service, ServiceExt};

/// The stack with single-flight alone over `origin`, on a fresh memory store.
fn build<O>(origin: O) -> (Arc<MemoryStore>, StampedeService<Body>)
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
    let mut config = CacheConfig::default();
    config.ttl = Duration::from_secs(30);
    let mut single_flight = Mitigations::NONE;
    single_flight.single_flight = true;
    let svc = StampedeLayer::new(store)
        .mitigations(single_flight)
        .cache_config(config)
        .service(origin);
    (memory, svc)
}

/// The error an answer made for a failed origin stands for.
fn origin_failure(resp: &http::Response<stampede_layer::CacheBody>) -> String {
    resp.extensions()
        .get::<OriginFailure>()
        .map(|f| f.0.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_origin_call() {
    let (calls, origin) = slow_origin(Duration::from_millis(100));
    let (_, svc) = build(origin);

    let resps = join_all((0..50).map(|_| svc.clone().oneshot(get("/items/1")))).await;
    let mut collapsed = 0;
    for resp in resps {
        let (status, cs, body) = read(resp.unwrap()).await;
        assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]));
        assert!(!is_hit(&cs), "{cs}");
        if cs.contains("; collapsed") {
            collapsed += 1;
        } else {
            assert!(cs.contains("; stored"), "the leader stores: {cs}");
        }
    }
    assert_eq!(calls.total(), 1, "one origin call for 50 concurrent misses");
    assert_eq!(collapsed, 49, "every follower is marked collapsed");
}

#[tokio::test]
async fn distinct_keys_are_not_coalesced() {
    let (calls, origin) = origin(|_, req| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(respond(200, req.uri().path().to_owned()))
    });
    let (_, svc) = build(origin);
    let paths: Vec<String> = (0..10).map(|i| format!("/items/{}", i % 5)).collect();
    let resps = join_all(paths.iter().map(|p| svc.clone().oneshot(get(p)))).await;
    for (path, resp) in paths.iter().zip(resps) {
        let (_, _, body) = read(resp.unwrap()).await;
        assert_eq!(body, path.as_str(), "each key gets its own response");
    }
    assert_eq!(calls.total(), 5, "one call per distinct key");
}

#[tokio::test]
async fn cancelled_leader_does_not_cancel_followers() {
    let (calls, origin) = slow_origin(Duration::from_millis(300));
    let (_, svc) = build(origin);

    let leader = tokio::spawn(svc.clone().oneshot(get("/items/1")));
    calls.wait_inflight(1).await;
    let followers: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(get("/items/1"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await; // followers join the flight
    leader.abort(); // the leader's client goes away
    assert!(leader.await.unwrap_err().is_cancelled());

    for f in followers {
        let (status, cs, body) = read(f.await.unwrap().unwrap()).await;
        assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v1"[..]));
        assert!(cs.contains("collapsed"), "{cs}");
    }
    assert_eq!(calls.total(), 1);
}

#[tokio::test]
async fn cancelled_leader_alone_still_fills_the_cache() {
    let (calls, origin) = slow_origin(Duration::from_millis(100));
    let (store, svc) = build(origin);

    let leader = tokio::spawn(svc.clone().oneshot(get("/items/1")));
    calls.wait_inflight(1).await;
    leader.abort();
    // Nobody is waiting any more: the detached rebuild still runs to the end.
    tokio::time::timeout(Duration::from_secs(3), async {
        while calls.inflight() > 0 || store.get(&key("/items/1")).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the rebuild of a cancelled leader must complete");
    let filled = store.get(&key("/items/1")).await.unwrap();
    assert_eq!(filled.map(|e| e.body.clone()), Some("v1".into()));
    let (_, cs, _) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    assert!(is_hit(&cs), "{cs}");
    assert_eq!(calls.total(), 1);
}

#[tokio::test]
async fn leader_error_reaches_every_follower_once() {
    let (calls, origin) = origin(|_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err::<http::Response<Body>, BoxError>("origin down".into())
    });
    let (store, svc) = build(origin);

    let resps = join_all((0..10).map(|_| svc.clone().oneshot(get("/items/1")))).await;
    for resp in resps {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 502, "followers share the leader's failure");
        let err = origin_failure(&resp);
        assert!(err.contains("origin down"), "{err}");
    }
    // Chosen semantics (single_flight.rs): the error is shared, nobody retries.
    assert_eq!(calls.total(), 1);
    assert!(store.get(&key("/items/1")).await.unwrap().is_none());
    // The error is not cached: the next request tries again.
    assert_eq!(svc.oneshot(get("/items/1")).await.unwrap().status(), 502);
    assert_eq!(calls.total(), 2);
}

#[tokio::test]
async fn panicking_origin_errors_waiters_instead_of_hanging() {
    let (calls, origin) = origin(|_, _| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if true {
            panic!("origin bug (expected by this test)");
        }
        Ok::<_, BoxError>(respond(200, ""))
    });
    let (_, svc) = build(origin);

    let resps = tokio::time::timeout(
        Duration::from_secs(5),
        join_all((0..10).map(|_| svc.clone().oneshot(get("/items/1")))),
    )
    .await
    .expect("waiters of a panicked rebuild must not hang");
    for resp in resps {
        assert_eq!(
            resp.unwrap().status(),
            502,
            "a panicked rebuild is an error for every waiter"
        );
    }
    assert_eq!(calls.total(), 1);
    // The panicked flight left the map: the next request rebuilds.
    let next = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get("/items/1")))
        .await
        .expect("a request after a panicked flight must not hang");
    assert_eq!(next.unwrap().status(), 502);
    assert_eq!(calls.total(), 2);
}

/// A store whose lock is held elsewhere (another instance is refreshing) and
/// whose lock command takes a while, as over the network.
#[derive(Debug, Default)]
struct LockedElsewhere(MemoryStore);

#[async_trait::async_trait]
impl CacheStore for LockedElsewhere {
    fn backend(&self) -> &'static str {
        "locked-elsewhere"
    }
    fn is_distributed(&self) -> bool {
        true
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        self.0.get(key).await
    }
    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        self.0.put(key, entry, lease).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }
    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError> {
        self.0.ticket(key, ttl).await
    }
    async fn try_lock_after(
        &self,
        _key: &CacheKey,
        _ttl: Duration,
        _holder: Option<FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(LockAttempt::Held(Default::default()))
    }
    async fn unlock_failed(
        &self,
        _key: &CacheKey,
        _lease: &LockLease,
        _failure: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn unlock(&self, _key: &CacheKey, _lease: &LockLease) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn renew_lock(
        &self,
        _key: &CacheKey,
        _lease: &LockLease,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn wait_for_fill(&self, key: &CacheKey, timeout: Duration) {
        self.0.wait_for_fill(key, timeout).await
    }
}

#[tokio::test]
async fn a_client_never_gets_the_non_answer_of_a_refresh_that_lost_the_lock() {
    let (calls, origin) = slow_origin(Duration::from_millis(10));
    let store = Arc::new(LockedElsewhere::default());
    // Fresh for 200 ms, then only servable on error; a rebuild time far
    // beyond the lifetime makes XFetch refresh on every fresh read. (Within
    // the store's purge window: a fill that asked the origin longer ago than
    // that is refused as purged.)
    let mut e = entry("cached", 200, 0, 0);
    e.error_until_ms += 60_000;
    e.rebuild_ms = 30_000;
    let expiry = e.fresh_until_ms;
    let outcome = stampede_layer::testing::fill(&*store, &key("/items/1"), &e)
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Written);
    let shared: SharedStore = store;
    let mut mitigations = Mitigations::NONE;
    mitigations.xfetch = true;
    mitigations.single_flight = true;
    mitigations.lock = true;
    let svc = StampedeLayer::new(shared)
        .mitigations(mitigations)
        .lock_wait(Duration::from_millis(100))
        .service(origin);

    let until = |t: u64| Duration::from_millis(t.saturating_sub(stampede_layer::store::now_ms()));
    tokio::time::sleep(until(expiry - 60)).await;
    // A fresh hit starts an XFetch refresh; it loses the lock (after 150 ms).
    let (status, cs, _) = read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(status, 200, "{cs}");
    tokio::time::sleep(until(expiry + 20)).await;
    // A client request right after expiry, while that refresh is in flight.
    let (status, cs, body) = read(svc.oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), body.as_ref()),
        (200, &b"cached"[..]),
        "a client must not get the refresh's non-answer: {cs}"
    );
    assert_eq!(calls.total(), 0);
}
