//! The public HTTP cache conformance suite (npm `http-cache-tests` 0.4.5, the
//! one cache-tests.fyi publishes) run through this freshly built gateway in
//! strict mode, by `scripts/conformance.py`: the required-pass count must not
//! drop below, and the required-fail count must not rise above, the committed
//! baseline in `docs/results/conformance.json`.
//!
//! Needs node, npm and the npm registry (the suite is installed into a temp
//! dir); without them the test fails with one line saying so, never passes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The runner bounds itself (`--timeout`); this is the backstop.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(280);

#[test]
fn conformance_does_not_regress_below_the_committed_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("scripts/conformance.py");
    let baseline = root.join("docs/results/conformance.json");
    let mut child = match Command::new("python3")
        .arg(&script)
        .arg("--gateway")
        .arg(env!("CARGO_BIN_EXE_gateway"))
        .arg("--check-baseline")
        .arg(&baseline)
        .args(["--timeout", "240"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "conformance: cannot start python3 to run {}: {e}",
            script.display()
        ),
    };
    // Drain both pipes while waiting, so a chatty run cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the runner") {
            break status;
        }
        if started.elapsed() > RUNNER_TIMEOUT {
            // SIGTERM first, to our own child by its PID: the runner then ends
            // the server and gateway it started; SIGKILL if it does not exit.
            let pid = child.id();
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "conformance: scripts/conformance.py (pid {pid}) did not finish within {RUNNER_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    assert!(status.success(), "{last}");
}
