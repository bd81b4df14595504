//! A circuit breaker around a remote store: when Redis fails, fall back to
//! an in-process store (and so to process-local locking) at once instead of
//! paying a connect or command timeout on every request, and return to Redis
//! by itself when it answers again.
//!
//! Closed: every operation goes to the primary; `failure_threshold`
//! consecutive backend errors open the breaker. A failed call is answered
//! as a failure (a read as a miss), never repeated against the fallback:
//! a lease of one store is never written, renewed or released in the other
//! (their epochs differ anyway, see [`fence`](super::fence)), and a purge
//! the primary did not take is reported as failed, not as done. Open: operations go to the
//! fallback until the cool-down ends. Half-open: one probe goes to the
//! primary (the rest still use the fallback); success closes the breaker,
//! failure re-opens it with a doubled cool-down (capped). Decode errors are
//! not backend failures (the entry is bad, Redis is fine). When the breaker
//! closes again the fallback's entries are dropped: they were written during
//! the outage, and the fleet's purges since never reached them.

use super::tags::{PurgeMode, TagPurge};
use super::{
    CacheStore, FencingToken, LockAttempt, LockLease, PutOutcome, RebuildFailure, StoreError,
    record_error,
};
use crate::entry::{CachedResponse, now_ms};
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
    degraded_ttl: Duration,
    /// Deletes the primary did not take (an outage): replayed against it
    /// before its next operation once it answers again, so a purge that
    /// failed is not undone by a fill that lands after the outage.
    pending: Arc<Mutex<Vec<CacheKey>>>,
}

/// Most failed deletes remembered for replay.
const MAX_PENDING: usize = 100_000;

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
            degraded_ttl: Duration::from_secs(1),
            pending: Arc::default(),
        }
    }

    /// Replay the deletes an outage kept from the primary (it answers again).
    async fn replay_pending(&self) {
        let keys = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if keys.is_empty() {
            return;
        }
        tracing::info!(
            deletes = keys.len(),
            "replaying the deletes the store missed"
        );
        let mut failed = Vec::new();
        for key in keys {
            if self.primary.delete(&key).await.is_err() {
                failed.push(key);
            }
        }
        if !failed.is_empty() {
            self.remember_pending(failed);
        }
    }

    fn remember_pending(&self, keys: Vec<CacheKey>) {
        let mut pending = self.pending.lock().expect("pending lock");
        pending.extend(keys);
        if pending.len() > MAX_PENDING {
            let excess = pending.len() - MAX_PENDING;
            pending.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "too many deletes pending replay; oldest dropped"
            );
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.lock().expect("pending lock").is_empty()
    }

    /// Longest an entry written to the fallback is served as fresh or
    /// stale-while-revalidate (default 1 s, as long as a near-cache copy):
    /// during an outage no purge reaches it, so this bounds how long a
    /// gateway serves a version older than one another gateway already wrote.
    /// Its stale-if-error window is kept (served only when the origin fails).
    pub fn degraded_ttl(mut self, ttl: Duration) -> Self {
        self.degraded_ttl = ttl;
        self
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
                    "store recovered; circuit closed, fallback entries dropped"
                );
                // What the fallback holds was written during the outage,
                // unseen by the fleet's purges since: never serve it again.
                self.fallback.clear();
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

/// Owner prefix of the leases the fallback drew: a lease is renewed,
/// released and written with where it was drawn, never in the other store.
const LOCAL: &str = "fallback/";

impl<P: CacheStore, F: CacheStore> FallbackStore<P, F> {
    /// Run `op` on the primary (or the fallback when the breaker says so);
    /// a primary failure is counted and returned, never retried on the
    /// fallback: one failed call is a miss, not a switch of stores.
    async fn routed<'a, T, Fut>(
        &'a self,
        name: &'static str,
        op: impl Fn(&'a dyn CacheStore) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let route = self.route();
        if route == Route::Fallback {
            return op(&self.fallback).await;
        }
        if self.has_pending() {
            self.replay_pending().await;
        }
        self.on_primary(route, name, op(&self.primary).await)
    }

    /// Account for a primary call's result.
    fn on_primary<T>(
        &self,
        route: Route,
        name: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match result {
            Err(StoreError::Backend(e)) => {
                let err = StoreError::Backend(e);
                record_error(&self.primary, name, &err);
                self.failed(route);
                Err(err)
            }
            other => {
                self.succeeded();
                other
            }
        }
    }

