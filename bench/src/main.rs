//! `stampede-bench` command line: `load` (drive load, print a JSON summary),
//! `ladder` (run every rung, write docs/results), `soak` (bounded soak) and
//! `campaign` (seeded fault campaign: workload, nemesis, history, checker).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use stampede_bench::campaign::{self, CampaignConfig};
use stampede_bench::ladder::table::{TABLE_ROWS, rung_names};
use stampede_bench::ladder::{LadderOptions, Profile, run_ladder};
use stampede_bench::load::{DEFAULT_ORIGIN, LoadConfig, parse_duration, run_load};
use stampede_bench::procs::display_path;
use stampede_bench::soak::{SoakConfig, run_soak};

/// Load generator and experiment runner for stampede-layer.
#[derive(Debug, Parser)]
#[command(name = "stampede-bench", version, about)]
enum Cli {
    /// Drive closed-loop keep-alive load (round-robin over targets) and print a JSON summary to stdout.
    #[command(after_help = LOAD_AFTER_HELP)]
    Load(Box<LoadArgs>),
    /// Run every rung of the mitigation ladder under identical load and write RESULTS.md, results.json and charts.
    #[command(after_help = ladder_after_help())]
    Ladder(LadderArgs),
    /// Soak one gateway under hot-key load over a wide key space; check memory stays bounded and nothing leaks.
    Soak(SoakArgs),
    /// Seeded fault campaign: workload + fault schedule + recorded history + checker (see `campaign --help`).
    #[command(after_help = CAMPAIGN_AFTER_HELP, args_conflicts_with_subcommands = true)]
    Campaign(CampaignArgs),
}

const CAMPAIGN_AFTER_HELP: &str = "\
Starts one redis-server, one origin-sim and --gateways gateways (--redis, --mitigations all, --ttl 2s,
--stale-ttl 1s, --lock-ttl 500ms, near cache 1s) on free 127.0.0.1 ports, killed by PID at the end. Clients
read hot and cold keys, update items and purge keys through random gateways while the nemesis injects one
fault at a time in a seeded order: gateway paused (SIGSTOP) mid-rebuild, gateway killed and restarted, Redis
restarted, pub/sub connections killed, origin slowed past the lock TTL, origin answering 5xx. Every operation
and fault goes to --history (JSON lines); origin-sim's /stats/queries to --queries. The checker then reports
invariants (a) monotonic cache reads, (b) no invalidation undone by an older fill, (c) one origin rebuild per
key fleet-wide (documented takeovers apart), (d) staleness after an invalidation within the near-cache TTL,
(e) no client error outside the documented paths. Profiles: short (~45 s of faults, every kind once, CI)
and long (10 min, every kind at least 20 times). Progress on stderr (a line per fault, one every 10 s), the
JSON summary on stdout. `campaign check` re-checks saved files; `campaign render` writes the section of
docs/RELIABILITY.md from a saved summary. Exit status: 0 no violation, 3 violations found, 1 the run
failed, 2 bad flags.";

const LOAD_AFTER_HELP: &str = "\
Each request goes to {path-prefix}{hot-key} with probability --hot-fraction, else to a key uniform in 1..=--keys.
Latency is first send to final answer (retries included). Responses are classified by the gateway's
RFC 9211 Cache-Status header (hit, stale hit = hit with ttl<0, miss = fwd=..., collapsed; no header = unknown).
After the load, GET {origin}/stats/queries gives origin queries in the load window, the most in any second,
hot-key queries per TTL boundary, statuses and body bytes. Progress goes to stderr once a second; the JSON
summary to stdout. Exit status: 0 ok, 1 run failed, 2 bad flags.";

