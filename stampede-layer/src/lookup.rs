//! [`CacheLookup`]: the cache's front door. Per request it
//!
//! 1. normalises the target once and forwards *that* target (a raw dot
//!    segment can never make the origin answer something else than what the
//!    key stands for; targets without a normal form get 400, see [`crate::key`]);
//! 2. lets uncacheable requests through untouched (unsafe methods, which
//!    invalidate the target on success, RFC 9111 §4.4; credentialed requests);
//! 3. reads the store once and answers fresh hits — each client from the
//!    stored representation by its own validators and `Range`;
//! 4. otherwise takes the client's preconditions and `Range` off the request
//!    (a rebuild fills the shared object with the full representation, never
//!    one client's partial or 304 answer), attaches a [`Lookup`] for the
//!    layers below (stale-while-revalidate, single-flight, lock, fill), and
//!    answers the client from what comes back by its own headers;
//! 5. writes the RFC 9211 `Cache-Status` and the request metrics, and leaves
//!    the [`Outcome`](crate::Outcome) in the response's extensions (for access logs).
//!
//! A key marked hit-for-miss (its last answer could not be shared) goes
//! straight to the origin with the client's own headers, uncoordinated.

use crate::body::{BoxError, CacheBody};
use crate::conditional::ClientConditions;
use crate::config::CacheConfig;
use crate::context::{ForceRefresh, FreshHit, Lookup, LookupState};
use crate::entry::{Freshness, now_ms};
use crate::hot_keys::HotKeys;
use crate::key::{CacheKey, normalise_target};
use crate::refresh::refresh_headers;
use crate::serve::{bad_target, hit_response};
use crate::status::{CacheStatus, Detail, Fwd};
use crate::store::{SharedStore, read_selected, record_error};
use crate::telemetry::RequestMetrics;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// What scopes a key beyond its method and target (see
/// [`StampedeLayer::key_fn`](crate::StampedeLayer::key_fn)).
pub(crate) type KeyFn = Arc<dyn Fn(&http::HeaderMap) -> Option<String> + Send + Sync>;

/// Layer for [`CacheLookup`].
#[derive(Clone)]
pub(crate) struct CacheLookupLayer {
    store: SharedStore,
    config: Arc<CacheConfig>,
    key_fn: Option<KeyFn>,
    hot_keys: Option<HotKeys>,
    metrics: Arc<OnceLock<RequestMetrics>>,
}

impl std::fmt::Debug for CacheLookupLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLookupLayer")
            .field("backend", &self.store.backend())
            .field("config", &self.config)
            .finish()
    }
}

impl CacheLookupLayer {
    /// Look up in `store` with `config`.
    pub(crate) fn new(store: SharedStore, config: CacheConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            key_fn: None,
            hot_keys: None,
            metrics: Arc::default(),
        }
    }

    /// Scope every key by what `key_fn` derives from the request headers.
    pub(crate) fn key_fn(mut self, key_fn: Option<KeyFn>) -> Self {
        self.key_fn = key_fn;
        self
    }

    /// Count requests per key in `hot_keys` (the bounded hot-key report).
    pub(crate) fn hot_keys(mut self, hot_keys: HotKeys) -> Self {
        self.hot_keys = Some(hot_keys);
        self
    }

    /// The [fast path](crate::fresh_hit) of this lookup's fresh hits (the
    /// same store, settings and metrics), leaving to XFetch's `policy` (when
    /// it is on) the entries due for an early refresh.
    pub(crate) fn fresh_hit_path(
        &self,
        xfetch: Option<crate::xfetch::XFetchPolicy>,
    ) -> crate::fresh_hit::FreshHitPath {
        crate::fresh_hit::FreshHitPath {
            store: self.store.clone(),
            config: self.config.clone(),
            key_fn: self.key_fn.clone(),
            hot_keys: self.hot_keys.clone(),
            metrics: self.metrics.clone(),
            xfetch,
        }
    }
}

impl<S> Layer<S> for CacheLookupLayer {
    type Service = CacheLookup<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheLookup {
            inner: Arc::new(inner),
            store: self.store.clone(),
            config: self.config.clone(),
            key_fn: self.key_fn.clone(),
            hot_keys: self.hot_keys.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The cache's front door (see the module docs).
#[derive(Clone)]
pub(crate) struct CacheLookup<S> {
    /// Shared, cloned only for a request that goes on down the stack: a hit
    /// (most requests) neither copies the layers below nor carries them in
    /// its future.
    inner: Arc<S>,
    store: SharedStore,
    config: Arc<CacheConfig>,
    key_fn: Option<KeyFn>,
    hot_keys: Option<HotKeys>,
    /// Looked up on the first request recorded (the recorder is installed
    /// by then), then shared by every clone.
    metrics: Arc<OnceLock<RequestMetrics>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheLookup<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLookup")
            .field("inner", &self.inner)
            .field("backend", &self.store.backend())
            .finish()
    }
}

#[allow(dead_code)] // the tower-http accessors; the stack does not use them
impl<S> CacheLookup<S> {
    /// The inner service.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

#[allow(dead_code)] // the tower-http accessors; the stack does not use them
impl<S: Clone> CacheLookup<S> {
    /// The inner service, mutably (copied first if a request in flight shares it).
    pub(crate) fn get_mut(&mut self) -> &mut S {
        Arc::make_mut(&mut self.inner)
    }

