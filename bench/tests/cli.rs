//! The `stampede-bench` binary: exit codes and the JSON it prints.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stampede-bench"))
        .args(args)
        .output()
        .expect("run stampede-bench")
}

#[test]
fn bad_flags_exit_2_with_one_error_line() {
    for args in [
        &["load", "--target", "ftp://x:1"][..],
        &["load", "--target", "http://a:1,nonsense"],
        &["load", "--duration", "5 parsecs"],
        &["load", "--hot-fraction", "2"],
        &["load", "--concurrency", "0"],
        &["load", "--path-prefix", "items/"],
        &["load", "--no-such-flag"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn ladder_bad_flags_and_missing_binaries() {
    for args in [
        &["ladder", "--rungs", "nonsense"][..],
        &["ladder", "--rows", "naive,bogus"],
        &["ladder", "--duration", "forever"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let empty = std::env::temp_dir().join(format!("no-bins-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = bench(&[
        "ladder",
        "--bin-dir",
        empty.to_str().unwrap(),
        "--out",
        empty.join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo build --release --workspace"), "{err}");
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn load_prints_json_and_writes_output() {
    // Nothing listens on the target: every request is a connect error, which
    // still yields a complete summary.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let file = std::env::temp_dir().join(format!("stampede-bench-cli-{}.json", std::process::id()));
    let out = bench(&[
        "load",
        "--target",
        &dead,
        "--concurrency",
        "2",
        "--duration",
        "300ms",
        "--origin",
        "none",
        "--quiet",
        "--seed",
        "3",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    std::fs::remove_file(&file).ok();
    assert_eq!(v, written);
    assert_eq!(v["config"]["duration"], "300ms");
    assert_eq!(v["config"]["concurrency"], 2);
    assert!(v["origin"].is_null());
    assert!(v["errors"]["connect"].as_u64().unwrap() >= 1);
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["host"]["nproc"].as_u64().unwrap() >= 1);
    for key in [
        "latency",
        "cache",
        "timeline",
        "per_target",
        "status",
        "attempts",
        "retries",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
}

/// The plan in `ladder --help` is the table's: every rung and row name.
#[test]
fn ladder_help_lists_the_table() {
    let out = bench(&["ladder", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let rungs = stampede_bench::ladder::table::rung_names();
    let rows = stampede_bench::ladder::table::TABLE_ROWS.map(|r| r.0);
    for name in rungs.iter().chain(rows.iter()) {
        assert!(help.contains(name), "{name} is not in ladder --help");
    }
    assert!(help.contains("quick") && help.contains("full"), "{help}");
}

#[test]
fn campaign_flags_check_and_render() {
    for args in [
        &["campaign", "--profile", "medium"][..],
        &["campaign", "--gateways", "1"],
        &["campaign", "--duration", "forever"],
        // The section names the JSON it was rendered from.
        &["campaign", "--render-reliability", "x.md"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let dir = std::env::temp_dir().join(format!("campaign-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // No binaries in --bin-dir: exit 1, naming the build command.
    let out = bench(&[
        "campaign",
        "--bin-dir",
        &path("nothing-here"),
        "--history",
        &path("h.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") || err.contains("redis-server"),
        "{err}"
    );

    // `campaign check` on a hand-made history: an update to version 2, then a
    // hit of version 1 two seconds later — (a), (b) and (d) fire; exit 3.
    let lines = [
        r#"{"type":"meta","seed":9,"profile":"short","gateways":2,"started_wall_ms":1000000,"ttl_ms":2000,"stale_ttl_ms":1000,"lock_ttl_ms":500,"near_cache_ttl_ms":1000,"origin_latency_ms":20,"client_timeout_ms":3000}"#,
        r#"{"type":"op","process":"c0","kind":"update","gateway":0,"key":7,"invoke_ns":0,"complete_ns":10000000,"invoke_wall_ms":1000000,"complete_wall_ms":1000010,"status":200,"version":2}"#,
        r#"{"type":"op","process":"c1","kind":"read","gateway":1,"key":7,"invoke_ns":2000000000,"complete_ns":2001000000,"invoke_wall_ms":1002000,"complete_wall_ms":1002001,"status":200,"version":1,"cache_status":"stampede; hit; ttl=1"}"#,
    ];
    std::fs::write(path("h.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(path("q.json"), r#"{"queries":[]}"#).unwrap();
    let out = bench(&[
        "campaign",
        "check",
        "--history",
        &path("h.jsonl"),
        "--queries",
        &path("q.json"),
        "--output",
        &path("r.json"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["seed"], 9);
    assert_eq!(v["violations"]["a"], 1);
    assert_eq!(v["violations"]["b"], 1);
    assert_eq!(v["violations"]["d"], 1);
    assert_eq!(v["violations"]["c"], 0);
    assert_eq!(
        v["invariants"]["b"]["examples"][0]["lines"],
        serde_json::json!([3, 2])
    );

    // `campaign render` writes the section between the markers, keeping the rest.
    std::fs::write(path("R.md"), "# Reliability\n\nkept\n").unwrap();
    let out = bench(&[
        "campaign",
        "render",
        "--report",
        &path("r.json"),
        "--reliability",
        &path("R.md"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(path("R.md")).unwrap();
    assert!(md.starts_with("# Reliability\n\nkept\n"), "{md}");
    assert!(md.contains("<!-- campaign:start -->") && md.contains("<!-- campaign:end -->"));
    assert!(md.contains("| (b) | 1 | 1 |"), "{md}");
    let _ = std::fs::remove_dir_all(dir);
}
