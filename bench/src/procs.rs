//! Child processes and small HTTP/Redis helpers for the ladder.
//!
//! Every process the ladder starts is a [`ChildProc`]: it is killed by its
//! PID (SIGKILL) and reaped when the guard drops, so an error, a panic or a
//! ctrl-c that drops the ladder's future leaves nothing behind. Nothing here
//! ever signals a process it did not start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `name` on `$PATH`, if there.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `p` as a report shows it: relative to the repository root (the nearest
/// directory above the current one holding `Cargo.lock`) when under it,
/// `<tmp>/…` when under the temp directory, else as given. Reports never carry
/// the absolute paths of the machine that ran them.
pub fn display_path(p: &Path) -> String {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(rest) = abs.strip_prefix(std::env::temp_dir()) {
        return Path::new("<tmp>").join(rest).display().to_string();
    }
    let root = std::env::current_dir().ok().and_then(|d| {
        d.ancestors()
            .find(|a| a.join("Cargo.lock").is_file())
            .map(Path::to_path_buf)
    });
    match root.as_deref().and_then(|r| abs.strip_prefix(r).ok()) {
        Some(rest) if rest.as_os_str().is_empty() => ".".into(),
        Some(rest) => rest.display().to_string(),
        None => p.display().to_string(),
    }
}

/// A child process owned by the ladder: killed by PID and reaped on drop.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: Child,
    log: PathBuf,
    term_grace: Option<Duration>,
}

impl ChildProc {
    /// Start `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            term_grace: None,
        })
    }

    /// Stop it with SIGTERM (by PID) first and SIGKILL it only if it has not
    /// exited within `grace`: a server that must take its own workers down
    /// (a SIGKILLed nginx master leaves its workers serving).
    pub fn terminate_first(mut self, grace: Duration) -> Self {
        self.term_grace = Some(grace);
        self
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An error (with the end of its log) if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} (pid {}) exited with {status}; end of {}:\n{}",
                self.name,
                self.pid(),
                display_path(&self.log),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kill it now (SIGKILL to its PID) and reap it.
    pub fn kill(&mut self) {
        let running = |c: &mut Child| matches!(c.try_wait(), Ok(None));
        if let Some(grace) = self.term_grace.filter(|_| running(&mut self.child)) {
            let pid = self.pid().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let start = Instant::now();
            while start.elapsed() < grace && running(&mut self.child) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if running(&mut self.child) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Poll `url` until it answers 2xx, failing early if the process exits.
    pub async fn wait_ready(
        &mut self,
        http: &Http,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok((s, _, _)) = http
                .request(Method::GET, url, None, &[], Duration::from_secs(2))
                .await
                && s.is_success()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} (pid {}) not ready at {url} within {timeout:?}; end of {}:\n{}",
                    self.name,
                    self.pid(),
                    display_path(&self.log),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small HTTP/1.1 client for control requests (admin API, stats, metrics).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with a small keep-alive pool.
    pub fn new() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(4)
                .build(c),
        }
    }

    /// Send one request and collect the answer.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        let mut b = Request::builder().method(method.clone()).uri(uri);
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let fut = async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await?.to_bytes();
            anyhow::Ok((parts.status, parts.headers, bytes))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow::anyhow!("{method} {url}: no answer within {timeout:?}"))?
            .with_context(|| format!("{method} {url}"))
    }

    /// `GET url` → body; an error unless 2xx.
    pub async fn get_ok(&self, url: &str) -> anyhow::Result<Bytes> {
        let (s, _, b) = self
            .request(Method::GET, url, None, &[], Duration::from_secs(30))
            .await?;
        if !s.is_success() {
            bail!("GET {url}: HTTP {s}: {}", String::from_utf8_lossy(&b));
        }
        Ok(b)
    }

    /// `method url` with a JSON body → body; an error unless 2xx.
    pub async fn send_json(
        &self,
        method: Method,
        url: &str,
        json: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Bytes> {
        let (s, _, b) = self
            .request(
                method.clone(),
                url,
                Some(serde_json::to_vec(json)?),
                headers,
                Duration::from_secs(30),
            )
            .await?;
        if !s.is_success() {
            bail!("{method} {url}: HTTP {s}: {}", String::from_utf8_lossy(&b));
        }
        Ok(b)
    }
}

/// A `redis-server` child on a free port (no persistence), killed on drop;
/// commands go through `redis-cli` (installed with it).
#[derive(Debug)]
pub struct RedisProc {
    proc_: ChildProc,
    cli: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl RedisProc {
    /// Start `redis-server` from `program` and wait until it answers `PING`.
    pub async fn start(program: &Path, work_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = work_dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let (p, d) = (port.to_string(), dir.display().to_string());
        let args = [
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &d,
        ];
        let args: Vec<String> = args.map(String::from).into();
        let proc_ = ChildProc::spawn("redis-server", program, &args, &dir.join("redis.log"))?;
        let cli = program.with_file_name("redis-cli");
        let cli = if cli.is_file() {
            cli
        } else {
            which("redis-cli").context("redis-cli is not on PATH")?
        };
        let mut redis = Self {
            proc_,
            cli,
            port,
            dir,
        };
        let start = Instant::now();
        while !redis.command("PING").await.is_ok_and(|r| r == "PONG") {
            redis.proc_.check_alive()?;
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server on port {port} did not answer PING within 10s");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Ok(redis)
    }

    /// Run one `redis-cli` command; its reply.
    async fn command(&self, cmd: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let out = tokio::process::Command::new(&self.cli)
            .args(["-p", &port, cmd])
            .output()
            .await?;
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || reply.starts_with("ERR") {
            bail!(
                "redis-cli {cmd}: {reply}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(reply)
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Empty every database.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.proc_.check_alive()?;
        self.command("FLUSHALL").await.map(|_| ())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.proc_.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sum of every sample of the Prometheus metric `name` in `text` whose labels
/// contain all of `labels` (e.g. `reason="inflight"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (lbl, value) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}')?;
                (&r[..end], r[end + 1..].trim())
            } else if rest.starts_with(' ') {
                ("", rest.trim())
            } else {
                return None;
            };
            if !labels.iter().all(|want| lbl.contains(want)) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
