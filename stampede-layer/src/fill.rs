//! [`CacheFill`]: calls the origin for a looked-up request, buffers the
//! answer and writes it — fenced by the lease the rebuild holds (the lock's,
//! or a ticket drawn here before the origin is asked; see
//! [`fence`](crate::store::fence)) — and says whether the requests that
//! waited on this rebuild may share it ([`Sharing`]).
//!
//! The storage decision is `policy::StorageRules::decide`,
//! the one RFC 9111 §3 check: what it refuses is neither stored nor shared.
//! When the reason belongs to the resource (`private`, `Set-Cookie`,
//! `no-store`, `Vary: *`, a status this cache does not store, a body over the
//! buffer limit), the fill also writes a hit-for-miss marker, so requests for
//! the key go straight to the origin for a while instead of queueing behind a
//! rebuild whose answer they could not be given.

use crate::body::{BoxError, Buffered, CacheBody, buffer};
use crate::cache_control::SURROGATE_CAPABILITY;
use crate::config::CacheConfig;
use crate::context::{
    FillDirectives, HeldLease, Lookup, LookupState, RebuildFailed, Reread, Sharing,
};
use crate::entry::{CachedResponse, EntryKind, VaryValues, now_ms};
use crate::freshness::Timing;
use crate::jitter::ttl_scale;
use crate::lease::{LeaseGuard, LeaseOptions};
use crate::negative::negative_ttl;
use crate::policy::{Lifetimes, NotShareable};
use crate::serve::collapsed_hit;
use crate::status::{CacheStatus, Detail};
use crate::store::{
    LockLease, PutOutcome, RebuildFailure, SharedStore, read_selected, record_error,
};
use crate::tee::{End, Tee};
use futures_util::future::BoxFuture;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

/// Layer for [`CacheFill`].
#[derive(Clone)]
pub(crate) struct CacheFillLayer {
    store: SharedStore,
    config: Arc<CacheConfig>,
    tickets: Tickets,
}

/// How a fill without a lock draws and keeps its ticket, and steers its
/// writes beyond the HTTP rules (TTL jitter, negative caching).
#[derive(Clone, Copy, Debug)]
struct Tickets {
    ttl: Duration,
    lease: LeaseOptions,
    jitter: f64,
    negative_ttl: Duration,
}

impl std::fmt::Debug for CacheFillLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFillLayer")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl CacheFillLayer {
    /// Fill `store` with `config` (tickets of 2 s, renewed while the fill runs).
    pub(crate) fn new(store: SharedStore, config: CacheConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            tickets: Tickets {
                ttl: Duration::from_secs(2),
                lease: LeaseOptions::default(),
                jitter: 0.0,
                negative_ttl: Duration::ZERO,
            },
        }
    }

    /// The TTL and renewal of the ticket a fill without a lock draws (the
    /// lock's TTL and lease options, in a full stack).
    pub(crate) fn tickets(mut self, ttl: Duration, lease: LeaseOptions) -> Self {
        self.tickets.ttl = ttl;
        self.tickets.lease = lease;
        self
    }

    /// Scale every TTL written by a random factor in `[1-f, 1+f]` (0: off).
    pub(crate) fn jitter(mut self, fraction: f64) -> Self {
        self.tickets.jitter = fraction;
        self
    }

    /// Store 404/410 answers for `ttl` (zero: off).
    pub(crate) fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.tickets.negative_ttl = ttl;
        self
    }
}

impl<S> Layer<S> for CacheFillLayer {
    type Service = CacheFill<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheFill {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
            tickets: self.tickets,
        }
    }
}

