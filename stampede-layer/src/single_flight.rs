//! Per-process coalescing: concurrent rebuilds of one key (and variant)
//! become one inner call.
//!
//! The first request for a key (the leader) runs the inner call in a spawned
//! task, so a leader whose client disconnects does not cancel the rebuild its
//! followers wait on. A follower is given the leader's buffered answer only
//! where a shared cache could have served it to that follower from storage —
//! the answer's [`Sharing`], decided by the fill with the same rules that
//! decide storage:
//!
//! * stored, and the follower's headers select the same variant: shared
//!   (`collapsed`);
//! * stored, but another variant (`Vary`): the follower coordinates again on
//!   its own variant (two variants are two flights);
//! * refused by the store's fence (a purge or a later write was ordered
//!   after the rebuild began; [`Sharing::Fenced`]): a follower may have
//!   joined after that purge, so every follower coordinates again — one new
//!   rebuild — instead of being given the superseded answer;
//! * not shareable (`private`, `Set-Cookie`, `no-store`, …) or too large to
//!   buffer: every follower sends its own request to the origin, concurrently
//!   and uncoordinated, and gets its own answer.
//!
//! If the leader's rebuild fails — an error, a panic, or a 5xx answer that
//! carries nothing client-specific ([`Sharing::Failure`]) — every waiter gets
//! the same outcome (as Go's `singleflight`): retrying N times against a
//! failing origin is the herd we are here to stop. A background refresh that was skipped (lock
//! held elsewhere, shed) is no answer for a client: a client request that
//! joined it makes its own call. A flight's map entry is removed when its
//! task ends, so the map holds only keys with a rebuild in flight, and at
//! most `max_flights` of them.

use crate::body::{BoxError, CacheBody};
use crate::context::{Lookup, LookupState, RebuildFailed, RefreshSkipped, Share, Sharing};
use crate::error::SharedError;
use crate::fill::TeeBody;
use crate::status::{CacheStatus, Detail};
use crate::tee::Tee;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

/// Layer for [`SingleFlight`].
#[derive(Clone, Debug)]
pub(crate) struct SingleFlightLayer {
    max_flights: usize,
    enabled: bool,
    /// One map of flights for every service this layer makes (axum calls
    /// `layer` once per route and method).
    flights: Flights,
}

impl Default for SingleFlightLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SingleFlightLayer {
    /// Coalesce up to 10,000 keys in flight at once.
    pub(crate) fn new() -> Self {
        Self {
            max_flights: 10_000,
            enabled: true,
            flights: Arc::default(),
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub(crate) fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Most keys coalesced at once; requests for further keys go straight through.
    #[cfg(test)]
    pub(crate) fn max_flights(mut self, n: usize) -> Self {
        self.max_flights = n;
        self
    }
}

impl<S> Layer<S> for SingleFlightLayer {
    type Service = SingleFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SingleFlight {
            inner,
            flights: self.flights.clone(),
            max_flights: if self.enabled { self.max_flights } else { 0 },
        }
    }
}

/// The leader's answer, for its followers.
#[derive(Clone, Debug)]
struct SharedResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: SharedBody,
    cache_status: Option<CacheStatus>,
    sharing: Sharing,
}

/// A body followers can be given: buffered whole, or being pumped from the
/// origin (each follower reads it from the first byte as it arrives).
#[derive(Clone, Debug)]
enum SharedBody {
    Full(Bytes),
    Streaming(Arc<Tee>),
}

/// How a flight ended, as its followers see it.
#[derive(Clone, Debug)]
enum FlightError {
    /// The response streams (too large to buffer): it cannot be shared.
    NotBuffered,
    /// A background refresh ended without an answer.
    Skipped,
    /// The rebuild failed (or panicked); the message is shared.
    Failed(SharedError),
}

type FlightResult = Result<Arc<SharedResponse>, FlightError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;
type Flights = Arc<Mutex<HashMap<String, Flight>>>;

/// Coalesces concurrent rebuilds of one key in one process (see the module docs).
#[derive(Clone)]
pub(crate) struct SingleFlight<S> {
    inner: S,
    flights: Flights,
    max_flights: usize,
}

impl<S: std::fmt::Debug> std::fmt::Debug for SingleFlight<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("inner", &self.inner)
            .field("in_flight", &self.in_flight())
            .field("max_flights", &self.max_flights)
            .finish()
    }
}

