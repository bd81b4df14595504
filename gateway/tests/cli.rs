//! The binary's command line: bad input gets one clear line and a non-zero exit.

mod common;

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

/// What a fake server at `listener` receives in `secs` seconds (every
/// connection made to it, concatenated).
fn bytes_received(listener: std::net::TcpListener, secs: u64) -> Vec<u8> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    listener.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    got
}

#[test]
fn rediss_works_and_never_falls_back_to_plaintext() {
    // A redis-server with a TLS port only (no plaintext port at all), a
    // certificate from a private CA, and a password.
    let pki = common::Pki::new("cli rediss CA");
    let (cert, key, _) = pki.write_leaf("redis", "redis");
    let redis = stampede_layer::testing::RedisServer::start_tls(&cert, &key, &pki.ca);
    redis.cli(&["CONFIG", "SET", "requirepass", PASSWORD]);
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let ca = pki.ca.to_str().unwrap().to_owned();
    for (flags, envs) in [
        (
            vec!["--redis", url.as_str(), "--redis-ca", ca.as_str()],
            vec![],
        ),
        (
            vec![],
            vec![
                ("STAMPEDE_REDIS", url.as_str()),
                ("STAMPEDE_REDIS_CA", ca.as_str()),
            ],
        ),
    ] {
        let (listen, admin) = (free_addr(), free_addr());
        let mut args = vec!["--listen", &listen, "--admin-listen", &admin];
        args.extend(flags);
        let gw = Running::start(&args, &envs);
        let ready = get_when_up(&admin, "/readyz");
        assert!(!ready.contains("degraded"), "{ready}");
        let logs = gw.logs();
        assert!(logs.contains("store: Redis"), "{logs}");
        assert!(logs.contains("rediss://:***@127.0.0.1"), "{logs}");
        assert!(!logs.contains(PASSWORD), "{logs}");
    }

    // No fallback: at a rediss:// address, the gateway's first bytes are a
    // TLS handshake record — never a Redis command, never the password —
    // and a server that does not speak TLS gets nothing else either.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rediss://:{PASSWORD}@{}", fake.local_addr().unwrap());
    let (listen, admin) = (free_addr(), free_addr());
    let gw = Running::start(
        &[
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--redis",
            &url,
        ],
        &[],
    );
    let sent = bytes_received(fake, 3);
    assert!(!sent.is_empty(), "the gateway never connected");
    assert_eq!(
        sent[0],
        0x16,
        "not a TLS record: {:?}",
        &sent[..sent.len().min(16)]
    );
    let text = String::from_utf8_lossy(&sent);
    for plain in [PASSWORD, "AUTH", "HELLO", "PING", "CLIENT"] {
        assert!(!text.contains(plain), "{plain:?} sent in plaintext");
    }
    // It comes up degraded (in-process fallback), and says so.
    let ready = get_when_up(&admin, "/readyz");
    assert!(ready.contains("degraded"), "{ready}");
    drop(gw);

    // A plaintext redis-server at a rediss:// URL: nothing is written to it.
    let plain = stampede_layer::testing::RedisServer::start();
    let url = plain.url().replacen("redis://", "rediss://", 1);
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Running::start(
        &[
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--redis",
            &url,
            "--origin",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    let ready = get_when_up(&admin, "/readyz");
    assert!(ready.contains("degraded"), "{ready}");
    get_when_up_or_502(&listen, "/items/1");
    assert_eq!(plain.cli(&["DBSIZE"]), "0");
}

/// One GET on the proxy listener (any answer).
fn get_when_up_or_502(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("proxy listener");
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_certificates_and_keys_are_one_clear_error_at_start_up() {
    let pki = common::Pki::new("cli CA");
    let (cert, key, _) = pki.write_leaf("good", "good");
    let (other_cert, _, _) = pki.write_leaf("other", "other");
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").unwrap();
    let (cert, key, other_cert, junk) = (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
        other_cert.to_str().unwrap().to_owned(),
        junk.to_str().unwrap().to_owned(),
    );
    let missing = "/nonexistent/stampede/cert.pem";
    for (tls_cert, tls_key, needle) in [
        (
            missing,
            key.as_str(),
            format!("cannot read --tls-cert {missing}"),
        ),
        (
            cert.as_str(),
            missing,
            format!("cannot read --tls-key {missing}"),
        ),
        (
            junk.as_str(),
            key.as_str(),
            format!("--tls-cert {junk}: no certificate"),
        ),
        (
            cert.as_str(),
            junk.as_str(),
            format!("--tls-key {junk}: no private key"),
        ),
        (
            cert.as_str(),
            cert.as_str(),
            format!("--tls-key {cert}: no private key"),
        ),
        (
            other_cert.as_str(),
            key.as_str(),
            "does not belong to the certificate".to_owned(),
        ),
    ] {
        let (listen, admin) = (free_addr(), free_addr());
        let (code, err) = run(&[
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--tls-cert",
            tls_cert,
            "--tls-key",
            tls_key,
        ]);
        assert_eq!(code, 1, "{tls_cert} {tls_key}: {err}");
        assert!(err.contains(&needle), "want {needle:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    for (flag, needle) in [
        ("--origin-ca", "cannot read --origin-ca"),
        ("--redis-ca", "cannot read --redis-ca"),
    ] {
        let (listen, admin) = (free_addr(), free_addr());
        let mut args = vec!["--listen", &listen, "--admin-listen", &admin, flag, missing];
        if flag == "--redis-ca" {
            args.extend(["--redis", "rediss://127.0.0.1:9"]);
        }
        let (code, err) = run(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // Half a pair is a flag error.
    let (code, err) = run(&["--tls-cert", &cert]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
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
