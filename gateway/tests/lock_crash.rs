//! A gateway killed (SIGKILL) while it holds a rebuild lock: the other
//! instances take over after the lock TTL; their waits are bounded by the
//! lock wait; nobody hangs. Real gateway processes and a real Redis.

mod common;

use axum::Router;
use axum::routing::get;
use common::{get as http_get, report, serve};
use stampede_layer::testing::{RedisServer, free_port};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    async fn start(origin: std::net::SocketAddr, redis: &str, name: &str) -> Self {
        let port = free_port();
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--origin",
                &format!("http://{origin}"),
                "--redis",
                redis,
                "--mitigations",
                "single-flight,lock",
                "--lock-ttl",
                "1s",
                "--ttl",
                "30s",
                "--instance",
                name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "gateway {name} did not start");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Gateway { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_lock_holder_is_taken_over_after_the_lock_ttl() {
    let redis = RedisServer::start();
    // The first rebuild hangs (the holder will die in it); later ones are quick.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let origin = serve(Router::new().route(
        "/items/{id}",
        get(move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                "{\"id\":1}"
            }
        }),
    ))
    .await;
    let mut holder = Gateway::start(origin, &redis.url(), "holder").await;
    let survivor = Gateway::start(origin, &redis.url(), "survivor").await;

    let holder_port = holder.port;
    let doomed = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri = format!("http://127.0.0.1:{holder_port}/items/1")
            .parse()
            .unwrap();
        let _ = client.get(uri).await;
    });
    // Wait until the holder is inside its rebuild (it holds the lock), then kill it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never started its rebuild"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let locked_at = Instant::now();
    holder.kill();
    doomed.abort();

    // Several concurrent waiters on the survivor: bounded by the lock wait
    // (= lock TTL, 1 s), then one takes over and the rest get its fill.
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let url = format!("http://127.0.0.1:{}/items/1", survivor.port);
        waiters.push(tokio::spawn(async move {
            let a = http_get(&url).await;
            (a.status, locked_at.elapsed())
        }));
    }
    let mut waits = Vec::new();
    for w in waiters {
        let (status, took) = w.await.unwrap();
        waits.push(took.as_millis() as u64);
        assert_eq!(status, 200);
        assert!(
            took >= Duration::from_millis(700),
            "took over before the lock TTL: {took:?}"
        );
        assert!(
            took < Duration::from_secs(4),
            "waited {took:?}: not bounded by the lock wait"
        );
    }
    // One rebuild by the survivor for all five waiters (plus the dead one's).
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    report(
        "Lock holder SIGKILLed mid-rebuild (lock TTL 1 s), 5 waiters on another instance",
        serde_json::json!({
            "waiters": waits.len(),
            "failed": 0,
            "min_wait_ms": waits.iter().min(),
            "max_wait_ms": waits.iter().max(),
            "origin_rebuilds_after_crash": 1,
        }),
    );
}
