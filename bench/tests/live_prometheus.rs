//! The alert rules and the dashboard on a live Prometheus (issue #24).
//!
//! A real `prometheus` (Debian's package; `scripts/test.sh` installs it) on a
//! free 127.0.0.1 port, with the repository's `alerts.yml` loaded unmodified,
//! scrapes origin-sim and one gateway (debug builds, free ports, a temporary
//! config and data directory) while `stampede-bench load` drives them:
//!
//! 1. **naive**: `gateway --mitigations none --ttl 2s`, 20 clients, 95 % of
//!    requests on one hot key: a stampede at every expiry. `StampedeHerd` and
//!    `StampedeSawtoothOriginRate` must fire (the sawtooth after its
//!    `for: 1m`), within their `for` plus two herds, one scrape and one
//!    evaluation of slack.
//! 2. **full**: a new gateway, `--mitigations all`, the same load: no
//!    stampede alert of that gateway may even go pending, at any evaluation
//!    of the phase (checked while it runs and afterwards from `ALERTS`).
//!
//! Then every expr of the dashboard (`scripts/check_dashboard.py
//! --list-exprs`: panels, variables, annotations) is evaluated over each
//! phase through the HTTP API (`/api/v1/query_range`, Grafana's variables
//! substituted as Grafana would) and must return data; the headline panels
//! must show the stampede in the naive phase and none in the full one.
//!
//! Scrape and evaluation interval: 1 s here to keep the test short; the rules
//! are written for the production 15 s. They read what the gateway counts
//! itself (`stampede_rebuilds_per_key_window`: every herd window is one
//! observation, whatever the scrape interval) over ranges of at least 1m, so
//! the interval changes only how soon an alert notices (one scrape plus one
//! evaluation), never whether. `LIVE_PROMETHEUS_SCRAPE=15s cargo test -p
//! stampede-bench --test live_prometheus` runs the same test at 15 s (about
//! a minute longer).
//!
//! Two alerts of the set are not expected to fire here: `StampedeMissRateSpike`
//! compares the last minute with a 30-minute baseline that a fresh Prometheus
//! does not have (and a steady stampede is not a change of the miss rate), and
//! `StampedeLockWaitAboveRebuildP99` reads lock waits, which a stack without
//! the lock layer never has. Both are required to stay silent in the full
//! run; alerts_test.yml shows them firing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::Value;
use stampede_bench::procs::{ChildProc, Http, free_port, which};

/// The alerts a stampede must raise on the naive gateway.
const MUST_FIRE: [&str; 2] = ["StampedeHerd", "StampedeSawtoothOriginRate"];
/// Every alert about the cache's behaviour: none may be pending or firing for
/// the full stack.
const STAMPEDE_ALERTS: [&str; 5] = [
    "StampedeHerd",
    "StampedeSawtoothOriginRate",
    "StampedeMissRateSpike",
    "StampedeLockWaitAboveRebuildP99",
    "StampedeStaleServedTooOld",
];
/// The full stack's phase: at least 45 s, and 4 scrapes.
const FULL_PHASE: Duration = Duration::from_secs(45);
const TTL: &str = "2s";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/live_prometheus-HASH → target/debug
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    for b in ["origin-sim", "gateway"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            dir.join(b).display()
        );
    }
    dir.to_path_buf()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Percent-encode a query parameter (everything but RFC 3986 unreserved).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The test's prometheus.yml: the repository's alerts.yml, origin-sim and one
/// gateway under the job names of the demo's prometheus.yml.
fn write_config(path: &Path, scrape: Duration, gateway_admin: u16, origin: u16) {
    let alerts = repo().join("alerts.yml");
    let alerts = alerts.canonicalize().expect("alerts.yml");
    let scrape = secs(scrape);
    let text = format!(
        "global:\n  scrape_interval: {scrape}\n  scrape_timeout: {scrape}\n  evaluation_interval: {scrape}\n\
         rule_files:\n  - {alerts}\n\
         scrape_configs:\n\
         \x20 - job_name: gateway\n    static_configs:\n      - targets: ['127.0.0.1:{gateway_admin}']\n\
         \x20 - job_name: origin-sim\n    static_configs:\n      - targets: ['127.0.0.1:{origin}']\n",
        alerts = alerts.display()
    );
    std::fs::write(path, text).expect("write prometheus.yml");
}

struct Prometheus {
    base: String,
    http: Http,
}

