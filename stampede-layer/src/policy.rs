//! The storage decision (RFC 9111 §3 for a shared cache), written once: the
//! fill stores exactly what this allows, and a request that waited on a
//! rebuild is given the answer exactly when it could have been served from
//! storage — the same function decides both, so coalescing can never share
//! what caching would not.

use crate::cache_control::ResponseDirectives;
use crate::context::FillDirectives;
pub(crate) use crate::context::NotShareable;
use crate::freshness::{self, Timing};
use http::header::{AUTHORIZATION, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// What storing a response means: how long it stays fresh, and what may be
/// done with it once it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// Freshness lifetime (RFC 9111 §4.2.1).
    pub lifetime: Duration,
    /// How old it already was on arrival (§4.2.3; `None`: stale on arrival
    /// whatever its lifetime. The policy always gives an age: an invalid
    /// received `Age` is ignored, see [`freshness::received_age`]).
    pub initial_age: Option<Duration>,
    /// Stale-while-revalidate window after freshness ends.
    pub stale: Duration,
    /// Stale-if-error window after freshness ends (at least `stale`).
    pub error: Duration,
    /// How long past freshness the store keeps it at all: for a conditional
    /// revalidation.
    pub retain: Duration,
    /// Never serve it stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
    /// Revalidate before every use (`no-cache`).
    pub no_cache: bool,
    /// Header fields to leave out of the stored copy (`no-cache="…"`, `private="…"`).
    pub withheld_fields: Vec<String>,
}

impl Lifetimes {
    /// The freshness left on arrival.
    pub(crate) fn remaining(&self) -> Duration {
        match self.initial_age {
            Some(age) => self.lifetime.saturating_sub(age),
            None => Duration::ZERO,
        }
    }

    /// Whether a request that waited on this answer may be given it: one
    /// the origin lets be reused at all — not `no-cache`, a freshness
    /// lifetime above zero. An answer stale on arrival (an origin slower than
    /// the `max-age` it sends) is shared all the same: it is exactly what each
    /// waiter would have fetched for itself, and refusing it sends the whole
    /// herd to the origin, one by one.
    pub(crate) fn shareable(&self) -> bool {
        !self.no_cache && !self.lifetime.is_zero()
    }
}

/// The operator's side of the decision (see [`CacheConfig`](crate::CacheConfig)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StorageRules {
    /// Fresh TTL for origins that give no freshness (zero: none).
    pub ttl: Duration,
    /// Stale-while-revalidate window when the origin gives none.
    pub stale_ttl: Duration,
    /// Stale-if-error window when the origin gives none.
    pub stale_if_error: Duration,
    /// Keep entries this long past freshness (for conditional revalidation).
    pub retain_stale: Duration,
    /// Heuristic freshness from `Last-Modified` for silent origins (§4.2.2).
    pub heuristic_freshness: bool,
    /// Honour the origin's caching fields (off: the operator's TTLs for everything).
    pub honor_origin_cache_control: bool,
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses this cache understands (for `must-understand`).
fn understood(status: StatusCode) -> bool {
    status.canonical_reason().is_some()
}

