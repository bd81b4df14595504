//! The real-traffic rung's machinery, briefly: its cold-body row (50
//! clients at once on a 4 MiB body streamed over 1.4 s) run by the ladder's
//! runner against real processes — origin-sim and the gateway before and
//! after, and nginx and Varnish where installed (skipped otherwise) — then
//! rendered by the report. Asserts the recorded figures are there and
//! plausible: every client answered with the full, byte-identical body.
//!
//! Binaries: the debug `origin-sim` and `gateway` next to this test's
//! `target/debug/deps/..` (`cargo test --workspace` builds them).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use stampede_bench::ladder::record::{Machine, Results};
use stampede_bench::ladder::report::render;
use stampede_bench::ladder::runner::{Launcher, Runner};
use stampede_bench::ladder::table::{Front, sections};
use stampede_bench::ladder::{LadderOptions, Profile};

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/real_traffic_smoke-HASH → target/debug
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    for b in ["origin-sim", "gateway"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins; cargo test --workspace builds them)",
            dir.join(b).display()
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_body_row_serves_every_client_every_byte() {
    let bins = bin_dir();
    let work = std::env::temp_dir().join(format!("real-traffic-smoke-{}", std::process::id()));
    let o = LadderOptions {
        bin_dir: bins.clone(),
        out: work.join("out"),
        rungs: vec!["real-traffic".into()],
        duration: Duration::from_secs(4),
        command: "real_traffic_smoke".into(),
        ..LadderOptions::of(Profile::Full)
    };
    let all = sections(&o);
    let section = all
        .iter()
        .find(|s| s.rung == "real-traffic")
        .expect("the rung");
    let specs: Vec<_> = section
        .rows()
        .filter(|r| r.id.starts_with("real-cold-"))
        .collect();
    assert_eq!(specs.len(), 4, "nginx, Varnish, gateway none and all");
    let launcher = Launcher::new(bins.clone(), work.join("logs")).expect("launcher");
    let mut runner = Runner::new(o.clone(), None, launcher);
    runner.total = specs.len();
    let mut runs = Vec::new();
    for spec in specs {
        if let Some(why) = runner.missing(spec) {
            assert!(matches!(spec.front, Front::Peer(_)), "{}: {why}", spec.id);
            eprintln!("skipped {}: {why}", spec.id);
            continue;
        }
        let run = tokio::time::timeout(Duration::from_secs(90), runner.run("real-traffic", spec));
        runs.push(
            run.await
                .expect("bounded")
                .unwrap_or_else(|e| panic!("{}: {e:#}", spec.id)),
        );
    }
    drop(runner);
    let gateways = runs
        .iter()
        .filter(|r| r.id.ends_with("-none") || r.id.ends_with("-all"));
    assert_eq!(
        gateways.count(),
        2,
        "the gateway before and after always run"
    );
    for run in &runs {
        let v = |k: &str| run.measured.values.get(k).cloned().unwrap_or(Value::Null);
        let n = |k: &str| {
            v(k).as_f64()
                .unwrap_or_else(|| panic!("{}: no {k}", run.id))
        };
        let id = &run.id;
        eprintln!(
            "{id}: origin {} served {} errors {} first byte {} ms total {} ms bodies {}",
            v("origin_requests"),
            v("served"),
            v("errors"),
            v("first_byte_max_ms"),
            v("total_max_ms"),
            v("bodies")
        );
        assert_eq!(
            (n("requests"), n("served"), n("errors")),
            (50.0, 50.0, 0.0),
            "{id}: every client answered"
        );
        assert_eq!(
            v("bodies"),
            "yes",
            "{id}: every body full and byte-identical"
        );
        assert!(
            (1.0..=50.0).contains(&n("origin_requests")),
            "{id}: origin requests"
        );
        // The origin's first byte leaves at 0.5 s, its last at 1.4 s.
        let (first, total) = (n("first_byte_max_ms"), n("total_max_ms"));
        assert!(
            (450.0..30_000.0).contains(&first),
            "{id}: first byte {first} ms"
        );
        assert!(total >= first && total >= 1300.0, "{id}: total {total} ms");
        let traffic = v("traffic");
        assert_eq!(
            traffic["bytes"].as_u64(),
            Some(50 * 4 * 1024 * 1024),
            "{id}: bytes received"
        );
    }

    // The report renders the summary table and the row from these runs.
    let machine = Machine::current(&bins, "not needed");
    let results = Results {
        generated_at: "2026-01-01T00:00:00Z".into(),
        elapsed_s: 0.0,
        options: o.clone(),
        machine,
        runs,
        skipped: vec![],
        failed: vec![],
        overview_chart: None,
    };
    let md = render(&results, &all);
    assert!(md.contains("Real traffic"), "{md}");
    let row = md
        .lines()
        .find(|l| l.starts_with("| 50 concurrent clients on a cold 4 MiB object"));
    let row = row.unwrap_or_else(|| panic!("no summary row in\n{md}"));
    assert!(row.contains("| 1 / ≤ 0.55 s |"), "the goal column: {row}");
    assert!(!row.contains("| — |  |"), "{row}");
    let _ = std::fs::remove_dir_all(work);
}
