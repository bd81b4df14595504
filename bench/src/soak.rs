//! `stampede-bench soak`: a bounded soak of one gateway (in-process store
//! with small limits) under high hot-key load plus a wide key space, sampling
//! the gateway process: resident memory, open file descriptors, threads,
//! alive tokio tasks and store entries. Checks that memory stays bounded by
//! the configured store limits and that nothing leaks once the load stops.
//!
//! The full soak (`--duration 10m`) is run by hand; the test suite runs a
//! short one (`bench/tests/soak_smoke.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::ladder::runner::Launcher;
use crate::ladder::table::{OriginSpec, RunSpec};
use crate::load::{LoadConfig, run_load};
use crate::procs::{Http, metric_sum, proc_field};

/// Soak settings (the `soak` subcommand's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct SoakConfig {
    /// How long the load runs (the full soak is 10m; CI runs a short one).
    #[arg(long, default_value = "10m", value_parser = crate::load::parse_duration)]
    pub duration: Duration,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Distinct keys (the wide key space).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Share of requests to the hot key (0..=1).
    #[arg(long, default_value_t = 0.9)]
    pub hot_fraction: f64,
    /// The gateway's in-process store bound: entries.
    #[arg(long, default_value_t = 20_000)]
    pub max_entries: u64,
    /// The gateway's in-process store bound: bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_bytes: u64,
    /// Directory with the `gateway` and `origin-sim` binaries.
    #[arg(skip)]
    pub bin_dir: PathBuf,
    /// Where the child logs go.
    #[arg(skip)]
    pub work_dir: PathBuf,
    /// Print progress.
    #[arg(skip)]
    pub progress: bool,
}

/// One sample of the gateway process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Alive tokio tasks (`gateway_runtime_alive_tasks`).
    pub tasks: f64,
    /// Store entries (`stampede_store_entries`).
    pub entries: f64,
}

/// The soak's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    /// The command line equivalent.
    pub command: String,
    /// Headline figures.
    pub figures: serde_json::Map<String, serde_json::Value>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Failed checks (empty: passed).
    pub failures: Vec<String>,
}

