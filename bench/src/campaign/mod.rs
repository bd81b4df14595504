//! `stampede-bench campaign`: a seeded, reproducible fault campaign in
//! Jepsen's shape — a workload, a fault schedule (the nemesis), a recorded
//! history and a checker over it.
//!
//! It starts real processes on 127.0.0.1 only: one redis-server, one
//! origin-sim and N gateways sharing that Redis (`--mitigations all`, short
//! TTLs so faults bite fast, the near cache on with its default 1 s bound).
//! A few clients run the [`workload`] while the [`faults`] module injects one
//! fault at a time; every operation and fault goes to the [`history`]
//! (JSON lines). At the end origin-sim's `/stats/queries` is saved beside it
//! and the [`checker`] — a pure function of those two files, so
//! `stampede-bench campaign check` re-checks a saved run — reports each
//! invariant with the history lines that break it; [`report`] renders the
//! JSON summary and the campaign section of docs/RELIABILITY.md.
//!
//! Every process is owned by a guard that kills it by PID when dropped, so
//! the campaign ends everything it started (on success, error or ctrl-c).

pub mod checker;
pub mod faults;
pub mod history;
pub mod report;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use stampede_layer::testing::RedisServer;

use self::checker::CheckConfig;
use self::faults::{Nemesis, Schedule};
use self::history::{Entry, Meta, Recorder};
use self::workload::{Addrs, Clock, Keys, Mix, Target};
use crate::procs::{ChildProc, Http, free_port};
use crate::stats::OriginQueries;

/// Admin token of the campaign's gateways.
const ADMIN_TOKEN: &str = "campaign-admin-token";

/// The two shapes of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// About 45 s of faults, every kind at least once (CI).
    Short,
    /// At least 10 minutes, every kind at least 20 times.
    Long,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Long => "long",
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Self::Short => Duration::from_secs(45),
            Self::Long => Duration::from_secs(600),
        }
    }

    pub fn min_per_kind(self) -> usize {
        match self {
            Self::Short => 1,
            Self::Long => 20,
        }
    }
}

/// Everything a campaign run needs.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    pub seed: u64,
    pub profile: Profile,
    /// How long faults are injected (the profile's unless given).
    pub duration: Duration,
    pub gateways: usize,
    pub bin_dir: PathBuf,
    /// Where the child logs go.
    pub work_dir: PathBuf,
    /// The history (JSON lines).
    pub history: PathBuf,
    /// origin-sim's `/stats/queries` at the end (JSON).
    pub queries: PathBuf,
    pub clients: usize,
    pub think: Duration,
    pub ttl: Duration,
    pub stale_ttl: Duration,
    pub lock_ttl: Duration,
    pub near_cache_ttl: Duration,
    pub origin_latency_ms: u64,
    pub items: u64,
    pub keys: Keys,
    pub client_timeout: Duration,
    pub progress: bool,
    /// The command line, as the report shows it.
    pub command: String,
}

impl CampaignConfig {
    /// The defaults of `profile` with `seed`, binaries from `bin_dir`,
    /// files under `work_dir`.
    pub fn new(profile: Profile, seed: u64, bin_dir: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            seed,
            profile,
            duration: profile.duration(),
            gateways: 3,
            bin_dir,
            history: work_dir.join("history.jsonl"),
            queries: work_dir.join("queries.json"),
            work_dir,
            clients: 8,
            think: Duration::from_millis(30),
            ttl: Duration::from_secs(2),
            stale_ttl: Duration::from_secs(1),
            lock_ttl: Duration::from_millis(500),
            near_cache_ttl: Duration::from_secs(1),
            origin_latency_ms: 20,
            items: 1000,
            keys: Keys {
                hot: 4,
                cold: 96,
                nemesis_first: 500,
            },
            client_timeout: Duration::from_secs(3),
            progress: true,
            command: String::new(),
        }
    }

    fn meta(&self, clock: &Clock) -> Meta {
        let ms = |d: Duration| d.as_millis() as u64;
        Meta {
            seed: self.seed,
            profile: self.profile.name().into(),
            gateways: self.gateways,
            started_wall_ms: clock.wall0_ms(),
            ttl_ms: ms(self.ttl),
            stale_ttl_ms: ms(self.stale_ttl),
            lock_ttl_ms: ms(self.lock_ttl),
            near_cache_ttl_ms: ms(self.near_cache_ttl),
            origin_latency_ms: self.origin_latency_ms,
            client_timeout_ms: ms(self.client_timeout),
            command: self.command.clone(),
            machine: report::machine(),
        }
    }
}

