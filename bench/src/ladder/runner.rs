//! The one run procedure: start what a [`RunSpec`] describes (a fresh
//! origin-sim, then gateways or peers, on free loopback ports), prepare the
//! cache, drive the load phases, measure, and stop everything. Every child
//! is owned by a guard that kills it by PID when dropped: on success, on
//! error, on panic and on ctrl-c (the caller drops the ladder's future).
//! The soak starts its origin and gateway through the same [`Launcher`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::Method;
use serde_json::json;
use tokio::task::JoinSet;

use super::peers::find_peer_binary;
use super::real_traffic::TrafficCase;
use super::record::{LadderOptions, Measured, MetaSecond, PeerConfig, Run};
use super::report;
use super::table::{
    Fencing, Front, HOT_KEY, LAST_SECONDS, Measure, RunSpec, Target, counters, human,
};
use crate::load::{LoadConfig, LoadSummary, now_ms, run_load, run_load_pinned};
use crate::traffic::{ScenarioRequest, TrafficConfig, origin_requests, run_traffic};
use stampede_layer::testing::RedisServer;

use crate::procs::{
    ChildProc, Http, command_calls, core_busy, cpu_time, display_path, free_port, metric_sum,
    pinned,
};
use crate::stats::{OriginQuery, max_in_flight, round};

/// Admin token the bench gives its gateways.
const ADMIN_TOKEN: &str = "ladder-admin-token";

/// Starts the processes of a run: origin-sim and gateways from `bin_dir`,
/// or peers; logs and peer configs under `work`.
pub struct Launcher {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    pub http: Http,
}

/// A gateway or peer instance: its process, base URL and (gateways) admin URL.
pub struct Instance {
    pub proc_: ChildProc,
    pub url: String,
    pub admin: Option<String>,
}

/// The processes of one run, and the first peer instance's config (as the
/// report shows it).
pub struct Stack {
    pub origin: ChildProc,
    pub origin_url: String,
    pub fronts: Vec<Instance>,
    pub peer_config: Option<PeerConfig>,
}

impl Stack {
    pub fn targets(&self) -> Vec<String> {
        self.fronts.iter().map(|f| f.url.clone()).collect()
    }

    /// Where `spec`'s load goes: the fronts, or the gateways' admin listeners.
    pub fn load_targets(&self, spec: &RunSpec) -> Vec<String> {
        match spec.target {
            Target::Front => self.targets(),
            Target::Healthz => self.fronts.iter().filter_map(|f| f.admin.clone()).collect(),
        }
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.origin.check_alive()?;
        let mut fronts = self.fronts.iter_mut();
        fronts.try_for_each(|f| f.proc_.check_alive())
    }
}

impl Launcher {
    /// A launcher for the binaries in `bin_dir`; an error naming the build
    /// command when one is missing.
    pub fn new(bin_dir: PathBuf, work: PathBuf) -> anyhow::Result<Self> {
        let missing = ["origin-sim", "gateway"].map(|b| bin_dir.join(b));
        if let Some(bin) = missing
            .iter()
            .find(|b| !b.is_file())
            .map(|b| display_path(b))
        {
            let build = "cargo build --release --workspace (or pass --bin-dir DIR)";
            bail!("missing {bin} — build it: {build}");
        }
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let http = Http::default();
        Ok(Self {
            bin_dir,
            work,
            http,
        })
    }

