//! A circuit breaker around a remote store: when Redis fails, fall back to
//! an in-process store (and so to process-local locking) at once instead of
//! paying a connect or command timeout on every request, and return to Redis
//! by itself when it answers again.
//!
//! Closed: every operation goes to the primary; `failure_threshold`
//! consecutive backend errors open the breaker. Open: operations go to the
//! fallback until the cool-down ends. Half-open: one probe goes to the
//! primary (the rest still use the fallback); success closes the breaker,
//! failure re-opens it with a doubled cool-down (capped). Decode errors are
//! not backend failures (the entry is bad, Redis is fine).

use super::{CacheStore, LockLease, PutOutcome, StoreError, record_error};
use crate::entry::CachedResponse;
use crate::key::CacheKey;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, cool_down: Duration },
    HalfOpen { cool_down: Duration },
}

/// The breaker's decision for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Primary,
    Probe,
    Fallback,
}

/// A store that falls back from `primary` to `fallback` behind a circuit breaker.
pub struct FallbackStore<P, F> {
    primary: P,
    fallback: F,
    state: Arc<Mutex<State>>,
    failure_threshold: u32,
    base_cool_down: Duration,
    max_cool_down: Duration,
}

impl<P: CacheStore, F: CacheStore> std::fmt::Debug for FallbackStore<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStore")
            .field("primary", &self.primary.backend())
            .field("fallback", &self.fallback.backend())
            .field("state", &*self.state.lock().expect("breaker lock"))
            .finish()
    }
}

impl<P: CacheStore, F: CacheStore> FallbackStore<P, F> {
    /// Breaker opening after 3 consecutive failures, cool-down 500 ms doubling to 5 s.
    pub fn new(primary: P, fallback: F) -> Self {
        Self {
            primary,
            fallback,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            failure_threshold: 3,
            base_cool_down: Duration::from_millis(500),
            max_cool_down: Duration::from_secs(5),
        }
    }

    /// Consecutive failures that open the breaker.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// First and longest cool-down of an open breaker.
    pub fn cool_down(mut self, base: Duration, max: Duration) -> Self {
        self.base_cool_down = base;
        self.max_cool_down = max.max(base);
        self
    }

    /// Whether operations currently go to the fallback.
    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().expect("breaker lock"),
            State::Closed { .. }
        )
    }

    fn route(&self) -> Route {
        let route = self.breaker_route();
        // A primary that knows it is disconnected (still connecting, or
        // reconnecting) cannot answer: count the failure and use the fallback
        // at once instead of paying its command timeout.
        if route != Route::Fallback && self.primary.is_degraded() {
            self.failed(route);
            return Route::Fallback;
        }
        route
    }

    fn breaker_route(&self) -> Route {
        let mut s = self.state.lock().expect("breaker lock");
        match *s {
            State::Closed { .. } => Route::Primary,
            State::Open { until, cool_down } if Instant::now() >= until => {
                *s = State::HalfOpen { cool_down };
                Route::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Route::Fallback,
        }
    }

    fn succeeded(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        if !matches!(*s, State::Closed { failures: 0 }) {
            if !matches!(*s, State::Closed { .. }) {
                tracing::info!(
                    backend = self.primary.backend(),
                    "store recovered; circuit closed"
                );
                metrics::gauge!("stampede_store_circuit_open", "backend" => self.primary.backend())
                    .set(0.0);
            }
            *s = State::Closed { failures: 0 };
        }
    }

    fn failed(&self, route: Route) {
        let mut s = self.state.lock().expect("breaker lock");
        let open = |cool_down: Duration| State::Open {
            until: Instant::now() + cool_down,
            cool_down,
        };
        *s = match (*s, route) {
            (State::HalfOpen { cool_down }, Route::Probe) => {
                open((cool_down * 2).min(self.max_cool_down))
            }
            (State::Closed { failures }, _) if failures + 1 >= self.failure_threshold => {
                tracing::warn!(
                    backend = self.primary.backend(),
                    fallback = self.fallback.backend(),
                    "store failing; circuit open, using the fallback store"
                );
                metrics::gauge!("stampede_store_circuit_open", "backend" => self.primary.backend())
                    .set(1.0);
                open(self.base_cool_down)
            }
            (State::Closed { failures }, _) => State::Closed {
                failures: failures + 1,
            },
            (other, _) => other,
        };
    }
}

