//! Background refreshes, as [`StaleWhileRevalidate`](crate::swr::StaleWhileRevalidate)
//! and [`XFetch`](crate::xfetch::XFetch) start them: at most one per key per process,
//! a bounded number overall, and — on a shared store — one per key per fleet
//! (the refresh first claims the key's rebuild lock and gives up if another
//! instance holds it; the claim's lease then guards its write, and the lock
//! layer below does not take the lock again). An unclaimed refresh (in-process
//! store) writes with a ticket the fill draws, like any lock-less fill.

use crate::body::BoxError;
use crate::context::{HeldLease, RefreshSkipped};
use crate::key::CacheKey;
use crate::lease::{Acquire, LeaseGuard, LeaseOptions, run_held};
use crate::store::SharedStore;
use http::{HeaderMap, Request};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Service, ServiceExt};

/// Starts background refreshes (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Refresher {
    in_flight: Arc<Mutex<HashSet<String>>>,
    max_in_flight: usize,
    claim: Option<(SharedStore, Duration)>,
    lease: LeaseOptions,
    trigger: &'static str,
}

impl Refresher {
    pub(crate) fn new(trigger: &'static str) -> Self {
        Self {
            in_flight: Arc::default(),
            max_in_flight: 64,
            claim: None,
            lease: LeaseOptions::default(),
            trigger,
        }
    }

    pub(crate) fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Claim the key's lock in `store` (when it is shared) for `ttl` first.
    pub(crate) fn claim_through(mut self, store: SharedStore, ttl: Duration) -> Self {
        self.claim = Some((store, ttl));
        self
    }

    /// Renewal of the claimed lock and the refresh's deadline.
    pub(crate) fn lease(mut self, lease: LeaseOptions) -> Self {
        self.lease = lease;
        self
    }

    /// Refresh `key` through `inner` with `req`, unless one is running.
    pub(crate) fn spawn<S, B>(&self, inner: S, mut req: Request<B>, key: &CacheKey)
    where
        S: Service<Request<B>, Response = http::Response<crate::body::CacheBody>> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send + 'static,
    {
        let id = key.flight_id();
        {
            let mut in_flight = self.in_flight.lock().expect("refresh set lock");
            if in_flight.len() >= self.max_in_flight || !in_flight.insert(id.clone()) {
                return;
            }
        }
        let in_flight = self.in_flight.clone();
        let claim = self.claim.clone();
        let trigger = self.trigger;
        let lease = self.lease;
        let key = key.clone();
        tokio::spawn(async move {
            let _done = RemoveOnDrop(in_flight, id);
            let mut held = None;
            if let Some((store, ttl)) = claim.filter(|(s, _)| s.is_distributed()) {
                match LeaseGuard::acquire(&store, &key, ttl).await {
                    Acquire::Held(g) => {
                        req.extensions_mut().insert(HeldLease(g.lease().clone()));
                        held = Some((g, ttl));
                    }
                    // Another instance refreshes it, or the last refresh just failed.
                    Acquire::Contended(_) | Acquire::RecentFailure(_) => return,
                    Acquire::Failed => {}
                }
            }
            metrics::counter!("stampede_background_refreshes_total", "trigger" => trigger)
                .increment(1);
            let rebuild = async move { inner.oneshot(req).await.map_err(Into::into) };
            let result = match held {
                Some((guard, ttl)) => run_held(guard, lease, ttl, rebuild).await,
                // Unclaimed (an in-process store): the fill draws a ticket.
                None => lease
                    .within_deadline(None, rebuild)
                    .await
                    .unwrap_or_else(|| Ok(crate::serve::gateway_timeout())),
            };
            if let Err(err) = result
                && !RefreshSkipped::is(err.as_ref())
            {
                tracing::debug!(error = %err, trigger, "background refresh failed");
            }
        });
    }
}

struct RemoveOnDrop(Arc<Mutex<HashSet<String>>>, String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

/// The request a background refresh sends: a `GET` of the normalised
/// `target`, carrying only `headers` (those the entry varies on, see
/// [`refresh_headers`]), with `marker` (a [`Lookup`](crate::context::Lookup)
/// in the `Refresh` state, or [`ForceRefresh`](crate::context::ForceRefresh)).
pub(crate) fn refresh_request<B: Default, M: Clone + Send + Sync + 'static>(
    target: &http::Uri,
    version: http::Version,
    headers: HeaderMap,
    marker: M,
) -> Request<B> {
    let mut refresh = Request::new(B::default());
    *refresh.method_mut() = http::Method::GET;
    *refresh.uri_mut() = target.clone();
    *refresh.version_mut() = version;
    *refresh.headers_mut() = headers;
    refresh.extensions_mut().insert(marker);
    refresh
}

/// The headers a refresh carries: only those the stored variant varies on,
/// with the values of the request that triggered it — never another client's
/// `Cookie`, `Authorization` or anything else.
pub(crate) fn refresh_headers(vary: &crate::entry::VaryValues, from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, _) in &vary.0 {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            for v in from.get_all(&name) {
                out.append(name.clone(), v.clone());
            }
        }
    }
    out
}
