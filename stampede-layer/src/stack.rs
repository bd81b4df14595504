//! The layer stack, written once, top-down in scope order, so the order is
//! visible in one place ([`StampedeLayer`], one `ServiceBuilder` chain). Each
//! mitigation can be switched on and off on its own (the mitigation ladder);
//! with none, the stack is a plain cache-aside.
//!
//! ```text
//! request
//!   → XFetch                fresh hits: maybe refresh early, in the background  (the cliff)
//!   → CacheLookup(store)    one target, one store read; answers fresh hits;
//!                           each client answered by its own validators/Range; Cache-Status
//!   → StaleWhileRevalidate  stale in the window: answer stale, refresh behind   (the wait)
//!   → SingleFlight          one rebuild per key and variant per process         (per-process herd)
//!   → DistributedLock       one rebuild per key and variant per fleet; fencing  (per-fleet herd)
//!   → CacheFill(store)      re-check, call origin, stream, fenced write;
//!                           decides what waiters may share; hit-for-miss;
//!                           TTL jitter: spreads the TTLs it writes             (multi-key herd)
//!                           negative caching: 404/410 for a short TTL         (absent-key storm)
//!   → OverloadGate          503 + Retry-After past the origin budget            (metastable overload)
//!   → origin
//! ```
//!
//! Why XFetch sits outside the lookup: it acts on fresh hits, which the
//! lookup answers. Why SWR sits inside it: it acts on the stale entry the
//! lookup found, before the request reaches the origin-bound layers. Why the
//! write sits inside the lock: if the fill happened after the lock was
//! released, a waiter could find nothing, take the lock and rebuild again —
//! a duplicate rebuild per boundary. Why the gate sits innermost: there it
//! sees exactly the origin-bound work (a hit can never be shed), and a stale
//! copy in hand turns its 503 into a stale answer (stale-if-error).

use crate::body::{BoxError, CacheBody};
use crate::config::CacheConfig;
use crate::error::{Error, OriginFailure, SharedError};
use crate::fill::{CacheFill, CacheFillLayer};
use crate::fresh_hit::FreshHitPath;
use crate::hot_keys::HotKeys;
use crate::lease::LeaseOptions;
use crate::lock::{DistributedLock, DistributedLockLayer};
use crate::lookup::{CacheLookup, CacheLookupLayer, KeyFn};
use crate::overload::{OverloadGate, OverloadGateLayer};
use crate::single_flight::{SingleFlight, SingleFlightLayer};
use crate::status::{CacheStatus, Detail, Fwd};
use crate::store::SharedStore;
use crate::swr::{StaleWhileRevalidate, StaleWhileRevalidateLayer};
use crate::xfetch::{XFetch, XFetchLayer};
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

/// Which mitigations are on: a field per mitigation, or parsed from the
/// names the gateway's `--mitigations` takes.
///
/// ```
/// use stampede_layer::Mitigations;
/// let m: Mitigations = "single-flight,lock".parse()?;
/// assert!(m.single_flight && m.lock && !m.swr);
/// assert_eq!(m.to_string(), "single-flight,lock");
/// assert!("".parse::<Mitigations>().is_err(), "empty is a mistake, not none");
///
/// // `#[non_exhaustive]` (mitigations may be added): start from a constant.
/// let mut no_xfetch = Mitigations::ALL;
/// no_xfetch.xfetch = false;
/// # Ok::<(), stampede_layer::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mitigations {
    /// Per-process coalescing.
    pub single_flight: bool,
    /// Per-fleet lock with fencing.
    pub lock: bool,
    /// Stale-while-revalidate (+ stale-if-error).
    pub swr: bool,
    /// XFetch early refresh.
    pub xfetch: bool,
    /// TTL jitter.
    pub jitter: bool,
    /// Negative caching.
    pub negative: bool,
    /// Overload gate.
    pub overload_gate: bool,
}

