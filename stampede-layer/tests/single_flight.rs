//! SingleFlight: concurrent rebuilds of one key in one process become one
//! origin call. The stack is built by hand (lookup → single-flight → fill →
//! origin) to keep a handle on the flight map (`SingleFlight::in_flight`).

mod common;

use common::*;
use futures_util::future::join_all;
use stampede_layer::{
    BoxError, CacheConfig, CacheFillLayer, CacheLookupLayer, CacheStore, MemoryStore, SharedStore,
    SingleFlight, SingleFlightLayer,
};
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

type Stack =
    BoxCloneSyncService<http::Request<Body>, http::Response<stampede_layer::CacheBody>, BoxError>;

/// lookup → single-flight → fill → `origin`, over a fresh memory store.
fn build<O>(
    origin: O,
    flights: SingleFlightLayer,
) -> (Arc<MemoryStore>, SingleFlight<impl Send>, Stack)
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
    let config = CacheConfig {
        ttl: Duration::from_secs(30),
        ..CacheConfig::default()
    };
    let fill = CacheFillLayer::new(store.clone(), config.clone()).layer(origin);
    let sf = flights.layer(fill);
    let lookup = CacheLookupLayer::new(store, config).layer(sf.clone());
    (memory, sf, BoxCloneSyncService::new(lookup))
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_origin_call() {
    let (calls, origin) = slow_origin(Duration::from_millis(100));
    let (_, sf, svc) = build(origin, SingleFlightLayer::new());

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
    assert_eq!(sf.in_flight(), 0);
}

#[tokio::test]
async fn distinct_keys_are_not_coalesced() {
    let (calls, origin) = origin(|_, req| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(respond(200, req.uri().path().to_owned()))
    });
    let (_, sf, svc) = build(origin, SingleFlightLayer::new());
    let paths: Vec<String> = (0..10).map(|i| format!("/items/{}", i % 5)).collect();
    let resps = join_all(paths.iter().map(|p| svc.clone().oneshot(get(p)))).await;
    for (path, resp) in paths.iter().zip(resps) {
        let (_, _, body) = read(resp.unwrap()).await;
        assert_eq!(body, path.as_str(), "each key gets its own response");
    }
    assert_eq!(calls.total(), 5, "one call per distinct key");
    assert_eq!(sf.in_flight(), 0);
}

#[tokio::test]
async fn cancelled_leader_does_not_cancel_followers() {
    let (calls, origin) = slow_origin(Duration::from_millis(300));
    let (_, sf, svc) = build(origin, SingleFlightLayer::new());

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
    assert_eq!(sf.in_flight(), 0);
}

