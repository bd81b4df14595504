//! The storage decision (RFC 9111 §3 for a shared cache), written once: the
//! fill stores exactly what this allows, and a request that waited on a
//! rebuild is given the answer exactly when it could have been served from
//! storage — the same function decides both, so coalescing can never share
//! what caching would not.

use crate::cache_control::ResponseDirectives;
use crate::context::FillDirectives;
use http::header::{AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// Why a response may not be stored (and so not shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotShareable {
    /// Nobody vouched for it (no [`Sharing`](crate::Sharing) recorded).
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
    /// A lifetime of zero.
    NoLifetime,
}

impl NotShareable {
    /// The metric label value (`stampede_uncacheable_total{reason}`).
    pub fn as_str(self) -> &'static str {
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
    pub const ALL: [NotShareable; 12] = [
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
    pub fn marks_hit_for_miss(self) -> bool {
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

/// How long a stored response stays fresh, servable stale while it is
/// revalidated, and servable stale when the origin fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Fresh lifetime.
    pub fresh: Duration,
    /// Stale-while-revalidate window after it.
    pub stale: Duration,
    /// Stale-if-error window after it (at least `stale`).
    pub error: Duration,
}

/// The operator's side of the decision (see [`CacheConfig`](crate::CacheConfig)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageRules {
    /// Fresh TTL when the origin gives none.
    pub ttl: Duration,
    /// Stale-while-revalidate window when the origin gives none.
    pub stale_ttl: Duration,
    /// Stale-if-error window when the origin gives none.
    pub stale_if_error: Duration,
    /// Honour the origin's `Cache-Control`.
    pub honor_origin_cache_control: bool,
}

impl StorageRules {
    /// Decide whether a response to a `GET` with `request` headers may be
    /// stored by a shared cache, and for how long.
    pub fn decide(
        &self,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        directives: &FillDirectives,
    ) -> Result<Lifetimes, NotShareable> {
        let cc = ResponseDirectives::parse(response);
        let honor = self.honor_origin_cache_control;
        if matches!(status.as_u16(), 206 | 304) {
            return Err(NotShareable::Partial);
        }
        if honor && cc.no_store {
            return Err(NotShareable::NoStore);
        }
        if honor && cc.private {
            return Err(NotShareable::Private);
        }
        if response.contains_key(SET_COOKIE) {
            return Err(NotShareable::SetCookie);
        }
        if crate::entry::vary_names(response).any(|n| n == "*") {
            return Err(NotShareable::VaryStar);
        }
        if request.contains_key(AUTHORIZATION) && !(cc.public || cc.s_maxage.is_some()) {
            return Err(NotShareable::Authorization);
        }
        if honor && cc.no_cache {
            return Err(NotShareable::NoCache);
        }
        let base = match status.as_u16() {
            200 | 203 | 204 | 300 | 301 | 308 => {
                if honor {
                    cc.freshness().unwrap_or(self.ttl)
                } else {
                    self.ttl
                }
            }
            404 | 410 => directives.negative_ttl.ok_or(NotShareable::Status)?,
            _ if status.is_server_error() => return Err(NotShareable::ServerError),
            _ => return Err(NotShareable::Status),
        };
        let fresh = base.mul_f64(directives.ttl_scale.unwrap_or(1.0).max(0.0));
        if fresh.is_zero() {
            return Err(NotShareable::NoLifetime);
        }
        if matches!(status.as_u16(), 404 | 410) {
            // A negative entry lives exactly its negative TTL: no stale window.
            return Ok(Lifetimes {
                fresh,
                stale: Duration::ZERO,
                error: Duration::ZERO,
            });
        }
        let (stale, error) = if honor {
            (
                cc.stale_while_revalidate.unwrap_or(self.stale_ttl),
                cc.stale_if_error.unwrap_or(self.stale_if_error),
            )
        } else {
            (self.stale_ttl, self.stale_if_error)
        };
        Ok(Lifetimes {
            fresh,
            stale,
            error: error.max(stale),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules() -> StorageRules {
        StorageRules {
            ttl: Duration::from_secs(5),
            stale_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            honor_origin_cache_control: true,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn decide(
        req: &[(&'static str, &'static str)],
        status: u16,
        resp: &[(&'static str, &'static str)],
    ) -> Result<Lifetimes, NotShareable> {
        rules().decide(
            &headers(req),
            StatusCode::from_u16(status).unwrap(),
            &headers(resp),
            &FillDirectives::default(),
        )
    }

    /// One client's answer is never another's: every reason a shared cache
    /// must not reuse a response, decided in one place.
    #[test]
    fn what_a_shared_cache_may_not_reuse() {
        use NotShareable::*;
        for (req, status, resp, why) in [
            (&[][..], 200, &[("set-cookie", "sid=1")][..], SetCookie),
            (
                &[],
                200,
                &[("cache-control", "private, max-age=60")],
                Private,
            ),
            (&[], 200, &[("cache-control", "public, no-store")], NoStore),
            (&[], 200, &[("cache-control", "no-cache")], NoCache),
            (&[], 200, &[("vary", "accept, *")], VaryStar),
            (
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "max-age=60")],
                Authorization,
            ),
            (&[], 206, &[("content-range", "bytes 0-3/16")], Partial),
            (&[], 304, &[], Partial),
            (&[], 500, &[], ServerError),
            (&[], 302, &[], Status),
            (&[], 404, &[], Status),
            (&[], 200, &[("cache-control", "max-age=0")], NoLifetime),
        ] {
            assert_eq!(decide(req, status, resp), Err(why), "{status} {resp:?}");
        }
    }

    #[test]
    fn what_a_shared_cache_may_reuse() {
        let ok = decide(&[], 200, &[("vary", "accept-language")]).unwrap();
        assert_eq!(ok.fresh, Duration::from_secs(5));
        let ok = decide(
            &[],
            200,
            &[(
                "cache-control",
                "s-maxage=30, max-age=60, stale-while-revalidate=7",
            )],
        )
        .unwrap();
        assert_eq!(
            (ok.fresh, ok.stale),
            (Duration::from_secs(30), Duration::from_secs(7))
        );
        let public = decide(
            &[("authorization", "Bearer x")],
            200,
            &[("cache-control", "public, max-age=9")],
        );
        assert_eq!(public.unwrap().fresh, Duration::from_secs(9));
        let negative = rules().decide(
            &HeaderMap::new(),
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &FillDirectives {
                negative_ttl: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        );
        assert_eq!(negative.unwrap().stale, Duration::ZERO);
    }

    #[test]
    fn hit_for_miss_only_for_reasons_of_the_resource() {
        assert!(NotShareable::Private.marks_hit_for_miss());
        assert!(NotShareable::SetCookie.marks_hit_for_miss());
        assert!(!NotShareable::Partial.marks_hit_for_miss());
        assert!(!NotShareable::ServerError.marks_hit_for_miss());
        assert!(!NotShareable::Unknown.marks_hit_for_miss());
    }
}
