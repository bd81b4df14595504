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
//! Like [`StaleWhileRevalidate`](crate::StaleWhileRevalidate), this layer marks
//! requests; [`CacheLookup`](crate::CacheLookup) evaluates the mark on fresh hits.

use crate::entry::CachedResponse;
use rand::Rng;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Request extension: evaluate XFetch on fresh hits.
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
#[derive(Clone, Copy, Debug)]
pub struct XFetchLayer {
    policy: XFetchPolicy,
}

impl XFetchLayer {
    /// XFetch with `beta` (1.0 is the paper's optimum for most loads).
    pub fn new(beta: f64) -> Self {
        Self {
            policy: XFetchPolicy {
                beta: beta.max(0.0),
            },
        }
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
            policy: self.policy,
        }
    }
}

/// Marks requests for XFetch early refresh (see the module docs).
#[derive(Clone, Debug)]
pub struct XFetch<S> {
    inner: S,
    policy: XFetchPolicy,
}

impl<S, B> Service<http::Request<B>> for XFetch<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        req.extensions_mut().insert(self.policy);
        self.inner.call(req)
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
