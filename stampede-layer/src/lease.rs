//! A held lease on one key — the rebuild lock's, or a lock-less ticket (see
//! [`fence`](crate::store::fence)) — released when the guard goes away however
//! the rebuild ends (an explicit [`LeaseGuard::release`], or a drop — a
//! cancelled or panicking rebuild — which releases it in the background).
//!
//! While held it can be **renewed** ([`LeaseGuard::keep_alive`]): every third
//! of its TTL the owner extends it (the lock: compare-and-expire; both: the
//! key's fence record), so an origin slower than the lock TTL still gets
//! exactly one rebuild fleet-wide instead of a takeover per TTL, and a slow
//! fill's write is still accepted. Renewal stops when the guard goes away or
//! the lease is void (the lock is no longer ours, the fence record is
//! another incarnation, or a purge came after it: this rebuild's write would
//! be refused anyway). A failed renewal call is retried next period. The
//! whole rebuild is bounded by a deadline, so a renewed lease cannot be held
//! forever by a stuck origin.

use crate::key::CacheKey;
use crate::store::FencingToken;
use crate::store::{LockAttempt, LockLease, RebuildFailure, SharedStore, record_error};
use std::time::Duration;

/// How a held rebuild lock is kept: renewed while the rebuild runs, and the
/// rebuild bounded by a deadline (the lock layer's and the background
/// refreshes' shared settings).
///
/// ```
/// use std::time::Duration;
/// let mut lease = stampede_layer::LeaseOptions::default();
/// lease.fill_deadline = Duration::from_secs(10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// Renew the lock every third of its TTL while the rebuild runs.
    pub renew: bool,
    /// Longest a rebuild may take (headers and the buffered body).
    pub fill_deadline: Duration,
}

impl Default for LeaseOptions {
    /// Renewal on, 30 s deadline.
    fn default() -> Self {
        Self {
            renew: true,
            fill_deadline: Duration::from_secs(30),
        }
    }
}

impl LeaseOptions {
    /// Run `rebuild`, cut at the fill deadline (`None`: cut; counted under
    /// `stampede_fill_deadline_exceeded_total` and logged with `token`).
    pub(crate) async fn within_deadline<F: std::future::Future>(
        self,
        token: Option<FencingToken>,
        rebuild: F,
    ) -> Option<F::Output> {
        let out = tokio::time::timeout(self.fill_deadline, rebuild).await.ok();
        if out.is_none() {
            metrics::counter!("stampede_fill_deadline_exceeded_total").increment(1);
            tracing::warn!(
                token = token.map(|t| t.to_string()),
                deadline_ms = self.fill_deadline.as_millis() as u64,
                "rebuild exceeded the fill deadline"
            );
        }
        out
    }
}

/// Run `rebuild` holding `guard` — renewed every third of `ttl` while it runs
/// (with `options.renew`), cut at the fill deadline (then a `504`) — and let
/// the lease go once the answer settled: at once, leaving the failure on the
/// lock for its waiters when the rebuild failed; after the body was stored
/// when it streams. The one way a rebuild runs under a lease (the lock
/// layer's, and a claimed background refresh's).
pub(crate) async fn run_held<F>(
    mut guard: LeaseGuard,
    options: LeaseOptions,
    ttl: Duration,
    rebuild: F,
) -> Result<http::Response<crate::body::CacheBody>, crate::body::BoxError>
where
    F: std::future::Future<
            Output = Result<http::Response<crate::body::CacheBody>, crate::body::BoxError>,
        >,
{
    if options.renew {
        guard.keep_alive(ttl);
    }
    let token = guard.token();
    let result = match options.within_deadline(Some(token), rebuild).await {
        Some(result) => result,
        None => Ok(crate::serve::gateway_timeout()),
    };
    // A failed rebuild leaves its outcome on the lock for a moment: the
    // waiters on every instance answer it at once instead of each asking
    // the failing origin again.
    let failed = |status| RebuildFailure {
        status,
        until_ms: crate::entry::now_ms() + 1000,
        lease: token,
    };
    let failure = match &result {
        Ok(resp) => match resp.extensions().get::<crate::context::RebuildFailed>() {
            Some(f) => Some(f.0),
            None if resp.status() == http::StatusCode::GATEWAY_TIMEOUT => Some(failed(504)),
            None => None,
        },
        Err(err) if crate::context::RefreshSkipped::is(err.as_ref()) => None,
        Err(_) => Some(failed(502)),
    };
    let tee = result
        .as_ref()
        .ok()
        .and_then(|r| r.extensions().get::<crate::fill::TeeBody>())
        .map(|t| t.0.clone());
    match (failure, tee) {
        (Some(failure), _) => guard.release_failed(failure).await,
        // A streamed body is written once it arrived: hold the lease
        // (renewed) until then, or a waiter would wake to nothing.
        (None, Some(tee)) => {
            tokio::spawn(async move {
                tee.settled().await;
                guard.release().await;
            });
        }
        (None, None) => guard.release().await,
    }
    result
}

