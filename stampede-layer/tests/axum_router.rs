//! The stack as an axum developer uses it: one `StampedeLayer` given to
//! `Router::layer` as is (it is infallible), over several routes that share
//! one origin budget and one set of flights (axum calls `layer` once per
//! route and method).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::{Request, StatusCode};
use stampede_layer::{MemoryStore, Mitigations, StampedeLayer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Calls {
    total: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

async fn slow(State(calls): State<Calls>) -> &'static str {
    calls.total.fetch_add(1, Ordering::SeqCst);
    let now = calls.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    calls.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    calls.in_flight.fetch_sub(1, Ordering::SeqCst);
    "slow answer"
}

async fn broken() -> &'static str {
    panic!("the handler broke")
}

async fn overloaded() -> (StatusCode, &'static str) {
    (StatusCode::SERVICE_UNAVAILABLE, "try later")
}

fn app(calls: Calls) -> Router {
    let stampede = StampedeLayer::new(Arc::new(MemoryStore::default()))
        .mitigations(Mitigations::ALL)
        .ttl(Duration::from_secs(30))
        // One budget of two origin requests for every route together.
        .overload_budget(2, Duration::ZERO);
    Router::new()
        .route("/a", get(slow))
        .route("/b", get(slow))
        .route("/c", get(slow))
        .route("/broken", get(broken))
        .route("/overloaded", get(overloaded))
        .layer(stampede)
        .with_state(calls)
}

async fn get_status(app: &Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let cs = resp
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status(), cs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_misses_per_route_are_one_handler_call_each() {
    let calls = Calls::default();
    let app = app(calls.clone());
    for path in ["/a", "/b", "/c"] {
        let before = calls.total.load(Ordering::SeqCst);
        let herd = (0..10).map(|_| get_status(&app, path));
        for (status, cs) in futures_util::future::join_all(herd).await {
            assert_eq!(status, StatusCode::OK, "{path}: {cs}");
        }
        assert_eq!(
            calls.total.load(Ordering::SeqCst) - before,
            1,
            "{path}: one handler call for ten concurrent misses"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_budget_is_shared_by_every_route() {
    let calls = Calls::default();
    let app = app(calls.clone());
    let started = Instant::now();
    let three = ["/a", "/b", "/c"].map(|p| get_status(&app, p));
    let answers = futures_util::future::join_all(three).await;
    let shed: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(
        shed.len(),
        1,
        "a budget of 2 for all routes: the third concurrent origin request is shed: {answers:?}"
    );
    assert!(shed[0].1.contains("detail=shed"), "{answers:?}");
    assert_eq!(calls.most_in_flight.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_an_answer() {
    let app = app(Calls::default());
    let resp = app
        .clone()
        .oneshot(
            Request::get("/broken")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let failure = resp
        .extensions()
        .get::<stampede_layer::OriginFailure>()
        .expect("the error rides on the answer");
    assert!(failure.0.to_string().contains("rebuild"), "{}", failure.0);
    let (status, _) = get_status(&app, "/overloaded").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