impl<S> SingleFlight<S> {
    /// Keys with a rebuild in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().expect("flights lock").len()
    }
}

/// Removes the flight from the map when the leader's task ends, however it ends.
struct RemoveOnDrop {
    flights: Flights,
    key: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Ok(mut f) = self.flights.lock() {
            f.remove(&self.key);
        }
    }
}

impl<S, B> Service<Request<B>> for SingleFlight<S>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(this.coalesce(req, true))
    }
}

impl<S> SingleFlight<S> {
    fn coalesce<B>(
        self,
        mut req: Request<B>,
        may_rescope: bool,
    ) -> BoxFuture<'static, Result<Response<CacheBody>, BoxError>>
    where
        S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send + 'static,
    {
        let inner = self.inner.clone();
        let Some(lookup) = req
            .extensions()
            .get::<Lookup>()
            .filter(|l| l.state != LookupState::Pass)
            .cloned()
        else {
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        };
        let id = lookup.key.flight_id();
        let background = lookup.state == LookupState::Refresh;

        let mut flights = self.flights.lock().expect("flights lock");
        if let Some(flight) = flights.get(&id).cloned() {
            drop(flights);
            return Box::pin(async move {
                let shared = match flight.await {
                    Ok(shared) => shared,
                    Err(FlightError::Failed(err)) => return Err(Box::new(err) as BoxError),
                    Err(FlightError::Skipped) if !background => {
                        return inner.oneshot(req).await.map_err(Into::into);
                    }
                    Err(FlightError::Skipped) => {
                        return Err(Box::new(RefreshSkipped::Elsewhere) as BoxError);
                    }
                    Err(FlightError::NotBuffered) => return pass(inner, req, &lookup).await,
                };
                match shared.sharing.decide(&lookup.request_headers) {
                    Share::Yes => match to_response(&shared) {
                        Some(resp) => Ok(resp),
                        // Joined too late: the start of a body past the
                        // stored size is gone.
                        None => pass(inner, req, &lookup).await,
                    },
                    Share::OtherVariant(vary) if may_rescope => {
                        req.extensions_mut().insert(lookup.for_variant(&vary));
                        self.coalesce(req, false).await
                    }
                    Share::Again if may_rescope => self.coalesce(req, false).await,
                    Share::OtherVariant(_) | Share::Again | Share::No => {
                        pass(inner, req, &lookup).await
                    }
                }
            });
        }
        if flights.len() >= self.max_flights {
            drop(flights);
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }

        // Leader: run the rebuild detached from this request's future. The
        // leader answers with the response itself; followers with what it
        // shares. A streamed body keeps the flight open until it settled
        // (read whole and stored, or not): requests that come meanwhile join
        // it instead of starting a second rebuild.
        let (own_tx, own_rx) = oneshot::channel::<Response<CacheBody>>();
        let guard = RemoveOnDrop {
            flights: self.flights.clone(),
            key: id.clone(),
        };
        let task = tokio::spawn(async move {
            match inner.oneshot(req).await.map_err(Into::into) {
                Ok(resp) => {
                    let shared = shareable(&resp);
                    let _ = own_tx.send(resp);
                    match shared {
                        Some(shared) => {
                            if let SharedBody::Streaming(tee) = &shared.body {
                                let tee = tee.clone();
                                tokio::spawn(async move {
                                    tee.settled().await;
                                    drop(guard);
                                });
                            }
                            Ok(Arc::new(shared))
                        }
                        None => Err(FlightError::NotBuffered),
                    }
                }
                Err(err) if RefreshSkipped::is(err.as_ref()) => Err(FlightError::Skipped),
                Err(err) => Err(FlightError::Failed(SharedError(Arc::new(err)))),
            }
        });
        let flight: Flight = async move {
            match task.await {
                Ok(result) => result,
                Err(join) => Err(FlightError::Failed(SharedError(Arc::new(
                    format!("rebuild task failed: {join}").into(),
                )))),
            }
        }
        .boxed()
        .shared();
        flights.insert(id, flight.clone());
        drop(flights);
        Box::pin(async move {
            match flight.await {
                Ok(_) | Err(FlightError::NotBuffered) => own_rx
                    .await
                    .map_err(|_| BoxError::from("rebuild ended without a response")),
                Err(FlightError::Skipped) => Err(Box::new(RefreshSkipped::Elsewhere) as BoxError),
                Err(FlightError::Failed(err)) => Err(Box::new(err) as BoxError),
            }
        })
    }
}

