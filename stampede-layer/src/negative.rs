//! Negative caching: bounds the *miss storm on absent keys*. Without it every
//! request for an id that does not exist reaches the origin (404s are not
//! stored by default); with it a 404/410 is cached for a short negative TTL.
//! Writes through the cache (`PUT`/`POST`/`DELETE` that succeed) invalidate
//! the entry — [`CacheLookup`](crate::CacheLookup) does that for every entry
//! (RFC 9111 §4.4) — so a created item is visible at once.
//!
//! Sits below [`CacheFill`](crate::CacheFill) and marks 404/410 responses with
//! a negative TTL in [`FillDirectives`].

use crate::context::{FillDirectives, FillPending, warn_misplaced};
use futures_util::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Layer for [`NegativeCache`].
#[derive(Clone, Copy, Debug)]
pub struct NegativeCacheLayer {
    ttl: Duration,
    enabled: bool,
}

impl NegativeCacheLayer {
    /// Cache 404/410 answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, enabled: true }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
}

impl<S> Layer<S> for NegativeCacheLayer {
    type Service = NegativeCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NegativeCache {
            inner,
            ttl: Some(self.ttl).filter(|_| self.enabled),
        }
    }
}

/// Marks 404/410 answers cacheable for the negative TTL (see the module docs).
#[derive(Clone, Debug)]
pub struct NegativeCache<S> {
    inner: S,
    ttl: Option<Duration>,
}

crate::inner_access!(NegativeCache);

impl<S, B, ResBody> Service<http::Request<B>> for NegativeCache<S>
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
        let req_is_unfilled = req.extensions().get::<FillPending>().is_none();
        let fut = self.inner.call(req);
        let Some(ttl) = self.ttl else {
            return Box::pin(fut);
        };
        if req_is_unfilled {
            warn_misplaced("NegativeCache", "inside CacheFill");
        }
        Box::pin(async move {
            let mut resp = fut.await?;
            if matches!(resp.status().as_u16(), 404 | 410) {
                FillDirectives::of(&mut resp).negative_ttl = Some(ttl);
            }
            Ok(resp)
        })
    }
}
