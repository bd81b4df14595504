//! The ladder: start origin-sim, the gateways and (for the fleet rungs) a
//! redis-server as child processes on free loopback ports, run every rung
//! under the measurement protocol's load, and write `RESULTS.md`,
//! `results.json` and one PNG chart per run.
//!
//! Every run starts a fresh origin-sim and fresh gateways (Redis is shared
//! and flushed), so no rung inherits cache contents, origin queue or metrics
//! from the previous one. Children are owned by guards (`procs::ChildProc`)
//! that kill them by PID when dropped: on success, on error, on panic and on
//! ctrl-c (the caller drops this future).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::charts::{self, Panel, Series};
use crate::ladder_report;
use crate::load::{LoadConfig, LoadSummary, run_load};
use crate::procs::{ChildProc, Http, RedisProc, free_port, metric_sum, which};
use crate::stats::{OriginQueries, OriginQuery};

/// Admin token the ladder gives its gateways.
const ADMIN_TOKEN: &str = "ladder-admin-token";
/// Origin latency of the protocol (ms).
const BASE_LATENCY_MS: u64 = 200;
/// origin-sim's default pool: its capacity is `16 * 1000 / 200 = 80` queries/s.
const BASE_DB_CONNECTIONS: u32 = 16;
/// The hot key.
const HOT_KEY: u64 = 1;
/// Seed of the load's key choices, so every rung draws the same sequence.
const SEED: u64 = 20_240_611;

/// The rungs, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rung {
    /// (1) Before/after table on the fleet.
    Table,
    /// (2) Single-flight is per-process; the lock is per-fleet.
    Scope,
    /// (3) Keys written together expire together; jitter spreads them.
    MultiKey,
    /// (4) Miss storm on absent ids.
    Negative,
    /// (5) XFetch on a hot and on a cold key.
    Xfetch,
    /// (6) A lock TTL shorter than a slow rebuild: the fencing check.
    Fencing,
    /// (7) Retry storm after a spike: the overload gate.
    Metastable,
    /// (9) nginx / Varnish under the same protocol.
    Peers,
}

impl Rung {
    /// Every rung.
    pub const ALL: [Rung; 8] = [
        Rung::Table,
        Rung::Scope,
        Rung::MultiKey,
        Rung::Negative,
        Rung::Xfetch,
        Rung::Fencing,
        Rung::Metastable,
        Rung::Peers,
    ];

    /// Its `--rungs` name.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Table => "table",
            Rung::Scope => "scope",
            Rung::MultiKey => "multi-key",
            Rung::Negative => "negative",
            Rung::Xfetch => "xfetch",
            Rung::Fencing => "fencing",
            Rung::Metastable => "metastable",
            Rung::Peers => "peers",
        }
    }

    /// Parse a `--rungs` list (`all` or comma-separated names).
    pub fn parse_list(s: &str) -> Result<Vec<Rung>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Rung::ALL);
                continue;
            }
            match Rung::ALL.iter().find(|r| r.name() == part) {
                Some(r) => out.push(*r),
                None => {
                    return Err(format!(
                        "unknown rung {part:?} (expected all or a comma list of {})",
                        Rung::ALL.map(Rung::name).join(",")
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err("no rung given".to_string());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The rows of the before/after table: `(--rows name, label, --mitigations)`.
pub const TABLE_ROWS: [(&str, &str, &str); 8] = [
    ("naive", "naive", "none"),
    ("single-flight", "+single-flight", "single-flight"),
    ("lock", "+lock", "single-flight,lock"),
    ("swr", "+SWR", "single-flight,lock,swr"),
    ("xfetch", "+XFetch", "single-flight,lock,swr,xfetch"),
    ("jitter", "+jitter", "single-flight,lock,swr,xfetch,jitter"),
    (
        "negative",
        "+negative",
        "single-flight,lock,swr,xfetch,jitter,negative",
    ),
    ("full", "full stack", "all"),
];

/// Parse a `--rows` list (`all` or comma-separated table row names).
pub fn parse_rows(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            out.extend(TABLE_ROWS.iter().map(|r| r.0.to_string()));
        } else if TABLE_ROWS.iter().any(|r| r.0 == part) {
            out.push(part.to_string());
        } else {
            return Err(format!(
                "unknown row {part:?} (expected all or a comma list of {})",
                TABLE_ROWS.map(|r| r.0).join(",")
            ));
        }
    }
    if out.is_empty() {
        return Err("no row given".to_string());
    }
    Ok(out)
}

/// What `stampede-bench ladder` was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LadderOptions {
    /// Output directory (RESULTS.md, results.json, charts).
    pub out: PathBuf,
    /// Load duration of each protocol run.
    #[serde(with = "dur")]
    pub duration: Duration,
    /// Gateway TTL of the protocol runs.
    #[serde(with = "dur")]
    pub ttl: Duration,
    /// Where `origin-sim` and `gateway` are.
    pub bin_dir: PathBuf,
    /// Rungs to run.
    pub rungs: Vec<Rung>,
    /// Rows of the before/after table to run.
    pub rows: Vec<String>,
    /// Shorter phases everywhere (a quick look, not for the committed results).
    pub quick: bool,
    /// Gateways in a fleet.
    pub instances: usize,
    /// Draw the PNG charts.
    pub charts: bool,
    /// The command line, as typed.
    pub command: String,
}

mod dur {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// The machine and build a ladder ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Available parallelism.
    pub nproc: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Build profile of `stampede-bench` itself.
    pub bench_profile: String,
    /// Directory the gateway and origin-sim binaries came from.
    pub bin_dir: String,
    /// `redis-server --version`, or why there is none.
    pub redis: String,
}

impl Machine {
    fn current(bin_dir: &Path, redis: &str) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        let host = crate::load::HostInfo::current();
        Self {
            hostname: host.hostname,
            nproc: host.nproc,
            cpu,
            memory_mib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            bench_profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            bin_dir: bin_dir.display().to_string(),
            redis: redis.to_string(),
        }
    }
}

/// The per-run numbers the tables show (derived from the load summary).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RowMetrics {
    /// Hot-key TTL boundaries that reached the origin (the cold fill included).
    pub hot_boundaries: u64,
    /// Mean hot-key origin queries per boundary.
    pub hot_mean_per_boundary: f64,
    /// Largest hot-key burst.
    pub hot_max_per_boundary: u64,
    /// Hot-key origin queries.
    pub hot_queries: u64,
    /// Hot-key origin queries per TTL of wall time.
    pub hot_queries_per_ttl: Option<f64>,
    /// Most origin queries started in one second.
    pub max_origin_qps: u64,
    /// Origin queries in the window.
    pub total_origin_queries: u64,
    /// Of those, 404 answers.
    pub origin_404: u64,
    /// Client requests.
    pub requests: u64,
    /// Client requests per second.
    pub requests_per_sec: f64,
    /// Hot-key p50, ms.
    pub hot_p50_ms: f64,
    /// Hot-key p99, ms.
    pub hot_p99_ms: f64,
    /// Other keys p50, ms.
    pub other_p50_ms: f64,
    /// Other keys p99, ms.
    pub other_p99_ms: f64,
    /// Hot-key requests slower than 150 ms.
    pub hot_over_150ms: u64,
    /// All requests slower than 150 ms.
    pub over_150ms: u64,
    /// Cache miss rate (all requests): misses / (hits + misses).
    pub miss_rate: Option<f64>,
    /// Hot-key cache misses (answers forwarded to the origin, `collapsed` included).
    pub hot_misses: u64,
    /// Requests that failed (transport error or 5xx).
    pub errors: u64,
}

impl RowMetrics {
    fn from_summary(s: &LoadSummary) -> Self {
        let o = s.origin.clone().unwrap_or_default();
        Self {
            hot_boundaries: o.hot_bursts.boundaries,
            hot_mean_per_boundary: o.hot_bursts.mean_per_boundary,
            hot_max_per_boundary: o.hot_bursts.max_per_boundary,
            hot_queries: o.hot_queries,
            hot_queries_per_ttl: o.hot_queries_per_ttl,
            max_origin_qps: o.max_queries_per_second,
            total_origin_queries: o.total_queries,
            origin_404: o.status.get("404").copied().unwrap_or(0),
            requests: s.requests,
            requests_per_sec: s.requests_per_sec,
            hot_p50_ms: s.latency.hot.p50_ms,
            hot_p99_ms: s.latency.hot.p99_ms,
            other_p50_ms: s.latency.other.p50_ms,
            other_p99_ms: s.latency.other.p99_ms,
            hot_over_150ms: s.latency.hot.over_150ms,
            over_150ms: s.latency.all.over_150ms,
            miss_rate: s.cache.all.miss_rate,
            hot_misses: s.cache.hot.misses,
            errors: s.failed_requests,
        }
    }
}

