//! Safe coalescing (issue #9): a request that joins another's rebuild — a
//! single-flight follower in one gateway, or a lock waiter in another gateway
//! of a Redis fleet — gets the leader's answer only where a shared cache could
//! have served it to that follower from storage. Every test fires concurrent
//! clients at an origin that takes 600 ms per answer and asserts each client
//! got *its own* correct answer, on one gateway and on two gateways sharing
//! one real Redis.

mod common;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Answer, send, serve};
use http::Method;
use stampede_layer::testing::RedisServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SLOW: Duration = Duration::from_millis(600);
const DOC: &str = "0123456789abcdef";

/// The origin: every answer takes [`SLOW`]; `calls` counts them per path.
#[derive(Clone, Default)]
struct Calls(Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>);

impl Calls {
    fn of(&self, path: &str) -> u64 {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn origin() -> (SocketAddr, Calls) {
    let calls = Calls::default();
    let seq = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let calls = c.clone();
        let seq = seq.clone();
        async move {
            *calls
                .0
                .lock()
                .unwrap()
                .entry(uri.path().to_owned())
                .or_default() += 1;
            tokio::time::sleep(SLOW).await;
            answer(&uri, &headers, seq.fetch_add(1, Ordering::SeqCst))
        }
    });
    (serve(app).await, calls)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn answer(uri: &Uri, h: &HeaderMap, n: u64) -> Response {
    let path = uri.path();
    if path.contains("/../") || path.contains("/./") {
        // An origin that redirects raw dot segments to the clean path.
        let key = stampede_layer::store::CacheKey::new(&Method::GET, uri);
        let clean = key.display().trim_start_matches("GET ").to_owned();
        return (
            StatusCode::MOVED_PERMANENTLY,
            [("location", clean)],
            "moved",
        )
            .into_response();
    }
    match path {
        "/cookie" => (
            [("set-cookie", format!("sid=session-{n}; HttpOnly"))],
            format!("welcome, session-{n}"),
        )
            .into_response(),
        "/private" => (
            [("cache-control", "private, max-age=60")],
            format!("account page of {}", header(h, "x-user")),
        )
            .into_response(),
        "/lang" => {
            let lang = header(h, "accept-language").to_owned();
            ([("vary", "Accept-Language")], format!("hello in {lang}")).into_response()
        }
        "/doc" => doc(h),
        p if p.starts_with("/items/") => format!("item {}", &p[7..]).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A representation that honours `If-None-Match` and single byte ranges, as
/// most origins (and every static file server) do.
fn doc(h: &HeaderMap) -> Response {
    let etag = "\"doc-v1\"";
    if header(h, "if-none-match") == etag {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    if let Some(spec) = header(h, "range").strip_prefix("bytes=")
        && let Some((a, b)) = spec.split_once('-')
        && let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>())
    {
        return (
            StatusCode::PARTIAL_CONTENT,
            [
                ("etag", etag.to_owned()),
                ("content-range", format!("bytes {a}-{b}/{}", DOC.len())),
            ],
            DOC[a..=b].to_owned(),
        )
            .into_response();
    }
    ([("etag", etag)], DOC).into_response()
}

/// The full stack, a long TTL, an upstream timeout above the origin's 600 ms.
fn config(origin: SocketAddr, extra: &[&str]) -> gateway::Config {
    use clap::Parser;
    let origin = format!("http://{origin}");
    let mut args = vec![
        "gateway",
        "--origin",
        &origin,
        "--mitigations",
        "all",
        "--ttl",
        "30s",
    ];
    args.extend_from_slice(extra);
    gateway::Config::try_parse_from(args).expect("valid test config")
}

/// One gateway on the in-process store, or two on one Redis (requests
/// alternate between them, so the second one's clients are lock waiters).
struct Topology {
    gateways: Vec<gateway::Spawned>,
    _redis: Option<RedisServer>,
}

impl Topology {
    async fn single(origin: SocketAddr) -> Self {
        let gw = gateway::spawn(config(origin, &[])).await.unwrap();
        Topology {
            gateways: vec![gw],
            _redis: None,
        }
    }

    async fn fleet(origin: SocketAddr) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut gateways = Vec::new();
        for _ in 0..2 {
            let gw = gateway::spawn(config(origin, &["--redis", &url, "--lock-wait", "3s"]))
                .await
                .unwrap();
            gateways.push(gw);
        }
        Topology {
            gateways,
            _redis: Some(redis),
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.gateways[i % self.gateways.len()].addr
        )
    }

    /// Fire `clients` concurrently (each 30 ms after the previous, so the
    /// first is the leader and the rest join its 600 ms rebuild).
    async fn race(&self, path: &str, clients: &[&[(&str, &str)]]) -> Vec<Answer> {
        let futures = clients.iter().enumerate().map(|(i, headers)| {
            let url = self.url(i, path);
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            async move {
                tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                send(Method::GET, &url, &h, "").await
            }
        });
        futures_util::future::join_all(futures).await
    }

    async fn shutdown(self) {
        for gw in self.gateways {
            gw.shutdown().await.unwrap();
        }
    }
}

async fn both(check: impl AsyncFn(&Topology, &Calls, &str)) {
    for fleet in [false, true] {
        let (addr, calls) = origin().await;
        let topo = if fleet {
            Topology::fleet(addr).await
        } else {
            Topology::single(addr).await
        };
        check(&topo, &calls, if fleet { "fleet" } else { "single" }).await;
        topo.shutdown().await;
    }
}

#[tokio::test]
async fn set_cookie_is_never_shared() {
    both(async |t, calls, name| {
        const NONE: &[(&str, &str)] = &[];
        let answers = t.race("/cookie", &[NONE; 5]).await;
        let mut cookies: Vec<&str> = answers
            .iter()
            .map(|a| a.headers["set-cookie"].to_str().unwrap())
            .collect();
        for a in &answers {
            assert_eq!(a.status, 200, "{name}");
            let cookie = a.headers["set-cookie"].to_str().unwrap();
            let sid = cookie.split(';').next().unwrap().trim_start_matches("sid=");
            assert_eq!(
                a.body,
                format!("welcome, {sid}"),
                "{name}: body and cookie match"
            );
        }
        cookies.sort();
        cookies.dedup();
        assert_eq!(
            cookies.len(),
            5,
            "{name}: every client its own session: {cookies:?}"
        );
        assert_eq!(calls.of("/cookie"), 5, "{name}");
        // Hit-for-miss: the next request goes straight to the origin, and says so.
        let next = send(Method::GET, &t.url(0, "/cookie"), &[], "").await;
        let cs = next.cache_status();
        assert!(
            cs.contains("fwd=bypass") && cs.contains("hit-for-miss"),
            "{name}: {cs}"
        );
    })
    .await;
}

#[tokio::test]
async fn private_pages_are_never_shared() {
    both(async |t, _calls, name| {
        let users = ["alice", "bob", "carol", "dave"];
        let headers: Vec<[(&str, &str); 1]> = users.iter().map(|u| [("x-user", *u)]).collect();
        let clients: Vec<&[(&str, &str)]> = headers.iter().map(|h| &h[..]).collect();
        let answers = t.race("/private", &clients).await;
        for (user, a) in users.iter().zip(&answers) {
            assert_eq!(a.status, 200, "{name}");
            assert_eq!(a.body, format!("account page of {user}"), "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn each_client_gets_its_own_variant() {
    both(async |t, calls, name| {
        let langs = ["en", "fr", "de", "ja", "fr"];
        let headers: Vec<[(&str, &str); 1]> =
            langs.iter().map(|l| [("accept-language", *l)]).collect();
        let clients: Vec<&[(&str, &str)]> = headers.iter().map(|h| &h[..]).collect();
        let answers = t.race("/lang", &clients).await;
        for (lang, a) in langs.iter().zip(&answers) {
            assert_eq!(a.status, 200, "{name}");
            assert_eq!(a.body, format!("hello in {lang}"), "{name}");
        }
        // Four variants: at most one rebuild each (the two fr clients share
        // one). Across a fleet the fr waiter on the other gateway re-reads the
        // store, which keeps one variant per key: when the de/ja fills land
        // over the fr one before its next poll, it fetches its own — one more
        // call, never another client's answer (the bodies above).
        let bound = if name == "single" { 4 } else { 5 };
        assert!(
            calls.of("/lang") <= bound,
            "{name}: {} calls",
            calls.of("/lang")
        );
    })
    .await;
}

#[tokio::test]
async fn a_range_request_never_answers_a_plain_one() {
    both(async |t, calls, name| {
        // The Range client leads; plain clients join its rebuild.
        let answers = t
            .race(
                "/doc",
                &[
                    &[("range", "bytes=0-3")],
                    &[],
                    &[],
                    &[("range", "bytes=4-7")],
                ],
            )
            .await;
        assert_eq!(answers[0].status, 206, "{name}");
        assert_eq!(answers[0].body, "0123", "{name}");
        assert_eq!(
            answers[0].headers["content-range"], "bytes 0-3/16",
            "{name}"
        );
        for a in &answers[1..3] {
            assert_eq!(a.status, 200, "{name}: {}", a.cache_status());
            assert_eq!(a.body, DOC, "{name}");
        }
        assert_eq!(answers[3].status, 206, "{name}");
        assert_eq!(answers[3].body, "4567", "{name}");
        assert_eq!(
            calls.of("/doc"),
            1,
            "{name}: one full rebuild serves all four"
        );
        // From storage too: a range, an unsatisfiable range, a plain GET.
        let r = send(
            Method::GET,
            &t.url(0, "/doc"),
            &[("range", "bytes=10-")],
            "",
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (206, "abcdef"),
            "{name}"
        );
        let r = send(
            Method::GET,
            &t.url(1, "/doc"),
            &[("range", "bytes=99-")],
            "",
        )
        .await;
        assert_eq!(r.status, 416, "{name}");
        assert_eq!(r.headers["content-range"], "bytes */16", "{name}");
        let r = send(Method::GET, &t.url(0, "/doc"), &[], "").await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, DOC), "{name}");
    })
    .await;
}

#[tokio::test]
async fn a_conditional_request_never_answers_a_plain_one() {
    both(async |t, calls, name| {
        let answers = t
            .race(
                "/doc",
                &[
                    &[("if-none-match", "\"doc-v1\"")],
                    &[],
                    &[],
                    &[("if-none-match", "\"other\"")],
                ],
            )
            .await;
        assert_eq!(answers[0].status, 304, "{name}");
        assert_eq!(answers[0].body, "", "{name}");
        for a in &answers[1..] {
            assert_eq!(a.status, 200, "{name}: {}", a.cache_status());
            assert_eq!(a.body, DOC, "{name}");
        }
        assert_eq!(calls.of("/doc"), 1, "{name}");
        // From storage: a matching validator gets 304, a stale one 200.
        let r = send(
            Method::GET,
            &t.url(1, "/doc"),
            &[("if-none-match", "\"doc-v1\"")],
            "",
        )
        .await;
        assert_eq!(r.status, 304, "{name}");
        assert!(
            r.cache_status().contains("hit"),
            "{name}: {}",
            r.cache_status()
        );
    })
    .await;
}

#[tokio::test]
async fn a_raw_dot_segment_cannot_change_what_the_clean_key_serves() {
    both(async |t, calls, name| {
        let raw = send(Method::GET, &t.url(0, "/x/../items/42"), &[], "").await;
        // Either refused, or forwarded in its normalised form.
        assert!(
            raw.status == 400 || (raw.status == 200 && raw.body == "item 42"),
            "{name}: {} {}",
            raw.status,
            raw.body
        );
        const NONE: &[(&str, &str)] = &[];
        let answers = t.race("/items/42", &[NONE; 3]).await;
        for a in &answers {
            assert_eq!(a.status, 200, "{name}: {}", a.cache_status());
            assert_eq!(a.body, "item 42", "{name}");
        }
        assert_eq!(
            calls.of("/x/../items/42"),
            0,
            "{name}: the raw target never reaches the origin"
        );
    })
    .await;
}
