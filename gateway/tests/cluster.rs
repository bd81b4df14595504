//! Store, lock and fencing unchanged on a local 3-node Redis Cluster
//! (started here from redis-server processes): the hash-tagged keys and the
//! Lua scripts are cluster-safe — tag purges too (a tag's index lives on
//! another slot than its entries; no script crosses slots).

mod common;

use axum::Router;
use axum::routing::get;
use common::{config, get as http_get, report, send, serve};
use stampede_layer::store::{CacheKey, CachedResponse, PurgeMode, PutOutcome, Refusal};
use stampede_layer::testing::{RedisServer, contract, fill};
use stampede_layer::{CacheStore, RedisStore};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli is needed (Debian: redis-tools, installed with redis-server)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster never reached state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn url(&self) -> String {
        let first = self.nodes[0].port();
        let rest: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }
}

fn entry(body: &str, fence: u64) -> CachedResponse {
    let now = stampede_layer::store::now_ms();
    CachedResponse {
        status: 200,
        headers: vec![],
        body: body.to_owned().into(),
        stored_at_ms: now,
        fresh_until_ms: now + 60_000,
        stale_until_ms: now + 60_000,
        error_until_ms: now + 60_000,
        rebuild_ms: 1,
        fence,
        ..Default::default()
    }
}

#[tokio::test]
async fn store_lock_and_fencing_work_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let url = cluster.url();
    let a = RedisStore::connect(&url)
        .await
        .expect("connect to the cluster");
    let b = RedisStore::connect(&url).await.unwrap();

    // The whole store contract (leases, fences, one lock per URL, expiry).
    contract::run(&a, &b).await;
    // Many keys, so they land on every node's slots.
    let ttl = Duration::from_secs(5);
    let mut refused = 0;
    for i in 0..50 {
        let key = CacheKey::new(&http::Method::GET, &format!("/items/{i}").parse().unwrap());
        assert_eq!(
            fill(&a, &key, &entry(&format!("v{i}"), 0)).await.unwrap(),
            PutOutcome::Written
        );
        assert_eq!(b.get(&key).await.unwrap().unwrap().body, format!("v{i}"));

        let earlier = b.ticket(&key, ttl).await.unwrap();
        let lease = a
            .try_lock(&key, ttl)
            .await
            .unwrap()
            .acquired()
            .expect("free");
        assert!(b.try_lock(&key, ttl).await.unwrap().is_held());
        let newer = entry("newer", 0);
        assert_eq!(
            a.put(&key, &newer, &lease).await.unwrap(),
            PutOutcome::Written
        );
        let stale = entry("stale", 0);
        assert_eq!(
            b.put(&key, &stale, &earlier).await.unwrap(),
            PutOutcome::Fenced(Refusal::Superseded),
            "fenced write on key {i}"
        );
        refused += 1;
        b.delete(&key).await.unwrap();
        assert_eq!(
            a.put(&key, &newer, &lease).await.unwrap(),
            PutOutcome::Fenced(Refusal::Purged),
            "purge fences on key {i}"
        );
        assert!(a.unlock(&key, &lease).await.unwrap());
        assert!(b.try_lock(&key, ttl).await.unwrap().acquired().is_some());
    }

    // Tag purges: 60 keys over every node's slots, tagged in three groups.
    let tagged = |i: usize| {
        let mut e = entry(&format!("t{i}"), 0);
        e.headers = vec![(
            "surrogate-key".into(),
            format!("cluster-group-{} cluster-all", i % 3).into_bytes(),
        )];
        e
    };
    let tag_key =
        |i: usize| CacheKey::new(&http::Method::GET, &format!("/tagged/{i}").parse().unwrap());
    for i in 0..60 {
        assert_eq!(
            fill(&a, &tag_key(i), &tagged(i)).await.unwrap(),
            PutOutcome::Written
        );
    }
    let hard = b
        .purge_tag("cluster-group-0", PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(hard.hit, 20, "one group, hard");
    let soft = b
        .purge_tag(
            "cluster-group-1",
            PurgeMode::Soft {
                grace: Duration::from_secs(30),
            },
        )
        .await
        .unwrap();
    assert_eq!(soft.hit, 20, "another group, soft");
    let now = stampede_layer::store::now_ms();
    for i in 0..60 {
        let got = a.get(&tag_key(i)).await.unwrap();
        match i % 3 {
            0 => assert_eq!(got, None, "/tagged/{i}: purged"),
            1 => assert!(!got.unwrap().is_fresh(now), "/tagged/{i}: marked stale"),
            _ => assert!(got.unwrap().is_fresh(now), "/tagged/{i}: untouched"),
        }
    }
    let prefix = stampede_layer::store::tags::prefix_tag("/tagged/");
    let by_prefix = a.purge_tag(&prefix, PurgeMode::Hard).await.unwrap();
    assert_eq!(by_prefix.hit, 40, "the rest, by prefix");

    // Two gateways on the cluster share one cache.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let origin = serve(Router::new().route(
        "/items/{id}",
        get(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                ([("surrogate-key", "cluster-items")], "{}")
            }
        }),
    ))
    .await;
    let flags = [
        "--redis",
        &url,
        "--ttl",
        "30s",
        "--admin-token",
        "cluster-token",
    ];
    let g1 = gateway::spawn(config(origin, "all", &flags)).await.unwrap();
    let g2 = gateway::spawn(config(origin, "all", &flags)).await.unwrap();
    http_get(&format!("http://{}/items/500", g1.addr)).await;
    let hit = http_get(&format!("http://{}/items/500", g2.addr)).await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let shared = calls.load(Ordering::SeqCst);
    // A tag purge through one gateway's admin API reaches the other.
    let purge = send(
        http::Method::POST,
        &format!("http://{}/admin/purge", g1.admin_addr),
        &[
            ("authorization", "Bearer cluster-token"),
            ("content-type", "application/json"),
        ],
        r#"{"tags":["cluster-items"]}"#,
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.body);
    assert!(purge.body.contains(r#""purged":1"#), "{}", purge.body);
    // The other gateway's near copy goes over pub/sub (asynchronous): it
    // must be gone within the near-cache bound (--near-cache-ttl, 1 s).
    let purged_at = Instant::now();
    let seen_after = loop {
        let after = http_get(&format!("http://{}/items/500", g2.addr)).await;
        if !after.cache_status().contains("; hit") {
            break purged_at.elapsed();
        }
        assert!(
            purged_at.elapsed() < Duration::from_secs(1),
            "still a hit 1 s after the purge: {}",
            after.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    g1.shutdown().await.unwrap();
    g2.shutdown().await.unwrap();
    report(
        "3-node Redis Cluster: store, lock, fencing, two gateways",
        serde_json::json!({
            "keys": 50,
            "fenced_writes_rejected": refused,
            "store contract": "passed",
            "tag purges (hard / soft / prefix): entries hit": format!("{} / {} / {}", hard.hit, soft.hit, by_prefix.hit),
            "origin_calls_for_two_gateways": shared,
            "origin calls after a tag purge through one gateway, read through the other": calls.load(Ordering::SeqCst) - shared,
            "tag purge seen by the other gateway after (ms)": seen_after.as_millis(),
        }),
    );
    drop(cluster);
}
