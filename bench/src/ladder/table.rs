//! The table of experiments: every rung of the ladder as data. The plan
//! (what runs, in which order, how many), the runner (how each row is set
//! up, loaded and measured) and the report (sections, prose, columns) all
//! read [`sections`]; the numbers in the prose come from the same variables
//! that configure the runs.
//!
//! Adding a rung is adding a [`Section`] to [`sections`]: its rows are
//! [`RunSpec`]s (gateways or a peer, origin, TTL, load phases), its columns
//! [`Col`]s over the load summary (which includes what origin-sim's query
//! log says about the load window) and the gateway counters. A number
//! neither gives needs a [`Measure`] variant whose function in `runner`
//! records it as a named value, shown by a [`Col::Val`] column: the
//! slow-origin rung, for instance, is two fleet rows with a 3 s origin
//! measured by [`Measure::InFlight`] (value `hot_max_in_flight`).

use std::time::Duration;

use serde_json::{Value, json};

use super::peers::{self, Variant};
use super::record::{LadderOptions, Profile, Results, Run};
use crate::load::LoadConfig;
use crate::stats::SLOW_THRESHOLD;

/// The hot key of every load.
pub const HOT_KEY: u64 = 1;
/// Seed of the load's key choices, so every rung draws the same sequence.
pub const SEED: u64 = 20_240_611;
/// The metastable rung's "last seconds" of origin query durations.
pub const LAST_SECONDS: usize = 5;

/// The rows of the before/after table: `(--rows name, label, --mitigations)`.
pub const TABLE_ROWS: [(&str, &str, &str); 8] = [
    ("naive", "naive", "none"),
    ("single-flight", "+single-flight", "single-flight"),
    ("lock", "+lock", "single-flight,lock"),
    ("swr", "+SWR", "single-flight,lock,swr"),
    ("xfetch", "+XFetch", "single-flight,lock,swr,xfetch"),
    ("jitter", "+jitter", "single-flight,lock,swr,xfetch,jitter"),
    (
        "negative",
        "+negative",
        "single-flight,lock,swr,xfetch,jitter,negative",
    ),
    ("full", "full stack", "all"),
];

/// A gateway counter scraped after each run: its name (also the column
/// header), metric and label filter; `in_table`: a column of the
/// before/after table's counters.
pub struct GatewayCounter {
    pub name: &'static str,
    pub metric: &'static str,
    pub labels: &'static str,
    pub in_table: bool,
}

const fn counter(
    name: &'static str,
    metric: &'static str,
    labels: &'static str,
    in_table: bool,
) -> GatewayCounter {
    GatewayCounter {
        name,
        metric,
        labels,
        in_table,
    }
}

/// Every gateway counter the runs record.
pub const COUNTERS: [GatewayCounter; 8] = [
    counter(
        "lock acquired",
        "stampede_lock_acquisitions_total",
        r#"result="acquired""#,
        true,
    ),
    counter(
        "lock contended",
        "stampede_lock_acquisitions_total",
        r#"result="contended""#,
        true,
    ),
    counter(
        "lock waits timed out",
        "stampede_lock_wait_seconds_count",
        r#"result="timeout""#,
        true,
    ),
    counter(
        "SWR refreshes",
        "stampede_background_refreshes_total",
        r#"trigger="swr""#,
        true,
    ),
    counter(
        "XFetch refreshes",
        "stampede_background_refreshes_total",
        r#"trigger="xfetch""#,
        true,
    ),
    counter(
        "fencing rejections",
        "stampede_fencing_rejections_total",
        "",
        true,
    ),
    counter("shed (503)", "stampede_shed_total", "", true),
    counter(
        "origin requests",
        "stampede_origin_requests_total",
        "",
        false,
    ),
];

/// The gateway counters: `(name, metric, label filter)`.
pub fn counters() -> Vec<(&'static str, &'static str, &'static str)> {
    COUNTERS
        .iter()
        .map(|c| (c.name, c.metric, c.labels))
        .collect()
}

/// The counters the before/after table shows, in order.
fn table_counters() -> impl Iterator<Item = &'static str> {
    COUNTERS.iter().filter(|c| c.in_table).map(|c| c.name)
}

/// The report's prose (`prose.md`), one block per `<!-- key -->` marker.
const PROSE: &str = include_str!("prose.md");

/// Prose block `key` with every `{name}` of `vars` (a JSON object) filled in.
pub fn prose(key: &str, vars: &Value) -> String {
    let marker = format!("<!-- {key} -->\n");
    let start = PROSE.find(&marker).map(|i| i + marker.len());
    let text = &PROSE[start.unwrap_or_else(|| panic!("no prose block {key}"))..];
    let text = text.split("\n<!-- ").next().unwrap_or_default().trim();
    let vars = vars.as_object().into_iter().flatten();
    vars.fold(text.to_string(), |t, (k, v)| {
        let v = v.as_str().map_or_else(|| v.to_string(), String::from);
        t.replace(&format!("{{{k}}}"), &v)
    })
}

impl Profile {
    /// Load duration of a protocol run.
    pub fn duration(self) -> Duration {
        Duration::from_secs(if self == Profile::Quick { 10 } else { 20 })
    }

    /// Rungs run unless `--rungs` says otherwise.
    pub fn rungs(self) -> Vec<String> {
        let all = rung_names().into_iter().map(String::from);
        all.filter(|r| self == Profile::Full || r == "table")
            .collect()
    }

    /// Rows of the before/after table run unless `--rows` says otherwise.
    pub fn rows(self) -> Vec<String> {
        let quick = ["naive", "single-flight", "lock", "swr", "full"];
        let all = TABLE_ROWS.iter().map(|r| r.0);
        all.filter(|r| self == Profile::Full || quick.contains(r))
            .map(String::from)
            .collect()
    }

    /// Output directory unless `--out` says otherwise: the quick profile
    /// writes under `target/` (never tracked, never the committed results).
    pub fn out_dir(self) -> &'static str {
        match self {
            Profile::Quick => "target/ladder-quick",
            Profile::Full => "docs/results",
        }
    }
}

impl LadderOptions {
    /// The profile's defaults (3 gateways, TTL 2 s, no charts), no rung
    /// chosen yet (see [`Profile::rungs`]).
    pub fn of(profile: Profile) -> Self {
        Self {
            profile,
            out: profile.out_dir().into(),
            duration: profile.duration(),
            ttl: Duration::from_secs(2),
            bin_dir: Default::default(),
            rungs: vec![],
            rows: profile.rows(),
            instances: 3,
            charts: false,
            command: String::new(),
        }
    }
}

/// One section of the report, and the runs behind it.
pub struct Section {
    /// `--rungs` name; empty for a section that only summarises others.
    pub rung: &'static str,
    /// Heading (without its number).
    pub heading: String,
    pub parts: Vec<Part>,
}

/// A piece of a section.
pub enum Part {
    Text(String),
    /// A table, one row per run that ran, with the prose before it.
    Table(String, Vec<Col>, Vec<RunSpec>),
    /// Prose from measured values: `(results, the section's runs)`.
    Note(fn(&Results, &[&Run]) -> String),
}

impl Section {
    pub fn new(rung: &'static str, heading: impl Into<String>, parts: Vec<Part>) -> Self {
        Self {
            rung,
            heading: heading.into(),
            parts,
        }
    }

    /// Every row of every table of the section, in order.
    pub fn rows(&self) -> impl Iterator<Item = &RunSpec> {
        self.parts.iter().flat_map(|p| match p {
            Part::Table(_, _, rows) => rows.as_slice(),
            _ => &[],
        })
    }
}

/// The origin-sim a run starts: `--items`, `--latency-ms`,
/// `--db-connections`, further flags.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginSpec {
    pub items: u64,
    pub latency_ms: u64,
    pub db_connections: u32,
    pub flags: Vec<String>,
}

