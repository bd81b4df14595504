//! What a ladder was asked to do and what it produced (`results.json`): the
//! options, the machine, and one [`Run`] per run of the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{HostInfo, LoadConfig, LoadSummary};
use crate::procs::{display_path, proc_field};

/// How much of the table to run, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The headline rows of the before/after table, shorter runs (about a
    /// minute of load): `QUICK.md` under `target/`, never `RESULTS.md`.
    Quick,
    /// Every rung at full length: `docs/results/RESULTS.md`.
    Full,
}

/// What `stampede-bench ladder` was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LadderOptions {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    #[serde(flatten)]
    pub host: HostInfo,
    pub cpu: String,
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
        let (cpuinfo, meminfo) = (read("/proc/cpuinfo"), read("/proc/meminfo"));
        let cpu = Some(proc_field(&cpuinfo, "model name")).filter(|c| !c.is_empty());
        let mem_kb = proc_field(&meminfo, "MemTotal")
            .trim_end_matches(" kB")
            .parse::<u64>();
        let bench_profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        Self {
            host: HostInfo::current(),
            cpu: cpu.unwrap_or("unknown").into(),
            memory_mib: mem_kb.map_or(0, |kb| kb / 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            bench_profile: bench_profile.into(),
            bin_dir: display_path(bin_dir),
            redis: redis.to_string(),
        }
    }
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

/// What a run measured beyond the load summary and the gateway counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Named values its [`Measure`](super::table::Measure) recorded (the
    /// warm burst's ms, the fencing trial, the metastable recovery, …).
    pub values: BTreeMap<String, serde_json::Value>,
    /// The metastable run's seconds (base, spike, after).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<MetaSecond>,
    pub peer: Option<PeerConfig>,
}

impl Measured {
    /// Record `value` as `key`.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.values.insert(key.into(), value.into());
    }
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
    pub machine: Machine,
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