    /// The inner service, consuming this one.
    pub(crate) fn into_inner(self) -> S {
        Arc::unwrap_or_clone(self.inner)
    }
}

impl<S, B> Service<Request<B>> for CacheLookup<S>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited per call (`oneshot`), on a clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use tracing::Instrument;
        let this = self.clone();
        // Never the target itself: it may carry a query string with secrets.
        let span = tracing::debug_span!(
            "stampede.request",
            method = %req.method(),
            outcome = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let record = span.clone();
        let fut = async move {
            let started = Instant::now();
            let background = req.extensions().get::<ForceRefresh>().is_some();
            let config = this.config.clone();
            let metrics = this.metrics.clone();
            let resp = this.handle(req).await?;
            let (resp, outcome) = finish(resp, &config, &metrics, started, background);
            record.record("outcome", outcome.as_str());
            record.record("status", resp.status().as_u16());
            Ok(resp)
        };
        Box::pin(fut.instrument(span))
    }
}

/// The last step of every answer the lookup gives (and of the
/// [fast path](crate::fresh_hit)): the RFC 9211 `Cache-Status` from the
/// [`CacheStatus`] extension, the request metrics (not for a `background`
/// refresh), and the [`Outcome`](crate::Outcome) left in the extensions.
pub(crate) fn finish(
    mut resp: Response<CacheBody>,
    config: &CacheConfig,
    metrics: &OnceLock<RequestMetrics>,
    started: Instant,
    background: bool,
) -> (Response<CacheBody>, crate::Outcome) {
    let status = resp
        .extensions_mut()
        .remove::<CacheStatus>()
        .unwrap_or_default();
    finish_with(resp, &status, config, metrics, started, background)
}

/// [`finish`] with the [`CacheStatus`] given instead of taken from the
/// extensions (the fast path never puts it there).
pub(crate) fn finish_with(
    mut resp: Response<CacheBody>,
    status: &CacheStatus,
    config: &CacheConfig,
    metrics: &OnceLock<RequestMetrics>,
    started: Instant,
    background: bool,
) -> (Response<CacheBody>, crate::Outcome) {
    // An upstream cache's entries stay; ours is the last member, the
    // cache closest to the client (RFC 9211 §2).
    let ours = status.header_value(&config.name);
    let value = match resp.headers().get(crate::CACHE_STATUS) {
        Some(upstream) => {
            let mut v = upstream.as_bytes().to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(ours.as_bytes());
            http::HeaderValue::from_bytes(&v).unwrap_or(ours)
        }
        None => ours,
    };
    resp.headers_mut().insert(crate::CACHE_STATUS, value);
    let outcome = status.outcome(resp.status());
    if !background {
        metrics
            .get_or_init(RequestMetrics::new)
            .record(outcome, started.elapsed());
        crate::fingerprint::answered(status, outcome);
    }
    resp.extensions_mut().insert(outcome);
    (resp, outcome)
}

/// Forward through (a copy of) `inner`, recording `fwd` unless a layer below
/// gave its own account. Boxed: the request's future carries the stack below
/// only when it goes there, so a hit's future stays small.
fn forward<S, B>(
    inner: &S,
    req: Request<B>,
    fwd: Fwd,
) -> BoxFuture<'static, Result<Response<CacheBody>, BoxError>>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    let inner = inner.clone();
    Box::pin(async move {
        let mut resp = inner.oneshot(req).await.map_err(Into::into)?;
        if resp.extensions().get::<CacheStatus>().is_none() {
            let status = CacheStatus::forwarded(fwd, resp.status());
            resp.extensions_mut().insert(status);
        }
        Ok(resp)
    })
}

