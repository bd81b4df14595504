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

impl Answer {
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
            .stderr(std::process::Stdio::null())
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
            .status();
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
