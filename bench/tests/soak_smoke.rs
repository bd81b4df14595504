//! A short soak in CI: one gateway (debug build) under hot-key load over a
//! wide key space with a small store; memory stays bounded by the store
//! limits and no fd or task leaks once the load stops. The full soak is
//! `stampede-bench soak --duration 10m` (see docs/RELIABILITY.md).

use stampede_bench::soak::{SoakConfig, run_soak};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_stays_bounded_and_leaks_nothing() {
    let exe = std::env::current_exe().unwrap();
    let bin_dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // target/debug
    let report = run_soak(&SoakConfig {
        duration: Duration::from_secs(15),
        concurrency: 20,
        keys: 50_000,
        hot_fraction: 0.9,
        max_entries: 2_000,
        max_bytes: 4 * 1024 * 1024,
        bin_dir,
        work_dir: std::env::temp_dir().join(format!("soak-smoke-{}", std::process::id())),
        progress: false,
    })
    .await
    .expect(
        "soak ran (are the gateway and origin-sim binaries built? cargo build --workspace --bins)",
    );
    assert!(
        report.failures.is_empty(),
        "{:#?}\n{:#?}",
        report.failures,
        report.samples
    );
    let entries = report.figures["max_store_entries_seen"].as_f64().unwrap();
    assert!(
        entries > 0.0,
        "the store was never filled: {:#?}",
        report.samples
    );
    assert!(entries <= 2_000.0 * 1.1 + 10.0);
    assert!(report.samples.len() >= 5);
}
