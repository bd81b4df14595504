//! [`FreshHitPath`]: a fresh hit answered before the layers, without waiting.
//!
//! Most requests of a hot key are fresh hits, and a fresh hit needs none of
//! the layers below the lookup. The stack still paid for them: each layer's
//! boxed future, a copy of the layer, the extension the lookup hands to
//! XFetch, an asynchronous store read. This path answers the plainest fresh
//! hit in the stack's `call` itself, synchronously, from a store that can
//! answer without waiting ([`CacheStore::get_now`](crate::store::CacheStore::get_now):
//! the in-process store, a near cache holding the entry), and hands every
//! other request to the layers unchanged.
//!
//! It answers exactly what [`CacheLookup`](crate::lookup::CacheLookup) would,
//! and only where that is a plain hit: a `GET` or `HEAD` whose target is
//! already in normal form, without credentials (unless they are cached),
//! conditional headers or `Range`; the entry found (through the key's variant
//! index, when it has one) is a stored response (no hit-for-miss marker),
//! fresh, not `no-cache`, of the variant the request selects, and not due
//! for an XFetch early refresh. Anything else — a miss, a stale entry, a
//! precondition — takes the layers. The answer carries the same headers,
//! `Cache-Status` (gzip decompressed for a client without it, as the lookup
//! does), metrics, hot-key count and [`Outcome`](crate::Outcome) as the
//! lookup's; only the lookup's `stampede.request` debug span is not opened.
//! `stack::tests::fresh_hit_path_answers_as_the_layers_do` sends each kind
//! of request both ways on one store and compares the answers.

use crate::body::CacheBody;
use crate::coding::{accepts_gzip, decode_for_identity, is_gzip};
use crate::conditional::has_conditions;
use crate::config::CacheConfig;
use crate::context::{ForceRefresh, RefreshKey};
use crate::entry::{Freshness, now_ms};
use crate::hot_keys::HotKeys;
use crate::key::{CacheKey, is_normal_target};
use crate::lookup::{KeyFn, finish_with};
use crate::serve::entry_response;
use crate::status::CacheStatus;
use crate::store::SharedStore;
use crate::telemetry::RequestMetrics;
use crate::xfetch::XFetchPolicy;
use http::{Method, Request, Response};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the fast path needs of the lookup and XFetch (see the module docs).
pub(crate) struct FreshHitPath {
    pub store: SharedStore,
    pub config: Arc<CacheConfig>,
    pub key_fn: Option<KeyFn>,
    pub hot_keys: Option<HotKeys>,
    /// The lookup's own (shared) request metrics.
    pub metrics: Arc<OnceLock<RequestMetrics>>,
    /// XFetch's policy when it is on: an entry due for its early refresh
    /// takes the layers (XFetch starts the refresh there).
    pub xfetch: Option<XFetchPolicy>,
}

impl FreshHitPath {
    /// The answer to `req` when it is a plain fresh hit that the store can
    /// give without waiting; `None`: the request takes the layers.
    pub(crate) fn answer<B>(&self, req: &Request<B>) -> Option<Response<CacheBody>> {
        let started = Instant::now();
        let method = req.method();
        let head = *method == Method::HEAD;
        if (*method != Method::GET && !head)
            || !req.uri().path_and_query().is_some_and(is_normal_target)
            || has_conditions(req.headers())
            || self.config.bypasses(req.headers())
            || req.extensions().get::<ForceRefresh>().is_some()
            || req.extensions().get::<RefreshKey>().is_some()
        {
            return None;
        }
        let scope = self.key_fn.as_ref().and_then(|f| f(req.headers()));
        let mut key = CacheKey::scoped(method, req.uri(), scope.as_deref());
        let mut entry = self.store.get_now(&key)??;
        if entry.is_variant_index() {
            // As `read_selected`: the variant this request selects.
            key = key.with_variant(Some(entry.vary.variant_of(req.headers())));
            entry = self.store.get_now(&key)??;
        }
        let now = now_ms();
        if entry.is_gone(now)
            || entry.is_hit_for_miss()
            || entry.is_variant_index()
            || entry.no_cache
            || entry.freshness(now) != Freshness::Fresh
            || !entry.vary.matches(req.headers())
            || self
                .xfetch
                .is_some_and(|p| p.should_refresh(&key, &entry, now))
        {
            return None;
        }
        if let Some(hot) = &self.hot_keys {
            hot.record(&key);
        }
        let status = CacheStatus::hit(entry.ttl_secs(now));
        let mut resp = entry_response(&entry, now, head);
        // As the lookup answers: gzip decompressed for a client without it.
        if is_gzip(resp.headers()) && !accepts_gzip(req.headers()) {
            resp = decode_for_identity(resp);
        }
        let (resp, _) = finish_with(resp, &status, &self.config, &self.metrics, started, false);
        Some(resp)
    }
}
