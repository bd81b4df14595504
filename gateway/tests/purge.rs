//! Purge by tag, by prefix, soft or hard, fleet-wide — with real processes:
//! gateway binaries on one redis-server, in front of a test origin of our
//! own that tags its answers (`Surrogate-Key`, `Cache-Tag`) and says which
//! generation of its content it served.
//!
//! * 3 gateways, 10,000 entries tagged across 100 tags: a tag purge through
//!   one gateway, and every gateway answers the purged entries from the
//!   origin within 100 ms (measured) while the others stay hits;
//! * a hot key under load, soft-purged: one origin request fleet-wide, no
//!   client waits for it — beside the hard purge, where clients do;
//! * a prefix purge (and the 400s that say why a prefix cannot be purged);
//! * the race: a slow fill of a tagged entry, started before a tag purge
//!   whose index did not list it yet, is refused when it lands.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{GatewayProcess, report, send, serve};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stampede_layer::testing::RedisServer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "purge-test-token";

/// The test origin: any path answers `{"path":…,"gen":G}` (G read when the
/// request arrives, then the delay spent: `?ms=`, else the default),
/// `Cache-Control: max-age=600`, `Surrogate-Key: tag-<n % 100> item-<n>` for
/// `/items/<n>` (else `other`), `Cache-Tag: <first path segment>`. Counts
/// requests per path and query.
#[derive(Clone)]
struct Origin {
    addr: std::net::SocketAddr,
    state: Arc<OriginState>,
}

struct OriginState {
    generation: AtomicU64,
    delay_ms: AtomicU64,
    calls: Mutex<HashMap<String, u64>>,
}