/// Counters scraped from the gateways' `/metrics` at the end of a run (summed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayCounters {
    /// `stampede_fencing_rejections_total`.
    pub fencing_rejections: f64,
    /// `stampede_shed_total`.
    pub shed: f64,
    /// `stampede_background_refreshes_total{trigger="swr"}`.
    pub swr_refreshes: f64,
    /// `stampede_background_refreshes_total{trigger="xfetch"}`.
    pub xfetch_refreshes: f64,
    /// `stampede_lock_acquisitions_total{result="acquired"}`.
    pub lock_acquired: f64,
    /// `stampede_lock_acquisitions_total{result="contended"}`.
    pub lock_contended: f64,
    /// Lock waits that hit their bound (`stampede_lock_wait_seconds_count{result="timeout"}`).
    pub lock_wait_timeouts: f64,
    /// `stampede_origin_requests_total`.
    pub origin_requests: f64,
    /// Per gateway instance: fencing rejections.
    pub fencing_per_gateway: Vec<f64>,
}

/// One load run against one configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Unique id (also the chart's file stem).
    pub id: String,
    /// Row label.
    pub label: String,
    /// `--mitigations`.
    pub mitigations: String,
    /// Gateways.
    pub instances: usize,
    /// `redis` or `memory`.
    pub store: String,
    /// Every gateway flag beyond listen addresses.
    pub gateway_flags: Vec<String>,
    /// Every origin-sim flag beyond the listen address.
    pub origin_flags: Vec<String>,
    /// The derived numbers.
    pub metrics: RowMetrics,
    /// Gateway counters.
    pub gateways: GatewayCounters,
    /// Chart file name, relative to the output directory.
    pub chart: Option<String>,
    /// The full load summary.
    pub summary: LoadSummary,
}

/// A rung (or part of one) that did not run, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// What.
    pub what: String,
    /// Why.
    pub why: String,
}

/// (2) Scope proof rows: label → run id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScopeResult {
    /// `(label, run id)` in display order.
    pub rows: Vec<(String, String)>,
}

/// (3) Multi-key rung.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MultiKeyResult {
    /// Keys warmed together.
    pub keys: u64,
    /// How long the warm burst took, ms.
    pub warm_ms: Vec<u64>,
    /// Threshold for "seconds above", origin queries/s.
    pub threshold_qps: u64,
    /// Per row: label, run id, seconds above the threshold.
    pub rows: Vec<MultiKeyRow>,
}

/// One multi-key row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MultiKeyRow {
    /// Label.
    pub label: String,
    /// Run id.
    pub run: String,
    /// Seconds whose origin query count exceeded the threshold.
    pub seconds_above: u64,
}

/// (4) Negative rung.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NegativeResult {
    /// origin-sim `--items` (ids above answer 404).
    pub items: u64,
    /// Keys the load spreads over.
    pub keys: u64,
    /// Rows.
    pub rows: Vec<NegativeRow>,
}

/// One negative row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NegativeRow {
    /// Label.
    pub label: String,
    /// Run id.
    pub run: String,
    /// Origin 404 answers.
    pub origin_404: u64,
    /// Mean 404 queries per second over the window.
    pub mean_404_qps: f64,
    /// Most 404 queries in one second.
    pub max_404_qps: u64,
    /// Origin 200 answers.
    pub origin_200: u64,
}

/// (5) XFetch rung.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct XfetchResult {
    /// Hot key, fleet: `(label, run id)`.
    pub hot: Vec<(String, String)>,
    /// Cold key, one client with think time ≈ TTL: `(label, run id)`.
    pub cold: Vec<(String, String)>,
    /// Think time of the cold runs, ms.
    pub cold_think_ms: u64,
}

/// (6) Fencing rung.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FencingResult {
    /// Gateway `--lock-ttl`, ms.
    pub lock_ttl_ms: u64,
    /// Origin latency of the slow rebuild, ms.
    pub slow_latency_ms: u64,
    /// Origin latency of the fast rebuild, ms.
    pub fast_latency_ms: u64,
    /// One per key tried.
    pub trials: Vec<FencingTrial>,
    /// `stampede_fencing_rejections_total` per gateway at the end.
    pub rejections_per_gateway: Vec<f64>,
    /// Sum of the above.
    pub rejections_total: f64,
    /// Every trial's cached version equals the origin's.
    pub cache_has_newest: bool,
}

/// One fencing trial.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FencingTrial {
    /// Item id.
    pub key: u64,
    /// Version the slow (lock-expired) rebuild read and answered.
    pub slow_version: Option<i64>,
    /// Version the fast rebuild (after the bump) answered.
    pub fast_version: Option<i64>,
    /// Version a later cached GET answered.
    pub cached_version: Option<i64>,
    /// Its `Cache-Status`.
    pub cached_status: String,
    /// Version origin-sim answers directly.
    pub origin_version: Option<i64>,
    /// How long the slow rebuild took at the client, ms.
    pub slow_ms: u64,
}

/// (7) Metastable rung.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetastableResult {
    /// Phase lengths, seconds: base, spike, after.
    pub phases_s: [u64; 3],
    /// Load of the normal phases (description).
    pub normal_load: String,
    /// Load of the spike (description).
    pub spike_load: String,
    /// "Recovered" = mean duration of origin queries finishing in a second ≤ this (ms), from then on.
    pub recovered_below_ms: u64,
    /// Rows.
    pub rows: Vec<MetastableRow>,
}

/// One metastable row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetastableRow {
    /// Label.
    pub label: String,
    /// `--mitigations` and extra flags.
    pub gateway: String,
    /// Chart file.
    pub chart: Option<String>,
    /// Seconds from spike end until origin query duration is back near base
    /// and stays there; `None` = not recovered before the end of the run.
    pub recovery_s: Option<f64>,
    /// Seconds observed after the spike.
    pub observed_after_s: f64,
    /// Mean origin query duration (ms) of queries finishing in the base phase.
    pub base_duration_ms: f64,
    /// Worst per-second mean origin query duration after the spike, ms.
    pub worst_after_duration_ms: f64,
    /// Mean origin query duration in the last 5 s of the run, ms.
    pub last5_duration_ms: f64,
    /// Most origin queries in flight (sampled), after the spike.
    pub max_inflight_after: f64,
    /// Origin queries in flight at the end of the run.
    pub inflight_at_end: f64,
    /// Client errors in the after-spike phase / its requests.
    pub after_errors: u64,
    /// Requests of the after-spike phase.
    pub after_requests: u64,
    /// Client p99 of the after-spike phase, ms.
    pub after_p99_ms: f64,
    /// Retries sent in the spike and after it.
    pub retries: u64,
    /// Gateway shed count.
    pub shed: f64,
    /// Per second since base start: (second, origin queries started, mean duration of queries finished that second, inflight sample, client errors).
    pub timeline: Vec<MetaSecond>,
}

/// One second of the metastable run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaSecond {
    /// Seconds since the base phase started.
    pub second: u64,
    /// Origin queries started.
    pub started: u64,
    /// Origin queries finished.
    pub finished: u64,
    /// Mean duration of the queries that finished, ms.
    pub finished_mean_ms: Option<f64>,
    /// Origin in-flight queries (last sample in the second).
    pub inflight: Option<f64>,
    /// Client requests started.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
}

/// (9) Peers: nginx and Varnish (their own module, a child of this one).
#[path = "peers.rs"]
pub mod peers;
pub use peers::PeersResult;

/// Everything a ladder produced (`results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// When it started, RFC 3339 UTC.
    pub generated_at: String,
    /// Wall time of the whole ladder, seconds.
    pub elapsed_s: f64,
    /// The options (with the command line).
    pub options: LadderOptions,
    /// The machine.
    pub machine: Machine,
    /// Protocol settings of the standard runs.
    pub protocol: Protocol,
    /// Every run.
    pub runs: Vec<Run>,
    /// (1) Table: run ids in row order.
    pub table: Vec<String>,
    /// (2).
    pub scope: Option<ScopeResult>,
    /// (3).
    pub multi_key: Option<MultiKeyResult>,
    /// (4).
    pub negative: Option<NegativeResult>,
    /// (5).
    pub xfetch: Option<XfetchResult>,
    /// (6).
    pub fencing: Option<FencingResult>,
    /// (7).
    pub metastable: Option<MetastableResult>,
    /// (9).
    pub peers: Option<PeersResult>,
    /// Rungs (or parts) not run, and why.
    pub skipped: Vec<Skipped>,
    /// Rungs that failed, with the error.
    pub failed: Vec<Skipped>,
    /// Overview chart of the table (naive vs full stack), if drawn.
    pub overview_chart: Option<String>,
}

