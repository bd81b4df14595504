//! The real-traffic clients against an in-process origin-sim: the content
//! they expect is origin-sim's, byte for byte; bodies that are not, gzip to
//! a client that did not accept it, and other statuses are counted, not
//! served; a burst releases every client at once; populations get their
//! own `Accept-Encoding`.

use std::time::Duration;

use axum::http::header;
use stampede_bench::traffic::{Expect, TrafficConfig, blob, run_traffic, text};

async fn origin() -> String {
    let config = origin_sim::Config {
        items: 10,
        latency_ms: 1,
        ..origin_sim::Config::default()
    };
    let (addr, _task) = origin_sim::spawn(config).await.expect("origin starts");
    format!("http://{addr}")
}

fn cfg(target: &str, path: &str, expect: Expect) -> TrafficConfig {
    TrafficConfig {
        targets: vec![target.into()],
        path: path.into(),
        clients: 5,
        duration: None,
        accept_encodings: vec![],
        expect_status: 200,
        expect,
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn the_expected_content_is_origin_sims() {
    for n in [0, 1, 7, 8, 9, 1000, 65_537] {
        assert_eq!(blob(n), origin_sim::scenario::blob(0..n), "blob {n}");
        assert_eq!(text(n), origin_sim::scenario::text(n), "text {n}");
    }
    assert_eq!(
        stampede_bench::traffic::SLOW_BYTES,
        origin_sim::scenario::DEFAULT_SLOW_BYTES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_timed_and_every_byte_checked() {
    let o = origin().await;
    let path = "/blob/300000?first_byte_ms=300&total_ms=600";
    let s = run_traffic(&cfg(&o, path, Expect::Blob(300_000)))
        .await
        .unwrap();
    assert_eq!((s.requests, s.served, s.errors), (5, 5, 0));
    assert!(s.bodies_intact);
    assert_eq!(s.bytes, 5 * 300_000);
    assert!(
        (290.0..1000.0).contains(&s.first_byte.max_ms),
        "{:?}",
        s.first_byte
    );
    assert!(
        s.total.max_ms >= 590.0 && s.total.p50_ms >= 590.0,
        "{:?}",
        s.total
    );
    assert_eq!(s.status.get("200"), Some(&5));

    // Another length, other content, another status: not served.
    let s = run_traffic(&cfg(&o, "/blob/1000", Expect::Blob(1001)))
        .await
        .unwrap();
    assert_eq!((s.served, s.bad_bodies, s.errors), (0, 5, 5));
    let s = run_traffic(&cfg(&o, "/blob/1000", Expect::Text(1000)))
        .await
        .unwrap();
    assert_eq!((s.served, s.bad_bodies), (0, 5));
    assert!(!s.bodies_intact);
    let s = run_traffic(&cfg(&o, "/fail?delay_ms=10", Expect::Blob(10)))
        .await
        .unwrap();
    assert_eq!((s.served, s.unexpected_status), (0, 5));
    let fail = TrafficConfig {
        expect_status: 503,
        ..cfg(&o, "/fail?delay_ms=10", Expect::Any)
    };
    let s = run_traffic(&fail).await.unwrap();
    assert_eq!((s.served, s.errors), (5, 0));
    // Nobody listening: transport errors.
    let gone = cfg("http://127.0.0.1:9", "/blob/10", Expect::Blob(10));
    let s = run_traffic(&gone).await.unwrap();
    assert_eq!((s.transport_errors, s.errors), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populations_loop_with_their_own_accept_encoding() {
    let o = origin().await;
    let c = TrafficConfig {
        clients: 6,
        duration: Some(Duration::from_millis(500)),
        accept_encodings: vec![
            Some("gzip, deflate, br, zstd".into()),
            Some("gzip".into()),
            None,
        ],
        ..cfg(&o, "/negotiated?delay_ms=20&bytes=5000", Expect::Text(5000))
    };
    let s = run_traffic(&c).await.unwrap();
    assert!(s.requests >= 6 * 5, "looped: {}", s.requests);
    assert_eq!((s.served, s.errors, s.wrong_encoding), (s.requests, 0, 0));
    let p = &s.populations;
    assert_eq!(p.len(), 3);
    assert!(
        p[0].gzip == p[0].requests && p[1].gzip == p[1].requests && p[2].gzip == 0,
        "{p:?}"
    );
    assert_eq!(p[2].accept_encoding, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_to_a_client_that_did_not_accept_it_is_not_served() {
    // A front that always sends the gzip variant, whatever was asked.
    let o = origin().await;
    let gzip = origin_gzip(&o).await;
    let app = axum::Router::new().route(
        "/negotiated",
        axum::routing::get(move || {
            let body = gzip.clone();
            async move { ([(header::CONTENT_ENCODING, "gzip")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = TrafficConfig {
        clients: 2,
        accept_encodings: vec![Some("gzip".into()), None],
        ..cfg(
            &format!("http://{addr}"),
            "/negotiated?bytes=3000",
            Expect::Text(3000),
        )
    };
    let s = run_traffic(&c).await.unwrap();
    assert_eq!(
        (s.requests, s.served, s.wrong_encoding, s.bad_bodies),
        (2, 1, 1, 0)
    );
}

/// origin-sim's gzip answer for 3000 bytes of text, as sent.
async fn origin_gzip(origin: &str) -> Vec<u8> {
    let http = stampede_bench::procs::Http::default();
    let url = format!("{origin}/negotiated?bytes=3000");
    let req = http::Request::get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = http.client.request(req).await.unwrap();
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    use http_body_util::BodyExt as _;
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}
