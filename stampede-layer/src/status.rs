//! RFC 9211 `Cache-Status`, built up by the layers in a response extension
//! and written once, as a header, by [`CacheLookup`](crate::lookup::CacheLookup).

use http::{HeaderValue, StatusCode};

/// RFC 9211 `fwd` reasons used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// Not cacheable by configuration or request (`Authorization`, `Cookie`).
    Bypass,
    /// The method is not cacheable (`POST`, `PUT`, …).
    Method,
    /// No entry for the key.
    UriMiss,
    /// An entry exists but its `Vary`ed request headers differ.
    VaryMiss,
    /// An entry exists but was past its stale window or could not be served.
    Miss,
    /// A stale entry was in hand and the request went to the origin.
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Stale => "stale",
        }
    }
}

/// Extra detail in `Cache-Status` (`detail=…`): which path answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Served stale while a background refresh runs (RFC 5861).
    Swr,
    /// Served stale because the origin failed (RFC 5861 `stale-if-error`).
    StaleIfError,
    /// A lock loser, answered from the winner's fill.
    LockWait,
    /// A lock loser whose wait ran out, answered from the stale copy.
    LockTimeout,
    /// Found filled by a rebuild that finished after the lookup.
    Recheck,
    /// Refused by the overload gate.
    Shed,
    /// The write was refused: a newer fencing token had written.
    Fenced,
    /// The key is marked uncacheable: straight to the origin.
    HitForMiss,
    /// Waited on a rebuild whose answer could not be shared with it: sent its own.
    NotShareable,
    /// Answered with the outcome of a rebuild that failed (the origin's
    /// error, shared with the requests that waited on it, or a generated one
    /// while the failure lasts), instead of asking the failing origin again.
    RebuildFailed,
    /// The origin service failed and no stale copy could stand in: the
    /// stack answered 502/504 itself.
    OriginError,
}

impl Detail {
    /// The `detail` parameter value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Detail::Swr => "swr",
            Detail::StaleIfError => "stale-if-error",
            Detail::LockWait => "lock-wait",
            Detail::LockTimeout => "lock-timeout",
            Detail::Recheck => "recheck",
            Detail::Shed => "shed",
            Detail::Fenced => "fenced",
            Detail::HitForMiss => "hit-for-miss",
            Detail::NotShareable => "not-shareable",
            Detail::RebuildFailed => "rebuild-failed",
            Detail::OriginError => "origin-error",
        }
    }
}

/// How a request was answered, for metrics (`stampede_requests_total{outcome}`)
/// and access logs: a response extension on every answer of the stack.
///
/// ```
/// # use stampede_layer::Outcome;
/// fn label<B>(resp: &http::Response<B>) -> &'static str {
///     resp.extensions().get::<Outcome>().map_or("none", |o| o.as_str())
/// }
/// # assert_eq!(label(&http::Response::new(())), "none");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Fresh entry served.
    Hit,
    /// Went to the origin.
    Miss,
    /// Stale entry served (SWR or stale-if-error).
    Stale,
    /// Shared another request's rebuild (single-flight follower).
    Collapsed,
    /// Waited on another instance's rebuild (lock loser), then served the fill.
    LockWaitHit,
    /// A cached 404/410 served.
    NegativeHit,
    /// Refused by the overload gate.
    Shed,
    /// Not cacheable, passed through.
    Bypass,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 8] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Collapsed,
        Outcome::LockWaitHit,
        Outcome::NegativeHit,
        Outcome::Shed,
        Outcome::Bypass,
    ];

    /// Position in [`Outcome::ALL`] (for per-outcome tables).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Collapsed => "collapsed",
            Outcome::LockWaitHit => "lock_wait_hit",
            Outcome::NegativeHit => "negative_hit",
            Outcome::Shed => "shed",
            Outcome::Bypass => "bypass",
        }
    }
}

/// The cache's account of one response (a response extension).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    /// The body came from the cache.
    pub hit: bool,
    /// Why the request went forward, when it did.
    pub fwd: Option<Fwd>,
    /// Status the origin answered with, when forwarded.
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds (negative: served stale).
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// Shared another request's rebuild.
    pub collapsed: bool,
    /// Extra detail: which path answered.
    pub detail: Option<Detail>,
}

impl CacheStatus {
    /// A hit with `ttl` seconds of freshness left.
    pub(crate) fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// Forwarded to the origin for `fwd`.
    pub(crate) fn forwarded(fwd: Fwd, status: StatusCode) -> Self {
        Self {
            fwd: Some(fwd),
            fwd_status: Some(status.as_u16()),
            ..Self::default()
        }
    }