impl Mitigations {
    /// Every mitigation.
    pub const ALL: Mitigations = Mitigations {
        single_flight: true,
        lock: true,
        swr: true,
        xfetch: true,
        jitter: true,
        negative: true,
        overload_gate: true,
    };
    /// Plain cache-aside.
    pub const NONE: Mitigations = Mitigations {
        single_flight: false,
        lock: false,
        swr: false,
        xfetch: false,
        jitter: false,
        negative: false,
        overload_gate: false,
    };
    /// The names, in scope order, as `--mitigations` takes them.
    pub const NAMES: [&'static str; 7] = [
        "single-flight",
        "lock",
        "swr",
        "xfetch",
        "jitter",
        "negative",
        "overload-gate",
    ];

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "single-flight" => &mut self.single_flight,
            "lock" => &mut self.lock,
            "swr" => &mut self.swr,
            "xfetch" => &mut self.xfetch,
            "jitter" => &mut self.jitter,
            "negative" => &mut self.negative,
            "overload-gate" => &mut self.overload_gate,
            _ => return None,
        })
    }

    fn enabled(&self) -> Vec<&'static str> {
        let mut copy = *self;
        Self::NAMES
            .into_iter()
            .filter(|n| *copy.flag(n).expect("known name"))
            .collect()
    }
}

impl FromStr for Mitigations {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "all" => return Ok(Self::ALL),
            "none" => return Ok(Self::NONE),
            // An empty setting (an unset `STAMPEDE_MITIGATIONS=`) is a
            // mistake, not "everything off".
            "" => return Err(Error::Mitigations(String::new())),
            _ => {}
        }
        let mut m = Self::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            *m.flag(name)
                .ok_or_else(|| Error::Mitigations(name.to_owned()))? = true;
        }
        Ok(m)
    }
}

impl fmt::Display for Mitigations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = self.enabled();
        match on.len() {
            0 => f.write_str("none"),
            7 => f.write_str("all"),
            _ => f.write_str(&on.join(",")),
        }
    }
}

/// The layers in order over an origin `S`. A mitigation that is off stays in
/// the chain, switched off (it passes requests through): the type is the
/// same for every rung of the ladder, and linear — toggling with `Either`
/// would double it at every layer.
type Chain<S> = XFetch<
    CacheLookup<
        StaleWhileRevalidate<SingleFlight<DistributedLock<CacheFill<OverloadGate<Origin<S>>>>>>,
    >,
>;

/// How an origin failure becomes a status ([`StampedeLayer::error_status`]).
type ErrorStatus = Arc<dyn Fn(&Error) -> StatusCode + Send + Sync>;

/// The whole stack over an origin `S` — what [`StampedeLayer`] makes. It is
/// infallible (`Error = Infallible`): an origin failure that no stale copy
/// can stand in for is answered `502`/`504` (see [Errors](crate#errors)).
///
/// A clone is one reference count: the layers are shared, and copied only
/// for a request that goes through them (not for a plain fresh hit).
pub struct Stampede<S> {
    shared: Arc<Shared<S>>,
}

/// What every clone of a [`Stampede`] shares.
struct Shared<S> {
    inner: Chain<S>,
    /// Plain fresh hits, answered before the chain ([`crate::fresh_hit`]).
    fresh_hits: Arc<FreshHitPath>,
    error_status: ErrorStatus,
    name: Arc<str>,
}

impl<S> Clone for Stampede<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Stampede<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stampede")
            .field("inner", &self.shared.inner)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for Stampede<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Default + Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody>;
    type Error = Infallible;
    type Future = StampedeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every layer is always ready (readiness is awaited per call, on a
        // clone of the origin service).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(hit) = self.shared.fresh_hits.answer(&req) {
            return StampedeFuture(Either::Left(ready(Ok(hit))));
        }
        let fut = self.shared.inner.clone().call(req);
        let shared = self.shared.clone();
        StampedeFuture(Either::Right(Box::pin(async move {
            Ok(match fut.await {
                Ok(mut resp) => {
                    crate::context::strip_internal(resp.extensions_mut());
                    resp
                }
                Err(err) => origin_failed(err, &shared.error_status, &shared.name),
            })
        })))
    }
}

