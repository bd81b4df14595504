//! Each client answered from the full representation by its own headers
//! (RFC 9110 §13 preconditions, §14 ranges).
//!
//! A rebuild that fills the shared object never carries one client's
//! `Range` or validators: [`CacheLookup`](crate::lookup::CacheLookup) takes them off
//! the request ([`ClientConditions::take`]) before it is coordinated, so the
//! origin answers the full representation once, and then evaluates them for
//! that client alone ([`ClientConditions::apply`]): 412 when `If-Match` /
//! `If-Unmodified-Since` fail, 304 when its validator matches, 206 for one
//! satisfiable byte range (416 when unsatisfiable), 200 otherwise. Several
//! ranges in one request, or a body that streamed through uncached, get the
//! whole 200 (a server may ignore `Range`, RFC 9110 §14.2).

use crate::body::CacheBody;
use http::header::{
    self, CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, HeaderName, HeaderValue, LAST_MODIFIED,
};
use http::{Response, StatusCode};
use std::time::SystemTime;

/// The request headers that make a request conditional or partial.
pub(crate) const CONDITIONAL_HEADERS: [HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// One client's preconditions and range, taken off its request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientConditions {
    if_match: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    if_unmodified_since: Option<String>,
    if_range: Option<String>,
    range: Option<String>,
    original: Vec<(HeaderName, HeaderValue)>,
}

fn combined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = String::from_utf8_lossy(v.as_bytes());
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            None => out = Some(v.into_owned()),
        }
    }
    out
}

/// Whether `headers` carry a precondition or a `Range`.
/// (One pass over the request's names: a request carries a few headers, and
/// comparing a name is cheaper than hashing one per lookup.)
pub(crate) fn has_conditions(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| CONDITIONAL_HEADERS.contains(name))
}

impl ClientConditions {
    /// Remove the conditional and range headers from `headers`; `None` if
    /// there were none.
    pub(crate) fn take(headers: &mut HeaderMap) -> Option<ClientConditions> {
        if !has_conditions(headers) {
            return None;
        }
        let c = ClientConditions {
            if_match: combined(headers, &header::IF_MATCH),
            if_none_match: combined(headers, &header::IF_NONE_MATCH),
            if_modified_since: combined(headers, &header::IF_MODIFIED_SINCE),
            if_unmodified_since: combined(headers, &header::IF_UNMODIFIED_SINCE),
            if_range: combined(headers, &header::IF_RANGE),
            range: combined(headers, &header::RANGE),
            original: CONDITIONAL_HEADERS
                .iter()
                .flat_map(|h| headers.get_all(h).iter().map(|v| (h.clone(), v.clone())))
                .collect(),
        };
        for h in &CONDITIONAL_HEADERS {
            headers.remove(h);
        }
        Some(c)
    }

    /// Put the headers back (a request forwarded as is, not coordinated).
    pub(crate) fn restore(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.original {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Answer `resp` (the full representation) for this client.
    pub(crate) fn apply(&self, resp: Response<CacheBody>) -> Response<CacheBody> {
        // Preconditions apply only to what would otherwise be a 2xx (§13.2.1).
        if !resp.status().is_success() {
            return resp;
        }
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let modified = resp
            .headers()
            .get(LAST_MODIFIED)
            .or_else(|| resp.headers().get(header::DATE))
            .and_then(http_date);
        let last_modified = resp.headers().get(LAST_MODIFIED).and_then(http_date);

        // §13.2.2, in order.
        if let Some(im) = &self.if_match {
            if !matches_any(im, etag.as_deref(), true) {
                return precondition_failed(resp);
            }
        } else if let (Some(date), Some(lm)) = (
            self.if_unmodified_since.as_deref().and_then(parse_date),
            last_modified,
        ) && lm > date
        {
            return precondition_failed(resp);
        }
        if let Some(inm) = &self.if_none_match {
            if matches_any(inm, etag.as_deref(), false) {
                return not_modified(resp);
            }
        } else if let (Some(date), Some(m)) = (
            self.if_modified_since.as_deref().and_then(parse_date),
            modified,
        ) && m <= date
        {
            return not_modified(resp);
        }
        match (&self.range, resp.status()) {
            (Some(range), StatusCode::OK)
                if self.if_range_holds(etag.as_deref(), last_modified) =>
            {
                partial(resp, range)
            }
            _ => resp,
        }
    }

    fn if_range_holds(&self, etag: Option<&str>, last_modified: Option<SystemTime>) -> bool {
        let Some(cond) = self.if_range.as_deref().map(str::trim) else {
            return true;
        };
        if cond.starts_with('"') || cond.starts_with("W/") {
            // A strong comparison: a weak tag never matches.
            return etag.is_some_and(|e| strong_eq(cond, e));
        }
        parse_date(cond).is_some_and(|d| last_modified == Some(d))
    }
}

fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    v.to_str().ok().and_then(parse_date)
}

fn parse_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// One entity-tag of a list: `(weak, opaque)`.
fn tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, t),
        })
}