fn ladder_after_help() -> String {
    let quick = Profile::Quick;
    format!(
        "Starts its own origin-sim, gateways and (when redis-server is on PATH) a redis-server on free 127.0.0.1 ports,
as child processes killed by PID at the end, on error and on ctrl-c. Without redis-server the fleet rows are
skipped (and listed as skipped). Rungs, in order: {}. Profiles: full (every rung, about 15 minutes,
writes docs/results/RESULTS.md) and quick (rungs {}, rows {}, {} runs, about a minute, writes
target/ladder-quick/QUICK.md); --rungs, --rows, --duration and --out override the profile. The headline table
goes to stdout, progress to stderr. A run that fails is listed in the report. Exit status: 0 ok, 1 a run
failed, 2 bad flags.",
        rung_names().join(", "),
        quick.rungs().join(","),
        quick.rows().join(","),
        humantime::format_duration(quick.duration())
    )
}

/// Flags of `stampede-bench load`: the load itself (the first six are the
/// interface contract), where the origin is, where the summary goes.
#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    load: LoadConfig,
    /// origin-sim base URL whose /stats/queries gives the origin section ("none" to skip).
    #[arg(long, value_name = "URL", default_value = DEFAULT_ORIGIN)]
    origin: String,
    /// Also write the JSON summary to FILE.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Flags of `stampede-bench ladder`.
#[derive(Debug, Args)]
struct LadderArgs {
    /// What to run: full (every rung, the committed results) or quick (the headline, about a minute).
    #[arg(long, value_enum, default_value = "full")]
    profile: Profile,
    /// Output directory for the report, its JSON and the PNG charts [default: docs/results; quick: target/ladder-quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Load duration of each protocol run [default: 20s; quick: 10s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Directory holding the origin-sim and gateway binaries (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Rungs to run ("all" or a comma list) [default: the profile's].
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(with_all(rung_names())))]
    rungs: Vec<String>,
    /// Rows of the before/after table ("all" or a comma list) [default: the profile's].
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(with_all(TABLE_ROWS.map(|r| r.0).into())))]
    rows: Vec<String>,
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

/// Flags of `stampede-bench soak`.
#[derive(Debug, Args)]
struct SoakArgs {
    #[command(flatten)]
    soak: SoakConfig,
    /// Directory holding the origin-sim and gateway binaries (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON report here (docs/results/soak.json feeds scripts/reliability.py).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Flags of `stampede-bench campaign`.
#[derive(Debug, Args)]
struct CampaignArgs {
    #[command(subcommand)]
    cmd: Option<CampaignCmd>,
    /// Seed of the workload and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// short (~45 s, CI) or long (10 min, every fault kind at least 20 times).
    #[arg(long, value_enum, default_value = "short")]
    profile: campaign::Profile,
    /// How long faults are injected [default: the profile's; long: 10m, short: 45s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Gateways sharing the Redis.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=8))]
    gateways: u16,
    /// Directory holding the origin-sim and gateway binaries (default: this executable's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON summary here.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The recorded history (JSON lines).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/campaign/history.jsonl"
    )]
    history: PathBuf,
    /// origin-sim's /stats/queries at the end of the run.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/campaign/queries.json"
    )]
    queries: PathBuf,
    /// After the run, write the campaign section of this file (docs/RELIABILITY.md) from the summary
    /// (needs --output: the section names the JSON it was rendered from).
    #[arg(long, value_name = "FILE", requires = "output")]
    render_reliability: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum CampaignCmd {
    /// Re-check a saved run: the history and origin-sim's query log.
    Check {
        #[arg(long, value_name = "FILE.jsonl")]
        history: PathBuf,
        #[arg(long, value_name = "FILE.json")]
        queries: PathBuf,
        /// Also write the JSON summary here.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Violations listed per invariant (all are counted).
        #[arg(long, default_value_t = 20)]
        max_examples: usize,
    },
    /// Write the campaign section of a markdown file from a saved JSON summary.
    Render {
        /// The JSON summary (`campaign --output`).
        #[arg(long, value_name = "FILE.json")]
        report: PathBuf,
        /// The file whose section between the campaign markers is replaced (appended if missing).
        #[arg(long, value_name = "FILE", default_value = "docs/RELIABILITY.md")]
        reliability: PathBuf,
    },
}

