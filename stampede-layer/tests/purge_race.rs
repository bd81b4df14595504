//! A request that arrives after an invalidation is never given the answer of
//! a rebuild that began before it (found by the fault campaign: a read that
//! joined a slow rebuild 1.2 s after an update through the same gateway got
//! the old version, `collapsed; detail=fenced`).
//!
//! The rebuild's write is refused by the key's fence (the invalidation was
//! ordered after its lease); the requests that joined its flight coordinate
//! again — one new origin request — and get the new version.

mod common;

use common::*;
use stampede_layer::{MemoryStore, Mitigations, StampedeLayer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn a_request_after_an_invalidation_never_joins_the_rebuild_it_superseded() {
    // GET reads the version when it arrives, then takes 300 ms; PUT bumps it.
    let version = Arc::new(AtomicU64::new(1));
    let gets = Arc::new(AtomicU64::new(0));
    let (v, g) = (version.clone(), gets.clone());
    let origin = tower::service_fn(move |req: http::Request<Body>| {
        let (v, g) = (v.clone(), g.clone());
        async move {
            if req.method() == http::Method::PUT {
                let now = v.fetch_add(1, Ordering::SeqCst) + 1;
                return Ok::<_, stampede_layer::BoxError>(respond(200, format!("v{now}")));
            }
            g.fetch_add(1, Ordering::SeqCst);
            let read = v.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut resp = respond(200, format!("v{read}"));
            resp.headers_mut()
                .insert("cache-control", "max-age=30".parse().unwrap());
            Ok(resp)
        }
    });
    let svc = StampedeLayer::new(Arc::new(MemoryStore::default()))
        .mitigations("single-flight".parse::<Mitigations>().unwrap())
        .service(origin);

    // t=0: a miss starts the rebuild of version 1.
    let leader = tokio::spawn(svc.clone().oneshot(get("/items/1")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // t=50 ms: the item is updated through the stack (invalidates the key).
    let (status, _, body) = read(
        svc.clone()
            .oneshot(request(http::Method::PUT, "/items/1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"v2"[..]));
    // t=100 ms: a read after the update returned, while the old rebuild runs.
    let (status, cs, body) = read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), body.as_ref()),
        (200, &b"v2"[..]),
        "a read after the update got an older version: {cs}"
    );
    // The leader's own client asked before the update: the old answer is
    // its to have; the cache holds the new one.
    let (_, leader_cs, leader_body) = read(leader.await.unwrap().unwrap()).await;
    assert_eq!(leader_body.as_ref(), b"v1", "{leader_cs}");
    assert!(leader_cs.contains("detail=fenced"), "{leader_cs}");
    let (_, cs, body) = read(svc.clone().oneshot(get("/items/1")).await.unwrap()).await;
    assert_eq!(body.as_ref(), b"v2", "{cs}");
    assert!(is_hit(&cs), "{cs}");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        2,
        "one rebuild each side of the update"
    );
}
