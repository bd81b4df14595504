//! What a ladder was asked to do and what it produced (`results.json`): the
//! options, the machine, and one [`Run`] per run of the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{HostInfo, LoadConfig, LoadSummary};
use crate::procs::display_path;

/// How much of the table to run, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The headline rows of the before/after table, shorter runs (about a
    /// minute of load): `QUICK.md` under `target/`, never `RESULTS.md`.
    Quick,
    /// Every rung at full length (about 11 minutes): `docs/results/RESULTS.md`.
    Full,
}

/// What `stampede-bench ladder` was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LadderOptions {
    /// The profile.
    pub profile: Profile,
    /// Output directory (report, JSON, charts).
    pub out: PathBuf,
    /// Load duration of each protocol run.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Gateway TTL of the protocol runs.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Where `origin-sim` and `gateway` are.
    pub bin_dir: PathBuf,
    /// Rungs (sections of the table) to run.
    pub rungs: Vec<String>,
    /// Rows of the before/after table to run.
    pub rows: Vec<String>,
    /// Gateways in a fleet.
    pub instances: usize,
    /// Draw the PNG charts.
    pub charts: bool,
    /// The command line, as typed (paths relative to the repository).
    pub command: String,
}

impl LadderOptions {
    /// The report's and the JSON's file names: the quick profile never
    /// overwrites `RESULTS.md`.
    pub fn files(&self) -> (&'static str, &'static str) {
        match self.profile {
            Profile::Quick => ("QUICK.md", "quick.json"),
            Profile::Full => ("RESULTS.md", "results.json"),
        }
    }
}

/// The machine and build a ladder ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Available parallelism.
    pub nproc: usize,
    /// CPU model.
    pub cpu: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Build profile of `stampede-bench` itself.
    pub bench_profile: String,
    /// Where the gateway and origin-sim binaries came from (relative to the repository).
    pub bin_dir: String,
    /// `redis-server --version`, or why there is none.
    pub redis: String,
}

impl Machine {
    /// This machine.
    pub fn current(bin_dir: &Path, redis: &str) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |file: &str, key: &str| {
            let text = read(file);
            let line = text
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_default();
            line.split_once(':')
                .map_or("", |(_, v)| v.trim())
                .to_string()
        };
        let host = HostInfo::current();
        let mem_kb = field("/proc/meminfo", "MemTotal");
        let cpu = field("/proc/cpuinfo", "model name");
        Self {
            hostname: host.hostname,
            nproc: host.nproc,
            cpu: if cpu.is_empty() {
                "unknown".into()
            } else {
                cpu
            },
            memory_mib: mem_kb
                .trim_end_matches(" kB")
                .parse::<u64>()
                .map_or(0, |kb| kb / 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            bench_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            bin_dir: display_path(bin_dir),
            redis: redis.to_string(),
        }
    }
}

/// The identical load of the measurement protocol (from the table).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Protocol {
    /// The load of a protocol run (targets and origin are filled in per run).
    pub load: LoadConfig,
    /// Origin latency, ms.
    pub origin_latency_ms: u64,
    /// Origin pool.
    pub origin_db_connections: u32,
    /// Gateways in the fleet rungs.
    pub fleet_instances: usize,
}

/// Origin answers by status, per second of the load (the negative rung).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusCounts {
    /// 404 queries per second.
    pub per_second_404: Vec<u64>,
    /// 200 queries per second.
    pub per_second_200: Vec<u64>,
    /// Mean 404 queries per second over the window.
    pub mean_404_qps: f64,
}

/// One fencing trial: a rebuild slower than the lock TTL, then a fast one.
/// Versions are those each answer carried; `slow_ms` the slow rebuild's time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FencingTrial {
    pub key: u64,
    pub slow_version: Option<i64>,
    pub fast_version: Option<i64>,
    pub cached_version: Option<i64>,
    pub cached_status: String,
    pub origin_version: Option<i64>,
    pub slow_ms: u64,
}

/// The metastable analysis of a three-phase run (base, spike, after): origin
/// query durations (ms) in the base phase, the worst second after the spike
/// and the last seconds; the sampled in-flight count; the after-spike phase's
/// client figures; the retries of spike and after.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recovery {
    /// Seconds from the spike's end until origin query durations are back
    /// near base and stay there; `None`: not within `observed_after_s`.
    pub recovery_s: Option<f64>,
    pub observed_after_s: f64,
    pub base_duration_ms: f64,
    pub worst_after_duration_ms: f64,
    /// Over the last `LAST_SECONDS` of the run.
    pub last5_duration_ms: f64,
    pub max_inflight_after: f64,
    pub inflight_at_end: f64,
    pub after_errors: u64,
    pub after_requests: u64,
    pub after_p99_ms: f64,
    pub retries: u64,
    /// Per second since the base phase started.
    pub timeline: Vec<MetaSecond>,
}

/// One second of a metastable run: origin queries started and finished (the
/// mean duration of those finishing), the sampled in-flight count, client
/// requests started and how many of them failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaSecond {
    pub second: u64,
    pub started: u64,
    pub finished: u64,
    pub finished_mean_ms: Option<f64>,
    pub inflight: Option<f64>,
    pub requests: u64,
    pub errors: u64,
}

/// A peer's (nginx, Varnish) version and config as used; temp dirs as `<tmp>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerConfig {
    pub version: String,
    /// Written under the output directory.
    pub file: String,
    pub command: String,
    pub text: String,
}

/// What a measurement function added to a run, beyond the load summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// How long the warm burst before the load took, ms.
    pub warm_ms: Option<u64>,
    /// Seconds in which origin queries exceeded the row's threshold.
    pub seconds_above: Option<u64>,
    pub statuses: Option<StatusCounts>,
    pub recovery: Option<Recovery>,
    pub fencing: Option<FencingTrial>,
    pub peer: Option<PeerConfig>,
}

/// One run of one row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Unique id (also the chart's file stem).
    pub id: String,
    /// Row label (of the first row that ran it).
    pub label: String,
    /// `--mitigations` (or the peer's settings).
    pub mitigations: String,
    /// Gateways (or peer instances).
    pub instances: usize,
    /// `redis`, `memory`, or the peer's package.
    pub store: String,
    /// Every gateway flag beyond addresses (or the peer's command).
    pub gateway_flags: Vec<String>,
    /// Every origin-sim flag beyond the listen address.
    pub origin_flags: Vec<String>,
    /// Load phases, when there is more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<LoadConfig>,
    /// Counters scraped from each gateway's `/metrics` at the end (name → value).
    pub gateways: Vec<BTreeMap<String, f64>>,
    /// Chart file name, relative to the output directory.
    pub chart: Option<String>,
    /// The load summary (single-phase runs).
    pub summary: Option<LoadSummary>,
    /// What the run's measurement function added.
    pub measured: Measured,
}

impl Run {
    /// Gateway counter `name`, summed over the gateways.
    pub fn counter(&self, name: &str) -> f64 {
        self.gateways.iter().filter_map(|g| g.get(name)).sum()
    }
}

/// A run that did not happen, or failed, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

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
    /// The sections that ran: rung → `[(row label, run id)]`, from the table.
    pub plan: Vec<(String, Vec<(String, String)>)>,
    /// Every run.
    pub runs: Vec<Run>,
    /// Runs not made, and why.
    pub skipped: Vec<Skipped>,
    /// Runs that failed, with the error.
    pub failed: Vec<Skipped>,
    /// Overview chart of the before/after table (naive vs full stack), if drawn.
    pub overview_chart: Option<String>,
}

impl Results {
    /// The run with this id.
    pub fn run(&self, id: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.id == id)
    }
}