/// Calls the origin and writes the answer (see the module docs). Re-checks
/// the store first: a rebuild that finished after our lookup makes the
/// origin call unnecessary (single-flight only dedups overlapping calls).
#[derive(Clone)]
pub(crate) struct CacheFill<S> {
    inner: S,
    store: SharedStore,
    config: Arc<CacheConfig>,
    tickets: Tickets,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheFill<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFill")
            .field("inner", &self.inner)
            .field("backend", &self.store.backend())
            .finish()
    }
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
        use tracing::Instrument;
        let this = self.clone();
        let span = match req.extensions().get::<Lookup>() {
            Some(lookup) => tracing::debug_span!(
                "stampede.rebuild",
                key = lookup.key.digest(),
                variant = lookup.key.variant(),
                state = ?lookup.state,
                lease = req
                    .extensions()
                    .get::<HeldLease>()
                    .map(|l| l.0.token.to_string()),
            ),
            None => tracing::Span::none(),
        };
        Box::pin(this.fill(req).instrument(span))
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
            && let (key, Some(entry)) = read_selected(
                self.store.as_ref(),
                lookup.key.clone(),
                &lookup.request_headers,
                true,
            )
            .await
        {
            lookup.key = key;
            match lookup.classify_reread(&entry, now_ms()) {
                Reread::Usable => return Ok(collapsed_hit(&entry, Detail::Recheck)),
                Reread::Uncacheable => lookup.state = LookupState::Pass,
                Reread::OtherVariant(_) | Reread::Nothing => {}
            }
        }
        // The lease the write holds, drawn before the origin is asked: the
        // lock's, or a ticket of our own (kept valid while the fill runs).
        let held = req.extensions_mut().remove::<HeldLease>();
        let ticket = match held {
            Some(_) => None,
            None => {
                let mut ticket =
                    LeaseGuard::ticket(&self.store, &lookup.key, self.tickets.ttl).await;
                if let Some(t) = ticket.as_mut().filter(|_| self.tickets.lease.renew) {
                    t.keep_alive(self.tickets.ttl);
                }
                ticket
            }
        };
        let lease = held
            .map(|h| h.0)
            .or_else(|| ticket.as_ref().map(|t| t.lease().clone()));
        let fence = lease.as_ref().map_or(0, |l| l.token.seq);
        let request_headers = req.headers().clone();
        // One representation for every client: ask for gzip whatever this
        // client accepts (see `coding`); the stored variant leaves
        // Accept-Encoding out, and the answer is decompressed on the way out
        // for clients that do not accept gzip. A pass-through keeps the
        // client's own header.
        if lookup.state != LookupState::Pass {
            req.headers_mut().insert(
                http::header::ACCEPT_ENCODING,
                crate::coding::FILL_ACCEPT_ENCODING,
            );
        }
        // A stale entry with validators is revalidated: the origin may answer
        // 304 and save the body transfer (RFC 9111 §4.3.1). These are the
        // cache's validators, never a client's (CacheLookup took those off).
        let revalidating = match (&lookup.entry, lookup.state) {
            (Some(entry), LookupState::Stale | LookupState::Refresh) => {
                let (etag, last_modified) = entry.validators();
                let h = req.headers_mut();
                if let Some(etag) = &etag {
                    h.insert(IF_NONE_MATCH, etag.clone());
                }
                if let Some(lm) = &last_modified {
                    h.insert(IF_MODIFIED_SINCE, lm.clone());
                }
                (etag.is_some() || last_modified.is_some()).then(|| entry.clone())
            }
            _ => None,
        };
        let (capability, device) = SURROGATE_CAPABILITY;
        req.headers_mut()
            .insert(capability, HeaderValue::from_static(device));
        let request_ms = now_ms();
        let started = Instant::now();
        crate::fingerprint::rebuild_started(&lookup);
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
        let timing = Timing {
            request_ms,
            response_ms: now_ms(),
        };
        metrics::counter!("stampede_origin_requests_total", "status" => resp.status().as_str().to_owned())
            .increment(1);
        metrics::histogram!("stampede_rebuild_duration_seconds").record(rebuild.as_secs_f64());

        let (mut parts, body) = resp.into_parts();
        let directives = FillDirectives {
            ttl_scale: (self.tickets.jitter > 0.0).then(|| ttl_scale(self.tickets.jitter)),
            negative_ttl: negative_ttl(parts.status, self.tickets.negative_ttl),
        };
        let marked = parts
            .extensions
            .remove::<crate::context::Generated>()
            .is_some();
        let generated = parts.extensions.remove::<Sharing>() == Some(Sharing::Generated) || marked;
        let mut status = parts
            .extensions
            .remove::<CacheStatus>() // the overload gate's account
            .unwrap_or_else(|| CacheStatus::forwarded(lookup.fwd, parts.status));
        let rules = self.config.storage_rules();
        if let Some(stale) = revalidating.filter(|_| parts.status == StatusCode::NOT_MODIFIED) {
            // Freshened: the stored body with the 304's headers (§4.3.4).
            let headers = freshened_headers(&stale, &parts.headers);
            let entry = match rules.decide(
                &request_headers,
                stale.status_code(),
                &headers,
                &directives,
                timing,
            ) {
                Ok(plan) => {
                    let entry = build_entry(
                        &stale,
                        &headers,
                        stale.body.clone(),
                        &plan,
                        timing,
                        rebuild,
                        fence,
                    );
                    write(&self.store, &lookup, &entry, lease.as_ref(), &mut status).await;
                    Some((entry, plan.shareable()))
                }
                Err(_) => None,
            };
            metrics::counter!("stampede_revalidated_total").increment(1);
            let (entry, shareable) = entry.unwrap_or_else(|| ((*stale).clone(), false));
            let mut resp = crate::serve::response_from_entry(&entry, now_ms(), false, status);
            if !shareable {
                resp.extensions_mut()
                    .insert(Sharing::NotShareable(NotShareable::NoLifetime));
            }
            return Ok(resp);
        }
        let decision = rules.decide(
            &request_headers,
            parts.status,
            &parts.headers,
            &directives,
            timing,
        );
        // A failed rebuild (a 5xx not stored; the proxy's own 502/504): its
        // outcome is left on the key for a moment, and shared with whoever
        // waited on it, so a failing origin is not asked again by each.
        let failed = parts.status.is_server_error() && decision.is_err();
        if failed {
            let reason = if generated { "upstream" } else { "status" };
            metrics::counter!("stampede_rebuild_failures_total", "reason" => reason).increment(1);
            parts.extensions.insert(RebuildFailed(RebuildFailure {
                status: parts.status.as_u16(),
                until_ms: now_ms() + failure_hold(&parts.headers).as_millis() as u64,
                lease: lease.as_ref().map(|l| l.token).unwrap_or_default(),
            }));
        }
        // Small bodies are buffered whole; a larger one (or one that is still
        // arriving past the threshold) streams to the flight as it arrives.
        let bytes = match buffer(body, STREAM_THRESHOLD).await? {
            Buffered::Complete(bytes) => bytes,
            Buffered::TooLarge(body) => {
                let vary = VaryValues::of(&parts.headers, &request_headers);
                let plan = match decision {
                    Ok(plan) => plan,
                    Err(reason) => {
                        // Not storable: the client's own stream, not shared.
                        let marker = Marker {
                            lease: lease.as_ref(),
                            status: parts.status,
                            vary,
                        };
                        uncacheable(&self.store, &self.config, &lookup, marker, reason).await;
                        parts.extensions.insert(status);
                        parts.extensions.insert(Sharing::NotShareable(reason));
                        return Ok(Response::from_parts(parts, body));
                    }
                };
                let sharing = if plan.shareable() {
                    Sharing::Stored(vary.clone())
                } else {
                    Sharing::NotShareable(NotShareable::NoLifetime)
                };
                let tee = Tee::new(self.config.max_object_size as u64, STREAM_WINDOW);
                let reader = tee.reader().expect("a new tee holds its start");
                let template = CachedResponse {
                    status: parts.status.as_u16(),
                    vary,
                    ..CachedResponse::hit_for_miss(0, Duration::ZERO, 0)
                };
                let pump = Pump {
                    store: self.store.clone(),
                    config: self.config.clone(),
                    lookup,
                    lease,
                    ticket,
                    template,
                    headers: parts.headers.clone(),
                    plan,
                    timing,
                    rebuild,
                    fence,
                    deadline: started + self.tickets.lease.fill_deadline,
                };
                tokio::spawn(pump.run(body, tee.clone()));
                parts.extensions.insert(status);
                parts.extensions.insert(sharing);
                parts.extensions.insert(TeeBody(tee));
                return Ok(Response::from_parts(parts, reader));
            }
        };
        let sharing = match decision {
            Ok(plan) => {
                let vary = VaryValues::of(&parts.headers, &request_headers);
                let template = CachedResponse {
                    status: parts.status.as_u16(),
                    vary,
                    ..CachedResponse::hit_for_miss(0, Duration::ZERO, 0)
                };
                // A copy of exactly the body's size: the buffered `Bytes` may be a
                // slice of a much larger connection read buffer, which an
                // in-process entry would otherwise keep alive for its lifetime.
                let body = bytes::Bytes::copy_from_slice(&bytes);
                let entry = build_entry(
                    &template,
                    &parts.headers,
                    body,
                    &plan,
                    timing,
                    rebuild,
                    fence,
                );
                write(&self.store, &lookup, &entry, lease.as_ref(), &mut status).await;
                if status.detail == Some(Detail::Fenced) {
                    Sharing::Fenced
                } else if plan.shareable() {
                    Sharing::Stored(entry.vary)
                } else {
                    Sharing::NotShareable(if plan.no_cache {
                        NotShareable::NoCache
                    } else {
                        NotShareable::NoLifetime
                    })
                }
            }
            Err(_) if generated => Sharing::Generated,
            Err(_) if failed && carries_nothing_personal(&parts.headers) => Sharing::Failure,
            Err(reason) => {
                let marker = Marker {
                    lease: lease.as_ref(),
                    status: parts.status,
                    vary: VaryValues::of(&parts.headers, &request_headers),
                };
                uncacheable(&self.store, &self.config, &lookup, marker, reason).await;
                Sharing::NotShareable(reason)
            }
        };
        parts.extensions.insert(status);
        parts.extensions.insert(sharing);
        Ok(Response::from_parts(parts, CacheBody::full(bytes)))
    }
}