impl Prometheus {
    async fn api(&self, path_and_query: &str) -> Value {
        let url = format!("{}{path_and_query}", self.base);
        let body = self
            .http
            .get_ok(&url)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let v: Value = serde_json::from_slice(&body).expect("Prometheus answers JSON");
        assert_eq!(v["status"], "success", "{url}: {v}");
        v["data"].clone()
    }

    /// `(alertname, gateway label, state)` of every pending or firing alert.
    async fn alerts(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
                (
                    label("alertname"),
                    label("gateway"),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    async fn query_range(&self, expr: &str, start: f64, end: f64, step: Duration) -> Vec<Value> {
        let q = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            encode(expr),
            step.as_secs_f64()
        );
        self.api(&q).await["result"]
            .as_array()
            .expect("a matrix")
            .clone()
    }

    async fn reload(&self) {
        let url = format!("{}/-/reload", self.base);
        self.http
            .ok(Method::POST, &url, None)
            .await
            .unwrap_or_else(|e| panic!("reload: {e:#}"));
    }

    /// Every rule evaluates without error.
    async fn assert_rules_healthy(&self) {
        let data = self.api("/api/v1/rules").await;
        let mut n = 0;
        for group in data["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                n += 1;
                assert_eq!(
                    rule["health"], "ok",
                    "rule {} of group {}: {}",
                    rule["name"], group["name"], rule["lastError"]
                );
            }
        }
        assert!(n >= 10, "alerts.yml not loaded? {n} rules");
    }
}

/// A phase: its gateway's name and when it ran (Unix seconds).
struct Phase {
    gateway: &'static str,
    start: f64,
    end: f64,
}

async fn start_gateway(
    http: &Http,
    bins: &Path,
    work: &Path,
    name: &str,
    mitigations: &str,
    origin: u16,
) -> (ChildProc, u16, u16) {
    let (port, admin) = (free_port(), free_port());
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--origin",
        &format!("http://127.0.0.1:{origin}"),
        "--mitigations",
        mitigations,
        "--ttl",
        TTL,
        "--stale-ttl",
        TTL,
        "--instance",
        name,
    ]
    .map(String::from)
    .to_vec();
    let mut gw = ChildProc::spawn(
        name,
        &bins.join("gateway"),
        &args,
        &work.join(format!("{name}.log")),
    )
    .expect("start gateway");
    gw.wait_ready(
        http,
        &format!("http://127.0.0.1:{admin}/readyz"),
        Duration::from_secs(15),
    )
    .await
    .expect("gateway ready");
    (gw, port, admin)
}

