//! TTL jitter: bounds the *multi-key* herd. Keys written together (a bulk
//! warm, a deploy) would expire together; spreading each write's TTL by a
//! random fraction turns the needle of misses into a hill.
//!
//! Sits below [`CacheFill`](crate::CacheFill) and marks each origin response
//! with a TTL scale in [`FillDirectives`], which the fill applies.

use crate::context::{FillDirectives, FillPending, warn_misplaced};
use futures_util::future::BoxFuture;
use rand::Rng;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Layer for [`TtlJitter`].
#[derive(Clone, Copy, Debug)]
pub struct TtlJitterLayer {
    fraction: f64,
    enabled: bool,
}

impl TtlJitterLayer {
    /// Scale each TTL by a uniform factor in `[1 - fraction, 1 + fraction]`
    /// (`fraction` clamped to `[0, 1)`; the mean TTL is unchanged).
    pub fn new(fraction: f64) -> Self {
        Self {
            fraction: fraction.clamp(0.0, 0.99),
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
}

/// The random TTL factor for `fraction`.
pub fn ttl_scale(fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return 1.0;
    }
    1.0 + rand::rng().random_range(-fraction..=fraction)
}

impl<S> Layer<S> for TtlJitterLayer {
    type Service = TtlJitter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TtlJitter {
            inner,
            fraction: if self.enabled { self.fraction } else { 0.0 },
        }
    }
}

/// Spreads the TTL the fill will write (see the module docs).
#[derive(Clone, Debug)]
pub struct TtlJitter<S> {
    inner: S,
    fraction: f64,
}

crate::inner_access!(TtlJitter);

impl<S, B, ResBody> Service<http::Request<B>> for TtlJitter<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.fraction > 0.0 && req.extensions().get::<FillPending>().is_none() {
            warn_misplaced("TtlJitter", "inside CacheFill");
        }
        let fut = self.inner.call(req);
        let fraction = self.fraction;
        if fraction <= 0.0 {
            return Box::pin(fut);
        }
        Box::pin(async move {
            let mut resp = fut.await?;
            let scale = ttl_scale(fraction);
            FillDirectives::of(&mut resp).ttl_scale = Some(scale);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_stays_in_range_and_spreads() {
        let samples: Vec<f64> = (0..2000).map(|_| ttl_scale(0.2)).collect();
        assert!(samples.iter().all(|s| (0.8..=1.2).contains(s)));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 1.0).abs() < 0.02);
        assert!(samples.iter().any(|s| *s < 0.85) && samples.iter().any(|s| *s > 1.15));
        assert_eq!(ttl_scale(0.0), 1.0);
    }
}
