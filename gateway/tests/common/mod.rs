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
