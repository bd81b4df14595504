//! The plain HTTP/1.1 lane (issue 22): a plain (not TLS) HTTP/1.1
//! connection's ordinary requests — `GET`, HTTP/1.1, no body, no
//! `Connection`, `Upgrade`, `Expect` or `TE`, one at a time — are parsed with
//! httparse and answered here, without hyper's per-request dispatcher. The
//! first request that is anything else (another method or version, a body, a
//! pipelined request, a head over the size limit or one that does not parse)
//! hands the connection to hyper with that request's bytes replayed, so hyper
//! answers it, and every later request on the connection, as it answers any:
//! every error and limit stays hyper's. What the lane parses is what hyper
//! would have built (method, target, version, headers in order, the peer's
//! `ConnectInfo`), and the service called is the same.
//!
//! The answer is framed as hyper frames one: `Content-Length` from the
//! response's header or its body's exact size, else chunked; no body for
//! `204` and `304`, and a `1xx` turned into a `500`; a `Date` when the
//! response has none; the origin's reason phrase; the body
//! written frame by frame as it comes (a streamed body streams, with the same
//! back-pressure), the head with the first frame when that is ready at once.
//! A body that fails or ends short of its length closes the connection, as
//! hyper does. `Connection: close` in a response, or a drain, closes the
//! connection after that answer; the listener's header-read and idle clocks
//! run as for hyper (the socket reports its reads to the connection's
//! [`Activity`]). `--http1-lane false` turns the lane off.

use super::{Activity, App, Busy, Limits, Watched};
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// hyper's own bound on a request's header count (past it: `431`).
const MAX_HEADERS: usize = 100;
/// hyper's bound on a request target's length (past it: `414`).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// A first body frame up to this size is copied behind the head and sent
/// with it as one buffer.
const COPY_BODY: usize = 4 * 1024;
/// The read buffer's size (hyper's initial one).
const READ_BUFFER: usize = 8 * 1024;

/// How the lane left a connection.
pub(super) enum Ended {
    /// Done: the client closed it, a response asked to close it, or a drain.
    Closed,
    /// A request the lane does not take: hyper serves the connection from
    /// here, these bytes (the request so far) first.
    Handoff(Vec<u8>),
}

/// One connection's lane: its state between requests.
pub(super) struct Lane<'a, S> {
    pub(super) io: &'a mut Watched,
    pub(super) app: S,
    pub(super) peer: SocketAddr,
    pub(super) limits: Limits,
    pub(super) activity: &'a Arc<Activity>,
    /// Set when the listener drains: close once idle.
    pub(super) draining: &'a AtomicBool,
}

/// What one parse of the buffer found.
// Moved once per request; boxing the request would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Request<Body>),
    Partial,
    Handoff,
}

impl<S: App> Lane<'_, S> {
    /// Serve requests until the connection closes or is handed to hyper;
    /// `seen` are the bytes already read from it.
    pub(super) async fn serve(self, seen: Vec<u8>) -> io::Result<Ended> {
        let mut buf = BytesMut::with_capacity(READ_BUFFER.max(seen.len()));
        buf.extend_from_slice(&seen);
        let mut head = Vec::with_capacity(512);
        loop {
            let mut request = loop {
                match parse(&mut buf, self.limits.max_header_bytes) {
                    Parsed::Request(r) => break r,
                    Parsed::Handoff => return Ok(Ended::Handoff(buf.to_vec())),
                    Parsed::Partial => {}
                }
                buf.reserve(READ_BUFFER);
                let idle = buf.is_empty();
                let read = self.io.read_buf(&mut buf);
                tokio::pin!(read);
                let read = poll_fn(|cx| {
                    if idle && self.draining.load(Ordering::Acquire) {
                        return Poll::Ready(None);
                    }
                    read.as_mut().poll(cx).map(Some)
                })
                .await;
                match read {
                    None => return Ok(Ended::Closed),
                    Some(Ok(0)) if buf.is_empty() => return Ok(Ended::Closed),
                    // A head cut short: hyper reports it as it would.
                    Some(Ok(0)) => return Ok(Ended::Handoff(buf.to_vec())),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                }
            };
            let busy = Busy::new(self.activity.clone());
            request.extensions_mut().insert(ConnectInfo(self.peer));
            let max = self.limits.max_header_bytes;
            let call = self.app.clone().oneshot(request);
            tokio::pin!(call);
            // A hit is ready at its first poll: no need to watch the client.
            let response = match poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                Poll::Ready(response) => response,
                Poll::Pending => match unless_closed(self.io, &mut buf, max, call).await {
                    Some(response) => response,
                    // The client left: its request is dropped (as hyper drops it).
                    None => return Ok(Ended::Closed),
                },
            };
            let response = response.unwrap_or_else(|e: Infallible| match e {});
            let mut answer = Answer {
                io: &mut *self.io,
                buf: &mut buf,
                max,
            };
            let keep_alive = answer.respond(&mut head, response, self.draining).await?;
            drop(busy);
            if !keep_alive || self.draining.load(Ordering::Acquire) {
                let _ = self.io.shutdown().await;
                return Ok(Ended::Closed);
            }
        }
    }
}

