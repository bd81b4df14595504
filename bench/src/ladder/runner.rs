//! The one run procedure: start what a [`RunSpec`] describes (a fresh
//! origin-sim, then gateways or peers, on free loopback ports), prepare the
//! cache, drive the load phases, measure, and stop everything. Every child
//! is owned by a guard that kills it by PID when dropped: on success, on
//! error, on panic and on ctrl-c (the caller drops the ladder's future).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::Method;

use super::peers::find_peer_binary;
use super::record::{
    FencingTrial, LadderOptions, Measured, MetaSecond, Recovery, Run, StatusCounts,
};
use super::report;
use super::table::{COUNTERS, Fencing, Front, LAST_SECONDS, Measure, RunSpec, human};
use crate::load::{LoadConfig, LoadSummary, now_ms, run_load};
use crate::procs::{ChildProc, Http, RedisProc, free_port, metric_sum};
use crate::stats::{OriginQueries, OriginQuery};

/// Admin token the ladder gives its gateways.
const ADMIN_TOKEN: &str = "ladder-admin-token";

/// Starts, loads and measures the rows of the table.
pub struct Runner {
    /// The ladder's options.
    pub o: LadderOptions,
    /// The Redis server of the fleet rows, if one runs.
    pub redis: Option<RedisProc>,
    /// Where logs and peer configs go.
    pub work: PathBuf,
    /// Runs to make (for `[run i/N]`).
    pub total: usize,
    done: usize,
    started: Instant,
    http: Http,
}

/// A gateway or peer instance: its process, base URL and (gateways) admin URL.
struct Instance {
    proc_: ChildProc,
    url: String,
    admin: Option<String>,
}

struct Stack {
    origin: ChildProc,
    origin_url: String,
    fronts: Vec<Instance>,
    /// The first peer instance's config, as the report shows it.
    peer_config: Option<super::record::PeerConfig>,
}