/// The future of [`Stampede`]: ready at once for a plain fresh hit, boxed
/// for everything that goes through the layers.
pub struct StampedeFuture(Either<Ready<Answer>, BoxFuture<'static, Answer>>);

/// What [`Stampede`] answers: always a response.
type Answer = Result<Response<CacheBody>, Infallible>;

impl fmt::Debug for StampedeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StampedeFuture").finish_non_exhaustive()
    }
}

impl std::future::Future for StampedeFuture {
    type Output = Result<Response<CacheBody>, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// The answer for a failed origin: the mapped status, `Retry-After`,
/// `Cache-Status`, and the error as an [`OriginFailure`] extension.
fn origin_failed(err: BoxError, error_status: &ErrorStatus, name: &str) -> Response<CacheBody> {
    let err = match err.downcast::<SharedError>() {
        Ok(shared) => Error::Shared(*shared),
        Err(err) => Error::Origin(err),
    };
    let status = error_status(&err);
    tracing::warn!(error = %err, status = status.as_u16(), "origin failed; answered by the stack");
    metrics::counter!("stampede_origin_failures_answered_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut resp = Response::new(CacheBody::full(format!(
        "{}\n",
        status.canonical_reason().unwrap_or("origin failure")
    )));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
    let cache_status =
        CacheStatus::forwarded(Fwd::UriMiss, status).with_detail(Detail::OriginError);
    headers.insert(crate::CACHE_STATUS, cache_status.header_value(name));
    resp.extensions_mut().insert(OriginFailure(Arc::new(err)));
    resp
}

/// The default mapping: a timeout is `504`, any other failure `502`.
fn default_error_status(err: &Error) -> StatusCode {
    if crate::error::is_timeout(err) {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

/// The stack, boxed: what [`StampedeLayer::service`] returns.
pub type StampedeService<B> = BoxCloneSyncService<Request<B>, Response<CacheBody>, Infallible>;

/// The whole stack as one tower [`Layer`], with builder methods for every
/// knob (the [crate docs](crate) say which mitigation each belongs to). Goes
/// into a `ServiceBuilder` or axum's `Router::layer` like any other layer;
/// the services it makes (and its clones') share one origin budget, one map
/// of flights and one set of background refreshes. A builder method called
/// after the layer was used starts that state afresh.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stampede_layer::{CacheConfig, HotKeys, LeaseOptions, MemoryStore, StampedeLayer};
///
/// let mut cache = CacheConfig::default();
/// cache.stale_if_error = Duration::from_secs(300);
/// let mut lease = LeaseOptions::default();
/// lease.fill_deadline = Duration::from_secs(10);
/// let hot = HotKeys::new(10, Duration::from_secs(60), 10_000);
///
/// let layer = StampedeLayer::new(Arc::new(MemoryStore::default()))
///     .mitigations("single-flight,swr,jitter,overload-gate".parse()?)
///     .cache_config(cache)
///     // `ttl` and `stale_ttl` set fields of the cache config: after it.
///     .ttl(Duration::from_secs(30))
///     .stale_ttl(Duration::from_secs(10))
///     .lock_ttl(Duration::from_secs(2))
///     .lease(lease)
///     .jitter(0.1)
///     .overload_budget(128, Duration::from_millis(50))
///     .hot_keys(hot.clone());
/// # let _ = layer;
/// # Ok::<(), stampede_layer::Error>(())
/// ```
#[derive(Clone)]
pub struct StampedeLayer {
    store: SharedStore,
    cache: CacheConfig,
    mitigations: Mitigations,
    lock_ttl: Duration,
    lock_wait: Option<Duration>,
    lease: LeaseOptions,
    xfetch_beta: f64,
    jitter: f64,
    negative_ttl: Duration,
    gate_max_inflight: usize,
    gate_queue_wait: Duration,
    max_background_refreshes: usize,
    hot_keys: Option<HotKeys>,
    key_fn: Option<KeyFn>,
    error_status: ErrorStatus,
    /// The layers, built once from the settings on the first `layer` call and
    /// shared by every service made from this layer (and its clones): one
    /// origin budget, one map of flights, one set of background refreshes,
    /// however many routes axum wraps.
    built: Arc<OnceLock<Layers>>,
}

/// The layers of the stack, built from a [`StampedeLayer`]'s settings.
#[derive(Clone)]
struct Layers {
    /// The fast path of plain fresh hits, over the lookup's store and
    /// metrics: one per layer, like the layers themselves.
    fresh_hits: Arc<FreshHitPath>,
    xfetch: XFetchLayer,
    lookup: CacheLookupLayer,
    swr: StaleWhileRevalidateLayer,
    single_flight: SingleFlightLayer,
    lock: DistributedLockLayer,
    fill: CacheFillLayer,
    gate: OverloadGateLayer,
}

impl fmt::Debug for StampedeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StampedeLayer")
            .field("backend", &self.store.backend())
            .field("mitigations", &self.mitigations.to_string())
            .field("cache", &self.cache)
            .field("lock_ttl", &self.lock_ttl)
            .finish_non_exhaustive()
    }
}

