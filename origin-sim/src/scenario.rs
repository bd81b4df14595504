//! Scenario routes: the shapes of real traffic a cache meets beside the
//! `/items` database queries — a large body streamed slowly, an origin that
//! fails, a slow answer, a negotiated (`Vary: Accept-Encoding`) answer —
//! and the `/stats/requests` log of every request they served.
//!
//! | route | answers |
//! |---|---|
//! | `GET /blob/{bytes}?first_byte_ms=&total_ms=&max_age=&chunk=` | 200, `bytes` of [`blob`] content, headers and the first chunk after `first_byte_ms`, the rest in `chunk`-sized pieces paced evenly so the last byte leaves at `total_ms` |
//! | `GET /fail?delay_ms=` | 503 `Cache-Control: no-store` after `delay_ms` |
//! | `GET /slow?delay_ms=&max_age=&bytes=` | 200 after `delay_ms`, `bytes` (default 1024) of [`blob`] content |
//! | `GET /negotiated?delay_ms=&max_age=&bytes=` | 200 after `delay_ms` with `Vary: Accept-Encoding`: [`text`] content (default 65536 bytes), gzip-encoded (`Content-Encoding: gzip`) when the request accepts gzip, identity otherwise |
//!
//! `max_age` (seconds) sets `Cache-Control: max-age=N`; without it the 200
//! answers carry no caching header. Delays are milliseconds. Other query
//! parameters are ignored, so one can make a distinct cache key. Every
//! request is recorded when its answer is done — its body sent, or the
//! client gone — in `GET /stats/requests[?since_ms=…&route=…]`:
//! `{"requests":[{"t_ms","route","path","status","duration_ms","bytes",
//! "completed","accept_encoding","content_encoding"}…],"in_flight":N}`
//! (`in_flight`: scenario requests started and not yet recorded);
//! `DELETE /stats/requests` resets it. `/stats/queries` stays the `/items`
//! log only.
//!
//! The content is a function of the offset alone ([`blob`], [`text`]), so a
//! client can check every byte it received without a copy from the origin.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::MAX_LATENCY_MS;

/// Largest `/blob/{bytes}` (1 GiB; the body is generated as it is sent).
pub const MAX_BLOB_BYTES: u64 = 1 << 30;
/// Largest body of `/slow` and `/negotiated` (built in memory): 16 MiB.
pub const MAX_BUFFERED_BYTES: u64 = 16 << 20;
/// Default `chunk` of `/blob`: 64 KiB.
pub const DEFAULT_CHUNK: u64 = 64 * 1024;
/// Default `bytes` of `/slow`.
pub const DEFAULT_SLOW_BYTES: u64 = 1024;
/// Default `bytes` of `/negotiated`.
pub const DEFAULT_NEGOTIATED_BYTES: u64 = 64 * 1024;

/// SplitMix64: the word at index `i` of the [`blob`] content.
fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes `range` of the blob content: the little-endian bytes of
/// SplitMix64(`offset / 8`), byte `offset % 8` — a function of the offset
/// alone, different at every offset a shift or a repeat could confuse.
pub fn blob(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
    let mut at = range.start;
    while at < range.end {
        let w = word(at / 8).to_le_bytes();
        let from = (at % 8) as usize;
        let take = ((range.end - at) as usize).min(8 - from);
        out.extend_from_slice(&w[from..from + take]);
        at += take as u64;
    }
    out
}

/// The first `len` bytes of the negotiated text: numbered lines
/// (`00000000 the quick brown fox jumps over the lazy dog\n`, 54 bytes
/// each), compressible as real text is.
pub fn text(len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize + 64);
    let mut i = 0u64;
    while (out.len() as u64) < len {
        let _ = writeln!(out, "{i:08} the quick brown fox jumps over the lazy dog");
        i += 1;
    }
    out.truncate(len as usize);
    out
}