impl Default for OriginSpec {
    fn default() -> Self {
        Self {
            items: 1000,
            latency_ms: 200,
            db_connections: 16,
            flags: vec![],
        }
    }
}

impl OriginSpec {
    /// Its flags.
    pub fn flags(&self) -> Vec<String> {
        let (i, l, d) = (self.items, self.latency_ms, self.db_connections);
        let f = format!("--items {i} --latency-ms {l} --db-connections {d}");
        f.split(' ')
            .map(String::from)
            .chain(self.flags.iter().cloned())
            .collect()
    }

    /// Queries per second its pool can serve.
    pub fn capacity_qps(&self) -> u64 {
        u64::from(self.db_connections) * 1000 / self.latency_ms
    }
}

/// What stands between the load and the origin.
#[derive(Debug, Clone, PartialEq)]
pub enum Front {
    /// stampede-layer gateways: `--mitigations`, store and lock in Redis (or
    /// in-process), further flags.
    Gateway {
        mitigations: String,
        redis: bool,
        flags: Vec<String>,
    },
    /// nginx or Varnish instances, each with its own cache.
    Peer(Variant),
}

/// What a run measures beyond the load summary and the gateway counters,
/// recorded as named values (`Measured::values`).
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    Load,
    /// Three load phases (base, spike, after), the origin's in-flight count
    /// sampled: how long after the spike until origin queries finish within
    /// this many ms again, and the figures around it.
    Recovery(u64),
    /// No load: one scripted fencing trial.
    Fencing(Fencing),
    /// Once the origin has finished every query: the most hot-key origin
    /// queries in flight at the same time during the load.
    InFlight,
    /// After a warm-up load of this length (not recorded): the Redis
    /// commands the measured load cost, and the CPU time per request of the
    /// fronts (`cpu_us`) and of the load generator (`loader_cpu_us`).
    Throughput(Duration),
    /// No protocol load: real-traffic clients ([`crate::traffic`]) on one
    /// scenario route, and what the origin's request log says about it (the
    /// real-traffic rung, [`super::real_traffic`]).
    Traffic(Box<super::real_traffic::TrafficCase>),
}

/// A fencing trial: item `key` is rebuilt through g1 at `slow` origin
/// latency (longer than `lock_ttl`), bumped at the origin, then rebuilt
/// through g2 at `fast` latency once g1's lock has expired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fencing {
    pub key: u64,
    pub slow: Duration,
    pub fast: Duration,
    pub lock_ttl: Duration,
}

/// Where a throughput run's processes run (issue #22): each on a core of its
/// own, so hits/s measures the server, not the pair. The server — the
/// fronts, each runtime sized to that one core (gateways with
/// `TOKIO_WORKER_THREADS=1`, nginx with one worker process) — on
/// `server_cpu`; the load generator, a thread of the bench with a
/// single-threaded runtime of its own (like `wrk -t1`), on `load_cpu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pinning {
    pub server_cpu: usize,
    pub load_cpu: usize,
}

/// The hit-path rung's placement: the server on CPU 0, the load on CPU 1.
pub const HIT_PINNING: Pinning = Pinning {
    server_cpu: 0,
    load_cpu: 1,
};

/// What the load of a run is sent to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The fronts' listeners (`/items/…`).
    Front,
    /// The gateways' admin listeners, `GET /healthz`: the same server code
    /// without the stack, the proxy service or the store — the floor a hit
    /// is measured against.
    Healthz,
}

/// One row: how its run is set up, loaded and measured.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Run id (also the chart's file stem); rows with one id share one run.
    pub id: String,
    pub label: String,
    /// The row's setup column.
    pub setup: String,
    pub front: Front,
    /// How many gateways or peers (the load goes round-robin).
    pub instances: usize,
    pub origin: OriginSpec,
    /// The cache TTL.
    pub ttl: Duration,
    /// Keys read once through the first instance before the load.
    pub prewarm: Vec<u64>,
    /// Keys `1..=N` filled by one burst of concurrent GETs before the load (timed).
    pub warm_burst: u64,
    /// Load phases (targets and origin URL filled in when run).
    pub load: Vec<LoadConfig>,
    /// Where the load goes.
    pub target: Target,
    pub measure: Measure,
    /// Server and load generator each on its own core (`None`: wherever
    /// the scheduler puts them).
    pub pinning: Option<Pinning>,
}

impl RunSpec {
    /// One gateway with the in-process store.
    pub fn gateway(id: &str, label: &str, m: &str, ttl: Duration, load: &LoadConfig) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            setup: format!("`{m}`"),
            front: Front::Gateway {
                mitigations: m.into(),
                redis: false,
                flags: vec![],
            },
            instances: 1,
            origin: OriginSpec::default(),
            ttl,
            prewarm: vec![],
            warm_burst: 0,
            load: vec![load.clone()],
            target: Target::Front,
            measure: Measure::Load,
            pinning: None,
        }
    }

    /// `n` gateways sharing one Redis.
    pub fn fleet(mut self, n: usize) -> Self {
        self.instances = n;
        if let Front::Gateway { redis, .. } = &mut self.front {
            *redis = true;
        }
        self
    }

    /// Further gateway flags.
    pub fn flags(mut self, more: &[&str]) -> Self {
        if let Front::Gateway { flags, .. } = &mut self.front {
            flags.extend(more.iter().map(|s| s.to_string()));
        }
        self
    }

    pub fn labelled(mut self, label: impl Into<String>, setup: &str) -> Self {
        (self.label, self.setup) = (label.into(), setup.into());
        self
    }

    pub fn measure(mut self, m: Measure) -> Self {
        self.measure = m;
        self
    }

    /// Server and load generator each on its own core.
    pub fn pinned(mut self, p: Pinning) -> Self {
        self.pinning = Some(p);
        self
    }

    /// The hot key read once before the load (so its first miss is an expiry).
    fn prewarmed(mut self) -> Self {
        self.prewarm = vec![HOT_KEY];
        self
    }

    /// Whether it needs the Redis server.
    pub fn needs_redis(&self) -> bool {
        matches!(self.front, Front::Gateway { redis: true, .. })
    }

    /// `--mitigations` (or the peer's settings).
    pub fn mitigations(&self) -> String {
        match &self.front {
            Front::Gateway { mitigations, .. } => mitigations.clone(),
            Front::Peer(v) => v.label(),
        }
    }

    /// Gateway flags beyond addresses: `--ttl` (none when the TTL is zero:
    /// the gateway's default, the origin's headers decide), `--mitigations`,
    /// the rest.
    pub fn gateway_flags(&self) -> Vec<String> {
        let ttl = ["--ttl".into(), human(self.ttl)];
        let ttl = ttl.into_iter().filter(|_| !self.ttl.is_zero());
        let mut f: Vec<String> = ttl.collect();
        f.extend(["--mitigations".into(), self.mitigations()]);
        if let Front::Gateway { flags, .. } = &self.front {
            f.extend(flags.iter().cloned());
        }
        f
    }
}

impl RunSpec {
    /// [`gateway_flags`](Self::gateway_flags) without `--ttl` (a setup
    /// column that names what the row changes).
    pub fn flags_without_ttl(&self) -> Vec<String> {
        let mut f = self.gateway_flags();
        if f.first().is_some_and(|x| x == "--ttl") {
            f.drain(..2);
        }
        f
    }
}

/// One table row: the row as planned and its run.
pub struct Row<'a> {
    pub spec: &'a RunSpec,
    pub run: &'a Run,
}

