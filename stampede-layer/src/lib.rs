//! Tower middleware that protects an HTTP origin from cache stampedes.
//!
//! A hot key expires; every concurrent request misses at once and rebuilds
//! it. [`StampedeLayer`] is one [`tower::Layer`] — a shared HTTP cache (RFC
//! 9111, RFC 5861 stale-while-revalidate / stale-if-error, RFC 9211
//! `Cache-Status`) whose rebuilds are coordinated, one mitigation per herd.
//! Each is a field of [`Mitigations`] and can be switched on and off; in
//! stack order, outermost first:
//!
//! | mitigation | herd it bounds | knobs |
//! |---|---|---|
//! | `xfetch`: probabilistic early refresh of fresh hits | the cliff: expiry under load | [`xfetch_beta`](StampedeLayer::xfetch_beta) |
//! | (the store read; answers fresh hits) | — | [`ttl`](StampedeLayer::ttl), [`cache_config`](StampedeLayer::cache_config), [`key_fn`](StampedeLayer::key_fn) |
//! | `swr`: stale-while-revalidate, stale-if-error | the wait: users blocked on the rebuild | [`stale_ttl`](StampedeLayer::stale_ttl), [`max_background_refreshes`](StampedeLayer::max_background_refreshes) |
//! | `single-flight` | per process: N concurrent misses in one instance | — |
//! | `lock`: a rebuild lock in the store, with fencing tokens | per fleet: one rebuild per instance | [`lock_ttl`](StampedeLayer::lock_ttl), [`lock_wait`](StampedeLayer::lock_wait), [`lease`](StampedeLayer::lease) |
//! | (the fenced write; what waiting requests may share) | — | |
//! | `jitter`: TTL jitter, applied by the write | multi-key: keys written together expire together | [`jitter`](StampedeLayer::jitter) |
//! | `negative`: 404/410 cached briefly, by the write | miss storms on absent keys | [`negative_ttl`](StampedeLayer::negative_ttl) |
//! | `overload-gate`: `503` + `Retry-After` past the origin budget | metastable overload: retries pin a saturated origin | [`overload_budget`](StampedeLayer::overload_budget) |
//!
//! Why this order: early refresh acts on fresh hits, which the store read
//! answers, so it sits outside it; stale-while-revalidate acts on the stale
//! entry the read found, before the request reaches the origin-bound
//! coordination; the write sits inside the lock (written after the lock was
//! released, a waiter could find nothing and rebuild again); the gate sits
//! innermost, where it sees exactly the origin-bound work (a hit is never
//! shed) and a stale copy in hand turns its `503` into a stale answer. The
//! pieces are composed by [`StampedeLayer`] only: none of them is meaningful
//! alone, so none is public.
//!
//! State that must be global is made once per [`StampedeLayer`] and shared by
//! every service it makes (and by its clones): the origin budget, the map of
//! flights, the background refreshes. axum's `Router::layer` calls `layer`
//! once per route and method; they all draw on one budget.
//!
//! Coalescing never hands a client a response a shared cache could not have
//! served it from storage (not `private`, no `Set-Cookie`, same `Vary`
//! variant, a full representation); each client is answered by its own
//! validators and `Range`.
//!
//! # The public surface
//!
//! * The layer and its service: [`StampedeLayer`] (builder methods for every
//!   knob), [`Stampede`] (what it makes; its future, [`StampedeFuture`], is
//!   ready at once for a plain fresh hit), [`StampedeService`] (the same,
//!   boxed, from [`StampedeLayer::service`]), [`Mitigations`],
//!   [`CacheConfig`], [`LeaseOptions`].
//! * Answers: [`CacheBody`] (the response body), [`Outcome`] (a response
//!   extension: how the request was answered), [`CACHE_STATUS`] (the
//!   `Cache-Status` header), [`OriginFailure`] and [`Error`], [`Generated`]
//!   (a marker an origin puts on answers it made itself).
//! * Stores: the [`CacheStore`] trait, [`MemoryStore`], `RedisStore`
//!   (feature `redis`), [`NearCacheStore`] with [`NearCacheConfig`],
//!   [`FallbackStore`], [`SharedStore`], [`StoreError`]. What a custom store
//!   implements against — entries, keys, leases, fencing tokens, tag purges —
//!   is in the [`store`] module; the contract tests a custom store can run
//!   are in `testing` (feature `test-util`).
//! * Telemetry: [`telemetry`] (metric registration, the hot-key report
//!   [`HotKeys`]).
//!
//! # Errors
//!
//! The service is infallible (`Error = Infallible`), so it goes into axum's
//! `Router::layer` as is. What the client gets instead of an error:
//!
//! * The origin service fails (returns an error, panics during a rebuild, or
//!   the rebuild passes the fill deadline) and no stale copy may stand in
//!   (stale-if-error comes first): `502 Bad Gateway`, or `504 Gateway
//!   Timeout` when the failure was a timeout, with `Retry-After: 1`. The
//!   mapping is yours to change with [`StampedeLayer::error_status`]. The
//!   error itself is on the response as an [`OriginFailure`] extension, its
//!   source chain intact. Requests that waited on the failed rebuild get the
//!   same answer (the origin is not asked again by each of them).
//! * The origin budget is spent (the overload gate): `503 Service
//!   Unavailable` with `Retry-After`, or the stale copy when there is one.
//! * The origin's own answers, `5xx` included, are passed on as they are (a
//!   `5xx` is never stored; stale-if-error may answer instead).
//! * The store fails: never an error for the client — a failed read is a
//!   miss, a failed write is not cached.
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceExt};
//! use stampede_layer::{BoxError, MemoryStore, OriginFailure, StampedeLayer};
//!
//! # #[tokio::main] async fn main() -> Result<(), BoxError> {
//! let origin = service_fn(|_req: Request<String>| async {
//!     Err::<Response<String>, BoxError>("connection refused".into())
//! });
//! let svc = StampedeLayer::new(Arc::new(MemoryStore::default())).service(origin);
//! let resp = svc.oneshot(Request::get("/items/1").body(String::new())?).await?;
//! assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
//! let failure = resp.extensions().get::<OriginFailure>().expect("the error");
//! assert!(failure.0.to_string().contains("connection refused"));
//! # Ok(()) }
//! ```
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
//!
//! The crate README has an axum `Router::layer` example and a plain hyper
//! one.

#![warn(missing_docs)]

mod body;
mod cache_control;
mod coding;
mod conditional;
mod config;
mod context;
mod entry;
mod error;
mod fill;
mod fingerprint;
mod fresh_hit;
mod freshness;
mod hot_keys;
mod jitter;
mod key;
mod lease;
mod lock;
mod lookup;
mod negative;
mod overload;
mod policy;
mod refresh;
mod serve;
mod single_flight;
mod stack;
mod status;
pub mod store;
mod swr;
mod tee;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
mod xfetch;

pub use body::{BoxError, CacheBody};
pub use config::CacheConfig;
pub use context::Generated;
pub use error::{Error, OriginFailure};
pub use hot_keys::HotKeys;
pub use lease::LeaseOptions;
pub use stack::{Mitigations, Stampede, StampedeFuture, StampedeLayer, StampedeService};
pub use status::Outcome;
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{
    CacheStore, FallbackStore, MemoryStore, NearCacheConfig, NearCacheStore, SharedStore,
    StoreError,
};

/// The crate README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The RFC 9211 `Cache-Status` header name.
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
