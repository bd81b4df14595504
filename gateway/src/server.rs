//! The listeners: an accept loop over hyper's own HTTP/1.1 and HTTP/2
//! server builders with the client-side limits `axum::serve` cannot set
//! (issue 11), for both protocols (issue 23).
//!
//! * **Protocols.** A plain listener speaks HTTP/1.x and HTTP/2 with prior
//!   knowledge (h2c): a connection whose first 24 bytes are the HTTP/2
//!   connection preface is served by hyper's `http2` builder, any other by
//!   its `http1` builder — after the lane: a plain HTTP/1.1 connection's
//!   ordinary `GET`s (no body, no `Connection`, one at a time) are answered
//!   by the gateway's own lean HTTP/1.1 code (`server/lane.rs`, issue 22),
//!   and the first other request hands the connection to hyper with its
//!   bytes replayed (`--http1-lane false`: hyper from the start). The lane
//!   keeps every limit below, watches the client while a request is in
//!   flight (a close drops the request, as hyper does) and frames answers
//!   as hyper does (`gateway/tests/lane.rs` compares the two). With TLS
//!   (the proxy listener with `--tls-cert` / `--tls-key`, see
//!   [`crate::tls`]; always hyper) the protocol is negotiated by ALPN
//!   (`h2`, then `http/1.1`); a TLS client that names none is sniffed the
//!   same way. (hyper-util's `auto` builder does the same sniffing, but has
//!   no way to set HTTP/1's `max_header_size`, the limit below.) The TLS
//!   handshake must end within the header-read timeout.
//! * **Header-read timeout.** A connection must deliver a request's line and
//!   headers (HTTP/2: the first request's HEADERS) within
//!   `header_read_timeout`, counted from its accept (the first request) or
//!   from the first byte of a later request on a kept-alive connection. Past
//!   it the connection is closed without an answer (as nginx's
//!   `client_header_timeout`): slowloris clients cannot hold it.
//! * **Idle timeout.** A kept-alive connection (HTTP/2: one with no stream
//!   open) waiting for its next request is closed after `idle_timeout`. On
//!   HTTP/2, bytes while idle (a PING, a SETTINGS) do not start the header
//!   clock as they do on HTTP/1: the idle timeout alone ends such a
//!   connection. The
//!   two clocks are kept here rather than by hyper's `header_read_timeout`,
//!   which also runs while a kept-alive connection is idle and so would cap
//!   the idle timeout at the header one. While a request is in flight (until
//!   its response body has been handed to the socket) neither clock runs: the
//!   upstream timeout bounds that.
//! * **Request-head size.** HTTP/1: hyper's `max_header_size`: a request line
//!   plus headers larger than `max_header_bytes` is answered `431 Request
//!   Header Fields Too Large` by hyper, which then closes the connection. A
//!   client still sending may see a reset instead of the 431 (the rest of its
//!   request is unread when the socket closes). HTTP/2: the same number as
//!   `SETTINGS_MAX_HEADER_LIST_SIZE`; a larger header list is answered `431`
//!   on its stream by h2.
//! * **Streams per connection** (HTTP/2): at most `max_concurrent_streams`
//!   open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client opening more
//!   has them refused (`REFUSED_STREAM`).
//! * **Rapid reset** (HTTP/2, CVE-2023-44487): at most
//!   [`MAX_PENDING_ACCEPT_RESET_STREAMS`] streams reset by the client before
//!   the server accepted them, and at most [`MAX_LOCAL_ERROR_RESET_STREAMS`]
//!   streams the server had to reset for the client's errors, per
//!   connection; past either the connection is closed (`GOAWAY`,
//!   `ENHANCE_YOUR_CALM`). A reset stream's request is dropped at once: the
//!   rebuild it led goes on, detached (see `docs/LAYERS.md`).
//! * **Connection cap.** At most `max_connections` open at once (whatever
//!   their protocol). One more is accepted and closed at once: on a plain
//!   listener it is first sent `503` with `Connection: close` and
//!   `Retry-After: 1` (without reading its request), so a load balancer or
//!   client retries elsewhere instead of waiting behind the connections that
//!   fill the cap; a TLS listener closes it without a word (a plaintext
//!   answer is no answer to a TLS client). A client whose request had
//!   already arrived may see a reset instead of the 503.
//!
//! Each request carries the peer address as axum's `ConnectInfo`. On
//! shutdown the listener closes, idle connections close (HTTP/2: `GOAWAY`),
//! and requests in flight finish first.

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

mod lane;

