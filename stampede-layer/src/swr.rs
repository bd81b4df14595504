//! Stale-while-revalidate (RFC 5861): bounds the *wait*. When
//! [`CacheLookup`](crate::lookup::CacheLookup) found an entry past its freshness but
//! within its stale window, this layer answers the stale copy at once and
//! starts a refresh in the background through its own inner service (so the
//! refresh is coalesced by single-flight and the lock below it); nobody
//! blocks on the rebuild. With stale-if-error (on by default) an origin error
//! or 5xx, while an entry within its stale-if-error window is in hand, is
//! answered with the stale copy instead.
//!
//! It sits inside [`CacheLookup`](crate::lookup::CacheLookup) (it acts on the
//! [`Lookup`] the lookup attaches), above the coordination layers.

use crate::body::{BoxError, CacheBody};
use crate::context::{Lookup, LookupState};
use crate::entry::{Freshness, now_ms};
use crate::refresh::{Refresher, refresh_headers, refresh_request};
use crate::serve::stale;
use crate::status::Detail;
use crate::store::SharedStore;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// Layer for [`StaleWhileRevalidate`].
#[derive(Clone, Debug)]
pub(crate) struct StaleWhileRevalidateLayer {
    stale_if_error: bool,
    refresher: Refresher,
    enabled: bool,
}

impl Default for StaleWhileRevalidateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl StaleWhileRevalidateLayer {
    /// SWR with stale-if-error on, at most 64 refreshes in flight.
    pub(crate) fn new() -> Self {
        Self {
            stale_if_error: true,
            refresher: Refresher::new("swr"),
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub(crate) fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Most background refreshes in flight at once in this process.
    pub(crate) fn max_refreshes(mut self, n: usize) -> Self {
        self.refresher = self.refresher.max_in_flight(n);
        self
    }

    /// On a shared `store`, claim the key's lock (for `ttl`) before a
    /// refresh, so one instance of the fleet refreshes it, not each.
    pub(crate) fn claim_through(mut self, store: SharedStore, ttl: Duration) -> Self {
        self.refresher = self.refresher.claim_through(store, ttl);
        self
    }

    /// Renewal of the claimed lock and the refresh's deadline (default:
    /// [`LeaseOptions::default`](crate::LeaseOptions)).
    pub(crate) fn lease(mut self, lease: crate::LeaseOptions) -> Self {
        self.refresher = self.refresher.lease(lease);
        self
    }
}

impl<S> Layer<S> for StaleWhileRevalidateLayer {
    type Service = StaleWhileRevalidate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleWhileRevalidate {
            inner,
            config: self.clone(),
        }
    }
}

/// Serves stale within the window and refreshes in the background (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct StaleWhileRevalidate<S> {
    inner: S,
    config: StaleWhileRevalidateLayer,
}

impl<S, B> Service<Request<B>> for StaleWhileRevalidate<S>
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
        let inner = self.inner.clone();
        if !self.config.enabled {
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }
        // No lookup: not a cacheable request (an unsafe method, a HEAD miss,
        // a credentialed request): nothing stale to serve.
        let Some(lookup) = req.extensions().get::<Lookup>().cloned() else {
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        };
        let entry = match (&lookup.state, &lookup.entry) {
            (LookupState::Stale, Some(entry)) => entry.clone(),
            _ => return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) }),
        };
        let now = now_ms();
        if !entry.may_serve_stale() {
            // must-revalidate, proxy-revalidate, s-maxage, no-cache: never stale.
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }
        if entry.freshness(now) == Freshness::Stale {
            // Within the window: answer now, refresh behind the client's back.
            let headers = refresh_headers(&entry.vary, req.headers());
            let marker = Lookup {
                state: LookupState::Refresh,
                request_headers: Arc::new(headers.clone()),
                ..lookup.clone()
            };
            let refresh = refresh_request(req.uri(), req.version(), headers, marker);
            self.config.refresher.spawn(inner, refresh, &lookup.key);
            return Box::pin(async move { Ok(stale(&entry, false, Detail::Swr)) });
        }
        // Stale-if-error within its window (RFC 5861): a 5xx, an origin that
        // cannot be reached (the 502/504 the gateway makes), a shed 503.
        let on_error = self.config.stale_if_error && now < entry.error_until_ms;
        Box::pin(async move {
            let result = inner.oneshot(req).await.map_err(Into::into);
            match result {
                Ok(resp) if on_error && resp.status().is_server_error() => {
                    Ok(stale(&entry, false, Detail::StaleIfError))
                }
                Err(err) if on_error => {
                    tracing::warn!(error = %err, "origin failed; serving stale (stale-if-error)");
                    Ok(stale(&entry, false, Detail::StaleIfError))
                }
                other => other,
            }
        })
    }
}