/// Bodies up to this size are buffered whole before the answer goes on;
/// larger ones stream to the flight as they arrive.
const STREAM_THRESHOLD: usize = 64 * 1024;

/// How much of a body over the stored size a flight keeps for its readers.
const STREAM_WINDOW: u64 = 4 * 1024 * 1024;

/// Response extension: the body of this answer is being pumped into a
/// [`Tee`]; the requests of its flight read it from there, and the lock is
/// released once the pump settled (the body stored, or not).
#[derive(Clone, Debug)]
pub(crate) struct TeeBody(pub(crate) Arc<Tee>);

/// What a streamed fill does once the headers went on: read the body into
/// the tee, then store it (fenced) if it arrived whole within the size.
struct Pump {
    store: SharedStore,
    config: Arc<CacheConfig>,
    lookup: Lookup,
    lease: Option<LockLease>,
    /// The fill's own ticket, renewed until the write (none under a lock).
    ticket: Option<LeaseGuard>,
    template: CachedResponse,
    headers: HeaderMap,
    plan: Lifetimes,
    timing: Timing,
    rebuild: Duration,
    fence: u64,
    deadline: Instant,
}

impl Pump {
    async fn run<ResBody>(self, body: ResBody, tee: Arc<Tee>)
    where
        ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        // Under the lock of a shared store, the body is streamed into the
        // store too, for the waiters on other instances (read-while-write
        // across the fleet).
        if let Some(lease) = self.lease.as_ref().filter(|l| l.locked)
            && self.store.is_distributed()
            && let Some(reader) = tee.reader()
        {
            let head = CachedResponse {
                headers: stored_headers(&self.headers, &self.plan.withheld_fields),
                ..self.template.clone()
            };
            tokio::spawn(stream_out(
                self.store.clone(),
                self.lookup.key.clone(),
                lease.clone(),
                head,
                reader,
            ));
        }
        let mut body = std::pin::pin!(body);
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let end = loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    metrics::counter!("stampede_fill_deadline_exceeded_total").increment(1);
                    break End::Failed("the fill deadline passed".into());
                }
                Ok(None) => break End::Complete,
                Ok(Some(Err(err))) => {
                    let err: BoxError = err.into();
                    break End::Failed(err.to_string().into());
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        tee.push(data);
                    }
                }
            }
        };
        tee.finish(end.clone());
        let mut status = CacheStatus::default();
        if let Some(body) = tee.whole_body() {
            let entry = build_entry(
                &self.template,
                &self.headers,
                body,
                &self.plan,
                self.timing,
                self.rebuild,
                self.fence,
            );
            write(
                &self.store,
                &self.lookup,
                &entry,
                self.lease.as_ref(),
                &mut status,
            )
            .await;
            metrics::counter!("stampede_streamed_fills_total", "result" => "stored").increment(1);
        } else if end == End::Complete {
            // Over the stored size: the next requests go straight to the origin.
            let marker = Marker {
                lease: self.lease.as_ref(),
                status: self.template.status_code(),
                vary: self.template.vary.clone(),
            };
            let reason = NotShareable::TooLarge;
            uncacheable(&self.store, &self.config, &self.lookup, marker, reason).await;
            metrics::counter!("stampede_streamed_fills_total", "result" => "too-large")
                .increment(1);
        } else {
            metrics::counter!("stampede_streamed_fills_total", "result" => "failed").increment(1);
        }
        drop(self.ticket);
        tee.settle();
    }
}

