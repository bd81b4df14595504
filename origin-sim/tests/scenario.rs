//! The scenario routes over real HTTP: `/blob` (every byte, the pacing),
//! `/fail`, `/slow`, `/negotiated` (real gzip), and `/stats/requests`.

use std::io::Read as _;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, HeaderMap, VARY};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use origin_sim::Config;
use origin_sim::scenario::{blob, text};
use serde_json::Value;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Origin {
    client: HttpClient,
    base: String,
}

/// One answer: status, headers, body, and when its headers and its last
/// byte arrived (since the request was sent).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    headers_at: Duration,
    done_at: Duration,
    /// When each data frame arrived, and its length.
    frames: Vec<(Duration, usize)>,
}

async fn start() -> Origin {
    let config = Config {
        items: 10,
        latency_ms: 1,
        ..Config::default()
    };
    let (addr, _task) = origin_sim::spawn(config).await.expect("origin starts");
    Origin {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{addr}"),
    }
}

impl Origin {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let t = Instant::now();
        let resp = self.client.request(req.body(Empty::new()).unwrap()).await;
        let resp = resp.expect("request");
        let headers_at = t.elapsed();
        let (parts, mut body) = resp.into_parts();
        let (mut data, mut frames) = (Vec::new(), Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.expect("body frame").into_data() {
                frames.push((t.elapsed(), d.len()));
                data.extend_from_slice(&d);
            }
        }
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: data,
            headers_at,
            done_at: t.elapsed(),
            frames,
        }
    }

    async fn requests(&self, query: &str) -> Value {
        let a = self.get(&format!("/stats/requests{query}"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        serde_json::from_slice(&a.body).expect("JSON")
    }

    /// The recorded requests once none is in flight.
    async fn settled(&self, query: &str) -> Vec<Value> {
        for _ in 0..100 {
            let v = self.requests(query).await;
            if v["in_flight"] == 0 {
                return v["requests"].as_array().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("requests still in flight");
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn blob_streams_every_byte_paced() {
    bounded(async {
        let o = start().await;
        let len = 1024 * 1024 + 5;
        let path = format!("/blob/{len}?first_byte_ms=300&total_ms=900&max_age=7&chunk=65536");
        let a = o.get(&path, &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers[CACHE_CONTROL], "max-age=7");
        assert_eq!(a.headers[CONTENT_LENGTH], len.to_string().as_str());
        assert_eq!(a.body.len() as u64, len);
        assert!(a.body == blob(0..len), "every byte is the offset's");
        // Headers and the first byte at ~300 ms; the last at ~900 ms, paced.
        let ms = |d: Duration| d.as_millis() as u64;
        let first = a.frames.first().unwrap().0;
        assert!(
            (290..600).contains(&ms(a.headers_at)),
            "headers {:?}",
            a.headers_at
        );
        assert!((290..600).contains(&ms(first)), "first byte {first:?}");
        assert!(
            (880..1400).contains(&ms(a.done_at)),
            "last byte {:?}",
            a.done_at
        );
        let half = a.frames.iter().find(|f| f.0 >= Duration::from_millis(600));
        let before_half: usize = a
            .frames
            .iter()
            .take_while(|f| f.0 < Duration::from_millis(600))
            .map(|f| f.1)
            .sum();
        assert!(
            half.is_some() && before_half < len as usize * 3 / 4,
            "paced: {before_half} bytes before 600 ms"
        );

        // No max_age: no Cache-Control; no pacing: at once; bad values: 400.
        let a = o.get("/blob/10", &[]).await;
        assert!(a.headers.get(CACHE_CONTROL).is_none());
        assert_eq!(a.body, blob(0..10));
        let a = o.get("/blob/0", &[]).await;
        assert_eq!((a.status, a.body.len()), (StatusCode::OK, 0));
        for bad in [
            "/blob/x",
            "/blob/10?first_byte_ms=500&total_ms=100",
            "/blob/10?chunk=0",
            "/blob/2000000000",
        ] {
            assert_eq!(
                o.get(bad, &[]).await.status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }

        let recs = o.settled("?route=blob").await;
        assert_eq!(recs.len(), 3, "{recs:?}");
        let r = &recs[0];
        assert_eq!(r["route"], "blob");
        assert_eq!(r["path"], path.as_str());
        assert_eq!(
            (r["status"].as_u64(), r["bytes"].as_u64()),
            (Some(200), Some(len))
        );
        assert_eq!(r["completed"], true);
        assert!(r["duration_ms"].as_u64().unwrap() >= 880, "{r}");
        // /items queries are not scenario requests, and the other way round.
        let q = o.get("/stats/queries", &[]).await;
        assert_eq!(
            serde_json::from_slice::<Value>(&q.body).unwrap()["queries"],
            serde_json::json!([])
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_that_goes_away_is_recorded_incomplete() {
    bounded(async {
        let o = start().await;
        let req = Request::get(format!(
            "{}/blob/1000000?first_byte_ms=0&total_ms=2000",
            o.base
        ));
        let resp = o
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        let recs = o.settled("?route=blob").await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["completed"], false);
        assert!(recs[0]["bytes"].as_u64().unwrap() < 1_000_000);
    })
    .await;
}

#[tokio::test]
async fn fail_answers_503_no_store_after_the_delay() {
    bounded(async {
        let o = start().await;
        let a = o.get("/fail?delay_ms=300", &[]).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.headers[CACHE_CONTROL], "no-store");
        assert!(
            a.headers_at >= Duration::from_millis(290),
            "{:?}",
            a.headers_at
        );
        assert!(!a.body.is_empty());
        let recs = o.settled("?route=fail").await;
        assert_eq!((recs.len(), recs[0]["status"].as_u64()), (1, Some(503)));
        assert_eq!(recs[0]["completed"], true);
    })
    .await;
}

#[tokio::test]
async fn slow_answers_200_cacheable_after_the_delay() {
    bounded(async {
        let o = start().await;
        let a = o.get("/slow?delay_ms=400&max_age=2&bytes=300", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers[CACHE_CONTROL], "max-age=2");
        assert!(
            (390..900).contains(&(a.headers_at.as_millis() as u64)),
            "{:?}",
            a.headers_at
        );
        assert_eq!(a.body, blob(0..300));
        let a = o.get("/slow", &[]).await;
        assert_eq!(a.body, blob(0..1024));
        assert!(a.headers.get(CACHE_CONTROL).is_none());
        let t0 = o.requests("").await["requests"][0]["t_ms"]
            .as_u64()
            .unwrap();
        assert_eq!(
            o.settled(&format!("?route=slow&since_ms={t0}")).await.len(),
            2
        );
        assert_eq!(
            o.settled(&format!("?since_ms={}", t0 + 60_000)).await.len(),
            0
        );
        // DELETE resets.
        let req = Request::delete(format!("{}/stats/requests", o.base));
        let resp = o
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(o.settled("").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn negotiated_answers_real_gzip_or_identity() {
    bounded(async {
        let o = start().await;
        let path = "/negotiated?max_age=2&bytes=20000";
        let want = text(20000);
        for (accept, gzip) in [
            (Some("gzip, deflate, br, zstd"), true),
            (Some("gzip"), true),
            (None, false),
            (Some("gzip;q=0, br"), false),
        ] {
            let headers: Vec<(&str, &str)> =
                accept.iter().map(|a| ("accept-encoding", *a)).collect();
            let a = o.get(path, &headers).await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.headers[VARY], "Accept-Encoding");
            assert_eq!(a.headers[CACHE_CONTROL], "max-age=2");
            assert_eq!(a.headers[CONTENT_LENGTH], a.body.len().to_string().as_str());
            if gzip {
                assert_eq!(a.headers[CONTENT_ENCODING], "gzip", "{accept:?}");
                assert!(
                    a.body.len() < want.len() / 4,
                    "compressed: {}",
                    a.body.len()
                );
                let mut decoded = Vec::new();
                flate2::read::GzDecoder::new(&a.body[..])
                    .read_to_end(&mut decoded)
                    .unwrap();
                assert!(decoded == want, "gzip decodes to the text");
            } else {
                assert!(a.headers.get(CONTENT_ENCODING).is_none(), "{accept:?}");
                assert!(a.body == want);
            }
        }
        let recs = o.settled("?route=negotiated").await;
        let enc: Vec<&Value> = recs.iter().map(|r| &r["content_encoding"]).collect();
        assert_eq!(
            enc,
            [
                &Value::from("gzip"),
                &Value::from("gzip"),
                &Value::Null,
                &Value::Null
            ]
        );
        assert_eq!(recs[1]["accept_encoding"], "gzip");
        assert_eq!(recs[2]["accept_encoding"], Value::Null);
    })
    .await;
}
