//! Every metric the Grafana dashboard and the alert rules query is really
//! exported: a real `gateway` process and a real origin-sim are scraped and
//! compared with the names `scripts/check_dashboard.py --list-metrics` finds.

mod common;

use common::get;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn every_dashboard_and_alert_metric_is_exported() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let listed = Command::new("python3")
        .arg("scripts/check_dashboard.py")
        .arg("--list-metrics")
        .current_dir(&repo)
        .output()
        .expect("python3 is needed to read the dashboard");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let wanted: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        wanted.len() >= 10,
        "suspiciously few metrics listed: {wanted:?}"
    );

    let (origin, _task) = origin_sim::spawn(origin_sim::Config {
        latency_ms: 5,
        items: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let port = stampede_layer::testing::free_port();
    let admin_port = stampede_layer::testing::free_port();
    let gateway = Killed(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
                "--origin",
                &format!("http://{origin}"),
                "--mitigations",
                "all",
                "--instance",
                "dash-test",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway"),
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", admin_port)),
        )
        .await
        {
            drop(s);
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Some traffic: misses, hits, a 404, so the histograms have samples.
    for id in [1, 1, 2, 2, 999, 999] {
        get(&format!("http://127.0.0.1:{port}/items/{id}")).await;
    }
    get(&format!("http://{origin}/items/1")).await;

    let mut exported = get(&format!("{admin}/metrics")).await.body;
    assert!(
        exported.contains("gateway=\"dash-test\""),
        "the gateway label is missing"
    );
    exported.push_str(&get(&format!("http://{origin}/metrics")).await.body);
    let names: std::collections::HashSet<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !names.contains(w.as_str()))
        .collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    drop(gateway);
}