/// HTTP/2: streams the client may reset before the server accepted them,
/// per connection, before it is closed (hyper's and h2's default; the
/// rapid-reset bound).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// HTTP/2: streams the server may reset for the client's protocol errors,
/// per connection, before it is closed (hyper's default).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4): how a prior-knowledge
/// client opens a plain connection.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a listener serves: an axum `Router` (the admin API) or the proxy
/// service, called once per request with the peer's `ConnectInfo`.
pub trait App:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Limits on one listener's client connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a request's line and headers.
    pub header_read_timeout: Duration,
    /// Longest wait, idle, for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Most connections open at once (at most `u32::MAX`).
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes (HTTP/2: header list).
    pub max_header_bytes: usize,
    /// HTTP/2: most streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Plain HTTP/1.1: answer ordinary `GET`s (no body, no `Connection`,
    /// one at a time) in the gateway's own lean HTTP/1.1 lane, handing a
    /// connection to hyper at its first other request; else every request
    /// through hyper.
    pub http1_lane: bool,
}

/// hyper's two server builders, configured from one listener's [`Limits`].
#[derive(Clone)]
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut h1 = http1::Builder::new();
        h1.keep_alive(true)
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        Protocols { h1, h2 }
    }
}

/// Serve `app` on `listener` within `limits` until `stop` turns true, then
/// drain: stop accepting and wait for every open connection to end.
/// `name` labels the log lines (`proxy`, `admin`). With `tls`, every
/// connection is a TLS one (ALPN `h2`, `http/1.1`).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) -> io::Result<()>
where
    S: App,
{
    let max = u32::try_from(limits.max_connections)
        .map_err(|_| io::Error::other("max_connections must fit in a u32"))?;
    let protocols = Protocols::new(&limits);
    let slots = Arc::new(Semaphore::new(max as usize));
    let mut refusals = Refusals::default();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning.
                    tracing::error!(listener = name, error = %e, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refuse(&stream, name, limits.max_connections, tls.is_none());
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            protocols.clone(),
            tls.clone(),
            stream,
            peer,
            app.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(max).await;
    Ok(())
}

/// Resolves once shutdown is asked for (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 21\r\n\
\r\n\
too many connections\n";

/// Refuses connections over the cap; logs at most one line per 10 s.
#[derive(Default)]
struct Refusals {
    since_log: u64,
    logged: Option<Instant>,
}

impl Refusals {
    fn refuse(&mut self, stream: &TcpStream, name: &'static str, max: usize, plain: bool) {
        // Best effort and never blocking: a fresh socket's send buffer takes it.
        if plain {
            let _ = stream.try_write(REFUSAL);
        }
        self.since_log += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                listener = name,
                max_connections = max,
                refused = self.since_log,
                "connection cap reached: refusing connections (503)"
            );
            self.since_log = 0;
            self.logged = Some(Instant::now());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    protocols: Protocols,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: impl App,
    limits: Limits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let watched = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    // The handshake and the protocol's first bytes are part of the first
    // request's head: they share its header-read deadline.
    let head_by = Instant::now() + limits.header_read_timeout;
    let lane_app = app.clone();
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let busy = Busy::new(activity.clone());
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _busy: busy }))
            }
        })
    };
    // The stream (plain or TLS: two types), its first bytes replayed, served
    // by HTTP/2 or HTTP/1 until it ends or drains.
    macro_rules! serve_as {
        ($io:expr, $seen:expr, $h2:expr, $stop:expr) => {{
            let io = TokioIo::new(Prefixed {
                seen: $seen,
                at: 0,
                io: $io,
            });
            let ended = if $h2 {
                activity.multiplexed();
                let conn = protocols.h2.serve_connection(io, svc);
                drive(conn, |c| c.graceful_shutdown(), peer, &activity, limits, $stop).await
            } else {
                let conn = protocols.h1.serve_connection(io, svc);
                drive(conn, |c| c.graceful_shutdown(), peer, &activity, limits, $stop).await
            };
            if let Some(Err(e)) = ended {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        }};
    }
    match tls {
        None => {
            let mut io = watched;
            let Ok(Ok((seen, h2))) = tokio::time::timeout_at(head_by, sniff(&mut io)).await else {
                tracing::debug!(%peer, "client sent no request line or preface in time");
                return;
            };
            if h2 || !limits.http1_lane {
                serve_as!(io, seen, h2, stop);
                return;
            }
            let draining = AtomicBool::new(false);
            let lane = lane::Lane {
                io: &mut io,
                app: lane_app,
                peer,
                limits,
                activity: &activity,
                draining: &draining,
            };
            let ended = drive(
                lane.serve(seen),
                |_| draining.store(true, Ordering::Release),
                peer,
                &activity,
                limits,
                stop.clone(),
            )
            .await;
            match ended {
                Some(Ok(lane::Ended::Handoff(seen))) => serve_as!(io, seen, false, stop),
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                Some(Ok(lane::Ended::Closed)) | None => {}
            }
        }
        Some(acceptor) => {
            let handshake = async {
                let mut io = acceptor.accept(watched).await?;
                let h2 = match io.get_ref().1.alpn_protocol() {
                    Some(b"h2") => (Vec::new(), true),
                    Some(_) => (Vec::new(), false),
                    // No ALPN: sniff for the preface, as on a plain listener.
                    None => sniff(&mut io).await?,
                };
                io::Result::Ok((io, h2))
            };
            let (io, (seen, h2)) = match tokio::time::timeout_at(head_by, handshake).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out (header-read timeout)");
                    return;
                }
            };
            serve_as!(io, seen, h2, stop);
        }
    }
}

