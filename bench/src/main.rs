//! `stampede-bench` command line: `load` (drive load, print a JSON summary),
//! `ladder` (run every rung, write docs/results) and `soak` (bounded soak).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stampede_bench::ladder::table::{TABLE_ROWS, rung_names};
use stampede_bench::ladder::{LadderOptions, Profile, run_ladder};
use stampede_bench::load::{DEFAULT_ORIGIN, LoadConfig, parse_base_url, run_load};
use stampede_bench::procs::display_path;

/// Load generator and experiment runner for stampede-layer.
#[derive(Debug, Parser)]
#[command(name = "stampede-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive closed-loop keep-alive load (round-robin over targets) and print a JSON summary to stdout.
    #[command(after_help = LOAD_AFTER_HELP)]
    Load(Box<LoadArgs>),
    /// Run every rung of the mitigation ladder under identical load and write RESULTS.md, results.json and charts.
    #[command(after_help = ladder_after_help())]
    Ladder(LadderArgs),
    /// Soak one gateway under hot-key load over a wide key space; check memory stays bounded and nothing leaks.
    Soak(SoakArgs),
}

/// Flags of `stampede-bench soak`.
#[derive(Debug, Args)]
struct SoakArgs {
    /// How long the load runs (the full soak is 10m; CI runs a short one).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Distinct keys (the wide key space).
    #[arg(long, default_value_t = 200_000)]
    keys: u64,
    /// Share of requests to the hot key.
    #[arg(long, default_value_t = 0.9)]
    hot_fraction: f64,
    /// The gateway's in-process store bound: entries.
    #[arg(long, default_value_t = 20_000)]
    max_entries: u64,
    /// The gateway's in-process store bound: bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_bytes: u64,
    /// Directory holding the origin-sim and gateway binaries (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON report here (docs/results/soak.json feeds scripts/reliability.py).
    #[arg(long)]
    output: Option<PathBuf>,
}

const LOAD_AFTER_HELP: &str = "\
Each request goes to {path-prefix}{hot-key} with probability --hot-fraction, else to a key uniform in 1..=--keys.
Latency is first send to final answer (retries included). Responses are classified by the gateway's
RFC 9211 Cache-Status header (hit, stale hit = hit with ttl<0, miss = fwd=..., collapsed; no header = unknown).
After the load, GET {origin}/stats/queries gives origin queries in the load window, the most in any second,
and hot-key queries per TTL boundary. Progress goes to stderr once a second; the JSON summary to stdout.
Exit status: 0 ok, 1 run failed, 2 bad flags.";

fn ladder_after_help() -> String {
    format!(
        "Starts its own origin-sim, gateways and (when redis-server is on PATH) a redis-server on free 127.0.0.1 ports,
as child processes killed by PID at the end, on error and on ctrl-c. Without redis-server the fleet rows are
skipped (and listed as skipped). Rungs, in order: {}. Profiles: full (every rung, about 11 minutes,
writes docs/results/RESULTS.md) and quick (rungs {}, rows {}, {} runs, about 2 minutes, writes
target/ladder-quick/QUICK.md); --rungs, --rows, --duration and --out override the profile. The headline table
goes to stdout, progress to stderr. Exit status: 0 ok, 1 a run failed, 2 bad flags.",
        rung_names().join(", "),
        Profile::Quick.rungs().join(","),
        Profile::Quick.rows().join(","),
        humantime::format_duration(Profile::Quick.duration())
    )
}

/// Flags of `stampede-bench ladder`.
#[derive(Debug, Args)]
struct LadderArgs {
    /// What to run: full (every rung, the committed results) or quick (the headline, about 2 minutes).
    #[arg(long, value_enum, default_value = "full")]
    profile: Profile,
    /// Same as --profile quick.
    #[arg(long)]
    quick: bool,
    /// Output directory for the report, its JSON and the PNG charts [default: docs/results; quick: target/ladder-quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Load duration of each protocol run [default: 20s; quick: 10s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Directory holding the origin-sim and gateway binaries (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    #[arg(long, value_parser = parse_rungs, help = format!("Rungs to run: all, or a comma list of {} [default: the profile's]", rung_names().join(",")))]
    rungs: Option<Names>,
    #[arg(long, value_parser = parse_rows, help = format!("Rows of the before/after table: all, or a comma list of {} [default: the profile's]", TABLE_ROWS.map(|r| r.0).join(",")))]
    rows: Option<Names>,
    /// Gateway TTL of the protocol runs.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    ttl: Duration,
    /// Gateways in the fleet rungs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    instances: u16,
    /// Do not draw the PNG charts.
    #[arg(long)]
    no_charts: bool,
}

