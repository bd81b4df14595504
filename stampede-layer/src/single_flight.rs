//! Per-process coalescing: concurrent rebuilds of one key become one inner call.
//!
//! The first request for a key (the leader) runs the inner call in a spawned
//! task, so a leader whose client disconnects does not cancel the rebuild its
//! followers wait on. Followers get a copy of the leader's buffered response,
//! marked `collapsed`. If the leader's call fails or panics, every waiter gets
//! the same error (as Go's `singleflight`): retrying N times against a failing
//! origin is the herd we are here to stop. A response too large to buffer
//! cannot be shared: the leader streams it, followers make their own call.
//! Neither can the non-answer of a background refresh (SWR, XFetch) that
//! found the lock held elsewhere or was shed by the overload gate: a client
//! request that joined such a flight makes its own call (through the lock and
//! the gate, which bound it) instead of answering its client with the
//! refresh's empty 204 or background-only 503.
//! A flight's map entry is removed when its task ends, so the map holds only
//! keys with a rebuild in flight, and at most `max_flights` of them.

use crate::body::{BoxError, CacheBody};
use crate::cache::{Lookup, LookupState};
use crate::status::CacheStatus;
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
        }
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
            max_flights: self.max_flights,
        }
    }
}

#[derive(Clone, Debug)]
struct SharedResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    cache_status: Option<CacheStatus>,
    /// The leader was a background refresh ([`LookupState::Refresh`]).
    background: bool,
}

impl SharedResponse {
    /// A background refresh's non-answer (lock held elsewhere, or shed as
    /// background work): no answer for a client request.
    fn is_background_non_answer(&self) -> bool {
        self.background
            && matches!(
                self.cache_status.as_ref().and_then(|s| s.detail),
                Some("refresh-elsewhere" | "shed")
            )
    }
}

#[derive(Clone, Debug)]
enum FlightError {
    /// The response streams: it cannot be shared.
    NotShareable,
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

impl<S> SingleFlight<S> {
    /// Keys with a rebuild in flight now.
    pub fn in_flight(&self) -> usize {
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
        let inner = self.inner.clone();
        let Some((key, background)) = req
            .extensions()
            .get::<Lookup>()
            .map(|l| (l.key.digest().to_owned(), l.state == LookupState::Refresh))
        else {
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        };

        let mut flights = self.flights.lock().expect("flights lock");
        if let Some(flight) = flights.get(&key).cloned() {
            drop(flights);
            return Box::pin(async move {
                match flight.await {
                    Ok(shared) if shared.is_background_non_answer() && !background => {
                        inner.oneshot(req).await.map_err(Into::into)
                    }
                    Ok(shared) => Ok(to_response(&shared, true)),
                    Err(FlightError::NotShareable) => inner.oneshot(req).await.map_err(Into::into),
                    Err(FlightError::Failed(msg)) => Err(msg.to_string().into()),
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
            key: key.clone(),
        };
        let task = tokio::spawn(async move {
            let _guard = guard;
            match inner.oneshot(req).await.map_err(Into::into) {
                Ok(resp) => match share(resp, background) {
                    Ok(shared) => Ok(Arc::new(shared)),
                    Err(streaming) => {
                        let _ = stream_tx.send(*streaming);
                        Err(FlightError::NotShareable)
                    }
                },
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
        flights.insert(key, flight.clone());
        drop(flights);
        Box::pin(async move {
            match flight.await {
                Ok(shared) => Ok(to_response(&shared, false)),
                Err(FlightError::NotShareable) => stream_rx
                    .await
                    .map_err(|_| BoxError::from("rebuild ended without a response")),
                Err(FlightError::Failed(msg)) => Err(msg.to_string().into()),
            }
        })
    }
}

fn share(
    resp: Response<CacheBody>,
    background: bool,
) -> Result<SharedResponse, Box<Response<CacheBody>>> {
    let Some(body) = resp.body().as_bytes() else {
        return Err(Box::new(resp));
    };
    Ok(SharedResponse {
        status: resp.status(),
        version: resp.version(),
        headers: resp.headers().clone(),
        body,
        cache_status: resp.extensions().get::<CacheStatus>().cloned(),
        background,
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
    }
    resp.extensions_mut().insert(status);
    resp
}