/// A column of a section's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Col {
    Label,
    /// The row label as its run recorded it (the hit-path rung's nginx row
    /// names the worker count it ran with, which changed with issue #22).
    RunLabel,
    Name,
    Mitigations,
    Setup,
    Store,
    HotMean,
    BoundaryMean,
    HotMax,
    Boundaries,
    PerTtl,
    MaxQps,
    Total,
    OriginQueries,
    HotQueries,
    /// Origin answers with this status: total, mean and max per second.
    Status(&'static str),
    StatusMean(&'static str),
    StatusMax(&'static str),
    BodyBytes,
    HotP50,
    HotP99,
    OtherP50,
    OtherP99,
    P50,
    P99,
    Slow,
    HotSlow,
    MissRate,
    Misses,
    HotMisses,
    Errors,
    Requests,
    Rps,
    RedisPerRequest,
    Ttl,
    /// Seconds in which more origin queries than this started.
    SecondsAbove(u64),
    /// The metastable run's origin query ms over its last [`LAST_SECONDS`].
    LastMs,
    Chart,
    /// A gateway counter (its name in [`counters`]), summed over the fleet.
    Counter(&'static str),
    /// A value the run's [`Measure`] recorded, and its header.
    Val(&'static str, &'static str),
}

impl Col {
    /// Its header.
    pub fn head(self) -> String {
        use Col::*;
        let slow = SLOW_THRESHOLD.as_millis();
        match self {
            Label | RunLabel => "row",
            Name | Setup => "setup",
            Mitigations => "--mitigations",
            Store => "store",
            HotMean => "hot-key origin queries per boundary: mean",
            BoundaryMean => "per boundary mean",
            HotMax => "max",
            Boundaries => "boundaries",
            PerTtl => "hot-key origin queries per TTL",
            MaxQps => "max origin q/s",
            Total => "total origin queries",
            OriginQueries => "origin queries",
            HotQueries => "hot-key origin queries",
            Status(code) => return format!("origin {code} queries"),
            StatusMean(code) => return format!("{code} q/s mean"),
            StatusMax(code) => return format!("{code} q/s max"),
            BodyBytes => "origin body bytes sent",
            HotP50 => "hot p50 ms",
            HotP99 => "hot p99 ms",
            OtherP50 => "other p50 ms",
            OtherP99 => "other p99 ms",
            P50 => "p50 ms",
            P99 => "p99 ms",
            Slow => return format!(">{slow} ms"),
            HotSlow => return format!("hot >{slow} ms"),
            MissRate => "miss rate",
            Misses => "misses",
            HotMisses => "hot-key misses",
            Errors => "errors",
            Requests => "requests",
            Rps => "requests/s",
            RedisPerRequest => "Redis commands per request",
            Ttl => "TTL",
            SecondsAbove(t) => return format!("seconds above {t} q/s"),
            LastMs => return format!("last {LAST_SECONDS} s"),
            Chart => "chart",
            Counter(name) | Val(_, name) => name,
        }
        .to_string()
    }

    /// Right-aligned (a number).
    pub fn num(self) -> bool {
        !matches!(
            self,
            Col::Label
                | Col::RunLabel
                | Col::Name
                | Col::Mitigations
                | Col::Setup
                | Col::Store
                | Col::Chart
        )
    }

    /// Its cell in `r`.
    pub fn cell(self, r: &Row<'_>) -> String {
        use Col::*;
        let s = r.run.summary.as_ref();
        let o = s.and_then(|s| s.origin.as_ref());
        let count = |n: u64| n.to_string();
        match self {
            Label | Name => r.spec.label.clone(),
            RunLabel => r.run.label.clone(),
            Mitigations | Setup => r.spec.setup.clone(),
            Store => r.run.store.clone(),
            HotMean | BoundaryMean => opt(o, |o| f2(o.hot_bursts.mean_per_boundary)),
            HotMax => opt(o, |o| count(o.hot_bursts.max_per_boundary)),
            Boundaries => opt(o, |o| count(o.hot_bursts.boundaries)),
            PerTtl => opt(o.and_then(|o| o.hot_queries_per_ttl), f2),
            MaxQps => opt(o, |o| count(o.max_queries_per_second)),
            Total | OriginQueries => opt(o, |o| count(o.total_queries)),
            HotQueries => opt(o, |o| count(o.hot_queries)),
            Status(code) => opt(o, |o| count(o.status.get(code).copied().unwrap_or(0))),
            StatusMean(code) => opt(o, |o| {
                let n = o.status.get(code).copied().unwrap_or(0) as f64;
                f1(n * 1000.0 / (o.window_end_ms - o.window_start_ms).max(1) as f64)
            }),
            StatusMax(code) => {
                let per_second = o.and_then(|o| o.status_per_second.get(code));
                count(
                    per_second
                        .and_then(|v| v.iter().max().copied())
                        .unwrap_or(0),
                )
            }
            BodyBytes => opt(o, |o| count(o.body_bytes)),
            HotP50 => opt(s, |s| f1(s.latency.hot.p50_ms)),
            HotP99 => opt(s, |s| f1(s.latency.hot.p99_ms)),
            OtherP50 => opt(s, |s| f1(s.latency.other.p50_ms)),
            OtherP99 => opt(s, |s| f1(s.latency.other.p99_ms)),
            P50 => opt(s, |s| f1(s.latency.all.p50_ms)),
            P99 => opt(s, |s| f1(s.latency.all.p99_ms)),
            Slow => opt(s, |s| count(s.latency.all.over_150ms)),
            HotSlow => opt(s, |s| count(s.latency.hot.over_150ms)),
            MissRate => opt(s.and_then(|s| s.cache.all.miss_rate), |v| {
                format!("{:.1} %", v * 100.0)
            }),
            Misses => opt(s, |s| count(s.cache.all.misses)),
            HotMisses => opt(s, |s| count(s.cache.hot.misses)),
            Errors => opt(s, |s| count(s.failed_requests)),
            Requests => opt(s, |s| count(s.requests)),
            Rps => opt(s, |s| format!("{:.0}", s.requests_per_sec)),
            RedisPerRequest => {
                let commands = r
                    .run
                    .measured
                    .values
                    .get("redis_commands")
                    .and_then(|v| v.as_f64());
                opt(commands.zip(s), |(c, s)| {
                    per_request(c / s.requests.max(1) as f64)
                })
            }
            Ttl => opt(s.and_then(|s| s.config.ttl), human),
            SecondsAbove(t) => opt(o, |o| {
                o.per_second.iter().filter(|q| **q > t).count().to_string()
            }),
            Chart => opt(r.run.chart.as_ref(), |c| format!("[chart]({c})")),
            Counter(name) => r.run.counter(name).to_string(),
            LastMs => Val("last_ms", "").cell(r),
            Val(key, _) => opt(r.run.measured.values.get(key), |v| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if n.is_f64() => f1(n.as_f64().unwrap_or_default()),
                serde_json::Value::Null => "–".into(),
                v => v.to_string(),
            }),
        }
    }
}

/// `2s`, `500ms`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

/// A per-request ratio: two decimals, or three significant digits below 0.1
/// (a near cache takes Redis commands per request far below 0.01).
fn per_request(x: f64) -> String {
    if x == 0.0 || x >= 0.1 {
        f2(x)
    } else {
        let decimals = (2 - x.log10().floor() as i32).max(2) as usize;
        format!("{x:.decimals$}")
    }
}

pub(crate) fn opt<T>(x: Option<T>, f: impl FnOnce(T) -> String) -> String {
    x.map_or_else(|| "–".into(), f)
}

/// The before/after columns (sections 1 and 9), `second` after the label.
fn standard(second: Col) -> Vec<Col> {
    use Col::*;
    let cols = [
        HotMean, HotMax, Boundaries, PerTtl, MaxQps, Total, HotP50, HotP99,
    ];
    let more = [OtherP50, OtherP99, Slow, MissRate, Errors, Requests, Chart];
    [Label, second]
        .into_iter()
        .chain(cols)
        .chain(more)
        .collect()
}

/// The columns printed to the terminal: the headline.
pub const HEADLINE: [Col; 6] = {
    use Col::*;
    [Label, HotMean, HotMax, HotP99, HotSlow, Errors]
};

/// The load of a protocol run: 50 clients, 95 % to the hot key, the rest
/// over 1..=1000, the options' duration and TTL, the fixed seed.
pub fn protocol_load(o: &LadderOptions) -> LoadConfig {
    LoadConfig {
        concurrency: 50,
        duration: o.duration,
        hot_fraction: 0.95,
        keys: 1000,
        hot_key: HOT_KEY,
        ttl: Some(o.ttl),
        seed: Some(SEED),
        ..LoadConfig::default()
    }
}

/// A load in words (metastable prose).
fn describe(l: &LoadConfig) -> String {
    let think = match l.think_time {
        d if d.is_zero() => "no think time".to_string(),
        d => format!("{} think time", human(d)),
    };
    let keys = match l.hot_fraction {
        0.0 => format!("all keys over 1..={} (cold)", l.keys),
        h => format!("{:.0}% hot key, rest over 1..={}", h * 100.0, l.keys),
    };
    let (c, t, r, b) = (l.concurrency, human(l.timeout), l.retries, human(l.backoff));
    format!("{c} clients, {think}, {keys}, timeout {t}, {r} retries, {b} backoff")
}

/// Every `--rungs` name, in table order.
pub fn rung_names() -> Vec<&'static str> {
    let sections = sections(&LadderOptions::of(Profile::Full));
    let rungs = sections.iter().map(|s| s.rung);
    rungs.filter(|r| !r.is_empty()).collect()
}

/// What every rung's runs start from: the options, the protocol load and
/// origin-sim's defaults.
struct Plan<'a> {
    o: &'a LadderOptions,
    quick: bool,
    /// The protocol load ([`protocol_load`]).
    p: LoadConfig,
    /// origin-sim as the protocol runs it.
    base: OriginSpec,
}