impl StorageRules {
    /// Decide whether a response to a `GET` with `request` headers may be
    /// stored by a shared cache, and for how long.
    pub(crate) fn decide(
        &self,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        directives: &FillDirectives,
        timing: Timing,
    ) -> Result<Lifetimes, NotShareable> {
        let honor = self.honor_origin_cache_control;
        let cc = if honor {
            ResponseDirectives::parse(response)
        } else {
            ResponseDirectives::default()
        };
        if matches!(status.as_u16(), 206 | 304) || status.is_informational() {
            return Err(NotShareable::Partial);
        }
        if cc.no_store {
            return Err(NotShareable::NoStore);
        }
        if cc.private {
            return Err(NotShareable::Private);
        }
        if response.contains_key(SET_COOKIE) {
            return Err(NotShareable::SetCookie);
        }
        if crate::entry::vary_names(response).any(|n| n == "*") {
            return Err(NotShareable::VaryStar);
        }
        if request.contains_key(AUTHORIZATION)
            && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
        {
            return Err(NotShareable::Authorization);
        }
        if cc.must_understand && !understood(status) {
            return Err(NotShareable::Status);
        }
        let negative = matches!(status.as_u16(), 404 | 410);
        let explicit = if honor {
            freshness::explicit_lifetime(&cc, response, timing)
        } else {
            None
        };
        let (lifetime, from_operator) = match explicit {
            Some(l) => (l, false),
            None if matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
                && !self.ttl.is_zero() =>
            {
                (self.ttl, true)
            }
            None if negative && directives.negative_ttl.is_some_and(|t| !t.is_zero()) => {
                (directives.negative_ttl.unwrap_or_default(), true)
            }
            None if self.heuristic_freshness && heuristically_cacheable(status) => {
                match freshness::heuristic_lifetime(response, timing) {
                    Some(l) => (l, false),
                    None if status.is_server_error() => return Err(NotShareable::ServerError),
                    None => return Err(NotShareable::Status),
                }
            }
            None if status.is_server_error() => return Err(NotShareable::ServerError),
            None => return Err(NotShareable::Status),
        };
        // TTL jitter spreads the operator's TTLs both ways; an origin's own
        // lifetime it may only shorten (revalidating early is always allowed,
        // serving as fresh past the origin's lifetime is not).
        let scale = directives.ttl_scale.unwrap_or(1.0).max(0.0);
        let lifetime = match explicit {
            Some(_) => lifetime.mul_f64(scale.min(1.0)),
            None if from_operator => lifetime.mul_f64(scale),
            None => lifetime,
        };
        // The origin's lifetimes count from when the response was generated
        // (§4.2.3); the operator's TTLs from when it arrived (as nginx's
        // `proxy_cache_valid`): the same `--ttl` for every rebuild, however slow.
        let initial_age = if honor && !from_operator {
            Some(freshness::initial_age(response, timing))
        } else {
            Some(Duration::ZERO)
        };
        if negative && explicit.is_none() {
            // A negative entry lives exactly its negative TTL: no stale window.
            return Ok(Lifetimes {
                lifetime,
                initial_age,
                stale: Duration::ZERO,
                error: Duration::ZERO,
                retain: Duration::ZERO,
                must_revalidate: true,
                no_cache: false,
                withheld_fields: cc.withheld_fields,
            });
        }
        // The operator's windows are defaults for origins that say nothing;
        // an explicit `max-age=0` asks for a revalidation every time.
        let strict = cc.must_revalidate || cc.no_cache || explicit == Some(Duration::ZERO);
        let window = |origin: Option<crate::cache_control::Delta>, operator: Duration| match origin
        {
            _ if cc.must_revalidate || cc.no_cache => Duration::ZERO,
            Some(d) => d.duration(),
            None if strict => Duration::ZERO,
            None => operator,
        };
        let stale = window(cc.stale_while_revalidate, self.stale_ttl);
        let error = window(cc.stale_if_error, self.stale_if_error).max(stale);
        let validators = response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED);
        let plan = Lifetimes {
            lifetime,
            initial_age,
            stale,
            error,
            // Nothing to revalidate with: nothing to keep it for.
            retain: if validators {
                self.retain_stale
            } else {
                Duration::ZERO
            },
            must_revalidate: cc.must_revalidate,
            no_cache: cc.no_cache,
            withheld_fields: cc.withheld_fields,
        };
        if plan.remaining().is_zero() && stale.is_zero() && error.is_zero() && !validators {
            // Stale on arrival, never servable stale, nothing to revalidate with.
            return Err(NotShareable::NoLifetime);
        }
        Ok(plan)
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
            retain_stale: Duration::from_secs(300),
            heuristic_freshness: false,
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

    fn timing() -> Timing {
        let now = crate::entry::now_ms();
        Timing {
            request_ms: now,
            response_ms: now,
        }
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
            timing(),
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
            (
                &[],
                200,
                &[
                    ("cdn-cache-control", "no-store"),
                    ("cache-control", "max-age=60"),
                ],
                NoStore,
            ),
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
            (
                &[],
                599,
                &[("cache-control", "max-age=60, must-understand")],
                Status,
            ),
            (&[], 200, &[("cache-control", "max-age=0")], NoLifetime),
        ] {
            assert_eq!(
                decide(req, status, resp).map(|_| ()),
                Err(why),
                "{status} {resp:?}"
            );
        }
        // Stored, but not shareable with waiters: revalidate before use.
        assert!(
            !decide(
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"v\"")]
            )
            .unwrap()
            .shareable()
        );
        assert!(
            !decide(
                &[],
                200,
                &[("cache-control", "max-age=0"), ("etag", "\"v\"")]
            )
            .unwrap()
            .shareable()
        );
        // Stale on arrival because the origin took longer than its max-age:
        // shared with the requests that waited on it.
        assert!(
            decide(&[], 200, &[("cache-control", "max-age=2"), ("age", "3")])
                .unwrap()
                .shareable()
        );
    }

    #[test]
    fn what_a_shared_cache_may_reuse() {
        let ok = decide(&[], 200, &[("vary", "accept-language")]).unwrap();
        assert_eq!(ok.lifetime, Duration::from_secs(5));
        assert!(ok.shareable());
        let ok = decide(
            &[],
            200,
            &[("cache-control", "max-age=60, stale-while-revalidate=7")],
        )
        .unwrap();
        assert_eq!(
            (ok.lifetime, ok.stale),
            (Duration::from_secs(60), Duration::from_secs(7))
        );
        let ok = decide(&[], 200, &[("cache-control", "s-maxage=30, max-age=60")]).unwrap();
        assert!(
            ok.must_revalidate && ok.stale.is_zero() && ok.error.is_zero(),
            "{ok:?}"
        );
        let public = decide(
            &[("authorization", "Bearer x")],
            200,
            &[("cache-control", "public, max-age=9")],
        );
        assert_eq!(public.unwrap().lifetime, Duration::from_secs(9));
        for status in [500, 503, 599, 302, 404] {
            assert!(
                decide(&[], status, &[("cache-control", "max-age=60")]).is_ok(),
                "{status}: explicit freshness"
            );
        }
        let negative = rules().decide(
            &HeaderMap::new(),
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &FillDirectives {
                negative_ttl: Some(Duration::from_secs(2)),
                ..Default::default()
            },
            timing(),
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