/// How long a streamed chunk (and its stream) lives in the store past its
/// last append: its readers are at most this far behind.
const STREAM_TTL: Duration = Duration::from_secs(10);

/// Write the body `reader` yields into the store's stream for `key`, in
/// pieces of up to 256 KiB (what is there when the last write returns).
async fn stream_out(
    store: SharedStore,
    key: crate::key::CacheKey,
    lease: LockLease,
    head: CachedResponse,
    reader: CacheBody,
) {
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    let id = match store
        .stream_open(&key, &lease, head.encode().into(), STREAM_TTL)
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => return,
        Err(err) => return record_error(store.as_ref(), "stream", &err),
    };
    let mut reader = std::pin::pin!(reader);
    let mut index = 0u64;
    let complete = loop {
        let mut piece = bytes::BytesMut::new();
        let mut end = None;
        // The first frame waits; what follows at once joins it.
        let mut next = Some(reader.frame().await);
        while let Some(frame) = next.take() {
            match frame {
                None => end = Some(true),
                Some(Err(_)) => end = Some(false),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        piece.extend_from_slice(&data);
                    }
                    if piece.len() < 256 * 1024 {
                        next = reader.frame().now_or_never();
                    }
                }
            }
        }
        if !piece.is_empty() {
            if let Err(err) = store
                .stream_append(&key, &id, index, piece.freeze(), STREAM_TTL)
                .await
            {
                record_error(store.as_ref(), "stream", &err);
                break false;
            }
            index += 1;
        }
        if let Some(complete) = end {
            break complete;
        }
    };
    if let Err(err) = store.stream_end(&key, &id, complete).await {
        record_error(store.as_ref(), "stream", &err);
    }
}

