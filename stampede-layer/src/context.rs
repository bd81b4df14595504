//! The vocabulary the layers speak: the typed request and response
//! extensions through which they talk (never globals).
//!
//! Request side: [`CacheLookup`](crate::lookup::CacheLookup) attaches a [`Lookup`] —
//! the key, what the store held and why the request goes on — for the
//! layers below; [`DistributedLock`](crate::lock::DistributedLock) or a claimed
//! background refresh attaches the [`HeldLease`] the fill writes with.
//!
//! Response side: every answer that leaves the rebuild path carries a
//! [`Sharing`]: whether *other* requests that waited on this rebuild may be
//! given it. The default — no extension — is "not shareable", so a response
//! nobody vouched for is never handed to a second client.

use crate::entry::{CachedResponse, VaryValues};
use crate::key::CacheKey;
use http::HeaderMap;
use std::sync::Arc;

/// Why a request goes past [`CacheLookup`](crate::lookup::CacheLookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupState {
    /// No usable entry.
    Missing,
    /// An entry past its freshness is in hand (for stale-while-revalidate,
    /// stale-if-error, and lock timeouts).
    Stale,
    /// A background refresh of a still-servable entry (SWR or XFetch).
    Refresh,
    /// Straight to the origin, not coordinated: the key is known to be
    /// uncacheable (hit-for-miss), or the answer a follower waited for could
    /// not be shared with it.
    Pass,
}

/// Request extension set by [`CacheLookup`](crate::lookup::CacheLookup) for the layers below.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    /// The derived key (scoped to a variant once the key is known to vary).
    pub key: CacheKey,
    /// Why the request goes on.
    pub state: LookupState,
    /// The entry in hand (stale, or the one being refreshed), if any.
    pub entry: Option<Arc<CachedResponse>>,
    /// Why the request is forwarded (RFC 9211 `fwd`).
    pub fwd: crate::status::Fwd,
    /// The request's headers as forwarded (client preconditions removed): a
    /// stored or shared answer counts only if its `Vary` matches them.
    pub request_headers: Arc<HeaderMap>,
    /// When the request arrived (ms since the epoch): an entry stored since
    /// answers it even if it was stale on arrival.
    pub arrived_ms: u64,
}

impl Lookup {
    /// `stored_at` of the entry in hand: a re-read entry newer than this was
    /// written by someone else meanwhile.
    pub(crate) fn seen_stored_at(&self) -> Option<u64> {
        self.entry.as_ref().map(|e| e.stored_at_ms)
    }

    /// What a re-read of the store (inside the flight, or while waiting on
    /// another instance's lock) means for this request.
    pub(crate) fn classify_reread(&self, entry: &CachedResponse, now_ms: u64) -> Reread {
        let newer = self
            .seen_stored_at()
            .is_none_or(|seen| entry.stored_at_ms > seen);
        // Stored since this request arrived: the answer to a request made at
        // the same time as this one, fresh or not (an origin slower than the
        // max-age it sends) — unless it must be revalidated before every use.
        let concurrent =
            entry.stored_at_ms >= self.arrived_ms && !entry.no_cache && !entry.is_hit_for_miss();
        if !newer || (entry.is_expired(now_ms) && !concurrent) {
            return Reread::Nothing;
        }
        let matches = entry.vary.matches(&self.request_headers);
        if entry.is_hit_for_miss() && matches {
            return Reread::Uncacheable;
        }
        if !entry.is_hit_for_miss() && !entry.usable_fresh(now_ms) && !concurrent {
            return Reread::Nothing;
        }
        if matches {
            Reread::Usable
        } else {
            Reread::OtherVariant(entry.vary.clone())
        }
    }

    /// The same lookup, scoped to the variant `vary` selects for this request.
    pub(crate) fn for_variant(&self, vary: &VaryValues) -> Lookup {
        let mut scoped = self.clone();
        scoped.key = self
            .key
            .clone()
            .with_variant(Some(vary.variant_of(&self.request_headers)));
        scoped
    }
}