    /// Start origin-sim and the fronts of `spec` (gateways on `redis` when
    /// given) and wait until every one is ready.
    pub async fn start(&self, spec: &RunSpec, redis: Option<String>) -> anyhow::Result<Stack> {
        let (oport, id, bin) = (free_port(), &spec.id, |b| self.bin_dir.join(b));
        let origin_url = format!("http://127.0.0.1:{oport}");
        let listen = ["--listen".to_string(), format!("127.0.0.1:{oport}")];
        let args: Vec<String> = listen.into_iter().chain(spec.origin.flags()).collect();
        let log = self.work.join(format!("{id}-origin-sim.log"));
        let mut origin = ChildProc::spawn("origin-sim", &bin("origin-sim"), &args, &log)?;
        let ready = format!("{origin_url}/metrics");
        origin
            .wait_ready(&self.http, &ready, Duration::from_secs(30))
            .await?;
        let (fronts, peer_config) = (Vec::new(), None);
        let mut stack = Stack {
            origin,
            origin_url,
            fronts,
            peer_config,
        };
        for i in 1..=spec.instances {
            let (port, admin) = (free_port(), free_port());
            let (url, name) = (format!("http://127.0.0.1:{port}"), format!("g{i}"));
            let (proc_, admin) = match &spec.front {
                Front::Gateway { .. } => {
                    let (origin, token) = (&stack.origin_url, ADMIN_TOKEN);
                    let args = format!(
                        "--listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} --instance {name} --origin {origin} --admin-token {token}"
                    );
                    let redis = redis
                        .iter()
                        .flat_map(|u| ["--redis".to_string(), u.clone()]);
                    let args = args.split(' ').map(String::from).chain(redis);
                    let args: Vec<String> = args.chain(spec.gateway_flags()).collect();
                    let log = self.work.join(format!("{id}-gateway-{name}.log"));
                    let gateway = format!("gateway-{name}");
                    // Pinned: the runtime sized to its one core.
                    let cpu = spec.pinning.map(|p| p.server_cpu);
                    let env: &[_] = match cpu {
                        Some(_) => &[("TOKIO_WORKER_THREADS", "1")],
                        None => &[],
                    };
                    let (program, args) = pinned(cpu, &bin("gateway"), &args);
                    let proc_ = ChildProc::spawn_env(&gateway, &program, &args, env, &log)?;
                    (proc_, Some(format!("http://127.0.0.1:{admin}")))
                }
                Front::Peer(v) => {
                    let cpu = spec.pinning.map(|p| p.server_cpu);
                    let bin = find_peer_binary(v.kind.binary).context("peer binary")?;
                    let name = format!("{id}-{i}");
                    let (proc_, config) =
                        v.spawn(&bin, &self.work, &name, (port, oport), spec.ttl, cpu)?;
                    stack.peer_config.get_or_insert(config);
                    (proc_, None)
                }
            };
            stack.fronts.push(Instance { proc_, url, admin });
        }
        for f in &mut stack.fronts {
            let ready = f.admin.as_ref();
            let ready = ready.map_or(format!("{}/__ready", f.url), |a| format!("{a}/readyz"));
            f.proc_
                .wait_ready(&self.http, &ready, Duration::from_secs(60))
                .await?;
        }
        Ok(stack)
    }
}

/// Starts, loads and measures the rows of the table.
pub struct Runner {
    pub o: LadderOptions,
    /// The Redis server of the fleet rows, if one runs.
    pub redis: Option<RedisServer>,
    pub launcher: Launcher,
    /// Runs to make (for `[run i/N]`).
    pub total: usize,
    done: usize,
    started: Instant,
}

impl Runner {
    pub fn new(o: LadderOptions, redis: Option<RedisServer>, launcher: Launcher) -> Self {
        let (total, done, started) = (0, 0, Instant::now());
        Self {
            o,
            redis,
            launcher,
            total,
            done,
            started,
        }
    }

    /// Progress on stderr: `[elapsed] [run i/N] rung: what`.
    pub fn line(&self, rung: &str, what: &str) {
        let (i, n) = ((self.done + 1).min(self.total.max(1)), self.total);
        let t = self.started.elapsed().as_secs_f64();
        eprintln!("[{t:>6.1}s] [run {i}/{n}] {rung}: {what}");
    }

    /// Why `spec` cannot run on this machine, if it cannot.
    pub fn missing(&self, spec: &RunSpec) -> Option<String> {
        let how = "scripts/demo.sh installs it when it can";
        match &spec.front {
            _ if spec.needs_redis() && self.redis.is_none() => Some(format!(
                "redis-server is not on PATH: the fleet (gateways sharing one store and lock) needs it (Debian: apt-get install redis-server; {how})"
            )),
            Front::Peer(v) if find_peer_binary(v.kind.binary).is_none() => Some(format!(
                "{} is not installed on this machine (Debian: apt-get install --no-install-recommends {}; {how})",
                v.kind.binary, v.kind.package
            )),
            _ => None,
        }
    }

