//! Freshness and age (RFC 9111 §4.2): how long a response is fresh, and how
//! old it already was when it arrived.
//!
//! * lifetime: `s-maxage`, else `max-age`, else `Expires` − `Date` (an
//!   invalid `Expires` means already expired; ignored when a targeted field
//!   speaks), else — only when the operator enables it — 10 % of the time
//!   since `Last-Modified`, at most a day (§4.2.2);
//! * initial age: the larger of the apparent age (`now − Date`) and the
//!   received `Age` plus the time the request took (§4.2.3). An `Age` that is
//!   not exactly one non-negative integer makes the response stale.

use crate::cache_control::{Delta, MAX_DELTA_SECS, ResponseDirectives};
use http::HeaderMap;
use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Heuristic freshness: this fraction of the time since `Last-Modified`…
pub const HEURISTIC_FRACTION: f64 = 0.1;
/// …at most this long.
pub const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// When the request that got a response was sent and when the answer came
/// (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The request went to the origin.
    pub request_ms: u64,
    /// The response headers arrived.
    pub response_ms: u64,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A header that must appear at most once, parsed as an HTTP date.
fn single_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<Result<u64, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(()));
    }
    Some(
        first
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .map(to_ms)
            .ok_or(()),
    )
}

/// The `Date` of the response in ms, or when it arrived if it has none valid.
pub fn date_ms(headers: &HeaderMap, timing: Timing) -> u64 {
    match single_date(headers, DATE) {
        Some(Ok(d)) => d,
        _ => timing.response_ms,
    }
}

/// The explicit freshness lifetime, if the response gives one.
pub fn explicit_lifetime(
    directives: &ResponseDirectives,
    headers: &HeaderMap,
    timing: Timing,
) -> Option<Duration> {
    if let Some(d) = directives.explicit_lifetime() {
        return Some(d);
    }
    if directives.targeted {
        return None;
    }
    match single_date(headers, EXPIRES)? {
        Ok(expires) => Some(Duration::from_millis(
            expires
                .saturating_sub(date_ms(headers, timing))
                .min(MAX_DELTA_SECS * 1000),
        )),
        Err(()) => Some(Duration::ZERO), // invalid: already expired
    }
}

/// Heuristic freshness from `Last-Modified` (§4.2.2), if it has one.
pub fn heuristic_lifetime(headers: &HeaderMap, timing: Timing) -> Option<Duration> {
    let modified = single_date(headers, LAST_MODIFIED)?.ok()?;
    let since = date_ms(headers, timing).saturating_sub(modified);
    Some(Duration::from_millis((since as f64 * HEURISTIC_FRACTION) as u64).min(HEURISTIC_MAX))
}

/// The received `Age` in seconds (0 when absent): `None` when present but
/// not exactly one non-negative integer (the response is then treated as stale).
pub fn received_age(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(AGE).iter();
    let Some(first) = values.next() else {
        return Some(0);
    };
    if values.next().is_some() {
        return None;
    }
    Delta::parse_age(first.to_str().ok()?.trim())
}

/// The corrected initial age (§4.2.3); `None` when the received `Age` is
/// invalid (then the response is stale on arrival).
pub fn initial_age(headers: &HeaderMap, timing: Timing) -> Option<Duration> {
    let age = received_age(headers)?;
    let apparent = timing.response_ms.saturating_sub(date_ms(headers, timing));
    let delay = timing.response_ms.saturating_sub(timing.request_ms);
    let corrected = age
        .min(MAX_DELTA_SECS)
        .saturating_mul(1000)
        .saturating_add(delay);
    Some(Duration::from_millis(apparent.max(corrected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const NOW: u64 = 1_800_000_000_000;

    fn timing() -> Timing {
        Timing {
            request_ms: NOW - 100,
            response_ms: NOW,
        }
    }

    fn date(offset_s: i64) -> String {
        let t = UNIX_EPOCH + Duration::from_millis((NOW as i64 + offset_s * 1000) as u64);
        httpdate::fmt_http_date(t)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn lifetime(pairs: &[(&'static str, String)]) -> Option<Duration> {
        let h = headers(pairs);
        explicit_lifetime(&ResponseDirectives::parse(&h), &h, timing())
    }

    #[test]
    fn lifetime_precedence() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(lifetime(&[("expires", date(60)), ("date", date(0))]), s(60));
        assert_eq!(
            lifetime(&[("expires", date(60)), ("cache-control", "max-age=5".into())]),
            s(5)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=5, s-maxage=7".into())]),
            s(7)
        );
        assert_eq!(
            lifetime(&[("expires", "0".into())]),
            s(0),
            "invalid Expires: expired"
        );
        assert_eq!(lifetime(&[("expires", date(-60)), ("date", date(0))]), s(0));
        // Expires − Date, not Expires − now: a skewed origin clock cancels out.
        assert_eq!(
            lifetime(&[("expires", date(-3540)), ("date", date(-3600))]),
            s(60)
        );
        assert_eq!(
            lifetime(&[
                ("expires", date(60)),
                ("cdn-cache-control", "max-age=3".into())
            ]),
            s(3)
        );
        assert_eq!(
            lifetime(&[
                ("expires", date(60)),
                ("surrogate-control", "no-store".into())
            ]),
            None
        );
        assert_eq!(lifetime(&[]), None);
    }

    #[test]
    fn ages() {
        let age = |pairs: &[(&'static str, String)]| initial_age(&headers(pairs), timing());
        assert_eq!(
            age(&[("date", date(0))]),
            Some(Duration::from_millis(100)),
            "the request's delay"
        );
        assert_eq!(
            age(&[("date", date(0)), ("age", "30".into())]),
            Some(Duration::from_millis(30_100))
        );
        assert_eq!(
            age(&[("date", date(-60))]),
            Some(Duration::from_secs(60)),
            "apparent age"
        );
        for bad in ["abc", "-1", "1.0", "0, 0", "7200;foo=bar", "0,7200"] {
            assert_eq!(age(&[("age", bad.into())]), None, "{bad}");
        }
        assert_eq!(
            age(&[("age", "0".into()), ("age", "0".into())]),
            None,
            "two lines"
        );
    }

    #[test]
    fn heuristic() {
        let h = headers(&[("date", date(0)), ("last-modified", date(-1000))]);
        assert_eq!(
            heuristic_lifetime(&h, timing()),
            Some(Duration::from_secs(100))
        );
        let old = headers(&[("last-modified", date(-100 * 24 * 3600))]);
        assert_eq!(heuristic_lifetime(&old, timing()), Some(HEURISTIC_MAX));
    }
}
