//! [`CacheFill`]: calls the origin for a looked-up request, buffers the
//! answer and writes it — conditional on the request's
//! [`FencingToken`](crate::FencingToken) — and says whether the requests that
//! waited on this rebuild may share it ([`Sharing`]).
//!
//! The storage decision is [`StorageRules::decide`](crate::policy::StorageRules::decide),
//! the one RFC 9111 §3 check: what it refuses is neither stored nor shared.
//! When the reason belongs to the resource (`private`, `Set-Cookie`,
//! `no-store`, `Vary: *`, a status this cache does not store, a body over the
//! buffer limit), the fill also writes a hit-for-miss marker, so requests for
//! the key go straight to the origin for a while instead of queueing behind a
//! rebuild whose answer they could not be given.

use crate::body::{BoxError, Buffered, CacheBody, buffer};
use crate::config::CacheConfig;
use crate::context::{
    FencingToken, FillDirectives, FillPending, Lookup, LookupState, Reread, Sharing,
};
use crate::entry::{CachedResponse, EntryKind, VaryValues, now_ms};
use crate::policy::NotShareable;
use crate::serve::collapsed_hit;
use crate::status::{CacheStatus, Detail};
use crate::store::{PutOutcome, SharedStore, get_or_miss, record_error};
use futures_util::future::BoxFuture;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Layer for [`CacheFill`].
#[derive(Clone)]
pub struct CacheFillLayer {
    store: SharedStore,
    config: Arc<CacheConfig>,
}

impl std::fmt::Debug for CacheFillLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFillLayer")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl CacheFillLayer {
    /// Fill `store` with `config`.
    pub fn new(store: SharedStore, config: CacheConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for CacheFillLayer {
    type Service = CacheFill<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheFill {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

/// Calls the origin and writes the answer (see the module docs). Re-checks
/// the store first: a rebuild that finished after our lookup makes the
/// origin call unnecessary (single-flight only dedups overlapping calls).
#[derive(Clone)]
pub struct CacheFill<S> {
    inner: S,
    store: SharedStore,
    config: Arc<CacheConfig>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheFill<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFill")
            .field("inner", &self.inner)
            .field("backend", &self.store.backend())
            .finish()
    }
}

crate::inner_access!(CacheFill);

impl<S, B, ResBody> Service<Request<B>> for CacheFill<S>
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
        let this = self.clone();
        Box::pin(this.fill(req))
    }
}

/// Decrements the in-flight gauge however the rebuild ends.
struct InflightGuard;

impl InflightGuard {
    fn new() -> Self {
        metrics::gauge!("stampede_inflight_rebuilds").increment(1.0);
        InflightGuard
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        metrics::gauge!("stampede_inflight_rebuilds").decrement(1.0);
    }
}

