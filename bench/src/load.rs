//! The `load` runner: closed-loop keep-alive workers against one or more
//! targets (round-robin), per-request timeout and retries, latency and
//! `Cache-Status` accounting, then origin-sim's query log for the same window.
//!
//! Load model: `concurrency` workers, each sending one request at a time over
//! a pooled keep-alive connection. A request goes to the hot key with
//! probability `hot_fraction`, otherwise to a key drawn uniformly from
//! `1..=keys`; a request counts as *hot* when its key is the hot key (a
//! uniform draw can land on it too). Targets are taken round-robin per request
//! from one global counter; retries go to the same target. A request's latency
//! runs from its first send to its final answer, retries and back-off
//! included, and failed requests are recorded with the time they took to fail.
//! At `duration` no new request and no new retry starts; in-flight attempts
//! finish or hit their timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::cache_status::{CacheClass, classify};
use crate::procs::{Http, HttpClient};
use crate::stats::{
    CacheCounts, LatencyRecorder, LatencyStats, OriginSummary, SLOW_THRESHOLD, analyse_origin,
    duration_us, new_histogram, round, us_to_ms,
};

/// The default origin-sim base URL (`--origin`).
pub const DEFAULT_ORIGIN: &str = "http://127.0.0.1:8081";

/// What to run: the `load` subcommand's flags (clap) and the summary's
/// `config` (serde, durations as humantime strings such as `"30s"`; missing
/// fields take the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Parser)]
#[serde(default)]
pub struct LoadConfig {
    /// Target base URL(s), comma-separated; requests go round-robin over them.
    #[arg(long = "target", value_name = "URL[,URL...]", value_delimiter = ',', value_parser = trimmed, default_value = "http://127.0.0.1:8080")]
    pub targets: Vec<String>,
    /// Concurrent closed-loop clients (each keeps one keep-alive connection busy).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// How long to start new requests, e.g. 500ms, 30s, 1m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Probability that a request goes to the hot key (0..=1).
    #[arg(long, default_value_t = 0.95)]
    pub hot_fraction: f64,
    /// Other requests pick a key uniformly from 1..=KEYS.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// The hot key.
    #[arg(long, default_value_t = 1)]
    pub hot_key: u64,
    /// Request path before the key: GET {target}{path-prefix}{key}.
    #[arg(long, default_value = "/items/")]
    pub path_prefix: String,
    /// Retries after a connect/timeout/body error or a 5xx answer.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Per-attempt timeout for the whole response (body included), e.g. 1s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Back-off before each retry (plus up to 20% jitter).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The gateway's TTL: hot-key origin queries separated by more than
    /// min(ttl/4, 500ms) form separate TTL boundaries (500ms gap when unset).
    #[arg(long, value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// RNG seed for key choice and jitter (worker i uses seed+i); random when unset.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pause of each client after each answer, e.g. 50ms (0 = tight closed loop).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub think_time: Duration,
    /// origin-sim base URL for `/stats/queries`; `None` skips the origin section.
    #[arg(skip = Some(DEFAULT_ORIGIN.to_string()))]
    pub origin: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["load"])
    }
}

/// A duration flag: `500ms`, `5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 1m)"))
}

fn trimmed(s: &str) -> Result<String, String> {
    Ok(s.trim().to_string())
}

impl LoadConfig {
    /// Check every field; the error names the offending flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.targets.is_empty(),
            "--target: at least one URL is required"
        );
        for t in &self.targets {
            let base = parse_base_url(t).with_context(|| format!("--target {t:?}"))?;
            let (prefix, probe) = (
                &self.path_prefix,
                format!("{base}{}{}", self.path_prefix, self.hot_key),
            );
            probe.parse::<Uri>().with_context(|| {
                format!("--path-prefix {prefix:?}: {probe:?} is not a valid URL")
            })?;
        }
        if let Some(o) = &self.origin {
            parse_base_url(o).with_context(|| format!("--origin {o:?}"))?;
        }
        let (c, h, p) = (self.concurrency, self.hot_fraction, &self.path_prefix);
        ensure!(
            (1..=100_000).contains(&c),
            "--concurrency must be between 1 and 100000, got {c}"
        );
        ensure!(!self.duration.is_zero(), "--duration must be positive");
        ensure!(
            (0.0..=1.0).contains(&h),
            "--hot-fraction must be within 0..=1, got {h}"
        );
        ensure!(self.keys > 0, "--keys must be at least 1");
        ensure!(
            p.starts_with('/'),
            "--path-prefix must start with '/', got {p:?}"
        );
        ensure!(!self.timeout.is_zero(), "--timeout must be positive");
        ensure!(
            self.ttl.is_none_or(|t| !t.is_zero()),
            "--ttl must be positive"
        );
        Ok(())
    }
}

