//! Per-request cost of the stack on a cache hit (in-process store) against
//! the bare inner service.
//!
//! ```text
//! cargo bench -p stampede-layer --bench stack -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! * `bare` — the inner service alone (an instant origin);
//! * `stack_none_hit` — `StampedeLayer` with `Mitigations::NONE` (plain
//!   cache-aside), answering a fresh hit from `MemoryStore`;
//! * `stack_all_hit` — every mitigation on (`Mitigations::ALL`), fresh hit;
//! * `stack_all_hit_recorded` — the same as the gateway runs it: the
//!   Prometheus recorder installed (measured last: a recorder is global) and
//!   the hot-key report on.
//!
//! Each iteration sends one `GET` and reads the whole body. Until the last
//! variant no metrics recorder is installed, so the `metrics` macros are
//! no-ops there.
//!
//! Allocations per hit: the bench runs on a counting global allocator
//! (`stats_alloc`, atomic counters around the system allocator); before
//! each variant is timed, it sends [`COUNTED`] more requests and prints the
//! heap allocations (and bytes) they made, per request, e.g.
//! `allocations per request: stack_all_hit 12.00 (1083 bytes)`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use stampede_layer::{HotKeys, MemoryStore, Mitigations, SharedStore, StampedeLayer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests whose allocations are counted, per variant.
const COUNTED: u64 = 10_000;

/// Send [`COUNTED`] requests with `one` (after a warm-up that fills the
/// caches and pools they touch) and print the heap allocations they made
/// per request: `alloc` calls (reallocations apart) and bytes.
fn count_allocations<F, Fut>(rt: &tokio::runtime::Runtime, name: &str, one: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Bytes>,
{
    rt.block_on(async {
        for _ in 0..1000 {
            black_box(one().await);
        }
        let region = Region::new(GLOBAL);
        for _ in 0..COUNTED {
            black_box(one().await);
        }
        let c = region.change();
        let per = |n: usize| n as f64 / COUNTED as f64;
        println!(
            "allocations per request: {name} {:.2} (+{:.2} reallocations, {:.0} bytes)",
            per(c.allocations),
            per(c.reallocations),
            per(c.bytes_allocated),
        );
    });
}

const BODY: &[u8] =
    br#"{"id":1,"version":1,"name":"item 1","payload":"0123456789abcdef0123456789abcdef"}"#;

fn request() -> Request<Full<Bytes>> {
    Request::get("/items/1").body(Full::default()).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin = service_fn(|_req: Request<Full<Bytes>>| async {
        let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(resp)
    });

    let mut group = c.benchmark_group("per_request");
    count_allocations(&rt, "bare", || async {
        let resp = origin.oneshot(request()).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = origin.oneshot(request()).await.unwrap();
            black_box(resp.into_body().collect().await.unwrap().to_bytes())
        })
    });

    // `Stampede` as `StampedeLayer::layer` makes it (what the gateway
    // serves: a plain fresh hit is answered without a boxed future), and the
    // boxed `StampedeService` (`StampedeLayer::service`) for comparison.
    let mut recorder_set = false;
    for (name, mitigations, recorded, boxed) in [
        ("stack_none_hit", Mitigations::NONE, false, false),
        ("stack_all_hit", Mitigations::ALL, false, false),
        ("stack_all_hit_recorded", Mitigations::ALL, true, false),
        ("stack_all_hit_recorded_boxed", Mitigations::ALL, true, true),
    ] {
        let store: SharedStore = Arc::new(MemoryStore::default());
        let mut layer = StampedeLayer::new(store)
            .mitigations(mitigations)
            .ttl(Duration::from_secs(3600));
        if recorded {
            if !recorder_set {
                let recorder =
                    metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
                metrics::set_global_recorder(recorder).expect("the only recorder");
                stampede_layer::telemetry::register("memory");
                recorder_set = true;
            }
            layer = layer.hot_keys(HotKeys::new(10, Duration::from_secs(10), 10_000));
        }
        if boxed {
            measure(&rt, &mut group, name, layer.service(origin));
        } else {
            measure(&rt, &mut group, name, layer.layer(origin));
        }
    }
    group.finish();
}

/// Fill the entry through `svc`, then count the allocations of a fresh hit
/// and time it.
fn measure<S>(
    rt: &tokio::runtime::Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    svc: S,
) where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<stampede_layer::CacheBody>> + Clone,
    S::Error: std::fmt::Debug,
{
    // Fill the entry; every measured request is a fresh hit.
    rt.block_on(async {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let hit = svc.clone().oneshot(request()).await.unwrap();
        let status = hit.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(status.contains("; hit"), "{name}: {status}");
    });
    count_allocations(rt, name, || async {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let resp = svc.clone().oneshot(request()).await.unwrap();
            black_box(resp.into_body().collect().await.unwrap().to_bytes())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