/// Whether an `Accept-Encoding` value accepts gzip (RFC 9110 §12.5.3):
/// `gzip` or `x-gzip` with a non-zero `q`, else `*` with a non-zero `q`.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let (mut gzip, mut star) = (None, None);
    for item in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("q")
                .then(|| v.trim().parse::<f64>().unwrap_or(0.0))
        });
        let accepted = q.unwrap_or(1.0) > 0.0;
        match name.as_str() {
            "gzip" | "x-gzip" => gzip = Some(accepted),
            "*" => star = Some(accepted),
            _ => {}
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// One request served by a scenario route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Milliseconds since the Unix epoch when the request arrived.
    pub t_ms: u64,
    /// `blob`, `fail`, `slow` or `negotiated`.
    pub route: String,
    /// The request's path and query.
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
    /// Arrival to the last body byte handed to the connection (or to the
    /// client going away), in whole milliseconds.
    pub duration_ms: u64,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the whole body was sent.
    pub completed: bool,
    /// The request's `Accept-Encoding`, if any.
    pub accept_encoding: Option<String>,
    /// The answer's `Content-Encoding`, if any (`gzip`).
    pub content_encoding: Option<String>,
}

/// The bounded log behind `/stats/requests`, and the requests in flight.
struct RequestLog {
    capacity: usize,
    records: Mutex<VecDeque<RequestRecord>>,
    in_flight: AtomicU64,
}

impl RequestLog {
    fn push(&self, record: RequestRecord) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }
}

/// Filter of `GET /stats/requests`.
#[derive(Debug, Default, Deserialize)]
struct RequestFilter {
    since_ms: Option<u64>,
    route: Option<String>,
}

/// A request being answered: recorded when dropped — once its body has been
/// sent, or when the client went away (then `completed` is false).
struct Tracked {
    log: Arc<RequestLog>,
    start: Instant,
    record: RequestRecord,
    /// Body bytes the answer has in all.
    expected: u64,
}

impl Tracked {
    fn new(log: &Arc<RequestLog>, route: &str, uri: &OriginalUri, headers: &HeaderMap) -> Self {
        log.in_flight.fetch_add(1, Ordering::Relaxed);
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let accept_encoding = headers.get(header::ACCEPT_ENCODING);
        let accept_encoding =
            accept_encoding.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Self {
            log: Arc::clone(log),
            start: Instant::now(),
            record: RequestRecord {
                t_ms: crate::routes::now_ms(),
                route: route.into(),
                path: path.into(),
                status: 0,
                duration_ms: 0,
                bytes: 0,
                completed: false,
                accept_encoding,
                content_encoding: None,
            },
            expected: 0,
        }
    }

