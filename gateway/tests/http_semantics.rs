//! Black-box cases of issue 23 that the public cache suite's current
//! revision checks (the pinned npm package predates them): `Age` parsing,
//! an interim `103 Early Hints` before a cacheable answer, and an invalid
//! `CDN-Cache-Control`. A small origin sends exactly those headers; the
//! gateway runs strict (`--http-strict`: the origin's headers alone decide),
//! as the suite runs it.

mod common;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::serve;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// An origin answering `GET /h?age=A&age=B&cc=…&cdn=…`: `Date: now`, the
/// `Age` lines given (one line per `age`, in order), `Cache-Control: cc`
/// (default `max-age=3600`) and `CDN-Cache-Control: cdn` when given.
async fn header_origin() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    async fn answer(
        State(hits): State<Arc<AtomicU64>>,
        Query(q): Query<Vec<(String, String)>>,
    ) -> Response {
        hits.fetch_add(1, Ordering::SeqCst);
        let mut resp = "body".into_response();
        let h = resp.headers_mut();
        h.insert(
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now())
                .parse()
                .unwrap(),
        );
        let q: HashMap<String, Vec<String>> =
            q.into_iter().fold(HashMap::new(), |mut m, (k, v)| {
                m.entry(k).or_default().push(v);
                m
            });
        for age in q.get("age").into_iter().flatten() {
            h.append("age", age.parse().unwrap());
        }
        let cc = q
            .get("cc")
            .and_then(|v| v.first())
            .map_or("max-age=3600", |s| s.as_str());
        h.insert("cache-control", cc.parse().unwrap());
        if let Some(cdn) = q.get("cdn").and_then(|v| v.first()) {
            h.insert("cdn-cache-control", cdn.parse().unwrap());
        }
        resp
    }
    let hits2 = hits.clone();
    let addr = serve(Router::new().route("/h", get(answer)).with_state(hits2)).await;
    (addr, hits)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the second of two GETs of `query` was answered from the cache.