#[tokio::test]
async fn cancelled_leader_alone_still_fills_the_cache() {
    let (calls, origin) = slow_origin(Duration::from_millis(100));
    let (store, sf, svc) = build(origin, SingleFlightLayer::new());

    let leader = tokio::spawn(svc.clone().oneshot(get("/items/1")));
    calls.wait_inflight(1).await;
    leader.abort();
    // Nobody is waiting any more: the detached rebuild still runs to the end.
    tokio::time::timeout(Duration::from_secs(3), async {
        while calls.inflight() > 0 || sf.in_flight() > 0 {
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
    let (store, sf, svc) = build(origin, SingleFlightLayer::new());

    let resps = join_all((0..10).map(|_| svc.clone().oneshot(get("/items/1")))).await;
    for resp in resps {
        let err = resp.expect_err("followers share the leader's error");
        assert!(err.to_string().contains("origin down"), "{err}");
    }
    // Chosen semantics (single_flight.rs): the error is shared, nobody retries.
    assert_eq!(calls.total(), 1);
    assert_eq!(sf.in_flight(), 0);
    assert!(store.get(&key("/items/1")).await.unwrap().is_none());
    // The error is not cached: the next request tries again.
    assert!(svc.oneshot(get("/items/1")).await.is_err());
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
    let (_, sf, svc) = build(origin, SingleFlightLayer::new());

    let resps = tokio::time::timeout(
        Duration::from_secs(5),
        join_all((0..10).map(|_| svc.clone().oneshot(get("/items/1")))),
    )
    .await
    .expect("waiters of a panicked rebuild must not hang");
    for resp in resps {
        assert!(
            resp.is_err(),
            "a panicked rebuild is an error for every waiter"
        );
    }
    assert_eq!(calls.total(), 1);
    assert_eq!(sf.in_flight(), 0, "the panicked flight left the map");
}

#[tokio::test]
async fn flight_map_is_bounded() {
    let (calls, origin) = slow_origin(Duration::from_millis(100));
    let (_, sf, svc) = build(origin, SingleFlightLayer::new().max_flights(3));

    let reqs: Vec<_> = (0..10)
        .map(|i| tokio::spawn(svc.clone().oneshot(get(&format!("/items/{i}")))))
        .collect();
    calls.wait_inflight(10).await; // keys past the bound go straight through
    assert_eq!(sf.in_flight(), 3);
    for r in reqs {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(sf.in_flight(), 0);
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
    async fn get(
        &self,
        key: &stampede_layer::CacheKey,
    ) -> Result<Option<Arc<stampede_layer::CachedResponse>>, stampede_layer::StoreError> {
        self.0.get(key).await
    }
    async fn put(
        &self,
        key: &stampede_layer::CacheKey,
        entry: &stampede_layer::CachedResponse,
        lease: &stampede_layer::LockLease,
    ) -> Result<stampede_layer::PutOutcome, stampede_layer::StoreError> {
        self.0.put(key, entry, lease).await
    }
    async fn delete(
        &self,
        key: &stampede_layer::CacheKey,
    ) -> Result<bool, stampede_layer::StoreError> {
        self.0.delete(key).await
    }
    async fn ticket(
        &self,
        key: &stampede_layer::CacheKey,
        ttl: Duration,
    ) -> Result<stampede_layer::LockLease, stampede_layer::StoreError> {
        self.0.ticket(key, ttl).await
    }
    async fn try_lock_after(
        &self,
        _key: &stampede_layer::CacheKey,
        _ttl: Duration,
        _holder: Option<stampede_layer::FencingToken>,
    ) -> Result<stampede_layer::LockAttempt, stampede_layer::StoreError> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(stampede_layer::LockAttempt::Held(Default::default()))
    }
    async fn unlock_failed(
        &self,
        _key: &stampede_layer::CacheKey,
        _lease: &stampede_layer::LockLease,
        _failure: &stampede_layer::RebuildFailure,
    ) -> Result<bool, stampede_layer::StoreError> {
        Ok(false)
    }
    async fn unlock(
        &self,
        _key: &stampede_layer::CacheKey,
        _lease: &stampede_layer::LockLease,
    ) -> Result<bool, stampede_layer::StoreError> {
        Ok(false)
    }
    async fn renew_lock(
        &self,
        _key: &stampede_layer::CacheKey,
        _lease: &stampede_layer::LockLease,
        _ttl: Duration,
    ) -> Result<bool, stampede_layer::StoreError> {
        Ok(false)
    }
    async fn wait_for_fill(&self, key: &stampede_layer::CacheKey, timeout: Duration) {
        self.0.wait_for_fill(key, timeout).await
    }
}

#[tokio::test]
async fn a_client_never_gets_the_non_answer_of_a_refresh_that_lost_the_lock() {
    let (calls, origin) = slow_origin(Duration::from_millis(10));
    let store = Arc::new(LockedElsewhere::default());
    // Fresh for 200 ms, then only servable on error; a long rebuild time (50 s,
    // within the stores' 60 s purge window: a fill whose origin request is
    // older is refused) makes XFetch refresh a read 60 ms before expiry with
    // probability 1 - e^(-0.06/50) ≈ 0.999.
    let mut e = entry("cached", 200, 0, 0);
    e.error_until_ms += 60_000;
    e.rebuild_ms = 50_000;
    let expiry = e.fresh_until_ms;
    let filled = stampede_layer::testing::fill(&*store, &key("/items/1"), &e)
        .await
        .unwrap();
    assert!(
        matches!(filled, stampede_layer::PutOutcome::Written),
        "{filled:?}"
    );
    let shared: SharedStore = store;
    let svc = stampede_layer::StampedeLayer::new(shared)
        .mitigations(stampede_layer::Mitigations {
            xfetch: true,
            single_flight: true,
            lock: true,
            ..stampede_layer::Mitigations::NONE
        })
        .lock_wait(Duration::from_millis(100))
        .service(origin);

    let until = |t: u64| Duration::from_millis(t.saturating_sub(stampede_layer::entry::now_ms()));
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