/// Parse the buffer's request head. A request the lane takes is split off
/// the buffer (its header values and target share those bytes, as hyper's
/// do); anything else leaves the buffer as it is. A head longer than
/// `max_head` bytes (whole or still partial), or a target hyper deems too
/// long, is hyper's to refuse.
fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Parsed::Handoff,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    // One request at a time: pipelined bytes go to hyper with it.
    if len != buf.len()
        || len > max_head
        || req.path.is_some_and(|p| p.len() > MAX_URI_LEN)
        || req.method != Some("GET")
        || req.version != Some(1)
    {
        return Parsed::Handoff;
    }
    if req.headers.iter().any(|h| not_plain(h.name.as_bytes())) {
        return Parsed::Handoff;
    }
    // Offsets, so the head can be split off before the values are sliced.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = at(req.path.unwrap_or("/").as_bytes());
    let mut fields = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Handoff;
        };
        fields.push((name, at(h.value)));
    }
    let bytes = buf.split_to(len).freeze();
    let slice = |(from, n): (usize, usize)| bytes.slice(from..from + n);
    let Ok(uri) = Uri::from_maybe_shared(slice(target)) else {
        return Parsed::Handoff.restore(buf, bytes);
    };
    let mut request = Request::new(Body::empty());
    let headers = request.headers_mut();
    headers.reserve(fields.len() + crate::REQUEST_HEADERS_ADDED);
    for (name, value) in fields {
        let Ok(value) = HeaderValue::from_maybe_shared(slice(value)) else {
            return Parsed::Handoff.restore(buf, bytes);
        };
        headers.append(name, value);
    }
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    Parsed::Request(request)
}

impl Parsed {
    /// A head already split off goes back in front of the buffer (the
    /// buffer holds nothing after it: the lane takes no pipelined bytes).
    fn restore(self, buf: &mut BytesMut, head: Bytes) -> Self {
        debug_assert!(buf.is_empty());
        buf.extend_from_slice(&head);
        self
    }
}

/// Request headers that leave the request to hyper: a body's framing,
/// connection management, protocol upgrades, `Expect: 100-continue`, and
/// `TE` (trailers asked for, which only hyper sends).
fn not_plain(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"te",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"upgrade",
        b"expect",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// How the body is framed on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Await `fut` while watching the client: what it sends meanwhile (a
/// pipelined request) is read into `buf`, up to `max` bytes, and `None` if
/// it closes the connection (or the socket fails) first. hyper watches a
/// connection the same way while a request is in flight, so a client that
/// leaves frees what its request held at once.
async fn unless_closed<F: Future>(
    io: &mut Watched,
    buf: &mut BytesMut,
    max: usize,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    loop {
        if buf.len() > max {
            return Some(fut.await);
        }
        buf.reserve(READ_BUFFER);
        tokio::select! {
            biased;
            out = fut.as_mut() => return Some(out),
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// Writes answers on one connection, watching it for a close while it
/// waits for a streamed body.
struct Answer<'a> {
    io: &'a mut Watched,
    buf: &'a mut BytesMut,
    max: usize,
}

impl Answer<'_> {
    /// Write one response; `Ok(true)` if the connection may carry another.
    async fn respond(
        &mut self,
        head: &mut Vec<u8>,
        response: Response<Body>,
        draining: &AtomicBool,
    ) -> io::Result<bool> {
        let io = &mut *self.io;
        let (mut parts, mut body) = response.into_parts();
        if parts.status.is_informational() {
            // As hyper: a 1xx cannot be the answer; a 500, then the connection ends.
            tracing::warn!(status = %parts.status, "response with a 1xx status is not supported");
            let mut failed = Response::new(Body::empty());
            *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            failed
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            (parts, body) = failed.into_parts();
        }
        let status = parts.status;
        let mut keep_alive = !parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"));
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // The response's own length, when it states a valid one.
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        let framing = if bodiless {
            Framing::None
        } else {
            declared
                .or(body.size_hint().exact())
                .map_or(Framing::Chunked, Framing::Length)
        };
        head.clear();
        head.extend_from_slice(if parts.version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        // The origin's own reason phrase when the proxy kept it, as hyper writes it.
        match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => head.extend_from_slice(reason.as_bytes()),
            None => {
                head.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes())
            }
        }
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            // Framing is ours: a stated length is kept where it frames the
            // body (or describes it, on a 304), an invalid one never.
            let framing_header = name == TRANSFER_ENCODING
                || (name == CONTENT_LENGTH
                    && (declared.is_none() || (bodiless && status != StatusCode::NOT_MODIFIED)));
            if framing_header {
                continue;
            }
            field(head, name.as_str().as_bytes(), value.as_bytes());
        }
        match framing {
            Framing::Length(n) if declared.is_none() => {
                field(
                    head,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
            Framing::Chunked => field(head, b"transfer-encoding", b"chunked"),
            _ => {}
        }
        if !parts.headers.contains_key(DATE) {
            DATE_NOW.with_borrow_mut(|d| field(head, b"date", d.now()));
        }
        if keep_alive && draining.load(Ordering::Acquire) {
            field(head, b"connection", b"close");
            keep_alive = false;
        }
        head.extend_from_slice(b"\r\n");
        if framing == Framing::None {
            write_all(io, &mut [IoSlice::new(head)]).await?;
            return Ok(keep_alive);
        }
        // The head goes with the first frame when that is ready at once, else
        // on its own (as hyper flushes a head whose body is not ready).
        let mut head_sent = false;
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let frame = if head_sent {
                match unless_closed(io, self.buf, self.max, std::pin::pin!(body.frame())).await {
                    Some(frame) => frame,
                    None => return Err(io::ErrorKind::ConnectionAborted.into()),
                }
            } else {
                match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        write_all(io, &mut [IoSlice::new(head)]).await?;
                        head_sent = true;
                        continue;
                    }
                }
            };
            let head_now: &[u8] = if head_sent { &[] } else { head };
            match frame {
                None => {
                    let end: &[u8] = if framing == Framing::Chunked {
                        b"0\r\n\r\n"
                    } else {
                        b""
                    };
                    write_all(io, &mut [IoSlice::new(head_now), IoSlice::new(end)]).await?;
                    // A body short of its length: the client cannot tell where
                    // the next answer starts, so the connection ends.
                    return Ok(keep_alive && (framing == Framing::Chunked || left == 0));
                }
                Some(Err(e)) => {
                    if !head_sent {
                        write_all(io, &mut [IoSlice::new(head_now)]).await?;
                    }
                    return Err(io::Error::other(e));
                }
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers: not sent (as hyper, unasked)
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if framing == Framing::Chunked {
                        let mut size = [0u8; 18];
                        let size = chunk_size(data.len(), &mut size);
                        write_all(
                            io,
                            &mut [
                                IoSlice::new(head_now),
                                IoSlice::new(size),
                                IoSlice::new(&data),
                                IoSlice::new(b"\r\n"),
                            ],
                        )
                        .await?;
                    } else {
                        let over = data.len() as u64 > left;
                        if over {
                            data.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                        }
                        left -= data.len() as u64;
                        if !head_sent && data.len() <= COPY_BODY {
                            // A small answer goes out as one buffer: the
                            // kernel copies one piece instead of two.
                            head.extend_from_slice(&data);
                            write_all(io, &mut [IoSlice::new(head)]).await?;
                        } else {
                            write_all(io, &mut [IoSlice::new(head_now), IoSlice::new(&data)])
                                .await?;
                        }
                        if over {
                            return Err(io::Error::other("response body longer than its length"));
                        }
                    }
                    head_sent = true;
                }
            }
        }
    }
}

