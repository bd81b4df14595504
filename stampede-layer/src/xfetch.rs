//! XFetch — probabilistic early expiration (Vattani, Chierichetti, Lowenstein,
//! VLDB 2015): bounds the *cliff*. Each read of a fresh entry refreshes it in
//! the background with probability rising as expiry nears:
//!
//! ```text
//! now - delta * beta * ln(U) >= expiry,   U ~ Uniform(0, 1]
//! ```
//!
//! `delta` is the measured rebuild time stored in the entry, `beta` (> 0)
//! trades earlier refreshes (> 1) for fewer (< 1). On a hot key exactly one
//! read near the end of the window triggers, so the entry never expires
//! under load; a cold key read about once per TTL rarely rolls the dice in
//! the window, and still misses at expiry.
//!
//! It sits outside [`CacheLookup`](crate::CacheLookup): it reads the
//! [`FreshHit`] the lookup attaches to a fresh hit, rolls the dice from the
//! entry's timing, and on a hit starts the refresh itself, through its own
//! inner service (the lookup, then single-flight and the lock), marked
//! [`ForceRefresh`]. The client's answer is the hit, untouched.

use crate::body::{BoxError, CacheBody};
use crate::context::{ForceRefresh, FreshHit, Lookup, warn_misplaced};
use crate::entry::{CachedResponse, now_ms};
use crate::refresh::Refresher;
use crate::store::SharedStore;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use rand::Rng;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// The XFetch decision for one read of an entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XFetchPolicy {
    /// The `beta` knob (default 1.0).
    pub beta: f64,
}

impl XFetchPolicy {
    /// Roll the dice for `entry` at `now_ms`.
    pub fn should_refresh(&self, entry: &CachedResponse, now_ms: u64) -> bool {
        let u: f64 = rand::rng().random_range(f64::MIN_POSITIVE..=1.0);
        should_refresh_early(
            now_ms,
            u64::from(entry.rebuild_ms),
            self.beta,
            entry.fresh_until_ms,
            u,
        )
    }
}

/// The XFetch test with an explicit `u` in (0, 1]:
/// `now - delta * beta * ln(u) >= expiry`.
pub fn should_refresh_early(now_ms: u64, delta_ms: u64, beta: f64, expiry_ms: u64, u: f64) -> bool {
    let gap = -(delta_ms as f64) * beta * u.ln(); // ≥ 0
    now_ms as f64 + gap >= expiry_ms as f64
}

/// Layer for [`XFetch`].
#[derive(Clone, Debug)]
pub struct XFetchLayer {
    policy: XFetchPolicy,
    refresher: Refresher,
    enabled: bool,
}

impl XFetchLayer {
    /// XFetch with `beta` (1.0 is the paper's optimum for most loads).
    pub fn new(beta: f64) -> Self {
        Self {
            policy: XFetchPolicy {
                beta: beta.max(0.0),
            },
            refresher: Refresher::new("xfetch"),
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Most early refreshes in flight at once in this process.
    pub fn max_refreshes(mut self, n: usize) -> Self {
        self.refresher = self.refresher.max_in_flight(n);
        self
    }

    /// On a shared `store`, claim the key's lock (for `ttl`) before a
    /// refresh, so one instance of the fleet refreshes it, not each.
    pub fn claim_through(mut self, store: SharedStore, ttl: Duration) -> Self {
        self.refresher = self.refresher.claim_through(store, ttl);
        self
    }

    /// Renewal of the claimed lock and the refresh's deadline (default:
    /// [`LeaseOptions::default`](crate::LeaseOptions)).
    pub fn lease(mut self, lease: crate::LeaseOptions) -> Self {
        self.refresher = self.refresher.lease(lease);
        self
    }
}

impl Default for XFetchLayer {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl<S> Layer<S> for XFetchLayer {
    type Service = XFetch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        XFetch {
            inner,
            config: self.clone(),
        }
    }
}

/// Refreshes fresh hits early, probabilistically (see the module docs).
#[derive(Clone, Debug)]
pub struct XFetch<S> {
    inner: S,
    config: XFetchLayer,
}

crate::inner_access!(XFetch);

impl<S, B> Service<Request<B>> for XFetch<S>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Default + Send + 'static,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.config.enabled {
            let inner = self.inner.clone();
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }
        if req.extensions().get::<Lookup>().is_some() {
            warn_misplaced("XFetch", "outside CacheLookup");
        }
        let inner = self.inner.clone();
        let config = self.config.clone();
        let version = req.version();
        Box::pin(async move {
            let resp = inner.clone().oneshot(req).await.map_err(Into::into)?;
            if let Some(hit) = resp.extensions().get::<FreshHit>()
                && config.policy.should_refresh(&hit.entry, now_ms())
            {
                let mut refresh = Request::new(B::default());
                *refresh.method_mut() = Method::GET;
                *refresh.uri_mut() = hit.target.clone();
                *refresh.version_mut() = version;
                *refresh.headers_mut() = hit.refresh_headers.clone();
                refresh.extensions_mut().insert(ForceRefresh);
                config.refresher.spawn(inner, refresh, &hit.key);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula() {
        // Far from expiry: only an astronomically small u triggers.
        assert!(!should_refresh_early(0, 200, 1.0, 10_000, 0.5));
        assert!(should_refresh_early(0, 200, 1.0, 10_000, 1e-30));
        // At or past expiry: always.
        assert!(should_refresh_early(10_000, 200, 1.0, 10_000, 1.0));
        // beta 0 disables early refresh.
        assert!(!should_refresh_early(9_999, 200, 0.0, 10_000, 1e-30));
    }

    #[test]
    fn probability_rises_towards_expiry() {
        let p = |now: u64| {
            let n = 20_000;
            (1..=n)
                .filter(|i| should_refresh_early(now, 200, 1.0, 2_000, *i as f64 / n as f64))
                .count() as f64
                / n as f64
        };
        // P(trigger) = exp(-(expiry - now) / (delta * beta)).
        assert!(p(1_000) < 0.01);
        assert!((p(1_800) - (-1.0f64).exp()).abs() < 0.02);
        assert!(p(1_990) > 0.9);
    }
}