/// A follower that may not be given the leader's answer sends its own
/// request, straight to the origin (no lock to queue on: the key's answers
/// are not shareable, so there is nothing to wait for).
async fn pass<S, B>(
    inner: S,
    mut req: Request<B>,
    lookup: &Lookup,
) -> Result<Response<CacheBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<CacheBody>>,
    S::Error: Into<BoxError>,
{
    req.extensions_mut().insert(Lookup {
        state: LookupState::Pass,
        ..lookup.clone()
    });
    let mut resp = inner.oneshot(req).await.map_err(Into::into)?;
    if let Some(status) = resp.extensions_mut().get_mut::<CacheStatus>() {
        status.detail.get_or_insert(Detail::NotShareable);
    }
    Ok(resp)
}

/// What followers may be given of the leader's answer: its body buffered or
/// streaming; for a failed rebuild whose body cannot be shared, a generated
/// error. `None`: followers send their own requests.
fn shareable(resp: &Response<CacheBody>) -> Option<SharedResponse> {
    let body = match (resp.body().as_bytes(), resp.extensions().get::<TeeBody>()) {
        (Some(bytes), _) => SharedBody::Full(bytes),
        (None, Some(tee)) => SharedBody::Streaming(tee.0.clone()),
        (None, None) => {
            let failed = resp.extensions().get::<RebuildFailed>()?;
            return shareable(&crate::serve::rebuild_failed(&failed.0));
        }
    };
    Some(SharedResponse {
        status: resp.status(),
        version: resp.version(),
        headers: resp.headers().clone(),
        body,
        cache_status: resp.extensions().get::<CacheStatus>().cloned(),
        sharing: Sharing::of(resp),
    })
}

/// A follower's copy of the shared answer (`None`: the start of a streamed
/// body is gone).
fn to_response(shared: &SharedResponse) -> Option<Response<CacheBody>> {
    let body = match &shared.body {
        SharedBody::Full(bytes) => CacheBody::full(bytes.clone()),
        SharedBody::Streaming(tee) => tee.reader()?,
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = shared.status;
    *resp.version_mut() = shared.version;
    *resp.headers_mut() = shared.headers.clone();
    let mut status = shared.cache_status.clone().unwrap_or_default();
    status.collapsed = true;
    status.stored = false;
    if matches!(shared.sharing, Sharing::Failure | Sharing::Generated)
        && shared.status.is_server_error()
    {
        status.detail = Some(Detail::RebuildFailed);
    }
    resp.extensions_mut().insert(status);
    resp.extensions_mut().insert(shared.sharing.clone());
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::CacheKey;
    use crate::status::Fwd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A request as the lookup hands it on: a miss for `path`.
    fn miss(path: &str) -> Request<()> {
        let uri: http::Uri = path.parse().unwrap();
        let mut req = Request::get(uri.clone()).body(()).unwrap();
        req.extensions_mut().insert(Lookup {
            key: CacheKey::new(&http::Method::GET, &uri),
            state: LookupState::Missing,
            entry: None,
            fwd: Fwd::UriMiss,
            request_headers: Arc::default(),
            arrived_ms: crate::entry::now_ms(),
        });
        req
    }

    #[tokio::test]
    async fn flight_map_is_bounded() {
        let inflight = Arc::new(AtomicUsize::new(0));
        let seen = inflight.clone();
        let origin = tower::service_fn(move |_req: Request<()>| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Response::new(CacheBody::full("v")))
            }
        });
        let sf = SingleFlightLayer::new().max_flights(3).layer(origin);
        let reqs: Vec<_> = (0..10)
            .map(|i| tokio::spawn(sf.clone().oneshot(miss(&format!("/items/{i}")))))
            .collect();
        // Keys past the bound go straight through.
        tokio::time::timeout(Duration::from_secs(5), async {
            while inflight.load(Ordering::SeqCst) < 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every request reaches the origin");
        assert_eq!(sf.in_flight(), 3);
        for r in reqs {
            assert_eq!(r.await.unwrap().unwrap().status(), 200);
        }
        assert_eq!(sf.in_flight(), 0);
    }
}