/// Why taking a rebuild lock did not give one.
#[derive(Debug)]
pub(crate) enum Acquire {
    /// We hold it.
    Held(LeaseGuard),
    /// Someone else holds it, with this lease.
    Contended(FencingToken),
    /// Free, but the last rebuild failed moments ago (answer its outcome).
    RecentFailure(RebuildFailure),
    /// The lock service failed (counted and logged).
    Failed,
}

/// A held lease on one key: releases its lock (if any) on drop.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    store: SharedStore,
    key: CacheKey,
    lease: Option<LockLease>,
    renewal: Option<tokio::task::AbortHandle>,
}

impl LeaseGuard {
    /// Try to take `key`'s rebuild lock for `ttl`.
    pub(crate) async fn acquire(store: &SharedStore, key: &CacheKey, ttl: Duration) -> Acquire {
        Self::acquire_after(store, key, ttl, None).await
    }

    /// Try to take `key`'s rebuild lock for `ttl`, as a request that waited
    /// on `holder`'s rebuild (see [`CacheStore::try_lock_after`](crate::CacheStore::try_lock_after)).
    pub(crate) async fn acquire_after(
        store: &SharedStore,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<FencingToken>,
    ) -> Acquire {
        match store.try_lock_after(key, ttl, holder).await {
            Ok(LockAttempt::Acquired(lease)) => Acquire::Held(Self::held(store, key, lease)),
            Ok(LockAttempt::Held(holder)) => Acquire::Contended(holder),
            Ok(LockAttempt::RecentFailure(failure)) => Acquire::RecentFailure(failure),
            Err(err) => {
                record_error(store.as_ref(), "lock", &err);
                Acquire::Failed
            }
        }
    }

    /// Draw a lock-less lease (a ticket) on `key` for `ttl`; `None` when the
    /// store failed (counted): the fill then cannot write.
    pub(crate) async fn ticket(store: &SharedStore, key: &CacheKey, ttl: Duration) -> Option<Self> {
        match store.ticket(key, ttl).await {
            Ok(lease) => Some(Self::held(store, key, lease)),
            Err(err) => {
                record_error(store.as_ref(), "ticket", &err);
                None
            }
        }
    }

    fn held(store: &SharedStore, key: &CacheKey, lease: LockLease) -> Self {
        LeaseGuard {
            store: store.clone(),
            key: key.clone(),
            lease: Some(lease),
            renewal: None,
        }
    }

    /// The lease the fill writes with.
    pub(crate) fn lease(&self) -> &LockLease {
        self.lease.as_ref().expect("held until released")
    }

    /// Its fencing token.
    pub(crate) fn token(&self) -> FencingToken {
        self.lease().token
    }

    /// Renew the lock to `ttl` every `ttl / 3` until the guard goes away, the
    /// lock is lost, or a newer token reached the key. Counted under
    /// `stampede_lock_renewals_total{result="renewed|lost|error"}`.
    pub(crate) fn keep_alive(&mut self, ttl: Duration) {
        let Some(lease) = self.lease.clone() else {
            return;
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        let period = (ttl / 3).max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match store.renew_lock(&key, &lease, ttl).await {
                    Ok(true) => {
                        metrics::counter!("stampede_lock_renewals_total", "result" => "renewed")
                            .increment(1);
                    }
                    Ok(false) => {
                        metrics::counter!("stampede_lock_renewals_total", "result" => "lost")
                            .increment(1);
                        tracing::debug!(
                            key = key.digest(),
                            token = %lease.token,
                            "lease lost; renewal stops"
                        );
                        // Void (a purge came after it): its write would be
                        // refused, so hand the lock to a waiter at once
                        // instead of at its expiry (compare-and-delete).
                        if lease.locked
                            && let Err(err) = store.unlock(&key, &lease).await
                        {
                            record_error(store.as_ref(), "lock", &err);
                        }
                        return;
                    }
                    Err(err) => {
                        // Try again next period: the lock may still be ours.
                        metrics::counter!("stampede_lock_renewals_total", "result" => "error")
                            .increment(1);
                        record_error(store.as_ref(), "lock", &err);
                    }
                }
            }
        });
        self.renewal = Some(task.abort_handle());
    }

    /// Release now, leaving `failure` on the key (lock attempts answer it
    /// until it lapses); a ticket just goes.
    pub(crate) async fn release_failed(mut self, failure: RebuildFailure) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        if let Some(lease) = self.lease.take() {
            if lease.locked
                && let Err(err) = self.store.unlock_failed(&self.key, &lease, &failure).await
            {
                record_error(self.store.as_ref(), "lock", &err);
            }
            self.store.release_lease(&self.key, &lease);
        }
    }

    /// Release now (compare-and-delete: only if we still own it).
    pub(crate) async fn release(mut self) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        if let Some(lease) = self.lease.take() {
            if lease.locked
                && let Err(err) = self.store.unlock(&self.key, &lease).await
            {
                record_error(self.store.as_ref(), "lock", &err);
            }
            self.store.release_lease(&self.key, &lease);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        let Some(lease) = self.lease.take() else {
            return;
        };
        if !lease.locked {
            self.store.release_lease(&self.key, &lease);
            return;
        }
        let (store, key) = (self.store.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = store.unlock(&key, &lease).await {
                    record_error(store.as_ref(), "lock", &err);
                }
                store.release_lease(&key, &lease);
            });
        }
    }
}
