//! The binary's command line: bad input gets one clear line and a non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_one_clear_error() {
    for (args, needle) in [
        (vec!["--ttl", "soon"], "--ttl"),
        (vec!["--jitter", "2"], "--jitter"),
        (vec!["--origin", "ftp://x"], "only http://"),
        (
            vec!["--origin", "http://x/some/path"],
            "must not have a path",
        ),
        (
            vec!["--mitigations", "single-flight,bogus"],
            "unknown mitigation",
        ),
        (vec!["--redis", "localhost:6379"], "redis://"),
        (vec!["--listen", "nowhere"], "--listen"),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn unreachable_redis_fails_at_start_with_a_clear_message() {
    let port = stampede_layer::testing::free_port().to_string();
    let listen = format!("127.0.0.1:{}", stampede_layer::testing::free_port());
    let admin = format!("127.0.0.1:{}", stampede_layer::testing::free_port());
    let (code, err) = run(&[
        "--redis",
        &format!("redis://127.0.0.1:{port}"),
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A gateway binary started with `args` and `envs`, killed (by PID) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Running(
            Command::new(env!("CARGO_BIN_EXE_gateway"))
                .args(args)
                .envs(envs.iter().copied())
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start gateway"),
        )
    }
}

/// GET `url` with a bare HTTP/1.0 request until it answers 200 (10 s at most).
fn get_when_up(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.0 200") {
                return out;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr}{path} never answered 200"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", stampede_layer::testing::free_port())
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let (listen, admin) = (free_addr(), free_addr());
    let gw = Running::start(
        &[],
        &[
            ("STAMPEDE_LISTEN", &listen),
            ("STAMPEDE_ADMIN_LISTEN", &admin),
            ("STAMPEDE_INSTANCE", "from-env"),
            ("STAMPEDE_ORIGIN", "http://127.0.0.1:9"),
        ],
    );
    // The gauge is refreshed every second: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !get_when_up(&admin, "/metrics").contains("gateway=\"from-env\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no gateway=\"from-env\" label"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The proxy listener is where STAMPEDE_LISTEN said (the origin is down: 502).
    let answer = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).expect("proxy listener from env");
        let _ = write!(s, "GET /items/1 HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(answer.starts_with("HTTP/1.0 502"), "{answer:?}");
    // A flag wins over the environment.
    let (code, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--ttl", "soon"])
            .env("STAMPEDE_TTL", "5s")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("STAMPEDE_JITTER", "7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jitter"));
    drop(gw);
}

#[cfg(target_os = "linux")]
#[test]
fn the_instance_defaults_to_the_host_name() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let admin = free_addr();
    let listen = free_addr();
    let _gw = Running::start(&["--listen", &listen, "--admin-listen", &admin], &[]);
    let label = format!("gateway=\"{}\"", host.trim());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !get_when_up(&admin, "/metrics").contains(&label) {
        assert!(std::time::Instant::now() < deadline, "no {label} label");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
