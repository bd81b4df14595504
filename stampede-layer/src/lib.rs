//! Tower middleware that protects an HTTP origin from cache stampedes.
//!
//! A hot key expires; every concurrent request misses at once and rebuilds
//! it. This crate bounds each herd with one [`tower::Layer`]. In stack order,
//! outermost first (the [`stack`] module says why this order):
//!
//! | layer | herd it bounds |
//! |---|---|
//! | [`XFetch`] (probabilistic early refresh of fresh hits) | the cliff: expiry under load |
//! | [`CacheLookup`] (the store read; answers fresh hits) | — |
//! | [`StaleWhileRevalidate`] (+ stale-if-error) | the wait: users blocked on the rebuild |
//! | [`SingleFlight`] | per-process: N concurrent misses in one instance |
//! | [`DistributedLock`] (+ fencing tokens) | per-fleet: one rebuild per instance |
//! | [`CacheFill`] (the fenced write; what waiters may share) | — |
//! | TTL jitter ([`CacheFillLayer::jitter`], applied by the fill) | multi-key: keys written together expire together |
//! | negative caching ([`CacheFillLayer::negative_ttl`], applied by the fill) | negative: miss storm on absent keys |
//! | [`OverloadGate`] | metastable overload: retries pin a saturated origin |
//!
//! The store is a [`CacheStore`]: [`MemoryStore`] (moka, in-process) or
//! `RedisStore` (fred, feature `redis`). [`StampedeLayer`] composes
//! everything in that order as one tower `Layer`. Coalescing never hands a
//! client a response a shared cache could not have served it from storage
//! (see [`policy`] and [`conditional`]).
//!
//! # Example
//!
//! The whole stack in a `ServiceBuilder`, over any tower service:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceExt};
//! use stampede_layer::{MemoryStore, Mitigations, StampedeLayer};
//!
//! # #[tokio::main] async fn main() -> Result<(), stampede_layer::BoxError> {
//! // Any tower service can be the origin; here, one that counts its calls.
//! let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let counter = calls.clone();
//! let origin = service_fn(move |_req: Request<Full<Bytes>>| {
//!     counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hello")))) }
//! });
//!
//! let svc = tower::ServiceBuilder::new()
//!     .layer(
//!         StampedeLayer::new(Arc::new(MemoryStore::default()))
//!             .mitigations(Mitigations::ALL)
//!             .ttl(Duration::from_secs(5)),
//!     )
//!     .service(origin);
//!
//! // Ten concurrent misses for one key: one origin call.
//! let reqs = (0..10).map(|_| svc.clone().oneshot(Request::get("/items/1").body(Full::default()).unwrap()));
//! for resp in futures_util::future::join_all(reqs).await {
//!     assert_eq!(resp?.status(), StatusCode::OK);
//! }
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
//!
//! // The next one is a hit, and says so (RFC 9211).
//! let resp = svc.oneshot(Request::get("/items/1").body(Full::default()).unwrap()).await?;
//! assert!(resp.headers()["cache-status"].to_str()?.contains("hit"));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// `get_ref`/`get_mut`/`into_inner` for a service whose inner service is
/// its `inner` field (the tower-http accessors).
macro_rules! inner_access {
    ($service:ident) => {
        impl<S> $service<S> {
            /// The inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// The inner service, consuming this one.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
pub(crate) use inner_access;

pub mod body;
pub mod cache_control;
pub mod coding;
pub mod conditional;
pub mod config;
pub mod context;
pub mod entry;
pub mod error;
pub mod fill;
pub mod fingerprint;
pub mod freshness;
pub mod hot_keys;
pub mod jitter;
pub mod key;
pub mod lease;
pub mod lock;
pub mod lookup;
pub mod negative;
pub mod overload;
pub mod policy;
mod refresh;
pub mod serve;
pub mod single_flight;
pub mod stack;
pub mod status;
pub mod store;
pub mod swr;
mod tee;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod xfetch;

pub use body::{BoxError, CacheBody};
pub use config::CacheConfig;
pub use context::{HeldLease, Lookup, LookupState, Sharing};
pub use entry::CachedResponse;
pub use fill::{CacheFill, CacheFillLayer};
pub use hot_keys::{HotKey, HotKeys};
pub use key::CacheKey;
pub use lease::LeaseOptions;
pub use lock::{DistributedLock, DistributedLockLayer};
pub use lookup::{CacheLookup, CacheLookupLayer};
pub use overload::{OverloadGate, OverloadGateLayer};
pub use policy::NotShareable;
pub use single_flight::{SingleFlight, SingleFlightLayer};
pub use stack::{Mitigations, Stampede, StampedeLayer, StampedeService};
pub use status::{CacheStatus, Detail, Fwd, Outcome};
pub use store::{
    CacheStore, FallbackStore, FencingToken, LockAttempt, LockLease, MemoryStore, NearCacheConfig,
    NearCacheStore, PurgeMode, PutOutcome, RebuildFailure, Refusal, SharedStore, StoreError,
    TagPurge,
};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder};
pub use swr::{StaleWhileRevalidate, StaleWhileRevalidateLayer};
pub use xfetch::{XFetch, XFetchLayer};

/// The crate README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The RFC 9211 `Cache-Status` header name.
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