impl StampedeLayer {
    /// The default origin budget of the overload gate, in the library and the
    /// gateway alike: origin requests in flight at once (per process, shared
    /// by every service this layer makes) before more are answered `503` —
    /// high enough that a normal burst of distinct misses is never shed.
    pub const DEFAULT_ORIGIN_BUDGET: usize = 256;

    /// A stack over `store` with every mitigation on and default knobs.
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            cache: CacheConfig::default(),
            mitigations: Mitigations::ALL,
            lock_ttl: Duration::from_secs(2),
            lock_wait: None,
            lease: LeaseOptions::default(),
            xfetch_beta: 1.0,
            jitter: 0.2,
            negative_ttl: Duration::from_secs(5),
            gate_max_inflight: Self::DEFAULT_ORIGIN_BUDGET,
            gate_queue_wait: Duration::ZERO,
            max_background_refreshes: 64,
            hot_keys: None,
            key_fn: None,
            error_status: Arc::new(default_error_status),
            built: Arc::default(),
        }
    }

    /// The layers, built on first use (a builder method starts afresh).
    fn layers(&self) -> &Layers {
        self.built.get_or_init(|| {
            let m = self.mitigations;
            let store = &self.store;
            let claim_ttl = self.lock_ttl;
            let mut lookup = CacheLookupLayer::new(store.clone(), self.cache.clone())
                .key_fn(self.key_fn.clone());
            if let Some(hot) = &self.hot_keys {
                lookup = lookup.hot_keys(hot.clone());
            }
            let xfetch = XFetchLayer::new(self.xfetch_beta)
                .max_refreshes(self.max_background_refreshes)
                .claim_through(store.clone(), claim_ttl)
                .lease(self.lease)
                .stale_while_revalidate(m.swr)
                .enabled(m.xfetch);
            Layers {
                fresh_hits: Arc::new(lookup.fresh_hit_path(xfetch.active_policy())),
                xfetch,
                lookup,
                swr: StaleWhileRevalidateLayer::new()
                    .max_refreshes(self.max_background_refreshes)
                    .claim_through(store.clone(), claim_ttl)
                    .lease(self.lease)
                    .enabled(m.swr),
                single_flight: SingleFlightLayer::new().enabled(m.single_flight),
                lock: DistributedLockLayer::new(store.clone())
                    .lock_ttl(self.lock_ttl)
                    .max_wait(self.lock_wait.unwrap_or(self.lock_ttl))
                    .lease(self.lease)
                    .enabled(m.lock),
                fill: CacheFillLayer::new(store.clone(), self.cache.clone())
                    .tickets(self.lock_ttl, self.lease)
                    .jitter(if m.jitter { self.jitter } else { 0.0 })
                    .negative_ttl(if m.negative {
                        self.negative_ttl
                    } else {
                        Duration::ZERO
                    }),
                gate: OverloadGateLayer::new(self.gate_max_inflight)
                    .max_queue_wait(self.gate_queue_wait)
                    .enabled(m.overload_gate),
            }
        })
    }

    /// Settings changed: the layers are built anew on the next `layer` call.
    fn changed(mut self) -> Self {
        self.built = Arc::default();
        self
    }

    /// Choose the mitigations.
    pub fn mitigations(mut self, m: Mitigations) -> Self {
        self.mitigations = m;
        self.changed()
    }

    /// Cache settings (name, TTLs, body limit, HTTP semantics).
    pub fn cache_config(mut self, c: CacheConfig) -> Self {
        self.cache = c;
        self.changed()
    }

    /// Fresh TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self.changed()
    }

    /// Stale-while-revalidate window.
    pub fn stale_ttl(mut self, ttl: Duration) -> Self {
        self.cache.stale_ttl = ttl;
        self.changed()
    }

    /// Lock TTL (the losers' wait bound defaults to it; background refreshes
    /// claim the key's lock for as long).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self.changed()
    }

    /// Lock renewal while a rebuild runs, and the whole-rebuild deadline
    /// (foreground and background).
    pub fn lease(mut self, lease: LeaseOptions) -> Self {
        self.lease = lease;
        self.changed()
    }

    /// Losers' wait bound.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self.changed()
    }

    /// XFetch `beta`.
    pub fn xfetch_beta(mut self, beta: f64) -> Self {
        self.xfetch_beta = beta;
        self.changed()
    }

    /// TTL jitter fraction.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self.changed()
    }

    /// Negative-cache TTL.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self.changed()
    }

    /// Overload gate budget: requests at the origin at once, and queue wait.
    pub fn overload_budget(mut self, max_inflight: usize, queue_wait: Duration) -> Self {
        self.gate_max_inflight = max_inflight;
        self.gate_queue_wait = queue_wait;
        self.changed()
    }

    /// Most background refreshes (SWR, XFetch, each) in flight per process.
    pub fn max_background_refreshes(mut self, n: usize) -> Self {
        self.max_background_refreshes = n;
        self.changed()
    }

    /// Feed the hot-key report.
    pub fn hot_keys(mut self, hot: HotKeys) -> Self {
        self.hot_keys = Some(hot);
        self.changed()
    }

    /// Scope the cache key beyond method and target: `key_fn` derives a scope
    /// from the request headers (a tenant header, the `Host` of a gateway
    /// that serves several sites); requests of two scopes never share an
    /// entry, a flight or a lock. Background refreshes keep the scope of the
    /// request that triggered them. `None` from `key_fn`: no scope.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use stampede_layer::{MemoryStore, StampedeLayer};
    /// let layer = StampedeLayer::new(Arc::new(MemoryStore::default())).key_fn(|headers| {
    ///     headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned)
    /// });
    /// # let _ = layer;
    /// ```
    pub fn key_fn(
        mut self,
        key_fn: impl Fn(&http::HeaderMap) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.key_fn = Some(Arc::new(key_fn));
        self.changed()
    }

    /// The status an origin failure is answered with when no stale copy can
    /// stand in (default: `504` for a timeout, else `502`). The answer carries
    /// the error as an [`OriginFailure`] extension.
    pub fn error_status(
        mut self,
        map: impl Fn(&Error) -> StatusCode + Send + Sync + 'static,
    ) -> Self {
        self.error_status = Arc::new(map);
        self
    }

    /// Wrap `origin` in the stack, boxed (a nameable, cloneable service).
    pub fn service<S, B, ResBody>(&self, origin: S) -> StampedeService<B>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Default + Send + 'static,
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        BoxCloneSyncService::new(self.layer(origin))
    }
}

