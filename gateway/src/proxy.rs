//! The reverse proxy: a pooled hyper client to one origin, `http://` or
//! `https://` (rustls through hyper-rustls; the roots compiled in plus
//! `--origin-ca`, the origin's host as the name checked and sent as SNI;
//! HTTP/1.1 to the origin, connections pooled and reused alike).
//!
//! Interim (1xx) answers from the origin — `103 Early Hints`, `102
//! Processing` — are consumed by the client: they are never stored, never
//! change what is stored, and are not relayed (hyper's server cannot send a
//! 1xx before the final answer); the final answer is handled as if they had
//! not come. Each one is counted in a debug log line.
//!
//! Strips hop-by-hop headers both ways (RFC 9110 §7.6.1), sets the origin's
//! `Host` and drops the unkeyed override headers origins are known to honour
//! (`X-Forwarded-Host`, `X-Original-URL`, …), so no header outside the cache
//! key can change the body stored behind it (cache poisoning). Answers 504
//! when the origin does not answer within the upstream timeout, 502 when it
//! cannot be reached or sends garbage — as responses, never errors — and
//! cuts a body that stalls for longer than the timeout between two chunks.
//!
//! [`Forwarding`] sets the forwarding headers (RFC 9110 §7.6.3, RFC 7239):
//! `Via` on requests and responses, and `X-Forwarded-For` / `Forwarded`
//! replaced by (or appended with) the connecting peer's address.

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The origin a gateway proxies to.
#[derive(Clone, Debug)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
}

/// Why an origin URL was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid --origin {url:?}: {reason}")]
pub struct OriginError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for Origin {
    type Err = OriginError;

    fn from_str(url: &str) -> Result<Self, OriginError> {
        let err = |reason| OriginError {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| err("not a URL (expected http://host:port or https://host:port)"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| err("missing scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(err("only http:// and https:// origins are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| err("missing host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(err("the origin URL must not have a path"));
        }
        if authority.as_str().contains('@') {
            // It would be sent as the Host header and logged.
            return Err(err("credentials in the origin URL are not supported"));
        }
        Ok(Origin { scheme, authority })
    }
}

impl Origin {
    /// Whether the origin is reached over TLS (`https://`).
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

/// The proxy service (cheap to clone: the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Proxy {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    origin: Origin,
    timeout: Duration,
    host: HeaderValue,
    /// Forward the client's `Host` (`--preserve-host`).
    preserve_host: bool,
}

impl Proxy {
    /// Proxy to `origin`, giving up on an answer after `timeout`; an
    /// `https://` origin is verified against the built-in roots.
    pub fn new(origin: Origin, timeout: Duration) -> Self {
        let tls = crate::tls::client_config(None, "--origin-ca")
            .expect("the built-in roots make a valid TLS configuration");
        Self::with_tls(origin, timeout, tls)
    }

    /// [`Proxy::new`] with the TLS configuration `https://` origins are
    /// verified with (e.g. with a private CA, see [`crate::tls::client_config`]).
    pub fn with_tls(origin: Origin, timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        connector.enforce_http(false);
        // HTTP/1.1 only (ALPN `http/1.1`): the origin side stays one
        // request per connection at a time, pooled, as for http://.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let host =
            HeaderValue::from_str(origin.authority.as_str()).expect("authority is a valid header");
        Self {
            client,
            origin,
            timeout,
            host,
            preserve_host: false,
        }
    }

    /// Forward the client's `Host` instead of the origin's (the key is then
    /// scoped by it, see `--preserve-host`).
    pub fn preserve_host(mut self, on: bool) -> Self {
        self.preserve_host = on;
        self
    }

    async fn forward(self, req: Request<Body>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.origin.scheme.clone())
            .authority(self.origin.authority.clone())
            .path_and_query(path);
        parts.uri = match uri.build() {
            Ok(u) => u,
            Err(_) => return error_response(StatusCode::BAD_REQUEST, "invalid request target"),
        };
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        for name in UNKEYED_OVERRIDES {
            parts.headers.remove(name);
        }
        if !self.preserve_host || !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, self.host.clone());
        }
        let mut req = Request::from_parts(parts, body);
        // Interim answers are dropped here (see the module docs); a line
        // says one came.
        hyper::ext::on_informational(&mut req, |interim| {
            tracing::debug!(
                status = interim.status().as_u16(),
                "origin sent an interim answer; not stored, not relayed"
            );
        });
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "origin timed out"
                );
                error_response(StatusCode::GATEWAY_TIMEOUT, "origin timed out")
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "origin unreachable");
                error_response(StatusCode::BAD_GATEWAY, "origin unreachable")
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, idle_timeout(body, self.timeout))
            }
        }
    }
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

