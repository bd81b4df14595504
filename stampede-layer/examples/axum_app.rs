//! An axum app whose slow handler (`/items/{id}`, 200 ms) sits behind
//! `StampedeLayer` with every mitigation on and the in-process store.
//!
//! ```text
//! cargo run -p stampede-layer --example axum_app                      # serve on 127.0.0.1:3000
//! cargo run -p stampede-layer --example axum_app -- --listen 127.0.0.1:4000
//! cargo run -p stampede-layer --example axum_app -- --once            # self-test, then exit
//! ```
//!
//! `--once` binds a free port, requests `/items/1` from itself twice (a miss,
//! then a hit), prints each `Cache-Status` and exits: a smoke test for CI.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede_layer::{MemoryStore, Mitigations, StampedeLayer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The origin's data: one version counter shared by every item.
type Version = Arc<AtomicU64>;

/// The slow origin handler: 200 ms per item, 404 outside 1..=1000.
async fn item(State(version): State<Version>, Path(id): Path<u64>) -> Response {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let json = [(header::CONTENT_TYPE, "application/json")];
    if !(1..=1000).contains(&id) {
        return (StatusCode::NOT_FOUND, json, r#"{"error":"no such item"}"#).into_response();
    }
    let version = version.load(Ordering::Relaxed);
    (json, format!(r#"{{"id":{id},"version":{version}}}"#)).into_response()
}

/// The write path: bumps the version; through the cache it invalidates the entry.
async fn bump(State(version): State<Version>) -> StatusCode {
    version.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn index() -> &'static str {
    "try: curl -i http://HOST/items/1 (twice: a miss, then a hit; see Cache-Status)\n"
}

fn app() -> Router {
    // The stack, as one tower layer: infallible (an origin failure no stale
    // copy can stand in for is answered 502/504), so `Router::layer` takes it
    // as is; one origin budget and one set of flights for every route.
    let stampede = StampedeLayer::new(Arc::new(MemoryStore::default()))
        .mitigations(Mitigations::ALL)
        .ttl(Duration::from_secs(5))
        .stale_ttl(Duration::from_secs(5))
        .negative_ttl(Duration::from_secs(2));
    Router::new()
        .route("/items/{id}", get(item).put(bump))
        // Only the routes above go through the cache; `/` below does not.
        .route_layer(stampede)
        .route("/", get(index))
        .with_state(Version::new(AtomicU64::new(1)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let once = args.iter().any(|a| a == "--once");
    let listen: SocketAddr = match args.iter().position(|a| a == "--listen") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--listen needs an address")?
            .parse()?,
        None if once => "127.0.0.1:0".parse()?,
        None => "127.0.0.1:3000".parse()?,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app()).await });

    if !once {
        println!("listening on http://{addr}");
        println!("  curl -si http://{addr}/items/1 | grep -i cache-status   # miss: ~200 ms");
        println!("  curl -si http://{addr}/items/1 | grep -i cache-status   # hit: instant");
        println!("  curl -si http://{addr}/items/5000                       # 404, cached for 2 s");
        println!(
            "  curl -si -X PUT http://{addr}/items/1                   # bumps the version and invalidates"
        );
        server.await??;
        return Ok(());
    }

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}/items/1").parse()?;
    let run = async {
        for _ in 0..2 {
            let started = Instant::now();
            let resp = client.get(uri.clone()).await?;
            let status = resp.status();
            let cache_status = resp
                .headers()
                .get("cache-status")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_default();
            let body = resp.into_body().collect().await?.to_bytes();
            println!(
                "GET {uri} -> {status} in {:?}; Cache-Status: {cache_status}; body: {}",
                started.elapsed(),
                String::from_utf8_lossy(&body)
            );
            if !status.is_success() || cache_status.is_empty() {
                return Err::<(), Box<dyn std::error::Error>>("unexpected answer".into());
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), run).await??;
    server.abort();
    Ok(())
}