/// Write `entry` fenced by `lease` and record the outcome in `status`
/// (no lease — the store could not draw one — no write).
async fn write(
    store: &SharedStore,
    lookup: &Lookup,
    entry: &CachedResponse,
    lease: Option<&LockLease>,
    status: &mut CacheStatus,
) {
    let Some(lease) = lease else {
        return;
    };
    match store.put(&lookup.key, entry, lease).await {
        Ok(PutOutcome::Written) => {
            status.stored = true;
            status.ttl = Some(entry.ttl_secs(now_ms()));
        }
        Ok(PutOutcome::Fenced(refusal)) => {
            metrics::counter!("stampede_fencing_rejections_total", "reason" => refusal.as_str())
                .increment(1);
            tracing::info!(
                key = lookup.key.digest(),
                lease = %lease.token,
                reason = refusal.as_str(),
                "write refused by the key's fence"
            );
            status.detail = Some(Detail::Fenced);
        }
        Err(err) => record_error(store.as_ref(), "put", &err),
    }
}

/// A stored entry from `like` (status, vary) with `headers`, `body` and the
/// deadlines `plan` gives.
fn build_entry(
    like: &CachedResponse,
    headers: &HeaderMap,
    body: bytes::Bytes,
    plan: &Lifetimes,
    timing: Timing,
    rebuild: Duration,
    fence: u64,
) -> CachedResponse {
    let stored_at_ms = timing.response_ms;
    let fresh_until_ms = stored_at_ms + plan.remaining().as_millis() as u64;
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128 / 4) as u64;
    CachedResponse {
        status: like.status,
        headers: stored_headers(headers, &plan.withheld_fields),
        body,
        stored_at_ms,
        fresh_until_ms,
        stale_until_ms: fresh_until_ms + ms(plan.stale),
        error_until_ms: fresh_until_ms + ms(plan.error),
        retain_until_ms: fresh_until_ms + ms(plan.retain.max(plan.error)),
        rebuild_ms: rebuild.as_millis().min(u32::MAX as u128) as u32,
        fence,
        vary: like.vary.clone(),
        kind: EntryKind::Response,
        initial_age_ms: plan.initial_age.map_or(u64::MAX / 4, ms),
        must_revalidate: plan.must_revalidate,
        no_cache: plan.no_cache,
        head: Default::default(),
    }
}

