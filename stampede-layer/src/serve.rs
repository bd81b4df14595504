//! Responses built from stored entries (hits, stale answers, answers to
//! requests that waited on someone else's rebuild) and the responses the
//! layers make themselves.

use crate::body::CacheBody;
use crate::context::Sharing;
use crate::entry::{CachedResponse, now_ms};
use crate::status::{CacheStatus, Detail};
use http::header::AGE;
use http::{HeaderValue, Response, StatusCode};
use std::sync::OnceLock;
use std::time::Duration;

/// The response for a stored entry (`Age` set, no body for `HEAD`). It is
/// shareable with whoever selects the same variant.
pub(crate) fn response_from_entry(
    entry: &CachedResponse,
    now: u64,
    head: bool,
    status: CacheStatus,
) -> Response<CacheBody> {
    let mut resp = hit_response(entry, now, head, status);
    resp.extensions_mut()
        .insert(Sharing::Stored(entry.vary.clone()));
    resp
}

/// [`response_from_entry`] for an answer no request waits on (a fresh hit
/// the lookup answers, above the layers that share answers): no
/// [`Sharing`] recorded.
pub(crate) fn hit_response(
    entry: &CachedResponse,
    now: u64,
    head: bool,
    status: CacheStatus,
) -> Response<CacheBody> {
    let mut resp = entry_response(entry, now, head);
    resp.extensions_mut().insert(status);
    resp
}

/// The entry's answer: its status, its head (built once,
/// [`CachedResponse::header_map`]) with `Age`, and its body's
/// shared `Bytes` (none for `HEAD`); no extensions.
pub(crate) fn entry_response(entry: &CachedResponse, now: u64, head: bool) -> Response<CacheBody> {
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::full(entry.body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.status_code();
    *resp.headers_mut() = entry.header_map();
    resp.headers_mut()
        .insert(AGE, age_value(entry.age_secs(now)));
    resp
}

/// The `Age` value for `secs`: the first [`SHARED_AGES`] made once and
/// shared (a hit clones one: a reference count, no allocation), older
/// ages formatted per response.
fn age_value(secs: u64) -> HeaderValue {
    static AGES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let ages = AGES.get_or_init(|| (0..SHARED_AGES).map(HeaderValue::from).collect());
    match ages.get(secs as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(secs),
    }
}

/// Ages (in seconds) whose `Age` values are made once: a quarter of an hour.
const SHARED_AGES: u64 = 900;

/// A response from an entry someone else just rebuilt (a re-check inside the
/// flight, or a lock loser woken by the fill): a hit that shared a rebuild.
pub(crate) fn collapsed_hit(entry: &CachedResponse, detail: Detail) -> Response<CacheBody> {
    let now = now_ms();
    let mut status = CacheStatus::hit(entry.ttl_secs(now)).with_detail(detail);
    status.collapsed = true;
    response_from_entry(entry, now, false, status)
}

/// A stale entry served in place of an answer from the origin.
pub(crate) fn stale(entry: &CachedResponse, head: bool, detail: Detail) -> Response<CacheBody> {
    let now = now_ms();
    let status = CacheStatus::hit(entry.ttl_secs(now).min(-1)).with_detail(detail);
    response_from_entry(entry, now, head, status)
}

/// A plain-text answer made by the layers themselves: it carries no origin
/// data and no one's session, so it is shareable with anyone who waited on it.
fn generated(status: StatusCode, body: &'static str) -> Response<CacheBody> {
    let mut resp = Response::new(CacheBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.extensions_mut().insert(Sharing::Generated);
    resp
}

/// A 503 with `Retry-After`, as the overload gate answers.
pub(crate) fn service_unavailable(retry_after: Duration) -> Response<CacheBody> {
    let mut resp = generated(
        StatusCode::SERVICE_UNAVAILABLE,
        "origin overloaded, retry later\n",
    );
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    resp
}

/// The answer while a rebuild's failure lasts: `502` (`503` and `504` as
/// they were) with `Retry-After` for the rest of it.
pub(crate) fn rebuild_failed(failure: &crate::store::RebuildFailure) -> Response<CacheBody> {
    let status = match failure.status {
        503 => StatusCode::SERVICE_UNAVAILABLE,
        504 => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let mut resp = generated(status, "the origin failed to answer, retry later\n");
    let left = failure
        .until_ms
        .saturating_sub(now_ms())
        .div_ceil(1000)
        .max(1);
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(left));
    // Not forwarded: it shares the outcome of another request's rebuild.
    let mut cache_status = CacheStatus::default().with_detail(Detail::RebuildFailed);
    cache_status.collapsed = true;
    resp.extensions_mut().insert(cache_status);
    resp
}

/// The 504 of a rebuild cut at its deadline (stale-if-error above may
/// replace it).
pub(crate) fn gateway_timeout() -> Response<CacheBody> {
    generated(
        StatusCode::GATEWAY_TIMEOUT,
        "origin did not answer within the fill deadline\n",
    )
}

/// A 400 for a request target without an unambiguous normal form.
pub(crate) fn bad_target(err: &crate::key::TargetError) -> Response<CacheBody> {
    let mut resp = Response::new(CacheBody::full(format!("bad request target: {err}\n")));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
