//! Per-fleet coalescing: one rebuild per key across every instance sharing a
//! store, through the store's lock (`SET NX PX` + a fencing token in Redis).
//!
//! The winner attaches its [`FencingToken`] to the request, so the fill below
//! writes only if no newer token already did (a winner whose lock expired
//! mid-rebuild cannot overwrite the newer holder's entry). Losers wait for the
//! fill — woken by the store's fill event where it has one (in-process), else
//! polling with exponential backoff and full jitter — for at most `max_wait`,
//! then answer from the cache. Past the bound they serve the stale copy in
//! hand if there is one, else take the lock over or, failing that, go to the
//! origin themselves: every wait is bounded. A background refresh that loses
//! the lock simply stops: someone else is refreshing.

use crate::body::{BoxError, CacheBody};
use crate::cache::{Lookup, LookupState, collapsed_hit, response_from_entry};
use crate::entry::now_ms;
use crate::status::CacheStatus;
use crate::store::{SharedStore, get_or_miss, record_error};
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use rand::Rng;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

/// Request extension: the fencing token of the lock this rebuild holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FencingToken(pub u64);

/// Layer for [`DistributedLock`].
#[derive(Clone)]
pub struct DistributedLockLayer {
    store: SharedStore,
    lock_ttl: Duration,
    max_wait: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl std::fmt::Debug for DistributedLockLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLockLayer")
            .field("backend", &self.store.backend())
            .field("lock_ttl", &self.lock_ttl)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl DistributedLockLayer {
    /// Lock through `store` (lock TTL 2 s, losers wait up to the lock TTL).
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            lock_ttl: Duration::from_secs(2),
            max_wait: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        }
    }

    /// How long a lock lives unless released (must exceed a normal rebuild).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// Longest a loser waits for the winner's fill.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Poll backoff bounds for stores without fill events.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }
}

impl<S> Layer<S> for DistributedLockLayer {
    type Service = DistributedLock<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DistributedLock {
            inner,
            config: self.clone(),
        }
    }
}

/// Takes the per-key rebuild lock around the inner call (see the module docs).
#[derive(Clone)]
pub struct DistributedLock<S> {
    inner: S,
    config: DistributedLockLayer,
}

impl<S, B> Service<Request<B>> for DistributedLock<S>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let config = self.config.clone();
        let Some(lookup) = req.extensions().get::<Lookup>().cloned() else {
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        };
        if req.extensions().get::<FencingToken>().is_some() {
            // Already holds the key's lock (a claimed background refresh).
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }
        Box::pin(locked(inner, config, lookup, req))
    }
}

async fn locked<S, B>(
    inner: S,
    config: DistributedLockLayer,
    lookup: Lookup,
    req: Request<B>,
) -> Result<Response<CacheBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    let store = config.store.clone();
    let key = &lookup.key;
    let started = Instant::now();
    match store.try_lock(key, config.lock_ttl).await {
        Ok(Some(lease)) => {
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "acquired")
                .increment(1);
            return lead(inner, store, lookup.clone(), lease, req).await;
        }
        Ok(None) => {
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "contended")
                .increment(1);
        }
        Err(err) => {
            // No lock service: degrade to process-local coordination.
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "error").increment(1);
            record_error(store.as_ref(), "lock", &err);
            return inner.oneshot(req).await.map_err(Into::into);
        }
    }

    if lookup.state == LookupState::Refresh {
        // Someone else is refreshing this key; a background refresh just stops.
        let mut resp = Response::new(CacheBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.extensions_mut()
            .insert(CacheStatus::default().with_detail("refresh-elsewhere"));
        return Ok(resp);
    }

    // Lose: wait for the winner's fill, bounded.
    let deadline = started + config.max_wait;
    let mut backoff = config.initial_backoff;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let sleep = {
            let jittered = rand::rng().random_range(backoff / 2..=backoff);
            jittered.min(deadline - now)
        };
        store.wait_for_fill(key, sleep).await;
        if let Some(entry) = get_or_miss(store.as_ref(), key).await
            && lookup.is_newer(&entry, now_ms())
        {
            metrics::histogram!("stampede_lock_wait_seconds", "result" => "filled")
                .record(started.elapsed().as_secs_f64());
            return Ok(collapsed_hit(&entry, "lock-wait"));
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
    metrics::histogram!("stampede_lock_wait_seconds", "result" => "timeout")
        .record(started.elapsed().as_secs_f64());
    tracing::warn!(key = %key, waited_ms = started.elapsed().as_millis() as u64, "lock wait timed out");
    if let Some(stale) = &lookup.entry {
        let now = now_ms();
        let status = CacheStatus::hit(stale.ttl_secs(now).min(-1)).with_detail("lock-timeout");
        return Ok(response_from_entry(stale, now, false, status));
    }
    match store.try_lock(key, config.lock_ttl).await {
        Ok(Some(lease)) => lead(inner, store, lookup, lease, req).await,
        _ => inner.oneshot(req).await.map_err(Into::into),
    }
}

/// Run the rebuild holding `lease`, detached from the caller's future so a
/// cancelled request still releases the lock (compare-and-delete).
async fn lead<S, B>(
    inner: S,
    store: SharedStore,
    lookup: Lookup,
    lease: crate::store::LockLease,
    mut req: Request<B>,
) -> Result<Response<CacheBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    req.extensions_mut().insert(FencingToken(lease.token));
    let task = tokio::spawn(async move {
        let result = inner.oneshot(req).await.map_err(Into::into);
        if let Err(err) = store.unlock(&lookup.key, &lease).await {
            record_error(store.as_ref(), "lock", &err);
        }
        result
    });
    match task.await {
        Ok(result) => result,
        Err(join) => Err(format!("rebuild task failed: {join}").into()),
    }
}