impl Stack {
    fn targets(&self) -> Vec<String> {
        self.fronts.iter().map(|f| f.url.clone()).collect()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.origin.check_alive()?;
        self.fronts
            .iter_mut()
            .try_for_each(|f| f.proc_.check_alive())
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Runner {
    /// A runner for `o`, its children logging under `work`.
    pub fn new(o: LadderOptions, redis: Option<RedisProc>, work: PathBuf) -> Self {
        let (started, http) = (Instant::now(), Http::new());
        Self {
            o,
            redis,
            work,
            total: 0,
            done: 0,
            started,
            http,
        }
    }

    /// Progress on stderr: `[elapsed] [run i/N] rung: what`.
    pub fn line(&self, rung: &str, what: &str) {
        let n = (self.done + 1).min(self.total.max(1));
        let t = self.started.elapsed().as_secs_f64();
        eprintln!("[{t:>6.1}s] [run {n}/{}] {rung}: {what}", self.total);
    }

    /// Why `spec` cannot run on this machine, if it cannot.
    pub fn missing(&self, spec: &RunSpec) -> Option<String> {
        if spec.needs_redis() && self.redis.is_none() {
            return Some("redis-server is not on PATH: the fleet (gateways sharing one store and lock) needs it (Debian: apt-get install redis-server; scripts/demo.sh installs it when it can)".into());
        }
        match &spec.front {
            Front::Peer(v) if find_peer_binary(v.kind.binary()).is_none() => Some(format!(
                "{} is not installed on this machine (Debian: apt-get install --no-install-recommends {}; scripts/demo.sh installs it when it can)",
                v.kind.binary(),
                v.kind.package()
            )),
            _ => None,
        }
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.o.bin_dir.join(name)
    }

    async fn start(&mut self, spec: &RunSpec) -> anyhow::Result<Stack> {
        let redis_url = match (&mut self.redis, spec.needs_redis()) {
            (Some(r), true) => {
                r.flush().await?;
                Some(r.url())
            }
            (None, true) => bail!("this run needs redis-server, which is not running"),
            _ => None,
        };
        let oport = free_port()?;
        let origin_url = format!("http://127.0.0.1:{oport}");
        let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{oport}")];
        args.extend(spec.origin.flags());
        let log = self.work.join("origin-sim.log");
        let mut origin = ChildProc::spawn("origin-sim", &self.bin("origin-sim"), &args, &log)?;
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
            let (port, admin) = (free_port()?, free_port()?);
            let url = format!("http://127.0.0.1:{port}");
            let instance = match &spec.front {
                Front::Gateway { .. } => {
                    let (listen, admin_listen, name) = (
                        format!("127.0.0.1:{port}"),
                        format!("127.0.0.1:{admin}"),
                        format!("g{i}"),
                    );
                    let args = [
                        "--listen",
                        &listen,
                        "--admin-listen",
                        &admin_listen,
                        "--origin",
                        &stack.origin_url,
                    ];
                    let mut args: Vec<String> = args
                        .into_iter()
                        .chain(["--instance", &name, "--admin-token", ADMIN_TOKEN])
                        .map(String::from)
                        .collect();
                    args.extend(
                        redis_url
                            .iter()
                            .flat_map(|u| ["--redis".to_string(), u.clone()]),
                    );
                    args.extend(spec.gateway_flags());
                    let log = self.work.join(format!("gateway-{name}.log"));
                    let proc_ = ChildProc::spawn(
                        &format!("gateway-{name}"),
                        &self.bin("gateway"),
                        &args,
                        &log,
                    )?;
                    Instance {
                        proc_,
                        url,
                        admin: Some(format!("http://{admin_listen}")),
                    }
                }
                Front::Peer(v) => {
                    let bin = find_peer_binary(v.kind.binary()).context("peer binary")?;
                    let (proc_, config) = v.spawn(
                        &bin,
                        &self.work,
                        &format!("{}-{i}", spec.id),
                        (port, oport),
                        spec.ttl,
                    )?;
                    stack.peer_config.get_or_insert(config);
                    Instance {
                        proc_,
                        url,
                        admin: None,
                    }
                }
            };
            stack.fronts.push(instance);
        }
        for f in &mut stack.fronts {
            let ready = f
                .admin
                .as_ref()
                .map_or(format!("{}/__ready", f.url), |a| format!("{a}/readyz"));
            f.proc_
                .wait_ready(&self.http, &ready, Duration::from_secs(60))
                .await?;
        }
        Ok(stack)
    }

    /// Run one row: start, prepare, load, measure, stop.
    pub async fn run(&mut self, rung: &str, spec: &RunSpec) -> anyhow::Result<Run> {
        let label = &spec.label;
        let what = match &spec.front {
            Front::Gateway { redis, .. } => format!(
                "gateway(s) ({} store, --mitigations {})",
                if *redis { "redis" } else { "memory" },
                spec.mitigations()
            ),
            Front::Peer(v) => format!("{} (own cache each)", v.kind.binary()),
        };
        self.line(
            rung,
            &format!("{label}: starting origin-sim + {} × {what}", spec.instances),
        );
        let mut stack = self.start(spec).await?;
        let mut measured = Measured::default();
        let first = stack.targets().first().cloned().unwrap_or_default();
        for k in &spec.prewarm {
            self.http
                .get_ok(&format!("{first}/items/{k}"))
                .await
                .context("prewarm")?;
        }
        if spec.warm_burst > 0 {
            self.line(
                rung,
                &format!("{label}: warming {} keys at once", spec.warm_burst),
            );
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for k in 1..=spec.warm_burst {
                let (http, url) = (self.http.clone(), format!("{first}/items/{k}"));
                set.spawn(async move { http.get_ok(&url).await.map(|_| ()) });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            measured.warm_ms = Some(t.elapsed().as_millis() as u64);
        }
        let samples: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
        let sampler = matches!(spec.measure, Measure::Recovery(_))
            .then(|| self.sample_inflight(&stack.origin_url, Arc::clone(&samples)));
        let mut phases = Vec::new();
        for phase in &spec.load {
            let cfg = LoadConfig {
                targets: stack.targets(),
                origin: phase.origin.as_ref().map(|_| stack.origin_url.clone()),
                ..phase.clone()
            };
            let (d, c, t) = (human(cfg.duration), cfg.concurrency, cfg.targets.len());
            self.line(
                rung,
                &format!("{label}: load {d} × {c} clients on {t} target(s)"),
            );
            phases.push(run_load(&cfg, false).await?);
        }
        drop(sampler);
        if let Measure::Fencing(f) = &spec.measure {
            measured.fencing = Some(self.fencing(rung, &stack, f).await?);
        }
        stack.check_alive()?;
        let gateways = self.counters(&stack).await;
        let t0 = phases.first().map_or(0, |s| s.start_ms);
        match spec.measure {
            Measure::Statuses => {
                let s = &phases[0];
                let log = self.origin_log(&stack.origin_url, t0).await?;
                measured.statuses = Some(statuses(&log, s.start_ms, s.end_ms));
            }
            Measure::SecondsAbove(t) => {
                let above = phases[0]
                    .origin
                    .as_ref()
                    .map(|o| o.per_second.iter().filter(|q| **q > t).count());
                measured.seconds_above = above.map(|n| n as u64);
            }
            Measure::Recovery(ok_ms) => {
                let log = self
                    .origin_log(&stack.origin_url, t0.saturating_sub(1000))
                    .await?;
                let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
                measured.recovery = Some(recovery(&phases, &log, &samples, ok_ms));
            }
            Measure::Load | Measure::Fencing(_) => {}
        }
        measured.peer = stack.peer_config.take();
        drop(stack);
        if let Some(c) = measured.peer.as_ref().filter(|_| spec.instances == 1) {
            // The single-instance config, as used, next to the report.
            let path = self.o.out.join(&c.file);
            std::fs::create_dir_all(path.parent().unwrap_or(&self.o.out))?;
            std::fs::write(&path, &c.text).with_context(|| format!("write {}", path.display()))?;
        }
        let mut run = self.record(spec, phases, gateways, measured)?;
        if let Some(s) = &run.summary {
            let o = s.origin.clone().unwrap_or_default();
            let (b, q) = (&o.hot_bursts, o.max_queries_per_second);
            let (mean, max, p99, e) = (
                b.mean_per_boundary,
                b.max_per_boundary,
                s.latency.hot.p99_ms,
                s.failed_requests,
            );
            self.line(rung, &format!("{label}: done — hot-key origin queries per boundary mean {mean:.2} max {max}, max origin q/s {q}, hot p99 {p99:.1} ms, errors {e}"));
        }
        self.done += 1;
        if self.o.charts {
            run.chart = report::chart(&self.o.out, spec, &run);
        }
        Ok(run)
    }

    /// The run record; a peer's config (as the report shows it) is written
    /// under the output directory.
    fn record(
        &self,
        spec: &RunSpec,
        mut phases: Vec<LoadSummary>,
        gateways: Vec<BTreeMap<String, f64>>,
        measured: Measured,
    ) -> anyhow::Result<Run> {
        let (store, mut flags) = match &spec.front {
            Front::Gateway { redis, .. } => (
                if *redis { "redis" } else { "memory" }.to_string(),
                spec.gateway_flags(),
            ),
            Front::Peer(v) => (v.kind.package().to_string(), Vec::new()),
        };
        let single = phases.len() == 1;
        let summary = if single { phases.pop() } else { None };
        flags.extend(measured.peer.as_ref().map(|p| p.command.clone()));
        Ok(Run {
            id: spec.id.clone(),
            label: spec.label.clone(),
            mitigations: spec.mitigations(),
            instances: spec.instances,
            store,
            gateway_flags: flags,
            origin_flags: spec.origin.flags(),
            phases: if single {
                Vec::new()
            } else {
                spec.load.clone()
            },
            gateways,
            chart: None,
            summary,
            measured,
        })
    }

    /// Sample origin-sim's in-flight gauge every 500 ms into `samples`.
    fn sample_inflight(&self, origin: &str, samples: Arc<Mutex<Vec<(u64, f64)>>>) -> AbortOnDrop {
        let (http, url) = (self.http.clone(), format!("{origin}/metrics"));
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if let Ok((_, _, b)) = http
                    .request(Method::GET, &url, None, &[], Duration::from_secs(2))
                    .await
                {
                    let v =
                        metric_sum(&String::from_utf8_lossy(&b), "origin_inflight_queries", &[]);
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((now_ms(), v));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }

    async fn origin_log(&self, origin: &str, since_ms: u64) -> anyhow::Result<Vec<OriginQuery>> {
        let body = self
            .http
            .get_ok(&format!("{origin}/stats/queries?since_ms={since_ms}"))
            .await?;
        Ok(serde_json::from_slice::<OriginQueries>(&body)?.queries)
    }

    /// The [`COUNTERS`] of each gateway, from its `/metrics`.
    async fn counters(&self, stack: &Stack) -> Vec<BTreeMap<String, f64>> {
        let mut out = Vec::new();
        for (g, admin) in stack
            .fronts
            .iter()
            .filter_map(|f| Some((f, f.admin.as_ref()?)))
        {
            let text = match self.http.get_ok(&format!("{admin}/metrics")).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    eprintln!("warning: {}: cannot read metrics: {e:#}", g.proc_.name());
                    String::new()
                }
            };
            let labels = |l: &'static str| if l.is_empty() { vec![] } else { vec![l] };
            let sum = |(name, metric, l): &(&str, &str, &'static str)| {
                (name.to_string(), metric_sum(&text, metric, &labels(l)))
            };
            out.push(COUNTERS.iter().map(sum).collect());
        }
        out
    }

    /// One fencing trial (see the fencing section of the table).
    async fn fencing(
        &self,
        rung: &str,
        stack: &Stack,
        f: &Fencing,
    ) -> anyhow::Result<FencingTrial> {
        let (origin, g, key) = (&stack.origin_url, stack.targets(), f.key);
        let (slow, fast) = (f.slow.as_millis(), f.fast.as_millis());
        self.line(rung, &format!("item {key}: slow rebuild ({slow} ms) via g1, version bump, fast rebuild via g2 after the lock expired"));
        let config = |ms: u128| serde_json::json!({ "latency_ms": ms as u64 });
        let admin = format!("{origin}/admin/config");
        self.http
            .send_json(Method::PUT, &admin, &config(slow), &[])
            .await?;
        let get = |url: String| {
            let http = self.http.clone();
            async move {
                http.request(Method::GET, &url, None, &[], Duration::from_secs(20))
                    .await
            }
        };
        let t = Instant::now();
        let slow_get = get(format!("{}/items/{key}", g[0]));
        let slow_task = tokio::spawn(async move { (slow_get.await, t.elapsed()) });
        // Let the slow rebuild read the row, then bump it and speed the origin up.
        tokio::time::sleep(f.lock_ttl / 2).await;
        self.http
            .send_json(
                Method::PUT,
                &format!("{origin}/items/{key}"),
                &serde_json::json!({}),
                &[],
            )
            .await?;
        self.http
            .send_json(Method::PUT, &admin, &config(fast), &[])
            .await?;
        tokio::time::sleep((f.lock_ttl + f.lock_ttl / 2).saturating_sub(t.elapsed())).await;
        let (_, _, fast_body) = get(format!("{}/items/{key}", g[1])).await?;
        let (slow_res, slow_elapsed) = slow_task.await?;
        let slow_body = slow_res.map(|(_, _, b)| b).ok();
        tokio::time::sleep(f.fast * 4).await;
        let (_, headers, cached) = get(format!("{}/items/{key}", g[g.len() - 1])).await?;
        let direct = self.http.get_ok(&format!("{origin}/items/{key}")).await?;
        let version = |b: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(b)
                .ok()?
                .get("version")?
                .as_i64()
        };
        let status = headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(FencingTrial {
            key,
            slow_version: slow_body.as_deref().and_then(version),
            fast_version: version(&fast_body),
            cached_version: version(&cached),
            cached_status: status.to_string(),
            origin_version: version(&direct),
            slow_ms: slow_elapsed.as_millis() as u64,
        })
    }
}

