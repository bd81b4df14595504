//! Shared helpers for the gateway tests: a tiny HTTP client and test origins.
#![allow(dead_code, unreachable_pub)]

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Whether a `Cache-Status` value says the answer came from the cache: its
/// `hit` parameter (not `detail=hit-for-miss`).
pub fn is_hit(cache_status: &str) -> bool {
    cache_status.split(';').any(|p| p.trim() == "hit")
}

impl Answer {
    /// Whether it came from the cache ([`is_hit`]).
    pub fn is_hit(&self) -> bool {
        is_hit(&self.cache_status())
    }

    pub fn cache_status(&self) -> String {
        self.headers
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(15), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(url: &str) -> Answer {
    send(Method::GET, url, &[], "").await
}

/// Serve `app` on an ephemeral 127.0.0.1 port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A gateway config pointing at `origin` with `mitigations`.
pub fn config(origin: SocketAddr, mitigations: &str, extra: &[&str]) -> gateway::Config {
    use clap::Parser;
    let origin = format!("http://{origin}");
    let mut args = vec!["gateway", "--origin", &origin, "--mitigations", mitigations];
    if !extra.contains(&"--upstream-timeout") {
        args.extend(["--upstream-timeout", "500ms"]);
    }
    args.extend_from_slice(extra);
    gateway::Config::try_parse_from(args).expect("valid test config")
}

/// Emit a figure for docs/RELIABILITY.md (collected by scripts/reliability.py
/// from `--nocapture` output).
pub fn report(test: &str, figures: serde_json::Value) {
    eprintln!(
        "RELIABILITY {}",
        serde_json::json!({ "test": test, "figures": figures })
    );
}

/// The gateway binary on free 127.0.0.1 ports (proxy and admin listeners,
/// `--instance name`), killed (by PID) when dropped.
pub struct GatewayProcess {
    child: std::process::Child,
    pub port: u16,
    pub admin: u16,
}

impl GatewayProcess {
    /// Start it with `args` besides its addresses and name; wait (at most
    /// 10 s) until both listeners accept connections.
    ///
    /// `STAMPEDE_TEST_GATEWAY_BIN` names another gateway binary to run
    /// instead (an older build: how a hostile test is shown to fail before
    /// its fix).
    pub async fn start(name: &str, args: &[&str]) -> Self {
        use stampede_layer::testing::free_port;
        let (port, admin) = (free_port(), free_port());
        let (listen, admin_listen) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
        let bin = std::env::var("STAMPEDE_TEST_GATEWAY_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_gateway").to_owned());
        let child = std::process::Command::new(bin)
            .args(["--listen", &listen, "--admin-listen", &admin_listen])
            .args(["--instance", name])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(
                if std::env::var_os("STAMPEDE_TEST_GATEWAY_STDERR").is_some() {
                    std::process::Stdio::inherit()
                } else {
                    std::process::Stdio::null()
                },
            )
            .spawn()
            .expect("start gateway");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for p in [port, admin] {
            while tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .is_err()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "gateway {name} did not start"
                );
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        GatewayProcess { child, port, admin }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size now (Linux `/proc`), bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    /// Send it a signal by PID (`-HUP`, …).
    pub fn send_signal(&self, sig: &str) {
        self.signal(sig);
    }

    /// `path` on its proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `path` on its admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// A counter's value from the admin listener's `/metrics`, summed over
    /// the series whose labels contain `label` ("" for all).
    pub async fn counter(&self, name: &str, label: &str) -> f64 {
        let text = get(&self.admin_url("/metrics")).await.body;
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Freeze it (SIGSTOP, by PID): a GC pause, a slow VM.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaw it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {}", self.child.id());
    }

    fn resume_quietly(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Wait (at most `timeout`) for it to exit by itself; its exit status,
    /// or `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill it now (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.resume_quietly();
        self.kill();
    }
}

/// A test origin whose items have versions: `GET /items/{id}` answers
/// `{"id":…,"version":…}` (the version read when the request arrives, then
/// `delay` spent), `PUT /items/{id}` bumps the version. Counts its GETs.
#[derive(Clone)]
pub struct VersionedOrigin {
    pub addr: SocketAddr,
    state: std::sync::Arc<OriginState>,
}

#[derive(Default)]
struct OriginState {
    versions: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    delay_ms: std::sync::atomic::AtomicU64,
    gets: std::sync::atomic::AtomicU64,
}

impl VersionedOrigin {
    pub async fn start(delay: Duration) -> Self {
        use axum::extract::{Path, State};
        use axum::routing::get;
        use std::sync::atomic::Ordering;
        let state = std::sync::Arc::new(OriginState::default());
        state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        async fn read(State(s): State<std::sync::Arc<OriginState>>, Path(id): Path<u64>) -> String {
            s.gets.fetch_add(1, Ordering::SeqCst);
            let version = *s.versions.lock().unwrap().entry(id).or_insert(1);
            let delay = s.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            format!("{{\"id\":{id},\"version\":{version}}}")
        }
        async fn bump(State(s): State<std::sync::Arc<OriginState>>, Path(id): Path<u64>) -> String {
            let mut versions = s.versions.lock().unwrap();
            let v = versions.entry(id).or_insert(1);
            *v += 1;
            format!("{{\"id\":{id},\"version\":{v}}}")
        }
        let app = Router::new()
            .route("/items/{id}", get(read).put(bump))
            .with_state(state.clone());
        let addr = serve(app).await;
        VersionedOrigin { addr, state }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GETs served (or started) so far.
    pub fn gets(&self) -> u64 {
        self.state.gets.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bump item `id`'s version at the origin itself (behind the caches' backs).
    pub fn update(&self, id: u64) -> u64 {
        let mut versions = self.state.versions.lock().unwrap();
        let v = versions.entry(id).or_insert(1);
        *v += 1;
        *v
    }

    /// Change how long each GET takes.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Wait until `n` GETs have started (at most 10 s).
    pub async fn wait_gets(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.gets() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "origin saw {} GETs, want {n}",
                self.gets()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The `version` of an origin answer's JSON body (`None`: not an item).
pub fn version(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("version")?.as_u64()
}

/// The byte at `offset` of a [`ScenarioOrigin`] big body: every byte of a
/// body can be checked, not only its length.
pub fn big_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 13)) as u8
}

/// Whether `body` is the first `len` bytes of a big body, whole.
pub fn big_body_intact(body: &[u8], len: u64) -> bool {
    body.len() as u64 == len
        && body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == big_byte(i as u64))
}

/// One origin request: its path and when it started and ended (since the
/// origin started).
#[derive(Clone, Debug)]
pub struct OriginRequest {
    pub path: String,
    pub start: Duration,
    pub end: Option<Duration>,
}

/// A test origin for the herd shapes of issue #20, recording every request:
///
/// * `GET /big/{bytes}?first_ms=&total_ms=&max_age=`: a deterministic body
///   ([`big_byte`]), its first byte after `first_ms`, the rest paced to end
///   at `total_ms`; `Cache-Control: max-age` when given;
/// * `GET /fail?ms=`: `503` with `Cache-Control: no-store` after `ms`;
/// * `GET /slow?ms=&max_age=`: `200` after `ms`;
/// * `GET /negotiated?ms=&max_age=`: `Vary: Accept-Encoding` after `ms`; gzip
///   when the request accepts it, identity otherwise (the same text either way).
#[derive(Clone)]
pub struct ScenarioOrigin {
    pub addr: SocketAddr,
    started: std::time::Instant,
    log: std::sync::Arc<std::sync::Mutex<Vec<OriginRequest>>>,
}

/// The text `/negotiated` answers (before any compression).
pub const NEGOTIATED_TEXT: &str = "negotiated representation: the same words, compressed or not. ";

impl ScenarioOrigin {
    pub async fn start() -> Self {
        use axum::extract::{Path, Query, State};
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;
        use std::collections::HashMap;
        type Log = std::sync::Arc<std::sync::Mutex<Vec<OriginRequest>>>;

        #[derive(Clone)]
        struct St {
            started: std::time::Instant,
            log: Log,
        }
        /// Records the request's end when dropped (however it ends).
        struct Done(St, usize);
        impl Drop for Done {
            fn drop(&mut self) {
                let end = self.0.started.elapsed();
                self.0.log.lock().unwrap()[self.1].end = Some(end);
            }
        }
        fn begin(s: &St, path: String) -> Done {
            let mut log = s.log.lock().unwrap();
            log.push(OriginRequest {
                path,
                start: s.started.elapsed(),
                end: None,
            });
            Done(s.clone(), log.len() - 1)
        }
        fn ms(q: &HashMap<String, String>, k: &str) -> u64 {
            q.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
        }
        fn cache_control(q: &HashMap<String, String>) -> Option<String> {
            q.get("max_age").map(|a| format!("max-age={a}"))
        }

        async fn big(
            State(s): State<St>,
            Path(bytes): Path<u64>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            let done = begin(&s, format!("/big/{bytes}"));
            let (first, total) = (ms(&q, "first_ms"), ms(&q, "total_ms"));
            tokio::time::sleep(Duration::from_millis(first)).await;
            const CHUNK: u64 = 64 * 1024;
            let chunks = bytes.div_ceil(CHUNK).max(1);
            let pace = Duration::from_millis(total.saturating_sub(first)) / chunks as u32;
            let stream = futures_util::stream::unfold(0u64, move |offset| async move {
                if offset >= bytes {
                    return None;
                }
                if offset > 0 {
                    tokio::time::sleep(pace).await;
                }
                let end = (offset + CHUNK).min(bytes);
                let data: Vec<u8> = (offset..end).map(big_byte).collect();
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(data)), end))
            });
            let stream = futures_util::StreamExt::chain(
                stream,
                futures_util::stream::once(async move {
                    drop(done);
                    Ok(Bytes::new())
                }),
            );
            let mut resp = Response::new(axum::body::Body::from_stream(stream));
            let h = resp.headers_mut();
            h.insert("content-length", bytes.into());
            h.insert("content-type", "application/octet-stream".parse().unwrap());
            if let Some(cc) = cache_control(&q) {
                h.insert("cache-control", cc.parse().unwrap());
            }
            resp
        }

        async fn fail(State(s): State<St>, Query(q): Query<HashMap<String, String>>) -> Response {
            let _done = begin(&s, "/fail".into());
            tokio::time::sleep(Duration::from_millis(ms(&q, "ms"))).await;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("cache-control", "no-store")],
                "origin overloaded",
            )
                .into_response()
        }

        async fn slow(State(s): State<St>, Query(q): Query<HashMap<String, String>>) -> Response {
            let _done = begin(&s, "/slow".into());
            tokio::time::sleep(Duration::from_millis(ms(&q, "ms"))).await;
            let cc = cache_control(&q).unwrap_or_else(|| "max-age=60".into());
            ([("cache-control", cc)], "slow answer").into_response()
        }

        async fn negotiated(
            State(s): State<St>,
            Query(q): Query<HashMap<String, String>>,
            headers: HeaderMap,
        ) -> Response {
            let _done = begin(&s, "/negotiated".into());
            tokio::time::sleep(Duration::from_millis(ms(&q, "ms"))).await;
            let gzip = headers
                .get_all("accept-encoding")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|c| c.trim().split(';').next() == Some("gzip"));
            let text = NEGOTIATED_TEXT.repeat(200);
            let cc = cache_control(&q).unwrap_or_else(|| "max-age=60".into());
            if gzip {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(text.as_bytes()).unwrap();
                let body = enc.finish().unwrap();
                (
                    [
                        ("vary", "Accept-Encoding"),
                        ("content-encoding", "gzip"),
                        ("cache-control", cc.as_str()),
                    ],
                    body,
                )
                    .into_response()
            } else {
                (
                    [("vary", "Accept-Encoding"), ("cache-control", cc.as_str())],
                    text,
                )
                    .into_response()
            }
        }

        let st = St {
            started: std::time::Instant::now(),
            log: Log::default(),
        };
        let app = Router::new()
            .route("/big/{bytes}", get(big))
            .route("/fail", get(fail))
            .route("/slow", get(slow))
            .route("/negotiated", get(negotiated))
            .with_state(st.clone());
        let addr = serve(app).await;
        ScenarioOrigin {
            addr,
            started: st.started,
            log: st.log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests of paths starting with `prefix` so far.
    pub fn requests(&self, prefix: &str) -> Vec<OriginRequest> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The most requests of `prefix` that were in flight at once.
    pub fn max_in_flight(&self, prefix: &str) -> usize {
        let now = self.started.elapsed();
        let reqs = self.requests(prefix);
        reqs.iter()
            .map(|r| {
                reqs.iter()
                    .filter(|o| o.start <= r.start && o.end.unwrap_or(now) > r.start)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// A streaming GET: status, `Cache-Status`, the time to the first body
/// byte (from `since`), and the body.
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub first_byte: Duration,
    pub done: Duration,
    pub body: Bytes,
}

pub async fn get_streamed(
    url: &str,
    headers: &[(&str, &str)],
    since: std::time::Instant,
) -> Streamed {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut first_byte = None;
    let mut all = bytes::BytesMut::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("body timed out")
    {
        let Ok(data) = frame.expect("body failed").into_data() else {
            continue;
        };
        if !data.is_empty() && first_byte.is_none() {
            first_byte = Some(since.elapsed());
        }
        all.extend_from_slice(&data);
    }
    let done = since.elapsed();
    Streamed {
        status,
        headers,
        first_byte: first_byte.unwrap_or(done),
        done,
        body: all.freeze(),
    }
}

/// A private CA made for one test, and leaf certificates it signs (for
/// `localhost` and 127.0.0.1), as PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM): what `--origin-ca` / `--redis-ca` trust.
    pub ca: std::path::PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir,
            ca,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A new leaf certificate and key (PEM) for `localhost` and 127.0.0.1,
    /// common name `cn`.
    pub fn leaf(&self, cn: &str) -> (String, String) {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// Write a new leaf as `<name>.crt` and `<name>.key` (each replaced
    /// whole, by rename); returns their paths and the certificate's DER.
    pub fn write_leaf(
        &self,
        name: &str,
        cn: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
        let (cert, key) = self.leaf(cn);
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        for (path, text) in [(&cert_path, &cert), (&key_path, &key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (cert_path, key_path, pem_der(&cert))
    }
}

/// The DER of the first certificate in `pem`.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki::pem::PemObject;
    rustls_pki::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// `rustls`'s re-export of the PKI types.
pub use rustls::pki_types as rustls_pki;

/// A rustls client trusting only `ca` (PEM file).
pub fn tls_client(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in gateway::tls::read_certificates(ca, "ca").unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The leaf certificate (DER) a TLS server at `addr` answers with, as a
/// client trusting `ca` sees it (`Err`: the handshake failed).
pub async fn served_certificate(addr: SocketAddr, ca: &std::path::Path) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), tls_client(ca).connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(certs[0].to_vec())
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
