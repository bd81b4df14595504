//! Issue 23, the edge a client meets: TLS termination (certificate reload
//! on change and on SIGHUP, a bad new certificate kept out), HTTP/2 by ALPN
//! over TLS and with prior knowledge (h2c) on a plain listener — driven by
//! real `curl` processes against the gateway binary — and the HTTP/1
//! listener's limits applied to HTTP/2 (streams per connection, header
//! size, idle timeout, rapid reset).

mod common;

use common::{GatewayProcess, Pki, VersionedOrigin, served_certificate};
use std::process::Command;
use std::time::{Duration, Instant};

/// What `curl` saw: the status line's protocol and code, and the headers.
#[derive(Debug)]
struct Curl {
    protocol: String,
    status: u16,
    headers: String,
    body: String,
}

impl Curl {
    fn header(&self, name: &str) -> String {
        self.headers
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    }
}

/// `curl ARGS URL` (a real process, 10 s at most): the last response's
/// status line and headers, and its body.
fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&head)
        .args(args)
        .arg(url)
        .output()
        .expect("curl is needed (Debian: curl; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = std::fs::read_to_string(&head).unwrap();
    // With interim answers or redirects there can be several heads: the last.
    let last = headers
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or("")
        .to_owned();
    let status_line = last.lines().next().unwrap_or("").to_owned();
    let mut parts = status_line.split_whitespace();
    let protocol = parts.next().unwrap_or("").to_owned();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Curl {
        protocol,
        status,
        headers: last,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http2_over_tls_and_h2c_and_gets_misses_then_hits() {
    let origin = VersionedOrigin::start(Duration::ZERO).await;
    let pki = Pki::new("edge test CA");
    let (cert, key, _) = pki.write_leaf("gateway", "gateway.test");
    let tls_gw = GatewayProcess::start(
        "tls",
        &[
            "--origin",
            &origin.url(),
            "--ttl",
            "30s",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let url = format!("https://localhost:{}/items/1", tls_gw.port);
    let resolve = format!("localhost:{}:127.0.0.1", tls_gw.port);
    let ca = pki.ca.to_str().unwrap();
    let tls_args = ["--cacert", ca, "--resolve", resolve.as_str()];

    let first = curl(&[&tls_args[..], &["--http2"]].concat(), &url);
    assert_eq!(
        (first.protocol.as_str(), first.status),
        ("HTTP/2", 200),
        "{first:?}"
    );
    assert!(
        first.header("cache-status").contains("fwd=uri-miss"),
        "{first:?}"
    );
    assert_eq!(common::version(&first.body), Some(1), "{first:?}");
    let second = curl(&[&tls_args[..], &["--http2"]].concat(), &url);
    assert_eq!(second.protocol, "HTTP/2", "{second:?}");
    assert!(common::is_hit(&second.header("cache-status")), "{second:?}");
    assert_eq!(second.body, first.body);
    assert!(second.header("via").contains("stampede"), "{second:?}");
    // HTTP/1.1 over the same TLS listener (ALPN http/1.1): the same entry.
    let h1 = curl(&[&tls_args[..], &["--http1.1"]].concat(), &url);
    assert_eq!(
        (h1.protocol.as_str(), h1.status),
        ("HTTP/1.1", 200),
        "{h1:?}"
    );
    assert!(common::is_hit(&h1.header("cache-status")), "{h1:?}");
    // The TLS listener does not speak plaintext.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/items/1", tls_gw.port))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("version"));
    assert_eq!(origin.gets(), 1, "one miss, the rest hits");

    // A plain listener: HTTP/2 with prior knowledge (h2c), and HTTP/1.1.
    let plain_gw = GatewayProcess::start("h2c", &["--origin", &origin.url(), "--ttl", "30s"]).await;
    let url = plain_gw.url("/items/2");
    let first = curl(&["--http2-prior-knowledge"], &url);
    assert_eq!(
        (first.protocol.as_str(), first.status),
        ("HTTP/2", 200),
        "{first:?}"
    );
    assert!(
        first.header("cache-status").contains("fwd=uri-miss"),
        "{first:?}"
    );
    let second = curl(&["--http2-prior-knowledge"], &url);
    assert_eq!(second.protocol, "HTTP/2", "{second:?}");
    assert!(common::is_hit(&second.header("cache-status")), "{second:?}");
    let h1 = curl(&["--http1.1"], &url);
    assert_eq!(h1.protocol, "HTTP/1.1", "{h1:?}");
    assert!(common::is_hit(&h1.header("cache-status")), "{h1:?}");
    // HEAD over HTTP/2: headers, no body.
    let head = curl(&["--http2-prior-knowledge", "-I"], &url);
    assert_eq!(
        (head.protocol.as_str(), head.status),
        ("HTTP/2", 200),
        "{head:?}"
    );
    assert!(
        head.body.is_empty() || head.body.starts_with("HTTP/2"),
        "{head:?}"
    );
    assert_eq!(origin.gets(), 2);
}

/// Poll `what` until it returns `want` (10 s at most).
async fn eventually<F, Fut>(what: &str, want: &[u8], mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = f().await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_reloaded_on_change_and_on_sighup_and_a_bad_one_is_kept_out() {
    let origin = VersionedOrigin::start(Duration::ZERO).await;
    let pki = Pki::new("reload test CA");
    let (cert, key, first) = pki.write_leaf("gw", "first");
    let args = |interval: &'static str| {
        vec![
            "--origin".to_owned(),
            origin.url(),
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
            "--tls-reload-interval".to_owned(),
            interval.to_owned(),
        ]
    };
    let polled_args = args("200ms");
    let polled_args: Vec<&str> = polled_args.iter().map(String::as_str).collect();
    let gw = GatewayProcess::start("reload", &polled_args).await;
    let addr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    assert_eq!(served_certificate(addr, &pki.ca).await, Ok(first.clone()));

    // The files change: the next handshakes get the new certificate.
    let (_, _, second) = pki.write_leaf("gw", "second");
    eventually("the rotated certificate", &second, || {
        served_certificate(addr, &pki.ca)
    })
    .await;

    // A bad rotation — a key that is not the certificate's, then no PEM at
    // all — is logged and kept out: the current certificate stays.
    let (other_cert, _) = pki.leaf("third");
    std::fs::write(&cert, other_cert).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served_certificate(addr, &pki.ca).await, Ok(second.clone()));
    std::fs::write(&cert, "not a certificate\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served_certificate(addr, &pki.ca).await, Ok(second.clone()));
    let resolve = format!("localhost:{}:127.0.0.1", gw.port);
    let ok = curl(
        &["--cacert", pki.ca.to_str().unwrap(), "--resolve", &resolve],
        &format!("https://localhost:{}/items/1", gw.port),
    );
    assert_eq!(ok.status, 200, "still serving: {ok:?}");
    // Fixed again: picked up.
    let (_, _, fourth) = pki.write_leaf("gw", "fourth");
    eventually("the repaired certificate", &fourth, || {
        served_certificate(addr, &pki.ca)
    })
    .await;
    drop(gw);

    // SIGHUP: with polling far away, the signal alone reloads.
    let hup_args = args("1h");
    let hup_args: Vec<&str> = hup_args.iter().map(String::as_str).collect();
    let gw = GatewayProcess::start("hup", &hup_args).await;
    let addr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    assert_eq!(served_certificate(addr, &pki.ca).await, Ok(fourth.clone()));
    let (_, _, fifth) = pki.write_leaf("gw", "fifth");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_certificate(addr, &pki.ca).await,
        Ok(fourth),
        "no reload before the signal"
    );
    gw.send_signal("-HUP");
    eventually("the certificate after SIGHUP", &fifth, || {
        served_certificate(addr, &pki.ca)
    })
    .await;
    // The process is alive and serving after the signal.
    let ok = curl(
        &[
            "--cacert",
            pki.ca.to_str().unwrap(),
            "--resolve",
            &format!("localhost:{}:127.0.0.1", gw.port),
        ],
        &format!("https://localhost:{}/items/1", gw.port),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
}

/// An HTTP/2 connection (prior knowledge) to `port`; its driver task runs
/// until the connection ends, and says how it ended.
async fn h2_connect(
    port: u16,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn h2_get(path: &str, extra: &[(&str, String)]) -> http::Request<()> {
    let mut req = http::Request::get(format!("http://localhost{path}"));
    for (k, v) in extra {
        req = req.header(*k, v.as_str());
    }
    req.body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_gets_the_http1_limits_streams_headers_idle_and_rapid_reset() {
    let origin = VersionedOrigin::start(Duration::from_millis(300)).await;
    let gw = GatewayProcess::start(
        "h2-limits",
        &[
            "--origin",
            &origin.url(),
            "--max-concurrent-streams",
            "8",
            "--max-header-bytes",
            "8192",
            "--idle-timeout",
            "1s",
            "--header-read-timeout",
            "1s",
        ],
    )
    .await;

    // Streams per connection: advertised in the server's SETTINGS (read
    // by the time a first answer came).
    let (mut send, conn) = h2_connect(gw.port).await;
    send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get("/items/1", &[]), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .expect("a first request");
    assert_eq!(resp.status(), 200);
    assert_eq!(send.current_max_send_streams(), 8);

    // Header size: a header list past --max-header-bytes gets 431 on its
    // stream; the connection goes on.
    send = send.ready().await.unwrap();
    let big = "x".repeat(9000);
    let (resp, _) = send
        .send_request(h2_get("/items/1", &[("x-big", big)]), true)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap();
    match resp {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => panic!("oversized headers: want a 431 answer, got {e}"),
    }
    send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get("/items/1", &[]), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .expect("a normal request after the 431");
    assert_eq!(resp.status(), 200);

    // Idle: no stream open for --idle-timeout: the gateway closes it.
    let t0 = Instant::now();
    drop(send);
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was not closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "closed too early"
    );

    // PINGs are not requests: an HTTP/2 connection that only pings after its
    // last answer is closed at the idle timeout (3 s here), not earlier at
    // the header-read timeout (1 s) as bytes on an idle HTTP/1 connection are.
    {
        let pinged = GatewayProcess::start(
            "h2-ping",
            &[
                "--origin",
                &origin.url(),
                "--idle-timeout",
                "3s",
                "--header-read-timeout",
                "1s",
            ],
        )
        .await;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", pinged.port))
            .await
            .unwrap();
        let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let mut pings = conn.ping_pong().expect("ping_pong");
        let conn = tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let (resp, _) = send.send_request(h2_get("/items/1", &[]), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        drop(resp);
        let t0 = Instant::now();
        let mut answered = 0;
        while !conn.is_finished() && t0.elapsed() < Duration::from_secs(8) {
            let ping =
                tokio::time::timeout(Duration::from_millis(500), pings.ping(h2::Ping::opaque()));
            if let Ok(Ok(_)) = ping.await {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let lived = t0.elapsed();
        assert!(
            conn.is_finished(),
            "a pinging idle connection was never closed"
        );
        assert!(answered >= 3, "pings answered: {answered}");
        assert!(
            lived >= Duration::from_millis(2500) && lived < Duration::from_secs(7),
            "closed after {lived:?}: want the 3 s idle timeout"
        );
        drop(send);
    }

    // Header read: a connection that sends only the preface and no request
    // is closed at --header-read-timeout.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(6), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue, // the server's SETTINGS
                Err(_) => panic!("a silent HTTP/2 connection was never closed"),
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    // Rapid reset (CVE-2023-44487): streams opened and reset at once are
    // cut off — past the bound the connection is closed (GOAWAY) instead of
    // the gateway starting unbounded work; the origin is not flooded.
    let before = origin.gets();
    let (mut send, conn) = h2_connect(gw.port).await;
    let mut closed = false;
    for i in 0..2000 {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => {
                closed = true;
                break;
            }
        };
        match send.send_request(h2_get(&format!("/items/{}", 100 + i), &[]), true) {
            Ok((resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        closed || matches!(ended, Ok(Ok(Err(_)))),
        "2000 reset streams and the connection is still open"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        origin.gets() - before < 200,
        "reset streams reached the origin {} times",
        origin.gets() - before
    );
    // The gateway still serves.
    let ok = common::get(&gw.url("/items/1")).await;
    assert_eq!(ok.status, 200);
}

/// `h2load ARGS URL` (a real process, bounded by its own request count and
/// a 30 s timeout): its summary text.
fn h2load(args: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .args(["30", "h2load"])
        .args(args)
        .arg(url)
        .output()
        .expect("h2load is needed (Debian: nghttp2-client; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load {args:?} {url}: {text}");
    text
}

/// The `requests:` line of an h2load summary: (succeeded, failed, errored).
fn h2load_requests(summary: &str) -> (u64, u64, u64) {
    let line = summary
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no requests line: {summary}"));
    let count = |what: &str| {
        line.split(',')
            .find_map(|p| p.trim().strip_suffix(what)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {what} in {line}"))
    };
    (count("succeeded"), count("failed"), count("errored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_drives_http2_hits_over_h2c_and_tls() {
    let origin = VersionedOrigin::start(Duration::ZERO).await;
    let pki = Pki::new("h2load test CA");
    let (cert, key, _) = pki.write_leaf("gateway", "gateway.test");
    let tls = GatewayProcess::start(
        "h2load-tls",
        &[
            "--origin",
            &origin.url(),
            "--ttl",
            "1h",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let plain =
        GatewayProcess::start("h2load-h2c", &["--origin", &origin.url(), "--ttl", "1h"]).await;
    // 4 connections × 10 streams each, 4000 requests of one hot key: every
    // answer a hit after the first, one origin request per gateway.
    let load = ["-n", "4000", "-c", "4", "-m", "10"];
    let h2c = h2load(&load, &plain.url("/items/1"));
    assert!(h2c.contains("Application protocol: h2c"), "{h2c}");
    assert_eq!(h2load_requests(&h2c), (4000, 0, 0), "{h2c}");
    assert!(h2c.contains("status codes: 4000 2xx"), "{h2c}");
    let h2 = h2load(&load, &format!("https://127.0.0.1:{}/items/1", tls.port));
    assert!(h2.contains("Application protocol: h2"), "{h2}");
    assert_eq!(h2load_requests(&h2), (4000, 0, 0), "{h2}");
    assert!(h2.contains("status codes: 4000 2xx"), "{h2}");
    assert_eq!(
        origin.gets(),
        2,
        "one miss per gateway, every other request a hit"
    );
    // The first 40 streams arrive together: one rebuild, the rest collapsed
    // on it or hits.
    let count = |outcome: &'static str| plain.counter("stampede_requests_total", outcome);
    let hits = count("outcome=\"hit\"").await;
    let collapsed = count("outcome=\"collapsed\"").await;
    assert_eq!(
        hits + collapsed,
        3999.0,
        "hits {hits}, collapsed {collapsed}"
    );
}