/// Origin 404 and 200 answers per second of the load window.
fn statuses(log: &[OriginQuery], start: u64, end: u64) -> StatusCounts {
    let secs = ((end - start) / 1000 + 1) as usize;
    let mut st = StatusCounts {
        per_second_404: vec![0; secs],
        per_second_200: vec![0; secs],
        ..Default::default()
    };
    for q in log.iter().filter(|q| q.t_ms >= start && q.t_ms <= end) {
        let s = ((q.t_ms - start) / 1000) as usize;
        match q.status {
            404 => st.per_second_404[s] += 1,
            200 => st.per_second_200[s] += 1,
            _ => {}
        }
    }
    let n404: u64 = st.per_second_404.iter().sum();
    st.mean_404_qps = (n404 as f64 / ((end - start) as f64 / 1000.0) * 10.0).round() / 10.0;
    st
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
) -> Recovery {
    let [base, spike, after] = phases else {
        return Recovery::default();
    };
    let (t0, spike_start, spike_end, end) =
        (base.start_ms, spike.start_ms, spike.end_ms, after.end_ms);
    let secs = ((end.saturating_sub(t0)) / 1000 + 1) as usize;
    let mut tl: Vec<MetaSecond> = (0..secs)
        .map(|i| MetaSecond {
            second: i as u64,
            ..MetaSecond::default()
        })
        .collect();
    let mut fin_sum = vec![0u64; secs];
    let sec_of = |t: u64| (t >= t0 && t <= end).then(|| ((t - t0) / 1000) as usize);
    let mut base_durs = Vec::new();
    for q in queries {
        if let Some(s) = sec_of(q.t_ms) {
            tl[s].started += 1;
        }
        let f = q.t_ms + q.duration_ms;
        if let Some(s) = sec_of(f) {
            tl[s].finished += 1;
            fin_sum[s] += q.duration_ms;
        }
        if q.t_ms >= t0 && f < spike_start {
            base_durs.push(q.duration_ms);
        }
    }
    for (s, sum) in tl.iter_mut().zip(&fin_sum) {
        s.finished_mean_ms =
            (s.finished > 0).then(|| (*sum as f64 / s.finished as f64 * 10.0).round() / 10.0);
    }
    for (t, v) in samples {
        if let Some(s) = sec_of(*t) {
            tl[s].inflight = Some(*v);
        }
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
    let recovery = (spike_sec..secs)
        .find(|&i| tl[i..].iter().all(ok) && tl[i].finished > 0)
        .map(|i| ((t0 + i as u64 * 1000).saturating_sub(spike_end) as f64 / 100.0).round() / 10.0);
    let after_secs = || tl.iter().skip(spike_sec + 1);
    let (n5, s5) = tl
        .iter()
        .rev()
        .take(LAST_SECONDS)
        .fold((0u64, 0f64), |(n, s), x| {
            (
                n + x.finished,
                s + x.finished_mean_ms.unwrap_or(0.0) * x.finished as f64,
            )
        });
    let mean = |v: &[u64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }
    };
    Recovery {
        recovery_s: recovery,
        observed_after_s: (end - spike_end) as f64 / 1000.0,
        base_duration_ms: (mean(&base_durs) * 10.0).round() / 10.0,
        worst_after_duration_ms: after_secs()
            .filter_map(|s| s.finished_mean_ms)
            .fold(0.0, f64::max),
        last5_duration_ms: if n5 == 0 {
            0.0
        } else {
            (s5 / n5 as f64).round()
        },
        max_inflight_after: after_secs().filter_map(|s| s.inflight).fold(0.0, f64::max),
        inflight_at_end: samples.last().map_or(0.0, |s| s.1),
        after_errors: after.failed_requests,
        after_requests: after.requests,
        after_p99_ms: after.latency.all.p99_ms,
        retries: spike.retries + after.retries,
        timeline: tl,
    }
}
