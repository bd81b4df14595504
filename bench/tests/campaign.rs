//! The fault campaign's CI smoke: the short profile (every fault kind once,
//! about a minute) with a fixed seed against the workspace's debug binaries
//! (`cargo build --workspace --bins`; scripts/test.sh builds them before
//! `cargo test`), a real redis-server, origin-sim and three gateways.
//! Asserts the campaign injected every fault kind, recorded its history and
//! that the checker reported every invariant — re-checking the saved files
//! gives the same verdict — and renders the RELIABILITY.md section.

use std::path::PathBuf;

use stampede_bench::campaign::history::FaultKind;
use stampede_bench::campaign::{self, CampaignConfig, Profile};

/// The campaign must find no violation: fencing holds on cold and warm keys,
/// every fill holds a lease drawn before it asks the origin (issue #19).
const EXPECT_ZERO_VIOLATIONS: bool = true;

/// The campaign's seed in CI.
const SEED: u64 = 42;

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/campaign-HASH → target/debug
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    for b in ["origin-sim", "gateway"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins; scripts/test.sh does)",
            dir.join(b).display()
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_campaign_injects_every_fault_and_checks_every_invariant() {
    assert!(
        stampede_bench::procs::which("redis-server").is_some(),
        "redis-server is not on PATH: install it (Debian: apt-get install redis-server); the campaign needs a real Redis"
    );
    let work = std::env::temp_dir().join(format!("campaign-smoke-{}", std::process::id()));
    let mut cfg = CampaignConfig::new(Profile::Short, SEED, bin_dir(), work.clone());
    cfg.progress = false;
    cfg.command = format!("cargo test -p stampede-bench --test campaign (seed {SEED})");
    let out = campaign::run_campaign(&cfg)
        .await
        .expect("the campaign ran");
    let r = &out.report;
    eprintln!(
        "campaign seed {SEED}: violations {:?}, faults {:?}, operations {:?}, takeovers {:?}, max staleness {:?}",
        r.violations,
        r.check.faults,
        r.check.operations,
        r.check.takeovers,
        r.check.max_staleness_ms
    );
    for v in r
        .check
        .invariants
        .values()
        .flat_map(|i| i.examples.iter().take(1))
    {
        eprintln!("  ({}) {} — lines {:?}", v.invariant, v.what, v.lines);
    }

    // Every fault kind ran.
    for kind in FaultKind::ALL {
        let n = r.check.faults.get(kind.name()).copied().unwrap_or(0);
        assert!(
            n >= 1,
            "fault {} never ran: {:?}",
            kind.name(),
            r.check.faults
        );
    }
    // The workload ran through every gateway and every kind of operation.
    for kind in ["read", "update", "update-direct", "purge"] {
        let c = &r.check.operations[kind];
        assert!(c.total > 0 && c.ok > 0, "{kind}: {c:?}");
    }
    assert!(r.check.operations["read"].hits > 0, "no cache hit at all");
    assert!(r.check.origin_queries > 0);
    assert_eq!(r.seed, SEED);
    // The checker reported every invariant.
    let ids: Vec<&str> = r.check.invariants.keys().map(String::as_str).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(
        r.check.max_staleness_ms.len(),
        3,
        "one staleness figure per gateway"
    );
    for inv in r.check.invariants.values() {
        assert!(!inv.description.is_empty());
        assert!(inv.examples.len() <= inv.violations);
    }
    // A pure function of the saved files: re-checking gives the same result.
    let again =
        campaign::check_files(&out.history, &out.queries, &Default::default()).expect("re-check");
    assert_eq!(again.check, r.check);

    // The RELIABILITY.md section renders from the report.
    let doc = work.join("RELIABILITY.md");
    std::fs::write(&doc, "# Reliability\n").unwrap();
    campaign::report::render_into(&doc, r, "campaign.json").unwrap();
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(text.contains(campaign::report::START) && text.contains(campaign::report::END));
    assert!(text.contains(&format!("Seed **{SEED}**")), "{text}");

    if EXPECT_ZERO_VIOLATIONS {
        assert_eq!(
            r.total_violations, 0,
            "the campaign found violations: {:#?}",
            r.check.invariants
        );
    }
    let _ = std::fs::remove_dir_all(work);
}
