//! `gateway`: an axum reverse proxy that stacks the stampede-layer
//! mitigations in front of one HTTP origin.
//!
//! The binary is a thin wrapper over [`run`]; tests and the experiment runner
//! use [`spawn`] to start a gateway in-process on ephemeral ports.

#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod proxy;
pub mod server;
pub mod tls;

pub use config::Config;

use anyhow::Context as _;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, Uri};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stampede_layer::{
    CacheConfig, CacheStore, FallbackStore, HotKeys, LeaseOptions, MemoryStore, NearCacheConfig,
    NearCacheStore, RedisStore, SharedStore, Stampede, StampedeLayer,
};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt};

/// Histogram buckets for every `_seconds` metric: 0.5 ms … 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0, 30.0,
];

/// Install the Prometheus recorder once per process, labelled `gateway=<instance>`.
/// If another recorder is already installed (tests running several servers in
/// one process), returns a handle of a detached recorder and logs a warning.
pub fn install_prometheus(instance: &str) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use stampede_layer::telemetry as fp;
            // A full name wins over a suffix (the exporter tries full names first).
            let builder = PrometheusBuilder::new()
                .add_global_label("gateway", instance)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(fp::REBUILDS_PER_KEY_WINDOW.into()),
                        fp::REBUILDS_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(fp::STALE_SERVED_AGE.into()),
                        fp::STALE_AGE_BUCKETS,
                    )
                })
                .expect("buckets are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder is already installed; this /metrics shows nothing"
                );
            }
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// A Redis store for `url` (see [`config::check_redis_url`]); `rediss://`
/// over TLS with the built-in roots plus `redis_ca`, never in plaintext.
/// Waits up to 2 s for the connection; if Redis cannot be reached by then
/// (a TLS failure included), the gateway comes up on its in-process fallback
/// (degraded) and joins Redis in the background when it answers.
async fn redis_store(
    url: &str,
    redis_ca: Option<&std::path::Path>,
    purge_window: Duration,
) -> anyhow::Result<RedisStore> {
    config::check_redis_url(url).map_err(anyhow::Error::msg)?;
    let redacted = config::redact_url(url);
    let mut builder = RedisStore::builder(url).purge_window(purge_window);
    if config::redis_url_uses_tls(url) {
        builder = builder.tls(tls::client_config(redis_ca, "--redis-ca")?);
    } else if redis_ca.is_some() {
        tracing::warn!(
            "--redis-ca is ignored: the --redis URL is redis:// (plaintext); use rediss:// for TLS"
        );
    }
    let store = builder
        .connect_lazily()
        .with_context(|| format!("bad Redis URL {redacted}"))?;
    if !store.wait_for_connect(Duration::from_secs(2)).await {
        tracing::warn!(url = %redacted, "cannot reach Redis yet; serving from the in-process fallback store (degraded) and retrying in the background");
        let probe = store.clone();
        tokio::spawn(async move {
            while probe.is_degraded() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tracing::info!(url = %redacted, "Redis reached; joining the fleet");
        });
    }
    Ok(store)
}

/// Connect the store the configuration asks for.
pub async fn build_store(config: &Config) -> anyhow::Result<SharedStore> {
    // Tag purges are remembered for as long as a fill that started before
    // one may still land (the fill deadline), and a margin.
    let purge_window = config.fill_deadline + Duration::from_secs(30);
    Ok(match &config.redis {
        Some(url) => {
            let store = redis_store(url, config.redis_ca.as_deref(), purge_window).await?;
            let tls = config::redis_url_uses_tls(url);
            let url = config::redact_url(url);
            tracing::info!(%url, tls, "store: Redis (entries and rebuild locks shared by every gateway on it); falls back to an in-process store while Redis fails");
            let fallback = MemoryStore::new(config.memory_max_entries, config.memory_max_bytes)
                .purge_window(purge_window);
            let breaker =
                FallbackStore::new(store.clone(), fallback).degraded_ttl(config.degraded_ttl);
            if config.near_cache_ttl.is_zero() {
                tracing::info!("near cache: off (--near-cache-ttl 0s); every lookup asks Redis");
                return Ok(Arc::new(breaker));
            }
            // In front of the breaker: a near hit touches neither Redis nor
            // the breaker; misses, writes, locks and fencing go through both.
            let mut near = NearCacheConfig::default();
            near.ttl = config.near_cache_ttl;
            near.max_entries = config.near_cache_max_entries;
            near.max_bytes = config.near_cache_max_bytes;
            let near = NearCacheStore::with_redis_invalidation(breaker, near, &store)
                .await
                .with_context(|| format!("cannot subscribe to invalidations on {url}"))?;
            tracing::info!(
                ttl = ?config.near_cache_ttl,
                channel = %store.invalidation_channel(),
                "near cache: fresh entries served from memory for up to the TTL; \
                 deletes published to every gateway over Redis pub/sub"
            );
            Arc::new(near)
        }
        None => {
            if config.mitigations.lock {
                tracing::info!(
                    "store: in-process; the lock layer cannot reach other instances \
                     (it coordinates this process only — pass --redis for fleet-wide locking)"
                );
            } else {
                tracing::info!("store: in-process");
            }
            Arc::new(
                MemoryStore::new(config.memory_max_entries, config.memory_max_bytes)
                    .purge_window(purge_window),
            )
        }
    })
}