    /// The answer is `status` with `expected` body bytes.
    fn answer(&mut self, status: StatusCode, expected: u64) {
        (self.record.status, self.expected) = (status.as_u16(), expected);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut record = std::mem::take(&mut self.record);
        record.duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        record.completed = record.status != 0 && record.bytes == self.expected;
        self.log.push(record);
        self.log.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A body sent in one piece, the request recorded once it has gone.
fn whole_body(mut tracked: Tracked, body: Vec<u8>) -> Body {
    let once = futures_util::stream::once(async move {
        tracked.record.bytes = body.len() as u64;
        let bytes = Bytes::from(body);
        drop(tracked);
        Ok::<_, Infallible>(bytes)
    });
    Body::from_stream(once)
}

fn bad_request(message: impl Into<String>) -> Response {
    let body = Json(json!({ "error": message.into() }));
    (StatusCode::BAD_REQUEST, body).into_response()
}

/// A delay parameter, checked against the origin's bound.
fn delay(name: &str, ms: Option<u64>) -> Result<Duration, String> {
    match ms.unwrap_or(0) {
        ms if ms > MAX_LATENCY_MS => Err(format!("{name} must be at most {MAX_LATENCY_MS}")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// A size parameter, checked against `max`.
fn sized(name: &str, n: u64, max: u64) -> Result<u64, String> {
    if n > max {
        return Err(format!("{name} must be at most {max}"));
    }
    Ok(n)
}

/// The delay and body size of `/slow` and `/negotiated`.
fn delay_and_size(q: &DelayQuery, default: u64) -> Result<(Duration, u64), String> {
    let wait = delay("delay_ms", q.delay_ms)?;
    Ok((
        wait,
        sized("bytes", q.bytes.unwrap_or(default), MAX_BUFFERED_BYTES)?,
    ))
}

fn insert_max_age(headers: &mut HeaderMap, max_age: Option<u64>) {
    if let Some(s) = max_age {
        let v = HeaderValue::from_str(&format!("max-age={s}")).expect("digits");
        headers.insert(header::CACHE_CONTROL, v);
    }
}

/// Query of `/blob`.
#[derive(Debug, Deserialize)]
struct BlobQuery {
    first_byte_ms: Option<u64>,
    total_ms: Option<u64>,
    max_age: Option<u64>,
    chunk: Option<u64>,
}

/// Query of `/fail`, `/slow` and `/negotiated`.
#[derive(Debug, Deserialize)]
struct DelayQuery {
    delay_ms: Option<u64>,
    max_age: Option<u64>,
    bytes: Option<u64>,
}

type Log = State<Arc<RequestLog>>;

/// `GET /blob/{bytes}`.
async fn get_blob(
    State(log): Log,
    uri: OriginalUri,
    headers: HeaderMap,
    bytes: Result<Path<u64>, PathRejection>,
    query: Result<Query<BlobQuery>, QueryRejection>,
) -> Response {
    let (Path(len), Query(q)) = match (bytes, query) {
        (Ok(b), Ok(q)) => (b, q),
        (Err(e), _) => return bad_request(e.body_text()),
        (_, Err(e)) => return bad_request(e.body_text()),
    };
    let checked = (|| {
        let len = sized("bytes", len, MAX_BLOB_BYTES)?;
        let first = delay("first_byte_ms", q.first_byte_ms)?;
        let total = delay("total_ms", q.total_ms.or(q.first_byte_ms))?;
        if total < first {
            return Err("total_ms must be at least first_byte_ms".to_string());
        }
        match q.chunk.unwrap_or(DEFAULT_CHUNK) {
            0 => Err("chunk must be at least 1".to_string()),
            chunk => Ok((len, first, total, chunk)),
        }
    })();
    let (len, first, total, chunk) = match checked {
        Ok(c) => c,
        Err(message) => return bad_request(message),
    };
    let mut tracked = Tracked::new(&log, "blob", &uri, &headers);
    tracked.answer(StatusCode::OK, len);
    let start = tokio::time::Instant::now();
    tokio::time::sleep(first).await;
    // Chunk i leaves at first + (total - first) · i / (n - 1): the first with
    // the headers, the last at `total`.
    let n = len.div_ceil(chunk).max(1);
    let spread = total - first;
    let chunks = futures_util::stream::unfold((tracked, 0u64), move |(mut t, i)| async move {
        let from = i * chunk;
        if from >= len {
            return None;
        }
        let at = first + spread.mul_f64(i as f64 / (n - 1).max(1) as f64);
        tokio::time::sleep_until(start + at).await;
        let to = (from + chunk).min(len);
        t.record.bytes = to;
        Some((Ok::<_, Infallible>(Bytes::from(blob(from..to))), (t, i + 1)))
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    insert_max_age(h, q.max_age);
    resp
}

/// `GET /fail`.
async fn get_fail(
    State(log): Log,
    uri: OriginalUri,
    headers: HeaderMap,
    query: Result<Query<DelayQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let wait = match delay("delay_ms", q.delay_ms) {
        Ok(d) => d,
        Err(message) => return bad_request(message),
    };
    let mut tracked = Tracked::new(&log, "fail", &uri, &headers);
    let body = b"origin failure (origin-sim /fail)\n".to_vec();
    tracked.answer(StatusCode::SERVICE_UNAVAILABLE, body.len() as u64);
    tokio::time::sleep(wait).await;
    let mut resp = Response::new(whole_body(tracked, body));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /slow`.
async fn get_slow(
    State(log): Log,
    uri: OriginalUri,
    headers: HeaderMap,
    query: Result<Query<DelayQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let (wait, len) = match delay_and_size(&q, DEFAULT_SLOW_BYTES) {
        Ok(c) => c,
        Err(message) => return bad_request(message),
    };
    let mut tracked = Tracked::new(&log, "slow", &uri, &headers);
    tracked.answer(StatusCode::OK, len);
    tokio::time::sleep(wait).await;
    let mut resp = Response::new(whole_body(tracked, blob(0..len)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    insert_max_age(h, q.max_age);
    resp
}

/// `GET /negotiated`.
async fn get_negotiated(
    State(log): Log,
    uri: OriginalUri,
    headers: HeaderMap,
    query: Result<Query<DelayQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let (wait, len) = match delay_and_size(&q, DEFAULT_NEGOTIATED_BYTES) {
        Ok(c) => c,
        Err(message) => return bad_request(message),
    };
    let mut tracked = Tracked::new(&log, "negotiated", &uri, &headers);
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let gzip = accepts_gzip(accept);
    let mut body = text(len);
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let encoded = enc.write_all(&body).and_then(|()| enc.finish());
        body = match encoded {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("gzip: {e}");
                return (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response();
            }
        };
        tracked.record.content_encoding = Some("gzip".into());
    }
    tracked.answer(StatusCode::OK, body.len() as u64);
    tokio::time::sleep(wait).await;
    let body_len = body.len() as u64;
    let mut resp = Response::new(whole_body(tracked, body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    insert_max_age(h, q.max_age);
    resp
}

/// `GET /stats/requests[?since_ms=…&route=…]`.
async fn get_requests(
    State(log): Log,
    filter: Result<Query<RequestFilter>, QueryRejection>,
) -> Response {
    let f = match filter {
        Ok(Query(f)) => f,
        Err(e) => return bad_request(e.body_text()),
    };
    let requests: Vec<RequestRecord> = {
        let records = log.records.lock().unwrap_or_else(|p| p.into_inner());
        let since = |r: &&RequestRecord| f.since_ms.is_none_or(|s| r.t_ms >= s);
        let route = |r: &&RequestRecord| f.route.as_ref().is_none_or(|x| &r.route == x);
        records
            .iter()
            .filter(since)
            .filter(route)
            .cloned()
            .collect()
    };
    let in_flight = log.in_flight.load(Ordering::Relaxed);
    Json(json!({ "requests": requests, "in_flight": in_flight })).into_response()
}

/// `DELETE /stats/requests`.
async fn reset_requests(State(log): Log) -> StatusCode {
    log.records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

/// The scenario routes and `/stats/requests`, keeping at most `capacity`
/// records (oldest dropped first).
pub(crate) fn router(capacity: usize) -> Router {
    let log = Arc::new(RequestLog {
        capacity: capacity.max(1),
        records: Mutex::new(VecDeque::new()),
        in_flight: AtomicU64::new(0),
    });
    Router::new()
        .route("/blob/{bytes}", get(get_blob))
        .route("/fail", get(get_fail))
        .route("/slow", get(get_slow))
        .route("/negotiated", get(get_negotiated))
        .route("/stats/requests", get(get_requests).delete(reset_requests))
        .with_state(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_a_function_of_the_offset() {
        let whole = blob(0..1000);
        assert_eq!(whole.len(), 1000);
        for (a, b) in [(0, 1000), (3, 17), (8, 16), (999, 1000), (5, 5)] {
            assert_eq!(blob(a..b), whole[a as usize..b as usize], "{a}..{b}");
        }
        // Shifted by one, the content differs almost everywhere.
        let same = whole.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(same < 20, "{same} equal neighbours");
    }

    #[test]
    fn text_is_numbered_lines() {
        let t = text(120);
        assert_eq!(t.len(), 120);
        assert!(t.starts_with(b"00000000 the quick brown fox jumps over the lazy dog\n00000001 "));
        assert_eq!(text(0), b"");
    }

    #[test]
    fn accept_encoding_parsing() {
        for (v, want) in [
            (None, false),
            (Some(""), false),
            (Some("gzip"), true),
            (Some("gzip, deflate, br, zstd"), true),
            (Some("br;q=1.0, GZIP;q=0.5"), true),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.0, *"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("identity"), false),
            (Some("x-gzip"), true),
            (Some("deflate, br"), false),
        ] {
            assert_eq!(accepts_gzip(v), want, "{v:?}");
        }
    }
}