impl Origin {
    async fn start() -> Self {
        let state = Arc::new(OriginState {
            generation: AtomicU64::new(1),
            delay_ms: AtomicU64::new(0),
            calls: Mutex::default(),
        });
        async fn answer(State(s): State<Arc<OriginState>>, uri: Uri) -> impl IntoResponse {
            let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            *s.calls.lock().unwrap().entry(target).or_default() += 1;
            let generation = s.generation.load(Ordering::SeqCst);
            let ms = uri
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| s.delay_ms.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let path = uri.path();
            let surrogate = match path
                .strip_prefix("/items/")
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(n) => format!("tag-{} item-{n}", n % 100),
                None => "other".to_owned(),
            };
            let first = path.split('/').nth(1).unwrap_or("").to_owned();
            (
                [
                    ("cache-control", "max-age=600".to_owned()),
                    ("surrogate-key", surrogate),
                    ("cache-tag", format!("{first}, everything-{first}")),
                ],
                format!("{{\"path\":\"{path}\",\"gen\":{generation}}}"),
            )
        }
        let app = Router::new()
            .fallback(axum::routing::get(answer))
            .with_state(state.clone());
        Origin {
            addr: serve(app).await,
            state,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve the next generation of every answer from now on.
    fn bump(&self) -> u64 {
        self.state.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Requests of `target` (path and query) so far.
    fn calls(&self, target: &str) -> u64 {
        *self.state.calls.lock().unwrap().get(target).unwrap_or(&0)
    }

    /// Requests of every target starting with `prefix` so far.
    fn calls_under(&self, prefix: &str) -> u64 {
        let calls = self.state.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The generation an answer's body names.
fn generation(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("gen")?.as_u64()
}

/// One keep-alive client for many requests.
#[derive(Clone)]
struct Http(Client<HttpConnector, Empty<Bytes>>);

struct Got {
    status: StatusCode,
    generation: Option<u64>,
    cache_status: String,
    took: Duration,
}

impl Got {
    fn hit(&self) -> bool {
        self.cache_status.contains("; hit")
    }
}

impl Http {
    fn new() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    async fn get(&self, url: &str) -> Got {
        let started = Instant::now();
        let req = Request::get(url).body(Empty::new()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(15), self.0.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status();
        let cache_status = resp
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            generation: generation(&String::from_utf8_lossy(&body)),
            cache_status,
            took: started.elapsed(),
        }
    }
}

/// `POST /admin/purge` with `body` through `gw`: status and JSON answer.
async fn purge(gw: &GatewayProcess, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let a = send(
        Method::POST,
        &gw.admin_url("/admin/purge"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await;
    let json = serde_json::from_str(&a.body).unwrap_or(serde_json::Value::String(a.body));
    (a.status, json)
}

/// Start gateways `names` on `redis` (none: each with its in-process store)
/// in front of `origin`, with the test token and `extra` flags.
async fn gateways(
    names: &[&str],
    origin: &Origin,
    redis: Option<&RedisServer>,
    extra: &[&str],
) -> Vec<GatewayProcess> {
    let (origin, redis) = (origin.url(), redis.map(RedisServer::url));
    let mut args = vec![
        "--origin",
        &origin,
        "--admin-token",
        TOKEN,
        "--xfetch-beta",
        "0",
    ];
    args.extend(["--jitter", "0", "--upstream-timeout", "10s"]);
    if let Some(url) = &redis {
        args.extend(["--redis", url.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut out = Vec::new();
    for name in names {
        out.push(GatewayProcess::start(name, &args).await);
    }
    out
}

/// 3 gateways on one Redis, 10,000 entries tagged across 100 tags, near
/// caches that would keep their copies for a minute: a purge of one tag
/// through one gateway, and every gateway answers those 100 entries from
/// the origin (the next generation): no request asked later than 100 ms
/// after the purge answered gets the old one (measured: the latest old
/// answer, since the purge was asked), every purged entry is fetched again,
/// and every other entry stays a hit of the old generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purge_reaches_every_gateway_within_100ms() {
    const ENTRIES: u64 = 10_000;
    const TAG: u64 = 42;
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let extra = ["--ttl", "600s", "--near-cache-ttl", "60s"];
    let gws = gateways(&["tag-a", "tag-b", "tag-c"], &origin, Some(&redis), &extra).await;
    let http = Http::new();

    // Warm: every entry once, through the gateways in turn.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let urls: Vec<Vec<String>> = gws
        .iter()
        .map(|g| {
            (0..ENTRIES)
                .map(|n| g.url(&format!("/items/{n}")))
                .collect()
        })
        .collect();
    let urls = Arc::new(urls);
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (http, next, urls) = (http.clone(), next.clone(), urls.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= ENTRIES {
                        return;
                    }
                    let got = http.get(&urls[(n % 3) as usize][n as usize]).await;
                    assert_eq!(got.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let warm_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        origin.calls_under("/items/"),
        ENTRIES,
        "each entry fetched once"
    );
    let tagged: Vec<u64> = (0..ENTRIES).filter(|n| n % 100 == TAG).collect();
    let untouched: Vec<u64> = (0..ENTRIES)
        .filter(|n| n % 100 != TAG)
        .step_by(33)
        .collect();
    // Every gateway holds near copies of the tagged entries and a sample of
    // the others (the second read of each is a near hit): only the
    // invalidation can explain a new answer.
    for g in &gws {
        for n in tagged.iter().chain(&tagged).chain(&untouched) {
            let got = http.get(&g.url(&format!("/items/{n}"))).await;
            assert!(
                got.hit() && got.generation == Some(1),
                "{}",
                got.cache_status
            );
        }
    }
    let near_hits: f64 = {
        let mut sum = 0.0;
        for g in &gws {
            sum += g.counter("stampede_near_cache_hits_total", "").await;
        }
        sum
    };

    assert!(
        near_hits >= 300.0,
        "near copies of the tagged entries: {near_hits}"
    );
    assert_eq!(origin.bump(), 2);
    let calls_before = origin.calls_under("/items/");
    // Every gateway, round-robin over the purged entries, from just before
    // the purge is asked until 500 ms after it answered and every entry has
    // been answered its new generation since (or 5 s, whichever is first:
    // on a loaded machine one round can take longer than the 500 ms): each
    // answer's generation, and when it was asked.
    let answered_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let pollers: Vec<_> = gws
        .iter()
        .map(|g| {
            let (http, answered_at) = (http.clone(), answered_at.clone());
            let urls: Vec<String> = tagged
                .iter()
                .map(|n| g.url(&format!("/items/{n}")))
                .collect();
            tokio::spawn(async move {
                let (mut seen, mut i) = (Vec::new(), 0);
                let mut fresh = vec![false; urls.len()];
                loop {
                    if let Some(t) = answered_at.get()
                        && ((t.elapsed() >= Duration::from_millis(500) && fresh.iter().all(|f| *f))
                            || t.elapsed() >= Duration::from_secs(5))
                    {
                        return seen;
                    }
                    let (sent, at) = (Instant::now(), i % urls.len());
                    let got = http.get(&urls[at]).await;
                    fresh[at] |=
                        answered_at.get().is_some_and(|t| sent >= *t) && got.generation == Some(2);
                    seen.push((at, sent, got));
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = Instant::now();
    let (status, answer) = purge(
        &gws[0],
        serde_json::json!({ "tags": [format!("tag-{TAG}")] }),
    )
    .await;
    let purged_at = Instant::now();
    answered_at.set(purged_at).unwrap();
    let purge_ms = ms(purged_at - asked);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["purged"], 100, "{answer}");
    assert_eq!(answer["fenced"], 100, "{answer}");
    assert_eq!(answer["tags"][format!("tag-{TAG}")], 100, "{answer}");
    let mut polls = Vec::new();
    for p in pollers {
        polls.push(p.await.unwrap());
    }
    // Old answers asked after the purge answered (must be none past 100 ms);
    // the latest old answer at all, since the purge was asked (the window in
    // which a gateway could still answer the old generation).
    let (mut old_after, mut latest_old_after, mut window) = (0, None, Duration::ZERO);
    let (mut answers_after, mut sweep) = (0, Duration::ZERO);
    let mut first_fresh = Vec::new();
    for (g, seen) in gws.iter().zip(&polls) {
        let mut fresh = vec![false; tagged.len()];
        for (i, sent, got) in seen {
            assert_eq!(got.status, StatusCode::OK);
            let old = match got.generation {
                Some(1) => true,
                Some(2) => false,
                other => panic!("{other:?}: {}", got.cache_status),
            };
            if old {
                window = window.max(sent.saturating_duration_since(asked));
            }
            if *sent < purged_at {
                continue;
            }
            answers_after += 1;
            let since = *sent - purged_at;
            if old {
                old_after += 1;
                latest_old_after = latest_old_after.max(Some(since));
            } else if !fresh[*i] {
                if fresh.iter().all(|f| !f) {
                    first_fresh.push(format!("{:.1}", ms(since + got.took)));
                }
                fresh[*i] = true;
                sweep = sweep.max(since + got.took);
            }
        }
        assert!(
            fresh.iter().all(|f| *f),
            "gateway :{} never answered a purged entry's new generation \
             (latest old answer {latest_old_after:?} after the purge answered)",
            g.port
        );
    }
    let refetched = origin.calls_under("/items/") - calls_before;
    for n in &tagged {
        assert!(
            origin.calls(&format!("/items/{n}")) >= 2,
            "/items/{n} not refetched"
        );
    }
    // The others: still hits of the first generation, on every gateway.
    let mut untouched_hits = 0;
    for g in &gws {
        for n in &untouched {
            let got = http.get(&g.url(&format!("/items/{n}"))).await;
            assert!(
                got.hit() && got.generation == Some(1),
                "/items/{n} on :{}: {}",
                g.port,
                got.cache_status
            );
            untouched_hits += 1;
        }
    }
    let remote = gws[1]
        .counter(
            "stampede_near_cache_invalidations_total",
            r#"source="remote""#,
        )
        .await;
    report(
        "purge::a_tag_purge_reaches_every_gateway_within_100ms",
        serde_json::json!({
            "gateways": 3,
            "entries (tags)": format!("{ENTRIES} ({} tags)", 100),
            "warm-up (s)": format!("{warm_secs:.1}"),
            "near-cache hits before the purge": near_hits,
            "entries purged by the tag": answer["purged"],
            "purge call (ms)": format!("{purge_ms:.1}"),
            "requests for purged entries in the 500 ms after the purge answered (3 gateways)": answers_after,
            "of them answered the old generation": old_after,
            "old generation answered until (ms after the purge was asked)": format!("{:.1}", ms(window)),
            "first answer after the purge answered, new generation, per gateway (ms)": first_fresh.join(" / "),
            "every purged entry answered fresh by every gateway, one after the other (ms)": format!("{:.1}", ms(sweep)),
            "origin requests for the purged entries afterwards": refetched,
            "untouched entries checked, all hits": untouched_hits,
        }),
    );
    assert!(
        latest_old_after.is_none_or(|t| t <= Duration::from_millis(100)),
        "an old generation was answered {latest_old_after:?} after the purge answered"
    );

    assert!(
        remote >= 100.0,
        "the invalidations came over pub/sub: {remote}"
    );
}

/// One load run against `path` on every gateway (8 clients each, for 3 s),
/// with the purge `body` through the second gateway after 0.5 s.
async fn hot_key_run(
    gws: &[GatewayProcess],
    origin: &Origin,
    path: &str,
    body: serde_json::Value,
) -> Run {
    let http = Http::new();
    let base = origin.state.generation.load(Ordering::SeqCst) - 1;
    // Warm, and every gateway's near copy.
    for g in gws {
        let got = http.get(&g.url(path)).await;
        assert_eq!(got.generation, Some(base + 1));
    }
    let start = Instant::now();
    let purge_at = start + Duration::from_millis(500);
    let end = start + Duration::from_millis(3000);
    let clients: Vec<_> = gws
        .iter()
        .flat_map(|g| std::iter::repeat_n(g.url(path), 8))
        .map(|url| {
            let http = http.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let got = http.get(&url).await;
                    seen.push((sent, got));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep_until(purge_at.into()).await;
    origin.bump();
    let before = origin.calls(path);
    let asked = Instant::now();
    let (status, answer) = purge(&gws[1], body).await;
    let answered = Instant::now();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["purged"], 1, "{answer}");
    let mut run = Run {
        purge_call: answered - asked,
        ..Run::default()
    };
    for c in clients {
        for (sent, mut got) in c.await.unwrap() {
            got.generation = got.generation.map(|g| g - base);
            match sent.checked_duration_since(asked) {
                None => run.before.push(got),
                Some(since) => run.after.push((since, got)),
            }
        }
    }
    run.rebuilds = origin.calls(path) - before;
    run
}

/// What the clients of one [`hot_key_run`] saw: the answers asked before
/// the purge, those asked from when it was asked (with how long after), how
/// long the purge call took, and the origin requests after it. Generations
/// are counted from the run's: 1 before the purge, 2 after.
///
/// "After" starts when the purge is asked, not when it answers: a hard
/// purge's rebuild can start while the call is still on its way back, and
/// on a loaded machine every client may have asked — and be waiting for
/// that rebuild — before the call answers.
#[derive(Default)]
struct Run {
    before: Vec<Got>,
    after: Vec<(Duration, Got)>,
    purge_call: Duration,
    rebuilds: u64,
}

impl Run {
    fn percentile(took: impl Iterator<Item = Duration>, p: usize) -> Duration {
        let mut all: Vec<Duration> = took.collect();
        all.sort();
        all.get((all.len() * p / 100).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    /// Hits before the purge: p99 and max.
    fn hits(&self) -> (Duration, Duration) {
        let took = || self.before.iter().map(|g| g.took);
        (Self::percentile(took(), 99), Self::percentile(took(), 100))
    }

    /// Answers asked once the purge was: p99 and max.
    fn latency(&self) -> (Duration, Duration) {
        let took = || self.after.iter().map(|(_, g)| g.took);
        (Self::percentile(took(), 99), Self::percentile(took(), 100))
    }

    /// Answers asked once the purge was that took at least `d`.
    fn waited(&self, d: Duration) -> usize {
        self.after.iter().filter(|(_, g)| g.took >= d).count()
    }

    /// Answers after the purge of generation `g` (asked at least `since`
    /// after it answered).
    fn of(&self, generation: u64, since: Duration) -> usize {
        let (g, from) = (Some(generation), self.purge_call + since);
        self.after
            .iter()
            .filter(|(t, a)| *t >= from && a.generation == g)
            .count()
    }

    /// Its figures, each named with `name` first.
    fn figures(
        &self,
        name: &str,
        rebuild: Duration,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        let ((hit_p99, hit_max), (p99, max)) = (self.hits(), self.latency());
        let mut put = |k: &str, v: serde_json::Value| out.insert(format!("{name}: {k}"), v);
        put("origin requests after the purge", self.rebuilds.into());
        put(
            "purge call (ms)",
            format!("{:.1}", ms(self.purge_call)).into(),
        );
        put(
            "hits before the purge, p99 / max (ms)",
            format!("{:.1} / {:.1}", ms(hit_p99), ms(hit_max)).into(),
        );
        put(
            "answers asked once the purge was, p99 / max (ms)",
            format!("{:.1} / {:.1}", ms(p99), ms(max)).into(),
        );
        put(
            "of them, waited ≥ half a rebuild",
            self.waited(rebuild / 2).into(),
        );
        put(
            "answers asked once the purge answered: old / new",
            format!(
                "{} / {}",
                self.of(1, Duration::ZERO),
                self.of(2, Duration::ZERO)
            )
            .into(),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A hot key under load (24 keep-alive clients over 3 gateways on one
/// Redis, origin 1 s per rebuild). Soft-purged — by path, and by tag — one
/// origin request fleet-wide, and no client waits for it: every answer
/// comes from the cache (the stale copy, then the new generation), none
/// near the rebuild time. Hard-purged, beside it: one rebuild too (the
/// lock), but the clients that ask meanwhile wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_of_a_hot_key_costs_one_origin_request_and_no_wait() {
    const REBUILD: Duration = Duration::from_millis(1000);
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let extra = ["--ttl", "600s", "--stale-ttl", "30s", "--lock-ttl", "3s"];
    let gws = gateways(&["hot-a", "hot-b", "hot-c"], &origin, Some(&redis), &extra).await;
    let path = |p: &str| format!("{p}?ms={}", REBUILD.as_millis());
    let (soft_path, tag_path, hard_path) =
        (path("/hot/soft"), path("/tagged/hot"), path("/hot/hard"));

    let soft = hot_key_run(
        &gws,
        &origin,
        &soft_path,
        serde_json::json!({ "paths": [soft_path], "soft": true }),
    )
    .await;
    // The origin tags /tagged/… answers `Cache-Tag: tagged`.
    let by_tag = hot_key_run(
        &gws,
        &origin,
        &tag_path,
        serde_json::json!({ "tags": ["tagged"], "soft": true }),
    )
    .await;
    let hard = hot_key_run(
        &gws,
        &origin,
        &hard_path,
        serde_json::json!({ "paths": [hard_path] }),
    )
    .await;
    let mut figures = serde_json::Map::new();
    figures.insert("clients (gateways)".into(), "24 (3)".into());
    figures.insert(
        "origin rebuild (ms)".into(),
        (REBUILD.as_millis() as u64).into(),
    );
    soft.figures("soft, by path", REBUILD, &mut figures);
    by_tag.figures("soft, by tag", REBUILD, &mut figures);
    hard.figures("hard, by path", REBUILD, &mut figures);
    report(
        "purge::a_soft_purge_of_a_hot_key_costs_one_origin_request_and_no_wait",
        figures.into(),
    );
    for (name, run) in [("soft", &soft), ("soft by tag", &by_tag)] {
        assert_eq!(run.rebuilds, 1, "{name}: one refresh fleet-wide");
        assert_eq!(
            run.waited(REBUILD / 2),
            0,
            "{name}: a client waited for the rebuild ({:?})",
            run.latency()
        );
        assert!(
            run.of(1, Duration::ZERO) > 0,
            "{name}: the stale copy was answered meanwhile"
        );
        assert!(run.of(2, Duration::ZERO) > 0, "{name}: the refresh landed");
        for (_, g) in &run.after {
            assert!(
                g.hit(),
                "{name}: every answer from the cache: {}",
                g.cache_status
            );
        }
    }
    assert_eq!(hard.rebuilds, 1, "hard: one rebuild fleet-wide (the lock)");
    assert!(
        hard.waited(REBUILD / 2) > 0,
        "hard: clients wait for the rebuild"
    );
    // (Past the invalidation's way to the other gateways over pub/sub.)
    assert_eq!(
        hard.of(1, Duration::from_millis(100)),
        0,
        "hard: nothing older answered 100 ms after the purge"
    );
}

/// A prefix ends at a `/`: `/shop/a/` purges `/shop/a/…` only; `/shop/`
/// then the rest of `/shop/…`, never `/shopping/…` nor `/shop` itself. A
/// `Cache-Tag` purge reaches its entries too. Invalid prefixes and tags get
/// a 400 that says why, a misspelt field a 422. Redis and the in-process
/// store alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_purge_takes_the_paths_under_it_only() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    let extra = ["--ttl", "600s"];
    let mut gws = gateways(&["prefix-redis"], &origin, Some(&redis), &extra).await;
    gws.extend(gateways(&["prefix-memory"], &origin, None, &extra).await);
    let http = Http::new();
    let paths = [
        "/shop/a/1",
        "/shop/a/2?x=1",
        "/shop/b/1",
        "/shop",
        "/shopping/1",
        "/other/1",
    ];
    for g in &gws {
        let hits = |got: &[Got]| got.iter().map(Got::hit).collect::<Vec<_>>();
        let read = || async {
            let mut out = Vec::new();
            for p in paths {
                out.push(http.get(&g.url(p)).await);
            }
            out
        };
        read().await;
        assert!(hits(&read().await).iter().all(|h| *h), "warm");

        let (status, answer) = purge(g, serde_json::json!({ "prefixes": ["/shop/a/"] })).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["purged"], 2, "{answer}");
        assert_eq!(answer["prefixes"]["/shop/a/"], 2, "{answer}");
        assert_eq!(hits(&read().await), [false, false, true, true, true, true]);

        let (_, answer) = purge(g, serde_json::json!({ "prefixes": ["/%73hop/./"] })).await;
        assert_eq!(answer["purged"], 3, "normalised to /shop/: {answer}");
        assert_eq!(hits(&read().await), [false, false, false, true, true, true]);

        // A Cache-Tag (the origin tags each answer with its first segment).
        let (_, answer) = purge(g, serde_json::json!({ "tags": ["shopping"], "soft": true })).await;
        assert_eq!(answer["purged"], 1, "{answer}");
        assert_eq!(answer["soft"], true, "{answer}");
        let after = read().await;
        assert!(
            after[4].cache_status.contains("; hit; ttl=-"),
            "stale: {}",
            after[4].cache_status
        );
        assert!(after[5].hit(), "{}", after[5].cache_status);

        for (bad, why) in [
            ("/shop", "ends at a '/'"),
            ("/", "purge everything"),
            ("/a/b/c/d/e/", "first 4 path segments"),
            ("/shop/?q=1", "no '?'"),
        ] {
            let (status, answer) = purge(g, serde_json::json!({ "prefixes": [bad] })).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            let text = answer.as_str().unwrap_or_default().to_owned();
            assert!(text.contains(why), "{bad}: {text}");
        }
        let (status, answer) = purge(g, serde_json::json!({ "tags": ["two words"] })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let (status, _) = purge(g, serde_json::json!({ "tag": ["shop"] })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a misspelt field");
        // Paths alone, as before.
        let (status, answer) = purge(g, serde_json::json!({ "paths": ["/other/1"] })).await;
        assert_eq!(
            (status, &answer["purged"]),
            (StatusCode::OK, &1.into()),
            "{answer}"
        );
    }
}

/// The race of a tag purge with its index: a slow fill of a never-cached,
/// tagged entry starts (its lease drawn, the origin asked); the content
/// changes and the tag is purged while it runs — the index does not list
/// the key yet, so no per-key fence reaches it; the fill lands afterwards.
/// It is refused (the tag's purge record), and the next request gets the
/// new generation. Redis and the in-process store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fill_started_before_a_tag_purge_is_refused() {
    let redis = RedisServer::start();
    let origin = Origin::start().await;
    // Single-flight only: a lock-less fill (a ticket), the finding-1 shape.
    let extra = ["--ttl", "600s", "--mitigations", "single-flight"];
    let mut gws = gateways(&["race-redis"], &origin, Some(&redis), &extra).await;
    gws.extend(gateways(&["race-memory"], &origin, None, &extra).await);
    let http = Http::new();
    let mut rejections = Vec::new();
    for (g, id) in gws.iter().zip([7u64, 8]) {
        let path = format!("/items/{id}");
        let slow = format!("{path}?ms=1500");
        let first = origin.state.generation.load(Ordering::SeqCst);
        let before = g.counter("stampede_fencing_rejections_total", "").await;
        let fill = tokio::spawn({
            let (http, url) = (http.clone(), g.url(&slow));
            async move { http.get(&url).await }
        });
        while origin.calls(&slow) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        origin.bump();
        let (status, answer) = purge(g, serde_json::json!({ "tags": [format!("tag-{id}")] })).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            answer["fenced"], 0,
            "the index did not list it yet: {answer}"
        );
        let fill = fill.await.unwrap();
        assert_eq!(
            fill.generation,
            Some(first),
            "its own client gets its answer"
        );
        assert!(
            !fill.cache_status.contains("stored"),
            "the fill that started before the purge was stored: {}",
            fill.cache_status
        );
        let after = http.get(&g.url(&slow)).await;
        assert_eq!(after.generation, Some(first + 1), "{}", after.cache_status);
        let refused = g
            .counter("stampede_fencing_rejections_total", "reason=\"purged\"")
            .await;
        assert!(refused > before, "counted as a fencing rejection");
        rejections.push(refused - before);
    }
    report(
        "purge::a_slow_fill_started_before_a_tag_purge_is_refused",
        serde_json::json!({
            "stores": "redis, memory",
            "late fills stored": 0,
            "fencing rejections (redis, memory)": format!("{rejections:?}"),
        }),
    );
}