impl<S> CacheFill<S> {
    async fn fill<B, ResBody>(self, mut req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let Some(mut lookup) = req.extensions().get::<Lookup>().cloned() else {
            let resp = self.inner.oneshot(req).await.map_err(Into::into)?;
            return Ok(resp.map(CacheBody::from_body));
        };
        // Re-check inside the flight / lock.
        if lookup.state != LookupState::Pass
            && let Some(entry) = get_or_miss(self.store.as_ref(), &lookup.key).await
        {
            match lookup.classify_reread(&entry, now_ms()) {
                Reread::Usable => return Ok(collapsed_hit(&entry, Detail::Recheck)),
                Reread::Uncacheable => lookup.state = LookupState::Pass,
                Reread::OtherVariant(_) | Reread::Nothing => {}
            }
        }
        let fence = req.extensions().get::<FencingToken>().map_or(0, |t| t.0);
        let request_headers = req.headers().clone();
        req.extensions_mut().insert(FillPending);
        let started = Instant::now();
        let guard = InflightGuard::new();
        let result = self.inner.clone().oneshot(req).await.map_err(Into::into);
        let rebuild = started.elapsed();
        drop(guard);
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                metrics::counter!("stampede_origin_requests_total", "status" => "error")
                    .increment(1);
                return Err(err);
            }
        };
        metrics::counter!("stampede_origin_requests_total", "status" => resp.status().as_str().to_owned())
            .increment(1);
        metrics::histogram!("stampede_rebuild_duration_seconds").record(rebuild.as_secs_f64());

        let (mut parts, body) = resp.into_parts();
        let directives = parts
            .extensions
            .remove::<FillDirectives>()
            .unwrap_or_default();
        let generated = parts.extensions.remove::<Sharing>() == Some(Sharing::Generated);
        let mut status = parts
            .extensions
            .remove::<CacheStatus>() // the overload gate's account
            .unwrap_or_else(|| CacheStatus::forwarded(lookup.fwd, parts.status));
        let decision = self.config.storage_rules().decide(
            &request_headers,
            parts.status,
            &parts.headers,
            &directives,
        );
        let bytes = match buffer(body, self.config.max_body_bytes).await? {
            Buffered::Complete(bytes) => bytes,
            Buffered::TooLarge(body) => {
                uncacheable(
                    &self.store,
                    &self.config,
                    &lookup,
                    fence,
                    NotShareable::TooLarge,
                )
                .await;
                parts.extensions.insert(status);
                parts
                    .extensions
                    .insert(Sharing::NotShareable(NotShareable::TooLarge));
                return Ok(Response::from_parts(parts, body));
            }
        };
        let sharing = match decision {
            Ok(lifetimes) => {
                let now = now_ms();
                let fresh_until_ms = now + lifetimes.fresh.as_millis() as u64;
                let entry = CachedResponse {
                    status: parts.status.as_u16(),
                    headers: CachedResponse::headers_from(&parts.headers),
                    // A copy of exactly the body's size: the buffered `Bytes` may be a
                    // slice of a much larger connection read buffer, which an
                    // in-process entry would otherwise keep alive for its lifetime.
                    body: bytes::Bytes::copy_from_slice(&bytes),
                    stored_at_ms: now,
                    fresh_until_ms,
                    stale_until_ms: fresh_until_ms + lifetimes.stale.as_millis() as u64,
                    error_until_ms: fresh_until_ms + lifetimes.error.as_millis() as u64,
                    rebuild_ms: rebuild.as_millis().min(u32::MAX as u128) as u32,
                    fence,
                    vary: VaryValues::of(&parts.headers, &request_headers),
                    kind: EntryKind::Response,
                };
                match self.store.put(&lookup.key, &entry).await {
                    Ok(PutOutcome::Written) => {
                        status.stored = true;
                        status.ttl = Some(entry.ttl_secs(now));
                    }
                    Ok(PutOutcome::Fenced { current }) => {
                        metrics::counter!("stampede_fencing_rejections_total").increment(1);
                        tracing::info!(key = %lookup.key, fence, current, "stale write rejected by fencing token");
                        status.detail = Some(Detail::Fenced);
                    }
                    Err(err) => record_error(self.store.as_ref(), "put", &err),
                }
                Sharing::Stored(entry.vary)
            }
            Err(_) if generated => Sharing::Generated,
            Err(reason) => {
                uncacheable(&self.store, &self.config, &lookup, fence, reason).await;
                Sharing::NotShareable(reason)
            }
        };
        parts.extensions.insert(status);
        parts.extensions.insert(sharing);
        Ok(Response::from_parts(parts, CacheBody::full(bytes)))
    }
}

/// Count an answer that may not be stored; mark the key hit-for-miss when
/// the reason belongs to the resource.
async fn uncacheable(
    store: &SharedStore,
    config: &CacheConfig,
    lookup: &Lookup,
    fence: u64,
    reason: NotShareable,
) {
    metrics::counter!("stampede_uncacheable_total", "reason" => reason.as_str()).increment(1);
    let ttl = config.hit_for_miss_ttl;
    if lookup.state == LookupState::Pass || ttl.is_zero() || !reason.marks_hit_for_miss() {
        return;
    }
    let marker = CachedResponse::hit_for_miss(now_ms(), ttl, fence);
    match store.put(&lookup.key, &marker).await {
        Ok(PutOutcome::Written) => {
            tracing::debug!(key = %lookup.key, reason = reason.as_str(), "key marked hit-for-miss");
        }
        Ok(PutOutcome::Fenced { .. }) => {}
        Err(err) => record_error(store.as_ref(), "put", &err),
    }
}