fn humantime_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The processes of a campaign and how to (re)start them.
pub struct Procs {
    redis: Option<RedisServer>,
    redis_port: u16,
    origin: ChildProc,
    gateways: Vec<Option<ChildProc>>,
    gateway_args: Vec<Vec<String>>,
    admins: Vec<String>,
    bin_dir: PathBuf,
    work_dir: PathBuf,
    http: Http,
}

impl Procs {
    /// Start redis-server, origin-sim and the gateways; wait until all are ready.
    pub async fn start(cfg: &CampaignConfig) -> anyhow::Result<(Self, Addrs)> {
        if crate::procs::which("redis-server").is_none() {
            bail!("redis-server is not on PATH (Debian: apt-get install redis-server)");
        }
        for b in ["origin-sim", "gateway"] {
            if !cfg.bin_dir.join(b).is_file() {
                bail!(
                    "missing {} — build it: cargo build --release -p gateway -p origin-sim (or pass --bin-dir DIR)",
                    cfg.bin_dir.join(b).display()
                );
            }
        }
        std::fs::create_dir_all(&cfg.work_dir)
            .with_context(|| format!("create {}", cfg.work_dir.display()))?;
        let redis = tokio::task::spawn_blocking(|| RedisServer::start_with(&[]))
            .await
            .context("start redis-server")?;
        let redis_port = redis.port();
        let http = Http::default();
        let oport = free_port();
        let origin_url = format!("http://127.0.0.1:{oport}");
        let args: Vec<String> = [
            "--listen".to_string(),
            format!("127.0.0.1:{oport}"),
            "--latency-ms".into(),
            cfg.origin_latency_ms.to_string(),
            "--items".into(),
            cfg.items.to_string(),
            "--db-connections".into(),
            "32".into(),
        ]
        .into();
        let log = cfg.work_dir.join("origin-sim.log");
        let mut origin =
            ChildProc::spawn("origin-sim", &cfg.bin_dir.join("origin-sim"), &args, &log)?;
        origin
            .wait_ready(
                &http,
                &format!("{origin_url}/metrics"),
                Duration::from_secs(30),
            )
            .await?;
        let mut procs = Self {
            redis: Some(redis),
            redis_port,
            origin,
            gateways: Vec::new(),
            gateway_args: Vec::new(),
            admins: Vec::new(),
            bin_dir: cfg.bin_dir.clone(),
            work_dir: cfg.work_dir.clone(),
            http,
        };
        let mut urls = Vec::new();
        for i in 0..cfg.gateways {
            let (port, admin) = (free_port(), free_port());
            let args = [
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--admin-listen".into(),
                format!("127.0.0.1:{admin}"),
                "--instance".into(),
                format!("g{i}"),
                "--origin".into(),
                origin_url.clone(),
                "--redis".into(),
                format!("redis://127.0.0.1:{redis_port}"),
                "--mitigations".into(),
                "all".into(),
                "--admin-token".into(),
                ADMIN_TOKEN.into(),
                "--ttl".into(),
                humantime_ms(cfg.ttl),
                "--stale-ttl".into(),
                humantime_ms(cfg.stale_ttl),
                "--lock-ttl".into(),
                humantime_ms(cfg.lock_ttl),
                "--near-cache-ttl".into(),
                humantime_ms(cfg.near_cache_ttl),
            ];
            procs.gateway_args.push(args.into());
            procs.admins.push(format!("http://127.0.0.1:{admin}"));
            procs.gateways.push(None);
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        for i in 0..cfg.gateways {
            procs.start_gateway(i).await?;
        }
        let addrs = Addrs {
            gateways: urls,
            admins: procs.admins.clone(),
            origin: origin_url,
            admin_token: ADMIN_TOKEN.into(),
        };
        Ok((procs, addrs))
    }

    /// Start gateway `i` (again, on the same ports) and wait for `/readyz`.
    pub async fn start_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        let log = self.work_dir.join(format!("gateway-g{i}.log"));
        let name = format!("gateway-g{i}");
        let bin = self.bin_dir.join("gateway");
        let mut p = ChildProc::spawn(&name, &bin, &self.gateway_args[i], &log)?;
        let ready = format!("{}/readyz", self.admins[i]);
        p.wait_ready(&self.http, &ready, Duration::from_secs(30))
            .await?;
        self.gateways[i] = Some(p);
        Ok(())
    }

    /// SIGKILL gateway `i` (by PID) and reap it.
    pub fn kill_gateway(&mut self, i: usize) {
        drop(self.gateways[i].take());
    }