impl<'a> Plan<'a> {
    fn new(o: &'a LadderOptions) -> Self {
        let (quick, p) = (o.profile == Profile::Quick, protocol_load(o));
        let base = OriginSpec::default();
        Self { o, quick, p, base }
    }

    /// One gateway (in-process store), the protocol load and TTL.
    fn gw(&self, id: &str, label: &str, m: &str) -> RunSpec {
        RunSpec::gateway(id, label, m, self.o.ttl, &self.p)
    }

    /// Row `key` of the before/after table ([`TABLE_ROWS`]): the fleet.
    fn row(&self, key: &str) -> RunSpec {
        let row = TABLE_ROWS.iter().find(|r| r.0 == key);
        let (k, label, m) = row.expect("a TABLE_ROWS name");
        self.gw(&format!("table-{k}"), label, m)
            .fleet(self.o.instances)
    }

    /// The origin's capacity in queries per second.
    fn threshold(&self) -> u64 {
        self.base.capacity_qps()
    }
}

/// The multi-key rung: `keys` keys, filled by one burst, written together
/// and expiring together, without and with TTL jitter.
pub struct MultiKey {
    pub keys: u64,
    /// origin-sim's pool: the whole burst at once.
    pub pool: u32,
    /// `--jitter` of the jitter row.
    pub jitter: &'static str,
    /// TTL and load duration: `(quick, full)`.
    pub ttl_s: (u64, u64),
    pub duration_s: (u64, u64),
}

pub const MULTI_KEY: MultiKey = MultiKey {
    keys: 200,
    pool: 256,
    jitter: "0.2",
    ttl_s: (4, 10),
    duration_s: (10, 25),
};

/// The negative rung: `keys` ids over an origin with `items` items (the
/// rest absent), cached 404s for `ttl`.
pub struct Negative {
    pub items: u64,
    pub keys: u64,
    pub ttl: Duration,
}

pub const NEGATIVE: Negative = Negative {
    items: 100,
    keys: 200,
    ttl: Duration::from_secs(5),
};

/// The XFetch rung's hot-key rows: `(id, --mitigations, --xfetch-beta)`,
/// and its cold-key rows: `(id, --mitigations)`.
pub const XFETCH_HOT: [(&str, &str, Option<&str>); 3] = [
    ("xfetch-hot-off", "single-flight,lock", None),
    ("xfetch-hot-on", "single-flight,lock,xfetch", Some("1")),
    (
        "xfetch-hot-beta03",
        "single-flight,lock,xfetch",
        Some("0.3"),
    ),
];
pub const XFETCH_COLD: [(&str, &str); 2] = [
    ("xfetch-cold-off", "single-flight"),
    ("xfetch-cold-on", "single-flight,xfetch"),
];

/// The fencing rung: one trial per item of `keys`, the gateways' TTL `ttl`.
pub struct FencingRung {
    pub trial: Fencing,
    pub keys: [u64; 3],
    pub ttl: Duration,
}

pub const FENCING: FencingRung = FencingRung {
    trial: Fencing {
        key: 0,
        slow: Duration::from_millis(1500),
        fast: Duration::from_millis(50),
        lock_ttl: Duration::from_millis(300),
    },
    keys: [7, 8, 9],
    ttl: Duration::from_secs(30),
};

/// The metastable rung: a normal load, a spike, a normal load again (phase
/// seconds `(quick, full)`), over `items` ids with retries.
pub struct Metastable {
    pub phases_s: ((u64, u64, u64), (u64, u64, u64)),
    pub items: u64,
    pub clients: usize,
    pub retries: u32,
    pub timeout: Duration,
    pub backoff: Duration,
    pub think: Duration,
    pub spike_clients: usize,
}

pub const METASTABLE: Metastable = Metastable {
    phases_s: ((3, 4, 12), (5, 6, 30)),
    items: 20_000,
    clients: 20,
    retries: 3,
    timeout: Duration::from_millis(500),
    backoff: Duration::from_millis(10),
    think: Duration::from_millis(50),
    spike_clients: 400,
};

impl Metastable {
    /// Seconds of the base, spike and after phases.
    fn phases(&self, quick: bool) -> (u64, u64, u64) {
        if quick {
            self.phases_s.0
        } else {
            self.phases_s.1
        }
    }

    /// The normal load, `secs` long.
    fn normal(&self, p: &LoadConfig, secs: u64) -> LoadConfig {
        LoadConfig {
            concurrency: self.clients,
            duration: Duration::from_secs(secs),
            keys: self.items,
            retries: self.retries,
            timeout: self.timeout,
            backoff: self.backoff,
            think_time: self.think,
            origin: None,
            ..p.clone()
        }
    }

    /// The spike: every client at once on cold keys, no think time.
    fn spike(&self, p: &LoadConfig, secs: u64) -> LoadConfig {
        LoadConfig {
            concurrency: self.spike_clients,
            hot_fraction: 0.0,
            think_time: Duration::ZERO,
            seed: Some(SEED + 1),
            ..self.normal(p, secs)
        }
    }

    /// An origin query this fast again (ms) counts as recovered.
    fn ok_ms(base: &OriginSpec) -> u64 {
        base.latency_ms * 3 / 2
    }
}

/// The revalidation rung: origin-sim's `max-age`, validators off and on.
pub const REVALIDATION_MAX_AGE: u64 = 2;

/// The slow-origin rung: origin queries of `latency_ms` (a pool of `pool`,
/// so they never queue) against a lock TTL of `lock_ttl`, for at most
/// `max_duration`.
pub struct SlowOrigin {
    pub latency_ms: u64,
    pub lock_ttl: Duration,
    pub pool: u32,
    pub max_duration: Duration,
}

pub const SLOW_ORIGIN: SlowOrigin = SlowOrigin {
    latency_ms: 3000,
    lock_ttl: Duration::from_secs(2),
    pool: 64,
    max_duration: Duration::from_secs(15),
};