fn strong_eq(a: &str, b: &str) -> bool {
    let (wa, oa) = tags(a).next().unwrap_or((true, ""));
    let (wb, ob) = tags(b).next().unwrap_or((true, ""));
    !wa && !wb && oa == ob
}

/// Whether the `If-Match`/`If-None-Match` list matches `etag` (`*` matches
/// any current representation); strong comparison for `If-Match`.
fn matches_any(list: &str, etag: Option<&str>, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let Some(etag) = etag else { return false };
    let Some((weak, opaque)) = tags(etag).next() else {
        return false;
    };
    tags(list).any(|(w, o)| o == opaque && (!strong || (!w && !weak)))
}

/// Headers a 304 keeps (RFC 9110 §15.4.5): no representation metadata.
const DROPPED_ON_304: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    CONTENT_RANGE,
];

fn not_modified(resp: Response<CacheBody>) -> Response<CacheBody> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    for h in &DROPPED_ON_304 {
        parts.headers.remove(h);
    }
    Response::from_parts(parts, CacheBody::empty())
}

fn precondition_failed(resp: Response<CacheBody>) -> Response<CacheBody> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::PRECONDITION_FAILED;
    for h in &DROPPED_ON_304 {
        parts.headers.remove(h);
    }
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
    Response::from_parts(parts, CacheBody::empty())
}

/// A single `bytes=` range, resolved against `len`: `Ok(Some((first, last)))`
/// satisfiable, `Ok(None)` unsatisfiable, `Err(())` not one byte range
/// (ignored: the client gets the whole representation).
fn resolve(range: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let spec = range.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (first, last) = spec.trim().split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| ())?;
        if suffix == 0 || len == 0 {
            return Ok(None);
        }
        return Ok(Some((len.saturating_sub(suffix), len - 1)));
    }
    let first: u64 = first.parse().map_err(|_| ())?;
    let last: u64 = if last.is_empty() {
        u64::MAX
    } else {
        last.parse().map_err(|_| ())?
    };
    if last < first {
        return Err(());
    }
    if first >= len {
        return Ok(None);
    }
    Ok(Some((first, last.min(len - 1))))
}