/// Header fields never stored (RFC 9111 §3.1): hop-by-hop fields and those
/// `Connection` names, the proxy-specific ones, and what the origin withheld
/// (`no-cache="…"`, `private="…"`).
const NOT_STORED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn stored_headers(headers: &HeaderMap, withheld: &[String]) -> Vec<(String, Vec<u8>)> {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !NOT_STORED.contains(&n)
                && !named.iter().any(|m| m == n)
                && !withheld.iter().any(|w| w == n)
        })
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Header fields a 304 does not update (RFC 9111 §3.2): the stored body's
/// own metadata, and the validator the 304 was matched by.
const NOT_UPDATED_BY_304: [&str; 5] = [
    "content-length",
    "content-encoding",
    "content-md5",
    "content-range",
    "etag",
];

/// The stored headers updated with a 304's (RFC 9111 §3.2): each field the
/// 304 carries replaces the stored one, but for the body's own metadata.
pub(crate) fn freshened_headers(stored: &CachedResponse, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.header_map();
    let mut replaced: Vec<&http::HeaderName> = Vec::new();
    for (name, value) in not_modified {
        let n = name.as_str();
        if NOT_UPDATED_BY_304.contains(&n) || NOT_STORED.contains(&n) {
            continue;
        }
        if !replaced.contains(&name) {
            headers.remove(name);
            replaced.push(name);
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// How long a failed rebuild's outcome is answered instead of a new
/// rebuild: the origin's `Retry-After` (seconds or a date), at most 30 s;
/// without one, 1 s — a transient error must not stick.
fn failure_hold(headers: &HeaderMap) -> Duration {
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| match v.trim().parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => httpdate::parse_http_date(v.trim())
                .ok()
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok()),
        });
    retry_after
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Whether an error answer carries nothing that belongs to one client: it
/// sets no cookie and is not `private`.
fn carries_nothing_personal(headers: &HeaderMap) -> bool {
    !headers.contains_key(http::header::SET_COOKIE)
        && !headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().to_ascii_lowercase().starts_with("private"))
}

/// What a hit-for-miss marker is written with.
struct Marker<'a> {
    lease: Option<&'a LockLease>,
    status: StatusCode,
    /// The answer's `Vary` with this request's values: the marker applies to
    /// the requests that select the same variant only.
    vary: VaryValues,
}

/// Count an answer that may not be stored; mark the key hit-for-miss when
/// the reason belongs to the resource. Never for an error status (a 4xx or
/// 5xx answers this request, not the resource: one client's junk header must
/// not switch caching off for everyone), never over a stored response (it
/// is replaced by the next cacheable answer, or expires).
async fn uncacheable(
    store: &SharedStore,
    config: &CacheConfig,
    lookup: &Lookup,
    marker: Marker<'_>,
    reason: NotShareable,
) {
    metrics::counter!("stampede_uncacheable_total", "reason" => reason.as_str()).increment(1);
    let ttl = config.hit_for_miss_ttl;
    let Some(lease) = marker.lease else {
        return;
    };
    if lookup.state == LookupState::Pass
        || ttl.is_zero()
        || !reason.marks_hit_for_miss()
        || marker.status.as_u16() >= 400
    {
        return;
    }
    let now = now_ms();
    let request = &lookup.request_headers;
    if read_selected(store.as_ref(), lookup.key.clone(), request, true)
        .await
        .1
        .is_some_and(|e| !e.is_hit_for_miss() && !e.is_gone(now))
    {
        return;
    }
    let entry = CachedResponse {
        vary: marker.vary,
        ..CachedResponse::hit_for_miss(now, ttl, lease.token.seq)
    };
    match store.put(&lookup.key, &entry, lease).await {
        Ok(PutOutcome::Written) => {
            tracing::debug!(
                key = lookup.key.digest(),
                reason = reason.as_str(),
                "key marked hit-for-miss"
            );
        }
        Ok(PutOutcome::Fenced(_)) => {}
        Err(err) => record_error(store.as_ref(), "put", &err),
    }
}