/// Fail a body that sends nothing for `idle` (an origin stalled mid-body):
/// the cache then never waits forever to buffer it.
fn idle_timeout(body: hyper::body::Incoming, idle: Duration) -> Body {
    use http_body_util::BodyExt;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let frames = futures_util::stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => Some((Ok(frame), Some(body))),
            Ok(Some(Err(err))) => Some((Err(BoxError::from(err)), None)),
            Ok(None) => None,
            Err(_) => {
                tracing::warn!(idle_ms = idle.as_millis() as u64, "origin stalled mid-body");
                Some((Err(BoxError::from("origin stalled mid-body")), None))
            }
        }
    });
    Body::new(http_body_util::StreamBody::new(frames))
}

/// Request headers that some origins and frameworks honour to rewrite the
/// URL, host or method. They are not part of the cache key, so they are never
/// forwarded: otherwise one request could poison the entry everyone gets.
pub const UNKEYED_OVERRIDES: [HeaderName; 8] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-host"),
];

/// What the proxy does with client-supplied `X-Forwarded-For` and `Forwarded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedPolicy {
    /// Drop what the client sent (and `X-Real-IP`); send only the connecting
    /// peer's address. For a gateway that clients reach directly.
    #[default]
    Replace,
    /// Keep the chain the client sent and append the connecting peer. Only
    /// behind a load balancer you trust to have set it.
    Append,
}

/// The forwarding headers the proxy sets (RFC 9110 §7.6.3, RFC 7239).
///
/// * `Via: <version> <name>` is appended to every request sent on and every
///   response sent back (the version being that of the message received).
/// * [`ForwardedPolicy::Replace`] (the default): the client's
///   `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are dropped and the
///   peer's address sent instead (`X-Forwarded-For: 192.0.2.1`,
///   `Forwarded: for=192.0.2.1`, `for="[2001:db8::1]"`): nothing a client
///   writes is passed on as if the proxy vouched for it.
/// * [`ForwardedPolicy::Append`]: the peer is appended to the chain the
///   client sent (`X-Forwarded-For: a, b, peer`); of `Forwarded` only the
///   `for=` parameters are kept, since `host=`/`proto=` can rewrite URLs an
///   origin builds and are not part of the cache key (as `X-Forwarded-Host`).
#[derive(Clone, Debug)]
pub struct Forwarding {
    policy: ForwardedPolicy,
    /// `Via` per protocol version (0.9, 1.0, 1.1, 2, 3), made once: a
    /// `HeaderValue` clone shares its bytes, so no formatting per request.
    via: [Option<HeaderValue>; 5],
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl Forwarding {
    /// `name` is this proxy's pseudonym in `Via` (a token).
    pub fn new(policy: ForwardedPolicy, name: &str) -> Self {
        let via = ["0.9", "1.0", "1.1", "2", "3"]
            .map(|protocol| HeaderValue::from_str(&format!("{protocol} {name}")).ok());
        Forwarding { policy, via }
    }

    fn via(&self, version: Version) -> Option<HeaderValue> {
        let i = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        self.via[i].clone()
    }

    /// Set the forwarding headers of a request received in `version` from `peer`.
    pub fn on_request(&self, headers: &mut HeaderMap, version: Version, peer: Option<IpAddr>) {
        if let Some(via) = self.via(version) {
            headers.append(header::VIA, via);
        }
        let (mut xff, mut fwd) = (Vec::new(), Vec::new());
        if self.policy == ForwardedPolicy::Append {
            xff = values(headers, &X_FORWARDED_FOR);
            fwd = values(headers, &header::FORWARDED)
                .iter()
                .flat_map(|v| forwarded_for(v))
                .collect();
        }
        // One pass over the names first: most requests carry none of these,
        // and a scan is cheaper than three removals that find nothing.
        let replace = self.policy != ForwardedPolicy::Append;
        if headers.keys().any(|name| {
            name == X_FORWARDED_FOR || name == header::FORWARDED || (replace && name == X_REAL_IP)
        }) {
            if replace {
                headers.remove(X_REAL_IP);
            }
            headers.remove(&X_FORWARDED_FOR);
            headers.remove(header::FORWARDED);
        }
        if xff.is_empty() && fwd.is_empty() {
            // Nothing to keep (the default policy): the peer's address alone,
            // formatted once for both headers.
            if let Some(ip) = peer {
                let (xff, fwd) = peer_values(ip);
                headers.insert(X_FORWARDED_FOR, xff);
                headers.insert(header::FORWARDED, fwd);
            }
            return;
        }
        if let Some(ip) = peer {
            xff.push(ip.to_string());
            fwd.push(match ip {
                IpAddr::V4(ip) => format!("for={ip}"),
                IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
            });
        }
        for (name, list) in [(X_FORWARDED_FOR, xff), (header::FORWARDED, fwd)] {
            if let Ok(v) = HeaderValue::from_str(&list.join(", "))
                && !list.is_empty()
            {
                headers.insert(name, v);
            }
        }
    }

    /// Add `Via` to a response forwarded to the client (received as HTTP/1.1).
    pub fn on_response(&self, headers: &mut HeaderMap) {
        if let Some(via) = self.via(Version::HTTP_11) {
            headers.append(header::VIA, via);
        }
    }
}

/// `X-Forwarded-For` and `Forwarded` naming `ip` alone: `192.0.2.1` and
/// `for=192.0.2.1` (`for="[2001:db8::1]"`). The last peer's pair is kept per
/// thread: a kept-alive connection's requests, and most of a busy worker's,
/// come from one address, and then the pair costs two reference counts
/// instead of a formatting and an allocation.
fn peer_values(ip: IpAddr) -> (HeaderValue, HeaderValue) {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, xff, fwd)) if *seen == ip => (xff.clone(), fwd.clone()),
        _ => {
            let (xff, fwd) = format_peer_values(ip);
            *last = Some((ip, xff.clone(), fwd.clone()));
            (xff, fwd)
        }
    })
}