#[derive(Debug, Clone)]
struct Names(Vec<String>);

/// `all` or a comma list of `known` names, in the order given.
fn parse_names(s: &str, what: &str, known: &[&str]) -> Result<Names, String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let add: Vec<&str> = match part {
            "all" => known.to_vec(),
            p if known.contains(&p) => vec![p],
            p => {
                return Err(format!(
                    "unknown {what} {p:?} (expected all or a comma list of {})",
                    known.join(",")
                ));
            }
        };
        out.extend(
            add.into_iter()
                .filter(|a| !out.iter().any(|o| o == a))
                .map(String::from)
                .collect::<Vec<_>>(),
        );
    }
    if out.is_empty() {
        return Err(format!("no {what} given"));
    }
    Ok(Names(out))
}

fn parse_rungs(s: &str) -> Result<Names, String> {
    parse_names(s, "rung", &rung_names())
}

fn parse_rows(s: &str) -> Result<Names, String> {
    parse_names(s, "row", &TABLE_ROWS.map(|r| r.0))
}

/// Flags of `stampede-bench load`. The first six are the interface contract.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Target base URL(s), comma-separated; requests go round-robin over them.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',', value_parser = parse_url, default_value = "http://127.0.0.1:8080")]
    target: Vec<String>,
    /// Concurrent closed-loop clients (each keeps one keep-alive connection busy).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// How long to start new requests, e.g. 500ms, 30s, 1m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Probability that a request goes to the hot key (0..=1).
    #[arg(long, default_value_t = 0.95, value_parser = parse_fraction)]
    hot_fraction: f64,
    /// Other requests pick a key uniformly from 1..=KEYS.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Retries after a connect/timeout/body error or a 5xx answer.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Per-attempt timeout for the whole response, e.g. 1s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// origin-sim base URL whose /stats/queries gives the origin section ("none" to skip).
    #[arg(long, value_name = "URL", default_value = DEFAULT_ORIGIN)]
    origin: String,
    /// The hot key.
    #[arg(long, default_value_t = 1)]
    hot_key: u64,
    /// Request path before the key: GET {target}{path-prefix}{key}.
    #[arg(long, default_value = "/items/")]
    path_prefix: String,
    /// The gateway's TTL: hot-key origin queries separated by more than min(ttl/4, 500ms) form separate TTL boundaries (500ms gap when unset).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Back-off before each retry (plus up to 20% jitter).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    backoff: Duration,
    /// RNG seed for key choice and jitter (worker i uses seed+i); random when unset.
    #[arg(long)]
    seed: Option<u64>,
    /// Pause of each client after each answer, e.g. 50ms (0 = tight closed loop).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    think_time: Duration,
    /// Also write the JSON summary to FILE.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 1m)"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Ok(f) => Err(format!("{f} is not within 0..=1")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    parse_base_url(s.trim())
        .map(|_| s.trim().to_string())
        .map_err(|e| e.to_string())
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        let origin = match self.origin.trim() {
            "" | "none" => None,
            o => Some(o.to_string()),
        };
        LoadConfig {
            targets: self.target.clone(),
            concurrency: self.concurrency as usize,
            duration: self.duration,
            hot_fraction: self.hot_fraction,
            keys: self.keys,
            hot_key: self.hot_key,
            path_prefix: self.path_prefix.clone(),
            retries: self.retries,
            timeout: self.timeout,
            backoff: self.backoff,
            ttl: self.ttl,
            seed: self.seed,
            think_time: self.think_time,
            origin,
        }
    }
}