macro_rules! route {
    ($self:ident, $op:literal, |$s:ident| $call:expr) => {{
        let route = $self.route();
        if route == Route::Fallback {
            let $s = &$self.fallback;
            $call
        } else {
            let result = {
                let $s = &$self.primary;
                $call
            };
            match result {
                Err(StoreError::Backend(e)) => {
                    record_error(&$self.primary, $op, &StoreError::Backend(e));
                    $self.failed(route);
                    let $s = &$self.fallback;
                    $call
                }
                other => {
                    $self.succeeded();
                    other
                }
            }
        }
    }};
}

#[async_trait]
impl<P: CacheStore, F: CacheStore> CacheStore for FallbackStore<P, F> {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    fn is_distributed(&self) -> bool {
        self.primary.is_distributed() && !self.is_open()
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        route!(self, "get", |s| s.get(key).await)
    }

    async fn get_authoritative(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        route!(self, "get", |s| s.get_authoritative(key).await)
    }

    async fn put(&self, key: &CacheKey, entry: &CachedResponse) -> Result<PutOutcome, StoreError> {
        route!(self, "put", |s| s.put(key, entry).await)
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        // Delete from both: an entry written to the fallback during an outage
        // must not outlive an invalidation.
        let _ = self.fallback.delete(key).await;
        route!(self, "delete", |s| s.delete(key).await)
    }

    async fn try_lock(
        &self,
        key: &CacheKey,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError> {
        route!(self, "lock", |s| s.try_lock(key, ttl).await)
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        route!(self, "lock", |s| s.renew_lock(key, lease, ttl).await)
    }

    /// Degraded: the primary knows it is disconnected, or failed recently
    /// (the breaker is open, within its cool-down). Past the cool-down the
    /// next operation probes it, so an idle gateway whose Redis came back is
    /// not reported degraded for want of traffic.
    fn is_degraded(&self) -> bool {
        let cooling = matches!(
            *self.state.lock().expect("breaker lock"),
            State::Open { until, .. } if Instant::now() < until
        );
        cooling || self.primary.is_degraded()
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        // A lease is released where it was taken; try both (owners are unique).
        let local = self.fallback.unlock(key, lease).await.unwrap_or(false);
        if local {
            return Ok(true);
        }
        route!(self, "lock", |s| s.unlock(key, lease).await)
    }

    async fn wait_for_fill(&self, key: &CacheKey, timeout: Duration) {
        if self.is_open() {
            self.fallback.wait_for_fill(key, timeout).await
        } else {
            self.primary.wait_for_fill(key, timeout).await
        }
    }

    fn entry_count(&self) -> Option<u64> {
        self.primary.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::sample;
    use crate::store::MemoryStore;
    use crate::store::test_fake::FakeRemote;
    use http::Method;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn opens_on_failures_and_recovers_by_itself() {
        let down = Arc::new(AtomicBool::new(false));
        let store = FallbackStore::new(
            FakeRemote {
                down: down.clone(),
                ..FakeRemote::default()
            },
            MemoryStore::default(),
        )
        .cool_down(Duration::from_millis(50), Duration::from_millis(100));
        let k = CacheKey::new(&Method::GET, &"/a".parse().unwrap());
        store.put(&k, &sample("v1", 60_000, 0)).await.unwrap();
        assert!(!store.is_open() && store.is_distributed());

        down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            // Served by the fallback, never an error.
            assert!(store.get(&k).await.is_ok());
        }
        assert!(store.is_open());
        assert!(!store.is_distributed());
        store.put(&k, &sample("v2", 60_000, 0)).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap().unwrap().body, "v2");

        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            store.get(&k).await.unwrap().unwrap().body,
            "v1",
            "probe went to Redis"
        );
        assert!(!store.is_open(), "a successful probe closes the circuit");
    }
}