    pub fn gateway_pid(&self, i: usize) -> anyhow::Result<u32> {
        let g = self.gateways[i].as_ref();
        g.map(ChildProc::pid)
            .with_context(|| format!("gateway g{i} is not running"))
    }

    /// Kill redis-server (SIGKILL, by PID).
    pub fn kill_redis(&mut self) {
        drop(self.redis.take());
    }

    /// Start redis-server again on its port, empty (no persistence).
    pub async fn start_redis(&mut self) -> anyhow::Result<()> {
        let port = self.redis_port;
        let r = tokio::task::spawn_blocking(move || RedisServer::start_on(port, &[]))
            .await
            .context("restart redis-server")?;
        self.redis = Some(r);
        Ok(())
    }

    /// `redis-cli -p PORT args…`, its output trimmed.
    pub fn redis_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string()])
            .args(args)
            .output()
            .context("run redis-cli (Debian: redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// An error if origin-sim or a gateway that should run has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.origin.check_alive()?;
        for g in self.gateways.iter_mut().flatten() {
            g.check_alive()?;
        }
        Ok(())
    }
}

/// What a run produced: the report and where the files went.
#[derive(Debug)]
pub struct Outcome {
    pub report: report::Report,
    pub history: PathBuf,
    pub queries: PathBuf,
}

/// Run a campaign: start the processes, run the workload and the nemesis,
/// save the history and origin-sim's query log, check them, stop everything.
pub async fn run_campaign(cfg: &CampaignConfig) -> anyhow::Result<Outcome> {
    if cfg.gateways < 2 {
        bail!("a campaign needs at least 2 gateways");
    }
    let (mut procs, addrs) = Procs::start(cfg).await?;
    let recorder = Recorder::create(&cfg.history)?;
    let clock = Clock::start();
    recorder.record(Entry::Meta(cfg.meta(&clock)));
    let origin = addrs.origin.clone();
    let target = Target::new(addrs, recorder.clone(), clock, cfg.client_timeout);
    let http = Http::default();
    // The query log covers the campaign only.
    let reset = format!("{origin}/stats/queries");
    http.ok(http::Method::DELETE, &reset, None).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..cfg.clients {
        let (t, stop) = (target.clone(), stop.clone());
        let (seed, keys, think) = (cfg.seed, cfg.keys, cfg.think);
        clients.spawn(workload::client(
            id,
            seed,
            t,
            keys,
            Mix::default(),
            think,
            stop,
        ));
    }
    let progress = cfg.progress.then(|| {
        let (rec, stop) = (recorder.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (ops, faults) = rec.counts();
                let t = clock.elapsed().as_secs_f64();
                eprintln!("campaign {t:>6.1}s  {ops} operations, {faults} faults so far");
            }
        })
    });
    let schedule = Schedule {
        duration: cfg.duration,
        min_per_kind: cfg.profile.min_per_kind(),
        gap_ms: (1500, 2500),
        lock_ttl: cfg.lock_ttl,
        origin_latency_ms: cfg.origin_latency_ms,
        progress: cfg.progress,
    };
    // A quiet second before the first fault: the caches fill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut nemesis = Nemesis::new(cfg.seed, cfg.keys, cfg.items);
    let ran = nemesis.run(&mut procs, &target, &schedule).await;
    // A quiet second after the last one, then the clients stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    if let Some(p) = progress {
        p.abort();
    }
    ran?;
    procs.check_alive()?;
    let lines = recorder.finish()?;

    let body = http.get_ok(&format!("{origin}/stats/queries")).await?;
    let queries: OriginQueries = serde_json::from_slice(&body).context("origin /stats/queries")?;
    write_file(&cfg.queries, &body)?;
    drop(procs);

    let check = checker::check(&lines, &queries.queries, &CheckConfig::default());
    let report = report::Report::new(&check, &cfg.history, &cfg.queries);
    Ok(Outcome {
        report,
        history: cfg.history.clone(),
        queries: cfg.queries.clone(),
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Re-check a saved run: the history and the origin's query log.
pub fn check_files(
    history: &Path,
    queries: &Path,
    cfg: &CheckConfig,
) -> anyhow::Result<report::Report> {
    let lines = history::read(history)?;
    let text = std::fs::read(queries).with_context(|| format!("read {}", queries.display()))?;
    let q: OriginQueries = serde_json::from_slice(&text).context("queries JSON")?;
    let check = checker::check(&lines, &q.queries, cfg);
    Ok(report::Report::new(&check, history, queries))
}
