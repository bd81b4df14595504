//! The ladder: every rung of the mitigation ladder under the measurement
//! protocol's load, written up as a report with charts.
//!
//! - [`table`] is the table of experiments: every section of the report and
//!   every run behind it, as data. Plan, runner and report all read it.
//! - [`runner`] is the one run procedure: a fresh origin-sim, gateways (with
//!   a shared redis-server for the fleet rows) or peers on free loopback
//!   ports, the load, the measurements; children are killed by PID on drop.
//! - [`report`] renders `RESULTS.md` (or `QUICK.md`) and draws the charts.
//! - [`record`] holds what comes out (`results.json`); [`peers`] the nginx
//!   and Varnish configurations.
//!
//! Two profiles: `full` runs every rung (about 11 minutes on 2 cores) and
//! writes `docs/results/RESULTS.md`; `quick` runs the headline rows of the
//! before/after table with shorter runs (about a minute of load) and writes
//! `target/ladder-quick/QUICK.md`. Both print the headline table to stdout.

pub mod peers;
pub mod record;
pub mod report;
pub mod runner;
pub mod table;

use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

pub use record::{LadderOptions, Profile, Results};
use record::{Machine, Skipped};
use runner::Runner;
use table::RunSpec;

use crate::procs::{RedisProc, display_path, which};

/// Run the ladder and write its outputs. The caller wires ctrl-c to dropping
/// this future (every child is killed by its guard).
pub async fn run_ladder(o: LadderOptions) -> anyhow::Result<Results> {
    let generated_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let start = Instant::now();
    for bin in ["origin-sim", "gateway"].map(|b| o.bin_dir.join(b)) {
        if !bin.is_file() {
            bail!(
                "missing {} — build it: cargo build --release --workspace (or pass --bin-dir DIR)",
                display_path(&bin)
            );
        }
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("create {}", o.out.display()))?;
    let work = std::env::temp_dir().join(format!("stampede-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "stampede-bench ladder ({:?} profile): binaries from {}, logs in {}, output to {}",
        o.profile,
        display_path(&o.bin_dir),
        display_path(&work),
        display_path(&o.out)
    );

    let sections = table::sections(&o);
    let selected: Vec<&table::Section> = sections
        .iter()
        .filter(|s| o.rungs.iter().any(|r| r == s.rung))
        .collect();
    let plan: Vec<(&str, &RunSpec)> = selected
        .iter()
        .flat_map(|s| report::dedup(s.rows()).into_iter().map(|r| (s.rung, r)))
        .fold(Vec::new(), |mut v, (rung, r)| {
            if !v.iter().any(|(_, x): &(&str, &RunSpec)| x.id == r.id) {
                v.push((rung, r));
            }
            v
        });
    let (redis, redis_desc) = match which("redis-server") {
        Some(p) if plan.iter().any(|(_, r)| r.needs_redis()) => {
            let version = std::process::Command::new(&p).arg("--version").output();
            let r = RedisProc::start(&p, &work).await?;
            eprintln!("redis-server started on port {}", r.port());
            (
                Some(r),
                version
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default(),
            )
        }
        Some(_) => (None, "not needed by the selected rungs".to_string()),
        None => (None, "not installed".to_string()),
    };
    let machine = Machine::current(&o.bin_dir, &redis_desc);
    let mut runner = Runner::new(o.clone(), redis, work.clone());

    // Skipped runs are reported per section and reason.
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut todo = Vec::new();
    for (rung, spec) in plan {
        match runner.missing(spec) {
            None => todo.push((rung, spec)),
            Some(why) => match skipped
                .iter_mut()
                .find(|s| s.why == why && s.what.starts_with(rung))
            {
                Some(s) => s.what += &format!(", {}", spec.label),
                None => skipped.push(Skipped {
                    what: format!("{rung}: {}", spec.label),
                    why,
                }),
            },
        }
    }
    for s in &skipped {
        eprintln!("skipped: {} — {}", s.what, s.why);
    }
    runner.total = todo.len();
    let (mut runs, mut failed) = (Vec::new(), Vec::new());
    for (rung, spec) in todo {
        match runner.run(rung, spec).await {
            Ok(run) => runs.push(run),
            Err(e) => {
                eprintln!("error: {rung}: {}: {e:#}", spec.label);
                failed.push(Skipped {
                    what: format!("{rung}: {}", spec.label),
                    why: format!("{e:#}"),
                });
            }
        }
    }
    drop(runner);

    let mut results = Results {
        generated_at,
        elapsed_s: 0.0,
        options: o.clone(),
        machine,
        protocol: table::protocol(&o),
        plan: selected
            .iter()
            .map(|s| {
                (
                    s.rung.to_string(),
                    s.rows().map(|r| (r.label.clone(), r.id.clone())).collect(),
                )
            })
            .collect(),
        runs,
        skipped,
        failed,
        overview_chart: None,
    };
    if o.charts {
        results.overview_chart = report::overview(&o.out, &results);
    }
    results.elapsed_s = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let json = serde_json::to_string_pretty(&results)?;
    let (report_file, json_file) = o.files();
    std::fs::write(o.out.join(json_file), format!("{json}\n"))?;
    std::fs::write(o.out.join(report_file), report::render(&results, &sections))?;
    let _ = std::fs::remove_dir_all(&work);
    if let Some(h) = report::headline(&results, &sections) {
        println!("{h}");
    }
    eprintln!(
        "stampede-bench ladder: done in {:.0} s; wrote {}, {} and {} chart(s)",
        results.elapsed_s,
        display_path(&o.out.join(report_file)),
        json_file,
        results.runs.iter().filter(|r| r.chart.is_some()).count()
    );
    Ok(results)
}
