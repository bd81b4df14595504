//! The plain HTTP/1.1 lane (issue 22) against hostile and unusual clients,
//! over raw sockets: the lane answers exactly as hyper does (every request
//! of a mixed sequence, to a gateway with the lane and one without, gets the
//! same status, headers and body, framed validly), and pipelining,
//! `Connection: close`, HTTP/1.0, `HEAD`, a body, a head sent a byte at a
//! time and a request after a hand-off are all answered correctly on one
//! kept-alive connection.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{config, serve};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIG: usize = 300 * 1024;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn live_part(i: u8) -> Vec<u8> {
    vec![b'a' + i; 20 * 1024]
}

fn cached() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "max-age=60")]
}

async fn origin() -> SocketAddr {
    serve(
        Router::new()
            .route(
                "/items/{id}",
                get(
                    move |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                        (cached(), format!("{{\"id\":{id}}}"))
                    },
                ),
            )
            .route("/big", get(|| async { (cached(), big_body()) }))
            .route(
                // No length: the origin streams it chunked.
                "/stream",
                get(|| async {
                    let parts = (0..20).map(|i| Ok::<_, std::io::Error>(format!("part {i};")));
                    (
                        cached(),
                        Body::from_stream(futures_util::stream::iter(parts)),
                    )
                }),
            )
            .route(
                // Not stored, no length, 100 KiB in a part every 20 ms:
                // passed through as it comes.
                "/live",
                get(|| async {
                    let parts = futures_util::stream::iter(0..5).then(|i| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(live_part(i))
                    });
                    (
                        [(header::CACHE_CONTROL, "no-store")],
                        Body::from_stream(parts),
                    )
                }),
            )
            .route(
                "/etag",
                get(|headers: HeaderMap| async move {
                    if headers
                        .get(header::IF_NONE_MATCH)
                        .is_some_and(|v| v == "\"v1\"")
                    {
                        return (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")])
                            .into_response();
                    }
                    (cached(), [(header::ETAG, "\"v1\"")], "tagged").into_response()
                }),
            )
            .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/private",
                get(|| async { ([(header::CACHE_CONTROL, "private")], "mine") }),
            )
            .route(
                "/bye",
                get(|| async { ([(header::CONNECTION, "close")], "bye") }),
            ),
    )
    .await
}

/// One response read off a socket, framed as its head says.
#[derive(Debug, PartialEq)]
struct Raw {
    status: String,
    /// Sorted, without the ones that differ per request (`date`,
    /// `x-request-id`, `age`) and with `Cache-Status`'s `ttl` left out.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How the body was framed: `length`, `chunked` or `none`.
    framing: &'static str,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response from `s`; `pending` carries bytes read past it.
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Raw {
    async fn fill(s: &mut TcpStream, pending: &mut Vec<u8>) {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .expect("read failed");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(s, pending).await;
    };
    let head = String::from_utf8(pending.drain(..end).collect()).expect("head is text");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let mut all: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
    let length = all
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("a numeric length"));
    let chunked = all
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    assert!(!(chunked && length.is_some()), "both framings in {head:?}");
    let mut body = Vec::new();
    let framing = if head_only || code == 204 || code == 304 {
        "none"
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(s, pending).await;
            };
            let line = String::from_utf8(pending.drain(..line_end + 2).collect()).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            while pending.len() < size + 2 {
                fill(s, pending).await;
            }
            body.extend(pending.drain(..size));
            assert_eq!(
                pending.drain(..2).collect::<Vec<_>>(),
                b"\r\n",
                "a chunk ends in CRLF"
            );
            if size == 0 {
                break "chunked";
            }
        }
    } else {
        let length = length.unwrap_or_else(|| panic!("no framing in {head:?}"));
        while pending.len() < length {
            fill(s, pending).await;
        }
        body.extend(pending.drain(..length));
        "length"
    };
    all.retain(|(n, _)| !matches!(n.as_str(), "date" | "x-request-id" | "age"));
    for (n, v) in &mut all {
        if n == "cache-status" {
            *v = v
                .split("; ")
                .filter(|p| !p.starts_with("ttl="))
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    all.sort();
    Raw {
        status,
        headers: all,
        body,
        framing,
    }
}

/// Whether the server closes `s` within 5 s (nothing more to read).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn get_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: lane.test\r\n{extra}\r\n")
}

