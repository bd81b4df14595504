//! Per-fleet coalescing: one rebuild per key across every instance sharing
//! a store, through the store's lock (`SET NX PX` + a lease in Redis; one
//! lock per URL, whatever the variant, so what a request saw never changes
//! which lock it queues on).
//!
//! The winner attaches its lease ([`HeldLease`]) to the request, so the fill
//! below writes only if no purge and no later lease's write came first (a
//! winner whose lock expired mid-rebuild cannot overwrite the newer holder's
//! entry; see [`fence`](crate::store::fence)). Losers wait for the fill —
//! woken by the store's fill event where it has one (in-process), else
//! polling with exponential backoff and full jitter — and on every wake-up:
//!
//! * a fresh entry that their headers select: answered from it (`lock-wait`);
//! * an entry of another variant: they go on waiting for their own variant;
//! * a hit-for-miss marker (the winner's answer could not be shared): they go
//!   to the origin themselves, at once;
//! * the lock free again (released without a usable entry, or expired: a dead
//!   or paused holder): they take it over and rebuild.
//!
//! A holder alive and renewing is never overtaken: past `max_wait` a loser
//! answers the stale copy in hand if it has one, else goes on waiting up to
//! the fill deadline and answers `504`.
//!
//! The winner renews its lock while the rebuild runs (every third of the
//! lock TTL, see [`LeaseGuard::keep_alive`]), so an origin slower than the
//! lock TTL still gets one rebuild fleet-wide; the whole rebuild (headers and
//! the body the fill buffers) is bounded by a deadline, after which the
//! client gets a `504` (or the stale copy, through stale-if-error above).
//!
//! Every wait is bounded. A background refresh that loses the lock simply
//! stops ([`RefreshSkipped::Elsewhere`]): someone else is refreshing.

use crate::body::{BoxError, CacheBody};
use crate::context::Sharing;
use crate::context::{HeldLease, Lookup, LookupState, RefreshSkipped, Reread};
use crate::entry::CachedResponse;
use crate::entry::now_ms;
use crate::fill::TeeBody;
use crate::lease::{Acquire, LeaseGuard, LeaseOptions, run_held};
use crate::serve::{collapsed_hit, gateway_timeout, rebuild_failed, stale};
use crate::status::CacheStatus;
use crate::status::Detail;
use crate::store::{FencingToken, RebuildFailure, SharedStore, read_selected, record_error};
use crate::tee::{End, Tee};
use futures_util::future::BoxFuture;
use http::{Request, Response};
use rand::Rng;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

/// Layer for [`DistributedLock`].
#[derive(Clone)]
pub(crate) struct DistributedLockLayer {
    store: SharedStore,
    lock_ttl: Duration,
    max_wait: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    lease: LeaseOptions,
    enabled: bool,
}

impl std::fmt::Debug for DistributedLockLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLockLayer")
            .field("backend", &self.store.backend())
            .field("lock_ttl", &self.lock_ttl)
            .field("max_wait", &self.max_wait)
            .field("lease", &self.lease)
            .finish()
    }
}