/// The numbers of the prose (`prose.md`), from the same data that
/// configures the runs.
fn prose_vars(pl: &Plan<'_>) -> Value {
    let (o, p, base) = (pl.o, &pl.p, &pl.base);
    let (b, sp, a) = METASTABLE.phases(pl.quick);
    let (f, mk, neg, slow) = (&FENCING, &MULTI_KEY, &NEGATIVE, &SLOW_ORIGIN);
    json!({
        "clients": p.concurrency, "n": o.instances, "hot_key": HOT_KEY, "base_ms": base.latency_ms,
        "pool": base.db_connections, "hot_pct": format!("{:.0}", p.hot_fraction * 100.0),
        "duration": human(p.duration), "ttl": human(o.ttl), "threshold": pl.threshold(),
        "mk_keys": mk.keys, "mk_pool": mk.pool,
        "rows_in_order": TABLE_ROWS.map(|r| r.1).join(", "),
        "neg_items": neg.items, "neg_keys": neg.keys, "neg_ttl": human(neg.ttl),
        "cold_think": human(o.ttl), "f_lock": human(f.trial.lock_ttl), "f_ttl": human(f.ttl),
        "f_slow": human(f.trial.slow), "f_fast": human(f.trial.fast), "b": b, "sp": sp, "a": a,
        "normal": describe(&METASTABLE.normal(p, b)), "spike": describe(&METASTABLE.spike(p, sp)),
        "ok_ms": Metastable::ok_ms(base),
        "nginx_lock": human(peers::NGINX_LOCK_BOUND), "max_age": REVALIDATION_MAX_AGE,
        "slow_duration": human(o.duration.min(slow.max_duration)), "slow_ms": slow.latency_ms,
        "slow_pool": slow.pool, "slow_lock_ttl": human(slow.lock_ttl),
    })
}

/// The table: every section of the report, every run behind it.
pub fn sections(o: &LadderOptions) -> Vec<Section> {
    let pl = Plan::new(o);
    let v = prose_vars(&pl);
    let t = |key: &str| prose(key, &v);
    vec![
        before_after(&pl, t("table")),
        scope(&pl),
        multi_key(&pl, t("multi-key")),
        negative(&pl, t("negative")),
        xfetch(&pl, t("xfetch-hot"), t("xfetch-cold")),
        fencing(&pl, t("fencing")),
        metastable(&pl, t("metastable")),
        charts(),
        peers_section(&pl, t("peers"), t("peers-drivers")),
        revalidation(&pl, t("revalidation")),
        slow_origin(&pl, t("slow-origin")),
        hit_path(o, &pl.p),
        super::real_traffic::section(o),
    ]
}

/// §1: one mitigation added per row, on the fleet.
fn before_after(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let chosen = TABLE_ROWS
        .iter()
        .filter(|r| pl.o.rows.iter().any(|x| x == r.0));
    let rows: Vec<RunSpec> = chosen.map(|r| pl.row(r.0)).collect();
    let counters = table_counters().map(Counter);
    Section::new(
        "table",
        format!(
            "Before/after, one mitigation added per row ({} gateways, one Redis)",
            pl.o.instances
        ),
        vec![
            Part::Table(String::new(), standard(Mitigations), rows.clone()),
            Part::Table(
                "Gateway counters of the same runs (summed over the fleet):".into(),
                [Label].into_iter().chain(counters).collect(),
                rows,
            ),
            Part::Note(|res, _| {
                let chart = res.overview_chart.as_ref();
                chart.map_or_else(String::new, |c| format!("![naive vs full stack]({c})"))
            }),
            Part::Text(text),
        ],
    )
}

/// Single-flight per process, the lock per fleet.
fn scope(pl: &Plan<'_>) -> Section {
    use Col::*;
    let n = pl.o.instances;
    Section::new(
        "scope",
        "Scope: single-flight is per process, the lock is per fleet",
        vec![Part::Table(
            String::new(),
            vec![Name, Store, HotMean, HotMax, PerTtl, HotP99, Slow, Chart],
            vec![
                pl.gw(
                    "scope-single-flight-x1",
                    "single-flight × 1 instance",
                    "single-flight",
                ),
                pl.row("single-flight")
                    .labelled(format!("single-flight × {n} instances"), ""),
                pl.row("lock")
                    .labelled(format!("single-flight + lock × {n} instances"), ""),
                pl.gw(
                    "scope-swr-no-lock",
                    &format!("single-flight + SWR, no lock × {n} instances"),
                    "single-flight,swr",
                )
                .fleet(n),
            ],
        )],
    )
}

/// Keys written together expire together ([`MULTI_KEY`]).
fn multi_key(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let mk = &MULTI_KEY;
    let ttl = Duration::from_secs(if pl.quick { mk.ttl_s.0 } else { mk.ttl_s.1 });
    let load = LoadConfig {
        duration: Duration::from_secs(if pl.quick {
            mk.duration_s.0
        } else {
            mk.duration_s.1
        }),
        hot_fraction: 0.0,
        keys: mk.keys,
        ttl: Some(ttl),
        ..pl.p.clone()
    };
    let run = |id: &str, label: &str, m: &str| {
        let s = RunSpec::gateway(id, label, m, ttl, &load).flags(&["--jitter", mk.jitter]);
        let mut s = s;
        (s.origin.db_connections, s.warm_burst) = (mk.pool, mk.keys);
        s
    };
    let above = SecondsAbove(pl.threshold());
    Section::new(
        "multi-key",
        format!(
            "Multi-key: {} keys written together expire together",
            mk.keys
        ),
        vec![
            Part::Table(
                text,
                vec![Label, Ttl, MaxQps, above, Total, P99, Slow, Errors, Chart],
                vec![
                    run(
                        "multikey-no-jitter",
                        "no jitter (single-flight)",
                        "single-flight",
                    ),
                    run(
                        "multikey-jitter",
                        &format!("+jitter {} (single-flight,jitter)", mk.jitter),
                        "single-flight,jitter",
                    ),
                ],
            ),
            Part::Note(|_, runs| {
                let warm = runs.iter().filter_map(|r| r.measured.values.get("warm_ms"));
                let warm: Vec<String> = warm.map(|m| m.to_string()).collect();
                format!("The warm bursts took {} ms.", warm.join(" / "))
            }),
        ],
    )
}

/// A miss storm on absent ids ([`NEGATIVE`]).
fn negative(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let neg = &NEGATIVE;
    let load = LoadConfig {
        hot_fraction: 0.0,
        keys: neg.keys,
        ..pl.p.clone()
    };
    let run = |id: &str, label: &str, m: &str| {
        let s = RunSpec::gateway(id, label, m, pl.o.ttl, &load);
        let mut s = s.flags(&["--negative-ttl", &human(neg.ttl)]);
        s.origin.items = neg.items;
        s
    };
    Section::new(
        "negative",
        "Negative: a miss storm on ids that do not exist",
        vec![Part::Table(
            text,
            vec![Label, Status("404"), StatusMean("404"), StatusMax("404")]
                .into_iter()
                .chain([Status("200"), P99, Errors, Chart])
                .collect(),
            vec![
                run(
                    "negative-off",
                    "single-flight (no negative caching)",
                    "single-flight",
                ),
                run(
                    "negative-on",
                    "single-flight,negative",
                    "single-flight,negative",
                ),
            ],
        )],
    )
}

/// A hot key on the fleet (filled first), a cold key read once a TTL
/// ([`XFETCH_HOT`], [`XFETCH_COLD`]).
fn xfetch(pl: &Plan<'_>, hot_text: String, cold_text: String) -> Section {
    use Col::*;
    let (ttl, n) = (pl.o.ttl, pl.o.instances);
    let hot = XFETCH_HOT.map(|(id, m, beta)| {
        let flag = beta.map_or(String::new(), |b| format!(", --xfetch-beta {b}"));
        let s = pl
            .gw(id, &format!("hot key: {m}{flag}"), m)
            .fleet(n)
            .prewarmed();
        beta.map_or(s.clone(), |b| s.flags(&["--xfetch-beta", b]))
    });
    let cold = LoadConfig {
        concurrency: 1,
        duration: pl.o.duration.max(ttl * 8),
        hot_fraction: 1.0,
        think_time: ttl,
        ..pl.p.clone()
    };
    let cold =
        XFETCH_COLD.map(|(id, m)| RunSpec::gateway(id, &format!("cold key: {m}"), m, ttl, &cold));
    let refreshes = Counter("XFetch refreshes");
    Section::new(
        "xfetch",
        "XFetch: refresh before the cliff — on a hot key only",
        vec![
            Part::Table(
                hot_text,
                vec![
                    Name,
                    HotMisses,
                    PerTtl,
                    BoundaryMean,
                    HotMax,
                    refreshes,
                    HotP99,
                    HotSlow,
                    Chart,
                ],
                hot.into(),
            ),
            Part::Table(
                cold_text,
                vec![Name, Requests, Misses, MissRate, OriginQueries, P50, Chart],
                cold.into(),
            ),
        ],
    )
}