/// Resident set (MiB) and threads of process `pid`.
fn proc_status(pid: u32) -> anyhow::Result<(f64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let number = |key| {
        proc_field(&status, key)
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (rss_kb, threads) = (
        number("VmRSS:").unwrap_or(0),
        number("Threads:").unwrap_or(0),
    );
    Ok((rss_kb as f64 / 1024.0, threads))
}

fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

async fn sample(http: &Http, pid: u32, admin: &str, t0: Instant) -> anyhow::Result<Sample> {
    let (rss_mib, threads) = proc_status(pid)?;
    let text = http.get_ok(&format!("{admin}/metrics")).await?;
    let text = String::from_utf8_lossy(&text);
    Ok(Sample {
        t_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        rss_mib: (rss_mib * 10.0).round() / 10.0,
        fds: fd_count(pid),
        threads,
        tasks: metric_sum(&text, "gateway_runtime_alive_tasks", &[]),
        entries: metric_sum(&text, "stampede_store_entries", &[]),
    })
}

/// Run the soak.
pub async fn run_soak(cfg: &SoakConfig) -> anyhow::Result<SoakReport> {
    let launcher = Launcher::new(cfg.bin_dir.clone(), cfg.work_dir.clone())?;
    let http = launcher.http.clone();
    let load_cfg = LoadConfig {
        concurrency: cfg.concurrency,
        duration: cfg.duration,
        hot_fraction: cfg.hot_fraction,
        keys: cfg.keys,
        origin: None,
        timeout: Duration::from_secs(5),
        ..LoadConfig::default()
    };
    let (entries, bytes) = (cfg.max_entries.to_string(), cfg.max_bytes.to_string());
    let limits = [
        "--memory-max-entries",
        &entries,
        "--memory-max-bytes",
        &bytes,
    ];
    let mut spec =
        RunSpec::gateway("soak", "soak", "all", Duration::from_secs(2), &load_cfg).flags(&limits);
    let flags = vec!["--stats-capacity".into(), "100000".into()];
    spec.origin = OriginSpec {
        items: cfg.keys,
        latency_ms: 2,
        db_connections: 32,
        flags,
    };
    let mut stack = launcher.start(&spec, None).await?;
    let (pid, admin) = (
        stack.fronts[0].proc_.pid(),
        stack.fronts[0].admin.clone().unwrap_or_default(),
    );
    let t0 = Instant::now();
    let mut samples = vec![sample(&http, pid, &admin, t0).await?];

    let load_cfg = LoadConfig {
        targets: stack.targets(),
        ..load_cfg
    };
    let load = tokio::spawn(async move { run_load(&load_cfg, false).await });
    let every = (cfg.duration / 30).clamp(Duration::from_secs(1), Duration::from_secs(20));
    while !load.is_finished() {
        tokio::time::sleep(every).await;
        stack.check_alive()?;
        let s = sample(&http, pid, &admin, t0).await?;
        if cfg.progress {
            eprintln!(
                "soak {:>6.1}s  rss {:>7.1} MiB  fds {:>4}  threads {:>3}  tasks {:>5}  entries {:>7}",
                s.t_s, s.rss_mib, s.fds, s.threads, s.tasks, s.entries
            );
        }
        samples.push(s);
    }
    let summary = load.await.context("load task")??;
    // Idle: connections close, tasks end.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = sample(&http, pid, &admin, t0).await?;
    samples.push(idle.clone());
    stack.check_alive()?;

    let loaded: Vec<&Sample> = samples[1..samples.len() - 1].iter().collect();
    // Warm-up: a quarter of the run, and at least 6 s (the gateway's gauges
    // refresh every second; the first samples may predate the load).
    let warm_from = (cfg.duration.as_secs_f64() / 4.0).max(6.0);
    let warm = loaded
        .iter()
        .copied()
        .find(|s| s.t_s >= warm_from)
        .or_else(|| loaded.last().copied())
        .unwrap_or(&samples[0]);
    let peak_rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let late: Vec<&&Sample> = loaded.iter().skip(loaded.len() / 2).collect();
    let late_max = late.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let max_entries = samples.iter().map(|s| s.entries).fold(0.0, f64::max);
    let budget_mib = cfg.max_bytes as f64 / 1024.0 / 1024.0;

    let base = &samples[0];
    // Leaks grow with the number of requests served; pooled keep-alive
    // connections (and their tasks) do not. So: fds and tasks at the end of
    // the load may not exceed their level after warm-up by more than a small
    // allowance, and at idle they may not exceed what the load needed.
    let last = loaded.last().copied().unwrap_or(warm);
    let (max_fds, max_tasks) = loaded
        .iter()
        .fold((0u64, 0f64), |(f, t), s| (f.max(s.fds), t.max(s.tasks)));
    // Memory: the store is bounded, so the resident set may grow by at most
    // the store budget (plus a fixed allowance for buffers) over the
    // baseline, and must not keep growing in the second half of the run.
    // Tasks under load include per-request ones (refreshes, rebuilds), so
    // they swing; a leak is growth well past that swing.
    let allowance = budget_mib * 3.0 + 64.0;
    let (base_rss, warm_rss, bound) = (base.rss_mib, warm.rss_mib, cfg.max_entries);
    let (late_bound, entries_bound) = (warm_rss * 1.5 + 32.0, bound as f64 * 1.1 + 10.0);
    let (last_fds, warm_fds, last_tasks, warm_tasks) = (last.fds, warm.fds, last.tasks, warm.tasks);
    let (idle_fds, idle_tasks) = (idle.fds, idle.tasks);
    let mut failures = Vec::new();
    let mut check = |failed: bool, why: String| failures.extend(failed.then_some(why));
    check(
        peak_rss > base_rss + allowance,
        format!(
            "rss peaked at {peak_rss:.1} MiB: more than baseline {base_rss:.1} + {allowance:.1} MiB"
        ),
    );
    check(
        late_max > late_bound,
        format!("rss kept growing: {late_max:.1} MiB late vs {warm_rss:.1} MiB after warm-up"),
    );
    check(
        max_entries > entries_bound,
        format!("store held {max_entries} entries, over its bound of {bound}"),
    );
    check(
        last_fds > warm_fds + 16,
        format!("fd leak: {last_fds} open at the end of the load vs {warm_fds} after warm-up"),
    );
    check(
        last_tasks > warm_tasks * 1.5 + 32.0,
        format!(
            "task leak: {last_tasks} alive at the end of the load vs {warm_tasks} after warm-up"
        ),
    );
    check(
        idle_fds > max_fds.max(base.fds),
        format!("fd leak: {idle_fds} open at idle, more than under load ({max_fds})"),
    );
    check(
        idle_tasks > max_tasks.max(base.tasks),
        format!("task leak: {idle_tasks} alive at idle, more than under load ({max_tasks})"),
    );
    check(summary.requests == 0, "no requests completed".into());

    let figures = serde_json::json!({
        "duration_s": cfg.duration.as_secs_f64(),
        "requests": summary.requests,
        "failed_requests": summary.failed_requests,
        "keys": cfg.keys,
        "store_max_entries": cfg.max_entries,
        "store_max_mib": budget_mib,
        "max_store_entries_seen": max_entries,
        "rss_start_mib": base.rss_mib,
        "rss_after_warmup_mib": warm.rss_mib,
        "rss_peak_mib": peak_rss,
        "rss_idle_mib": idle.rss_mib,
        "fds_start": base.fds,
        "fds_after_warmup": warm.fds,
        "fds_end_of_load": last.fds,
        "fds_idle": idle.fds,
        "tasks_start": base.tasks,
        "tasks_after_warmup": warm.tasks,
        "tasks_end_of_load": last.tasks,
        "tasks_idle": idle.tasks,
        "checks": if failures.is_empty() { "passed" } else { "FAILED" },
    });
    Ok(SoakReport {
        command: format!(
            "stampede-bench soak --duration {} --concurrency {} --keys {} --hot-fraction {} --max-entries {} --max-bytes {}",
            humantime::format_duration(cfg.duration),
            cfg.concurrency,
            cfg.keys,
            cfg.hot_fraction,
            cfg.max_entries,
            cfg.max_bytes
        ),
        figures: figures.as_object().cloned().unwrap_or_default(),
        samples,
        failures,
    })
}