    /// `lease` as the fallback drew it (without our prefix), if it did.
    fn local(lease: &LockLease) -> Option<LockLease> {
        lease.owner.strip_prefix(LOCAL).map(|owner| LockLease {
            owner: owner.to_owned(),
            ..lease.clone()
        })
    }

    fn mark_local(mut lease: LockLease) -> LockLease {
        lease.owner.insert_str(0, LOCAL);
        lease
    }

    /// The primary, for an operation of one of its leases: refused at once
    /// while the breaker is open (it is failing; the lease is as good as lost).
    async fn with_primary_lease<'a, T, Fut>(
        &'a self,
        name: &'static str,
        op: impl FnOnce(&'a P) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        match self.route() {
            Route::Fallback => Err(StoreError::Backend(format!(
                "{} unavailable (circuit open)",
                self.primary.backend()
            ))),
            route => {
                if self.has_pending() {
                    self.replay_pending().await;
                }
                self.on_primary(route, name, op(&self.primary).await)
            }
        }
    }
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
        self.routed("get", |s| s.get(key)).await
    }

    async fn get_authoritative(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        self.routed("get", |s| s.get_authoritative(key)).await
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        match Self::local(lease) {
            Some(local) => {
                let mut entry = entry.clone();
                // Counted from when its rebuild asked the origin: an update
                // that raced the rebuild is stale for the bound at most.
                let asked = entry
                    .stored_at_ms
                    .saturating_sub(u64::from(entry.rebuild_ms));
                let cap = asked.min(now_ms()) + self.degraded_ttl.as_millis() as u64;
                entry.fresh_until_ms = entry.fresh_until_ms.min(cap);
                entry.stale_until_ms = entry.stale_until_ms.min(cap).max(entry.fresh_until_ms);
                self.fallback.put(key, &entry, &local).await
            }
            None => {
                self.with_primary_lease("put", |p| p.put(key, entry, lease))
                    .await
            }
        }
    }

    /// Deletes from both stores; an error unless the primary deleted (with
    /// the breaker open the purge reached this process only, and says so).
    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let local = self.fallback.delete(key).await.unwrap_or(false);
        match self.with_primary_lease("delete", |p| p.delete(key)).await {
            Ok(primary) => Ok(primary || local),
            Err(err) => {
                self.remember_pending(vec![key.clone()]);
                Err(err)
            }
        }
    }

    /// Soft-deletes in both stores; an error unless the primary took it.
    async fn soft_delete(&self, key: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        let local = self.fallback.soft_delete(key, grace).await.unwrap_or(false);
        let primary = self
            .with_primary_lease("delete", |p| p.soft_delete(key, grace))
            .await?;
        Ok(primary || local)
    }

    /// Purges the tag in both stores; an error unless the primary took it
    /// (the fallback's entries of it are purged all the same).
    async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<TagPurge, StoreError> {
        let local = self.fallback.purge_tag(tag, mode).await.unwrap_or_default();
        let mut purge = self
            .with_primary_lease("delete", |p| p.purge_tag(tag, mode))
            .await?;
        purge.hit = purge.hit.max(local.hit);
        purge.keys.extend(local.keys);
        Ok(purge)
    }

    async fn try_lock_after(
        &self,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        match self.route() {
            Route::Fallback => Ok(
                match self.fallback.try_lock_after(key, ttl, holder).await? {
                    LockAttempt::Acquired(lease) => LockAttempt::Acquired(Self::mark_local(lease)),
                    other => other,
                },
            ),
            route => {
                if self.has_pending() {
                    self.replay_pending().await;
                }
                let attempt = self.primary.try_lock_after(key, ttl, holder).await;
                self.on_primary(route, "lock", attempt)
            }
        }
    }

    async fn unlock_failed(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        failure: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        match Self::local(lease) {
            Some(local) => self.fallback.unlock_failed(key, &local, failure).await,
            None => {
                self.with_primary_lease("lock", |p| p.unlock_failed(key, lease, failure))
                    .await
            }
        }
    }

    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError> {
        match self.route() {
            Route::Fallback => Ok(Self::mark_local(self.fallback.ticket(key, ttl).await?)),
            route => {
                if self.has_pending() {
                    self.replay_pending().await;
                }
                self.on_primary(route, "lock", self.primary.ticket(key, ttl).await)
            }
        }
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match Self::local(lease) {
            Some(local) => self.fallback.renew_lock(key, &local, ttl).await,
            // An error (not `false`): the lease may still be valid in the
            // primary, so the holder tries again next period.
            None => {
                self.with_primary_lease("lock", |p| p.renew_lock(key, lease, ttl))
                    .await
            }
        }
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

    fn release_lease(&self, key: &CacheKey, lease: &LockLease) {
        match Self::local(lease) {
            Some(local) => self.fallback.release_lease(key, &local),
            None => self.primary.release_lease(key, lease),
        }
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        match Self::local(lease) {
            Some(local) => self.fallback.unlock(key, &local).await,
            None => {
                self.with_primary_lease("lock", |p| p.unlock(key, lease))
                    .await
            }
        }
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

    async fn stream_open(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        head: bytes::Bytes,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        if Self::local(lease).is_some() {
            return Ok(None);
        }
        self.with_primary_lease("stream", |p| p.stream_open(key, lease, head, ttl))
            .await
    }

    async fn stream_append(
        &self,
        key: &CacheKey,
        id: &str,
        index: u64,
        chunk: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with_primary_lease("stream", |p| p.stream_append(key, id, index, chunk, ttl))
            .await
    }

    async fn stream_end(&self, key: &CacheKey, id: &str, complete: bool) -> Result<(), StoreError> {
        self.with_primary_lease("stream", |p| p.stream_end(key, id, complete))
            .await
    }

    async fn stream_find(
        &self,
        key: &CacheKey,
        holder: FencingToken,
    ) -> Result<Option<super::StreamHead>, StoreError> {
        self.with_primary_lease("stream", |p| p.stream_find(key, holder))
            .await
    }

    async fn stream_read(
        &self,
        key: &CacheKey,
        id: &str,
        from: u64,
    ) -> Result<super::StreamChunks, StoreError> {
        self.with_primary_lease("stream", |p| p.stream_read(key, id, from))
            .await
    }

    fn clear(&self) {
        self.fallback.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::sample;
    use crate::store::test_fake::FakeRemote;
    use crate::store::{MemoryStore, Refusal};
    use http::Method;
    use std::sync::atomic::{AtomicBool, Ordering};

    const TTL: Duration = Duration::from_secs(5);

    fn breaker(down: &Arc<AtomicBool>) -> FallbackStore<FakeRemote, MemoryStore> {
        FallbackStore::new(
            FakeRemote {
                down: down.clone(),
                ..FakeRemote::default()
            },
            MemoryStore::default(),
        )
        .cool_down(Duration::from_millis(50), Duration::from_millis(100))
    }

    fn key() -> CacheKey {
        CacheKey::new(&Method::GET, &"/a".parse().unwrap())
    }

    async fn write(store: &impl CacheStore, body: &str) -> Result<PutOutcome, StoreError> {
        let lease = store.ticket(&key(), TTL).await?;
        store.put(&key(), &sample(body, 60_000, 0), &lease).await
    }

    #[tokio::test]
    async fn opens_on_failures_and_recovers_by_itself_dropping_the_outage_entries() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down);
        let k = key();
        write(&store, "v1").await.unwrap();
        assert!(!store.is_open() && store.is_distributed());

        down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            // A failed read is a miss, not an error for the caller to handle.
            assert!(store.get(&k).await.is_err());
        }
        assert!(store.is_open());
        assert!(!store.is_distributed());
        assert_eq!(write(&store, "v2").await.unwrap(), PutOutcome::Written);
        assert_eq!(store.get(&k).await.unwrap().unwrap().body, "v2");

        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            store.get(&k).await.unwrap().unwrap().body,
            "v1",
            "probe went to Redis"
        );
        assert!(!store.is_open(), "a successful probe closes the circuit");
        // Finding 3 of #19: what the fallback held during the outage is gone,
        // so a later fallback read can never serve it (it missed the purges).
        assert_eq!(store.fallback.get(&k).await.unwrap(), None);
    }

    /// Finding 2 of #19: one failed lock call with the breaker closed used to
    /// be repeated against the in-process store, whose lease (another
    /// store's token) was then written to Redis.
    #[tokio::test]
    async fn a_single_failed_lock_call_is_a_failure_not_a_fallback_lease() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down).failure_threshold(3);
        down.store(true, Ordering::SeqCst);
        assert!(store.try_lock(&key(), TTL).await.is_err());
        assert!(store.ticket(&key(), TTL).await.is_err());
        assert!(!store.is_open(), "two failures do not open the breaker");
        assert_eq!(store.fallback.fence_records(), 0, "no local lease drawn");
    }

    /// Finding 2 of #19: a failed renewal used to answer `false` from the
    /// in-process store, which stopped the renewal for good.
    #[tokio::test]
    async fn a_failed_renewal_is_an_error_so_the_holder_tries_again() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down).failure_threshold(10);
        let lease = store
            .try_lock(&key(), TTL)
            .await
            .unwrap()
            .acquired()
            .unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(store.renew_lock(&key(), &lease, TTL).await.is_err());
        down.store(false, Ordering::SeqCst);
        assert!(store.renew_lock(&key(), &lease, TTL).await.unwrap());
    }

    /// A lease is written where it was drawn: the fallback's in the fallback,
    /// the primary's never in the fallback (and refused while the breaker is
    /// open); a primary lease that reaches another store is refused anyway.
    #[tokio::test]
    async fn leases_are_written_where_they_were_drawn() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down).failure_threshold(1);
        let primary_lease = store.ticket(&key(), TTL).await.unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(store.get(&key()).await.is_err());
        assert!(store.is_open());
        let local_lease = store.ticket(&key(), TTL).await.unwrap();
        assert!(local_lease.owner.starts_with(LOCAL));
        let e = sample("x", 60_000, 0);
        assert!(store.put(&key(), &e, &primary_lease).await.is_err());
        assert_eq!(
            store.put(&key(), &e, &local_lease).await.unwrap(),
            PutOutcome::Written
        );
        // The same token in the other store: another epoch, refused.
        let memory = MemoryStore::default();
        let _ = memory.ticket(&key(), TTL).await.unwrap();
        assert_eq!(
            memory.put(&key(), &e, &primary_lease).await.unwrap(),
            PutOutcome::Fenced(Refusal::LeaseLost)
        );
    }

    /// No purge reaches the fallback during an outage: what it holds is
    /// served fresh (or stale-while-revalidate) for the degraded TTL at most.
    #[tokio::test]
    async fn outage_entries_are_served_for_the_degraded_ttl_at_most() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down)
            .failure_threshold(1)
            .degraded_ttl(Duration::from_millis(200));
        down.store(true, Ordering::SeqCst);
        assert!(store.get(&key()).await.is_err());
        write(&store, "during the outage").await.unwrap();
        let held = store.get(&key()).await.unwrap().unwrap();
        let now = now_ms();
        assert!(
            held.fresh_until_ms <= now + 200,
            "fresh for at most the bound"
        );
        assert!(held.stale_until_ms <= now + 200);
        assert!(held.error_until_ms > now + 200, "stale-if-error kept");
    }

    /// A purge the primary did not take is replayed against it before its
    /// next operation: a fill that lands after the outage cannot undo it.
    #[tokio::test]
    async fn a_failed_purge_is_replayed_when_the_primary_answers_again() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down).failure_threshold(10);
        write(&store, "v1").await.unwrap();
        let in_flight = store.ticket(&key(), TTL).await.unwrap();
        down.store(true, Ordering::SeqCst);
        assert!(store.delete(&key()).await.is_err(), "reported as failed");
        down.store(false, Ordering::SeqCst);
        // The fill that started before the purge lands after the outage.
        assert_eq!(
            store
                .put(&key(), &sample("v1 again", 60_000, 0), &in_flight)
                .await
                .unwrap(),
            PutOutcome::Fenced(Refusal::Purged),
            "the replayed purge fenced it"
        );
        assert_eq!(store.get(&key()).await.unwrap(), None);
    }

    /// Finding 3 of #19: with the breaker open a purge reaches this process
    /// only; it says so (an error) instead of answering "purged".
    #[tokio::test]
    async fn a_purge_the_primary_did_not_take_is_an_error() {
        let down = Arc::new(AtomicBool::new(false));
        let store = breaker(&down).failure_threshold(1);
        down.store(true, Ordering::SeqCst);
        assert!(store.get(&key()).await.is_err());
        assert!(store.is_open());
        write(&store, "local").await.unwrap();
        assert!(store.delete(&key()).await.is_err());
        assert_eq!(
            store.fallback.get(&key()).await.unwrap(),
            None,
            "the local copy is gone all the same"
        );
    }
}