async fn reused(gw: &gateway::Spawned, query: &str) -> bool {
    let url = format!("http://{}/h?{query}", gw.addr);
    let first = common::get(&url).await;
    assert_eq!(first.status, 200, "{query}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = common::get(&url).await;
    second.is_hit()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_values_are_read_as_the_current_suite_expects() {
    let (origin, _) = header_origin().await;
    let gw = gateway::spawn(common::config(origin, "all", &["--http-strict"]))
        .await
        .unwrap();
    // (id in the suite, Age lines, max-age, reused?)
    let cases: &[(&str, &[&str], u32, bool)] = &[
        ("age-parse-nonnumeric", &["abc"], 3600, true),
        ("age-parse-negative", &["-7200"], 3600, true),
        ("age-parse-float", &["7200.0"], 3600, true),
        ("age-parse-large-minus-one", &["2147483647"], 3600, false),
        ("age-parse-large", &["2147483648"], 3600, false),
        ("age-parse-suffix", &["7200, 0"], 3600, false),
        ("age-parse-prefix", &["0, 7200"], 3600, true),
        ("age-parse-suffix-twoline", &["7200", "0"], 3600, false),
        ("age-parse-prefix-twoline", &["0", "7200"], 3600, true),
        ("age-parse-dup-0", &["0, 0"], 3600, true),
        ("age-parse-dup-0-twoline", &["0", "0"], 3600, true),
        ("age-parse-dup-old", &["3600", "3600"], 10000, true),
        ("age-parse-parameter", &["7200;foo=bar"], 3600, false),
        (
            "age-parse-numeric-parameter",
            &["7200;foo=111"],
            3600,
            false,
        ),
    ];
    for (id, ages, max_age, want) in cases {
        let mut q = format!("case={id}&cc={}", enc(&format!("max-age={max_age}")));
        for a in *ages {
            q += &format!("&age={}", enc(a));
        }
        assert_eq!(reused(&gw, &q).await, *want, "{id}: Age {ages:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_cdn_cache_control_is_ignored_and_no_store_applies() {
    let (origin, hits) = header_origin().await;
    let gw = gateway::spawn(common::config(origin, "all", &["--http-strict"]))
        .await
        .unwrap();
    for (case, cdn, want) in [
        ("cdn-cc-invalid-sh-type-wrong", "max-age=\"10000\"", false),
        (
            "cdn-cc-invalid-sh-type-unknown",
            "max-age=10000, &&&&&",
            false,
        ),
        ("cdn-fresh-cc-nostore", "max-age=10000", true),
    ] {
        let before = hits.load(Ordering::SeqCst);
        let q = format!("case={case}&cc=no-store&cdn={}", enc(cdn));
        assert_eq!(reused(&gw, &q).await, want, "{case}");
        let asked = hits.load(Ordering::SeqCst) - before;
        assert_eq!(asked, if want { 1 } else { 2 }, "{case}: origin requests");
    }
}

/// An origin on a raw socket: every request is answered `103 Early Hints`
/// (with `interim` headers), then a `200` with `fin` headers and body `hello`.
async fn early_hints_origin(
    interim: &'static str,
    fin: &'static str,
) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    // Read one request head.
                    let mut line = String::new();
                    let mut head = false;
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" && head => break,
                            Ok(_) => head = true,
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                    let answer = format!(
                        "HTTP/1.1 103 Early Hints\r\n{interim}\r\n\
                         HTTP/1.1 200 OK\r\nDate: {date}\r\n{fin}Content-Length: 5\r\n\r\nhello"
                    );
                    let s = stream.get_mut();
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_103_is_neither_stored_nor_changes_what_is_stored() {
    // interim-not-cached: a 103 before a cacheable 200; the 200 is stored
    // as it came, nothing of the 103 is (its headers are not on it).
    let (origin, requests) = early_hints_origin(
        "Link: </styles.css>; rel=preload; as=style\r\nX-My-Header: test\r\n",
        "Cache-Control: max-age=100000\r\n",
    )
    .await;
    let gw = gateway::spawn(common::config(origin, "all", &["--http-strict"]))
        .await
        .unwrap();
    let url = format!("http://{}/interim", gw.addr);
    let first = common::get(&url).await;
    assert_eq!((first.status.as_u16(), first.body.as_str()), (200, "hello"));
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    for resp in [&first, &common::get(&url).await] {
        assert!(
            !resp.headers.contains_key("x-my-header"),
            "{:?}",
            resp.headers
        );
        assert!(!resp.headers.contains_key("link"), "{:?}", resp.headers);
    }
    let second = common::get(&url).await;
    assert!(second.is_hit(), "{}", second.cache_status());
    assert_eq!(second.body, "hello");
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // The interim's caching headers change nothing: a 103 saying
    // `no-store` before a cacheable 200 — stored; a 103 saying
    // `max-age` before a `no-store` 200 — not stored.
    let (origin, requests) = early_hints_origin(
        "Cache-Control: no-store\r\n",
        "Cache-Control: max-age=100000\r\n",
    )
    .await;
    let gw = gateway::spawn(common::config(origin, "all", &["--http-strict"]))
        .await
        .unwrap();
    let url = format!("http://{}/a", gw.addr);
    common::get(&url).await;
    assert!(common::get(&url).await.is_hit());
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    let (origin, requests) = early_hints_origin(
        "Cache-Control: max-age=100000\r\n",
        "Cache-Control: no-store\r\n",
    )
    .await;
    let gw = gateway::spawn(common::config(origin, "all", &["--http-strict"]))
        .await
        .unwrap();
    let url = format!("http://{}/b", gw.addr);
    common::get(&url).await;
    let again = common::get(&url).await;
    assert!(!again.is_hit(), "{}", again.cache_status());
    assert_eq!(again.body, "hello");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}