impl DistributedLockLayer {
    /// Lock through `store` (lock TTL 2 s renewed while the rebuild runs,
    /// losers wait up to the lock TTL, whole-rebuild deadline 30 s).
    pub(crate) fn new(store: SharedStore) -> Self {
        Self {
            store,
            lock_ttl: Duration::from_secs(2),
            max_wait: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            lease: LeaseOptions::default(),
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub(crate) fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// How long a lock lives unless released or renewed.
    pub(crate) fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// Longest a loser with a stale copy in hand waits for the winner's fill
    /// before answering the stale copy (without one it waits on, up to the
    /// fill deadline, unless the lock comes free).
    pub(crate) fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Renewal and the whole-rebuild deadline (default: renewed every third
    /// of the lock TTL, 30 s deadline). Without renewal a rebuild slower than
    /// the lock TTL loses its lock and another instance starts a second one
    /// (its write is then fenced, but the origin paid twice).
    pub(crate) fn lease(mut self, lease: LeaseOptions) -> Self {
        self.lease = lease;
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
pub(crate) struct DistributedLock<S> {
    inner: S,
    config: DistributedLockLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for DistributedLock<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLock")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
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
        let lookup = req
            .extensions()
            .get::<Lookup>()
            .filter(|l| l.state != LookupState::Pass && config.enabled)
            .cloned();
        match lookup {
            // Holds the key's lock already (a claimed background refresh), or
            // nothing to coordinate.
            Some(lookup) if req.extensions().get::<HeldLease>().is_none() => {
                Box::pin(locked(inner, config, lookup, req))
            }
            _ => Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) }),
        }
    }
}

async fn locked<S, B>(
    inner: S,
    config: DistributedLockLayer,
    mut lookup: Lookup,
    mut req: Request<B>,
) -> Result<Response<CacheBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    let store = config.store.clone();
    let started = Instant::now();
    let holder = match LeaseGuard::acquire(&store, &lookup.key, config.lock_ttl).await {
        Acquire::Held(guard) => {
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "acquired")
                .increment(1);
            return lead(inner, &config, guard, req).await;
        }
        Acquire::Contended(holder) => {
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "contended")
                .increment(1);
            holder
        }
        Acquire::Failed => {
            // No lock service: degrade to process-local coordination (the
            // fill draws a ticket; if the store is down it cannot write).
            metrics::counter!("stampede_lock_acquisitions_total", "result" => "error").increment(1);
            return inner.oneshot(req).await.map_err(Into::into);
        }
        // Only a waiter is answered a failure (this request did not wait).
        Acquire::RecentFailure(failure) => return failed_outcome(&lookup, &failure),
    };
    if lookup.state == LookupState::Refresh {
        return Err(Box::new(RefreshSkipped::Elsewhere));
    }

    // Lose: wait for the winner's fill. The lock is tried again on every
    // wake-up, so it is taken over only once free — released without a
    // usable entry, or expired (a dead or paused holder) — never while its
    // holder is alive and renewing. Past `max_wait` a stale copy is answered;
    // without one the wait goes on to the fill deadline, then 504.
    let stale_at = started + config.max_wait;
    let give_up = started + config.lease.fill_deadline.max(config.max_wait);
    let mut backoff = config.initial_backoff;
    loop {
        let now = Instant::now();
        if now >= stale_at
            && let Some(entry) = lookup
                .entry
                .as_ref()
                .filter(|e| e.may_serve_stale() && now_ms() < e.error_until_ms)
        {
            wait_timed_out(&lookup, started);
            return Ok(stale(entry, false, Detail::LockTimeout));
        }
        if now >= give_up {
            wait_timed_out(&lookup, started);
            return Ok(gateway_timeout());
        }
        let next_stop = if now < stale_at { stale_at } else { give_up };
        let sleep = rand::rng()
            .random_range(backoff / 2..=backoff)
            .min(next_stop - now);
        store.wait_for_fill(&lookup.key, sleep).await;
        backoff = (backoff * 2).min(config.max_backoff);
        let (key, found) = read_selected(
            store.as_ref(),
            lookup.key.clone(),
            &lookup.request_headers,
            true,
        )
        .await;
        lookup.key = key;
        if let Some(entry) = found {
            match lookup.classify_reread(&entry, now_ms()) {
                Reread::Usable => {
                    metrics::histogram!("stampede_lock_wait_seconds", "result" => "filled")
                        .record(started.elapsed().as_secs_f64());
                    return Ok(collapsed_hit(&entry, Detail::LockWait));
                }
                Reread::Uncacheable => {
                    req.extensions_mut().insert(Lookup {
                        state: LookupState::Pass,
                        ..lookup
                    });
                    return inner.oneshot(req).await.map_err(Into::into);
                }
                Reread::OtherVariant(vary) => {
                    // Another variant was filled: ours is still to be built,
                    // under the same (per-URL) lock.
                    lookup = lookup.for_variant(&vary);
                    req.extensions_mut().insert(lookup.clone());
                }
                Reread::Nothing => {}
            }
        }
        // The holder (on another instance) may be streaming the body into
        // the store: read it as it arrives instead of waiting for the whole.
        if lookup.state != LookupState::Refresh
            && let Some(resp) = stream_in(&store, &lookup, holder).await
        {
            metrics::histogram!("stampede_lock_wait_seconds", "result" => "streamed")
                .record(started.elapsed().as_secs_f64());
            return Ok(resp);
        }
        match LeaseGuard::acquire_after(&store, &lookup.key, config.lock_ttl, Some(holder)).await {
            Acquire::Held(guard) => {
                metrics::counter!("stampede_lock_acquisitions_total", "result" => "takeover")
                    .increment(1);
                return lead(inner, &config, guard, req).await;
            }
            Acquire::Contended(_) => {}
            Acquire::Failed => {
                metrics::counter!("stampede_lock_acquisitions_total", "result" => "error")
                    .increment(1);
                return inner.oneshot(req).await.map_err(Into::into);
            }
            Acquire::RecentFailure(failure) => {
                // The holder's rebuild failed and left its outcome on the lock.
                metrics::histogram!("stampede_lock_wait_seconds", "result" => "failed")
                    .record(started.elapsed().as_secs_f64());
                return failed_outcome(&lookup, &failure);
            }
        }
    }
}