/// The layer stack over the proxy, as [`build_stack`] makes it: its own
/// type, not boxed, so a request neither copies a boxed service nor boxes
/// its future to reach it (a plain fresh hit is answered without either).
pub type Stack = Stampede<proxy::Proxy>;

/// Build the layer stack over the proxy. Fails when `--origin-ca` cannot be
/// read.
pub fn build_stack(
    config: &Config,
    store: SharedStore,
    hot_keys: HotKeys,
) -> anyhow::Result<Stack> {
    if config.origin_ca.is_some() && !config.origin.is_https() {
        tracing::warn!("--origin-ca is ignored: the origin is http:// (plaintext)");
    }
    let origin_tls = tls::client_config(config.origin_ca.as_deref(), "--origin-ca")?;
    let proxy = proxy::Proxy::with_tls(config.origin.clone(), config.upstream_timeout, origin_tls)
        .preserve_host(config.preserve_host);
    // --http-strict: no operator override of the origin's freshness.
    let operator = |d: Duration| {
        if config.http_strict {
            Duration::ZERO
        } else {
            d
        }
    };
    let mut cache = CacheConfig::default();
    cache.name = "stampede".into();
    cache.ttl = operator(config.ttl);
    cache.stale_ttl = operator(config.stale_ttl);
    cache.stale_if_error = operator(config.stale_if_error.max(config.stale_ttl));
    cache.max_object_size = config.max_object_size;
    cache.honor_origin_cache_control = true;
    cache.cache_credentialed = config.cache_credentialed;
    cache.hit_for_miss_ttl = config.hit_for_miss_ttl;
    cache.retain_stale = config.retain_stale;
    cache.heuristic_freshness = config.heuristic_freshness;
    cache.credential_headers = config.credential_headers.clone();
    let mut lease = LeaseOptions::default();
    lease.renew = !config.no_lock_renewal;
    lease.fill_deadline = config.fill_deadline;
    Ok(StampedeLayer::new(store)
        .mitigations(config.mitigations)
        .cache_config(cache)
        .lock_ttl(config.lock_ttl)
        .lock_wait(config.lock_wait.unwrap_or(config.lock_ttl))
        .lease(lease)
        .xfetch_beta(config.xfetch_beta)
        .jitter(if config.http_strict {
            0.0
        } else {
            config.jitter
        })
        .negative_ttl(operator(config.negative_ttl))
        .overload_budget(config.gate_max_inflight, config.gate_queue_wait)
        .key_fn(key_scope(config))
        .hot_keys(hot_keys)
        .layer(proxy))
}