/// Validate an `http://host[:port][/path]` base URL and return it without a
/// trailing slash.
pub fn parse_base_url(s: &str) -> anyhow::Result<String> {
    let uri: Uri = s.parse().map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("only http:// URLs are supported, got {other}://"),
        None => bail!("missing scheme (expected http://host:port)"),
    }
    ensure!(
        uri.authority().is_some_and(|a| !a.host().is_empty()),
        "missing host"
    );
    ensure!(
        uri.query().is_none(),
        "a base URL cannot have a query string"
    );
    Ok(s.trim_end_matches('/').to_string())
}

/// The machine the run was made on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
    pub hostname: String,
    /// Available parallelism (what `nproc` prints).
    pub nproc: usize,
}

impl HostInfo {
    /// Describe this machine.
    pub fn current() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_string());
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { hostname, nproc }
    }
}

/// A value split by key class: all requests, the hot key, the other keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ByKey<T> {
    pub all: T,
    pub hot: T,
    pub other: T,
}

impl<T> ByKey<T> {
    /// `all` and the class of a request (`hot` or `other`).
    fn of(&mut self, hot: bool) -> [&mut T; 2] {
        [
            &mut self.all,
            if hot { &mut self.hot } else { &mut self.other },
        ]
    }
}

/// Failures by kind. `total` is the sum of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Could not connect.
    pub connect: u64,
    /// No complete answer within `timeout`.
    pub timeout: u64,
    /// The response body failed mid-way.
    pub body: u64,
    /// Any other transport error (e.g. connection closed before the answer).
    pub other: u64,
    pub total: u64,
}

impl ErrorCounts {
    fn add(&mut self, kind: ErrorKind) {
        *match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Body => &mut self.body,
            ErrorKind::Other => &mut self.other,
        } += 1;
        self.total += 1;
    }
}

/// Requests (not attempts) sent to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCount {
    pub target: String,
    pub requests: u64,
}

/// One second of the run, for the charts. Client columns are bucketed by the
/// second in which a request *started*; origin columns by the second in which
/// an origin query started (both counted from the load start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineSecond {
    /// Seconds since the load start.
    pub second: u64,
    /// Requests started in this second.
    pub requests: u64,
    /// Of those, requests whose final answer was a transport error or a 5xx.
    pub errors: u64,
    /// p99 latency of those requests, ms (`null` when none started).
    pub p99_ms: Option<f64>,
    /// p99 latency of the hot-key requests among them, ms (`null` when none).
    #[serde(default)]
    pub hot_p99_ms: Option<f64>,
    /// Origin queries started in this second (`null` without origin stats).
    pub origin_queries: Option<u64>,
    /// Hot-key origin queries started in this second (`null` without origin stats).
    pub hot_origin_queries: Option<u64>,
}

/// The result of one `load` run (printed as JSON by `stampede-bench load`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// The configuration the run used.
    pub config: LoadConfig,
    /// When the load started, RFC 3339 UTC.
    pub started_at: String,
    /// The machine it ran on.
    pub host: HostInfo,
    /// Load start, ms since the Unix epoch.
    pub start_ms: u64,
    /// Load end (last in-flight request done), ms since the Unix epoch.
    pub end_ms: u64,
    /// Wall time from start to end, seconds.
    pub elapsed_s: f64,
    /// Requests completed (a request may take several attempts).
    pub requests: u64,
    /// `requests / elapsed_s`.
    pub requests_per_sec: f64,
    /// Requests whose final answer was a transport error or a 5xx.
    pub failed_requests: u64,
    /// Attempts sent (requests + retries).
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Threshold of the `over_150ms` counts, ms.
    pub slow_threshold_ms: u64,
    /// Requests per target, in `--target` order.
    pub per_target: Vec<TargetCount>,
    /// Final answers per HTTP status code.
    pub status: BTreeMap<String, u64>,
    /// Requests whose final outcome was a transport error, by kind.
    pub errors: ErrorCounts,
    /// Every failed attempt (retried or not), by kind.
    pub attempt_errors: ErrorCounts,
    /// Latency (first send to final answer) by key class.
    pub latency: ByKey<LatencyStats>,
    /// `Cache-Status` outcomes of final answers, by key class.
    pub cache: ByKey<CacheCounts>,
    /// What origin-sim saw in the load window; `null` when unavailable.
    pub origin: Option<OriginSummary>,
    /// Why `origin` is `null`, if it is and an origin was configured.
    pub origin_error: Option<String>,
    /// Per-second series for the charts.
    pub timeline: Vec<TimelineSecond>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Connect,
    Timeout,
    Body,
    Other,
}