fn with_all(names: Vec<&'static str>) -> Vec<&'static str> {
    std::iter::once("all").chain(names).collect()
}

/// `given`, with `all` expanded to every name, or `default` when nothing was given.
fn chosen(given: Vec<String>, all: Vec<String>, default: Vec<String>) -> Vec<String> {
    match given {
        g if g.is_empty() => default,
        g if g.iter().any(|x| x == "all") => all,
        g => all.into_iter().filter(|a| g.contains(a)).collect(),
    }
}

/// `error: …` on stderr and `code`.
fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(code)
}

/// Print `value` as JSON to stdout and, if asked, to `file`.
fn emit(value: &impl Serialize, file: Option<&Path>) -> Result<(), ExitCode> {
    let json = serde_json::to_string_pretty(value).map_err(|e| fail(1, e))?;
    println!("{json}");
    match file.map(|f| std::fs::write(f, format!("{json}\n")).map_err(|e| (f, e))) {
        Some(Err((f, e))) => Err(fail(1, format!("cannot write {}: {e}", f.display()))),
        _ => Ok(()),
    }
}

/// Run `fut`; on ctrl-c or SIGTERM drop it (its guards kill the processes it
/// started) and exit 130 / 143.
async fn until_signal<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| fail(1, format!("cannot watch SIGTERM: {e}")))?;
    let (code, how) = tokio::select! {
        r = fut => return Ok(r),
        _ = tokio::signal::ctrl_c() => (130, "interrupted"),
        _ = sigterm.recv() => (143, "terminated"),
    };
    eprintln!("stampede-bench {what}: {how}; stopped the processes it started");
    Err(ExitCode::from(code))
}

/// `--bin-dir` if given, else the directory of this executable (where cargo
/// puts the gateway and origin-sim binaries next to it).
fn bin_dir(given: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    let exe_dir = || Some(std::env::current_exe().ok()?.parent()?.to_path_buf());
    given
        .or_else(exe_dir)
        .ok_or_else(|| fail(2, "cannot tell this executable's directory: pass --bin-dir"))
}

async fn load(args: LoadArgs) -> Result<(), ExitCode> {
    let origin = Some(args.origin.trim()).filter(|o| !["", "none"].contains(o));
    let cfg = LoadConfig {
        origin: origin.map(String::from),
        ..args.load
    };
    cfg.validate().map_err(|e| fail(2, e))?;
    let summary = run_load(&cfg, !args.quiet).await.map_err(|e| fail(1, e))?;
    emit(&summary, args.output.as_deref())
}

async fn ladder(args: LadderArgs) -> Result<(), ExitCode> {
    let profile = args.profile;
    // The command line as typed, paths shown relative to the repository.
    let shown = std::env::args().map(|a| {
        if a.starts_with('/') {
            display_path(Path::new(&a))
        } else {
            a
        }
    });
    let o = LadderOptions {
        out: args.out.unwrap_or_else(|| profile.out_dir().into()),
        duration: args.duration.unwrap_or(profile.duration()),
        ttl: args.ttl,
        bin_dir: bin_dir(args.bin_dir)?,
        rungs: chosen(args.rungs, Profile::Full.rungs(), profile.rungs()),
        rows: chosen(args.rows, Profile::Full.rows(), profile.rows()),
        instances: usize::from(args.instances),
        charts: !args.no_charts,
        command: shlex::try_join(shown.collect::<Vec<_>>().iter().map(String::as_str))
            .unwrap_or_default(),
        ..LadderOptions::of(profile)
    };
    let res = until_signal("ladder", run_ladder(o))
        .await?
        .map_err(|e| fail(1, e))?;
    for f in &res.failed {
        eprintln!("error: {} failed: {}", f.what, f.why);
    }
    if res.failed.is_empty() {
        Ok(())
    } else {
        Err(ExitCode::FAILURE)
    }
}