/// The proxy service: every request goes through the stack; stack errors
/// become 502. Every request is given its request id first
/// ([`access_log::assign_request_id`]: the client's `X-Request-Id`, or a new
/// one), which goes on to the origin and comes back on the answer.
/// `forwarding` sets the forwarding headers on the way in (from the peer
/// address in the request's `ConnectInfo`) and `Via` on the way out. With
/// `access_log`, one event per request at info level (see [`access_log`]).
///
/// Served straight by the listener, not through an axum `Router`: the proxy
/// has no routes, and a router's per-request fallback dispatch cost a hit
/// 2–3 % of the gateway's CPU. What the router's response future also
/// did, hyper's HTTP/1 server does itself: no body on a `HEAD` answer, and a
/// `Content-Length` from a body of known size.
pub fn proxy_service(
    stack: Stack,
    forwarding: proxy::Forwarding,
    access_log: bool,
) -> impl Service<
    Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let forwarding = Arc::new(forwarding);
    let proxy = tower::service_fn(move |mut req: Request<Body>| {
        let stack = stack.clone();
        let forwarding = forwarding.clone();
        async move {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let version = req.version();
            let request_id = req.headers().get(access_log::X_REQUEST_ID).cloned();
            forwarding.on_request(req.headers_mut(), version, peer);
            // HTTP/2 names the host in the target (`:authority`): one place
            // for it, where the key scope and the proxy look.
            if !req.headers().contains_key(http::header::HOST)
                && let Some(host) = req
                    .uri()
                    .authority()
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(http::header::HOST, host);
            }
            // The stack is infallible: origin failures are answers.
            let Ok(resp) = stack.oneshot(req).await;
            let mut resp = resp.into_response();
            forwarding.on_response(resp.headers_mut());
            if let Some(id) = request_id {
                resp.headers_mut().insert(access_log::X_REQUEST_ID, id);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    tower::ServiceBuilder::new()
        .map_request(|mut req: Request<Body>| {
            // Room for what is added below: one growth at most.
            req.headers_mut().reserve(REQUEST_HEADERS_ADDED);
            access_log::assign_request_id(&mut req);
            req
        })
        .option_layer(access_log.then_some(access_log::AccessLogLayer))
        .service(proxy)
}

/// Headers the proxy service adds to a request before the stack sees it
/// (`X-Request-Id`, `Via`, `X-Forwarded-For`, `Forwarded`, and `Host` for
/// HTTP/2): room for them is made once, so adding them does not grow the
/// request's header map (the HTTP/1.1 lane makes it as it builds the map).
pub(crate) const REQUEST_HEADERS_ADDED: usize = 5;

fn read_warm_list(path: &std::path::Path) -> anyhow::Result<Vec<Uri>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --warm-list {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| {
            l.parse::<Uri>()
                .ok()
                .filter(|_| l.starts_with('/'))
                .with_context(|| format!("{}:{}: not a path: {l:?}", path.display(), n + 1))
        })
        .collect()
}

/// How a shutdown was asked for, and so how it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (an orchestrator): `/readyz` turns 503 at once, the listeners
    /// keep serving for `--shutdown-delay`, then close; requests in flight
    /// get `--shutdown-grace` to finish.
    Drain,
    /// SIGINT (Ctrl-C), or a test: no delay; requests in flight still get
    /// `--shutdown-grace`.
    Now,
}