impl<S> Layer<S> for StampedeLayer {
    type Service = Stampede<S>;

    fn layer(&self, origin: S) -> Stampede<S> {
        let l = self.layers().clone();
        let inner = ServiceBuilder::new()
            .layer(l.xfetch)
            .layer(l.lookup)
            .layer(l.swr)
            .layer(l.single_flight)
            .layer(l.lock)
            .layer(l.fill)
            .layer(l.gate)
            .service(Origin(origin));
        Stampede {
            shared: Arc::new(Shared {
                inner,
                fresh_hits: l.fresh_hits.clone(),
                error_status: self.error_status.clone(),
                name: self.cache.name.clone(),
            }),
        }
    }
}

/// The origin, speaking the stack's body and error types.
#[derive(Clone, Debug)]
pub(crate) struct Origin<S>(pub S);

impl<S, B, ResBody> Service<Request<B>> for Origin<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await.map_err(Into::into)?;
            Ok(resp.map(CacheBody::from_body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{FreshHit, Generated, RebuildFailed, Sharing};
    use crate::fill::TeeBody;
    use crate::store::MemoryStore;
    use tower::ServiceExt;

    /// None of the layers' own extensions is left on an answer.
    fn assert_clean<B>(resp: &Response<B>, what: &str) {
        let ext = resp.extensions();
        assert!(ext.get::<Sharing>().is_none(), "{what}: Sharing");
        assert!(ext.get::<FreshHit>().is_none(), "{what}: FreshHit");
        assert!(
            ext.get::<RebuildFailed>().is_none(),
            "{what}: RebuildFailed"
        );
        assert!(ext.get::<CacheStatus>().is_none(), "{what}: CacheStatus");
        assert!(ext.get::<TeeBody>().is_none(), "{what}: TeeBody");
        assert!(ext.get::<Generated>().is_none(), "{what}: Generated");
        assert!(
            ext.get::<crate::status::Outcome>().is_some(),
            "{what}: the Outcome stays"
        );
    }

    #[tokio::test]
    async fn internal_extensions_do_not_leave_the_stack() {
        let origin = tower::service_fn(|req: Request<String>| async move {
            let mut resp = Response::new(String::from("v"));
            if req.uri().path() == "/generated" {
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
                resp.extensions_mut().insert(Generated);
            }
            Ok::<_, Infallible>(resp)
        });
        let svc = StampedeLayer::new(Arc::new(MemoryStore::default())).service(origin);
        let get = |path: &str| Request::get(path).body(String::new()).unwrap();
        let miss = svc.clone().oneshot(get("/a")).await.unwrap();
        assert_clean(&miss, "miss");
        let hit = svc.clone().oneshot(get("/a")).await.unwrap();
        assert!(
            hit.headers()[crate::CACHE_STATUS]
                .to_str()
                .unwrap()
                .contains("hit")
        );
        assert_clean(&hit, "hit");
        let generated = svc.clone().oneshot(get("/generated")).await.unwrap();
        assert_eq!(generated.status(), StatusCode::BAD_GATEWAY);
        assert_clean(&generated, "generated");
        let post = Request::post("/a").body(String::new()).unwrap();
        assert_clean(&svc.oneshot(post).await.unwrap(), "pass-through");
    }

    /// The fast path answers exactly what the layers answer, or leaves the
    /// request to them: every request below is sent both ways on one store.
    #[tokio::test]
    async fn fresh_hit_path_answers_as_the_layers_do() {
        use http_body_util::BodyExt;
        let origin = tower::service_fn(|req: Request<String>| async move {
            let path = req.uri().path().to_owned();
            let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
                "body of {path}"
            ))));
            let h = resp.headers_mut();
            h.insert("cache-control", "max-age=60".parse().unwrap());
            h.insert("etag", "\"v1\"".parse().unwrap());
            match path.as_str() {
                "/vary" => {
                    h.insert("vary", "accept-language".parse().unwrap());
                }
                "/gzip" => {
                    use std::io::Write;
                    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    enc.write_all(b"plain text").unwrap();
                    h.insert("content-encoding", "gzip".parse().unwrap());
                    let gzip = bytes::Bytes::from(enc.finish().unwrap());
                    return Ok::<_, Infallible>(resp.map(|_| http_body_util::Full::new(gzip)));
                }
                "/short" => {
                    h.insert("cache-control", "max-age=0".parse().unwrap());
                }
                _ => {}
            }
            Ok::<_, Infallible>(resp)
        });
        let store: SharedStore = Arc::new(crate::store::MemoryStore::default());
        let svc = StampedeLayer::new(store).layer(origin);
        let get = |path: &str, headers: &[(&str, &str)]| {
            let mut req = Request::get(path).body(String::new()).unwrap();
            for (k, v) in headers {
                req.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            req
        };
        // Fill.
        for (path, h) in [
            ("/a", &[][..]),
            ("/vary", &[("accept-language", "en")][..]),
            ("/gzip", &[("accept-encoding", "gzip")][..]),
            ("/short", &[][..]),
        ] {
            let resp = svc.clone().oneshot(get(path, h)).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }
        async fn parts(resp: Response<CacheBody>) -> (StatusCode, Vec<(String, String)>, Bytes) {
            let status = resp.status();
            let mut headers: Vec<_> = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            headers.sort();
            (
                status,
                headers,
                resp.into_body().collect().await.unwrap().to_bytes(),
            )
        }
        use bytes::Bytes;
        // Plain fresh hits: answered on the fast path, as the layers answer.
        for (path, h) in [
            ("/a", &[][..]),
            ("/a", &[("accept-encoding", "br")][..]),
            ("/vary", &[("accept-language", "en")][..]),
            ("/gzip", &[("accept-encoding", "gzip")][..]),
            ("/gzip", &[][..]),
        ] {
            let fast = svc.shared.fresh_hits.answer(&get(path, h));
            let fast = fast.unwrap_or_else(|| panic!("{path} {h:?}: not on the fast path"));
            assert!(fast.extensions().get::<crate::status::Outcome>().is_some());
            let mut slow = svc
                .shared
                .inner
                .clone()
                .oneshot(get(path, h))
                .await
                .unwrap();
            crate::context::strip_internal(slow.extensions_mut());
            assert_eq!(parts(fast).await, parts(slow).await, "{path} {h:?}");
        }
        let head = Request::head("/a").body(String::new()).unwrap();
        assert!(
            svc.shared.fresh_hits.answer(&head).is_some(),
            "HEAD of a fresh hit"
        );
        // Everything else takes the layers.
        for (path, h) in [
            ("/a", &[("range", "bytes=0-1")][..]),
            ("/a", &[("if-none-match", "\"v1\"")][..]),
            (
                "/a",
                &[("if-modified-since", "Sat, 05 Dec 2026 12:00:00 GMT")][..],
            ),
            ("/a", &[("authorization", "Bearer x")][..]),
            ("/a", &[("cookie", "s=1")][..]),
            ("/vary", &[("accept-language", "de")][..]),
            ("/short", &[][..]),
            ("/missing", &[][..]),
            ("/b/../a", &[][..]),
            ("/a?", &[][..]),
        ] {
            assert!(
                svc.shared.fresh_hits.answer(&get(path, h)).is_none(),
                "{path} {h:?} must take the layers"
            );
        }
        let post = Request::post("/a").body(String::new()).unwrap();
        assert!(svc.shared.fresh_hits.answer(&post).is_none());
        let mut refresh = get("/a", &[]);
        refresh
            .extensions_mut()
            .insert(crate::context::ForceRefresh);
        assert!(svc.shared.fresh_hits.answer(&refresh).is_none());
    }

    #[test]
    fn parses_mitigation_lists() {
        assert_eq!("all".parse::<Mitigations>().unwrap(), Mitigations::ALL);
        assert_eq!("none".parse::<Mitigations>().unwrap(), Mitigations::NONE);
        let m: Mitigations = "single-flight, lock".parse().unwrap();
        assert!(m.single_flight && m.lock && !m.swr);
        assert_eq!(m.to_string(), "single-flight,lock");
        assert!("single-flight,bogus".parse::<Mitigations>().is_err());
        assert!("".parse::<Mitigations>().is_err(), "empty is not none");
        assert!("  ".parse::<Mitigations>().is_err());
        let all: Mitigations = Mitigations::NAMES.join(",").parse().unwrap();
        assert_eq!(all, Mitigations::ALL);
        assert_eq!(all.to_string(), "all");
    }
}
