//! Process, HTTP and Redis helpers and the charts, black-box.

use std::path::Path;

use stampede_bench::charts::{Panel, Series, draw};
use stampede_bench::procs::{ChildProc, command_calls, display_path, metric_sum};

#[test]
fn sums_prometheus_samples() {
    let text = "# HELP x\n# TYPE stampede_shed_total counter\n\
        stampede_shed_total{gateway=\"g1\",reason=\"inflight\"} 3\n\
        stampede_shed_total{gateway=\"g1\",reason=\"queue\"} 2\n\
        stampede_shed_total_other 9\n\
        stampede_fencing_rejections_total{gateway=\"g1\"} 4\n\
        plain 1.5\n";
    assert_eq!(metric_sum(text, "stampede_shed_total", &[]), 5.0);
    assert_eq!(
        metric_sum(text, "stampede_shed_total", &["reason=\"queue\""]),
        2.0
    );
    assert_eq!(
        metric_sum(text, "stampede_fencing_rejections_total", &[]),
        4.0
    );
    assert_eq!(metric_sum(text, "plain", &[]), 1.5);
    assert_eq!(metric_sum(text, "missing", &[]), 0.0);
}

#[test]
fn counts_redis_commands_without_info() {
    let info = "# Commandstats\r\n\
        cmdstat_get:calls=1200,usec=3000,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_evalsha:calls=34,usec=340,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=7,usec=700,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n";
    assert_eq!(command_calls(info), 1234);
    assert_eq!(command_calls(""), 0);
}

#[test]
fn paths_are_shown_relative() {
    let tmp = std::env::temp_dir().join("x/y.log");
    assert_eq!(display_path(&tmp), "<tmp>/x/y.log");
    let here = std::env::current_dir().unwrap().join("src");
    assert!(
        !display_path(&here).starts_with('/'),
        "{}",
        display_path(&here)
    );
    assert!(display_path(Path::new("results")).ends_with("bench/results"));
}

#[test]
fn child_is_killed_on_drop() {
    let log = std::env::temp_dir().join(format!("procs-test-{}.log", std::process::id()));
    let pid;
    {
        let p = ChildProc::spawn("sleep", Path::new("sleep"), &["30".to_string()], &log)
            .expect("spawn sleep");
        pid = p.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    // Reaped: the PID is gone (or reused by something that is not our sleep).
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!cmdline.starts_with("sleep"), "{cmdline}");
    let _ = std::fs::remove_file(log);
}

#[test]
fn draws_a_png_with_text() {
    let dir = std::env::temp_dir().join(format!("charts-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.png");
    let pts = |f: fn(f64) -> f64| (0..20).map(|i| (i as f64, Some(f(i as f64)))).collect();
    let panels = [
        Panel {
            y_label: "origin q/s".into(),
            log_y: false,
            reference: Some((10.0, "threshold".into())),
            series: vec![Series("a".into(), 0, pts(|x| x * 2.0))],
        },
        Panel {
            y_label: "p99 ms".into(),
            log_y: true,
            reference: None,
            series: vec![Series("b".into(), 1, pts(|x| 1.0 + x * x))],
        },
    ];
    draw(&path, "test chart", "seconds", &panels).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    let _ = std::fs::remove_dir_all(dir);
}
