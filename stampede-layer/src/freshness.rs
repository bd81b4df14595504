//! Freshness and age (RFC 9111 §4.2): how long a response is fresh, and how
//! old it already was when it arrived.
//!
//! * lifetime: `s-maxage`, else `max-age`, else `Expires` − `Date` (an
//!   invalid `Expires` means already expired; ignored when a targeted field
//!   speaks), else — only when the operator enables it — 10 % of the time
//!   since `Last-Modified`, at most a day (§4.2.2);
//! * initial age: the larger of the apparent age (`now − Date`) and the
//!   received `Age` plus the time the request took (§4.2.3). Of several
//!   `Age` values (a list, `Age: 0, 7200`, or repeated lines) the first
//!   counts; a first value that is not a non-negative integer (`abc`,
//!   `-7200`, `7200.0`) is ignored, as if no `Age` had been sent (RFC 9111
//!   §5.1: a cache ignores an invalid `Age`). Parameters after the integer
//!   (`7200;foo=bar`) are dropped, so its integer still counts.

use crate::cache_control::{Delta, MAX_DELTA_SECS, ResponseDirectives};
use http::HeaderMap;
use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Heuristic freshness: this fraction of the time since `Last-Modified`…
pub(crate) const HEURISTIC_FRACTION: f64 = 0.1;
/// …at most this long.
pub(crate) const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// When the request that got a response was sent and when the answer came
/// (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
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
pub(crate) fn date_ms(headers: &HeaderMap, timing: Timing) -> u64 {
    match single_date(headers, DATE) {
        Some(Ok(d)) => d,
        _ => timing.response_ms,
    }
}

/// The explicit freshness lifetime, if the response gives one.
pub(crate) fn explicit_lifetime(
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
pub(crate) fn heuristic_lifetime(headers: &HeaderMap, timing: Timing) -> Option<Duration> {
    let modified = single_date(headers, LAST_MODIFIED)?.ok()?;
    let since = date_ms(headers, timing).saturating_sub(modified);
    Some(Duration::from_millis((since as f64 * HEURISTIC_FRACTION) as u64).min(HEURISTIC_MAX))
}

/// The received `Age` in seconds: the first value of the first `Age` line
/// (`Age: 0, 7200` is 0; of two lines `7200` and `0`, 7200), parameters
/// dropped (`7200;foo=bar` is 7200), clamped to 2³¹. 0 when absent or when
/// that value is not a non-negative integer (`abc`, `-7200`, `7200.0`): an
/// invalid `Age` is ignored (RFC 9111 §5.1), never read as "stale".
pub(crate) fn received_age(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|member| member.split(';').next())
        .and_then(|value| Delta::parse_age(value.trim()))
        .unwrap_or(0)
}