fn partial(resp: Response<CacheBody>, range: &str) -> Response<CacheBody> {
    let Some(body) = resp.body().as_bytes() else {
        return resp; // streamed through: the whole representation
    };
    let len = body.len() as u64;
    match resolve(range, len) {
        Err(()) => resp,
        Ok(None) => {
            let (mut parts, _) = resp.into_parts();
            parts.status = StatusCode::RANGE_NOT_SATISFIABLE;
            parts.headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            Response::from_parts(parts, CacheBody::empty())
        }
        Ok(Some((first, last))) => {
            let (mut parts, _) = resp.into_parts();
            parts.status = StatusCode::PARTIAL_CONTENT;
            parts.headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).expect("ascii"),
            );
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(last - first + 1));
            let slice = body.slice(first as usize..=last as usize);
            Response::from_parts(parts, CacheBody::full(slice))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const BODY: &str = "0123456789abcdef";
    const LM: &str = "Tue, 01 Jan 2030 00:00:00 GMT";

    fn full() -> Response<CacheBody> {
        let mut r = Response::new(CacheBody::full(BODY));
        r.headers_mut()
            .insert(ETAG, HeaderValue::from_static("\"v1\""));
        r.headers_mut()
            .insert(LAST_MODIFIED, HeaderValue::from_static(LM));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    }

    async fn answer(pairs: &[(&'static str, &'static str)]) -> (u16, HeaderMap, String) {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        let c = ClientConditions::take(&mut h).expect("conditional");
        assert!(h.is_empty(), "taken off the request");
        let r = c.apply(full());
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn validators() {
        assert_eq!(answer(&[("if-none-match", "\"v1\"")]).await.0, 304);
        assert_eq!(
            answer(&[("if-none-match", "W/\"v1\"")]).await.0,
            304,
            "weak comparison"
        );
        assert_eq!(answer(&[("if-none-match", "\"x\", \"v1\"")]).await.0, 304);
        assert_eq!(answer(&[("if-none-match", "*")]).await.0, 304);
        let (s, h, b) = answer(&[("if-none-match", "\"v0\"")]).await;
        assert_eq!((s, b.as_str()), (200, BODY));
        assert!(h.contains_key(header::CONTENT_TYPE));
        let (s, h, b) = answer(&[("if-modified-since", LM)]).await;
        assert_eq!((s, b.as_str()), (304, ""));
        assert!(h.contains_key(ETAG) && !h.contains_key(header::CONTENT_TYPE));
        assert_eq!(
            answer(&[("if-modified-since", "Mon, 01 Jan 2029 00:00:00 GMT")])
                .await
                .0,
            200
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            answer(&[("if-none-match", "\"v0\""), ("if-modified-since", LM)])
                .await
                .0,
            200
        );
        assert_eq!(answer(&[("if-match", "\"v0\"")]).await.0, 412);
        assert_eq!(
            answer(&[("if-match", "W/\"v1\"")]).await.0,
            412,
            "strong comparison"
        );
        assert_eq!(answer(&[("if-match", "\"v1\"")]).await.0, 200);
        assert_eq!(
            answer(&[("if-unmodified-since", "Mon, 01 Jan 2029 00:00:00 GMT")])
                .await
                .0,
            412
        );
    }

    #[tokio::test]
    async fn ranges() {
        let (s, h, b) = answer(&[("range", "bytes=0-3")]).await;
        assert_eq!((s, b.as_str()), (206, "0123"));
        assert_eq!(h[CONTENT_RANGE], "bytes 0-3/16");
        assert_eq!(h[CONTENT_LENGTH], "4");
        assert_eq!(answer(&[("range", "bytes=10-")]).await.2, "abcdef");
        assert_eq!(answer(&[("range", "bytes=-3")]).await.2, "def");
        assert_eq!(answer(&[("range", "bytes=14-99")]).await.2, "ef");
        let (s, h, _) = answer(&[("range", "bytes=16-")]).await;
        assert_eq!(s, 416);
        assert_eq!(h[CONTENT_RANGE], "bytes */16");
        assert_eq!(
            answer(&[("range", "bytes=0-1,4-5")]).await.0,
            200,
            "several ranges: whole"
        );
        assert_eq!(
            answer(&[("range", "items=0-1")]).await.0,
            200,
            "unknown unit: whole"
        );
        assert_eq!(
            answer(&[("range", "bytes=0-3"), ("if-range", "\"v1\"")])
                .await
                .0,
            206
        );
        assert_eq!(
            answer(&[("range", "bytes=0-3"), ("if-range", "\"v0\"")])
                .await
                .0,
            200
        );
        assert_eq!(
            answer(&[("range", "bytes=0-3"), ("if-range", LM)]).await.0,
            206
        );
    }

    #[test]
    fn non_2xx_answers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        let c = ClientConditions::take(&mut h).unwrap();
        let mut r = Response::new(CacheBody::full("nope"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        assert_eq!(c.apply(r).status(), 404);
        assert!(ClientConditions::take(&mut HeaderMap::new()).is_none());
    }
}