    /// Run one row: start, prepare, load, measure, stop.
    pub async fn run(&mut self, rung: &str, spec: &RunSpec) -> anyhow::Result<Run> {
        let (label, http) = (&spec.label, self.launcher.http.clone());
        let (store, what) = match &spec.front {
            Front::Gateway { redis, .. } => {
                let store = if *redis { "redis" } else { "memory" };
                let m = spec.mitigations();
                (
                    store,
                    format!("gateway(s) ({store} store, --mitigations {m})"),
                )
            }
            Front::Peer(v) => (
                v.kind.package,
                format!("{} (own cache each)", v.kind.binary),
            ),
        };
        let n = spec.instances;
        self.line(
            rung,
            &format!("{label}: starting origin-sim + {n} × {what}"),
        );
        let redis_url = match (&self.redis, spec.needs_redis()) {
            (Some(r), true) => {
                r.cli(&["FLUSHALL"]);
                Some(r.url())
            }
            (None, true) => bail!("this run needs redis-server, which is not running"),
            _ => None,
        };
        let mut stack = self.launcher.start(spec, redis_url).await?;
        let mut m = Measured::default();
        let first = stack.targets().first().cloned().unwrap_or_default();
        for k in &spec.prewarm {
            let url = format!("{first}/items/{k}");
            http.get_ok(&url).await.context("prewarm")?;
        }
        if spec.warm_burst > 0 {
            let keys = spec.warm_burst;
            self.line(rung, &format!("{label}: warming {keys} keys at once"));
            let t = Instant::now();
            let get = |url: String, http: Http| async move { http.get_ok(&url).await.map(|_| ()) };
            let gets: JoinSet<_> = (1..=keys)
                .map(|k| get(format!("{first}/items/{k}"), http.clone()))
                .collect();
            let done = gets.join_all().await.into_iter();
            done.collect::<anyhow::Result<()>>()?;
            m.set("warm_ms", t.elapsed().as_millis() as u64);
        }
        let samples: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
        let sampler = matches!(spec.measure, Measure::Recovery(_))
            .then(|| self.sample_inflight(&stack.origin_url, Arc::clone(&samples)));
        // Throughput runs: a warm-up load first, and the Redis commands the load cost.
        let (warmup, redis) = match &spec.measure {
            Measure::Throughput(w) => {
                (Some(*w), self.redis.as_ref().filter(|_| spec.needs_redis()))
            }
            _ => (None, None),
        };
        let mut phases = Vec::new();
        let load_cpu = spec.pinning.map(|p| p.load_cpu);
        for phase in &spec.load {
            let origin = phase.origin.as_ref().map(|_| stack.origin_url.clone());
            let (path_prefix, hot_fraction) = match spec.target {
                Target::Front => (phase.path_prefix.clone(), phase.hot_fraction),
                // `/healthz?1`: the key as a query the admin router ignores.
                Target::Healthz => ("/healthz?".to_string(), 1.0),
            };
            let cfg = LoadConfig {
                targets: stack.load_targets(spec),
                origin,
                path_prefix,
                hot_fraction,
                ..phase.clone()
            };
            let (d, c, t) = (human(cfg.duration), cfg.concurrency, cfg.targets.len());
            if let Some(duration) = warmup {
                self.line(
                    rung,
                    &format!("{label}: warm-up {} × {c} clients", human(duration)),
                );
                let warm = LoadConfig {
                    duration,
                    origin: None,
                    ..cfg.clone()
                };
                match load_cpu {
                    Some(cpu) => drop(run_load_pinned(&warm, cpu).await?),
                    None => drop(run_load(&warm, false).await?),
                }
            }
            let commands = |r: &RedisServer| command_calls(&r.cli(&["INFO", "commandstats"]));
            let before = redis.map(commands);
            // Throughput runs: the CPU the fronts (an nginx master with its
            // workers) and the load generator used per request. Unpinned,
            // the load generator is this process; pinned, its own thread
            // (measured by `run_load_pinned`), and the server's core is
            // measured whole too (`core_us`: what ran on it, the kernel's
            // softirq work for the server's sockets included).
            //
            // Issue #22 asked why this rung read 15.5 µs per hit where wrk
            // read ~30. Not missing threads or children: /proc/PID/stat sums
            // every thread of the gateway, live or exited, and the gateway
            // has no children (nginx's workers are added). The ~30 µs was
            // another quantity — one core's wall time ÷ hits/s — which on a
            // shared VM counts whatever else ran on that core; the process's
            // own CPU per hit under wrk, pinned, was 14–19 µs. The clients do
            // differ, though: the gateway made one recvfrom and one writev per
            // request under both (perf stat), yet spent ~30 % less CPU per
            // request under this load generator than under wrk in 4 paired
            // runs. ~20 % of the gateway's CPU is the kernel waking the
            // reader of each response (sock_def_readable, run inside the
            // gateway's writev on loopback); a client still busy with its
            // previous answers needs fewer wake-ups than wrk, idle in
            // epoll_wait. So the rung pins the same way as
            // scripts/hit-wrk.sh and reports the same columns, and hits/s
            // from either client is compared only with the same client.
            let fronts = stack.fronts.iter().map(|f| cpu_time(f.proc_.pid(), true));
            let server_core = spec.pinning.map(|p| p.server_cpu);
            let cpu = || {
                let core = server_core.map(core_busy).unwrap_or_default();
                [
                    fronts.clone().sum(),
                    cpu_time(std::process::id(), false),
                    core,
                ]
            };
            let cpu_before = warmup.map(|_| cpu());
            self.line(
                rung,
                &format!("{label}: load {d} × {c} clients on {t} target(s)"),
            );
            let (summary, loader_cpu) = match load_cpu {
                Some(cpu) => {
                    let (summary, used) = run_load_pinned(&cfg, cpu).await?;
                    (summary, Some(used))
                }
                None => (run_load(&cfg, false).await?, None),
            };
            if let Some(before) = cpu_before {
                let (after, n) = (cpu(), summary.requests.max(1) as f64);
                let us = |used: Duration| round(used.as_secs_f64() * 1e6 / n, 1);
                let used = |i: usize| after[i].saturating_sub(before[i]);
                m.set("cpu_us", us(used(0)));
                m.set("loader_cpu_us", us(loader_cpu.unwrap_or_else(|| used(1))));
                if let Some(p) = spec.pinning {
                    m.set("core_us", us(used(2)));
                    m.set("server_cpu", p.server_cpu as u64);
                    m.set("load_cpu", p.load_cpu as u64);
                }
            }
            phases.push(summary);
            if let (Some(r), Some(before)) = (redis, before) {
                m.set("redis_commands", commands(r).saturating_sub(before));
            }
        }
        drop(sampler);
        if let Measure::Fencing(f) = &spec.measure {
            self.fencing(rung, &stack, f, &mut m).await?;
        }
        if let Measure::Traffic(t) = &spec.measure {
            self.traffic(rung, &spec.label, &stack, t, &mut m).await?;
        }
        stack.check_alive()?;
        let gateways = self.counters(&stack).await;
        let (t0, origin) = (phases.first().map_or(0, |s| s.start_ms), &stack.origin_url);
        match spec.measure {
            Measure::Recovery(ok_ms) => {
                let log = http.origin_log(origin, t0.saturating_sub(1000)).await?;
                let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
                recovery(&phases, &log, &samples, ok_ms, &mut m);
            }
            Measure::InFlight => {
                let bound = Duration::from_millis(spec.origin.latency_ms * 2 + 5000);
                self.settle(origin, bound).await;
                let (log, end) = (http.origin_log(origin, t0).await?, phases[0].end_ms);
                let hot = log.iter().filter(|q| q.id == HOT_KEY && q.t_ms <= end);
                m.set("hot_max_in_flight", max_in_flight(hot));
            }
            Measure::Load | Measure::Fencing(_) | Measure::Throughput(_) | Measure::Traffic(_) => {}
        }
        m.peer = stack.peer_config.take();
        drop(stack);
        if let Some(c) = m.peer.as_ref().filter(|_| spec.instances == 1) {
            // The single-instance config, as used, next to the report.
            let path = self.o.out.join(&c.file);
            std::fs::create_dir_all(path.parent().unwrap_or(&self.o.out))?;
            std::fs::write(&path, &c.text).with_context(|| format!("write {}", path.display()))?;
        }
        let single = phases.len() == 1;
        let mut flags = match spec.front {
            Front::Gateway { .. } => spec.gateway_flags(),
            Front::Peer(_) => vec![],
        };
        flags.extend(m.peer.as_ref().map(|p| p.command.clone()));
        let mut run = Run {
            id: spec.id.clone(),
            label: spec.label.clone(),
            mitigations: spec.mitigations(),
            instances: spec.instances,
            store: store.into(),
            gateway_flags: flags,
            origin_flags: spec.origin.flags(),
            phases: if single { vec![] } else { spec.load.clone() },
            gateways,
            chart: None,
            summary: if single { phases.pop() } else { None },
            measured: m,
        };
        if let Some(s) = &run.summary {
            let (o, l) = (s.origin.clone().unwrap_or_default(), &s.latency.hot);
            let (b, rps, e) = (&o.hot_bursts, s.requests_per_sec, s.failed_requests);
            let (mean, max, q, p99) = (
                b.mean_per_boundary,
                b.max_per_boundary,
                o.max_queries_per_second,
                l.p99_ms,
            );
            self.line(rung, &format!("{label}: done — {rps:.0} requests/s, hot-key origin queries per boundary mean {mean:.2} max {max}, max origin q/s {q}, hot p99 {p99:.1} ms, errors {e}"));
        }
        self.done += 1;
        if self.o.charts {
            run.chart = report::chart(&self.o.out, spec, &run);
        }
        Ok(run)
    }

