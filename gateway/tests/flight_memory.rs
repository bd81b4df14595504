//! A flight of a large object to many clients keeps the gateway's memory
//! bounded by its streaming window, not by the object times the clients
//! (issue #20): a 50 MiB body, over `--max-object-size`, streamed from one
//! origin request to every client of the flight.
//!
//! `STAMPEDE_FLIGHT_CLIENTS` sets the clients (default 50 here;
//! `scripts/reliability.py` runs 200 on a release build).

mod common;

use common::{GatewayProcess, ScenarioOrigin, big_byte, report};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const OBJECT: u64 = 50 * MIB;
/// What the flight keeps of a body over the stored size (fill.rs).
const WINDOW: u64 = 4 * MIB;

/// The documented bound on the gateway's RSS growth: the window, what each
/// connection may hold queued (hyper's write buffer and the chunks it
/// references, 512 KiB), and 32 MiB of allocator slack.
fn bound(clients: u64) -> u64 {
    WINDOW + clients * MIB / 2 + 32 * MIB
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_of_a_large_object_to_many_clients_stays_within_the_window() {
    let clients: u64 = std::env::var("STAMPEDE_FLIGHT_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let origin = ScenarioOrigin::start().await;
    let origin_url = origin.url();
    let gw = GatewayProcess::start("flight", &["--origin", &origin_url]).await;
    // Warm the process up (its first allocations), then measure from there.
    common::get(&gw.url("/big/1024")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = gw.rss_bytes();
    // 50 MiB paced over 10 s: every client keeps up (5 MiB/s each).
    let path = format!("/big/{OBJECT}?first_ms=200&total_ms=10000&max_age=60");
    let started = Instant::now();
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            let url = gw.url(&path);
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
                let resp = client.get(url.parse().unwrap()).await.expect("request");
                let mut body = resp.into_body();
                let (mut len, mut intact) = (0u64, true);
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.expect("the body arrives whole").into_data() else {
                        continue;
                    };
                    // Every 4096th byte checked (all of them would cost more
                    // than the gateway's work).
                    for (i, b) in data.iter().enumerate().step_by(4096) {
                        intact &= *b == big_byte(len + i as u64);
                    }
                    len += data.len() as u64;
                }
                (len, intact)
            })
        })
        .collect();
    let mut peak = before;
    while !readers.iter().all(|r| r.is_finished()) {
        peak = peak.max(gw.rss_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in readers {
        let (len, intact) = r.await.unwrap();
        assert_eq!(len, OBJECT, "every client gets the whole body");
        assert!(intact, "bytes intact");
    }
    let growth = peak.saturating_sub(before);
    let requests = origin.requests("/big/52428800").len();
    report(
        "flight_memory::a_flight_of_a_large_object_to_many_clients_stays_within_the_window",
        serde_json::json!({
            "clients": clients,
            "object (MiB)": OBJECT / MIB,
            "origin requests": requests,
            "gateway RSS growth (MiB)": format!("{:.1}", growth as f64 / MIB as f64),
            "documented bound (MiB)": bound(clients) / MIB,
            "without sharing it would hold (MiB)": clients * OBJECT / MIB,
            "flight duration (s)": format!("{:.1}", started.elapsed().as_secs_f64()),
        }),
    );
    assert_eq!(requests, 1, "one origin request for the flight");
    assert!(
        growth <= bound(clients),
        "RSS grew {} MiB, bound {} MiB",
        growth / MIB,
        bound(clients) / MIB
    );
}