impl Results {
    /// The run with this id.
    pub fn run(&self, id: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.id == id)
    }
}

/// The identical load of the measurement protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Protocol {
    /// Clients.
    pub concurrency: usize,
    /// Hot fraction.
    pub hot_fraction: f64,
    /// Key space.
    pub keys: u64,
    /// Duration, seconds.
    pub duration_s: f64,
    /// TTL, seconds.
    pub ttl_s: f64,
    /// Origin latency, ms.
    pub origin_latency_ms: u64,
    /// Origin pool.
    pub origin_db_connections: u32,
    /// Gateways in the fleet rungs.
    pub fleet_instances: usize,
    /// Seed of the key choices.
    pub seed: u64,
}

// ---------------------------------------------------------------------------
// Processes

#[derive(Debug, Clone, PartialEq)]
struct OriginOpts {
    items: u64,
    latency_ms: u64,
    db_connections: u32,
}

impl Default for OriginOpts {
    fn default() -> Self {
        Self {
            items: 1000,
            latency_ms: BASE_LATENCY_MS,
            db_connections: BASE_DB_CONNECTIONS,
        }
    }
}

impl OriginOpts {
    fn flags(&self) -> Vec<String> {
        vec![
            "--items".into(),
            self.items.to_string(),
            "--latency-ms".into(),
            self.latency_ms.to_string(),
            "--db-connections".into(),
            self.db_connections.to_string(),
        ]
    }
}

#[derive(Debug, Clone)]
struct Setup {
    instances: usize,
    redis: bool,
    mitigations: String,
    ttl: Duration,
    extra: Vec<String>,
    origin: OriginOpts,
}

impl Setup {
    fn fleet(mitigations: &str, instances: usize, ttl: Duration) -> Self {
        Self {
            instances,
            redis: true,
            mitigations: mitigations.into(),
            ttl,
            extra: Vec::new(),
            origin: OriginOpts::default(),
        }
    }

    fn single(mitigations: &str, ttl: Duration) -> Self {
        Self {
            instances: 1,
            redis: false,
            ..Self::fleet(mitigations, 1, ttl)
        }
    }

    fn gateway_flags(&self) -> Vec<String> {
        let mut f = vec![
            "--ttl".into(),
            humantime::format_duration(self.ttl).to_string(),
            "--mitigations".into(),
            self.mitigations.clone(),
        ];
        f.extend(self.extra.iter().cloned());
        f
    }
}

struct Gw {
    proc_: ChildProc,
    url: String,
    admin: String,
}

struct Stack {
    origin: ChildProc,
    origin_url: String,
    gateways: Vec<Gw>,
}

impl Stack {
    fn targets(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.url.clone()).collect()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.origin.check_alive()?;
        for g in &mut self.gateways {
            g.proc_.check_alive()?;
        }
        Ok(())
    }
}

struct Bins {
    origin: PathBuf,
    gateway: PathBuf,
}

impl Bins {
    fn find(dir: &Path) -> anyhow::Result<Self> {
        let origin = dir.join("origin-sim");
        let gateway = dir.join("gateway");
        let missing: Vec<String> = [&origin, &gateway]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing {} — build them: cargo build --release --workspace (or pass --bin-dir DIR)",
                missing.join(" and ")
            );
        }
        Ok(Self { origin, gateway })
    }
}

/// Progress lines on stderr: `[run i/N] rung: label — doing what`.
struct Progress {
    done: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn line(&self, rung: Rung, what: &str) {
        eprintln!(
            "[{:>6.1}s] [run {}/{}] {}: {what}",
            self.start.elapsed().as_secs_f64(),
            (self.done + 1).min(self.total.max(1)),
            self.total,
            rung.name()
        );
    }

    fn note(&self, rung: Rung, what: &str) {
        eprintln!(
            "[{:>6.1}s] {}: {what}",
            self.start.elapsed().as_secs_f64(),
            rung.name()
        );
    }
}

