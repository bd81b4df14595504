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
    pub async fn start(name: &str, args: &[&str]) -> Self {
        use stampede_layer::testing::free_port;
        let (port, admin) = (free_port(), free_port());
        let (listen, admin_listen) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
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

    /// Kill it now (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