    /// origin-sim's in-flight gauge, if it answers.
    async fn inflight(&self, origin: &str) -> Option<f64> {
        let text = self.launcher.http.text(&format!("{origin}/metrics")).await;
        text.ok()
            .map(|t| metric_sum(&t, "origin_inflight_queries", &[]))
    }

    /// Sample origin-sim's in-flight gauge every 500 ms into `samples` (until dropped).
    fn sample_inflight(&self, origin: &str, samples: Arc<Mutex<Vec<(u64, f64)>>>) -> JoinSet<()> {
        let (http, url) = (self.launcher.http.clone(), format!("{origin}/metrics"));
        let mut task = JoinSet::new();
        task.spawn(async move {
            loop {
                if let Ok(text) = http.text(&url).await {
                    let v = metric_sum(&text, "origin_inflight_queries", &[]);
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((now_ms(), v));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        task
    }

    /// Wait (at most `bound`) until origin-sim has no query in flight.
    async fn settle(&self, origin: &str, bound: Duration) {
        let start = Instant::now();
        while start.elapsed() < bound && self.inflight(origin).await != Some(0.0) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The [`counters`] of each gateway, from its `/metrics`.
    async fn counters(&self, stack: &Stack) -> Vec<BTreeMap<String, f64>> {
        let mut out = Vec::new();
        for f in &stack.fronts {
            let Some(admin) = &f.admin else { continue };
            let text = self.launcher.http.text(&format!("{admin}/metrics")).await;
            let text = text.unwrap_or_else(|e| {
                eprintln!("warning: {}: cannot read metrics: {e:#}", f.proc_.name());
                String::new()
            });
            let sum = |(name, metric, label): &(&str, &str, &str)| {
                (name.to_string(), metric_sum(&text, metric, &[label]))
            };
            out.push(counters().iter().map(sum).collect());
        }
        out
    }

    /// One real-traffic trial: the case's clients, what they saw, and the
    /// origin's requests for the case's route while they ran (see [`super::real_traffic`]).
    async fn traffic(
        &self,
        rung: &str,
        label: &str,
        stack: &Stack,
        t: &TrafficCase,
        m: &mut Measured,
    ) -> anyhow::Result<()> {
        let (http, origin, targets) = (&self.launcher.http, &stack.origin_url, stack.targets());
        let path = &t.clients.path;
        let cfg = TrafficConfig {
            targets,
            ..t.clients.clone()
        };
        let how = cfg
            .duration
            .map_or("at once".into(), |d| format!("looping {}", human(d)));
        let c = cfg.clients;
        self.line(rung, &format!("{label}: {c} clients {how} on GET {path}"));
        let s = run_traffic(&cfg).await?;
        // Every request the clients caused has finished at the origin (or 10 s passed).
        let bound = Duration::from_secs(10);
        let log = origin_requests(http, origin, t.route, s.start_ms, bound).await?;
        let during: Vec<&ScenarioRequest> =
            log.requests.iter().filter(|r| r.t_ms <= s.end_ms).collect();
        let mut by_encoding = BTreeMap::<String, u64>::new();
        for r in &during {
            let e = r.content_encoding.as_deref().unwrap_or("identity");
            *by_encoding.entry(e.into()).or_default() += 1;
        }
        m.set("origin_requests", during.len());
        let by_encoding = by_encoding.iter().map(|(e, n)| format!("{e} {n}"));
        m.set(
            "origin_by_encoding",
            by_encoding.collect::<Vec<_>>().join(", "),
        );
        if t.in_flight {
            let as_query = |r: &&ScenarioRequest| OriginQuery {
                t_ms: r.t_ms,
                duration_ms: r.duration_ms,
                ..OriginQuery::default()
            };
            let intervals: Vec<OriginQuery> = during.iter().map(as_query).collect();
            m.set("max_in_flight", max_in_flight(&intervals));
        }
        m.set("requests", s.requests);
        m.set("served", s.served);
        m.set("errors", s.errors);
        m.set("first_byte_max_ms", s.first_byte.max_ms);
        m.set("total_max_ms", s.total.max_ms);
        m.set("bodies", super::real_traffic::bodies(&s));
        m.set("traffic", serde_json::to_value(&s)?);
        let (o, served, n, e) = (during.len(), s.served, s.requests, s.errors);
        let (fb, total) = (s.first_byte.max_ms, s.total.max_ms);
        self.line(rung, &format!("{label}: done — origin requests {o}, served {served} of {n}, errors {e}, slowest first byte {fb:.0} ms, slowest client {total:.0} ms"));
        Ok(())
    }

    /// One fencing trial (see the fencing section of the table).
    async fn fencing(
        &self,
        rung: &str,
        stack: &Stack,
        f: &Fencing,
        m: &mut Measured,
    ) -> anyhow::Result<()> {
        let (origin, g, key, http) = (
            &stack.origin_url,
            stack.targets(),
            f.key,
            &self.launcher.http,
        );
        let (slow, fast) = (f.slow.as_millis() as u64, f.fast.as_millis() as u64);
        self.line(rung, &format!("item {key}: slow rebuild ({slow} ms) via g1, version bump, fast rebuild via g2 after the lock expired"));
        let (admin, item) = (
            format!("{origin}/admin/config"),
            format!("{origin}/items/{key}"),
        );
        let (admin, item) = (&admin, &item);
        let latency = |ms: u64| async move {
            let body = json!({ "latency_ms": ms });
            http.ok(Method::PUT, admin, Some(&body)).await
        };
        latency(slow).await?;
        let get = |url: String| {
            let http = http.clone();
            async move {
                http.request(Method::GET, &url, None, Duration::from_secs(20))
                    .await
            }
        };
        let t = Instant::now();
        let slow_get = get(format!("{}/items/{key}", g[0]));
        let slow_task = tokio::spawn(async move { (slow_get.await, t.elapsed()) });
        // Let the slow rebuild read the row, then bump it and speed the origin up.
        tokio::time::sleep(f.lock_ttl / 2).await;
        http.ok(Method::PUT, item, Some(&json!({}))).await?;
        latency(fast).await?;
        tokio::time::sleep((f.lock_ttl + f.lock_ttl / 2).saturating_sub(t.elapsed())).await;
        let (_, _, fast_body) = get(format!("{}/items/{key}", g[1])).await?;
        let (slow_res, slow_elapsed) = slow_task.await?;
        tokio::time::sleep(f.fast * 4).await;
        let (_, headers, cached) = get(format!("{}/items/{key}", g[g.len() - 1])).await?;
        let direct = http.get_ok(item).await?;
        let version = |b: &[u8]| {
            let v = serde_json::from_slice::<serde_json::Value>(b).ok()?;
            v.get("version")?.as_i64()
        };
        let status = headers.get("cache-status").and_then(|v| v.to_str().ok());
        m.set("key", key);
        m.set(
            "slow_version",
            slow_res.ok().and_then(|(_, _, b)| version(&b)),
        );
        m.set("slow_ms", slow_elapsed.as_millis() as u64);
        m.set("fast_version", version(&fast_body));
        m.set("cached_version", version(&cached));
        m.set("cached_status", format!("`{}`", status.unwrap_or("")));
        m.set("origin_version", version(&direct));
        Ok(())
    }
}

/// The metastable analysis of phases `[base, spike, after]`: per second
/// since the base phase started, origin queries started and finished (with
/// their mean duration), the sampled in-flight count and client errors; and
/// the recovery: the first second at or after the spike's end from which
/// every second's finishing queries average ≤ `ok_ms`.
fn recovery(
    phases: &[LoadSummary],
    queries: &[OriginQuery],
    samples: &[(u64, f64)],
    ok_ms: u64,
    m: &mut Measured,
) {
    let [base, spike, after] = phases else { return };
    let (t0, spike_end, end) = (base.start_ms, spike.end_ms, after.end_ms);
    let secs = ((end.saturating_sub(t0)) / 1000 + 1) as usize;
    let second = |i| MetaSecond {
        second: i as u64,
        ..MetaSecond::default()
    };
    let mut tl: Vec<MetaSecond> = (0..secs).map(second).collect();
    let mut fin_sum = vec![0u64; secs];
    let sec_of = |t: u64| (t0..=end).contains(&t).then(|| ((t - t0) / 1000) as usize);
    let mut base_durs = Vec::new();
    for q in queries {
        let f = q.t_ms + q.duration_ms;
        if let Some(s) = sec_of(q.t_ms) {
            tl[s].started += 1;
        }
        if let Some(s) = sec_of(f) {
            (tl[s].finished, fin_sum[s]) = (tl[s].finished + 1, fin_sum[s] + q.duration_ms);
        }
        if q.t_ms >= t0 && f < spike.start_ms {
            base_durs.push(q.duration_ms);
        }
    }
    for (s, sum) in tl.iter_mut().zip(&fin_sum) {
        s.finished_mean_ms = (s.finished > 0).then(|| round(*sum as f64 / s.finished as f64, 1));
    }
    for (s, v) in samples.iter().filter_map(|(t, v)| Some((sec_of(*t)?, v))) {
        tl[s].inflight = Some(*v);
    }
    for c in [spike, after] {
        let off = ((c.start_ms.saturating_sub(t0)) / 1000) as usize;
        for ts in c
            .timeline
            .iter()
            .filter(|ts| off + (ts.second as usize) < secs)
        {
            tl[off + ts.second as usize].requests += ts.requests;
            tl[off + ts.second as usize].errors += ts.errors;
        }
    }
    let spike_sec = ((spike_end - t0) / 1000) as usize;
    let ok = |s: &MetaSecond| s.finished_mean_ms.is_none_or(|m| m <= ok_ms as f64);
    let recovered = (spike_sec..secs).find(|&i| tl[i..].iter().all(ok) && tl[i].finished > 0);
    let observed = (end - spike_end) as f64 / 1000.0;
    let recovered_after = |i| (t0 + i as u64 * 1000).saturating_sub(spike_end) as f64 / 1000.0;
    m.set(
        "recovery",
        match recovered {
            Some(i) => format!("{:.1} s", recovered_after(i)),
            None => format!("not recovered within {observed:.0} s"),
        },
    );
    let after_secs = || tl.iter().skip(spike_sec + 1);
    let last = tl.iter().rev().take(LAST_SECONDS);
    let (n, sum) = last.fold((0, 0.0), |(n, s), x| {
        (
            n + x.finished,
            s + x.finished_mean_ms.unwrap_or(0.0) * x.finished as f64,
        )
    });
    let base_mean = base_durs.iter().sum::<u64>() as f64 / base_durs.len().max(1) as f64;
    m.set("base_ms", round(base_mean, 1));
    m.set(
        "worst_ms",
        after_secs()
            .filter_map(|s| s.finished_mean_ms)
            .fold(0.0, f64::max),
    );
    m.set("last_ms", (sum / n.max(1) as f64).round());
    m.set(
        "max_inflight",
        after_secs().filter_map(|s| s.inflight).fold(0.0, f64::max) as u64,
    );
    m.set("inflight_at_end", samples.last().map_or(0, |s| s.1 as u64));
    m.set(
        "after_errors",
        format!("{} / {}", after.failed_requests, after.requests),
    );
    m.set("after_p99_ms", after.latency.all.p99_ms);
    m.set("retries", spike.retries + after.retries);
    m.timeline = tl;
}