/// Append `name: value\r\n`.
fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Whether a comma-separated header value names `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A chunk's size line: `len` in hex, then CRLF.
fn chunk_size(mut len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = out.len() - 2;
    out[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        out[at] = HEX[len & 15];
        len >>= 4;
        if len == 0 {
            return &out[at..];
        }
    }
}

/// Write every slice, in order.
async fn write_all(io: &mut Watched, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// The `Date` value for this second, formatted once per second per thread.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE_NOW: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: 0, text: String::new() })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_hyper_writes_them() {
        for n in [0u64, 7, 10, 349, 65_536, u64::MAX] {
            assert_eq!(itoa::Buffer::new().format(n), n.to_string());
        }
        for n in [1usize, 15, 16, 255, 4096, 1 << 40] {
            assert_eq!(chunk_size(n, &mut [0; 18]), format!("{n:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn only_a_plain_get_is_taken_and_the_rest_is_left_whole() {
        let take = |raw: &[u8]| {
            let mut buf = BytesMut::from(raw);
            let parsed = parse(&mut buf, 64 * 1024);
            (parsed, buf)
        };
        let (parsed, rest) = take(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let Parsed::Request(r) = parsed else {
            panic!("a plain GET is taken")
        };
        assert!(rest.is_empty());
        assert_eq!(r.uri(), "/a?b=1");
        assert_eq!(r.version(), Version::HTTP_11);
        let a: Vec<_> = r.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"[..],
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (parsed, rest) = take(raw);
            assert!(
                matches!(parsed, Parsed::Handoff),
                "{:?} is handed off",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(
                &rest[..],
                raw,
                "a handed-off request's bytes are kept whole"
            );
        }
        let long = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut buf = BytesMut::from(&long[..]);
        assert!(matches!(parse(&mut buf, long.len() - 1), Parsed::Handoff));
        assert!(matches!(parse(&mut buf, long.len()), Parsed::Request(_)));
        let mut cut = BytesMut::from(&b"GET / HTTP/1.1\r\nHost:"[..]);
        assert!(
            matches!(parse(&mut cut, 8), Parsed::Handoff),
            "a partial head over the limit"
        );
        let (parsed, rest) = take(b"GET / HTTP/1.1\r\nHost:");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost:");
    }

    #[test]
    fn too_many_headers_are_left_to_hyper() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&raw[..]);
        assert!(matches!(parse(&mut buf, 64 * 1024), Parsed::Handoff));
        assert_eq!(&buf[..], &raw[..]);
    }
}