/// A rebuild slower than the lock TTL ([`FENCING`]).
fn fencing(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let f = &FENCING;
    let trials = f.keys.map(|key| {
        let id = format!("fencing-{key}");
        let s = RunSpec::gateway(&id, &key.to_string(), "all", f.ttl, &pl.p);
        let s = s
            .fleet(pl.o.instances.max(2))
            .flags(&["--lock-ttl", &human(f.trial.lock_ttl)]);
        let measure = Measure::Fencing(Fencing { key, ..f.trial });
        RunSpec {
            load: vec![],
            measure,
            ..s
        }
    });
    Section::new(
        "fencing",
        "Fencing: a rebuild slower than the lock TTL",
        vec![
            Part::Table(
                text,
                vec![
                    Val("key", "item"),
                    Val("slow_version", "slow rebuild answered version"),
                    Val("slow_ms", "its duration ms"),
                    Val("fast_version", "fast rebuild answered version"),
                    Val("cached_version", "cached GET version"),
                    Val("cached_status", "its Cache-Status"),
                    Val("origin_version", "origin version"),
                ],
                trials.into(),
            ),
            Part::Note(fencing_result),
        ],
    )
}

/// The fencing trials' outcome: rejections per gateway, newest version cached.
fn fencing_result(_: &Results, runs: &[&Run]) -> String {
    let n = runs.iter().map(|r| r.gateways.len()).max().unwrap_or(0);
    let rejections = |i: usize| -> f64 {
        let per = runs.iter().filter_map(|r| r.gateways.get(i));
        per.filter_map(|g| g.get("fencing rejections")).sum()
    };
    let per: Vec<f64> = (0..n).map(rejections).collect();
    let newest = runs.iter().all(|r| {
        let v = |k| r.measured.values.get(k).filter(|v| !v.is_null());
        v("cached_version").is_some() && v("cached_version") == v("origin_version")
    });
    let (total, newest) = (per.iter().sum::<f64>(), if newest { "yes" } else { "no" });
    let v = json!({ "per": format!("{per:?}"), "total": total.to_string(), "newest": newest });
    prose("fencing-result", &v)
}

/// A retry storm after a spike, without and with the gate ([`METASTABLE`]).
fn metastable(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let m = &METASTABLE;
    let (b, sp, a) = m.phases(pl.quick);
    let ok_ms = Metastable::ok_ms(&pl.base);
    let run = |id: &str, label: &str, mitigations: &str, extra: &[&str]| {
        let mut s = pl
            .gw(id, label, mitigations)
            .flags(extra)
            .measure(Measure::Recovery(ok_ms));
        let phases = vec![m.normal(&pl.p, b), m.spike(&pl.p, sp), m.normal(&pl.p, a)];
        (s.load, s.origin.items) = (phases, m.items);
        s.setup = format!("{label} (`{}`)", s.flags_without_ttl().join(" "));
        s
    };
    let gate = pl.base.db_connections.to_string();
    Section::new(
        "metastable",
        "Metastable failure: a retry storm keeps the origin pinned",
        vec![Part::Table(
            text,
            vec![
                Setup,
                Val("recovery", "recovery after the spike"),
                Val("base_ms", "origin query ms: base"),
                Val("worst_ms", "worst after spike"),
                LastMs,
                Val("max_inflight", "origin in flight: max after spike"),
                Val("inflight_at_end", "at end"),
                Val("after_errors", "after-spike errors / requests"),
                Val("after_p99_ms", "after-spike p99 ms"),
                Val("retries", "retries"),
                Counter("shed (503)"),
                Chart,
            ],
            vec![
                run("metastable-no-gate", "without the gate", "none", &[]),
                run(
                    "metastable-gate",
                    "with the overload gate",
                    "overload-gate",
                    &["--gate-max-inflight", &gate],
                ),
            ],
        )],
    )
}

/// Every chart, listed.
fn charts() -> Section {
    Section::new(
        "",
        "Charts",
        vec![Part::Note(|res, _| {
            let charts = res.runs.iter().filter(|r| r.measured.timeline.is_empty());
            let list: String = charts
                .filter_map(|r| Some(format!("- [{}]({})\n", r.label, r.chart.as_ref()?)))
                .collect();
            let empty = list.is_empty();
            opt((!empty).then_some(list), |l| {
                format!("{}\n\n{l}", prose("charts", &Value::Null))
            })
        })],
    )
}

/// nginx and Varnish, one instance and a fleet, next to the full stack.
fn peers_section(pl: &Plan<'_>, text: String, drivers: String) -> Section {
    use Col::*;
    let n = pl.o.instances;
    let peer = |v: &Variant, k: usize| {
        let (package, file) = (v.kind.package, v.file_name());
        let setup = format!("{k} × {package}, own cache each ([config](peers/{file}))");
        let s = pl.gw(&format!("peers-{}-x{k}", v.key), "", "");
        let s = s.labelled(format!("{} × {k}", v.label()), &setup);
        RunSpec {
            front: Front::Peer(*v),
            instances: k,
            ..s
        }
    };
    let full_x1 = "stampede-layer full stack × 1";
    let mut rows = vec![
        pl.gw("peers-stampede-x1", full_x1, "all")
            .labelled(full_x1, "`--mitigations all`, in-process store"),
    ];
    rows.extend(peers::VARIANTS.iter().map(|v| peer(v, 1)));
    let fleet_setup = "`--mitigations all`, one Redis (the table's full-stack run)";
    rows.push(
        pl.row("full")
            .labelled(format!("stampede-layer full stack × {n}"), fleet_setup),
    );
    rows.extend(peers::VARIANTS.iter().map(|v| peer(v, n)));
    Section::new(
        "peers",
        "Peers: nginx and Varnish under the same protocol",
        vec![
            Part::Table(text, standard(Setup), rows),
            Part::Note(|_, runs| installed(runs)),
            Part::Text(drivers),
            Part::Note(peer_configs),
        ],
    )
}

/// The single-instance peers' configs, verbatim.
fn peer_configs(_: &Results, runs: &[&Run]) -> String {
    let single = runs.iter().filter(|r| r.instances == 1);
    let configs: String = single.filter_map(|r| {
        let c = r.measured.peer.as_ref()?;
        let lang = if c.file.ends_with(".vcl") { "vcl" } else { "nginx" };
        let label = r.label.rsplit_once(" × ").map_or(r.label.as_str(), |x| x.0);
        let (file, command, text) = (&c.file, &c.command, &c.text);
        Some(format!("<details><summary>{label} — <a href=\"{file}\">{file}</a></summary>\n\n`{command}`\n\n```{lang}\n{text}```\n\n</details>\n\n"))
    }).collect();
    let intro = prose("peers-configs", &Value::Null);
    opt(Some(configs).filter(|c| !c.is_empty()), |c| {
        format!("{intro}\n\n{c}")
    })
}

