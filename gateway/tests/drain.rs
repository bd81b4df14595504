//! Issue 24: a shutdown that drains. On SIGTERM the gateway turns `/readyz`
//! to 503 `draining` at once, keeps serving for `--shutdown-delay` (so load
//! balancers stop sending it traffic before it goes), then closes its
//! listeners; requests in flight get `--shutdown-grace` to finish, then the
//! process exits anyway. SIGINT (Ctrl-C) skips the delay.
//!
//! Real processes: the gateway binary, signalled by PID, in front of a test
//! origin that takes its time.

mod common;

use common::{GatewayProcess, VersionedOrigin, get};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A GET of `path` on its own connection, read to the end: the whole answer,
/// or what arrived before the connection was cut.
async fn raw_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether the proxy listener still accepts connections.
async fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test]
async fn sigterm_turns_readiness_off_serves_through_the_delay_then_lets_requests_finish() {
    let origin = VersionedOrigin::start(Duration::ZERO).await;
    let mut gw = GatewayProcess::start(
        "drain",
        &[
            "--origin",
            &origin.url(),
            "--mitigations",
            "all",
            "--ttl",
            "60s",
            "--shutdown-delay",
            "1500ms",
            "--shutdown-grace",
            "10s",
        ],
    )
    .await;
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&gw.url("/items/1")).await.status, 200); // cached now

    // A slow rebuild in flight when the signal comes.
    origin.set_delay(Duration::from_millis(2500));
    let port = gw.port;
    let in_flight = tokio::spawn(async move { raw_get(port, "/items/2").await });
    origin.wait_gets(2).await;
    let signalled = Instant::now();
    gw.send_signal("-TERM");

    // Readiness off at once…
    let mut ready = get(&gw.admin_url("/readyz")).await;
    while ready.status == 200 && signalled.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ready = get(&gw.admin_url("/readyz")).await;
    }
    let flipped = signalled.elapsed();
    assert_eq!(
        (ready.status.as_u16(), ready.body.as_str()),
        (503, "draining\n")
    );
    assert!(
        flipped < Duration::from_millis(500),
        "readyz flipped after {flipped:?}"
    );

    // …while new requests are still served through the delay.
    let during = get(&gw.url("/items/1")).await;
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "the check ran too late"
    );
    assert_eq!(during.status, 200);
    assert!(during.is_hit(), "{}", during.cache_status());

    // Then the listener closes, no earlier than the delay.
    while accepts(port).await && signalled.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = signalled.elapsed();
    assert!(
        !accepts(port).await,
        "still accepting {closed:?} after SIGTERM"
    );
    assert!(
        closed >= Duration::from_millis(1400),
        "listener closed after {closed:?}, before --shutdown-delay"
    );

    // The request in flight gets its whole answer, and the process exits
    // cleanly once it is done — well before the grace.
    let answer = in_flight.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""id":2,"version":1}"#), "{answer}");
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    let exited = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {exited:?}"
    );
    assert!(exited < Duration::from_secs(5), "exited after {exited:?}");
    common::report(
        "drain::sigterm",
        serde_json::json!({
            "readyz_503_after_ms": flipped.as_millis(),
            "listener_closed_after_ms": closed.as_millis(),
            "exited_after_ms": exited.as_millis(),
        }),
    );
}

#[tokio::test]
async fn sigint_skips_the_delay_and_the_grace_bounds_requests_in_flight() {
    let origin = VersionedOrigin::start(Duration::from_secs(20)).await;
    let mut gw = GatewayProcess::start(
        "drain-int",
        &[
            "--origin",
            &origin.url(),
            "--shutdown-delay",
            "10s",
            "--shutdown-grace",
            "700ms",
        ],
    )
    .await;
    let port = gw.port;
    let in_flight = tokio::spawn(async move { raw_get(port, "/items/3").await });
    origin.wait_gets(1).await;
    let signalled = Instant::now();
    gw.send_signal("-INT");

    // No delay: the listener closes at once; the request in flight is cut at
    // the grace and the process exits (cleanly: the deadline is the plan).
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    let exited = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {exited:?}"
    );
    assert!(
        exited >= Duration::from_millis(600) && exited < Duration::from_secs(3),
        "exited after {exited:?} (grace 700 ms, delay skipped)"
    );
    assert!(!accepts(port).await);
    let answer = in_flight.await.unwrap();
    assert!(!answer.contains(" 200 "), "{answer}");
}
