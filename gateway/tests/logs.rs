//! `--log-format json --access-log` on the real binary: every stderr line is
//! one JSON object; each request has one access event with its request id,
//! client address, method, path without the query, status, body bytes,
//! duration and cache outcome; the request id reaches the origin as
//! `X-Request-Id` (the client's own when it sent one) and comes back on the
//! answer (never another request's id echoed into a stored answer).

mod common;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use common::{send, serve};
use http::Method;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The access events written to `log` so far (every line must be JSON).
fn access_events(log: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l:?}"))
        })
        .filter(|v| v["target"] == "gateway::access")
        .collect()
}

#[tokio::test]
async fn json_access_log_and_request_ids() {
    // An origin that remembers the X-Request-Id of every request it gets.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = Router::new().route(
        "/items/{id}",
        get({
            let seen = seen.clone();
            move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let id = headers
                        .get("x-request-id")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(id.clone());
                    // Echoed, as some origins do: stored with the answer.
                    (
                        [
                            ("cache-control", "max-age=60".to_owned()),
                            ("x-request-id", id),
                        ],
                        "0123456789",
                    )
                }
            }
        }),
    );
    let origin = serve(app).await;

    let (port, admin) = (
        stampede_layer::testing::free_port(),
        stampede_layer::testing::free_port(),
    );
    let dir = std::env::temp_dir().join(format!("gateway-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr.log");
    let _gateway = Killed(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--origin", &format!("http://{origin}")])
            .args(["--instance", "logs-test", "--access-log"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gateway"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "gateway did not start");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // A miss with a query (a token) and no id: one is made for it.
    let miss = send(Method::GET, &url("/items/1?token=s3cret"), &[], "").await;
    assert_eq!(miss.status, 200);
    let made = miss.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    // A hit with the client's own id: kept, and sent back (not the id the
    // origin echoed into the stored answer).
    let hit = send(
        Method::GET,
        &url("/items/1?token=s3cret"),
        &[("x-request-id", "client-id-42")],
        "",
    )
    .await;
    assert_eq!(hit.headers["x-request-id"], "client-id-42");
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    // A miss with the client's id: the origin gets that one.
    let other = send(
        Method::GET,
        &url("/items/2"),
        &[("x-request-id", "client-id-43")],
        "",
    )
    .await;
    assert_eq!(other.headers["x-request-id"], "client-id-43");
    // An unusable id (a space): replaced.
    let bad = send(
        Method::GET,
        &url("/items/3"),
        &[("x-request-id", "a b")],
        "",
    )
    .await;
    let replaced = bad.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(replaced, "a b");
    assert_eq!(
        *seen.lock().unwrap(),
        [made.clone(), "client-id-43".into(), replaced.clone()],
        "the ids the origin received"
    );

    // The access events (written when the body is done: wait for them).
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = access_events(&log);
        if events.len() >= 4 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len(), 4, "{events:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("s3cret"), "the query string was logged");
    for (event, (id, cache, path)) in events.iter().zip([
        (made.as_str(), "miss", "/items/1"),
        ("client-id-42", "hit", "/items/1"),
        ("client-id-43", "miss", "/items/2"),
        (replaced.as_str(), "miss", "/items/3"),
    ]) {
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["request_id"], id, "{event}");
        assert_eq!(event["cache"], cache, "{event}");
        assert_eq!(event["path"], path, "{event}");
        assert_eq!(event["method"], "GET");
        assert_eq!(event["status"], 200);
        assert_eq!(event["bytes"], 10, "{event}");
        assert_eq!(event["completed"], true);
        assert!(
            event["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{event}"
        );
        let ms = event["duration_ms"].as_f64().expect("duration_ms");
        assert!(ms >= 0.0 && ms >= event["headers_ms"].as_f64().unwrap());
        assert!(
            event["cache_status"]
                .as_str()
                .is_some_and(|s| s.starts_with("stampede;")),
            "{event}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
