//! `stampede-bench` command line: `load` (drive load, print a JSON summary)
//! and `ladder` (not built yet).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stampede_bench::load::{DEFAULT_ORIGIN, LoadConfig, parse_base_url, run_load};

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
    /// Run every rung of the mitigation ladder under identical load (not built yet).
    Ladder,
}

const LOAD_AFTER_HELP: &str = "\
Each request goes to {path-prefix}{hot-key} with probability --hot-fraction, else to a key uniform in 1..=--keys.
Latency is first send to final answer (retries included). Responses are classified by the gateway's
RFC 9211 Cache-Status header (hit, stale hit = hit with ttl<0, miss = fwd=..., collapsed; no header = unknown).
After the load, GET {origin}/stats/queries gives origin queries in the load window, the most in any second,
and hot-key queries per TTL boundary. Progress goes to stderr once a second; the JSON summary to stdout.
Exit status: 0 ok, 1 run failed, 2 bad flags.";

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
    /// The gateway's TTL: hot-key origin queries separated by more than min(ttl/2, 1s) form separate TTL boundaries (500ms gap when unset).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Back-off before each retry (plus up to 20% jitter).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    backoff: Duration,
    /// RNG seed for key choice and jitter (worker i uses seed+i); random when unset.
    #[arg(long)]
    seed: Option<u64>,
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
        Command::Ladder => {
            eprintln!("stampede-bench ladder: not built yet");
            ExitCode::FAILURE
        }
    }
}
