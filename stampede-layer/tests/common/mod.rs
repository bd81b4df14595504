//! Shared helpers of the integration tests: a counting fake origin (a tower
//! `service_fn` inside a test of the layer logic), request/response helpers,
//! and a per-test metrics recorder.
//!
//! Metrics: every test that asserts a counter runs on tokio's default
//! current-thread runtime and installs a [`DebuggingRecorder`] as the
//! thread's local recorder, so spawned tasks (rebuilds, refreshes) record
//! into it too and tests running in parallel do not see each other's counts.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, Snapshotter};
use stampede_layer::store::{CacheKey, CachedResponse, now_ms};
use stampede_layer::{BoxError, CacheBody};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::Service;

#[allow(unused_imports)]
pub use metrics_util::debugging::DebuggingRecorder;

/// Request and origin response body of the tests.
pub type Body = Full<Bytes>;

/// `GET path`.
pub fn get(path: &str) -> Request<Body> {
    request(Method::GET, path)
}

/// `method path` with an empty body.
pub fn request(method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::default())
        .unwrap()
}

/// The key the stack derives for `GET path`.
pub fn key(path: &str) -> CacheKey {
    CacheKey::new(&Method::GET, &path.parse().unwrap())
}

/// The `Cache-Status` header ("" when absent).
pub fn cache_status(resp: &Response<CacheBody>) -> String {
    resp.headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Whether a `Cache-Status` value carries the `hit` parameter.
pub fn is_hit(cache_status: &str) -> bool {
    cache_status.split(';').any(|p| p.trim() == "hit")
}

/// The `ttl=` parameter of a `Cache-Status` value.
pub fn ttl_param(cache_status: &str) -> Option<i64> {
    cache_status
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .map(|t| t.parse().unwrap())
}

/// Status, `Cache-Status` and body of a response.
pub async fn read(resp: Response<CacheBody>) -> (StatusCode, String, Bytes) {
    let status = resp.status();
    let cs = cache_status(&resp);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, cs, body)
}

/// A response with `status` and `body`.
pub fn respond(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

/// What the fake origin saw.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    total: Arc<AtomicUsize>,
    inflight: Arc<AtomicUsize>,
    started_ms: Arc<Mutex<Vec<(u64, Method, String)>>>,
}

impl Calls {
    /// Calls so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Calls running now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Calls with `method`.
    pub fn count(&self, method: &Method) -> usize {
        self.started_ms
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m, _)| m == method)
            .count()
    }

    /// Start times (ms since the epoch) of every call, in order.
    pub fn start_times(&self) -> Vec<u64> {
        self.started_ms
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, _)| *t)
            .collect()
    }

    /// Wait (bounded) until `n` calls are running at once.
    pub async fn wait_inflight(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.inflight() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("origin calls did not start");
    }

    /// Wait (bounded) until `n` calls were made.
    pub async fn wait_total(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.total() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("origin calls did not happen");
    }
}

/// Decrements the in-flight count however the call ends (panic, cancel).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fake origin: `answer(n, request)` produces the `n`-th call's answer (1-based).
pub fn origin<F, Fut>(
    answer: F,
) -> (
    Calls,
    impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static,
)
where
    F: Fn(usize, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    let calls = Calls::default();
    let seen = calls.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let n = seen.total.fetch_add(1, Ordering::SeqCst) + 1;
        seen.started_ms.lock().unwrap().push((
            now_ms(),
            req.method().clone(),
            req.uri().path().to_owned(),
        ));
        seen.inflight.fetch_add(1, Ordering::SeqCst);
        let running = Running(seen.inflight.clone());
        let fut = answer(n, req);
        async move {
            let _running = running;
            fut.await
        }
    });
    (calls, svc)
}

/// A fake origin that sleeps `delay`, then answers 200 with `v<n>` (the call number).
pub fn slow_origin(
    delay: Duration,
) -> (
    Calls,
    impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static,
) {
    origin(move |n, _req| async move {
        tokio::time::sleep(delay).await;
        Ok(respond(200, format!("v{n}")))
    })
}

/// The sum of a counter's values in `snapshot` whose labels include `labels`
/// (takes a snapshot, which resets the recorder's counters).
pub fn counter(snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(ck, _, _, _)| {
            let key = ck.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// A 200 entry with `body`, fresh for `fresh_ms` then stale for `stale_ms`.
pub fn entry(body: &str, fresh_ms: u64, stale_ms: u64, fence: u64) -> CachedResponse {
    CachedResponse {
        fence,
        ..stampede_layer::testing::contract::entry(body, fresh_ms, stale_ms)
    }
}