/// Read a connection's first bytes until they are the HTTP/2 preface (`true`)
/// or cannot be (`false`, HTTP/1); returns what was read, to be replayed.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Vec<u8>, bool)> {
    let mut seen = vec![0u8; PREFACE.len()];
    let mut n = 0;
    while n < PREFACE.len() {
        let got = io.read(&mut seen[n..]).await?;
        if got == 0 {
            break; // EOF: hyper's HTTP/1 sees it and ends the connection
        }
        n += got;
        if seen[..n] != PREFACE[..n] {
            break;
        }
    }
    seen.truncate(n);
    let h2 = seen == PREFACE;
    Ok((seen, h2))
}

/// Serve one connection until it ends, closing it at its header-read or
/// idle deadline, and shutting it down gracefully when `stop` turns true.
/// Returns how the connection ended, `None` if it was closed at a deadline.
async fn drive<C: Future>(
    conn: C,
    mut graceful: impl FnMut(Pin<&mut C>),
    peer: SocketAddr,
    activity: &Activity,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Option<C::Output> {
    tokio::pin!(conn);
    // One timer, re-armed only when it fires, never per request: it is set
    // no later than the earliest deadline any request could start from now
    // on (a clock starts at an event, at the earliest now, and runs at least
    // the shorter of the two timeouts), and no later than the running
    // deadline; on firing, the connection is closed if its deadline has
    // passed, else the timer is re-armed the same way.
    // (At least 1 ms, the timer's resolution: a zero timeout must not spin.)
    let shortest = limits
        .header_read_timeout
        .min(limits.idle_timeout)
        .max(Duration::from_millis(1));
    let arm = |now: Instant| {
        let next = now + shortest;
        activity.deadline(&limits).map_or(next, |d| d.min(next))
    };
    let expiry = tokio::time::sleep_until(arm(Instant::now()));
    tokio::pin!(expiry);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => return Some(ended),
            () = expiry.as_mut() => {
                let now = Instant::now();
                if activity.deadline(&limits).is_some_and(|d| d <= now) {
                    tracing::debug!(%peer, "client connection timed out (header read or idle)");
                    return None; // dropping the connection closes it
                }
                expiry.as_mut().reset(arm(now));
            }
            () = stopped(&mut stop), if !draining => {
                draining = true;
                graceful(conn.as_mut());
            }
        }
    }
}

/// Where one connection stands, for its two clocks.
struct Activity {
    state: Mutex<State>,
    /// True while idle between requests: the next byte read starts a request.
    idle: AtomicBool,
    /// HTTP/2: bytes on an idle connection are as likely control frames
    /// (PING, SETTINGS, WINDOW_UPDATE) as a request, so they never start the
    /// header clock; an idle HTTP/2 connection is closed at the idle timeout.
    multiplexed: AtomicBool,
}

struct State {
    /// Requests dispatched whose response body is not yet handed over.
    in_flight: usize,
    /// Waiting for a request's head (else: idle between requests).
    reading_head: bool,
    /// When the current clock started.
    since: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(State {
                in_flight: 0,
                reading_head: true,
                since: Instant::now(),
            }),
            idle: AtomicBool::new(false),
            multiplexed: AtomicBool::new(false),
        }
    }

    /// The connection speaks HTTP/2 (see `multiplexed`).
    fn multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Release);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.state();
        (s.in_flight == 0).then(|| {
            s.since
                + if s.reading_head {
                    limits.header_read_timeout
                } else {
                    limits.idle_timeout
                }
        })
    }

    fn begin(&self) {
        let mut s = self.state();
        s.in_flight += 1;
        s.reading_head = false;
        self.idle.store(false, Ordering::Release);
    }

    fn end(&self) {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.reading_head = false;
            s.since = Instant::now();
            self.idle
                .store(!self.multiplexed.load(Ordering::Acquire), Ordering::Release);
        }
    }

    /// Bytes arrived: on an idle connection they start the header clock.
    fn read_some(&self) {
        if !self.idle.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut s = self.state();
        if s.in_flight == 0 && !s.reading_head {
            s.reading_head = true;
            s.since = Instant::now();
        }
    }
}

/// Marks a request in flight from dispatch until its response body is
/// dropped by hyper (fully written, or the connection gone).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.begin();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that keeps its request marked in flight.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket, reporting reads to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose first bytes were already read (to tell the protocol):
/// reads replay them, then go on from the stream.
struct Prefixed<I> {
    seen: Vec<u8>,
    at: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.seen.len() {
            let n = (self.seen.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.seen[at..at + n]);
            self.at += n;
            if self.at == self.seen.len() {
                self.seen = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