/// The requests started in one second: count, failures, latency (all, hot).
struct Second {
    requests: u64,
    errors: u64,
    hist: [Histogram<u64>; 2],
}

impl Second {
    fn new() -> Self {
        let (requests, errors) = (0, 0);
        Self {
            requests,
            errors,
            hist: [new_histogram(2), new_histogram(2)],
        }
    }
}

/// What the workers record: the summary's counters, and what becomes its
/// latency, per-target, per-status and per-second figures at the end.
struct Recorder {
    summary: LoadSummary,
    per_target: Vec<u64>,
    status: BTreeMap<u16, u64>,
    latency: ByKey<LatencyRecorder>,
    seconds: Vec<Second>,
}

/// One request's fate.
struct Outcome {
    target: usize,
    hot: bool,
    second: usize,
    latency: Duration,
    attempts: u32,
    attempt_errors: Vec<ErrorKind>,
    result: Answer,
}

/// A request's final answer: its status and cache class, or why it failed.
type Answer = Result<(StatusCode, CacheClass), ErrorKind>;

impl Recorder {
    fn record(&mut self, o: Outcome) {
        let s = &mut self.summary;
        s.requests += 1;
        s.attempts += u64::from(o.attempts);
        self.per_target[o.target] += 1;
        for k in &o.attempt_errors {
            s.attempt_errors.add(*k);
        }
        let failed = match &o.result {
            Ok((status, class)) => {
                *self.status.entry(status.as_u16()).or_default() += 1;
                for c in s.cache.of(o.hot) {
                    c.add(class);
                }
                status.is_server_error()
            }
            Err(kind) => {
                s.errors.add(*kind);
                true
            }
        };
        s.failed_requests += u64::from(failed);
        for l in self.latency.of(o.hot) {
            l.record(o.latency);
        }
        if self.seconds.len() <= o.second {
            self.seconds.resize_with(o.second + 1, Second::new);
        }
        let sec = &mut self.seconds[o.second];
        (sec.requests, sec.errors) = (sec.requests + 1, sec.errors + u64::from(failed));
        for h in &mut sec.hist[..1 + usize::from(o.hot)] {
            h.saturating_record(duration_us(o.latency));
        }
    }
}

struct Shared {
    cfg: LoadConfig,
    targets: Vec<String>,
    http: Http,
    rr: AtomicUsize,
    start: Instant,
    deadline: Instant,
    recorder: Mutex<Recorder>,
}

impl Shared {
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        // A panicking worker cannot leave the counters half-updated in a way
        // that matters; keep going with what is there.
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`run_load`] on a thread of its own pinned to CPU `cpu` (`taskset -p` on
/// its thread id), with a single-threaded runtime of its own: the load
/// generator on one core, as `taskset -c CPU wrk -t1` runs. Also returns
/// the CPU time (user + system) that thread used for the load.
pub async fn run_load_pinned(
    cfg: &LoadConfig,
    cpu: usize,
) -> anyhow::Result<(LoadSummary, Duration)> {
    let cfg = cfg.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("load-cpu{cpu}"))
        .spawn(move || {
            let run = || -> anyhow::Result<(LoadSummary, Duration)> {
                let tid = crate::procs::thread_id()?;
                let taskset = std::process::Command::new("taskset")
                    .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .context("taskset (util-linux) pins the load generator")?;
                ensure!(taskset.success(), "taskset -p -c {cpu} {tid}: {taskset}");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let before = crate::procs::thread_cpu_time(tid);
                let summary = rt.block_on(run_load(&cfg, false))?;
                Ok((summary, crate::procs::thread_cpu_time(tid) - before))
            };
            let _ = tx.send(run());
        })
        .context("start the load thread")?;
    rx.await
        .context("the load thread ended without an answer")?
}

