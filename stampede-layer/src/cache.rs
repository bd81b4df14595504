//! Cache-aside: [`CacheLookup`] (one store read per request; answers hits,
//! starts background refreshes) and [`CacheFill`] (buffers the origin's
//! response and writes it, fenced). Between the two sit the coordination
//! layers ([`SingleFlight`](crate::SingleFlight),
//! [`DistributedLock`](crate::DistributedLock)); they find the key and the
//! entry in hand in the [`Lookup`] request extension.

use crate::body::{BoxError, Buffered, CacheBody, buffer};
use crate::cache_control::ResponseDirectives;
use crate::entry::{CachedResponse, Freshness, now_ms};
use crate::hot_keys::HotKeys;
use crate::key::CacheKey;
use crate::status::{CacheStatus, Fwd};
use crate::store::{PutOutcome, SharedStore, get_or_miss, record_error};
use crate::swr::SwrPolicy;
use crate::xfetch::XFetchPolicy;
use futures_util::future::BoxFuture;
use http::header::{AGE, AUTHORIZATION, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

/// Settings shared by [`CacheLookup`] and [`CacheFill`].
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Cache name in `Cache-Status` (RFC 9211).
    pub name: Arc<str>,
    /// Fresh TTL when the origin gives none.
    pub ttl: Duration,
    /// Stale-while-revalidate window after the TTL (when the origin gives none).
    pub stale_ttl: Duration,
    /// Stale-if-error window after the TTL (when the origin gives none).
    pub stale_if_error: Duration,
    /// Largest body buffered (and so cached or shared); larger ones stream through.
    pub max_body_bytes: usize,
    /// Honour the origin's `Cache-Control` (`max-age`, `s-maxage`, `no-store`, …).
    pub honor_origin_cache_control: bool,
    /// Cache answers to requests carrying `Authorization` or `Cookie`.
    pub cache_credentialed: bool,
    /// Most background refreshes in flight at once per process.
    pub max_background_refreshes: usize,
    /// On a shared store, a background refresh first claims the key's lock
    /// for this long, so one instance of the fleet refreshes, not each.
    pub refresh_claim_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "stampede".into(),
            ttl: Duration::from_secs(5),
            stale_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            max_body_bytes: 1024 * 1024,
            honor_origin_cache_control: true,
            cache_credentialed: false,
            max_background_refreshes: 64,
            refresh_claim_ttl: Duration::from_secs(2),
        }
    }
}

/// Why a request reached the coordination layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupState {
    /// No usable entry.
    Missing,
    /// An entry past its SWR window (kept for stale-if-error and lock timeouts).
    Stale,
    /// A background refresh of a still-servable entry (SWR or XFetch).
    Refresh,
}

/// Request extension set by [`CacheLookup`] for the layers below it.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The derived key.
    pub key: CacheKey,
    /// Why we are rebuilding.
    pub state: LookupState,
    /// The entry in hand (stale or refreshing), if any.
    pub entry: Option<Arc<CachedResponse>>,
    /// Why the request was forwarded (RFC 9211).
    pub fwd: Fwd,
    /// The request's values of the headers entries may vary on: a re-read
    /// entry only counts if its `Vary` matches them.
    pub request_headers: Arc<HeaderMap>,
}

impl Lookup {
    /// `stored_at` of the entry in hand: a re-read entry newer than this was
    /// rebuilt by someone else meanwhile.
    pub fn seen_stored_at(&self) -> Option<u64> {
        self.entry.as_ref().map(|e| e.stored_at_ms)
    }

    /// Whether `entry` (just re-read) is a rebuild newer than what we saw.
    pub fn is_newer(&self, entry: &CachedResponse, now: u64) -> bool {
        entry.freshness(now) == Freshness::Fresh
            && self
                .seen_stored_at()
                .is_none_or(|seen| entry.stored_at_ms > seen)
            && vary_matches(entry, &self.request_headers)
    }
}

/// Response extension set by the layers below [`CacheFill`] to steer the write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FillDirectives {
    /// Multiply the TTL by this factor ([`TtlJitter`](crate::TtlJitter)).
    pub ttl_scale: Option<f64>,
    /// Cache this 404/410 for this long ([`NegativeCache`](crate::NegativeCache)).
    pub negative_ttl: Option<Duration>,
}

