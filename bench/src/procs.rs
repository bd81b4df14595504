//! Child processes and the HTTP helpers of the ladder and the soak (Redis:
//! `stampede_layer::testing::RedisServer`, the workspace's one launcher).
//!
//! Every process the bench starts is a [`ChildProc`]: it is killed by its
//! PID and reaped when the guard drops, so an error, a panic or a ctrl-c
//! that drops the ladder's future leaves nothing behind. Nothing here ever
//! signals a process it did not start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::stats::{OriginQueries, OriginQuery};

// The workspace's one free-port finder (below the kernel's ephemeral range:
// a run once lost a gateway to `Address already in use` when an outgoing
// connection took the port `bind(0)` had handed out).
pub use stampede_layer::testing::free_port;

/// `name` on `$PATH`, if there.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The value of the first `key: value` line of `text` that starts with
/// `key` (as in `/proc/cpuinfo`, `/proc/meminfo`, `/proc/PID/status`).
pub fn proc_field<'a>(text: &'a str, key: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default();
    line.split_once(':').map_or("", |(_, v)| v.trim())
}

/// Seconds per clock tick of `/proc` (`getconf CLK_TCK`).
fn tick() -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output();
        let hz = out
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok());
        1.0 / hz.unwrap_or(100.0)
    })
}

/// `utime + stime` of a `/proc/…/stat` file (a process: all its threads,
/// live and exited; a `task/TID/stat`: that thread alone).
fn stat_cpu(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th.
    let fields = stat.rsplit_once(')').map_or("", |x| x.1).split_whitespace();
    let ticks: f64 = fields
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(ticks * tick())
}

/// CPU time (user + system) process `pid` has used, with `children` that
/// of its child processes too (an nginx master's workers): `utime` and
/// `stime` of `/proc/PID/stat`, in clock ticks of `getconf CLK_TCK`.
pub fn cpu_time(pid: u32, children: bool) -> Duration {
    let mut cpu = stat_cpu(&format!("/proc/{pid}/stat"));
    if children {
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        let kids = kids.unwrap_or_default();
        cpu += kids
            .split_whitespace()
            .filter_map(|k| k.parse().ok())
            .map(|k| cpu_time(k, true))
            .sum::<Duration>();
    }
    cpu
}

/// CPU time (user + system) thread `tid` of this process has used.
pub fn thread_cpu_time(tid: u32) -> Duration {
    stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// The calling thread's id (`/proc/thread-self` → `PID/task/TID`).
pub fn thread_id() -> anyhow::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").context("read /proc/thread-self")?;
    let tid = link.file_name().and_then(|t| t.to_str()).unwrap_or("");
    tid.parse()
        .with_context(|| format!("thread id in /proc/thread-self → {}", link.display()))
}

/// The time CPU `cpu` has been busy: user, nice, system, irq and softirq
/// of its `/proc/stat` line (idle, iowait and steal left out) — whatever
/// ran on it, the kernel's softirq work and kernel threads included, which
/// a process's own `utime + stime` can miss.
pub fn core_busy(cpu: usize) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()));
    let fields: Vec<f64> = line
        .into_iter()
        .flat_map(|l| l.split_whitespace().skip(1))
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|i| fields.get(*i)).sum();
    Duration::from_secs_f64(busy * tick())
}

/// `program args…` as run pinned to CPU `cpu` (`taskset -c CPU program
/// args…`; taskset execs, so the PID stays the program's), or as is.
pub fn pinned(cpu: Option<usize>, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    match cpu {
        None => (program.to_path_buf(), args.to_vec()),
        Some(cpu) => {
            let taskset = which("taskset").unwrap_or_else(|| "taskset".into());
            let head = [
                "-c".to_string(),
                cpu.to_string(),
                program.display().to_string(),
            ];
            (
                taskset,
                head.into_iter().chain(args.iter().cloned()).collect(),
            )
        }
    }
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
    let cwd = std::env::current_dir().unwrap_or_default();
    let root = cwd.ancestors().find(|a| a.join("Cargo.lock").is_file());
    match root.and_then(|r| abs.strip_prefix(r).ok()) {
        Some(rest) if rest.as_os_str().is_empty() => ".".into(),
        Some(rest) => rest.display().to_string(),
        None => p.display().to_string(),
    }
}

