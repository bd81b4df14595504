//! NegativeCache: a 404 is cached for the negative TTL and expires after it;
//! without the layer it is not cached; a write through the stack for that
//! path invalidates it.

mod common;

use common::*;
use http::Method;
use stampede_layer::{
    BoxError, MemoryStore, Mitigations, SharedStore, StampedeLayer, StampedeService,
};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Origin: `GET` answers 404, writes answer 204.
fn stack(negative: bool) -> (Calls, StampedeService<Body>) {
    let (calls, origin) = origin(|_, req| async move {
        let status = if req.method() == Method::GET {
            404
        } else {
            204
        };
        Ok::<_, BoxError>(respond(
            status,
            if status == 404 { "no such item" } else { "" },
        ))
    });
    let store: SharedStore = Arc::new(MemoryStore::default());
    let svc = StampedeLayer::new(store)
        .mitigations({
            let mut m = Mitigations::NONE;
            m.negative = negative;
            m
        })
        .ttl(Duration::from_secs(30))
        .negative_ttl(Duration::from_millis(300))
        .service(origin);
    (calls, svc)
}

#[tokio::test]
async fn a_404_is_cached_for_the_negative_ttl_then_expires() {
    let (calls, svc) = stack(true);
    let (status, cs, _) = read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(cs.contains("stored"), "{cs}");
    let (status, cs, body) = read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), body.as_ref()),
        (404, &b"no such item"[..])
    );
    assert!(is_hit(&cs), "{cs}");
    assert_eq!(
        calls.count(&Method::GET),
        1,
        "the second 404 came from the cache"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, cs, _) = read(svc.oneshot(get("/items/999")).await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(!is_hit(&cs), "expired after the negative TTL: {cs}");
    assert_eq!(calls.count(&Method::GET), 2);
}

#[tokio::test]
async fn without_the_layer_404s_are_not_cached() {
    let (calls, svc) = stack(false);
    for _ in 0..3 {
        let (status, cs, _) = read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
        assert_eq!(status, 404);
        assert!(!is_hit(&cs) && !cs.contains("stored"), "{cs}");
    }
    assert_eq!(calls.count(&Method::GET), 3);
}

#[tokio::test]
async fn writes_through_the_stack_invalidate_the_negative_entry() {
    let (calls, svc) = stack(true);
    read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
    for (i, method) in [Method::PUT, Method::POST, Method::DELETE]
        .into_iter()
        .enumerate()
    {
        let (_, cs, _) = read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
        assert!(is_hit(&cs), "cached before the {method}: {cs}");
        assert_eq!(calls.count(&Method::GET), i + 1);

        let (status, cs, _) = read(
            svc.clone()
                .oneshot(request(method.clone(), "/items/999"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 204);
        assert!(cs.contains("fwd=method"), "{cs}");
        assert_eq!(calls.count(&method), 1, "the write reached the origin");

        let (_, cs, _) = read(svc.clone().oneshot(get("/items/999")).await.unwrap()).await;
        assert!(!is_hit(&cs), "{method} invalidated the entry: {cs}");
        // That GET refilled the entry for the next round.
        assert_eq!(calls.count(&Method::GET), i + 2);
    }
}
