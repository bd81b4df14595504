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
use crate::context::{Lookup, LookupState, RefreshSkipped, Share, Sharing};
use crate::status::{CacheStatus, Detail};
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
pub struct SingleFlightLayer {
    max_flights: usize,
    enabled: bool,
}

impl Default for SingleFlightLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SingleFlightLayer {
    /// Coalesce up to 10,000 keys in flight at once.
    pub fn new() -> Self {
        Self {
            max_flights: 10_000,
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Most keys coalesced at once; requests for further keys go straight through.
    pub fn max_flights(mut self, n: usize) -> Self {
        self.max_flights = n;
        self
    }
}

impl<S> Layer<S> for SingleFlightLayer {
    type Service = SingleFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SingleFlight {
            inner,
            flights: Arc::default(),
            max_flights: if self.enabled { self.max_flights } else { 0 },
        }
    }
}

/// The leader's answer, buffered for its followers.
#[derive(Clone, Debug)]
struct SharedResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    cache_status: Option<CacheStatus>,
    sharing: Sharing,
}

/// How a flight ended, as its followers see it.
#[derive(Clone, Debug)]
enum FlightError {
    /// The response streams (too large to buffer): it cannot be shared.
    NotBuffered,
    /// A background refresh ended without an answer.
    Skipped,
    /// The rebuild failed (or panicked); the message is shared.
    Failed(Arc<str>),
}

type FlightResult = Result<Arc<SharedResponse>, FlightError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;
type Flights = Arc<Mutex<HashMap<String, Flight>>>;

/// Coalesces concurrent rebuilds of one key in one process (see the module docs).
#[derive(Clone)]
pub struct SingleFlight<S> {
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
    pub fn in_flight(&self) -> usize {
        self.flights.lock().expect("flights lock").len()
    }
}

crate::inner_access!(SingleFlight);

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
                    Err(FlightError::Failed(msg)) => return Err(msg.to_string().into()),
                    Err(FlightError::Skipped) if !background => {
                        return inner.oneshot(req).await.map_err(Into::into);
                    }
                    Err(FlightError::Skipped) => {
                        return Err(Box::new(RefreshSkipped::Elsewhere) as BoxError);
                    }
                    Err(FlightError::NotBuffered) => return pass(inner, req, &lookup).await,
                };
                match shared.sharing.decide(&lookup.request_headers) {
                    Share::Yes => Ok(to_response(&shared, true)),
                    Share::OtherVariant(vary) if may_rescope => {
                        req.extensions_mut().insert(lookup.for_variant(&vary));
                        self.coalesce(req, false).await
                    }
                    Share::OtherVariant(_) | Share::No => pass(inner, req, &lookup).await,
                }
            });
        }
        if flights.len() >= self.max_flights {
            drop(flights);
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }

        // Leader: run the rebuild detached from this request's future.
        let (stream_tx, stream_rx) = oneshot::channel::<Response<CacheBody>>();
        let guard = RemoveOnDrop {
            flights: self.flights.clone(),
            key: id.clone(),
        };
        let task = tokio::spawn(async move {
            let _guard = guard;
            match inner.oneshot(req).await.map_err(Into::into) {
                Ok(resp) => match buffered(resp) {
                    Ok(shared) => Ok(Arc::new(shared)),
                    Err(streaming) => {
                        let _ = stream_tx.send(*streaming);
                        Err(FlightError::NotBuffered)
                    }
                },
                Err(err) if RefreshSkipped::is(err.as_ref()) => Err(FlightError::Skipped),
                Err(err) => Err(FlightError::Failed(err.to_string().into())),
            }
        });
        let flight: Flight = async move {
            match task.await {
                Ok(result) => result,
                Err(join) => Err(FlightError::Failed(
                    format!("rebuild task failed: {join}").into(),
                )),
            }
        }
        .boxed()
        .shared();
        flights.insert(id, flight.clone());
        drop(flights);
        Box::pin(async move {
            match flight.await {
                Ok(shared) => Ok(to_response(&shared, false)),
                Err(FlightError::NotBuffered) => stream_rx
                    .await
                    .map_err(|_| BoxError::from("rebuild ended without a response")),
                Err(FlightError::Skipped) => Err(Box::new(RefreshSkipped::Elsewhere) as BoxError),
                Err(FlightError::Failed(msg)) => Err(msg.to_string().into()),
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

fn buffered(resp: Response<CacheBody>) -> Result<SharedResponse, Box<Response<CacheBody>>> {
    let Some(body) = resp.body().as_bytes() else {
        return Err(Box::new(resp));
    };
    Ok(SharedResponse {
        status: resp.status(),
        version: resp.version(),
        headers: resp.headers().clone(),
        body,
        cache_status: resp.extensions().get::<CacheStatus>().cloned(),
        sharing: Sharing::of(&resp),
    })
}

fn to_response(shared: &SharedResponse, follower: bool) -> Response<CacheBody> {
    let mut resp = Response::new(CacheBody::full(shared.body.clone()));
    *resp.status_mut() = shared.status;
    *resp.version_mut() = shared.version;
    *resp.headers_mut() = shared.headers.clone();
    let mut status = shared.cache_status.clone().unwrap_or_default();
    if follower {
        status.collapsed = true;
        status.stored = false;
        if shared.sharing == Sharing::Failure {
            status.detail = Some(Detail::RebuildFailed);
        }
    }
    resp.extensions_mut().insert(status);
    resp.extensions_mut().insert(shared.sharing.clone());
    resp
}