/// [`peer_values`], from one formatting of the address.
fn format_peer_values(ip: IpAddr) -> (HeaderValue, HeaderValue) {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    let _ = match ip {
        IpAddr::V4(ip) => write!(text, "for={ip}"),
        IpAddr::V6(ip) => write!(text, "for=\"[{ip}]\""),
    };
    let fwd = bytes::Bytes::from(text);
    let addr = match ip {
        IpAddr::V4(_) => fwd.slice(4..),
        IpAddr::V6(_) => fwd.slice(6..fwd.len() - 2),
    };
    // An address and `for=` with it are visible ASCII: always valid values.
    let value = |b: bytes::Bytes| {
        HeaderValue::from_maybe_shared(b).expect("an IP address is a valid header value")
    };
    (value(addr), value(fwd))
}

/// Every value of `name`, as text, split at commas outside quotes.
fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| split_outside_quotes(v, ','))
        .collect()
}

/// Split at `sep` outside quoted strings, trimming and dropping empty parts.
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `for=` parameter of one `Forwarded` element, if it has one.
fn forwarded_for(element: &str) -> Option<String> {
    split_outside_quotes(element, ';').into_iter().find(|pair| {
        pair.split_once('=')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
    })
}

/// A small plain-text error answer, made by the gateway: it carries no
/// origin data, so requests that waited on it may share it.
pub fn error_response(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("{msg}\n")));
    *resp.status_mut() = status;
    resp.extensions_mut().insert(stampede_layer::Generated);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origins() {
        assert!("http://127.0.0.1:8081".parse::<Origin>().is_ok());
        assert!("http://origin-sim:8081/".parse::<Origin>().is_ok());
        assert!(
            "https://origin.example:8443"
                .parse::<Origin>()
                .unwrap()
                .is_https()
        );
        assert!(!"http://x".parse::<Origin>().unwrap().is_https());
        for bad in [
            "",
            "http://user:pw@127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://x/path",
            "https://x/path",
            "ftp://x",
            "http://",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarding_headers() {
        let client = || {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
            h.append("x-forwarded-for", "3.3.3.3".parse().unwrap());
            h.append(
                "forwarded",
                "for=1.1.1.1;host=evil, by=x, For=\"[::1]:80\";proto=https"
                    .parse()
                    .unwrap(),
            );
            h.append("forwarded", "for=\"a,b;c\"".parse().unwrap());
            h.insert("x-real-ip", "1.1.1.1".parse().unwrap());
            h
        };
        let peer: IpAddr = "2001:db8::1".parse().unwrap();

        let mut h = client();
        Forwarding::new(ForwardedPolicy::Replace, "gw").on_request(
            &mut h,
            Version::HTTP_10,
            Some(peer),
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\"");
        assert!(!h.contains_key("x-real-ip"));
        assert_eq!(h["via"], "1.0 gw");

        let mut h = client();
        Forwarding::new(ForwardedPolicy::Append, "gw").on_request(
            &mut h,
            Version::HTTP_11,
            Some(peer),
        );
        assert_eq!(
            h["x-forwarded-for"],
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::1"
        );
        assert_eq!(
            h["forwarded"],
            "for=1.1.1.1, For=\"[::1]:80\", for=\"a,b;c\", for=\"[2001:db8::1]\""
        );
        assert_eq!(h["x-real-ip"], "1.1.1.1");

        // No peer (a request the gateway makes itself): nothing vouched for.
        let mut h = client();
        Forwarding::new(ForwardedPolicy::Replace, "gw").on_request(&mut h, Version::HTTP_11, None);
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("forwarded"));
    }
}
