//! Settings shared by the lookup, the fill and the layers that serve from
//! storage.

use crate::policy::StorageRules;
use std::sync::Arc;
use std::time::Duration;

/// Cache settings. Start from [`Default`] and set the fields you need (the
/// struct is `#[non_exhaustive]`: settings may be added):
///
/// ```
/// use std::time::Duration;
/// let mut config = stampede_layer::CacheConfig::default();
/// config.ttl = Duration::from_secs(30);
/// config.credential_headers = vec![http::HeaderName::from_static("x-api-key")];
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Cache name in `Cache-Status` (RFC 9211).
    pub name: Arc<str>,
    /// Fresh TTL when the origin gives none.
    pub ttl: Duration,
    /// Stale-while-revalidate window after the TTL (when the origin gives none).
    pub stale_ttl: Duration,
    /// Stale-if-error window after the TTL (when the origin gives none).
    pub stale_if_error: Duration,
    /// Largest body stored (and so cached, and shared with requests that
    /// join its flight late). A body streams to the requests of its flight as
    /// it arrives whatever its size; past this size it is not stored, the key
    /// is marked hit-for-miss, and the flight keeps only a window of it.
    pub max_object_size: usize,
    /// Honour the origin's `Cache-Control` (`max-age`, `s-maxage`, `no-store`, …).
    pub honor_origin_cache_control: bool,
    /// Cache answers to requests carrying `Authorization` or `Cookie` (an
    /// `Authorization` answer is still stored only when it says `public` or
    /// `s-maxage`, RFC 9111 §3.5).
    pub cache_credentialed: bool,
    /// How long a key whose answer could not be shared goes straight to the
    /// origin, uncoordinated (hit-for-miss; zero: never marked).
    pub hit_for_miss_ttl: Duration,
    /// Keep entries this long past their freshness (and never less than their
    /// stale windows), so a stale entry can still be revalidated with a
    /// conditional request (a 304 saves the body transfer).
    pub retain_stale: Duration,
    /// Heuristic freshness (10 % of the time since `Last-Modified`, at most a
    /// day) for responses without explicit freshness (RFC 9111 §4.2.2).
    pub heuristic_freshness: bool,
    /// Request headers that carry a credential besides `Authorization` and
    /// `Cookie` (an `X-Api-Key`): a request carrying one bypasses the cache
    /// as those do (unless [`cache_credentialed`](Self::cache_credentialed)).
    pub credential_headers: Vec<http::HeaderName>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "stampede".into(),
            ttl: Duration::from_secs(5),
            stale_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            max_object_size: Self::DEFAULT_MAX_OBJECT_SIZE,
            honor_origin_cache_control: true,
            cache_credentialed: false,
            hit_for_miss_ttl: Duration::from_secs(120),
            retain_stale: Duration::from_secs(300),
            heuristic_freshness: false,
            credential_headers: Vec::new(),
        }
    }
}

impl CacheConfig {
    /// Whether a request with `headers` bypasses the cache: it carries a
    /// credential (`Authorization`, `Cookie`, one of
    /// [`credential_headers`](Self::credential_headers)) and credentialed
    /// requests are not cached.
    pub(crate) fn bypasses(&self, headers: &http::HeaderMap) -> bool {
        // One pass over the request's names (see `has_conditions`).
        !self.cache_credentialed
            && headers.keys().any(|name| {
                name == http::header::AUTHORIZATION
                    || name == http::header::COOKIE
                    || self.credential_headers.contains(name)
            })
    }

    /// The default [`max_object_size`](Self::max_object_size): 16 MiB — a
    /// typical page, image or API answer is stored; a video or a large
    /// download streams through (its flight shared, not stored).
    pub const DEFAULT_MAX_OBJECT_SIZE: usize = 16 * 1024 * 1024;

    /// The storage rules these settings give.
    pub(crate) fn storage_rules(&self) -> StorageRules {
        StorageRules {
            ttl: self.ttl,
            stale_ttl: self.stale_ttl,
            stale_if_error: self.stale_if_error,
            retain_stale: self.retain_stale,
            heuristic_freshness: self.heuristic_freshness,
            honor_origin_cache_control: self.honor_origin_cache_control,
        }
    }
}