    /// Set the detail.
    pub(crate) fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Classify for metrics, given the status served.
    pub(crate) fn outcome(&self, status: StatusCode) -> Outcome {
        if self.detail == Some(Detail::Shed) {
            Outcome::Shed
        } else if self.hit {
            if self.ttl.is_some_and(|t| t < 0) {
                Outcome::Stale
            } else if self.detail == Some(Detail::LockWait) {
                Outcome::LockWaitHit
            } else if matches!(status.as_u16(), 404 | 410) {
                Outcome::NegativeHit
            } else {
                Outcome::Hit
            }
        } else if self.collapsed {
            Outcome::Collapsed
        } else if matches!(self.fwd, Some(Fwd::Bypass | Fwd::Method)) {
            Outcome::Bypass
        } else {
            Outcome::Miss
        }
    }

    /// The header value, e.g. `stampede; hit; ttl=3` or `stampede; fwd=uri-miss; fwd-status=200; stored`.
    pub(crate) fn header_value(&self, cache_name: &str) -> HeaderValue {
        // A plain hit's value changes once a second (its `ttl`): the last one
        // made is kept per thread, and the hits of that second share it.
        thread_local! {
            static LAST_HIT: std::cell::RefCell<Option<(i64, Box<str>, HeaderValue)>> =
                const { std::cell::RefCell::new(None) };
        }
        let plain_ttl = match self {
            CacheStatus {
                hit: true,
                fwd: None,
                fwd_status: None,
                ttl: Some(ttl),
                stored: false,
                collapsed: false,
                detail: None,
            } => Some(*ttl),
            _ => None,
        };
        let Some(ttl) = plain_ttl else {
            return self.format_value(cache_name);
        };
        LAST_HIT.with_borrow_mut(|last| match last {
            Some((t, name, value)) if *t == ttl && **name == *cache_name => value.clone(),
            _ => {
                let value = self.format_value(cache_name);
                *last = Some((ttl, cache_name.into(), value.clone()));
                value
            }
        })
    }

    /// [`header_value`](Self::header_value), written on the stack, then
    /// copied into one allocation of its exact size that becomes the
    /// header's bytes.
    fn format_value(&self, cache_name: &str) -> HeaderValue {
        let mut buf = [0u8; 192];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        let bytes = match self.write_to(&mut w, cache_name) {
            Ok(()) => {
                let n = w.position() as usize;
                bytes::Bytes::copy_from_slice(&buf[..n])
            }
            // A cache name too long for the stack buffer.
            Err(_) => {
                let mut v = Vec::new();
                let _ = self.write_to(&mut v, cache_name);
                bytes::Bytes::from(v)
            }
        };
        HeaderValue::from_maybe_shared(bytes)
            .unwrap_or_else(|_| HeaderValue::from_static("stampede"))
    }

    fn write_to(&self, v: &mut impl std::io::Write, cache_name: &str) -> std::io::Result<()> {
        v.write_all(cache_name.as_bytes())?;
        if self.hit {
            v.write_all(b"; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(v, "; fwd={}", fwd.as_str())?;
        }
        if let Some(s) = self.fwd_status {
            write!(v, "; fwd-status={s}")?;
        }
        if let Some(t) = self.ttl {
            write!(v, "; ttl={t}")?;
        }
        if self.stored {
            v.write_all(b"; stored")?;
        }
        if self.collapsed {
            v.write_all(b"; collapsed")?;
        }
        if let Some(d) = self.detail {
            write!(v, "; detail={}", d.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211() {
        assert_eq!(CacheStatus::hit(3).header_value("gw"), "gw; hit; ttl=3");
        let mut miss = CacheStatus::forwarded(Fwd::UriMiss, StatusCode::OK);
        miss.stored = true;
        miss.collapsed = true;
        assert_eq!(
            miss.header_value("gw"),
            "gw; fwd=uri-miss; fwd-status=200; stored; collapsed"
        );
    }

    #[test]
    fn outcome_table() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(o.as_str(), crate::telemetry::OUTCOMES[i]);
        }
        assert_eq!(CacheStatus::hit(1).header_value("bad\nname"), "stampede");
    }

    #[test]
    fn outcomes() {
        let ok = StatusCode::OK;
        assert_eq!(CacheStatus::hit(1).outcome(ok), Outcome::Hit);
        assert_eq!(CacheStatus::hit(-1).outcome(ok), Outcome::Stale);
        assert_eq!(
            CacheStatus::hit(1).outcome(StatusCode::NOT_FOUND),
            Outcome::NegativeHit
        );
        assert_eq!(
            CacheStatus::hit(1)
                .with_detail(Detail::LockWait)
                .outcome(ok),
            Outcome::LockWaitHit
        );
        let mut c = CacheStatus::forwarded(Fwd::UriMiss, ok);
        assert_eq!(c.outcome(ok), Outcome::Miss);
        c.collapsed = true;
        assert_eq!(c.outcome(ok), Outcome::Collapsed);
        assert_eq!(
            CacheStatus::forwarded(Fwd::Method, ok).outcome(ok),
            Outcome::Bypass
        );
    }
}