/// The answer the lock's `holder` is streaming into the store, if it is one
/// this request may be given (its variant): a body read from the store as it
/// arrives, shared by this instance's requests like a local flight.
async fn stream_in(
    store: &SharedStore,
    lookup: &Lookup,
    holder: FencingToken,
) -> Option<Response<CacheBody>> {
    let head = store
        .stream_find(&lookup.key, holder)
        .await
        .inspect_err(|err| record_error(store.as_ref(), "stream", err))
        .ok()??;
    let entry = CachedResponse::decode(&head.head).ok()?;
    if !entry.vary.matches(&lookup.request_headers) {
        return None;
    }
    let tee = Tee::new(u64::MAX, 0);
    let body = tee.reader()?;
    tokio::spawn(read_stream(
        store.clone(),
        lookup.key.clone(),
        head.id,
        tee.clone(),
    ));
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.status_code();
    *resp.headers_mut() = entry.header_map();
    let mut status = CacheStatus::default().with_detail(Detail::LockWait);
    status.collapsed = true;
    resp.extensions_mut().insert(status);
    resp.extensions_mut()
        .insert(Sharing::Stored(entry.vary.clone()));
    resp.extensions_mut().insert(TeeBody(tee));
    metrics::counter!("stampede_streamed_fills_total", "result" => "read-from-store").increment(1);
    Some(resp)
}

/// Pump the store's stream `id` of `key` into `tee`.
async fn read_stream(store: SharedStore, key: crate::key::CacheKey, id: String, tee: Arc<Tee>) {
    let mut next = 0u64;
    let end = loop {
        match store.stream_read(&key, &id, next).await {
            Ok(read) => {
                next += read.chunks.len() as u64;
                let progressed = !read.chunks.is_empty();
                for chunk in read.chunks {
                    tee.push(chunk);
                }
                match read.end {
                    Some(true) => break End::Complete,
                    Some(false) => break End::Failed("the stream ended early".into()),
                    // Woken by the next append (an event where the store has
                    // one), else a short poll.
                    None if !progressed => {
                        store.wait_for_fill(&key, Duration::from_millis(50)).await
                    }
                    None => {}
                }
            }
            Err(err) => {
                record_error(store.as_ref(), "stream", &err);
                break End::Failed(err.to_string().into());
            }
        }
    };
    tee.finish(end);
    tee.settle();
}

/// What a request gets while its key's last rebuild failure lasts: the stale
/// copy in hand (stale-if-error), else a generated error with `Retry-After`;
/// a background refresh just stops.
fn failed_outcome(
    lookup: &Lookup,
    failure: &RebuildFailure,
) -> Result<Response<CacheBody>, BoxError> {
    if lookup.state == LookupState::Refresh {
        return Err(Box::new(RefreshSkipped::Elsewhere));
    }
    if let Some(entry) = lookup
        .entry
        .as_ref()
        .filter(|e| e.may_serve_stale() && now_ms() < e.error_until_ms)
    {
        return Ok(stale(entry, false, Detail::StaleIfError));
    }
    Ok(rebuild_failed(failure))
}

fn wait_timed_out(lookup: &Lookup, started: Instant) {
    metrics::histogram!("stampede_lock_wait_seconds", "result" => "timeout")
        .record(started.elapsed().as_secs_f64());
    tracing::warn!(
        key = lookup.key.digest(),
        waited_ms = started.elapsed().as_millis() as u64,
        "lock wait timed out"
    );
}

/// Run the rebuild holding the lock (renewed while it runs, bounded by the
/// fill deadline), detached from the caller's future so a cancelled request
/// still releases the lock (compare-and-delete).
async fn lead<S, B>(
    inner: S,
    config: &DistributedLockLayer,
    guard: LeaseGuard,
    mut req: Request<B>,
) -> Result<Response<CacheBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    req.extensions_mut()
        .insert(HeldLease(guard.lease().clone()));
    let (options, ttl) = (config.lease, config.lock_ttl);
    let rebuild = async move { inner.oneshot(req).await.map_err(Into::into) };
    // Detached from the caller: a client that goes away does not cancel the
    // rebuild its waiters wait on, and the lease is let go however it ends.
    let task = tokio::spawn(run_held(guard, options, ttl, rebuild));
    match task.await {
        Ok(result) => result,
        Err(join) => Err(format!("rebuild task failed: {join}").into()),
    }
}
