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