/// Serve the proxy and admin listeners until `shutdown` resolves, then drain
/// as its [`Stop`] says.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> anyhow::Result<()> {
    let warm_list = match &config.warm_list {
        Some(p) => Some(read_warm_list(p)?),
        None => None,
    };
    // TLS first: a bad certificate or key is one clear error at start-up.
    let server_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::ServerTls::load(cert, key)?;
            tls.watch(config.tls_reload_interval);
            Some(tls)
        }
        _ => None,
    };
    let store = build_store(&config).await?;
    stampede_layer::telemetry::set_herd_window(config.herd_window);
    stampede_layer::telemetry::register(store.backend());
    {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(n) = store.entry_count() {
                    metrics::gauge!("stampede_store_entries", "backend" => store.backend())
                        .set(n as f64);
                }
                let tasks = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                metrics::gauge!("gateway_runtime_alive_tasks").set(tasks as f64);
            }
        });
    }
    let hot_keys = HotKeys::new(10, Duration::from_secs(10), 10_000);
    let stack = build_stack(&config, store.clone(), hot_keys.clone())?;
    let ready = Arc::new(AtomicBool::new(warm_list.is_none()));
    let draining = Arc::new(AtomicBool::new(false));
    let admin_state = admin::AdminState {
        metrics,
        store,
        stack: stack.clone(),
        hot_keys,
        // An empty token (e.g. an unset compose variable) disables the API, never opens it.
        token: config
            .admin_token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .map(Into::into),
        ready: ready.clone(),
        draining: draining.clone(),
        readyz_requires_store: config.readyz_requires_redis,
        soft_purge_grace: config.stale_ttl.max(Duration::from_secs(1)),
    };
    if let Some(list) = warm_list {
        let stack = stack.clone();
        tokio::spawn(async move {
            let n = list.len();
            let report = admin::warm_paths(&stack, list).await;
            tracing::info!(
                paths = n,
                warmed = report.warmed,
                failed = report.failed.len(),
                "warm list loaded; ready"
            );
            ready.store(true, Ordering::Release);
        });
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        origin = ?config.origin,
        tls_listener = server_tls.is_some(),
        mitigations = %config.mitigations,
        instance = %config.instance,
        "gateway up"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (delay, grace) = (config.shutdown_delay, config.shutdown_grace);
    tokio::spawn(async move {
        let stop = shutdown.await;
        draining.store(true, Ordering::Release);
        if stop == Stop::Drain && !delay.is_zero() {
            tracing::info!(
                delay = ?delay,
                "draining: /readyz answers 503; still serving until the delay ends"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!(grace = ?grace, "listeners closed; waiting for the requests in flight");
        let _ = stop_tx.send(true);
    });
    let limits = |max_connections| server::Limits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections,
        max_header_bytes: config.max_header_bytes,
        max_concurrent_streams: config.max_concurrent_streams,
        http1_lane: config.http1_lane,
    };
    let forwarding = proxy::Forwarding::new(config.forwarded_headers, &config.via);
    let admin = server::serve(
        admin_listener,
        admin::router(admin_state),
        limits(config.admin_max_connections),
        "admin",
        stop_rx.clone(),
        None,
    );
    let main = server::serve(
        listener,
        proxy_service(stack, forwarding, config.access_log),
        limits(config.max_connections),
        "proxy",
        stop_rx.clone(),
        server_tls.as_ref().map(|t| t.acceptor()),
    );
    let mut closed = stop_rx;
    let served = async { tokio::join!(admin, main) };
    tokio::pin!(served);
    // Serve until the listeners close; then at most the grace for the rest.
    let (a, b) = tokio::select! {
        done = &mut served => done,
        () = server::stopped(&mut closed) => match tokio::time::timeout(grace, &mut served).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(
                    grace = ?grace,
                    "requests still in flight after --shutdown-grace; exiting anyway (their connections are cut)"
                );
                return Ok(());
            }
        },
    };
    a.context("admin listener")?;
    b.context("proxy listener")?;
    tracing::info!("stopped");
    Ok(())
}

/// A gateway started in-process by [`spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// Proxy address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// The server task.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Spawned {
    /// Stop the gateway and wait for it.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?
    }
}

/// For tests: serve `config` on ephemeral 127.0.0.1 ports (ignoring
/// `listen`/`admin_listen`). An unreachable Redis is not an error: the
/// gateway comes up degraded and joins it later.
pub async fn spawn(config: Config) -> anyhow::Result<Spawned> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    if let Some(url) = &config.redis {
        config::check_redis_url(url).map_err(anyhow::Error::msg)?;
    }
    let metrics = install_prometheus(&config.instance);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(config, listener, admin_listener, metrics, async move {
        let _ = rx.await;
        Stop::Now
    }));
    Ok(Spawned {
        addr,
        admin_addr,
        task,
        stop: Some(tx),
    })
}

/// The key scope `--key-header` and `--preserve-host` ask for: the values of
/// those request headers (and the `Host`), named, in a fixed order.
fn key_scope(
    config: &Config,
) -> impl Fn(&http::HeaderMap) -> Option<String> + Send + Sync + 'static {
    let mut names = config.key_headers.clone();
    if config.preserve_host {
        names.push(http::header::HOST);
    }
    move |headers: &http::HeaderMap| {
        if names.is_empty() {
            return None;
        }
        let mut scope = String::new();
        for name in &names {
            scope.push_str(name.as_str());
            scope.push('=');
            for value in headers.get_all(name) {
                scope.push_str(&String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase());
                scope.push(',');
            }
            scope.push(';');
        }
        Some(scope)
    }
}