/// A short origin freshness, validators off and on ([`REVALIDATION_MAX_AGE`]).
fn revalidation(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let run = |on: bool| {
        let (id, label) = match on {
            true => ("revalidation-on", "validators on"),
            false => ("revalidation-off", "validators off"),
        };
        let mut s = pl.gw(id, label, "all").fleet(pl.o.instances);
        let validators = if on { " --validators" } else { "" };
        let flags = format!("--cache-control max-age={REVALIDATION_MAX_AGE}{validators}");
        s.origin.flags = flags.split(' ').map(String::from).collect();
        s.setup = format!("origin `{flags}`");
        s
    };
    Section::new(
        "revalidation",
        "Revalidation: a stale entry refreshed with a conditional GET",
        vec![Part::Table(
            text,
            vec![
                Label,
                Setup,
                OriginQueries,
                HotQueries,
                Status("304"),
                BodyBytes,
            ]
            .into_iter()
            .chain([HotP99, HotSlow, Errors, Chart])
            .collect(),
            vec![run(false), run(true)],
        )],
    )
}

/// Rebuilds slower than the lock TTL, lease renewal on and off ([`SLOW_ORIGIN`]).
fn slow_origin(pl: &Plan<'_>, text: String) -> Section {
    use Col::*;
    let slow = &SLOW_ORIGIN;
    let load = LoadConfig {
        duration: pl.o.duration.min(slow.max_duration),
        ..pl.p.clone()
    };
    let run = |id: &str, label: &str, extra: &[&str]| {
        let s = RunSpec::gateway(id, label, "all", pl.o.ttl, &load).fleet(pl.o.instances);
        let mut s = s
            .flags(&["--lock-ttl", &human(slow.lock_ttl)])
            .flags(extra)
            .prewarmed();
        (s.origin.latency_ms, s.origin.db_connections) = (slow.latency_ms, slow.pool);
        s.setup = format!("`{}`", s.flags_without_ttl().join(" "));
        s.measure(Measure::InFlight)
    };
    let in_flight = Val(
        "hot_max_in_flight",
        "hot-key origin queries in flight at once: max",
    );
    Section::new(
        "slow-origin",
        "Slow origin: rebuilds slower than the lock TTL",
        vec![Part::Table(
            text,
            vec![Label, Setup, in_flight, HotQueries, HotMean, HotMax]
                .into_iter()
                .chain([Counter("lock acquired"), HotP99, Errors, Chart])
                .collect(),
            vec![
                run("slow-origin-renewal", "lease renewal (default)", &[]),
                run(
                    "slow-origin-no-renewal",
                    "no lease renewal",
                    &["--no-lock-renewal"],
                ),
            ],
        )],
    )
}

/// The hit-path rung (issues #12, #22): every request a hit on the hot key;
/// the gateway with the in-process store, with `--redis` (near cache on and
/// off), nginx `proxy_cache`, and the floor (the in-process gateway's own
/// admin `GET /healthz`) measured in turn, `rounds` rounds.
pub struct HitPath {
    /// The gateways' `--ttl` (and nginx's `proxy_cache_valid`): longer than
    /// the run, so every request after the prewarm is a hit.
    pub ttl: Duration,
    pub rounds: u32,
    /// The server on one core, the load generator on the other.
    pub pinning: Pinning,
    /// What each row runs: `(id stem, label)`; the label of nginx's row
    /// is made from its worker count.
    pub rows: [(&'static str, &'static str); 5],
}

/// The hit-path rung's experiment.
pub const HIT_PATH: HitPath = HitPath {
    ttl: Duration::from_secs(600),
    rounds: 3,
    pinning: HIT_PINNING,
    rows: [
        ("memory", "gateway, in-process store"),
        ("redis", "gateway, `--redis` (near cache on, the default)"),
        (
            "redis-no-near",
            "gateway, `--redis --near-cache-ttl 0s` (near cache off)",
        ),
        ("nginx", ""),
        (
            "floor",
            "floor: the in-process gateway's admin `GET /healthz`",
        ),
    ],
};

impl HitPath {
    /// Measured load per run: half the protocol's duration.
    fn duration(&self, o: &LadderOptions) -> Duration {
        o.duration / 2
    }

    /// Warm-up before each measured load (not recorded).
    fn warmup(&self, o: &LadderOptions) -> Duration {
        (o.duration / 10).max(Duration::from_secs(1))
    }

    /// nginx's row label, from its worker count.
    fn nginx_label(workers: &str) -> String {
        let s = if workers == "1" { "" } else { "s" };
        format!("nginx `proxy_cache`, {workers} worker{s}, `proxy_cache_lock on`")
    }

    /// The run of row `what`, round `i`.
    fn run(&self, o: &LadderOptions, p: &LoadConfig, i: u32, what: &str, label: &str) -> RunSpec {
        let load = LoadConfig {
            duration: self.duration(o),
            hot_fraction: 1.0,
            ..p.clone()
        };
        let (id, label) = (format!("hit-{what}-{i}"), format!("round {i}: {label}"));
        let s = RunSpec::gateway(&id, &label, "all", self.ttl, &load)
            .prewarmed()
            .measure(Measure::Throughput(self.warmup(o)))
            .pinned(self.pinning);
        match what {
            "redis" => s.fleet(1),
            "redis-no-near" => s.fleet(1).flags(&["--near-cache-ttl", "0s"]),
            "nginx" => RunSpec {
                front: Front::Peer(peers::NGINX_HIT),
                ..s.labelled(
                    format!("round {i}: {}", Self::nginx_label(peers::NGINX_HIT.workers)),
                    "",
                )
            },
            "floor" => RunSpec {
                target: Target::Healthz,
                ..s
            },
            _ => s,
        }
    }

    /// The prose before the table, for results measured `pinned` (issue
    /// #22) or not, nginx with `workers` worker processes.
    pub fn intro_text(&self, o: &LadderOptions, pinned: bool, workers: &str) -> String {
        let v = json!({
            "clients": protocol_load(o).concurrency, "hot_key": HOT_KEY,
            "hit_ttl": human(self.ttl), "hit_warmup": human(self.warmup(o)),
            "hit_duration": human(self.duration(o)), "rounds": self.rounds, "workers": workers,
            "server_cpu": self.pinning.server_cpu, "load_cpu": self.pinning.load_cpu,
        });
        prose(
            if pinned {
                "hit-path-pinned"
            } else {
                "hit-path"
            },
            &v,
        )
    }

    /// The prose before the table of `runs`: results recorded before the
    /// rung was pinned keep the prose they were measured under.
    fn intro(res: &Results, runs: &[&Run]) -> String {
        let pinned = runs
            .iter()
            .any(|r| r.measured.values.contains_key("server_cpu"));
        // nginx's worker count, from the config the run recorded.
        let workers = runs
            .iter()
            .filter_map(|r| r.measured.peer.as_ref())
            .find_map(|c| {
                let line = c
                    .text
                    .lines()
                    .find(|l| l.starts_with("worker_processes "))?;
                let n = line.trim_start_matches("worker_processes ");
                Some(n.trim_end_matches(';').to_string())
            })
            .unwrap_or_else(|| peers::NGINX_HIT.workers.to_string());
        HIT_PATH.intro_text(&res.options, pinned, &workers)
    }
}

/// The hit-path section (see [`HitPath`]).
fn hit_path(o: &LadderOptions, p: &LoadConfig) -> Section {
    use Col::*;
    let h = &HIT_PATH;
    let rows = (1..=h.rounds).flat_map(|i| h.rows.map(|(what, label)| h.run(o, p, i, what, label)));
    let cols = vec![
        RunLabel,
        Rps,
        P50,
        P99,
        RedisPerRequest,
        OriginQueries,
        Errors,
    ]
    .into_iter()
    .chain([
        Val("cpu_us", "gateway or nginx CPU µs per request"),
        Val("loader_cpu_us", "load generator CPU µs per request"),
    ])
    .collect();
    Section::new(
        "hit-path",
        "Hit path: in-process store, Redis store and nginx, every request a hit",
        vec![
            Part::Note(HitPath::intro),
            Part::Table(String::new(), cols, rows.collect()),
            Part::Note(|res, runs| {
                let pinned = runs
                    .iter()
                    .any(|r| r.measured.values.contains_key("server_cpu"));
                if pinned {
                    hit_ratios_pinned(res)
                } else {
                    hit_ratios(res)
                }
            }),
            Part::Note(|_, runs| installed(runs)),
        ],
    )
}