/// Run the load described by `cfg` and return its summary. With `progress`,
/// one line per second goes to stderr. If the origin's `/stats/queries`
/// cannot be read, a line says so on stderr and `origin` is `None`.
pub async fn run_load(cfg: &LoadConfig, progress: bool) -> anyhow::Result<LoadSummary> {
    cfg.validate()?;
    let targets = cfg.targets.iter().map(|t| parse_base_url(t));
    let targets: Vec<String> = targets.collect::<anyhow::Result<_>>()?;
    let (start_ms, start) = (now_ms(), Instant::now());
    let summary = LoadSummary {
        config: cfg.clone(),
        started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        host: HostInfo::current(),
        start_ms,
        slow_threshold_ms: SLOW_THRESHOLD.as_millis() as u64,
        ..LoadSummary::default()
    };
    let recorder = Recorder {
        summary,
        per_target: vec![0; targets.len()],
        status: BTreeMap::new(),
        latency: ByKey::default(),
        seconds: Vec::new(),
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        recorder: Mutex::new(recorder),
        targets,
        http: Http::with_pool(cfg.concurrency),
        rr: AtomicUsize::new(0),
        start,
        deadline: start + cfg.duration,
    });

    let mut workers = JoinSet::new();
    for i in 0..cfg.concurrency {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s.wrapping_add(i as u64)),
            None => StdRng::from_os_rng(),
        };
        workers.spawn(worker(Arc::clone(&shared), rng));
    }
    let ticker = progress.then(|| tokio::spawn(progress_lines(Arc::clone(&shared))));
    // Every attempt is bounded by the timeout and no retry starts after the
    // deadline, so this grace is never reached unless something is badly off.
    let grace = cfg.timeout + cfg.backoff + Duration::from_secs(2);
    let hard_stop = tokio::time::Instant::from_std(shared.deadline + grace);
    while let Ok(Some(res)) = tokio::time::timeout_at(hard_stop, workers.join_next()).await {
        if let Err(e) = res {
            eprintln!("stampede-bench: a load worker failed: {e}");
        }
    }
    if !workers.is_empty() {
        eprintln!(
            "stampede-bench: in-flight requests did not finish within {grace:?} after the deadline; aborted"
        );
        workers.abort_all();
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let elapsed = start.elapsed();
    let end_ms = start_ms + elapsed.as_millis() as u64;

    let (origin, origin_error) = match &cfg.origin {
        None => (None, None),
        Some(url) => {
            let base = parse_base_url(url)?;
            match shared.http.origin_log(&base, start_ms).await {
                Ok(q) => {
                    let (window, key) = ((start_ms, end_ms), cfg.hot_key);
                    (Some(analyse_origin(&base, &q, window, key, cfg.ttl)), None)
                }
                Err(e) => {
                    let (url, msg) = (
                        format!("{base}/stats/queries?since_ms={start_ms}"),
                        format!("{e:#}"),
                    );
                    eprintln!(
                        "stampede-bench: origin stats unavailable at {url} ({msg}); origin section left null"
                    );
                    (None, Some(msg))
                }
            }
        }
    };

    let mut rec = shared.recorder();
    let (elapsed_s, n) = (elapsed.as_secs_f64(), rec.summary.requests);
    let origin_len = origin.as_ref().map_or(0, |o| o.per_second.len());
    let duration = cfg.duration.as_secs_f64().ceil() as usize;
    let seconds = rec.seconds.len().max(origin_len).max(duration);
    let p99 = |h: &Histogram<u64>| (!h.is_empty()).then(|| us_to_ms(h.value_at_quantile(0.99)));
    let second = |i: usize| {
        let s = rec.seconds.get(i);
        let at = |v: &Vec<u64>| v.get(i).copied().unwrap_or(0);
        TimelineSecond {
            second: i as u64,
            requests: s.map_or(0, |s| s.requests),
            errors: s.map_or(0, |s| s.errors),
            p99_ms: s.and_then(|s| p99(&s.hist[0])),
            hot_p99_ms: s.and_then(|s| p99(&s.hist[1])),
            origin_queries: origin.as_ref().map(|o| at(&o.per_second)),
            hot_origin_queries: origin.as_ref().map(|o| at(&o.hot_per_second)),
        }
    };
    let timeline = (0..seconds).map(second).collect();
    let per_target = shared.targets.iter().zip(&rec.per_target);
    let per_target = per_target.map(|(t, n)| TargetCount {
        target: t.clone(),
        requests: *n,
    });
    let l = &rec.latency;
    let latency = ByKey {
        all: l.all.summary(),
        hot: l.hot.summary(),
        other: l.other.summary(),
    };
    let status = rec
        .status
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Ok(LoadSummary {
        end_ms,
        elapsed_s: round(elapsed_s, 3),
        requests_per_sec: round(n as f64 / elapsed_s.max(1e-9), 1),
        retries: rec.summary.attempts - n,
        per_target: per_target.collect(),
        status,
        latency,
        origin,
        origin_error,
        timeline,
        ..std::mem::take(&mut rec.summary)
    })
}