/// The corrected initial age (§4.2.3): the larger of the apparent age and
/// the received `Age` plus the request's delay. The apparent age counts in
/// whole seconds, as RFC 9111 does: `Date` has a resolution of one second,
/// so `now − Date` in milliseconds would add up to 999 ms of age nobody
/// spent (a `max-age=1` answer from an origin with an exact clock would
/// arrive anywhere from fresh to stale).
pub(crate) fn initial_age(headers: &HeaderMap, timing: Timing) -> Duration {
    let age = received_age(headers);
    let apparent = timing.response_ms.saturating_sub(date_ms(headers, timing)) / 1000 * 1000;
    let delay = timing.response_ms.saturating_sub(timing.request_ms);
    let corrected = age
        .min(MAX_DELTA_SECS)
        .saturating_mul(1000)
        .saturating_add(delay);
    Duration::from_millis(apparent.max(corrected))
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
        let ms = Duration::from_millis;
        assert_eq!(age(&[("date", date(0))]), ms(100), "the request's delay");
        assert_eq!(age(&[("date", date(0)), ("age", "30".into())]), ms(30_100));
        assert_eq!(
            age(&[("date", date(-60))]),
            Duration::from_secs(60),
            "apparent age"
        );
        // `Date` has a resolution of one second: an answer sent 900 ms into
        // a second and received at once is not 900 ms old.
        let late = Timing {
            request_ms: NOW + 800,
            response_ms: NOW + 900,
        };
        assert_eq!(
            initial_age(&headers(&[("date", date(0))]), late),
            ms(100),
            "the Date's truncation is no age"
        );
    }

    /// The public cache suite's `age-parse-*` cases (its current revision):
    /// the received `Age` each one must be read as.
    #[test]
    fn age_parsing_cases() {
        let received = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(AGE, HeaderValue::from_str(l).unwrap());
            }
            received_age(&h)
        };
        // Ignored (as if absent): non-numeric, negative, float.
        assert_eq!(received(&["abc"]), 0, "age-parse-nonnumeric");
        assert_eq!(received(&["-7200"]), 0, "age-parse-negative");
        assert_eq!(received(&["7200.0"]), 0, "age-parse-float");
        assert_eq!(received(&[""]), 0);
        // Large values are clamped to 2^31 s: stale against any max-age.
        assert_eq!(
            received(&["2147483647"]),
            2_147_483_647,
            "age-parse-large-minus-one"
        );
        assert_eq!(received(&["2147483648"]), MAX_DELTA_SECS, "age-parse-large");
        assert_eq!(
            received(&["2147483649"]),
            MAX_DELTA_SECS,
            "age-parse-larger"
        );
        assert_eq!(received(&["99999999999999999999"]), MAX_DELTA_SECS);
        // A list: the first value counts.
        assert_eq!(received(&["7200, 0"]), 7200, "age-parse-suffix");
        assert_eq!(received(&["7200,0"]), 7200);
        assert_eq!(received(&["0, 7200"]), 0, "age-parse-prefix");
        assert_eq!(received(&["0,7200"]), 0);
        assert_eq!(received(&["0, 0"]), 0, "age-parse-dup-0");
        // Repeated lines: the first line counts.
        assert_eq!(received(&["7200", "0"]), 7200, "age-parse-suffix-twoline");
        assert_eq!(received(&["0", "7200"]), 0, "age-parse-prefix-twoline");
        assert_eq!(received(&["0", "0"]), 0, "age-parse-dup-0-twoline");
        assert_eq!(received(&["3600", "3600"]), 3600, "age-parse-dup-old");
        // Parameters are dropped; the integer before them counts.
        assert_eq!(received(&["7200;foo=bar"]), 7200, "age-parse-parameter");
        assert_eq!(
            received(&["7200;foo=111"]),
            7200,
            "age-parse-numeric-parameter"
        );
        assert_eq!(received(&[" 30 "]), 30);
    }

    /// Fresh or stale on arrival, as the suite's tests check it: `Date: now`,
    /// `max-age=3600` (10000 for `dup-old`), and the `Age` lines given.
    #[test]
    fn age_parsing_decides_freshness() {
        let fresh = |max_age: u64, lines: &[&str]| {
            let mut h = headers(&[
                ("date", date(0)),
                ("cache-control", format!("max-age={max_age}")),
            ]);
            for l in lines {
                h.append(AGE, HeaderValue::from_str(l).unwrap());
            }
            let lifetime = explicit_lifetime(&ResponseDirectives::parse(&h), &h, timing()).unwrap();
            initial_age(&h, timing()) < lifetime
        };
        for (lines, want) in [
            (&["abc"][..], true),
            (&["-7200"], true),
            (&["7200.0"], true),
            (&["2147483647"], false),
            (&["2147483648"], false),
            (&["7200, 0"], false),
            (&["0, 7200"], true),
            (&["7200", "0"], false),
            (&["0", "7200"], true),
            (&["0, 0"], true),
            (&["0", "0"], true),
            (&["7200;foo=bar"], false),
        ] {
            assert_eq!(fresh(3600, lines), want, "{lines:?}");
        }
        assert!(fresh(10_000, &["3600", "3600"]), "age-parse-dup-old");
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
