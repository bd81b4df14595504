//! The request id and the access log.
//!
//! Every proxied request carries an `X-Request-Id` to the origin: the
//! client's own when it sent one usable value (1–128 visible ASCII
//! characters), else a new random (v4) UUID; the answer carries the same id back (an
//! id the origin echoed into a stored answer never reaches another client).
//!
//! With `--access-log`, one event per request at info level, target
//! `gateway::access`, written when the answer's last byte has been handed to
//! the connection (or the client went away first: `completed=false`):
//!
//! | field | what |
//! |---|---|
//! | `request_id` | the `X-Request-Id` above |
//! | `client` | the connecting peer's address and port |
//! | `method`, `path` | the request line's method and path, never the query string (it may carry tokens) |
//! | `status` | the status sent |
//! | `bytes` | body bytes sent |
//! | `duration_ms` | request received → last byte sent; `headers_ms`: → response headers |
//! | `cache` | how the cache answered: `hit`, `miss`, `stale`, `collapsed`, `lock_wait_hit`, `negative_hit`, `shed`, `bypass` (the `outcome` of `stampede_requests_total`), or `none` |
//! | `cache_status` | the RFC 9211 `Cache-Status` sent |
//! | `completed` | whether the whole body was sent |
//!
//! With `--log-format json` each event is one JSON object on one line, these
//! fields at its top level.

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Give `req` its request id (see the module docs) and return it.
pub fn assign_request_id<B>(req: &mut Request<B>) -> HeaderValue {
    let headers = req.headers_mut();
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next())
        && usable(id.as_bytes())
    {
        return id.clone();
    }
    // A v4 UUID from a per-thread fast RNG seeded once from the thread's
    // RNG: `Uuid::new_v4` would ask the kernel (a getrandom system call) on
    // every request, and an id needs to be unique, not unpredictable.
    thread_local! {
        static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::SeedableRng::from_rng(&mut rand::rng()));
    }
    let bytes = IDS.with_borrow_mut(rand::Rng::random);
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut buf);
    let id = HeaderValue::from_str(text).expect("a UUID is a valid header value");
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 1–128 visible ASCII characters: safe in a log line, a header and a URL.
fn usable(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Layer of [`AccessLog`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

/// Logs one event per request (see the module docs). Reads the request id
/// from the request's `X-Request-Id` ([`assign_request_id`] runs first).
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for AccessLog<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let entry = Entry {
            started,
            request_id: req.headers().get(&X_REQUEST_ID).cloned(),
            client: req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            status: StatusCode::OK,
            headers: Duration::ZERO,
            cache: "none",
            cache_status: None,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let (parts, body) = resp.into_parts();
            let entry = Entry {
                status: parts.status,
                headers: started.elapsed(),
                cache: parts
                    .extensions
                    .get::<stampede_layer::Outcome>()
                    .map_or("none", |o| o.as_str()),
                cache_status: parts.headers.get(stampede_layer::CACHE_STATUS).cloned(),
                ..entry
            };
            let no_body = entry.method == Method::HEAD
                || parts.status == StatusCode::NO_CONTENT
                || parts.status == StatusCode::NOT_MODIFIED
                || body.is_end_stream();
            let body = if no_body {
                entry.log(0, true);
                body
            } else {
                Body::new(LoggedBody {
                    inner: body,
                    bytes: 0,
                    entry: Some(entry),
                })
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// What the access log says of one request, filled in as it goes.
struct Entry {
    started: Instant,
    request_id: Option<HeaderValue>,
    client: Option<SocketAddr>,
    method: Method,
    path: String,
    status: StatusCode,
    headers: Duration,
    cache: &'static str,
    cache_status: Option<HeaderValue>,
}

impl Entry {
    fn log(&self, bytes: u64, completed: bool) {
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: "gateway::access",
            request_id = %text(&self.request_id),
            client = %self.client.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes,
            duration_ms = ms(self.started.elapsed()),
            headers_ms = ms(self.headers),
            cache = self.cache,
            cache_status = %text(&self.cache_status),
            completed,
            "access"
        );
    }
}

/// The answer's body, counting bytes; logs the entry once, at its end (or
/// when dropped first: the client went away).
struct LoggedBody {
    inner: Body,
    bytes: u64,
    entry: Option<Entry>,
}

impl LoggedBody {
    fn finish(&mut self, completed: bool) {
        if let Some(entry) = self.entry.take() {
            entry.log(self.bytes, completed);
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_usable_and_made_otherwise() {
        let with = |ids: &[&str]| {
            let mut req = Request::get("/").body(()).unwrap();
            for id in ids {
                req.headers_mut()
                    .append(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
            }
            let id = assign_request_id(&mut req);
            let sent: Vec<_> = req.headers().get_all(&X_REQUEST_ID).iter().collect();
            assert_eq!(sent, [&id], "exactly one id goes on");
            id.to_str().unwrap().to_owned()
        };
        assert_eq!(with(&["abc-123"]), "abc-123");
        let long = "x".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(with(&[&long]), long);
        for bad in [
            &[][..],
            &["has space"],
            &["a", "b"],
            &[""],
            &[&"x".repeat(MAX_REQUEST_ID_LEN + 1)],
        ] {
            let id = with(bad);
            assert_eq!(id.len(), 36, "{bad:?} -> {id}");
            assert_eq!(
                uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
                4,
                "{id}"
            );
        }
        assert_ne!(with(&[]), with(&[]));
    }
}