fn start_load(work: &Path, name: &str, port: u16, origin: u16, duration: Duration) -> ChildProc {
    let args: Vec<String> = [
        "load",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--origin",
        &format!("http://127.0.0.1:{origin}"),
        "--concurrency",
        "20",
        "--think-time",
        "10ms",
        "--hot-fraction",
        "0.95",
        "--keys",
        "1000",
        "--ttl",
        TTL,
        "--duration",
        &secs(duration),
    ]
    .map(String::from)
    .to_vec();
    ChildProc::spawn(
        &format!("load-{name}"),
        Path::new(env!("CARGO_BIN_EXE_stampede-bench")),
        &args,
        &work.join(format!("load-{name}.log")),
    )
    .expect("start stampede-bench load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_alerts_fire_on_a_naive_stampede_and_stay_silent_with_the_full_stack() {
    let test_started = Instant::now();
    let prometheus_bin = which("prometheus").expect(
        "prometheus is not on PATH: install it (Debian: apt-get install prometheus; scripts/test.sh does); \
         this test needs a real Prometheus",
    );
    let scrape = std::env::var("LIVE_PROMETHEUS_SCRAPE")
        .ok()
        .map(|s| humantime::parse_duration(&s).expect("LIVE_PROMETHEUS_SCRAPE: a duration"))
        .unwrap_or(Duration::from_secs(1));
    let bins = bin_dir();
    let work = std::env::temp_dir().join(format!("live-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("data")).unwrap();
    let http = Http::default();

    // origin-sim, shared by both phases.
    let origin = free_port();
    let origin_args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{origin}"),
        "--latency-ms",
        "100",
    ]
    .map(String::from)
    .to_vec();
    let mut origin_sim = ChildProc::spawn(
        "origin-sim",
        &bins.join("origin-sim"),
        &origin_args,
        &work.join("origin-sim.log"),
    )
    .expect("start origin-sim");
    origin_sim
        .wait_ready(
            &http,
            &format!("http://127.0.0.1:{origin}/metrics"),
            Duration::from_secs(15),
        )
        .await
        .expect("origin-sim ready");

    // ---------------------------------------------------------------- naive
    let (mut naive, naive_port, naive_admin) =
        start_gateway(&http, &bins, &work, "naive", "none", origin).await;
    let config = work.join("prometheus.yml");
    write_config(&config, scrape, naive_admin, origin);
    let prom_port = free_port();
    let prom_args: Vec<String> = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", work.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{prom_port}"),
        "--web.enable-lifecycle".into(),
        "--storage.tsdb.retention.time=1h".into(),
    ];
    let mut prometheus_proc = ChildProc::spawn(
        "prometheus",
        &prometheus_bin,
        &prom_args,
        &work.join("prometheus.log"),
    )
    .expect("start prometheus")
    .terminate_first(Duration::from_secs(5));
    let prom = Prometheus {
        base: format!("http://127.0.0.1:{prom_port}"),
        http: Http::default(),
    };
    prometheus_proc
        .wait_ready(
            &http,
            &format!("{}/-/ready", prom.base),
            Duration::from_secs(30),
        )
        .await
        .expect("prometheus ready");

    // Fire within: the sawtooth's for (1m) + 3 herds (3 TTLs) + one scrape and
    // evaluation each for the histogram, the recording rule and the alert,
    // + the herd window, + slack for a loaded 2-core machine.
    let fire_within = Duration::from_secs(60 + 6 + 2) + scrape * 6 + Duration::from_secs(20);
    let naive_load = start_load(
        &work,
        "naive",
        naive_port,
        origin,
        fire_within + Duration::from_secs(10),
    );
    let naive_started = Instant::now();
    let naive_phase_start = unix_now();
    let mut fired: Vec<(&str, Duration)> = Vec::new();
    while fired.len() < MUST_FIRE.len() {
        assert!(
            naive_started.elapsed() < fire_within,
            "within {fire_within:?} of a naive stampede only {fired:?} fired; alerts now: {:?}\n(logs in {})",
            prom.alerts().await,
            work.display()
        );
        let alerts = prom.alerts().await;
        for name in MUST_FIRE {
            let firing = alerts
                .iter()
                .any(|(a, g, s)| a == name && g == "naive" && s == "firing");
            if firing && !fired.iter().any(|(n, _)| *n == name) {
                eprintln!(
                    "live-prometheus: {name} firing for the naive gateway after {:.1} s",
                    naive_started.elapsed().as_secs_f64()
                );
                fired.push((name, naive_started.elapsed()));
            }
        }
        naive.check_alive().expect("naive gateway alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prom.assert_rules_healthy().await;
    let naive_phase = Phase {
        gateway: "naive",
        start: naive_phase_start,
        end: unix_now(),
    };
    drop(naive_load);
    drop(naive);

    // ---------------------------------------------------------------- full
    let (mut full, full_port, full_admin) =
        start_gateway(&http, &bins, &work, "full", "all", origin).await;
    write_config(&config, scrape, full_admin, origin);
    prom.reload().await;
    let full_for = FULL_PHASE.max(scrape * 4);
    let full_load = start_load(&work, "full", full_port, origin, full_for);
    let full_started = Instant::now();
    let full_phase_start = unix_now();
    while full_started.elapsed() < full_for {
        let alerts = prom.alerts().await;
        let raised: Vec<_> = alerts
            .iter()
            .filter(|(a, g, _)| g == "full" && STAMPEDE_ALERTS.contains(&a.as_str()))
            .collect();
        assert!(
            raised.is_empty(),
            "the full stack raised {raised:?} after {:?} (logs in {})",
            full_started.elapsed(),
            work.display()
        );
        full.check_alive().expect("full gateway alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the last scrape and evaluation of the phase land.
    tokio::time::sleep(scrape * 2 + Duration::from_millis(500)).await;
    let full_phase = Phase {
        gateway: "full",
        start: full_phase_start,
        end: unix_now(),
    };
    drop(full_load);
    prom.assert_rules_healthy().await;

    // Not even pending at any evaluation of the full phase (ALERTS keeps
    // pending and firing states as series).
    let step = scrape.max(Duration::from_secs(1));
    let raised = prom
        .query_range(
            &format!(
                "ALERTS{{gateway=\"full\",alertname=~\"{}\"}}",
                STAMPEDE_ALERTS.join("|")
            ),
            full_phase.start,
            full_phase.end,
            step,
        )
        .await;
    assert!(raised.is_empty(), "the full stack raised: {raised:?}");

    check_dashboard(&prom, &naive_phase, &full_phase, scrape).await;

    drop(full);
    drop(prometheus_proc);
    drop(origin_sim);
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "live-prometheus: scrape {scrape:?}: {}; full stack silent for {:.0} s; the whole test took {:.1} s",
        fired
            .iter()
            .map(|(n, t)| format!("{n} fired after {:.1} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        full_phase.end - full_phase.start,
        test_started.elapsed().as_secs_f64()
    );
}

/// The largest finite value of a query_range result, if any.
fn max_value(result: &[Value]) -> Option<f64> {
    result
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v[1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

/// Every dashboard expr returns data in each phase; the headline panels show
/// the stampede in the naive phase and none with the full stack.
async fn check_dashboard(prom: &Prometheus, naive: &Phase, full: &Phase, scrape: Duration) {
    let listed = std::process::Command::new("python3")
        .args(["scripts/check_dashboard.py", "--list-exprs"])
        .current_dir(repo())
        .output()
        .expect("python3 is needed to read the dashboard");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let exprs: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("--list-exprs JSON");
    assert!(exprs.len() >= 30, "only {} dashboard exprs", exprs.len());
    // As Grafana would: a step of at least 5 s, and $__rate_interval =
    // max($__interval + scrape interval, 4 x scrape interval).
    let step = scrape.max(Duration::from_secs(5));
    let rate_interval = secs((step + scrape).max(scrape * 4));
    let mut report = Vec::new();
    for phase in [naive, full] {
        for e in &exprs {
            let (where_, expr) = (e["where"].as_str().unwrap(), e["expr"].as_str().unwrap());
            let q = expr
                .replace("$__rate_interval", &rate_interval)
                .replace("$gateway", phase.gateway);
            let result = prom.query_range(&q, phase.start, phase.end, step).await;
            // The "Firing alerts" annotation has data only while alerts fire.
            let annotation = q.starts_with("ALERTS{");
            assert!(
                !result.is_empty() || (annotation && phase.gateway == "full"),
                "{} phase: no data for {where_}: {q}",
                phase.gateway
            );
            report.push((phase.gateway, where_.to_owned(), max_value(&result)));
        }
    }
    // The largest value of one panel's query (`refid` A, B, ...) in a phase.
    let value = |gateway: &str, panel: &str, refid: &str| -> Option<f64> {
        let hits: Vec<_> = report
            .iter()
            .filter(|(g, w, _)| {
                *g == gateway && w.contains(panel) && w.ends_with(&format!(" {refid}"))
            })
            .collect();
        assert_eq!(hits.len(), 1, "{panel} {refid}: {hits:?}");
        hits[0].2
    };
    // Herd windows (5m): several in the naive run, none with the full stack.
    let herds = |g| value(g, "Herd windows (5m)", "A").unwrap_or(0.0);
    assert!(
        herds("naive") >= 3.0,
        "naive herd windows: {}",
        herds("naive")
    );
    assert_eq!(herds("full"), 0.0, "full-stack herd windows");
    // The headline graph's herd duplicates (ref B): the stampede, and none.
    let dup = |g| value(g, "and the herd's duplicates", "B");
    assert!(
        dup("naive").unwrap_or(0.0) > 1.0,
        "naive duplicates/s: {:?}",
        dup("naive")
    );
    // Not quite 0: at a 2 s TTL (lifetimes 1.6-2.4 s with the default
    // jitter) XFetch may refresh a key from half its lifetime on, inside the
    // 1 s herd window its last rebuild opened: two rebuilds in one window,
    // never a herd (above: no window of more than 4). With the default 5 s
    // TTL the refresh is never that early.
    let (naive_dup, full_dup) = (dup("naive").unwrap_or(0.0), dup("full").unwrap_or(0.0));
    assert!(
        full_dup < 1.0 && full_dup < naive_dup / 10.0,
        "full duplicates/s: {full_dup} (naive: {naive_dup})"
    );
    // Stale answers exist with swr, and are young.
    let stale = value("full", "Stale age p99 (5m)", "A");
    assert!(
        stale.is_some_and(|s| s > 0.0 && s <= 5.0),
        "full-stack stale age p99: {stale:?}"
    );
    let no_value = report.iter().filter(|(_, _, v)| v.is_none()).count();
    eprintln!(
        "live-prometheus: {} dashboard exprs x 2 phases returned data ({no_value} of them only NaN, e.g. lock waits with no lock); \
         herd windows naive {} / full {}; herd duplicates/s naive {naive_dup:.1} / full {full_dup:.2}",
        exprs.len(),
        herds("naive"),
        herds("full"),
    );
}