impl FillDirectives {
    /// The directives of `resp`, inserted (empty) if it has none yet.
    pub fn of<B>(resp: &mut Response<B>) -> &mut FillDirectives {
        if resp.extensions().get::<FillDirectives>().is_none() {
            resp.extensions_mut().insert(FillDirectives::default());
        }
        resp.extensions_mut()
            .get_mut::<FillDirectives>()
            .expect("just inserted")
    }
}

/// Build the response for a cached entry (`Age` set, no body for `HEAD`).
pub fn response_from_entry(
    entry: &CachedResponse,
    now: u64,
    head: bool,
    status: CacheStatus,
) -> Response<CacheBody> {
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::full(entry.body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.status_code();
    *resp.headers_mut() = entry.header_map();
    let age = now.saturating_sub(entry.stored_at_ms) / 1000;
    resp.headers_mut().insert(AGE, HeaderValue::from(age));
    resp.extensions_mut().insert(status);
    resp
}

/// A response from an entry someone else just rebuilt (a re-check inside the
/// flight, or a lock loser woken by the fill): a hit that shared a rebuild.
pub(crate) fn collapsed_hit(entry: &CachedResponse, detail: &'static str) -> Response<CacheBody> {
    let now = now_ms();
    let mut status = CacheStatus::hit(entry.ttl_secs(now)).with_detail(detail);
    status.collapsed = true;
    response_from_entry(entry, now, false, status)
}

fn vary_matches(entry: &CachedResponse, headers: &HeaderMap) -> bool {
    entry.vary.iter().all(|(name, want)| {
        let have = headers.get(name.as_str()).map(|v| v.as_bytes());
        have == want.as_deref()
    })
}

// ---------------------------------------------------------------- lookup ---

/// Layer for [`CacheLookup`].
#[derive(Clone)]
pub struct CacheLookupLayer {
    store: SharedStore,
    config: Arc<CacheConfig>,
    hot_keys: Option<HotKeys>,
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
    pub fn new(store: SharedStore, config: CacheConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            hot_keys: None,
        }
    }

    /// Count requests per key in `hot_keys` (the bounded hot-key report).
    pub fn hot_keys(mut self, hot_keys: HotKeys) -> Self {
        self.hot_keys = Some(hot_keys);
        self
    }
}

impl<S> Layer<S> for CacheLookupLayer {
    type Service = CacheLookup<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheLookup {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
            hot_keys: self.hot_keys.clone(),
            refreshing: Arc::default(),
        }
    }
}

/// Reads the cache once per request: answers fresh hits (and, with
/// [`StaleWhileRevalidate`](crate::StaleWhileRevalidate), stale ones) without
/// touching the inner service, starts background refreshes (SWR, XFetch),
/// serves stale on origin errors (stale-if-error), invalidates on unsafe
/// methods, and writes the RFC 9211 `Cache-Status` header.
#[derive(Clone)]
pub struct CacheLookup<S> {
    inner: S,
    store: SharedStore,
    config: Arc<CacheConfig>,
    hot_keys: Option<HotKeys>,
    refreshing: Arc<Mutex<HashSet<String>>>,
}

impl<S> CacheLookup<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for CacheLookup<S>
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
        // Readiness is awaited per call (`oneshot`), on a clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let name = this.config.name.clone();
            let mut resp = this.handle(req).await?;
            let status = resp
                .extensions_mut()
                .remove::<CacheStatus>()
                .unwrap_or_else(|| CacheStatus::forwarded(Fwd::Miss, resp.status()));
            let outcome = status.outcome(resp.status()).as_str();
            resp.headers_mut()
                .insert(crate::CACHE_STATUS, status.header_value(&name));
            metrics::counter!("stampede_requests_total", "outcome" => outcome).increment(1);
            metrics::histogram!("stampede_request_duration_seconds", "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            Ok(resp)
        })
    }
}

