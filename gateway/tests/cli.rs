//! The binary's command line: bad input gets one clear line and a non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    run_env(args, &[])
}

fn run_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .envs(envs.iter().copied())
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

    /// Stop it and return everything it logged.
    fn logs(mut self) -> String {
        let _ = self.0.kill();
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        err
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
    // A flag wins over the environment; a bad value from it is one clear line.
    let (code, err) = run_env(&["--ttl", "soon"], &[("STAMPEDE_TTL", "5s")]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = run_env(&[], &[("STAMPEDE_JITTER", "7")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--jitter"), "{err}");
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

const PASSWORD: &str = "hunter2-s3cret";

#[test]
fn rediss_is_refused_in_one_line_never_sent_in_plaintext() {
    let port = stampede_layer::testing::free_port();
    for scheme in ["rediss", "rediss-cluster"] {
        let url = format!("{scheme}://:{PASSWORD}@127.0.0.1:{port}");
        for (args, envs) in [
            (vec!["--redis", url.as_str()], vec![]),
            (vec![], vec![("STAMPEDE_REDIS", url.as_str())]),
        ] {
            let (code, err) = run_env(&args, &envs);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("TLS"), "{err}");
            assert!(!err.contains(PASSWORD), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn the_redis_password_is_never_logged() {
    let port = stampede_layer::testing::free_port();
    let (listen, admin) = (free_addr(), free_addr());
    // A bad URL: the flag's error does not echo it either.
    let (code, err) = run(&["--redis", &format!("http://:{PASSWORD}@127.0.0.1:{port}")]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // Reachable, with a password: the start-up log names the store, redacted.
    let redis = stampede_layer::testing::RedisServer::start_with(&["--requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let gw = Running::start(
        &["--listen", &listen, "--admin-listen", &admin],
        &[("STAMPEDE_REDIS", &url)],
    );
    get_when_up(&admin, "/readyz");
    let logs = gw.logs();
    assert!(logs.contains("store: Redis"), "{logs}");
    assert!(logs.contains(":***@127.0.0.1"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}