/// What re-reading the store found, for a request that waited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reread {
    /// Nothing new: keep waiting, or rebuild.
    Nothing,
    /// A newer fresh entry that this request may be answered from.
    Usable,
    /// A newer fresh entry of another variant: coordinate on our own variant.
    OtherVariant(VaryValues),
    /// The key turned out uncacheable (a hit-for-miss marker): go to the origin.
    Uncacheable,
}

/// Request extension: the lease this rebuild holds (the lock layer's or a
/// claimed background refresh's); the fill writes with it. A fill without one
/// draws a ticket of its own before it asks the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldLease(pub crate::store::LockLease);

/// Response extension: may requests that waited on this rebuild be given it?
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Stored (or servable from storage): shareable with every request whose
    /// headers select the same variant.
    Stored(VaryValues),
    /// Made by the gateway itself (a 502/504 for an unreachable origin, a
    /// shed 503): it carries no origin data and no one's session.
    Generated,
    /// The error answer (5xx) of a failed rebuild that carries nothing
    /// client-specific (no `Set-Cookie`, not `private`): the requests that
    /// waited on the rebuild get it too — never stored — instead of each
    /// asking a failing origin again.
    Failure,
    /// Not shareable: a waiter sends its own request.
    NotShareable(NotShareable),
    /// The store refused its write: a purge or a later write was ordered
    /// after the rebuild began, so a waiter that joined since may be owed a
    /// newer version. Waiters coordinate again (one new rebuild for them).
    Fenced,
}

impl Sharing {
    /// The sharing of `resp` (none recorded: not shareable).
    pub(crate) fn of<B>(resp: &http::Response<B>) -> Sharing {
        resp.extensions()
            .get::<Sharing>()
            .cloned()
            .unwrap_or(Sharing::NotShareable(NotShareable::Unknown))
    }

    /// What a request with `headers` that waited on this answer may do with it.
    pub(crate) fn decide(&self, headers: &HeaderMap) -> Share {
        match self {
            Sharing::Generated | Sharing::Failure => Share::Yes,
            Sharing::Stored(vary) if vary.matches(headers) => Share::Yes,
            Sharing::Stored(vary) => Share::OtherVariant(vary.clone()),
            Sharing::NotShareable(_) => Share::No,
            Sharing::Fenced => Share::Again,
        }
    }
}

/// A waiting request's verdict on a shared answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Share {
    /// It may be given the answer.
    Yes,
    /// The answer is another variant: coordinate on its own variant.
    OtherVariant(VaryValues),
    /// It must send its own request to the origin.
    No,
    /// The answer was superseded while it was built: coordinate again.
    Again,
}

/// Response extension set by [`CacheFill`](crate::fill::CacheFill) on the answer of
/// a failed rebuild (a 5xx it did not store, or a generated 502/504): what
/// the lock layer leaves on the key when it releases the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RebuildFailed(pub crate::store::RebuildFailure);

/// Response extension on fresh hits, for [`XFetch`](crate::xfetch::XFetch): the key
/// and the entry whose timing decides an early refresh.
#[derive(Clone, Debug)]
pub(crate) struct FreshHit {
    /// The key the entry was found under.
    pub key: CacheKey,
    /// The entry served.
    pub entry: Arc<CachedResponse>,
    /// The normalised target it was served for.
    pub target: http::Uri,
    /// The request headers a refresh of it carries (those it varies on).
    pub refresh_headers: HeaderMap,
}

/// Request extension on a background refresh: the key it refreshes (its
/// scope and all), so the lookup does not derive it again from headers the
/// refresh does not carry.
#[derive(Clone, Debug)]
pub(crate) struct RefreshKey(pub(crate) CacheKey);

/// Request extension: rebuild this key in the background even though its
/// entry is fresh (an [`XFetch`](crate::xfetch::XFetch) early refresh).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ForceRefresh;

/// Why a background refresh ended without an answer. It never reaches a
/// client: a client request that joined such a flight makes its own call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RefreshSkipped {
    /// Another instance holds the key's lock: it is refreshing it.
    #[error("refresh skipped: another instance is rebuilding the key")]
    Elsewhere,
    /// The overload gate sheds background work first.
    #[error("refresh skipped: shed by the overload gate")]
    Shed,
}