impl<S> CacheLookup<S> {
    async fn handle<B>(self, mut req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send + 'static,
    {
        // One target: the key and the origin see the same normalised form.
        if req.uri().path() != "*" {
            match normalise_target(req.uri()) {
                Ok(target) => *req.uri_mut() = Uri::from(target),
                Err(err) => return Ok(bad_target(&err)),
            }
        }
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass_unsafe(req).await;
        }
        if self.config.bypasses(req.headers()) {
            return forward(&*self.inner, req, Fwd::Bypass).await;
        }
        let force_refresh = req.extensions().get::<ForceRefresh>().is_some();
        let head = method == Method::HEAD;
        let key = match req.extensions().get::<crate::context::RefreshKey>() {
            Some(refresh) => refresh.0.clone(),
            None => {
                let scope = self.key_fn.as_ref().and_then(|f| f(req.headers()));
                CacheKey::scoped(&method, req.uri(), scope.as_deref())
            }
        };
        if let Some(hot) = self.hot_keys.as_ref().filter(|_| !force_refresh) {
            hot.record(&key);
        }
        let now = now_ms();
        let (mut key, found) = read_selected(self.store.as_ref(), key, req.headers(), false).await;
        let found = found.filter(|e| !e.is_gone(now));

        // A marker applies to the variant it was written for only.
        if found
            .as_ref()
            .is_some_and(|e| e.is_hit_for_miss() && e.vary.matches(req.headers()))
        {
            // Known uncacheable: straight to the origin, the client's own
            // headers and all; a cacheable answer replaces the marker.
            let request_headers = Arc::new(req.headers().clone());
            req.extensions_mut().insert(Lookup {
                key,
                state: LookupState::Pass,
                entry: None,
                fwd: Fwd::Bypass,
                request_headers,
                arrived_ms: now,
            });
            let mut resp = forward(&*self.inner, req, Fwd::Bypass).await?;
            if let Some(status) = resp.extensions_mut().get_mut::<CacheStatus>() {
                status.detail.get_or_insert(Detail::HitForMiss);
            }
            return Ok(resp);
        }

        // The key is cached, but not the variant this request selects.
        let mut fwd = if found.is_none() && key.variant().is_some() {
            Fwd::VaryMiss
        } else {
            Fwd::UriMiss
        };
        let found = match found {
            Some(e) if !e.vary.matches(req.headers()) => {
                fwd = Fwd::VaryMiss;
                key = key.with_variant(Some(e.vary.variant_of(req.headers())));
                None
            }
            other => other,
        };
        let conditions = ClientConditions::take(req.headers_mut());
        let identity_only = !crate::coding::accepts_gzip(req.headers());
        let mut state = LookupState::Missing;
        let mut in_hand = None;
        if let Some(entry) = found {
            match entry.freshness(now) {
                Freshness::Fresh if force_refresh => {
                    state = LookupState::Refresh;
                    in_hand = Some(entry);
                }
                Freshness::Fresh if !entry.no_cache => {
                    let mut resp =
                        hit_response(&entry, now, head, CacheStatus::hit(entry.ttl_secs(now)));
                    let refresh_headers = refresh_headers(&entry.vary, req.headers());
                    resp.extensions_mut().insert(FreshHit {
                        key,
                        entry,
                        target: req.uri().clone(),
                        refresh_headers,
                    });
                    return Ok(answer(conditions, identity_only, resp));
                }
                // Stale, to be revalidated (`no-cache`), or only retained:
                // in hand for a conditional revalidation and the stale answers
                // the layers below may give.
                _ => {
                    fwd = Fwd::Stale;
                    state = LookupState::Stale;
                    in_hand = Some(entry);
                }
            }
        }
        if head {
            // A HEAD miss is forwarded as is and never fills the GET entry.
            return forward(&*self.inner, restore(req, conditions), fwd).await;
        }
        let request_headers = Arc::new(req.headers().clone());
        req.extensions_mut().insert(Lookup {
            key,
            state,
            entry: in_hand,
            fwd,
            request_headers,
            arrived_ms: now,
        });
        let resp = forward(&*self.inner, req, fwd).await?;
        Ok(answer(conditions, identity_only, resp))
    }

    /// Unsafe methods pass through; a success invalidates the target URI's
    /// entry, and those of `Location` and `Content-Location` when they name
    /// the same origin (RFC 9111 §4.4) — this also clears a cached 404 on create.
    async fn pass_unsafe<B>(self, req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send + 'static,
    {
        let invalidates = !matches!(*req.method(), Method::OPTIONS | Method::TRACE);
        let host = req.headers().get(http::header::HOST).cloned();
        let scope = self.key_fn.as_ref().and_then(|f| f(req.headers()));
        let mut keys = vec![CacheKey::scoped(&Method::GET, req.uri(), scope.as_deref())];
        let resp = forward(&*self.inner, req, Fwd::Method).await?;
        if !invalidates || !(resp.status().is_success() || resp.status().is_redirection()) {
            return Ok(resp);
        }
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let same_origin = resp
                .headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Uri>().ok())
                .filter(|uri| match uri.authority() {
                    None => true,
                    Some(a) => host
                        .as_ref()
                        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())),
                });
            if let Some(uri) = same_origin
                && let Ok(target) = normalise_target(&uri)
            {
                let uri = Uri::from(target);
                keys.push(CacheKey::scoped(&Method::GET, &uri, scope.as_deref()));
            }
        }
        for key in keys {
            if let Err(err) = self.store.delete(&key).await {
                record_error(self.store.as_ref(), "delete", &err);
            }
        }
        Ok(resp)
    }
}

/// Answer the client from the full representation by its own headers: its
/// coding (a gzip representation decompressed for a client that does not
/// accept gzip), then its preconditions and `Range`.
fn answer(
    conditions: Option<ClientConditions>,
    identity_only: bool,
    resp: Response<CacheBody>,
) -> Response<CacheBody> {
    let resp = if identity_only {
        crate::coding::decode_for_identity(resp)
    } else {
        resp
    };
    match conditions {
        Some(c) => c.apply(resp),
        None => resp,
    }
}

/// Put the client's conditional headers back (a request forwarded as is).
fn restore<B>(mut req: Request<B>, conditions: Option<ClientConditions>) -> Request<B> {
    if let Some(c) = conditions {
        c.restore(req.headers_mut());
    }
    req
}
