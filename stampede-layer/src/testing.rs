//! Test support (feature `test-util`): a real `redis-server` on a free
//! loopback port, owned by the test and killed (by PID) when dropped, and
//! [`fill`], a store write the way a lock-less fill makes it.
//!
//! A missing `redis-server` is a loud failure, never a silent skip: the
//! test command installs it (`scripts/test.sh`).

pub mod contract;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Write `entry` under `key` the way a fill without the lock does: draw a
/// ticket (a lease of 5 s), then the fenced write with it.
pub async fn fill(
    store: &dyn crate::CacheStore,
    key: &crate::store::CacheKey,
    entry: &crate::store::CachedResponse,
) -> Result<crate::store::PutOutcome, crate::StoreError> {
    let lease = store.ticket(key, Duration::from_secs(5)).await?;
    let outcome = store.put(key, entry, &lease).await;
    store.release_lease(key, &lease);
    outcome
}

/// A `redis-server` child process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    tls: bool,
}

/// A free TCP port on 127.0.0.1 (bound, then released), for a server
/// started later. Taken below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), so no outgoing connection (to Redis,
/// to an origin) can take it between this check and the server's bind, as
/// one can take a port `bind(0)` handed out; ports handed out by one process
/// do not repeat until the range wraps. Falls back to `bind(0)` when the
/// range below is too small.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let from = low.saturating_sub(16384).max(1024);
    let span = u32::from(low.saturating_sub(from));
    if span >= 1024 {
        let seed = std::process::id().wrapping_mul(2_654_435_761);
        for _ in 0..span {
            // A prime step visits every port of the span once (16384 of them
            // with the default range).
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = from + (seed.wrapping_add(n.wrapping_mul(7919)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl RedisServer {
    /// Start a standalone server (no persistence) and wait until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        Self::start_on(port, extra)
    }

    /// Start a server that speaks TLS only (`--tls-port`, `--port 0`: no
    /// plaintext port at all) with the PEM certificate, key and CA given
    /// (clients are not asked for certificates). Debian's `redis-server` is
    /// built with TLS.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Self {
        let port = free_port();
        let (port_s, cert, key, ca) = (
            port.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            ca.display().to_string(),
        );
        let mut server = Self::spawn(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port_s,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
        );
        server.tls = true;
        server.wait_ready(Duration::from_secs(10));
        server
    }

    /// Start on `port` (e.g. to restart a killed server on the same port).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let port_s = port.to_string();
        let mut args = vec!["--port", &port_s];
        args.extend_from_slice(extra);
        let server = Self::spawn(port, &args);
        server.wait_ready(Duration::from_secs(10));
        server
    }

    /// `redis-server` with the common arguments and `extra` (which name the port).
    fn spawn(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("stampede-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut args = vec![
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ];
        args.extend_from_slice(extra);
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install redis-server) \
                     or run the tests through scripts/test.sh, which does"
                )
            });
        RedisServer {
            child,
            port,
            dir,
            tls: false,
        }
    }

    fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not come up within {timeout:?}",
            self.port
        );
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL: `redis://127.0.0.1:PORT`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Run `redis-cli` against it with `args`; its output, trimmed. Panics
    /// (loudly) when `redis-cli` is missing or the command fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if self.tls {
            // The test's own server: its certificate is not what is checked here.
            cmd.args(["--tls", "--insecure"]);
        }
        let out = cmd
            .args(args)
            .output()
            .expect("redis-cli is needed (Debian: redis-tools, installed with redis-server)");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A numeric field of `INFO <section>` (`used_memory` of `memory`,
    /// `total_commands_processed` of `stats`, …).
    pub fn info_field(&self, section: &str, field: &str) -> u64 {
        let prefix = format!("{field}:");
        self.cli(&["INFO", section])
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
    }

    /// Freeze it (SIGSTOP, by PID): connections stay open but nothing answers —
    /// the hung-Redis case, where every command runs into its timeout.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {} failed", self.child.id());
    }

    /// Kill it now (SIGKILL, by PID) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