impl<S> CacheLookup<S> {
    async fn handle<B>(self, mut req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Default + Send + 'static,
    {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass_unsafe(req).await;
        }
        if !self.config.cache_credentialed
            && (req.headers().contains_key(AUTHORIZATION) || req.headers().contains_key(COOKIE))
        {
            let mut resp = self.inner.oneshot(req).await.map_err(Into::into)?;
            let status = CacheStatus::forwarded(Fwd::Bypass, resp.status());
            resp.extensions_mut().insert(status);
            return Ok(resp);
        }
        let head = method == Method::HEAD;
        let key = CacheKey::new(&method, req.uri());
        if let Some(hot) = &self.hot_keys {
            hot.record(&key);
        }
        let now = now_ms();
        let found = get_or_miss(self.store.as_ref(), &key).await;
        let mut fwd = Fwd::UriMiss;
        let found = found.filter(|e| {
            let ok = vary_matches(e, req.headers());
            if !ok {
                fwd = Fwd::VaryMiss;
            }
            ok
        });
        let swr = req.extensions().get::<SwrPolicy>().copied();
        let mut state = LookupState::Missing;
        let mut in_hand = None;
        if let Some(entry) = found {
            match entry.freshness(now) {
                Freshness::Fresh => {
                    if let Some(x) = req.extensions().get::<XFetchPolicy>()
                        && x.should_refresh(&entry, now)
                    {
                        self.spawn_refresh(&req, &key, &entry, "xfetch");
                    }
                    let ttl = entry.ttl_secs(now);
                    return Ok(response_from_entry(
                        &entry,
                        now,
                        head,
                        CacheStatus::hit(ttl),
                    ));
                }
                Freshness::Stale if swr.is_some() => {
                    self.spawn_refresh(&req, &key, &entry, "swr");
                    let ttl = entry.ttl_secs(now).min(-1);
                    let status = CacheStatus::hit(ttl).with_detail("swr");
                    return Ok(response_from_entry(&entry, now, head, status));
                }
                Freshness::Stale | Freshness::ErrorOnly => {
                    fwd = Fwd::Stale;
                    state = LookupState::Stale;
                    in_hand = Some(Arc::new(entry));
                }
                Freshness::Expired => fwd = Fwd::Miss,
            }
        }
        if head {
            // A HEAD miss is forwarded as is and never fills the GET entry.
            let mut resp = self.inner.oneshot(req).await.map_err(Into::into)?;
            let status = CacheStatus::forwarded(fwd, resp.status());
            resp.extensions_mut().insert(status);
            return Ok(resp);
        }
        let stale_if_error = swr
            .filter(|p| p.stale_if_error)
            .and(in_hand.clone())
            .filter(|e| now < e.error_until_ms.max(e.stale_until_ms));
        let request_headers = Arc::new(req.headers().clone());
        req.extensions_mut().insert(Lookup {
            key,
            state,
            entry: in_hand,
            fwd,
            request_headers,
        });
        let result = self.inner.oneshot(req).await.map_err(Into::into);
        match (result, stale_if_error) {
            (Ok(resp), Some(stale)) if resp.status().is_server_error() => {
                Ok(serve_stale_on_error(&stale))
            }
            (Err(err), Some(stale)) => {
                tracing::warn!(error = %err, "origin failed; serving stale (stale-if-error)");
                Ok(serve_stale_on_error(&stale))
            }
            (Ok(mut resp), _) => {
                if resp.extensions().get::<CacheStatus>().is_none() {
                    let status = CacheStatus::forwarded(fwd, resp.status());
                    resp.extensions_mut().insert(status);
                }
                Ok(resp)
            }
            (Err(err), None) => Err(err),
        }
    }

    /// Unsafe methods pass through; a success invalidates the target URI's
    /// entry (RFC 9111 §4.4) — this also clears a cached 404 on create.
    async fn pass_unsafe<B>(self, req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let invalidates = !matches!(*req.method(), Method::OPTIONS | Method::TRACE);
        let key = CacheKey::new(&Method::GET, req.uri());
        let mut resp = self.inner.oneshot(req).await.map_err(Into::into)?;
        if invalidates
            && (resp.status().is_success() || resp.status().is_redirection())
            && let Err(err) = self.store.delete(&key).await
        {
            record_error(self.store.as_ref(), "delete", &err);
        }
        let status = CacheStatus::forwarded(Fwd::Method, resp.status());
        resp.extensions_mut().insert(status);
        Ok(resp)
    }