struct Ladder {
    opts: LadderOptions,
    bins: Bins,
    redis: Option<RedisProc>,
    http: Http,
    work: PathBuf,
    progress: Progress,
    runs: Vec<Run>,
    /// Setup key → run id, to reuse an identical run across rungs.
    done: BTreeMap<String, String>,
    skipped: Vec<Skipped>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ladder {
    fn log(&self, name: &str) -> PathBuf {
        self.work.join(format!("{name}.log"))
    }

    async fn start(&mut self, setup: &Setup) -> anyhow::Result<Stack> {
        if setup.redis {
            match &mut self.redis {
                Some(r) => r.flush().await?,
                None => bail!("this run needs redis-server, which is not running"),
            }
        }
        let oport = free_port()?;
        let origin_url = format!("http://127.0.0.1:{oport}");
        let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{oport}")];
        args.extend(setup.origin.flags());
        let mut origin = ChildProc::spawn(
            "origin-sim",
            &self.bins.origin,
            &args,
            &self.log("origin-sim"),
        )?;
        origin
            .wait_ready(
                &self.http,
                &format!("{origin_url}/metrics"),
                Duration::from_secs(30),
            )
            .await?;
        let mut gateways = Vec::new();
        for i in 1..=setup.instances {
            let (p, a) = (free_port()?, free_port()?);
            let mut args = vec![
                "--listen".to_string(),
                format!("127.0.0.1:{p}"),
                "--admin-listen".into(),
                format!("127.0.0.1:{a}"),
                "--origin".into(),
                origin_url.clone(),
                "--instance".into(),
                format!("g{i}"),
                "--admin-token".into(),
                ADMIN_TOKEN.into(),
            ];
            if setup.redis {
                args.push("--redis".into());
                args.push(self.redis.as_ref().map(|r| r.url()).unwrap_or_default());
            }
            args.extend(setup.gateway_flags());
            let name = format!("gateway-g{i}");
            let proc_ = ChildProc::spawn(&name, &self.bins.gateway, &args, &self.log(&name))?;
            gateways.push(Gw {
                proc_,
                url: format!("http://127.0.0.1:{p}"),
                admin: format!("http://127.0.0.1:{a}"),
            });
        }
        for g in &mut gateways {
            let url = format!("{}/readyz", g.admin);
            g.proc_
                .wait_ready(&self.http, &url, Duration::from_secs(30))
                .await?;
        }
        Ok(Stack {
            origin,
            origin_url,
            gateways,
        })
    }

    fn protocol_load(&self, stack: &Stack, ttl: Duration) -> LoadConfig {
        LoadConfig {
            targets: stack.targets(),
            concurrency: 50,
            duration: self.opts.duration,
            hot_fraction: 0.95,
            keys: 1000,
            hot_key: HOT_KEY,
            ttl: Some(ttl),
            seed: Some(SEED),
            origin: Some(stack.origin_url.clone()),
            ..LoadConfig::default()
        }
    }

    async fn counters(&self, stack: &Stack) -> GatewayCounters {
        let mut c = GatewayCounters::default();
        for g in &stack.gateways {
            let text = match self.http.get_ok(&format!("{}/metrics", g.admin)).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    eprintln!("warning: {}: cannot read metrics: {e:#}", g.proc_.name());
                    String::new()
                }
            };
            let f = metric_sum(&text, "stampede_fencing_rejections_total", &[]);
            c.fencing_rejections += f;
            c.fencing_per_gateway.push(f);
            c.shed += metric_sum(&text, "stampede_shed_total", &[]);
            c.swr_refreshes += metric_sum(
                &text,
                "stampede_background_refreshes_total",
                &["trigger=\"swr\""],
            );
            c.xfetch_refreshes += metric_sum(
                &text,
                "stampede_background_refreshes_total",
                &["trigger=\"xfetch\""],
            );
            c.lock_acquired += metric_sum(
                &text,
                "stampede_lock_acquisitions_total",
                &["result=\"acquired\""],
            );
            c.lock_contended += metric_sum(
                &text,
                "stampede_lock_acquisitions_total",
                &["result=\"contended\""],
            );
            c.lock_wait_timeouts += metric_sum(
                &text,
                "stampede_lock_wait_seconds_count",
                &["result=\"timeout\""],
            );
            c.origin_requests += metric_sum(&text, "stampede_origin_requests_total", &[]);
        }
        c
    }

    fn setup_key(setup: &Setup, variant: &str) -> String {
        format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{variant}",
            setup.mitigations, setup.instances, setup.redis, setup.ttl, setup.extra, setup.origin
        )
    }

    /// Run `setup` under `load` (made from the started stack), or reuse an
    /// identical earlier run. `before` runs after start-up, before the load.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        rung: Rung,
        id: &str,
        label: &str,
        setup: Setup,
        variant: &str,
        make_load: impl Fn(&Self, &Stack) -> LoadConfig,
        prewarm: &[u64],
    ) -> anyhow::Result<String> {
        let key = Self::setup_key(&setup, variant);
        if let Some(existing) = self.done.get(&key) {
            self.progress.note(
                rung,
                &format!("{label}: same setup as run {existing}, reused"),
            );
            return Ok(existing.clone());
        }
        let store = if setup.redis { "redis" } else { "memory" };
        self.progress.line(
            rung,
            &format!(
                "{label}: starting origin-sim + {} gateway(s) ({store} store, --mitigations {})",
                setup.instances, setup.mitigations
            ),
        );
        let mut stack = self.start(&setup).await?;
        for k in prewarm {
            let url = format!("{}/items/{k}", stack.gateways[0].url);
            self.http.get_ok(&url).await.context("prewarm")?;
        }
        let cfg = make_load(self, &stack);
        self.progress.line(
            rung,
            &format!(
                "{label}: load {} × {} clients on {} target(s)",
                humantime::format_duration(cfg.duration),
                cfg.concurrency,
                cfg.targets.len()
            ),
        );
        let summary = run_load(&cfg, false).await?;
        stack.check_alive()?;
        let gateways = self.counters(&stack).await;
        drop(stack);
        let metrics = RowMetrics::from_summary(&summary);
        self.progress.line(
            rung,
            &format!(
                "{label}: done — hot-key origin queries per boundary mean {:.2} max {}, max origin q/s {}, hot p99 {:.1} ms, errors {}",
                metrics.hot_mean_per_boundary,
                metrics.hot_max_per_boundary,
                metrics.max_origin_qps,
                metrics.hot_p99_ms,
                metrics.errors
            ),
        );
        self.progress.done += 1;
        let mut run = Run {
            id: id.to_string(),
            label: label.to_string(),
            mitigations: setup.mitigations.clone(),
            instances: setup.instances,
            store: store.into(),
            gateway_flags: setup.gateway_flags(),
            origin_flags: setup.origin.flags(),
            metrics,
            gateways,
            chart: None,
            summary,
        };
        if self.opts.charts {
            run.chart = self.standard_chart(&run);
        }
        self.done.insert(key, id.to_string());
        self.runs.push(run);
        Ok(id.to_string())
    }

    fn standard_chart(&self, run: &Run) -> Option<String> {
        let title = format!(
            "{} — {} × gateway, --mitigations {}",
            run.label, run.instances, run.mitigations
        );
        self.standard_chart_titled(run, &title)
    }

    /// The standard two-panel chart of a run, with the given title.
    fn standard_chart_titled(&self, run: &Run, title: &str) -> Option<String> {
        let file = format!("{}.png", run.id);
        let tl = chart_timeline(&run.summary);
        let x = |i: usize| i as f64 + 0.5;
        let panels = [
            Panel {
                y_label: "origin queries/s".into(),
                log_y: false,
                reference: None,
                series: vec![
                    Series {
                        label: "all keys".into(),
                        color: 1,
                        points: tl
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (x(i), s.origin_queries.map(|v| v as f64)))
                            .collect(),
                    },
                    Series {
                        label: "hot key".into(),
                        color: 0,
                        points: tl
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (x(i), s.hot_origin_queries.map(|v| v as f64)))
                            .collect(),
                    },
                ],
            },
            Panel {
                y_label: "client p99 ms (log)".into(),
                log_y: true,
                reference: Some((150.0, "150 ms".into())),
                series: vec![
                    Series {
                        label: "hot key p99".into(),
                        color: 0,
                        points: tl
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (x(i), s.hot_p99_ms))
                            .collect(),
                    },
                    Series {
                        label: "all requests p99".into(),
                        color: 2,
                        points: tl
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (x(i), s.p99_ms))
                            .collect(),
                    },
                ],
            },
        ];
        self.chart(&file, title, &panels)
    }

    fn chart(&self, file: &str, title: &str, panels: &[Panel]) -> Option<String> {
        match charts::draw(
            &self.opts.out.join(file),
            title,
            "seconds since load start",
            panels,
        ) {
            Ok(()) => Some(file.to_string()),
            Err(e) => {
                eprintln!("warning: chart {file}: {e:#}");
                None
            }
        }
    }

    async fn origin_queries(
        &self,
        origin: &str,
        since_ms: u64,
    ) -> anyhow::Result<Vec<OriginQuery>> {
        let body = self
            .http
            .get_ok(&format!("{origin}/stats/queries?since_ms={since_ms}"))
            .await?;
        Ok(serde_json::from_slice::<OriginQueries>(&body)?.queries)
    }

    fn need_redis(&mut self, what: &str) -> bool {
        if self.redis.is_some() {
            return true;
        }
        self.skipped.push(Skipped {
            what: what.to_string(),
            why: "redis-server is not on PATH: the fleet (3 gateways sharing one store and lock) needs it (Debian: apt-get install redis-server)".into(),
        });
        false
    }

    // -----------------------------------------------------------------------
    // Rungs

    async fn table(&mut self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        if !self.need_redis("(1) before/after table (fleet)") {
            return Ok(ids);
        }
        let n = self.opts.instances;
        let ttl = self.opts.ttl;
        for (key, label, mitigations) in TABLE_ROWS {
            if !self.opts.rows.iter().any(|r| r == key) {
                continue;
            }
            let id = self
                .run(
                    Rung::Table,
                    &format!("table-{key}"),
                    label,
                    Setup::fleet(mitigations, n, ttl),
                    "protocol",
                    |l, s| l.protocol_load(s, ttl),
                    &[],
                )
                .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn scope(&mut self) -> anyhow::Result<ScopeResult> {
        let ttl = self.opts.ttl;
        let n = self.opts.instances;
        let mut rows = Vec::new();
        let id = self
            .run(
                Rung::Scope,
                "scope-single-flight-x1",
                "single-flight × 1 instance",
                Setup::single("single-flight", ttl),
                "protocol",
                |l, s| l.protocol_load(s, ttl),
                &[],
            )
            .await?;
        rows.push(("single-flight × 1 instance".to_string(), id));
        if self.need_redis("(2) scope proof: the 3-instance rows") {
            for (id, label, m) in [
                (
                    "table-single-flight",
                    format!("single-flight × {n} instances"),
                    "single-flight",
                ),
                (
                    "table-lock",
                    format!("single-flight + lock × {n} instances"),
                    "single-flight,lock",
                ),
                (
                    "scope-swr-no-lock",
                    format!("single-flight + SWR, no lock × {n} instances"),
                    "single-flight,swr",
                ),
            ] {
                let id = self
                    .run(
                        Rung::Scope,
                        id,
                        &label,
                        Setup::fleet(m, n, ttl),
                        "protocol",
                        |l, s| l.protocol_load(s, ttl),
                        &[],
                    )
                    .await?;
                rows.push((label, id));
            }
        }
        Ok(ScopeResult { rows })
    }

    async fn multi_key(&mut self) -> anyhow::Result<MultiKeyResult> {
        let keys = 200u64;
        let ttl = if self.opts.quick {
            Duration::from_secs(4)
        } else {
            Duration::from_secs(10)
        };
        let duration = if self.opts.quick {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(25)
        };
        let mut out = MultiKeyResult {
            keys,
            threshold_qps: u64::from(BASE_DB_CONNECTIONS) * 1000 / BASE_LATENCY_MS,
            ..MultiKeyResult::default()
        };
        for (id, label, m) in [
            (
                "multikey-no-jitter",
                "no jitter (single-flight)",
                "single-flight",
            ),
            (
                "multikey-jitter",
                "+jitter 0.2 (single-flight,jitter)",
                "single-flight,jitter",
            ),
        ] {
            let mut setup = Setup::single(m, ttl);
            setup.extra = vec!["--jitter".into(), "0.2".into()];
            // A pool large enough that the warm burst is one round trip, so
            // the keys really are written together.
            setup.origin.db_connections = 256;
            self.progress
                .line(Rung::MultiKey, &format!("{label}: starting"));
            let stack = self.start(&setup).await?;
            self.progress.line(
                Rung::MultiKey,
                &format!("{label}: warming {keys} keys at once (one burst of concurrent GETs)"),
            );
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for k in 1..=keys {
                let http = self.http.clone();
                let url = format!("{}/items/{k}", stack.gateways[0].url);
                set.spawn(async move { http.get_ok(&url).await.map(|_| ()) });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            out.warm_ms.push(t.elapsed().as_millis() as u64);
            let gw = stack.targets();
            let origin = stack.origin_url.clone();
            // The load runs on the stack just warmed (not through `run`, which
            // would start a fresh one).
            let cfg = LoadConfig {
                targets: gw,
                concurrency: 50,
                duration,
                hot_fraction: 0.0,
                keys,
                hot_key: HOT_KEY,
                ttl: Some(ttl),
                seed: Some(SEED),
                origin: Some(origin),
                ..LoadConfig::default()
            };
            let run = self
                .finish_run(Rung::MultiKey, id, label, &setup, stack, cfg)
                .await?;
            let above = run.summary.origin.as_ref().map_or(0, |o| {
                o.per_second
                    .iter()
                    .filter(|q| **q > out.threshold_qps)
                    .count() as u64
            });
            let run_id = run.id.clone();
            if self.opts.charts {
                let chart = self.multikey_chart(&run, out.threshold_qps);
                if let Some(r) = self.runs.iter_mut().find(|r| r.id == run_id) {
                    r.chart = chart;
                }
            }
            out.rows.push(MultiKeyRow {
                label: label.into(),
                run: run_id,
                seconds_above: above,
            });
        }
        Ok(out)
    }

    fn multikey_chart(&self, run: &Run, threshold: u64) -> Option<String> {
        let tl = chart_timeline(&run.summary);
        let panels = [
            Panel {
                y_label: "origin queries/s".into(),
                log_y: false,
                reference: Some((
                    threshold as f64,
                    format!("{threshold} q/s = default origin capacity"),
                )),
                series: vec![Series {
                    label: "origin queries/s".into(),
                    color: 1,
                    points: tl
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (i as f64 + 0.5, s.origin_queries.map(|v| v as f64)))
                        .collect(),
                }],
            },
            Panel {
                y_label: "client p99 ms (log)".into(),
                log_y: true,
                reference: Some((150.0, "150 ms".into())),
                series: vec![Series {
                    label: "p99".into(),
                    color: 2,
                    points: tl
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (i as f64 + 0.5, s.p99_ms))
                        .collect(),
                }],
            },
        ];
        self.chart(
            &format!("{}.png", run.id),
            &format!("multi-key: {}", run.label),
            &panels,
        )
    }

    /// Run `cfg` on an already started stack and record it as a run.
    async fn finish_run(
        &mut self,
        rung: Rung,
        id: &str,
        label: &str,
        setup: &Setup,
        mut stack: Stack,
        cfg: LoadConfig,
    ) -> anyhow::Result<Run> {
        self.progress.line(
            rung,
            &format!(
                "{label}: load {} × {} clients",
                humantime::format_duration(cfg.duration),
                cfg.concurrency
            ),
        );
        let summary = run_load(&cfg, false).await?;
        stack.check_alive()?;
        let gateways = self.counters(&stack).await;
        drop(stack);
        self.progress.done += 1;
        let run = Run {
            id: id.into(),
            label: label.into(),
            mitigations: setup.mitigations.clone(),
            instances: setup.instances,
            store: if setup.redis { "redis" } else { "memory" }.into(),
            gateway_flags: setup.gateway_flags(),
            origin_flags: setup.origin.flags(),
            metrics: RowMetrics::from_summary(&summary),
            gateways,
            chart: None,
            summary,
        };
        self.progress.line(
            rung,
            &format!(
                "{label}: done — origin queries {}, max {} q/s, errors {}",
                run.metrics.total_origin_queries, run.metrics.max_origin_qps, run.metrics.errors
            ),
        );
        self.runs.push(run.clone());
        Ok(run)
    }

    async fn negative(&mut self) -> anyhow::Result<NegativeResult> {
        let (items, keys) = (100u64, 200u64);
        let ttl = self.opts.ttl;
        let duration = self.opts.duration;
        let mut out = NegativeResult {
            items,
            keys,
            rows: Vec::new(),
        };
        for (id, label, m) in [
            (
                "negative-off",
                "single-flight (no negative caching)",
                "single-flight",
            ),
            (
                "negative-on",
                "single-flight,negative",
                "single-flight,negative",
            ),
        ] {
            let mut setup = Setup::single(m, ttl);
            setup.origin.items = items;
            setup.extra = vec!["--negative-ttl".into(), "5s".into()];
            self.progress
                .line(Rung::Negative, &format!("{label}: starting"));
            let stack = self.start(&setup).await?;
            let origin = stack.origin_url.clone();
            let cfg = LoadConfig {
                targets: stack.targets(),
                concurrency: 50,
                duration,
                hot_fraction: 0.0,
                keys,
                hot_key: HOT_KEY,
                ttl: Some(ttl),
                seed: Some(SEED),
                origin: Some(origin.clone()),
                ..LoadConfig::default()
            };
            // Keep origin-sim alive past the load to read its raw log.
            let mut setup_stack = stack;
            let summary_run = {
                self.progress.line(
                    Rung::Negative,
                    &format!("{label}: load {} × 50 clients over ids 1..={keys} (ids > {items} are absent)", humantime::format_duration(duration)),
                );
                let summary = run_load(&cfg, false).await?;
                setup_stack.check_alive()?;
                summary
            };
            let queries = self
                .origin_queries(&origin, summary_run.start_ms)
                .await
                .unwrap_or_default();
            let gateways = self.counters(&setup_stack).await;
            drop(setup_stack);
            self.progress.done += 1;
            let (start, end) = (summary_run.start_ms, summary_run.end_ms);
            let secs = ((end - start) / 1000 + 1) as usize;
            let mut per_s_404 = vec![0u64; secs];
            let mut per_s_200 = vec![0u64; secs];
            for q in queries.iter().filter(|q| q.t_ms >= start && q.t_ms <= end) {
                let s = ((q.t_ms - start) / 1000) as usize;
                if q.status == 404 {
                    per_s_404[s] += 1;
                } else if q.status == 200 {
                    per_s_200[s] += 1;
                }
            }
            let n404: u64 = per_s_404.iter().sum();
            let window_s = (end - start) as f64 / 1000.0;
            let run = Run {
                id: id.into(),
                label: label.into(),
                mitigations: setup.mitigations.clone(),
                instances: 1,
                store: "memory".into(),
                gateway_flags: setup.gateway_flags(),
                origin_flags: setup.origin.flags(),
                metrics: RowMetrics::from_summary(&summary_run),
                gateways,
                chart: None,
                summary: summary_run,
            };
            let row = NegativeRow {
                label: label.into(),
                run: id.into(),
                origin_404: n404,
                mean_404_qps: (n404 as f64 / window_s * 10.0).round() / 10.0,
                max_404_qps: per_s_404.iter().copied().max().unwrap_or(0),
                origin_200: per_s_200.iter().sum(),
            };
            self.progress.line(
                Rung::Negative,
                &format!(
                    "{label}: done — origin 404s {} ({} /s mean, {} max)",
                    row.origin_404, row.mean_404_qps, row.max_404_qps
                ),
            );
            let mut run = run;
            if self.opts.charts {
                let pts = |v: &Vec<u64>| {
                    v.iter()
                        .enumerate()
                        .map(|(i, n)| (i as f64 + 0.5, Some(*n as f64)))
                        .collect::<Vec<_>>()
                };
                let tl = chart_timeline(&run.summary);
                run.chart = self.chart(
                    &format!("{id}.png"),
                    &format!("negative: {label}"),
                    &[
                        Panel {
                            y_label: "origin queries/s".into(),
                            log_y: false,
                            reference: None,
                            series: vec![
                                Series {
                                    label: "404 (absent ids)".into(),
                                    color: 0,
                                    points: pts(&per_s_404),
                                },
                                Series {
                                    label: "200".into(),
                                    color: 1,
                                    points: pts(&per_s_200),
                                },
                            ],
                        },
                        Panel {
                            y_label: "client p99 ms (log)".into(),
                            log_y: true,
                            reference: Some((150.0, "150 ms".into())),
                            series: vec![Series {
                                label: "p99".into(),
                                color: 2,
                                points: tl
                                    .iter()
                                    .enumerate()
                                    .map(|(i, s)| (i as f64 + 0.5, s.p99_ms))
                                    .collect(),
                            }],
                        },
                    ],
                );
            }
            self.runs.push(run);
            out.rows.push(row);
        }
        Ok(out)
    }

    async fn xfetch(&mut self) -> anyhow::Result<XfetchResult> {
        let ttl = self.opts.ttl;
        let n = self.opts.instances;
        let mut out = XfetchResult::default();
        if self.need_redis("(5) XFetch hot-key rows (fleet)") {
            for (id, label, m, beta) in [
                (
                    "xfetch-hot-off",
                    "hot key: single-flight,lock",
                    "single-flight,lock",
                    None,
                ),
                (
                    "xfetch-hot-on",
                    "hot key: single-flight,lock,xfetch (beta 1)",
                    "single-flight,lock,xfetch",
                    None,
                ),
                (
                    "xfetch-hot-beta03",
                    "hot key: single-flight,lock,xfetch, --xfetch-beta 0.3",
                    "single-flight,lock,xfetch",
                    Some("0.3"),
                ),
            ] {
                let mut setup = Setup::fleet(m, n, ttl);
                if let Some(b) = beta {
                    setup.extra = vec!["--xfetch-beta".into(), b.into()];
                }
                let id = self
                    .run(
                        Rung::Xfetch,
                        id,
                        label,
                        setup,
                        "protocol-prewarmed",
                        |l, s| l.protocol_load(s, ttl),
                        &[HOT_KEY],
                    )
                    .await?;
                out.hot.push((label.to_string(), id));
            }
        }
        let think = ttl;
        out.cold_think_ms = think.as_millis() as u64;
        let duration = self.opts.duration.max(ttl * 8);
        for (id, label, m) in [
            (
                "xfetch-cold-off",
                "cold key: single-flight",
                "single-flight",
            ),
            (
                "xfetch-cold-on",
                "cold key: single-flight,xfetch",
                "single-flight,xfetch",
            ),
        ] {
            let id = self
                .run(
                    Rung::Xfetch,
                    id,
                    label,
                    Setup::single(m, ttl),
                    "cold",
                    move |_, s| LoadConfig {
                        targets: s.targets(),
                        concurrency: 1,
                        duration,
                        hot_fraction: 1.0,
                        keys: 1000,
                        hot_key: HOT_KEY,
                        ttl: Some(ttl),
                        seed: Some(SEED),
                        think_time: think,
                        origin: Some(s.origin_url.clone()),
                        ..LoadConfig::default()
                    },
                    &[],
                )
                .await?;
            out.cold.push((label.to_string(), id));
        }
        Ok(out)
    }

    async fn fencing(&mut self) -> anyhow::Result<Option<FencingResult>> {
        if !self.need_redis("(6) fencing (needs the Redis lock and store)") {
            return Ok(None);
        }
        let lock_ttl = Duration::from_millis(300);
        let (slow, fast) = (1500u64, 50u64);
        let mut setup = Setup::fleet("all", self.opts.instances.max(2), Duration::from_secs(30));
        setup.extra = vec!["--lock-ttl".into(), "300ms".into()];
        self.progress.line(
            Rung::Fencing,
            "starting the fleet with --lock-ttl 300ms, --ttl 30s, --mitigations all",
        );
        let mut stack = self.start(&setup).await?;
        let origin = stack.origin_url.clone();
        let g: Vec<String> = stack.targets();
        let last = g.len() - 1;
        let mut out = FencingResult {
            lock_ttl_ms: lock_ttl.as_millis() as u64,
            slow_latency_ms: slow,
            fast_latency_ms: fast,
            ..FencingResult::default()
        };
        let version = |b: &[u8]| -> Option<i64> {
            serde_json::from_slice::<serde_json::Value>(b)
                .ok()?
                .get("version")?
                .as_i64()
        };
        for key in [7u64, 8, 9] {
            self.progress.line(
                Rung::Fencing,
                &format!("item {key}: slow rebuild ({slow} ms) via g1, version bump, fast rebuild via g2 after the lock expired"),
            );
            let config = |ms: u64| serde_json::json!({ "latency_ms": ms });
            self.http
                .send_json(
                    Method::PUT,
                    &format!("{origin}/admin/config"),
                    &config(slow),
                    &[],
                )
                .await?;
            let http = self.http.clone();
            let url_a = format!("{}/items/{key}", g[0]);
            let t_a = Instant::now();
            let slow_task = tokio::spawn(async move {
                let r = http
                    .request(Method::GET, &url_a, None, &[], Duration::from_secs(20))
                    .await;
                (r, t_a.elapsed())
            });
            // Let the slow rebuild read the row, then bump it and speed the origin up.
            tokio::time::sleep(Duration::from_millis(150)).await;
            self.http
                .send_json(
                    Method::PUT,
                    &format!("{origin}/items/{key}"),
                    &serde_json::json!({}),
                    &[],
                )
                .await?;
            self.http
                .send_json(
                    Method::PUT,
                    &format!("{origin}/admin/config"),
                    &config(fast),
                    &[],
                )
                .await?;
            let wait = (lock_ttl + Duration::from_millis(150)).saturating_sub(t_a.elapsed());
            tokio::time::sleep(wait).await;
            let (_, _, fast_body) = self
                .http
                .request(
                    Method::GET,
                    &format!("{}/items/{key}", g[1]),
                    None,
                    &[],
                    Duration::from_secs(20),
                )
                .await?;
            let (slow_res, slow_elapsed) = slow_task.await?;
            let slow_body = slow_res.map(|(_, _, b)| b).ok();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (_, headers, cached_body) = self
                .http
                .request(
                    Method::GET,
                    &format!("{}/items/{key}", g[last]),
                    None,
                    &[],
                    Duration::from_secs(20),
                )
                .await?;
            let origin_body = self.http.get_ok(&format!("{origin}/items/{key}")).await?;
            let trial = FencingTrial {
                key,
                slow_version: slow_body.as_deref().and_then(version),
                fast_version: version(&fast_body),
                cached_version: version(&cached_body),
                cached_status: headers
                    .get("cache-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                origin_version: version(&origin_body),
                slow_ms: slow_elapsed.as_millis() as u64,
            };
            self.progress.note(
                Rung::Fencing,
                &format!(
                    "item {key}: slow answered v{:?}, fast v{:?}, cache now v{:?} ({}), origin v{:?}",
                    trial.slow_version, trial.fast_version, trial.cached_version, trial.cached_status, trial.origin_version
                ),
            );
            out.trials.push(trial);
        }
        self.http
            .send_json(
                Method::PUT,
                &format!("{origin}/admin/config"),
                &serde_json::json!({ "latency_ms": BASE_LATENCY_MS }),
                &[],
            )
            .await?;
        stack.check_alive()?;
        let c = self.counters(&stack).await;
        drop(stack);
        self.progress.done += 1;
        out.rejections_per_gateway = c.fencing_per_gateway;
        out.rejections_total = c.fencing_rejections;
        out.cache_has_newest = out
            .trials
            .iter()
            .all(|t| t.cached_version.is_some() && t.cached_version == t.origin_version);
        self.progress.line(
            Rung::Fencing,
            &format!(
                "done — fencing rejections {} (per gateway {:?}), cache ends with the newest version: {}",
                out.rejections_total, out.rejections_per_gateway, out.cache_has_newest
            ),
        );
        Ok(Some(out))
    }

    async fn metastable(&mut self) -> anyhow::Result<MetastableResult> {
        let (base_s, spike_s, after_s) = if self.opts.quick {
            (3, 4, 12)
        } else {
            (5, 6, 30)
        };
        let items = 20_000u64;
        let mut out = MetastableResult {
            phases_s: [base_s, spike_s, after_s],
            normal_load: "20 clients, 50 ms think time, 95% hot key, rest over 1..=20000, timeout 500 ms, 3 retries, 10 ms backoff".into(),
            spike_load: "400 clients, no think time, all keys over 1..=20000 (cold), timeout 500 ms, 3 retries, 10 ms backoff".into(),
            recovered_below_ms: BASE_LATENCY_MS * 3 / 2,
            rows: Vec::new(),
        };
        for (id, label, m, extra) in [
            ("metastable-no-gate", "without the gate", "none", vec![]),
            (
                "metastable-gate",
                "with the overload gate",
                "overload-gate",
                vec!["--gate-max-inflight".to_string(), "16".to_string()],
            ),
        ] {
            let mut setup = Setup::single(m, self.opts.ttl);
            setup.origin.items = items;
            setup.extra = extra;
            self.progress
                .line(Rung::Metastable, &format!("{label}: starting"));
            let mut stack = self.start(&setup).await?;
            let origin = stack.origin_url.clone();
            let normal = |d: u64| LoadConfig {
                targets: stack.targets(),
                concurrency: 20,
                duration: Duration::from_secs(d),
                hot_fraction: 0.95,
                keys: items,
                hot_key: HOT_KEY,
                retries: 3,
                timeout: Duration::from_millis(500),
                backoff: Duration::from_millis(10),
                think_time: Duration::from_millis(50),
                ttl: Some(self.opts.ttl),
                seed: Some(SEED),
                origin: None,
                ..LoadConfig::default()
            };
            let spike = LoadConfig {
                concurrency: 400,
                duration: Duration::from_secs(spike_s),
                hot_fraction: 0.0,
                think_time: Duration::ZERO,
                seed: Some(SEED + 1),
                ..normal(spike_s)
            };
            // Sample the origin's in-flight gauge every 500 ms.
            let samples: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
            let _sampler = AbortOnDrop({
                let samples = Arc::clone(&samples);
                let http = self.http.clone();
                let url = format!("{origin}/metrics");
                tokio::spawn(async move {
                    loop {
                        if let Ok((_, _, b)) = http
                            .request(Method::GET, &url, None, &[], Duration::from_secs(2))
                            .await
                        {
                            let v = metric_sum(
                                &String::from_utf8_lossy(&b),
                                "origin_inflight_queries",
                                &[],
                            );
                            samples
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((now_ms(), v));
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                })
            });
            self.progress
                .line(Rung::Metastable, &format!("{label}: base load {base_s}s"));
            let base = run_load(&normal(base_s), false).await?;
            self.progress.line(
                Rung::Metastable,
                &format!("{label}: spike {spike_s}s (400 clients, cold keys, retries)"),
            );
            let spike_sum = run_load(&spike, false).await?;
            self.progress.line(
                Rung::Metastable,
                &format!("{label}: back to normal load {after_s}s"),
            );
            let after = run_load(&normal(after_s), false).await?;
            drop(_sampler);
            stack.check_alive()?;
            let gw = self.counters(&stack).await;
            let t0 = base.start_ms;
            let queries = self
                .origin_queries(&origin, t0.saturating_sub(1000))
                .await?;
            drop(stack);
            self.progress.done += 1;
            let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let row = metastable_row(
                label,
                format!("--mitigations {m} {}", setup.extra.join(" ")).trim(),
                t0,
                spike_sum.start_ms,
                spike_sum.end_ms,
                after.end_ms,
                &queries,
                &samples,
                &[&spike_sum, &after],
                &after,
                out.recovered_below_ms,
                gw.shed,
                spike_sum.retries + after.retries,
            );
            self.progress.line(
                Rung::Metastable,
                &format!(
                    "{label}: done — recovery {} after the spike; origin query duration in the last 5 s {:.0} ms; in flight at end {}",
                    row.recovery_s.map_or_else(|| format!("not within {:.0} s", row.observed_after_s), |s| format!("{s:.1} s")),
                    row.last5_duration_ms,
                    row.inflight_at_end
                ),
            );
            let mut row = row;
            if self.opts.charts {
                row.chart = self.metastable_chart(id, label, &row, base_s, spike_s);
            }
            out.rows.push(row);
        }
        Ok(out)
    }

    fn metastable_chart(
        &self,
        id: &str,
        label: &str,
        row: &MetastableRow,
        base_s: u64,
        spike_s: u64,
    ) -> Option<String> {
        let x = |s: &MetaSecond| s.second as f64 + 0.5;
        let panels = [
            Panel {
                y_label: "origin queries/s".into(),
                log_y: false,
                reference: Some((
                    f64::from(BASE_DB_CONNECTIONS) * 1000.0 / BASE_LATENCY_MS as f64,
                    "origin capacity".into(),
                )),
                series: vec![
                    Series {
                        label: "started".into(),
                        color: 1,
                        points: row
                            .timeline
                            .iter()
                            .map(|s| (x(s), Some(s.started as f64)))
                            .collect(),
                    },
                    Series {
                        label: "in flight (sampled)".into(),
                        color: 3,
                        points: row.timeline.iter().map(|s| (x(s), s.inflight)).collect(),
                    },
                ],
            },
            Panel {
                y_label: "origin query ms (log)".into(),
                log_y: true,
                reference: Some((BASE_LATENCY_MS as f64, "base latency".into())),
                series: vec![Series {
                    label: "mean duration of queries finishing".into(),
                    color: 0,
                    points: row
                        .timeline
                        .iter()
                        .map(|s| (x(s), s.finished_mean_ms))
                        .collect(),
                }],
            },
            Panel {
                y_label: "client errors/s".into(),
                log_y: false,
                reference: None,
                series: vec![Series {
                    label: "failed requests".into(),
                    color: 5,
                    points: row
                        .timeline
                        .iter()
                        .map(|s| (x(s), Some(s.errors as f64)))
                        .collect(),
                }],
            },
        ];
        self.chart(
            &format!("{id}.png"),
            &format!(
                "metastable: {label} — spike from {base_s} s to {} s",
                base_s + spike_s
            ),
            &panels,
        )
    }
}

/// The timeline seconds that lie inside the load duration (the partial last
/// bucket would read as a drop to zero).
fn chart_timeline(s: &LoadSummary) -> &[crate::load::TimelineSecond] {
    let n = (s.config.duration.as_secs_f64().floor() as usize).clamp(1, s.timeline.len().max(1));
    &s.timeline[..n.min(s.timeline.len())]
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(clippy::too_many_arguments)]
fn metastable_row(
    label: &str,
    gateway: &str,
    t0: u64,
    spike_start: u64,
    spike_end: u64,
    end: u64,
    queries: &[OriginQuery],
    samples: &[(u64, f64)],
    client: &[&LoadSummary],
    after: &LoadSummary,
    ok_ms: u64,
    shed: f64,
    retries: u64,
) -> MetastableRow {
    let secs = ((end.saturating_sub(t0)) / 1000 + 1) as usize;
    let mut tl: Vec<MetaSecond> = (0..secs)
        .map(|i| MetaSecond {
            second: i as u64,
            ..MetaSecond::default()
        })
        .collect();
    let mut fin_sum = vec![0u64; secs];
    let sec_of =
        |t: u64| -> Option<usize> { (t >= t0 && t <= end).then(|| ((t - t0) / 1000) as usize) };
    let mut base_durs = Vec::new();
    for q in queries {
        if let Some(s) = sec_of(q.t_ms) {
            tl[s].started += 1;
        }
        let f = q.t_ms + q.duration_ms;
        if let Some(s) = sec_of(f) {
            tl[s].finished += 1;
            fin_sum[s] += q.duration_ms;
        }
        // Queries that ran entirely in the base phase (before the spike).
        if q.t_ms >= t0 && f < spike_start {
            base_durs.push(q.duration_ms);
        }
    }
    for (s, sum) in tl.iter_mut().zip(&fin_sum) {
        s.finished_mean_ms =
            (s.finished > 0).then(|| (*sum as f64 / s.finished as f64 * 10.0).round() / 10.0);
    }
    for (t, v) in samples {
        if let Some(s) = sec_of(*t) {
            tl[s].inflight = Some(*v);
        }
    }
    for c in client {
        let off = ((c.start_ms.saturating_sub(t0)) / 1000) as usize;
        for ts in &c.timeline {
            let i = off + ts.second as usize;
            if i < secs {
                tl[i].requests += ts.requests;
                tl[i].errors += ts.errors;
            }
        }
    }
    // Recovery: the first second at or after the spike end from which every
    // second with finishing queries has a mean duration ≤ ok_ms, and the
    // sampled in-flight count stays ≤ the pool size.
    let spike_sec = ((spike_end - t0) / 1000) as usize;
    let ok = |s: &MetaSecond| s.finished_mean_ms.is_none_or(|m| m <= ok_ms as f64);
    let mut recovery = None;
    for start in spike_sec..secs {
        if tl[start..].iter().all(ok) && tl[start].finished > 0 {
            let t = (t0 + start as u64 * 1000).saturating_sub(spike_end) as f64 / 1000.0;
            recovery = Some(t.max(0.0));
            break;
        }
    }
    let after_secs: Vec<&MetaSecond> = tl.iter().skip(spike_sec + 1).collect();
    let last5: Vec<&MetaSecond> = tl.iter().rev().take(5).collect();
    let (n5, s5) = last5.iter().fold((0u64, 0f64), |(n, s), x| {
        (
            n + x.finished,
            s + x.finished_mean_ms.unwrap_or(0.0) * x.finished as f64,
        )
    });
    MetastableRow {
        label: label.into(),
        gateway: gateway.into(),
        chart: None,
        recovery_s: recovery.map(|r| (r * 10.0).round() / 10.0),
        observed_after_s: (end - spike_end) as f64 / 1000.0,
        base_duration_ms: if base_durs.is_empty() {
            0.0
        } else {
            (base_durs.iter().sum::<u64>() as f64 / base_durs.len() as f64 * 10.0).round() / 10.0
        },
        worst_after_duration_ms: after_secs
            .iter()
            .filter_map(|s| s.finished_mean_ms)
            .fold(0.0, f64::max),
        last5_duration_ms: if n5 == 0 {
            0.0
        } else {
            (s5 / n5 as f64).round()
        },
        max_inflight_after: after_secs
            .iter()
            .filter_map(|s| s.inflight)
            .fold(0.0, f64::max),
        inflight_at_end: samples.last().map_or(0.0, |s| s.1),
        after_errors: after.failed_requests,
        after_requests: after.requests,
        after_p99_ms: after.latency.all.p99_ms,
        retries,
        shed,
        timeline: tl,
    }
}

/// Run the ladder and write its outputs. The caller wires ctrl-c to dropping
/// this future (every child is killed by its guard).
pub async fn run_ladder(opts: LadderOptions) -> anyhow::Result<Results> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let start = Instant::now();
    let bins = Bins::find(&opts.bin_dir)?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let work = std::env::temp_dir().join(format!("stampede-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "stampede-bench ladder: binaries from {}, logs in {}, output to {}",
        opts.bin_dir.display(),
        work.display(),
        opts.out.display()
    );

    let needs_redis = opts.rungs.iter().any(|r| {
        matches!(
            r,
            Rung::Table | Rung::Scope | Rung::Xfetch | Rung::Fencing | Rung::Peers
        )
    });
    let (redis, redis_desc) = match which("redis-server") {
        Some(p) if needs_redis => {
            let version = std::process::Command::new(&p)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let r = RedisProc::start(&p, &work).await?;
            eprintln!(
                "redis-server started on port {} ({})",
                r.port(),
                p.display()
            );
            (Some(r), version)
        }
        Some(_) => (None, "not needed by the selected rungs".to_string()),
        None => {
            eprintln!(
                "redis-server is not on PATH: the fleet rungs (table, the 3-instance scope rows, XFetch hot key, fencing) will be skipped; install it (Debian: apt-get install redis-server) to run them"
            );
            (None, "not installed".to_string())
        }
    };
    let machine = Machine::current(&opts.bin_dir, &redis_desc);
    let total = planned_runs(&opts, redis.is_some());
    let mut ladder = Ladder {
        opts: opts.clone(),
        bins,
        redis,
        http: Http::new(),
        work: work.clone(),
        progress: Progress {
            done: 0,
            total,
            start,
        },
        runs: Vec::new(),
        done: BTreeMap::new(),
        skipped: Vec::new(),
    };

    let mut results = Results {
        generated_at: started_at,
        elapsed_s: 0.0,
        options: opts.clone(),
        machine,
        protocol: Protocol {
            concurrency: 50,
            hot_fraction: 0.95,
            keys: 1000,
            duration_s: opts.duration.as_secs_f64(),
            ttl_s: opts.ttl.as_secs_f64(),
            origin_latency_ms: BASE_LATENCY_MS,
            origin_db_connections: BASE_DB_CONNECTIONS,
            fleet_instances: opts.instances,
            seed: SEED,
        },
        runs: Vec::new(),
        table: Vec::new(),
        scope: None,
        multi_key: None,
        negative: None,
        xfetch: None,
        fencing: None,
        metastable: None,
        peers: None,
        skipped: Vec::new(),
        failed: Vec::new(),
        overview_chart: None,
    };

    for rung in opts.rungs.clone() {
        let r: anyhow::Result<()> = async {
            match rung {
                Rung::Table => results.table = ladder.table().await?,
                Rung::Scope => results.scope = Some(ladder.scope().await?),
                Rung::MultiKey => results.multi_key = Some(ladder.multi_key().await?),
                Rung::Negative => results.negative = Some(ladder.negative().await?),
                Rung::Xfetch => results.xfetch = Some(ladder.xfetch().await?),
                Rung::Fencing => results.fencing = ladder.fencing().await?,
                Rung::Metastable => results.metastable = Some(ladder.metastable().await?),
                Rung::Peers => results.peers = Some(ladder.peers().await?),
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            eprintln!("error: rung {} failed: {e:#}", rung.name());
            results.failed.push(Skipped {
                what: rung.name().into(),
                why: format!("{e:#}"),
            });
        }
    }

    results.runs = std::mem::take(&mut ladder.runs);
    results.skipped = std::mem::take(&mut ladder.skipped);
    if opts.charts {
        results.overview_chart = overview_chart(&ladder, &results);
    }
    drop(ladder);
    results.elapsed_s = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(opts.out.join("results.json"), format!("{json}\n"))?;
    std::fs::write(opts.out.join("RESULTS.md"), ladder_report::render(&results))?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "stampede-bench ladder: done in {:.0} s; wrote {}/RESULTS.md, results.json and {} chart(s)",
        results.elapsed_s,
        opts.out.display(),
        results.runs.iter().filter(|r| r.chart.is_some()).count()
            + results.metastable.as_ref().map_or(0, |m| m
                .rows
                .iter()
                .filter(|r| r.chart.is_some())
                .count())
    );
    Ok(results)
}

fn overview_chart(ladder: &Ladder, results: &Results) -> Option<String> {
    let naive = results.run("table-naive")?;
    let full = results.run("table-full")?;
    let pts = |r: &Run, hot: bool| {
        chart_timeline(&r.summary)
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let v = if hot {
                    s.hot_origin_queries
                } else {
                    s.origin_queries
                };
                (i as f64 + 0.5, v.map(|v| v as f64))
            })
            .collect::<Vec<_>>()
    };
    let p99 = |r: &Run| {
        chart_timeline(&r.summary)
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 0.5, s.hot_p99_ms))
            .collect::<Vec<_>>()
    };
    ladder.chart(
        "table-overview.png",
        "naive vs full stack — 3 gateways on one Redis, identical load",
        &[
            Panel {
                y_label: "hot-key origin queries/s".into(),
                log_y: false,
                reference: None,
                series: vec![
                    Series {
                        label: "naive".into(),
                        color: 0,
                        points: pts(naive, true),
                    },
                    Series {
                        label: "full stack".into(),
                        color: 2,
                        points: pts(full, true),
                    },
                ],
            },
            Panel {
                y_label: "hot-key client p99 ms (log)".into(),
                log_y: true,
                reference: Some((150.0, "150 ms".into())),
                series: vec![
                    Series {
                        label: "naive".into(),
                        color: 0,
                        points: p99(naive),
                    },
                    Series {
                        label: "full stack".into(),
                        color: 2,
                        points: p99(full),
                    },
                ],
            },
        ],
    )
}

/// How many runs the selected rungs will make (for `[run i/N]`).
fn planned_runs(opts: &LadderOptions, redis: bool) -> usize {
    let mut n = 0;
    let mut table_rows: Vec<&str> = Vec::new();
    for r in &opts.rungs {
        n += match r {
            Rung::Table if redis => {
                table_rows = opts.rows.iter().map(String::as_str).collect();
                opts.rows.len()
            }
            Rung::Scope => {
                let mut k = 1;
                if redis {
                    k += 1;
                    k += usize::from(!table_rows.contains(&"single-flight"));
                    k += usize::from(!table_rows.contains(&"lock"));
                }
                k
            }
            Rung::MultiKey | Rung::Negative | Rung::Metastable => 2,
            Rung::Xfetch => 2 + if redis { 3 } else { 0 },
            Rung::Fencing => usize::from(redis),
            Rung::Peers => peers::planned_runs(redis, table_rows.contains(&"full")),
            Rung::Table => 0,
        };
    }
    n
}
