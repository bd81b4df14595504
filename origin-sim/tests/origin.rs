//! End-to-end tests: real HTTP over 127.0.0.1 against `origin_sim::spawn`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{CACHE_CONTROL, ETAG, HeaderMap, LAST_MODIFIED};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use origin_sim::Config;
use serde_json::{Value, json};

/// Every test finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .unwrap();
        let resp = self.client.request(req).await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
}

async fn start(config: Config) -> Http {
    let (addr, _task) = origin_sim::spawn(config).await.expect("origin starts");
    Http::new(addr)
}

fn small(latency_ms: u64) -> Config {
    Config {
        items: 20,
        latency_ms,
        db_connections: 4,
        ..Config::default()
    }
}

/// Sum of an unlabelled Prometheus sample, e.g. `origin_pool_wait_seconds_sum`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn items_answer_200_and_404() {
    bounded(async {
        let http = start(small(5)).await;

        let a = http.get("/items/3").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            a.headers.get(CACHE_CONTROL).is_none(),
            "no caching headers by default"
        );
        let v = a.json();
        assert_eq!(v["id"], 3);
        assert_eq!(v["version"], 1);
        assert_eq!(v["name"], "item 3");
        assert!(v["payload"].as_str().unwrap().len() >= 200);

        assert_eq!(http.get("/items/20").await.status, StatusCode::OK);
        for (path, id) in [
            ("/items/21", json!(21)),
            ("/items/0", json!(0)),
            ("/items/-4", json!(-4)),
            ("/items/abc", Value::Null),
        ] {
            let a = http.get(path).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(a.json(), json!({"error": "not found", "id": id}), "{path}");
        }
        assert_eq!(http.get("/healthz").await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn cache_control_only_when_configured() {
    bounded(async {
        let http = start(Config {
            cache_control: Some("public, max-age=5".into()),
            ..small(1)
        })
        .await;
        for path in ["/items/1", "/items/999"] {
            let a = http.get(path).await;
            assert_eq!(a.headers[CACHE_CONTROL], "public, max-age=5", "{path}");
        }
    })
    .await;
}

/// `GET /items/4` with these headers.
async fn get(http: &Http, headers: &[(&str, &str)]) -> Answer {
    http.call_with(Method::GET, "/items/4", None, headers).await
}

#[tokio::test]
async fn validators_answer_304_without_a_body_and_stats_count_bytes() {
    bounded(async {
        // Off by default: no validators, conditions ignored.
        let plain = start(small(1)).await;
        let a = get(&plain, &[("if-none-match", "*")]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.headers.get(ETAG).is_none() && a.headers.get(LAST_MODIFIED).is_none());

        let http = start(Config {
            validators: true,
            cache_control: Some("max-age=2".into()),
            ..small(1)
        })
        .await;
        let a = get(&http, &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        let etag = a.headers[ETAG].to_str().unwrap().to_owned();
        let modified = a.headers[LAST_MODIFIED].to_str().unwrap().to_owned();
        assert_eq!(etag, "\"4-1\"");
        let body_len = a.body.len() as u64;

        for h in [
            vec![("if-none-match", etag.as_str())],
            vec![("if-none-match", "\"x\", W/\"4-1\"")],
            vec![("if-none-match", "*")],
            vec![("if-modified-since", modified.as_str())],
            vec![("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
        ] {
            let a = get(&http, &h).await;
            assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{h:?}");
            assert!(a.body.is_empty());
            assert_eq!(a.headers[ETAG], etag.as_str());
            assert_eq!(a.headers[CACHE_CONTROL], "max-age=2");
        }
        for h in [
            vec![("if-none-match", "\"4-0\"")],
            // If-None-Match decides when present, even if the date matches.
            vec![
                ("if-none-match", "\"4-0\""),
                ("if-modified-since", modified.as_str()),
            ],
            vec![("if-modified-since", "Thu, 01 Jan 1970 00:00:01 GMT")],
            vec![("if-modified-since", "not a date")],
        ] {
            assert_eq!(get(&http, &h).await.status, StatusCode::OK, "{h:?}");
        }
        // A new version: the old tag no longer matches.
        http.call(Method::PUT, "/items/4", None).await;
        let a = get(&http, &[("if-none-match", etag.as_str())]).await;
        assert_eq!(
            (a.status, a.headers[ETAG].to_str().unwrap()),
            (StatusCode::OK, "\"4-2\"")
        );

        let v = http.get("/stats/queries?id=4").await.json();
        let q: Vec<(u64, u64)> = v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["status"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()))
            .collect();
        assert_eq!(q.len(), 11, "{v}");
        assert_eq!(
            q.iter().filter(|(s, b)| *s == 304 && *b == 0).count(),
            5,
            "{q:?}"
        );
        assert_eq!(q[0], (200, body_len));
        assert!(q.iter().all(|(s, b)| *s == 304 || *b > 200), "{q:?}");
        let metrics = http.get("/metrics").await.text();
        assert!(
            metrics.contains("origin_queries_total{status=\"304\"} 5"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn put_bumps_version() {
    bounded(async {
        let http = start(small(1)).await;
        let a = http.call(Method::PUT, "/items/2", None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["version"], 2);
        let a = http.call(Method::PUT, "/items/2", None).await;
        assert_eq!(a.json()["version"], 3);
        assert_eq!(http.get("/items/2").await.json()["version"], 3);
        assert_eq!(http.get("/items/1").await.json()["version"], 1);

        let a = http.call(Method::PUT, "/items/21", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = http.call(Method::PUT, "/items/x", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);

        let metrics = http.get("/metrics").await.text();
        assert!(sample(&metrics, "origin_writes_total") >= 2.0);
    })
    .await;
}

#[tokio::test]
async fn stats_record_filter_and_reset() {
    bounded(async {
        let http = start(small(1)).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for path in ["/items/1", "/items/2", "/items/2", "/items/99", "/items/zz"] {
            http.get(path).await;
        }
        let v = http.get("/stats/queries").await.json();
        let q = v["queries"].as_array().unwrap();
        assert_eq!(q.len(), 5, "{v}");
        let mut seen: Vec<(Value, u64)> = q
            .iter()
            .map(|r| (r["id"].clone(), r["status"].as_u64().unwrap()))
            .collect();
        seen.sort_by_key(|(id, _)| id.to_string());
        assert!(seen.contains(&(json!(1), 200)));
        assert!(seen.contains(&(json!(99), 404)));
        assert!(seen.contains(&(Value::Null, 404)));
        for r in q {
            let t = r["t_ms"].as_u64().unwrap();
            assert!(t >= before && t < before + 10_000, "t_ms {t} vs {before}");
            assert!(r["duration_ms"].is_u64());
        }

        let v = http.get("/stats/queries?id=2").await.json();
        assert_eq!(v["queries"].as_array().unwrap().len(), 2);
        let v = http
            .get(&format!("/stats/queries?since_ms={}", before + 60_000))
            .await
            .json();
        assert_eq!(v["queries"].as_array().unwrap().len(), 0);
        let a = http.get("/stats/queries?since_ms=yesterday").await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);

        let a = http.call(Method::DELETE, "/stats/queries", None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let v = http.get("/stats/queries").await.json();
        assert_eq!(v, json!({"queries": []}));
        http.get("/items/5").await;
        let v = http.get("/stats/queries").await.json();
        assert_eq!(v["queries"].as_array().unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn stats_are_bounded() {
    bounded(async {
        let http = start(Config {
            stats_capacity: 3,
            ..small(0)
        })
        .await;
        for id in 1..=5 {
            http.get(&format!("/items/{id}")).await;
        }
        let v = http.get("/stats/queries").await.json();
        let ids: Vec<_> = v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [3, 4, 5]);
    })
    .await;
}

#[tokio::test]
async fn admin_config_changes_behaviour() {
    bounded(async {
        let http = start(small(1)).await;
        let v = http.get("/admin/config").await.json();
        assert_eq!(v["latency_ms"], 1);
        assert_eq!(v["error_rate"], 0.0);

        let a = http
            .call(Method::PUT, "/admin/config", Some(r#"{"latency_ms":300}"#))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["latency_ms"], 300);
        assert_eq!(a.json()["error_rate"], 0.0);
        let t = Instant::now();
        assert_eq!(http.get("/items/1").await.status, StatusCode::OK);
        assert!(
            t.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t.elapsed()
        );

        let a = http
            .call(
                Method::PUT,
                "/admin/config",
                Some(r#"{"latency_ms":1,"error_rate":1.0}"#),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let a = http.get("/items/1").await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(a.json()["error"].is_string());
        let v = http.get("/stats/queries?id=1").await.json();
        assert_eq!(
            v["queries"].as_array().unwrap().last().unwrap()["status"],
            500
        );

        for bad in [
            r#"{"error_rate":1.5}"#,
            r#"{"error_rate":-0.1}"#,
            r#"{"latency_ms":-1}"#,
            r#"{"latency_ms":"fast"}"#,
            r#"{"latency_ms":99999999999}"#,
            r#"{"latency":5}"#,
            r#"{"#,
            "",
            "[]",
        ] {
            let a = http.call(Method::PUT, "/admin/config", Some(bad)).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(a.json()["error"].is_string(), "{bad:?}");
        }
        // Nothing changed by the rejected requests; an empty patch is fine.
        let a = http.call(Method::PUT, "/admin/config", Some("{}")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["error_rate"], 1.0);
        assert_eq!(a.json()["latency_ms"], 1);

        let a = http
            .call(Method::PUT, "/admin/config", Some(r#"{"error_rate":0}"#))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(http.get("/items/1").await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn metrics_exposes_the_documented_names() {
    bounded(async {
        let http = start(small(1)).await;
        http.get("/items/1").await;
        http.get("/items/404").await;
        let a = http.get("/metrics").await;
        assert_eq!(a.status, StatusCode::OK);
        let m = a.text();
        for needle in [
            "origin_queries_total{status=\"200\"}",
            "origin_queries_total{status=\"404\"}",
            "origin_inflight_queries",
            "origin_query_duration_seconds_bucket{status=\"200\",le=\"0.001\"}",
            "origin_query_duration_seconds_count{status=\"200\"}",
            "origin_pool_wait_seconds_bucket{le=\"30\"}",
            "origin_pool_wait_seconds_count",
        ] {
            assert!(m.contains(needle), "{needle} missing from\n{m}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturates_like_a_database() {
    bounded(async {
        let http = start(Config {
            items: 20,
            latency_ms: 200,
            db_connections: 2,
            ..Config::default()
        })
        .await;
        // Warm one keep-alive connection per client so connection set-up does
        // not blur the rounds.
        let clients: Vec<Http> = (0..6).map(|_| Http::new(addr_of(&http))).collect();
        for c in &clients {
            assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
        }
        let wait_sum_before = sample(
            &http.get("/metrics").await.text(),
            "origin_pool_wait_seconds_sum",
        );

        let mut set = tokio::task::JoinSet::new();
        for (i, c) in clients.into_iter().enumerate() {
            set.spawn(async move {
                let t = Instant::now();
                let a = c.get(&format!("/items/{}", i + 1)).await;
                assert_eq!(a.status, StatusCode::OK);
                t.elapsed()
            });
        }
        let mut took: Vec<Duration> = set.join_all().await;
        took.sort();
        // 6 requests, 2 connections, 200 ms each: three rounds.
        assert!(took[0] < Duration::from_millis(450), "{took:?}");
        assert!(took[5] >= Duration::from_millis(550), "{took:?}");

        let v = http.get("/stats/queries").await.json();
        let mut waits: Vec<u64> = v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["pool_wait_ms"].as_u64().unwrap())
            .collect();
        waits.sort();
        assert_eq!(waits.len(), 6);
        assert!(waits[2] >= 150 && waits[5] >= 350, "{waits:?}");

        let m = http.get("/metrics").await.text();
        let waited = sample(&m, "origin_pool_wait_seconds_sum") - wait_sum_before;
        assert!(waited >= 0.9, "pool wait grew by {waited}s only");
    })
    .await;
}

fn addr_of(http: &Http) -> SocketAddr {
    http.base.trim_start_matches("http://").parse().unwrap()
}

/// The pitfall: every connection to `sqlite::memory:` would open its own empty
/// database. With a pool of 4 busy connections, all of them see the rows, and
/// a write through one is seen through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_memory_is_shared_by_the_whole_pool() {
    bounded(async {
        let config = Config {
            database: "sqlite::memory:".into(),
            items: 50,
            latency_ms: 100,
            db_connections: 4,
            ..Config::default()
        };
        let http = start(config).await;
        let addr = addr_of(&http);
        let mut set = tokio::task::JoinSet::new();
        for id in 1..=8 {
            set.spawn(async move { Http::new(addr).get(&format!("/items/{id}")).await.status });
        }
        for status in set.join_all().await {
            assert_eq!(status, StatusCode::OK);
        }

        assert_eq!(
            http.call(Method::PUT, "/items/7", None).await.json()["version"],
            2
        );
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            set.spawn(
                async move { Http::new(addr).get("/items/7").await.json()["version"].clone() },
            );
        }
        for version in set.join_all().await {
            assert_eq!(version, 2);
        }
        let v = http.get("/stats/queries").await.json();
        let max_wait = v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["pool_wait_ms"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(max_wait >= 50, "8 requests on 4 connections should queue");
    })
    .await;
}

#[tokio::test]
async fn file_database_persists_and_bad_config_is_an_error() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/origin.db?mode=rwc", dir.path().display());
        let config = Config {
            database: url,
            ..small(0)
        };
        let (addr, task) = origin_sim::spawn(config.clone()).await.unwrap();
        let http = Http::new(addr);
        assert_eq!(
            http.call(Method::PUT, "/items/4", None).await.status,
            StatusCode::OK
        );
        task.abort();
        let _ = task.await;
        drop(http);

        // Re-seeding keeps the existing row (and its bumped version).
        let http = start(config).await;
        assert_eq!(http.get("/items/4").await.json()["version"], 2);

        let bad = Config {
            error_rate: 2.0,
            ..small(0)
        };
        assert!(origin_sim::spawn(bad).await.is_err());
        let bad = Config {
            database: "nosuchdb://x".into(),
            ..small(0)
        };
        assert!(origin_sim::spawn(bad).await.is_err());
    })
    .await;
}