    /// Refresh `key` in the background through the inner stack (single-flight,
    /// lock, fill). At most one per key per process, a bounded number overall,
    /// and — on a shared store — one per key per fleet (the refresh claims the
    /// key's lock first and gives up if another instance holds it).
    fn spawn_refresh<B>(
        &self,
        req: &Request<B>,
        key: &CacheKey,
        entry: &CachedResponse,
        trigger: &'static str,
    ) where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Default + Send + 'static,
    {
        {
            let mut refreshing = self.refreshing.lock().expect("refreshing lock");
            if refreshing.len() >= self.config.max_background_refreshes
                || !refreshing.insert(key.digest().to_owned())
            {
                return;
            }
        }
        let mut refresh = Request::new(B::default());
        *refresh.method_mut() = Method::GET;
        *refresh.uri_mut() = req.uri().clone();
        *refresh.version_mut() = req.version();
        *refresh.headers_mut() = req.headers().clone();
        refresh.extensions_mut().insert(Lookup {
            key: key.clone(),
            state: LookupState::Refresh,
            entry: Some(Arc::new(entry.clone())),
            fwd: Fwd::Stale,
            request_headers: Arc::new(req.headers().clone()),
        });
        let inner = self.inner.clone();
        let refreshing = self.refreshing.clone();
        let store = self.store.clone();
        let claim_ttl = self.config.refresh_claim_ttl;
        let key = key.clone();
        tokio::spawn(async move {
            // On a shared store, claim the refresh fleet-wide first: the
            // claim is the key's rebuild lock, so its fencing token guards the
            // write and the lock layer below does not take it again.
            let mut claim = None;
            if store.is_distributed() {
                match store.try_lock(&key, claim_ttl).await {
                    Ok(Some(lease)) => {
                        refresh
                            .extensions_mut()
                            .insert(crate::lock::FencingToken(lease.token));
                        claim = Some(lease);
                    }
                    Ok(None) => {
                        // Another instance is refreshing (or rebuilding) it.
                        refreshing
                            .lock()
                            .expect("refreshing lock")
                            .remove(key.digest());
                        return;
                    }
                    Err(err) => record_error(store.as_ref(), "lock", &err),
                }
            }
            metrics::counter!("stampede_background_refreshes_total", "trigger" => trigger)
                .increment(1);
            if let Err(err) = inner.oneshot(refresh).await.map_err(Into::into) {
                tracing::debug!(error = %err, trigger, "background refresh failed");
            }
            if let Some(lease) = claim
                && let Err(err) = store.unlock(&key, &lease).await
            {
                record_error(store.as_ref(), "lock", &err);
            }
            refreshing
                .lock()
                .expect("refreshing lock")
                .remove(key.digest());
        });
    }
}

fn serve_stale_on_error(entry: &CachedResponse) -> Response<CacheBody> {
    let now = now_ms();
    let status = CacheStatus::hit(entry.ttl_secs(now).min(-1)).with_detail("stale-if-error");
    response_from_entry(entry, now, false, status)
}

// ------------------------------------------------------------------ fill ---

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

