//! Stale-while-revalidate (RFC 5861): bounds the *wait* — nobody blocks on a
//! rebuild while a stale copy is in the window; the refresh runs in the
//! background through single-flight and the lock. With `stale_if_error`, an
//! origin error or 5xx is answered with the stale copy instead.
//!
//! This layer only marks requests with a [`SwrPolicy`]; it must sit outside
//! [`CacheLookup`](crate::CacheLookup), which acts on the mark (it holds the
//! one store read and the background-refresh machinery).

use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Request extension: serve stale within the window and refresh in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwrPolicy {
    /// Also serve stale when the origin fails (RFC 5861 `stale-if-error`).
    pub stale_if_error: bool,
}

/// Layer for [`StaleWhileRevalidate`].
#[derive(Clone, Copy, Debug)]
pub struct StaleWhileRevalidateLayer {
    policy: SwrPolicy,
}

impl Default for StaleWhileRevalidateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl StaleWhileRevalidateLayer {
    /// SWR with stale-if-error on.
    pub fn new() -> Self {
        Self {
            policy: SwrPolicy {
                stale_if_error: true,
            },
        }
    }

    /// Serve stale on origin errors (default on).
    pub fn stale_if_error(mut self, on: bool) -> Self {
        self.policy.stale_if_error = on;
        self
    }
}

impl<S> Layer<S> for StaleWhileRevalidateLayer {
    type Service = StaleWhileRevalidate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleWhileRevalidate {
            inner,
            policy: self.policy,
        }
    }
}

/// Marks requests for stale-while-revalidate (see the module docs).
#[derive(Clone, Debug)]
pub struct StaleWhileRevalidate<S> {
    inner: S,
    policy: SwrPolicy,
}

impl<S, B> Service<http::Request<B>> for StaleWhileRevalidate<S>
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