async fn soak(args: SoakArgs) -> Result<(), ExitCode> {
    if !(0.0..=1.0).contains(&args.soak.hot_fraction) || args.soak.concurrency == 0 {
        return Err(fail(
            2,
            "--hot-fraction must be within 0..=1, --concurrency above 0",
        ));
    }
    let work_dir = std::env::temp_dir().join(format!("stampede-soak-{}", std::process::id()));
    let cfg = SoakConfig {
        bin_dir: bin_dir(args.bin_dir)?,
        work_dir,
        progress: true,
        ..args.soak
    };
    let report = until_signal("soak", run_soak(&cfg))
        .await?
        .map_err(|e| fail(1, e))?;
    emit(&report, args.output.as_deref())?;
    for f in &report.failures {
        eprintln!("soak: FAILED: {f}");
    }
    if report.failures.is_empty() {
        eprintln!("soak: all checks passed");
        return Ok(());
    }
    Err(ExitCode::FAILURE)
}

/// The command line as typed, absolute paths shown relative to the repository.
fn command_line() -> String {
    let shown = std::env::args().map(|a| {
        if a.starts_with('/') {
            display_path(Path::new(&a))
        } else {
            a
        }
    });
    let shown: Vec<String> = shown.collect();
    let mut line = shlex::try_join(shown.iter().map(String::as_str)).unwrap_or_default();
    // As run from a build: the binary's path is shown by its name.
    if let Some(rest) = line.split_once(' ').map(|x| x.1.to_string()) {
        line = format!("stampede-bench {rest}");
    }
    line
}

/// 0 with no violation, 3 with violations.
fn verdict(r: &campaign::report::Report) -> Result<(), ExitCode> {
    eprintln!(
        "campaign: {} violations ({})",
        r.total_violations,
        r.violations
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.total_violations == 0 {
        Ok(())
    } else {
        Err(ExitCode::from(3))
    }
}

async fn campaign_cmd(args: CampaignArgs) -> Result<(), ExitCode> {
    match args.cmd {
        Some(CampaignCmd::Check {
            history,
            queries,
            output,
            max_examples,
        }) => {
            let cfg = campaign::checker::CheckConfig {
                max_examples,
                ..Default::default()
            };
            let r = campaign::check_files(&history, &queries, &cfg).map_err(|e| fail(1, e))?;
            emit(&r, output.as_deref())?;
            return verdict(&r);
        }
        Some(CampaignCmd::Render {
            report,
            reliability,
        }) => {
            let r = campaign::report::Report::read(&report).map_err(|e| fail(1, e))?;
            campaign::report::render_into(&reliability, &r, &display_path(&report))
                .map_err(|e| fail(1, e))?;
            eprintln!("wrote the campaign section of {}", reliability.display());
            return Ok(());
        }
        None => {}
    }
    let work_dir = args
        .history
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut cfg = CampaignConfig::new(args.profile, args.seed, bin_dir(args.bin_dir)?, work_dir);
    cfg.duration = args.duration.unwrap_or(args.profile.duration());
    cfg.gateways = usize::from(args.gateways);
    cfg.history = args.history;
    cfg.queries = args.queries;
    cfg.progress = !args.quiet;
    cfg.command = command_line();
    let out = until_signal("campaign", campaign::run_campaign(&cfg))
        .await?
        .map_err(|e| fail(1, e))?;
    emit(&out.report, args.output.as_deref())?;
    if let (Some(doc), Some(json)) = (&args.render_reliability, &args.output) {
        campaign::report::render_into(doc, &out.report, &display_path(json))
            .map_err(|e| fail(1, e))?;
        eprintln!("wrote the campaign section of {}", doc.display());
    }
    verdict(&out.report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env();
    let filter = filter.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let done = match Cli::parse() {
        Cli::Load(args) => load(*args).await,
        Cli::Ladder(args) => ladder(args).await,
        Cli::Soak(args) => soak(args).await,
        Cli::Campaign(args) => campaign_cmd(args).await,
    };
    done.err().unwrap_or(ExitCode::SUCCESS)
}