/// The sequence both gateways answer: lane-taken requests first, then the
/// ones that hand the connection to hyper, then lane-shaped ones again
/// (served by hyper on the lane's gateway, after its hand-off).
fn sequence() -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..2 {
        // miss, then hit
        for path in [
            "/items/1", "/big", "/stream", "/live", "/etag", "/empty", "/private", "/missing",
        ] {
            out.push(get_req(path, ""));
        }
        out.push(get_req("/etag", "If-None-Match: \"v1\"\r\n"));
        out.push(get_req("/big", "Range: bytes=10-99\r\n"));
        out.push(get_req(
            "/items/2",
            "Accept-Encoding: gzip\r\nX-Many: 1\r\nX-Many: 2\r\n",
        ));
        out.push(get_req("/items/1?b=2&a=1", ""));
        out.push(get_req("http://lane.test/items/3", ""));
    }
    out.push(get_req("/items/1", "").replacen("GET", "HEAD", 1));
    out.push(
        "POST /items/1 HTTP/1.1\r\nHost: lane.test\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
    );
    out.push(get_req("/items/1", ""));
    out.push(get_req("/big", ""));
    out
}

async fn answers(gateway: SocketAddr) -> Vec<Raw> {
    let mut c = Client::open(gateway).await;
    let mut out = Vec::new();
    for request in sequence() {
        out.push(c.ask(&request).await);
    }
    assert!(c.pending.is_empty(), "stray bytes after the answers");
    out
}

#[tokio::test]
async fn the_lane_answers_every_request_as_hyper_does() {
    let origin = origin().await;
    let lane = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let hyper = gateway::spawn(config(origin, "all", &["--http1-lane", "false"]))
        .await
        .unwrap();
    let (with_lane, without) = (answers(lane.addr).await, answers(hyper.addr).await);
    for (i, (request, (a, b))) in sequence()
        .iter()
        .zip(with_lane.iter().zip(&without))
        .enumerate()
    {
        assert_eq!(
            a, b,
            "answer {i} to {request:?}: lane (left) and hyper (right) differ"
        );
    }
    // The sequence meant what it says: misses then hits, a streamed
    // (chunked) pass-through, a 304, a 206 and the big body whole.
    let per_round = 13;
    let first = &with_lane[0];
    assert_eq!(first.status, "HTTP/1.1 200 OK");
    assert_eq!(first.body, b"{\"id\":1}");
    assert_eq!(with_lane[1].body, big_body());
    let parts: String = (0..20).map(|i| format!("part {i};")).collect();
    assert_eq!(with_lane[2].body, parts.as_bytes());
    let live = &with_lane[3];
    assert_eq!(
        live.framing, "chunked",
        "an unknown length is sent chunked: {live:?}"
    );
    assert_eq!(live.body, (0..5).flat_map(live_part).collect::<Vec<u8>>());
    let again = &with_lane[per_round];
    let status = again.header("cache-status").unwrap();
    assert!(status.contains("hit"), "{again:?}");
    assert_eq!(again.body, b"{\"id\":1}");
    assert_eq!(with_lane[per_round + 1].body, big_body());
    assert_eq!(
        with_lane[per_round + 2].framing,
        "length",
        "a stored stream has its length"
    );
    assert!(
        with_lane
            .iter()
            .any(|r| r.status == "HTTP/1.1 304 Not Modified")
    );
    assert!(
        with_lane
            .iter()
            .any(|r| r.status == "HTTP/1.1 206 Partial Content")
    );
    assert!(
        with_lane
            .iter()
            .any(|r| r.status == "HTTP/1.1 204 No Content")
    );
}

/// A raw HTTP/1.1 connection to the gateway.
struct Client {
    s: TcpStream,
    pending: Vec<u8>,
}