/// The peers' versions (`Installed: …`).
pub(crate) fn installed(runs: &[&Run]) -> String {
    let mut v: Vec<String> = runs
        .iter()
        .filter_map(|r| Some(format!("`{}`", r.measured.peer.as_ref()?.version)))
        .collect();
    v.sort();
    v.dedup();
    opt((!v.is_empty()).then_some(v), |v| {
        format!("Installed: {}.", v.join(", "))
    })
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| (v[(n - 1) / 2] + v[n / 2]) / 2.0)
}

/// The hit-path rung's runs (`hit-{front}-{round}`), for its reports.
struct HitRuns<'a> {
    res: &'a Results,
    /// The rounds in which any of the fronts ran.
    rounds: Vec<u32>,
}

impl<'a> HitRuns<'a> {
    fn new(res: &'a Results, fronts: &[&str]) -> Self {
        let mut this = Self {
            res,
            rounds: vec![],
        };
        this.rounds = (1..)
            .take_while(|i| fronts.iter().any(|w| this.summary(w, *i).is_some()))
            .collect();
        this
    }

    fn run(&self, front: &str, round: u32) -> Option<&'a Run> {
        self.res.run(&format!("hit-{front}-{round}"))
    }

    fn summary(&self, front: &str, round: u32) -> Option<&'a crate::load::LoadSummary> {
        self.run(front, round)?.summary.as_ref()
    }

    fn rps(&self, front: &str, round: u32) -> Option<f64> {
        self.summary(front, round).map(|s| s.requests_per_sec)
    }

    fn p99(&self, front: &str, round: u32) -> String {
        opt(self.summary(front, round), |s| f1(s.latency.all.p99_ms))
    }

    /// Medians over the rounds of the CPU figure `key` of `front`: µs per
    /// request, and the share of `cores(summary)` cores that makes at the
    /// run's rate.
    fn cpu(
        &self,
        front: &str,
        key: &str,
        cores: impl Fn(&crate::load::LoadSummary) -> f64,
    ) -> (String, String) {
        let (mut us, mut share) = (vec![], vec![]);
        for &i in &self.rounds {
            let Some(r) = self.run(front, i) else {
                continue;
            };
            let x = r.measured.values.get(key).and_then(|v| v.as_f64());
            if let Some((x, s)) = x.zip(r.summary.as_ref()) {
                us.push(x);
                share.push(x * s.requests_per_sec / 1e4 / cores(s));
            }
        }
        let share = opt(median(share), |m| format!("{m:.0} %"));
        (opt(median(us), f1), share)
    }
}

/// `a ÷ b`, when both were measured.
fn hit_ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b.max(1e-9))
}

/// A median over the rounds, in bold.
fn bold_median(v: Vec<f64>) -> String {
    opt(median(v), |m| format!("**{}**", f2(m)))
}

/// The hit-path ratios per round (the floor among them), and their
/// medians; the CPU the servers, their cores and the load generator used.
fn hit_ratios_pinned(res: &Results) -> String {
    let h = HitRuns::new(res, &["memory", "redis", "redis-no-near", "nginx", "floor"]);
    let mut md = "| round | `--redis` ÷ in-process (hits/s) | `--redis`, near cache off ÷ in-process | in-process ÷ nginx (hits/s) | in-process ÷ floor | p99 ms: in-process | `--redis` | nginx | floor |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n".to_string();
    let (mut redis_memory, mut direct_memory) = (vec![], vec![]);
    let (mut memory_nginx, mut memory_floor) = (vec![], vec![]);
    for &i in &h.rounds {
        let memory = h.rps("memory", i);
        let (a, d, b, f) = (
            hit_ratio(h.rps("redis", i), memory),
            hit_ratio(h.rps("redis-no-near", i), memory),
            hit_ratio(memory, h.rps("nginx", i)),
            hit_ratio(memory, h.rps("floor", i)),
        );
        redis_memory.extend(a);
        direct_memory.extend(d);
        memory_nginx.extend(b);
        memory_floor.extend(f);
        let (a, d, b, f) = (opt(a, f2), opt(d, f2), opt(b, f2), opt(f, f2));
        let (pm, pr) = (h.p99("memory", i), h.p99("redis", i));
        let (pn, pf) = (h.p99("nginx", i), h.p99("floor", i));
        md += &format!("| {i} | {a} | {d} | {b} | {f} | {pm} | {pr} | {pn} | {pf} |\n");
    }
    let mut v = json!({ "redis_memory": bold_median(redis_memory),
        "direct_memory": bold_median(direct_memory), "memory_nginx": bold_median(memory_nginx),
        "memory_floor": bold_median(memory_floor) });
    for what in ["memory", "nginx", "floor"] {
        for (key, name) in [
            ("cpu_us", "cpu"),
            ("core_us", "core"),
            ("loader_cpu_us", "load"),
        ] {
            // The share of one core: each has its own.
            let (us, share) = h.cpu(what, key, |_| 1.0);
            v[format!("{name}_{what}")] = us.into();
            v[format!("{name}_share_{what}")] = share.into();
        }
    }
    format!("{md}\n{}", prose("hit-path-pinned-median", &v))
}

/// The hit-path ratios per round, and their medians; the CPU the fronts and
/// the load generator used — results recorded before the rung was pinned
/// (issue #22), the server and the load generator on shared cores.
fn hit_ratios(res: &Results) -> String {
    let h = HitRuns::new(res, &["memory", "redis", "redis-no-near", "nginx"]);
    let mut md = "| round | `--redis` ÷ in-process (hits/s) | `--redis`, near cache off ÷ in-process | in-process ÷ nginx (hits/s) | p99 ms: in-process | `--redis` | nginx |\n|--:|--:|--:|--:|--:|--:|--:|\n".to_string();
    let (mut redis_memory, mut direct_memory, mut memory_nginx) = (vec![], vec![], vec![]);
    for &i in &h.rounds {
        let (a, d, b) = (
            hit_ratio(h.rps("redis", i), h.rps("memory", i)),
            hit_ratio(h.rps("redis-no-near", i), h.rps("memory", i)),
            hit_ratio(h.rps("memory", i), h.rps("nginx", i)),
        );
        redis_memory.extend(a);
        direct_memory.extend(d);
        memory_nginx.extend(b);
        let (a, d, b) = (opt(a, f2), opt(d, f2), opt(b, f2));
        let (pm, pr, pn) = (h.p99("memory", i), h.p99("redis", i), h.p99("nginx", i));
        md += &format!("| {i} | {a} | {d} | {b} | {pm} | {pr} | {pn} |\n");
    }
    // The share of the machine's CPU time: the cores were shared.
    let machine = |s: &crate::load::LoadSummary| s.host.nproc.max(1) as f64;
    let ((cpu_memory, share_memory), (cpu_nginx, share_nginx)) = (
        h.cpu("memory", "cpu_us", machine),
        h.cpu("nginx", "cpu_us", machine),
    );
    let ((load_memory, share_load_memory), (load_nginx, share_load_nginx)) = (
        h.cpu("memory", "loader_cpu_us", machine),
        h.cpu("nginx", "loader_cpu_us", machine),
    );
    let v = json!({ "redis_memory": bold_median(redis_memory),
        "direct_memory": bold_median(direct_memory), "memory_nginx": bold_median(memory_nginx),
        "cpu_memory": cpu_memory, "cpu_nginx": cpu_nginx,
        "load_memory": load_memory, "load_nginx": load_nginx,
        "share_memory": share_memory, "share_nginx": share_nginx,
        "share_load_memory": share_load_memory, "share_load_nginx": share_load_nginx });
    format!("{md}\n{}", prose("hit-path-median", &v))
}
