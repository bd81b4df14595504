//! Issue 23, TLS behind the gateway: an `https://` origin signed by a
//! private CA (`--origin-ca`), its connections pooled and reused and the
//! origin's host sent as SNI; and `rediss://` to a real `redis-server`
//! serving TLS only (`--redis-ca`), shared by a fleet. (That `rediss://`
//! never falls back to plaintext is in `cli.rs`.)

mod common;

use common::{GatewayProcess, Pki};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TLS origin (HTTP/1.1, hyper) with a certificate `pki` signs for
/// localhost: every `GET` answers `Cache-Control: max-age=60` and its path.
/// Counts TLS connections and requests, and records the SNI names sent.
struct TlsOrigin {
    port: u16,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl TlsOrigin {
    async fn start(pki: &Pki) -> Self {
        let (cert, key) = pki.leaf("origin");
        let chain = vec![common::rustls_pki::CertificateDer::from(common::pem_der(
            &cert,
        ))];
        let key = {
            use common::rustls_pki::pem::PemObject;
            common::rustls_pki::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()
        };
        let config = rustls::ServerConfig::builder_with_provider(gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, requests, sni) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (c, r, n) = (connections.clone(), requests.clone(), sni.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, r, c, n) = (acceptor.clone(), r.clone(), c.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    c.fetch_add(1, Ordering::SeqCst);
                    n.lock()
                        .unwrap()
                        .push(tls.get_ref().1.server_name().map(str::to_owned));
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            r.fetch_add(1, Ordering::SeqCst);
                            let body = format!("tls origin: {}", req.uri().path());
                            async move {
                                let mut resp = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                resp.headers_mut()
                                    .insert("cache-control", "max-age=60".parse().unwrap());
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin {
            port,
            connections,
            requests,
            sni,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_with_a_private_ca_is_verified_pooled_and_named_by_sni() {
    let pki = Pki::new("origin test CA");
    let origin = TlsOrigin::start(&pki).await;
    let origin_url = format!("https://localhost:{}", origin.port);
    let gw = GatewayProcess::start(
        "https-origin",
        &[
            "--origin",
            &origin_url,
            "--origin-ca",
            pki.ca.to_str().unwrap(),
            "--ttl",
            "30s",
        ],
    )
    .await;
    // Ten misses one after another, then hits.
    for i in 1..=10 {
        let a = common::get(&gw.url(&format!("/items/{i}"))).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body, format!("tls origin: /items/{i}"));
        assert!(
            a.cache_status().contains("fwd=uri-miss"),
            "{}",
            a.cache_status()
        );
    }
    let hit = common::get(&gw.url("/items/3")).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(origin.requests.load(Ordering::SeqCst), 10);
    // Pooled and reused like a plain origin: one TLS connection for all ten.
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        1,
        "TLS connections"
    );
    // SNI is the origin's host.
    assert_eq!(
        origin.sni.lock().unwrap().as_slice(),
        &[Some("localhost".to_owned())]
    );

    // Without the private CA the origin is not trusted: 502, nothing sent.
    let untrusted = GatewayProcess::start("https-untrusted", &["--origin", &origin_url]).await;
    let a = common::get(&untrusted.url("/items/1")).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 10);
    // The name must match the certificate (127.0.0.1 is in it too; another is not).
    let other = Pki::new("another CA");
    let wrong_ca = GatewayProcess::start(
        "https-wrong-ca",
        &[
            "--origin",
            &origin_url,
            "--origin-ca",
            other.ca.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(common::get(&wrong_ca.url("/items/1")).await.status, 502);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 10);
}

/// The gateway's `/readyz` body (after Redis had 3 s to answer).
async fn readyz(gw: &GatewayProcess) -> String {
    tokio::time::sleep(Duration::from_secs(3)).await;
    common::get(&gw.admin_url("/readyz")).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_reaches_a_tls_only_redis_with_a_private_ca() {
    let pki = Pki::new("redis test CA");
    let (cert, key, _) = pki.write_leaf("redis", "redis");
    let redis = stampede_layer::testing::RedisServer::start_tls(&cert, &key, &pki.ca);
    assert!(redis.url().starts_with("rediss://"));
    let origin = common::VersionedOrigin::start(Duration::ZERO).await;
    let gw = GatewayProcess::start(
        "rediss",
        &[
            "--origin",
            &origin.url(),
            "--redis",
            &redis.url(),
            "--redis-ca",
            pki.ca.to_str().unwrap(),
            "--ttl",
            "30s",
            "--near-cache-ttl",
            "0s",
        ],
    )
    .await;
    let ready = readyz(&gw).await;
    assert!(!ready.contains("degraded"), "{ready}");
    let a = common::get(&gw.url("/items/1")).await;
    assert_eq!(a.status, 200);
    let b = common::get(&gw.url("/items/1")).await;
    assert!(b.is_hit(), "{}", b.cache_status());
    assert_eq!(origin.gets(), 1);
    // The entry is in Redis (over TLS: the server has no plaintext port).
    let keys = redis.cli(&["--scan", "--pattern", "stampede:*"]);
    assert!(keys.lines().any(|k| k.ends_with(":e")), "{keys}");

    // Another gateway on the same Redis gets the entry from it.
    let g2 = GatewayProcess::start(
        "rediss-2",
        &[
            "--origin",
            &origin.url(),
            "--redis",
            &redis.url(),
            "--redis-ca",
            pki.ca.to_str().unwrap(),
            "--ttl",
            "30s",
        ],
    )
    .await;
    readyz(&g2).await;
    let c = common::get(&g2.url("/items/1")).await;
    assert!(c.is_hit(), "{}", c.cache_status());
    assert_eq!(origin.gets(), 1);

    // Without the CA the server is not trusted: the gateway runs degraded on
    // its in-process fallback and writes nothing to Redis.
    let untrusted = GatewayProcess::start(
        "rediss-untrusted",
        &[
            "--origin",
            &origin.url(),
            "--redis",
            &redis.url(),
            "--ttl",
            "30s",
        ],
    )
    .await;
    let ready = readyz(&untrusted).await;
    assert!(ready.contains("degraded"), "{ready}");
    let before = redis.cli(&["DBSIZE"]);
    common::get(&untrusted.url("/items/2")).await;
    assert_eq!(redis.cli(&["DBSIZE"]), before);
}