/// Calls the origin for a [`Lookup`]ed request, buffers the answer and writes
/// it — conditional on the request's [`FencingToken`](crate::FencingToken).
/// Re-checks the store first: a rebuild that finished after our lookup makes
/// the origin call unnecessary (single-flight only dedups overlapping calls).
#[derive(Clone)]
pub struct CacheFill<S> {
    inner: S,
    store: SharedStore,
    config: Arc<CacheConfig>,
}

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
    async fn fill<B, ResBody>(self, req: Request<B>) -> Result<Response<CacheBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let Some(lookup) = req.extensions().get::<Lookup>().cloned() else {
            let resp = self.inner.oneshot(req).await.map_err(Into::into)?;
            return Ok(resp.map(CacheBody::from_body));
        };
        // Re-check inside the flight / lock.
        if let Some(entry) = get_or_miss(self.store.as_ref(), &lookup.key).await
            && lookup.is_newer(&entry, now_ms())
        {
            return Ok(collapsed_hit(&entry, "recheck"));
        }
        let fence = req
            .extensions()
            .get::<crate::lock::FencingToken>()
            .map_or(0, |t| t.0);
        let request_headers = req.headers().clone();
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
        let mut status = CacheStatus::forwarded(lookup.fwd, parts.status);
        if let Some(shed) = parts.extensions.remove::<CacheStatus>() {
            status = shed; // the overload gate's account
        }
        let policy = self.entry_policy(&parts, &directives);
        let bytes = match buffer(body, self.config.max_body_bytes).await? {
            Buffered::Complete(bytes) => bytes,
            Buffered::TooLarge(body) => {
                parts.extensions.insert(status);
                return Ok(Response::from_parts(parts, body));
            }
        };
        if let Some((ttl, stale, error)) = policy {
            let now = now_ms();
            let fresh_until_ms = now + ttl.as_millis() as u64;
            let entry = CachedResponse {
                status: parts.status.as_u16(),
                headers: CachedResponse::headers_from(&parts.headers),
                // A copy of exactly the body's size: the buffered `Bytes` may be a
                // slice of a much larger connection read buffer, which an
                // in-process entry would otherwise keep alive for its lifetime.
                body: bytes::Bytes::copy_from_slice(&bytes),
                stored_at_ms: now,
                fresh_until_ms,
                stale_until_ms: fresh_until_ms + stale.as_millis() as u64,
                error_until_ms: fresh_until_ms + error.as_millis() as u64,
                rebuild_ms: rebuild.as_millis().min(u32::MAX as u128) as u32,
                fence,
                vary: vary_values(&parts.headers, &request_headers),
            };
            match self.store.put(&lookup.key, &entry).await {
                Ok(PutOutcome::Written) => {
                    status.stored = true;
                    status.ttl = Some(entry.ttl_secs(now));
                }
                Ok(PutOutcome::Fenced { current }) => {
                    metrics::counter!("stampede_fencing_rejections_total").increment(1);
                    tracing::info!(key = %lookup.key, fence, current, "stale write rejected by fencing token");
                    status.detail = Some("fenced");
                }
                Err(err) => record_error(self.store.as_ref(), "put", &err),
            }
        }
        parts.extensions.insert(status);
        Ok(Response::from_parts(parts, CacheBody::full(bytes)))
    }

    /// `(ttl, stale window, stale-if-error window)` if the response may be
    /// stored, `None` if not (RFC 9111 §3 for a shared cache).
    fn entry_policy(
        &self,
        parts: &http::response::Parts,
        directives: &FillDirectives,
    ) -> Option<(Duration, Duration, Duration)> {
        let cc = ResponseDirectives::parse(&parts.headers);
        let honor = self.config.honor_origin_cache_control;
        if (honor && !cc.storable()) || parts.headers.contains_key(SET_COOKIE) {
            return None;
        }
        if parts
            .headers
            .get_all(VARY)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains('*')))
        {
            return None;
        }
        let base = match parts.status.as_u16() {
            200 | 203 | 204 | 300 | 301 | 308 => {
                if honor {
                    cc.freshness().unwrap_or(self.config.ttl)
                } else {
                    self.config.ttl
                }
            }
            404 | 410 => directives.negative_ttl?,
            _ => return None,
        };
        let ttl = base.mul_f64(directives.ttl_scale.unwrap_or(1.0).max(0.0));
        if ttl.is_zero() {
            return None;
        }
        if matches!(parts.status.as_u16(), 404 | 410) {
            // A negative entry lives exactly its negative TTL: no stale window.
            return Some((ttl, Duration::ZERO, Duration::ZERO));
        }
        let (stale, error) = if honor {
            (
                cc.stale_while_revalidate.unwrap_or(self.config.stale_ttl),
                cc.stale_if_error.unwrap_or(self.config.stale_if_error),
            )
        } else {
            (self.config.stale_ttl, self.config.stale_if_error)
        };
        Some((ttl, stale, error.max(stale)))
    }
}

fn vary_values(response: &HeaderMap, request: &HeaderMap) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for value in response.get_all(VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            if name.is_empty() || out.iter().any(|(n, _)| n == &name) {
                continue;
            }
            let have = request.get(name.as_str()).map(|v| v.as_bytes().to_vec());
            out.push((name, have));
        }
    }
    out
}

/// Shorthand: a 503 with `Retry-After`, as the overload gate answers.
pub(crate) fn service_unavailable(retry_after: Duration) -> Response<CacheBody> {
    let mut resp = Response::new(CacheBody::full("origin overloaded, retry later\n"));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
