//! The listeners: an accept loop over hyper's HTTP/1.1 server with the
//! client-side limits `axum::serve` cannot set (issue 11).
//!
//! * **Header-read timeout.** A connection must deliver a request's line and
//!   headers within `header_read_timeout`, counted from its accept (the
//!   first request) or from the first byte of a later request on a kept-alive
//!   connection. Past it the connection is closed without an answer (as
//!   nginx's `client_header_timeout`): slowloris clients cannot hold it.
//! * **Idle timeout.** A kept-alive connection waiting for its next request
//!   is closed after `idle_timeout`. The two clocks are kept here rather than
//!   by hyper's `header_read_timeout`, which also runs while a kept-alive
//!   connection is idle and so would cap the idle timeout at the header one.
//!   While a request is in flight (until its response body has been handed
//!   to the socket) neither clock runs: the upstream timeout bounds that.
//! * **Request-head size.** hyper's `max_header_size`: a request line plus
//!   headers larger than `max_header_bytes` is answered `431 Request Header
//!   Fields Too Large` by hyper, which then closes the connection. A client
//!   still sending may see a reset instead of the 431 (the rest of its
//!   request is unread when the socket closes).
//! * **Connection cap.** At most `max_connections` open at once. One more is
//!   accepted, sent `503` with `Connection: close` and `Retry-After: 1` at
//!   once (without reading its request) and closed: refused, not queued, so a
//!   load balancer or client retries elsewhere instead of waiting behind the
//!   connections that fill the cap. A client whose request had already
//!   arrived may see a reset instead of the 503.
//!
//! HTTP/1.1 (and 1.0) only: the listeners no longer speak cleartext HTTP/2
//! (h2c prior knowledge), which nothing used and these limits do not cover.
//! Each request carries the peer address as axum's `ConnectInfo`. On
//! shutdown the listener closes, idle connections close, and requests in
//! flight finish first.

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

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
    /// Largest request line plus headers, in bytes.
    pub max_header_bytes: usize,
}

/// Serve `app` on `listener` within `limits` until `stop` turns true, then
/// drain: stop accepting and wait for every open connection to end.
/// `name` labels the log lines (`proxy`, `admin`).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: App,
{
    let max = u32::try_from(limits.max_connections)
        .map_err(|_| io::Error::other("max_connections must fit in a u32"))?;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
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
            refusals.refuse(&stream, name, limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            http.clone(),
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
async fn stopped(stop: &mut watch::Receiver<bool>) {
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
    fn refuse(&mut self, stream: &TcpStream, name: &'static str, max: usize) {
        // Best effort and never blocking: a fresh socket's send buffer takes it.
        let _ = stream.try_write(REFUSAL);
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

async fn connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    app: impl App,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
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
    let conn = http.serve_connection(io, svc);
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
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            () = expiry.as_mut() => {
                let now = Instant::now();
                if activity.deadline(&limits).is_some_and(|d| d <= now) {
                    tracing::debug!(%peer, "client connection timed out (header read or idle)");
                    return; // dropping the connection closes it
                }
                expiry.as_mut().reset(arm(now));
            }
            () = stopped(&mut stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where one connection stands, for its two clocks.
struct Activity {
    state: Mutex<State>,
    /// True while idle between requests: the next byte read starts a request.
    idle: AtomicBool,
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
        }
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
            self.idle.store(true, Ordering::Release);
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