impl RefreshSkipped {
    /// Whether `err` is a skipped refresh.
    pub(crate) fn is(err: &(dyn std::error::Error + 'static)) -> bool {
        err.downcast_ref::<RefreshSkipped>().is_some()
    }
}

/// How a fill steers its write beyond the HTTP rules: the settings of the
/// TTL jitter and negative caching mitigations, applied by the fill itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FillDirectives {
    /// Multiply the TTL by this factor.
    pub(crate) ttl_scale: Option<f64>,
    /// Store this 404/410 for this long.
    pub(crate) negative_ttl: Option<std::time::Duration>,
}

/// Remove the layers' own extensions from an answer before it leaves the
/// stack: they are the layers' protocol, not the application's.
pub(crate) fn strip_internal(ext: &mut http::Extensions) {
    ext.remove::<Sharing>();
    ext.remove::<FreshHit>();
    ext.remove::<RebuildFailed>();
    ext.remove::<crate::status::CacheStatus>();
    ext.remove::<crate::fill::TeeBody>();
    ext.remove::<Generated>();
}

/// Response extension an origin service sets on an answer it made itself
/// rather than fetched (a proxy's `502` for an unreachable upstream, a shed
/// `503`): it carries no origin data and no one's session, so the requests
/// that waited on the same rebuild are given it too instead of each asking
/// again. It is never stored, and removed before the answer leaves the stack.
///
/// ```
/// let mut resp = http::Response::new(());
/// *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
/// resp.extensions_mut().insert(stampede_layer::Generated);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generated;

/// Why a response may not be stored (and so not shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NotShareable {
    /// Nobody vouched for it (no [`Sharing`] recorded).
    Unknown,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-cache`: every use needs a revalidation first.
    NoCache,
    /// It sets a cookie: one client's session.
    SetCookie,
    /// `Vary: *`: no request can be known to match.
    VaryStar,
    /// The request carried `Authorization` and the response does not say
    /// `public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5).
    Authorization,
    /// A status code this cache does not store (without explicit freshness).
    Status,
    /// A server error (5xx): an answer of this moment, not of the resource.
    ServerError,
    /// A partial (206) or not-modified (304) answer: not a full representation.
    Partial,
    /// Larger than the buffer limit: it streamed through.
    TooLarge,
    /// Stale on arrival, with nothing to revalidate it with.
    NoLifetime,
}

impl NotShareable {
    /// The metric label value (`stampede_uncacheable_total{reason}`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotShareable::Unknown => "unknown",
            NotShareable::NoStore => "no-store",
            NotShareable::Private => "private",
            NotShareable::NoCache => "no-cache",
            NotShareable::SetCookie => "set-cookie",
            NotShareable::VaryStar => "vary-star",
            NotShareable::Authorization => "authorization",
            NotShareable::Status => "status",
            NotShareable::ServerError => "server-error",
            NotShareable::Partial => "partial",
            NotShareable::TooLarge => "too-large",
            NotShareable::NoLifetime => "no-lifetime",
        }
    }

    /// Every label value, for zero-valued series at start-up.
    pub(crate) const ALL: [NotShareable; 12] = [
        NotShareable::Unknown,
        NotShareable::NoStore,
        NotShareable::Private,
        NotShareable::NoCache,
        NotShareable::SetCookie,
        NotShareable::VaryStar,
        NotShareable::Authorization,
        NotShareable::Status,
        NotShareable::ServerError,
        NotShareable::Partial,
        NotShareable::TooLarge,
        NotShareable::NoLifetime,
    ];

    /// Whether the reason belongs to the resource (so the next answer will
    /// most likely be the same, and the key earns a hit-for-miss marker)
    /// rather than to this one answer (a server error, a partial answer).
    pub(crate) fn marks_hit_for_miss(self) -> bool {
        match self {
            NotShareable::NoStore
            | NotShareable::Private
            | NotShareable::SetCookie
            | NotShareable::VaryStar
            | NotShareable::Authorization
            | NotShareable::TooLarge
            | NotShareable::Status => true,
            NotShareable::ServerError
            | NotShareable::Unknown
            | NotShareable::NoCache
            | NotShareable::Partial
            | NotShareable::NoLifetime => false,
        }
    }
}