async fn worker(shared: Arc<Shared>, mut rng: StdRng) {
    let cfg = &shared.cfg;
    while Instant::now() < shared.deadline {
        let started = Instant::now();
        let key = if rng.random::<f64>() < cfg.hot_fraction {
            cfg.hot_key
        } else {
            rng.random_range(1..=cfg.keys)
        };
        let target = shared.rr.fetch_add(1, Ordering::Relaxed) % shared.targets.len();
        let url = format!("{}{}{}", shared.targets[target], cfg.path_prefix, key);
        let (mut attempts, mut attempt_errors) = (0u32, Vec::new());
        let result = loop {
            attempts += 1;
            let r = attempt(&shared.http.client, &url, cfg.timeout).await;
            if let Err(kind) = &r {
                attempt_errors.push(*kind);
            }
            let retryable = r.as_ref().map_or(true, |(s, _)| s.is_server_error());
            if !retryable || attempts > cfg.retries || Instant::now() >= shared.deadline {
                break r;
            }
            let jitter_max = (cfg.backoff.as_micros() / 5) as u64;
            let jitter = Duration::from_micros(rng.random_range(0..=jitter_max));
            tokio::time::sleep(cfg.backoff + jitter).await;
        };
        shared.recorder().record(Outcome {
            target,
            hot: key == cfg.hot_key,
            second: started.duration_since(shared.start).as_secs() as usize,
            latency: started.elapsed(),
            attempts,
            attempt_errors,
            result,
        });
        if !cfg.think_time.is_zero() {
            if Instant::now() + cfg.think_time >= shared.deadline {
                break;
            }
            tokio::time::sleep(cfg.think_time).await;
        }
    }
}

async fn attempt(client: &HttpClient, url: &str, timeout: Duration) -> Answer {
    let uri: Uri = url.parse().map_err(|_| ErrorKind::Other)?;
    let exchange = async {
        let resp = client.get(uri).await.map_err(|e| {
            if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Other
            }
        })?;
        let header = resp.headers().get("cache-status");
        let header = header.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let status = resp.status();
        let body = resp.into_body().collect();
        body.await.map_err(|_| ErrorKind::Body)?;
        Ok((status, classify(header.as_deref())))
    };
    let answer = tokio::time::timeout(timeout, exchange).await;
    answer.unwrap_or(Err(ErrorKind::Timeout))
}

async fn progress_lines(shared: Arc<Shared>) {
    let total = humantime::format_duration(shared.cfg.duration).to_string();
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let line = {
            let rec = shared.recorder();
            let n = rec.summary.requests;
            let rate = n - std::mem::replace(&mut last, n);
            format!(
                "load {:>5.1}s/{total}  {rate:>7} req/s  hit {:>5.1}%  errors {}  p99 {:.1} ms",
                shared.start.elapsed().as_secs_f64(),
                rec.summary.cache.all.hit_percent(),
                rec.summary.failed_requests,
                rec.latency.all.p99_ms(),
            )
        };
        eprintln!("{line}");
    }
}