/// A child process owned by the bench: killed by PID and reaped on drop.
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
        Self::spawn_env(name, program, args, &[], log)
    }

    /// [`ChildProc::spawn`] with `env` added to the environment.
    pub fn spawn_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        let out = out.with_context(|| format!("open log {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        let (name, log, term_grace) = (name.to_string(), log.to_path_buf(), None);
        Ok(Self {
            name,
            child,
            log,
            term_grace,
        })
    }

    /// Stop it with SIGTERM (by PID) first and SIGKILL it only if it has not
    /// exited within `grace`: a server that must take its own workers down
    /// (a SIGKILLed nginx master leaves its workers serving).
    pub fn terminate_first(mut self, grace: Duration) -> Self {
        self.term_grace = Some(grace);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An error (with the end of its log) if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited with {status}{}", self.name, self.log_tail()),
            None => Ok(()),
        }
    }

    /// `(pid N); end of LOG:` and its last 20 lines (without colour codes).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let parts = text.split('\x1b').enumerate();
        let text: String = parts
            .map(|(i, p)| match p.split_once('m') {
                Some((_, rest)) if i > 0 => rest,
                _ => p,
            })
            .collect();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        let (pid, log) = (self.pid(), display_path(&self.log));
        format!(" (pid {pid}); end of {log}:\n{tail}")
    }

    /// Stop it now (SIGTERM first if asked, then SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) {
        let running = |c: &mut Child| matches!(c.try_wait(), Ok(None));
        if let Some(grace) = self.term_grace.filter(|_| running(&mut self.child)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
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
            let probe = http.request(Method::GET, url, None, Duration::from_secs(2));
            if probe.await.is_ok_and(|(s, _, _)| s.is_success()) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let (name, tail) = (&self.name, self.log_tail());
                bail!("{name} not ready at {url} within {timeout:?}{tail}");
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

/// The hyper client of the load and of the control requests (admin API,
/// stats, metrics): HTTP/1.1 keep-alive, `TCP_NODELAY`.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A small HTTP/1.1 client for control requests.
#[derive(Clone)]
pub struct Http {
    pub client: HttpClient,
}

impl Default for Http {
    fn default() -> Self {
        Self::with_pool(4)
    }
}

impl Http {
    /// A client keeping up to `pool` idle connections per host.
    pub fn with_pool(pool: usize) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .build(c);
        Self { client }
    }

    /// Send one request (a JSON body if given) and collect the answer.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let body = json
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut req = Request::builder().method(method.clone()).uri(url);
        if json.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let (parts, body) = self.client.request(req).await?.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts.status, parts.headers, body))
        };
        let answer = tokio::time::timeout(timeout, exchange).await;
        let answer =
            answer.map_err(|_| anyhow::anyhow!("{method} {url}: no answer within {timeout:?}"))?;
        answer.with_context(|| format!("{method} {url}"))
    }

    /// `method url` (with a JSON body) → body; an error unless 2xx.
    pub async fn ok(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<Bytes> {
        let answer = self.request(method.clone(), url, json, Duration::from_secs(30));
        let (s, _, b) = answer.await?;
        if !s.is_success() {
            bail!("{method} {url}: HTTP {s}: {}", String::from_utf8_lossy(&b));
        }
        Ok(b)
    }

    /// `GET url` → body; an error unless 2xx.
    pub async fn get_ok(&self, url: &str) -> anyhow::Result<Bytes> {
        self.ok(Method::GET, url, None).await
    }

    /// `GET url` → body as text (a `/metrics` page); an error unless 2xx.
    pub async fn text(&self, url: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&self.get_ok(url).await?).into_owned())
    }

    /// origin-sim's query log from `since_ms` on (`GET /stats/queries`).
    pub async fn origin_log(
        &self,
        origin: &str,
        since_ms: u64,
    ) -> anyhow::Result<Vec<OriginQuery>> {
        let url = format!("{origin}/stats/queries?since_ms={since_ms}");
        let body = self.get_ok(&url).await?;
        let log = serde_json::from_slice::<OriginQueries>(&body).context("bad JSON")?;
        Ok(log.queries)
    }
}

/// The sum of `calls=` over an `INFO commandstats` reply, `cmdstat_info` excluded.
pub fn command_calls(info: &str) -> u64 {
    let calls = |l: &str| {
        l.split_once("calls=")?
            .1
            .split(',')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let counted = |l: &&str| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:");
    info.lines().filter(counted).filter_map(calls).sum()
}

/// Sum of every sample of the Prometheus metric `name` in `text` whose labels
/// contain all of `labels` (e.g. `reason="inflight"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    let sample = |l: &str| {
        let rest = l.strip_prefix(name)?;
        let (lbl, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let wanted = labels.iter().all(|want| lbl.contains(want));
        wanted.then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
    };
    let samples = text.lines().filter(|l| !l.starts_with('#'));
    samples.filter_map(sample).sum()
}