async fn load(args: Box<LoadArgs>) -> ExitCode {
    let cfg = args.config();
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let summary = match run_load(&cfg, !args.quiet).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let json = match serde_json::to_string_pretty(&summary) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot serialize the summary: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{json}");
    if let Some(path) = &args.output
        && let Err(e) = std::fs::write(path, format!("{json}\n"))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The command line as typed, paths shown relative to the repository.
fn command_line() -> String {
    let args = std::env::args().map(|a| {
        if a.starts_with('/') {
            display_path(std::path::Path::new(&a))
        } else {
            a
        }
    });
    shlex::try_join(args.collect::<Vec<_>>().iter().map(String::as_str)).unwrap_or_default()
}

/// Run `fut`; on ctrl-c or SIGTERM drop it (its guards kill the processes it
/// started) and exit 130 / 143.
async fn until_signal<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        eprintln!("error: cannot watch SIGTERM");
        return Err(ExitCode::FAILURE);
    };
    tokio::select! {
        r = fut => Ok(r),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stampede-bench {what}: interrupted; stopped the processes it started");
            Err(ExitCode::from(130))
        }
        _ = sigterm.recv() => {
            eprintln!("stampede-bench {what}: terminated; stopped the processes it started");
            Err(ExitCode::from(143))
        }
    }
}

async fn ladder(args: LadderArgs) -> ExitCode {
    let Some(bin_dir) = bin_dir_or_exe_dir(args.bin_dir.clone()) else {
        eprintln!("error: cannot tell this executable's directory: pass --bin-dir");
        return ExitCode::from(2);
    };
    let profile = if args.quick {
        Profile::Quick
    } else {
        args.profile
    };
    let opts = LadderOptions {
        profile,
        out: args.out.unwrap_or_else(|| profile.out_dir().into()),
        duration: args.duration.unwrap_or(profile.duration()),
        ttl: args.ttl,
        bin_dir,
        rungs: args.rungs.map_or_else(|| profile.rungs(), |n| n.0),
        rows: args.rows.map_or_else(|| profile.rows(), |n| n.0),
        instances: usize::from(args.instances),
        charts: !args.no_charts,
        command: command_line(),
    };
    match until_signal("ladder", run_ladder(opts)).await {
        Ok(Ok(res)) if res.failed.is_empty() => ExitCode::SUCCESS,
        Ok(Ok(res)) => {
            for f in &res.failed {
                eprintln!("error: {} failed: {}", f.what, f.why);
            }
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(code) => code,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Load(args) => load(args).await,
        Command::Ladder(args) => ladder(args).await,
        Command::Soak(args) => soak(args).await,
    }
}

/// `--bin-dir` if given, else the directory of this executable (where cargo
/// puts the gateway and origin-sim binaries next to it).
fn bin_dir_or_exe_dir(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    })
}

async fn soak(args: SoakArgs) -> ExitCode {
    let Some(bin_dir) = bin_dir_or_exe_dir(args.bin_dir.clone()) else {
        eprintln!("error: cannot tell this executable's directory: pass --bin-dir");
        return ExitCode::from(2);
    };
    if !(0.0..=1.0).contains(&args.hot_fraction) || args.concurrency == 0 || args.keys == 0 {
        eprintln!("error: --hot-fraction must be in [0, 1], --concurrency and --keys above 0");
        return ExitCode::from(2);
    }
    let cfg = stampede_bench::soak::SoakConfig {
        duration: args.duration,
        concurrency: args.concurrency,
        keys: args.keys,
        hot_fraction: args.hot_fraction,
        max_entries: args.max_entries,
        max_bytes: args.max_bytes,
        bin_dir,
        work_dir: std::env::temp_dir().join(format!("stampede-soak-{}", std::process::id())),
        progress: true,
    };
    let result = match until_signal("soak", stampede_bench::soak::run_soak(&cfg)).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    match result {
        Ok(report) => {
            let json = serde_json::to_string_pretty(&report).expect("serialisable");
            println!("{json}");
            if let Some(path) = &args.output
                && let Err(e) = std::fs::write(path, &json)
            {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            if report.failures.is_empty() {
                eprintln!("soak: all checks passed");
                ExitCode::SUCCESS
            } else {
                for f in &report.failures {
                    eprintln!("soak: FAILED: {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
