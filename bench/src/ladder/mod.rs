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
//! - [`real_traffic`] is the real-traffic rung (issue #20): large streamed
//!   bodies, a failing origin, a slow origin, negotiated variants, each
//!   under the same clients for nginx, Varnish and the gateway.
//!
//! Two profiles: `full` runs every rung and writes `docs/results/RESULTS.md`;
//! `quick` runs the headline rows of the before/after table with shorter runs
//! (about a minute of load) and writes `target/ladder-quick/QUICK.md`. Both
//! print the headline table to stdout.

pub mod peers;
pub mod real_traffic;
pub mod record;
pub mod report;
pub mod runner;
pub mod table;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

pub use record::{LadderOptions, Profile, Results};
use record::{Machine, Skipped};
use runner::{Launcher, Runner};

use stampede_layer::testing::RedisServer;

use crate::procs::{display_path, which};

/// Run the ladder and write its outputs. The caller wires ctrl-c to dropping
/// this future (every child is killed by its guard).
pub async fn run_ladder(o: LadderOptions) -> anyhow::Result<Results> {
    let generated_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let start = Instant::now();
    let work = std::env::temp_dir().join(format!("stampede-ladder-{}", std::process::id()));
    let launcher = Launcher::new(o.bin_dir.clone(), work.clone())?;
    std::fs::create_dir_all(&o.out)?;
    let (bins, logs, out) = (
        display_path(&o.bin_dir),
        display_path(&work),
        display_path(&o.out),
    );
    let profile = o.profile;
    eprintln!(
        "stampede-bench ladder ({profile:?} profile): binaries from {bins}, logs in {logs}, output to {out}"
    );

    let sections = table::sections(&o);
    let chosen = sections
        .iter()
        .filter(|s| o.rungs.iter().any(|r| r == s.rung));
    let plan = report::dedup(chosen.clone().flat_map(|s| s.rows()));
    let rung_of = |spec: &table::RunSpec| {
        let has = |s: &&table::Section| s.rows().any(|r| r.id == spec.id);
        chosen.clone().find(has).map_or("", |s| s.rung)
    };
    let (redis, redis_desc) = match which("redis-server") {
        Some(p) if plan.iter().any(|r| r.needs_redis()) => {
            let version = std::process::Command::new(&p).arg("--version").output();
            let r = RedisServer::start();
            eprintln!("redis-server started on port {}", r.port());
            let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            (Some(r), version.unwrap_or_default())
        }
        Some(_) => (None, "not needed by the selected rungs".to_string()),
        None => (None, "not installed".to_string()),
    };
    let machine = Machine::current(&o.bin_dir, &redis_desc);
    let mut runner = Runner::new(o.clone(), redis, launcher);

    // Runs that cannot happen here are reported per rung and reason.
    let mut skipped: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
    let mut todo = Vec::new();
    for spec in plan {
        let rung = rung_of(spec);
        match runner.missing(spec) {
            None => todo.push((rung, spec)),
            Some(why) => skipped.entry((rung, why)).or_default().push(&spec.label),
        }
    }
    let skipped = skipped.into_iter().map(|((rung, why), labels)| {
        let what = format!("{rung}: {}", labels.join(", "));
        Skipped { what, why }
    });
    let skipped: Vec<Skipped> = skipped.collect();
    for s in &skipped {
        eprintln!("skipped: {} — {}", s.what, s.why);
    }
    runner.total = todo.len();
    let (mut runs, mut failed) = (Vec::new(), Vec::new());
    for (rung, spec) in todo {
        match runner.run(rung, spec).await {
            Ok(run) => runs.push(run),
            Err(e) => {
                let (what, why) = (format!("{rung}: {}", spec.label), format!("{e:#}"));
                eprintln!("error: {what}: {why}");
                failed.push(Skipped { what, why });
            }
        }
    }
    drop(runner);

    let mut results = Results {
        generated_at,
        elapsed_s: 0.0,
        options: o.clone(),
        machine,
        runs,
        skipped,
        failed,
        overview_chart: None,
    };
    if o.charts {
        results.overview_chart = report::overview(&o.out, &results);
    }
    results.elapsed_s = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let (report_file, json_file) = o.files();
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(o.out.join(json_file), format!("{json}\n"))?;
    std::fs::write(o.out.join(report_file), report::render(&results, &sections))?;
    let _ = std::fs::remove_dir_all(&work);
    if let Some(h) = report::headline(&results, &sections) {
        println!("{h}");
    }
    let charts = results.runs.iter().filter(|r| r.chart.is_some()).count();
    let (elapsed, report) = (results.elapsed_s, display_path(&o.out.join(report_file)));
    eprintln!(
        "stampede-bench ladder: done in {elapsed:.0} s; wrote {report}, {json_file} and {charts} chart(s)"
    );
    Ok(results)
}
