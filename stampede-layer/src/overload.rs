//! The overload gate: bounds *metastable* overload. When origin-bound work
//! exceeds its budget — `max_inflight` requests at the origin, and a queue
//! wait of at most `max_queue_wait` for a slot — it answers 503 with
//! `Retry-After` at once instead of queueing, so a retry storm cannot keep a
//! saturated origin pinned after the spike that caused it.
//!
//! Background refreshes (SWR, XFetch) are the first work shed: they may only
//! take a slot while more than a quarter of the budget is free, so refresh
//! traffic over a wide key space can never crowd out requests a client is
//! waiting on.
//!
//! It sits innermost, just above the origin, so by construction it only ever
//! sees origin-bound work: a cache hit never reaches it. When a stale copy is
//! in hand, the 503 is turned into a stale answer by stale-if-error above it.

use crate::body::{BoxError, CacheBody};
use crate::context::{Lookup, LookupState, RefreshSkipped};
use crate::serve::service_unavailable;
use crate::status::{CacheStatus, Detail, Fwd};
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

/// Layer for [`OverloadGate`].
#[derive(Clone, Debug)]
pub(crate) struct OverloadGateLayer {
    max_inflight: usize,
    max_queue_wait: Duration,
    retry_after: Duration,
    enabled: bool,
    /// One budget for every service this layer makes (axum calls `layer`
    /// once per route and method).
    slots: Arc<Semaphore>,
}

impl OverloadGateLayer {
    /// At most `max_inflight` requests at the origin; no queueing.
    pub(crate) fn new(max_inflight: usize) -> Self {
        Self {
            max_inflight: max_inflight.max(1),
            max_queue_wait: Duration::ZERO,
            retry_after: Duration::from_secs(1),
            enabled: true,
            slots: Arc::new(Semaphore::new(max_inflight.max(1))),
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub(crate) fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Let a request wait this long for a slot before it is shed.
    pub(crate) fn max_queue_wait(mut self, wait: Duration) -> Self {
        self.max_queue_wait = wait;
        self
    }
}

impl<S> Layer<S> for OverloadGateLayer {
    type Service = OverloadGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadGate {
            inner,
            slots: self.slots.clone(),
            config: self.clone(),
        }
    }
}

/// Sheds origin-bound work over budget (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct OverloadGate<S> {
    inner: S,
    slots: Arc<Semaphore>,
    config: OverloadGateLayer,
}

impl<S, B, ResBody> Service<Request<B>> for OverloadGate<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
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
            return Box::pin(async move {
                let resp = inner.oneshot(req).await.map_err(Into::into)?;
                Ok(resp.map(CacheBody::from_body))
            });
        }
        let slots = self.slots.clone();
        let config = self.config.clone();
        let background = req
            .extensions()
            .get::<Lookup>()
            .is_some_and(|l| l.state == LookupState::Refresh);
        Box::pin(async move {
            let reserve = config.max_inflight / 4;
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) if background && slots.available_permits() < reserve => {
                    drop(p);
                    None
                }
                Ok(p) => Some(p),
                Err(_) if config.max_queue_wait.is_zero() => None,
                Err(_) => tokio::time::timeout(config.max_queue_wait, slots.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            let Some(_permit) = permit else {
                let reason = if background {
                    "background"
                } else if config.max_queue_wait.is_zero() {
                    "inflight"
                } else {
                    "queue"
                };
                metrics::counter!("stampede_shed_total", "reason" => reason).increment(1);
                if background {
                    return Err(Box::new(RefreshSkipped::Shed) as BoxError);
                }
                let mut resp = service_unavailable(config.retry_after);
                let mut status = CacheStatus::forwarded(Fwd::Miss, StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail(Detail::Shed);
                status.fwd_status = None;
                resp.extensions_mut().insert(status);
                return Ok(resp);
            };
            let resp = inner.oneshot(req).await.map_err(Into::into)?;
            Ok(resp.map(CacheBody::from_body))
        })
    }
}