impl Client {
    async fn open(gateway: SocketAddr) -> Self {
        Client {
            s: TcpStream::connect(gateway).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// Send `request` (a `HEAD` is read as head only) and read its answer.
    async fn ask(&mut self, request: &str) -> Raw {
        self.s.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut self.s, &mut self.pending, request.starts_with("HEAD")).await
    }

    /// The body of the answer to `GET path`.
    async fn body(&mut self, path: &str) -> Vec<u8> {
        self.ask(&get_req(path, "")).await.body
    }
}

fn item(id: u32) -> Vec<u8> {
    format!("{{\"id\":{id}}}").into_bytes()
}

#[tokio::test]
async fn pipelined_closing_old_and_bodied_requests_are_answered_on_one_connection() {
    let origin = origin().await;
    let gw = gateway::spawn(config(origin, "all", &[])).await.unwrap();
    let mut c = Client::open(gw.addr).await;

    // A head sent a byte at a time.
    for b in get_req("/items/7", "").bytes() {
        c.s.write_all(&[b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let slow = read_response(&mut c.s, &mut c.pending, false).await;
    assert_eq!(slow.body, item(7));

    // Three requests in one write: answered in order.
    let three: String = (1..=3)
        .map(|id| get_req(&format!("/items/{id}"), ""))
        .collect();
    c.s.write_all(three.as_bytes()).await.unwrap();
    for id in 1..=3 {
        let r = read_response(&mut c.s, &mut c.pending, false).await;
        assert_eq!(r.body, item(id), "pipelined answer {id}");
    }
    // A body, then a GET, on the same connection.
    let posted = c
        .ask("POST /items/1 HTTP/1.1\r\nHost: lane.test\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    assert!(posted.status.starts_with("HTTP/1.1 "), "{posted:?}");
    assert_eq!(c.body("/items/4").await, item(4));

    // `Connection: close` from the client: answered, then closed.
    let mut c = Client::open(gw.addr).await;
    assert_eq!(c.body("/items/1").await, item(1));
    let last = c.ask(&get_req("/items/1", "Connection: close\r\n")).await;
    assert_eq!(last.body, item(1));
    assert!(closed(&mut c.s).await, "closed after Connection: close");

    // The origin's `Connection: close` is hop-by-hop: not forwarded, and the
    // client's connection (served by the lane) goes on.
    let mut c = Client::open(gw.addr).await;
    let bye = c.ask(&get_req("/bye", "")).await;
    assert_eq!(bye.body, b"bye");
    assert_eq!(bye.header("connection"), None, "{bye:?}");
    assert_eq!(c.body("/items/8").await, item(8));

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut c = Client::open(gw.addr).await;
    let old = c
        .ask("GET /items/5 HTTP/1.0\r\nHost: lane.test\r\n\r\n")
        .await;
    assert!(old.status.starts_with("HTTP/1."), "{old:?}");
    assert_eq!(old.body, item(5));
    assert!(
        closed(&mut c.s).await,
        "an HTTP/1.0 connection ends after its answer"
    );

    // HEAD: the head alone, and the connection goes on.
    let mut c = Client::open(gw.addr).await;
    let head = c.ask(&get_req("/big", "").replacen("GET", "HEAD", 1)).await;
    assert_eq!(
        head.header("content-length"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(c.body("/items/6").await, item(6));
    assert!(c.pending.is_empty());
}

#[tokio::test]
async fn bad_and_oversized_heads_get_hypers_answers() {
    let origin = origin().await;
    let gw = gateway::spawn(config(origin, "all", &["--max-header-bytes", "4096"]))
        .await
        .unwrap();
    // A kept-alive connection served by the lane first, then a bad head.
    for (bad, want) in [
        (
            format!(
                "GET /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(8000)
            ),
            "431",
        ),
        (
            "GET /items/1 HTTP/1.1\r\nBad Header: x\r\n\r\n".to_owned(),
            "400",
        ),
        ("GET /it ems HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), "400"),
    ] {
        let mut c = Client::open(gw.addr).await;
        assert_eq!(c.body("/items/1").await, item(1));
        let _ = c.s.write_all(bad.as_bytes()).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.s.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {want}")),
            "{want} for a bad head, got {got:?}"
        );
    }
}
