//! A short ladder with real processes: origin-sim, 3 gateways and a real
//! redis-server (a missing redis-server fails loudly; it is never a skip).
//! Rows naive, +single-flight (3 instances) and +lock, TTL 1 s, 5 s each;
//! asserts naive ≫ single-flight fleet ≈ instances ≥ lock = 1.
//!
//! Binaries: the debug `origin-sim` and `gateway` next to this test's
//! `target/debug/deps/..` (`cargo test --workspace` builds them).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/ladder_smoke-HASH → target/debug
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

#[test]
fn ladder_orders_naive_single_flight_lock() {
    assert!(
        stampede_bench::procs::which("redis-server").is_some(),
        "redis-server is not on PATH: install it (Debian: apt-get install redis-server); this test needs a real Redis"
    );
    let bins = bin_dir();
    let out = std::env::temp_dir().join(format!("ladder-smoke-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_stampede-bench"))
        .args([
            "ladder",
            "--rungs",
            "table",
            "--rows",
            "naive,single-flight,lock",
        ])
        .args(["--ttl", "1s", "--duration", "5s", "--no-charts"])
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run stampede-bench ladder");
    assert!(status.success(), "ladder failed: {status}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("valid JSON");
    assert!(
        std::fs::read_to_string(out.join("RESULTS.md"))
            .expect("RESULTS.md")
            .contains("Before/after")
    );
    let row = |id: &str| -> (f64, u64, u64, u64) {
        let run = json["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no run {id}"));
        let (s, b) = (&run["summary"], &run["summary"]["origin"]["hot_bursts"]);
        (
            b["mean_per_boundary"].as_f64().unwrap(),
            b["max_per_boundary"].as_u64().unwrap(),
            b["boundaries"].as_u64().unwrap(),
            s["failed_requests"].as_u64().unwrap(),
        )
    };
    let naive = row("table-naive");
    let sf = row("table-single-flight");
    let lock = row("table-lock");
    eprintln!("naive {naive:?}, single-flight {sf:?}, lock {lock:?}");
    for (name, r) in [("naive", naive), ("single-flight", sf), ("lock", lock)] {
        assert!(r.2 >= 3, "{name}: too few TTL boundaries seen: {r:?}");
        assert_eq!(r.3, 0, "{name}: errors");
    }
    // Single-flight alone: about one rebuild per instance per boundary (3).
    assert!(
        (2.0..=4.5).contains(&sf.0) && sf.1 <= 6,
        "single-flight on 3 instances: {sf:?}"
    );
    // The lock: one rebuild per boundary fleet-wide.
    assert!(lock.0 <= 1.2 && lock.1 <= 2, "lock: {lock:?}");
    // Naive: a herd, far above the per-instance bound.
    assert!(
        naive.0 >= 3.0 * sf.0 && naive.1 >= 10,
        "naive {naive:?} vs single-flight {sf:?}"
    );
    let _ = std::fs::remove_dir_all(out);
}
