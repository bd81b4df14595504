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

/// Gateway counters scraped after each run, one a line: `name (also the
/// column header) = metric{label filter}`.
const COUNTER_LINES: &str = r#"
lock acquired = stampede_lock_acquisitions_total{result="acquired"}
lock contended = stampede_lock_acquisitions_total{result="contended"}
lock waits timed out = stampede_lock_wait_seconds_count{result="timeout"}
SWR refreshes = stampede_background_refreshes_total{trigger="swr"}
XFetch refreshes = stampede_background_refreshes_total{trigger="xfetch"}
fencing rejections = stampede_fencing_rejections_total
shed (503) = stampede_shed_total
origin requests = stampede_origin_requests_total
"#;

/// The gateway counters: `(name, metric, label filter)`.
pub fn counters() -> Vec<(&'static str, &'static str, &'static str)> {
    let counter = |l: &'static str| {
        let (name, selector) = l.split_once(" = ")?;
        let (metric, label) = selector.split_once('{').unwrap_or((selector, ""));
        Some((name, metric, label.trim_end_matches('}')))
    };
    COUNTER_LINES.lines().filter_map(counter).collect()
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
    pub measure: Measure,
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
            measure: Measure::Load,
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

/// One table row: the row as planned and its run.
pub struct Row<'a> {
    pub spec: &'a RunSpec,
    pub run: &'a Run,
}

/// A column of a section's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Col {
    Label,
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
            Label => "row",
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
            Col::Label | Col::Name | Col::Mitigations | Col::Setup | Col::Store | Col::Chart
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

/// The table: every section of the report, every run behind it.
pub fn sections(o: &LadderOptions) -> Vec<Section> {
    use Col::*;
    let quick = o.profile == Profile::Quick;
    let (ttl, n, p, base) = (o.ttl, o.instances, protocol_load(o), OriginSpec::default());
    let (ms, secs) = (Duration::from_millis, Duration::from_secs);
    let gw = |id: &str, label: &str, m: &str| RunSpec::gateway(id, label, m, ttl, &p);
    let row = |key: &str| {
        let row = TABLE_ROWS.iter().find(|r| r.0 == key);
        let (k, label, m) = row.expect("a TABLE_ROWS name");
        gw(&format!("table-{k}"), label, m).fleet(n)
    };
    let chosen = TABLE_ROWS
        .iter()
        .filter(|r| o.rows.iter().any(|x| x == r.0));
    let rows: Vec<RunSpec> = chosen.map(|r| row(r.0)).collect();
    let counters: Vec<Col> = counters()[..7].iter().map(|c| Counter(c.0)).collect();
    let (threshold, base_ms, pool) = (base.capacity_qps(), base.latency_ms, base.db_connections);

    // Multi-key: keys written together expire together.
    let (mk_keys, mk_pool, jitter) = (200, 256, "0.2");
    let mk_ttl = secs(if quick { 4 } else { 10 });
    let mk_load = LoadConfig {
        duration: secs(if quick { 10 } else { 25 }),
        hot_fraction: 0.0,
        keys: mk_keys,
        ttl: Some(mk_ttl),
        ..p.clone()
    };
    let mk = |id: &str, label: &str, m: &str| {
        let mut s = RunSpec::gateway(id, label, m, mk_ttl, &mk_load).flags(&["--jitter", jitter]);
        (s.origin.db_connections, s.warm_burst) = (mk_pool, mk_keys);
        s
    };

    // Negative: absent ids.
    let (neg_items, neg_keys, neg_ttl) = (100, 200, human(secs(5)));
    let neg_load = LoadConfig {
        hot_fraction: 0.0,
        keys: neg_keys,
        ..p.clone()
    };
    let neg = |id: &str, label: &str, m: &str| {
        let s = RunSpec::gateway(id, label, m, ttl, &neg_load);
        let mut s = s.flags(&["--negative-ttl", &neg_ttl]);
        s.origin.items = neg_items;
        s
    };

    // XFetch: a hot key on the fleet (filled first), a cold key read once a TTL.
    let xhot = |id: &str, m: &str, beta: Option<&str>| {
        let flag = beta.map_or(String::new(), |b| format!(", --xfetch-beta {b}"));
        let s = gw(id, &format!("hot key: {m}{flag}"), m)
            .fleet(n)
            .prewarmed();
        beta.map_or(s.clone(), |b| s.flags(&["--xfetch-beta", b]))
    };
    let cold = LoadConfig {
        concurrency: 1,
        duration: o.duration.max(ttl * 8),
        hot_fraction: 1.0,
        think_time: ttl,
        ..p.clone()
    };
    let xcold = |id: &str, m: &str| RunSpec::gateway(id, &format!("cold key: {m}"), m, ttl, &cold);

    // Fencing: a rebuild slower than the lock TTL.
    let fence = Fencing {
        key: 0,
        slow: ms(1500),
        fast: ms(50),
        lock_ttl: ms(300),
    };
    let fence_ttl = secs(30);
    let fencing = [7, 8, 9].map(|key| {
        let s = RunSpec::gateway(
            &format!("fencing-{key}"),
            &key.to_string(),
            "all",
            fence_ttl,
            &p,
        );
        let s = s
            .fleet(n.max(2))
            .flags(&["--lock-ttl", &human(fence.lock_ttl)]);
        let measure = Measure::Fencing(Fencing { key, ..fence });
        RunSpec {
            load: vec![],
            measure,
            ..s
        }
    });

    // Metastable: a retry storm after a spike.
    let (b, sp, a) = if quick { (3, 4, 12) } else { (5, 6, 30) };
    let meta_items = 20_000;
    let normal = |secs: u64| LoadConfig {
        concurrency: 20,
        duration: Duration::from_secs(secs),
        keys: meta_items,
        retries: 3,
        timeout: ms(500),
        backoff: ms(10),
        think_time: ms(50),
        origin: None,
        ..p.clone()
    };
    let spike = LoadConfig {
        concurrency: 400,
        hot_fraction: 0.0,
        think_time: Duration::ZERO,
        seed: Some(SEED + 1),
        ..normal(sp)
    };
    let ok_ms = base.latency_ms * 3 / 2;
    let meta = |id: &str, label: &str, m: &str, extra: &[&str]| {
        let mut s = gw(id, label, m)
            .flags(extra)
            .measure(Measure::Recovery(ok_ms));
        (s.load, s.origin.items) = (vec![normal(b), spike.clone(), normal(a)], meta_items);
        s.setup = format!("{label} (`{}`)", s.gateway_flags()[2..].join(" "));
        s
    };
    let gate = base.db_connections.to_string();

    // Peers: nginx and Varnish, one instance and a fleet, next to the full stack.
    let peer = |v: &Variant, k: usize| {
        let (package, file) = (v.kind.package, v.file_name());
        let setup = format!("{k} × {package}, own cache each ([config](peers/{file}))");
        let s = gw(&format!("peers-{}-x{k}", v.key), "", "");
        let s = s.labelled(format!("{} × {k}", v.label()), &setup);
        RunSpec {
            front: Front::Peer(*v),
            instances: k,
            ..s
        }
    };
    let full_x1 = "stampede-layer full stack × 1";
    let mut peer_rows = vec![
        gw("peers-stampede-x1", full_x1, "all")
            .labelled(full_x1, "`--mitigations all`, in-process store"),
    ];
    peer_rows.extend(peers::VARIANTS.iter().map(|v| peer(v, 1)));
    let fleet_setup = "`--mitigations all`, one Redis (the table's full-stack run)";
    peer_rows.push(row("full").labelled(format!("stampede-layer full stack × {n}"), fleet_setup));
    peer_rows.extend(peers::VARIANTS.iter().map(|v| peer(v, n)));

    // Revalidation: a short origin freshness, validators off and on.
    let max_age = 2;
    let reval = |on: bool| {
        let (id, label) = match on {
            true => ("revalidation-on", "validators on"),
            false => ("revalidation-off", "validators off"),
        };
        let mut s = gw(id, label, "all").fleet(n);
        let validators = if on { " --validators" } else { "" };
        let flags = format!("--cache-control max-age={max_age}{validators}");
        s.origin.flags = flags.split(' ').map(String::from).collect();
        s.setup = format!("origin `{flags}`");
        s
    };

    // Slow origin: rebuilds slower than the lock TTL, lease renewal on and off.
    let (slow_ms, slow_lock_ttl, slow_pool) = (3000, human(secs(2)), 64);
    let slow_load = LoadConfig {
        duration: o.duration.min(secs(15)),
        ..p.clone()
    };
    let slow = |id: &str, label: &str, extra: &[&str]| {
        let s = RunSpec::gateway(id, label, "all", ttl, &slow_load).fleet(n);
        let mut s = s
            .flags(&["--lock-ttl", &slow_lock_ttl])
            .flags(extra)
            .prewarmed();
        (s.origin.latency_ms, s.origin.db_connections) = (slow_ms, slow_pool);
        s.setup = format!("`{}`", s.gateway_flags()[2..].join(" "));
        s.measure(Measure::InFlight)
    };

    // Hit path: every request a hit; the in-process store, the Redis store
    // and nginx measured in turn, three rounds.
    let (hit_ttl, rounds, nginx) = (secs(600), 3, peers::NGINX_HIT);
    let (hit_dur, warmup) = (o.duration / 2, (o.duration / 10).max(secs(1)));
    let workers = nginx.workers;
    let hit_load = LoadConfig {
        duration: hit_dur,
        hot_fraction: 1.0,
        ..p.clone()
    };
    let hits = (1..=rounds).flat_map(|i| {
        let hit = |what: &str, label: &str| {
            let (id, label) = (format!("hit-{what}-{i}"), format!("round {i}: {label}"));
            let s = RunSpec::gateway(&id, &label, "all", hit_ttl, &hit_load);
            s.prewarmed().measure(Measure::Throughput(warmup))
        };
        let nginx_label = format!("nginx `proxy_cache`, {workers} workers, `proxy_cache_lock on`");
        let nginx_row = RunSpec {
            front: Front::Peer(nginx),
            ..hit("nginx", &nginx_label)
        };
        [
            hit("memory", "gateway, in-process store"),
            hit("redis", "gateway, `--redis` (near cache on, the default)").fleet(1),
            hit(
                "redis-no-near",
                "gateway, `--redis --near-cache-ttl 0s` (near cache off)",
            )
            .fleet(1)
            .flags(&["--near-cache-ttl", "0s"]),
            nginx_row,
        ]
    });

    // The numbers of the prose (`prose.md`).
    let [f_lock, f_ttl, f_slow, f_fast] = [fence.lock_ttl, fence_ttl, fence.slow, fence.fast];
    let v = json!({
        "clients": p.concurrency, "n": n, "hot_key": HOT_KEY, "base_ms": base_ms, "pool": pool,
        "hot_pct": format!("{:.0}", p.hot_fraction * 100.0), "duration": human(p.duration),
        "ttl": human(ttl), "threshold": threshold, "mk_keys": mk_keys, "mk_pool": mk_pool,
        "rows_in_order": TABLE_ROWS.map(|r| r.1).join(", "),
        "neg_items": neg_items, "neg_keys": neg_keys, "neg_ttl": neg_ttl,
        "cold_think": human(cold.think_time), "f_lock": human(f_lock), "f_ttl": human(f_ttl),
        "f_slow": human(f_slow), "f_fast": human(f_fast), "b": b, "sp": sp, "a": a,
        "normal": describe(&normal(b)), "spike": describe(&spike), "ok_ms": ok_ms,
        "nginx_lock": human(peers::NGINX_LOCK_BOUND), "max_age": max_age,
        "slow_duration": human(slow_load.duration), "slow_ms": slow_ms, "slow_pool": slow_pool,
        "slow_lock_ttl": slow_lock_ttl, "hit_ttl": human(hit_ttl), "hit_warmup": human(warmup),
        "hit_duration": human(hit_dur), "rounds": rounds, "workers": workers,
    });
    let t = |key: &str| prose(key, &v);
    let (above, xfetch) = (SecondsAbove(threshold), Counter("XFetch refreshes"));
    let in_flight = Val(
        "hot_max_in_flight",
        "hot-key origin queries in flight at once: max",
    );

    vec![
        Section::new(
            "table",
            format!("Before/after, one mitigation added per row ({n} gateways, one Redis)"),
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
                Part::Text(t("table")),
            ],
        ),
        Section::new(
            "scope",
            "Scope: single-flight is per process, the lock is per fleet",
            vec![Part::Table(
                String::new(),
                vec![Name, Store, HotMean, HotMax, PerTtl, HotP99, Slow, Chart],
                vec![
                    gw(
                        "scope-single-flight-x1",
                        "single-flight × 1 instance",
                        "single-flight",
                    ),
                    row("single-flight").labelled(format!("single-flight × {n} instances"), ""),
                    row("lock").labelled(format!("single-flight + lock × {n} instances"), ""),
                    gw(
                        "scope-swr-no-lock",
                        &format!("single-flight + SWR, no lock × {n} instances"),
                        "single-flight,swr",
                    )
                    .fleet(n),
                ],
            )],
        ),
        Section::new(
            "multi-key",
            format!("Multi-key: {mk_keys} keys written together expire together"),
            vec![
                Part::Table(
                    t("multi-key"),
                    vec![Label, Ttl, MaxQps, above, Total, P99, Slow, Errors, Chart],
                    vec![
                        mk(
                            "multikey-no-jitter",
                            "no jitter (single-flight)",
                            "single-flight",
                        ),
                        mk(
                            "multikey-jitter",
                            &format!("+jitter {jitter} (single-flight,jitter)"),
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
        ),
        Section::new(
            "negative",
            "Negative: a miss storm on ids that do not exist",
            vec![Part::Table(
                t("negative"),
                vec![Label, Status("404"), StatusMean("404"), StatusMax("404")]
                    .into_iter()
                    .chain([Status("200"), P99, Errors, Chart])
                    .collect(),
                vec![
                    neg(
                        "negative-off",
                        "single-flight (no negative caching)",
                        "single-flight",
                    ),
                    neg(
                        "negative-on",
                        "single-flight,negative",
                        "single-flight,negative",
                    ),
                ],
            )],
        ),
        Section::new(
            "xfetch",
            "XFetch: refresh before the cliff — on a hot key only",
            vec![
                Part::Table(
                    t("xfetch-hot"),
                    vec![
                        Name,
                        HotMisses,
                        PerTtl,
                        BoundaryMean,
                        HotMax,
                        xfetch,
                        HotP99,
                        HotSlow,
                        Chart,
                    ],
                    vec![
                        xhot("xfetch-hot-off", "single-flight,lock", None),
                        xhot("xfetch-hot-on", "single-flight,lock,xfetch", Some("1")),
                        xhot(
                            "xfetch-hot-beta03",
                            "single-flight,lock,xfetch",
                            Some("0.3"),
                        ),
                    ],
                ),
                Part::Table(
                    t("xfetch-cold"),
                    vec![Name, Requests, Misses, MissRate, OriginQueries, P50, Chart],
                    vec![
                        xcold("xfetch-cold-off", "single-flight"),
                        xcold("xfetch-cold-on", "single-flight,xfetch"),
                    ],
                ),
            ],
        ),
        Section::new(
            "fencing",
            "Fencing: a rebuild slower than the lock TTL",
            vec![
                Part::Table(
                    t("fencing"),
                    vec![
                        Val("key", "item"),
                        Val("slow_version", "slow rebuild answered version"),
                        Val("slow_ms", "its duration ms"),
                        Val("fast_version", "fast rebuild answered version"),
                        Val("cached_version", "cached GET version"),
                        Val("cached_status", "its Cache-Status"),
                        Val("origin_version", "origin version"),
                    ],
                    fencing.into(),
                ),
                Part::Note(|_, runs| {
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
                    let (total, newest) =
                        (per.iter().sum::<f64>(), if newest { "yes" } else { "no" });
                    let v = json!({ "per": format!("{per:?}"), "total": total.to_string(), "newest": newest });
                    prose("fencing-result", &v)
                }),
            ],
        ),
        Section::new(
            "metastable",
            "Metastable failure: a retry storm keeps the origin pinned",
            vec![Part::Table(
                t("metastable"),
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
                    meta("metastable-no-gate", "without the gate", "none", &[]),
                    meta(
                        "metastable-gate",
                        "with the overload gate",
                        "overload-gate",
                        &["--gate-max-inflight", &gate],
                    ),
                ],
            )],
        ),
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
        ),
        Section::new(
            "peers",
            "Peers: nginx and Varnish under the same protocol",
            vec![
                Part::Table(t("peers"), standard(Setup), peer_rows),
                Part::Note(|_, runs| installed(runs)),
                Part::Text(t("peers-drivers")),
                Part::Note(|_, runs| {
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
                }),
            ],
        ),
        Section::new(
            "revalidation",
            "Revalidation: a stale entry refreshed with a conditional GET",
            vec![Part::Table(
                t("revalidation"),
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
                vec![reval(false), reval(true)],
            )],
        ),
        Section::new(
            "slow-origin",
            "Slow origin: rebuilds slower than the lock TTL",
            vec![Part::Table(
                t("slow-origin"),
                vec![Label, Setup, in_flight, HotQueries, HotMean, HotMax]
                    .into_iter()
                    .chain([Counter("lock acquired"), HotP99, Errors, Chart])
                    .collect(),
                vec![
                    slow("slow-origin-renewal", "lease renewal (default)", &[]),
                    slow(
                        "slow-origin-no-renewal",
                        "no lease renewal",
                        &["--no-lock-renewal"],
                    ),
                ],
            )],
        ),
        Section::new(
            "hit-path",
            "Hit path: in-process store, Redis store and nginx, every request a hit",
            vec![
                Part::Table(
                    t("hit-path"),
                    vec![Label, Rps, P50, P99, RedisPerRequest, OriginQueries, Errors]
                        .into_iter()
                        .chain([
                            Val("cpu_us", "gateway or nginx CPU µs per request"),
                            Val("loader_cpu_us", "load generator CPU µs per request"),
                        ])
                        .collect(),
                    hits.collect(),
                ),
                Part::Note(|res, _| hit_ratios(res)),
                Part::Note(|_, runs| installed(runs)),
            ],
        ),
        super::real_traffic::section(o),
    ]
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

/// The hit-path ratios per round, and their medians; the CPU the fronts and
/// the load generator used.
fn hit_ratios(res: &Results) -> String {
    let run = |what: &str, i: u32| res.run(&format!("hit-{what}-{i}"));
    let summary = |what: &str, i: u32| run(what, i)?.summary.as_ref();
    let rps = |what, i| summary(what, i).map(|s| s.requests_per_sec);
    let p99 = |what, i| opt(summary(what, i), |s| f1(s.latency.all.p99_ms));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(1e-9));
    let mut md = "| round | `--redis` ÷ in-process (hits/s) | `--redis`, near cache off ÷ in-process | in-process ÷ nginx (hits/s) | p99 ms: in-process | `--redis` | nginx |\n|--:|--:|--:|--:|--:|--:|--:|\n".to_string();
    let (mut redis_memory, mut direct_memory, mut memory_nginx) = (vec![], vec![], vec![]);
    let rounds: Vec<u32> = (1..)
        .take_while(|i| {
            ["memory", "redis", "redis-no-near", "nginx"]
                .iter()
                .any(|w| summary(w, *i).is_some())
        })
        .collect();
    for &i in &rounds {
        let (a, d, b) = (
            ratio(rps("redis", i), rps("memory", i)),
            ratio(rps("redis-no-near", i), rps("memory", i)),
            ratio(rps("memory", i), rps("nginx", i)),
        );
        redis_memory.extend(a);
        direct_memory.extend(d);
        memory_nginx.extend(b);
        let (a, d, b) = (opt(a, f2), opt(d, f2), opt(b, f2));
        let (pm, pr, pn) = (p99("memory", i), p99("redis", i), p99("nginx", i));
        md += &format!("| {i} | {a} | {d} | {b} | {pm} | {pr} | {pn} |\n");
    }
    let bold = |v: Vec<f64>| opt(median(v), |m| format!("**{}**", f2(m)));
    // Medians over the rounds of a CPU figure `key` of `what`: µs per
    // request, and the share of the machine's CPU time that makes at the
    // run's rate.
    let cpu = |what: &str, key: &str| {
        let (mut us, mut share) = (vec![], vec![]);
        for &i in &rounds {
            let Some(r) = run(what, i) else { continue };
            let x = r.measured.values.get(key).and_then(|v| v.as_f64());
            if let Some((x, s)) = x.zip(r.summary.as_ref()) {
                us.push(x);
                share.push(x * s.requests_per_sec / 1e4 / s.host.nproc.max(1) as f64);
            }
        }
        let share = opt(median(share), |m| format!("{m:.0} %"));
        (opt(median(us), f1), share)
    };
    let ((cpu_memory, share_memory), (cpu_nginx, share_nginx)) =
        (cpu("memory", "cpu_us"), cpu("nginx", "cpu_us"));
    let ((load_memory, share_load_memory), (load_nginx, share_load_nginx)) = (
        cpu("memory", "loader_cpu_us"),
        cpu("nginx", "loader_cpu_us"),
    );
    let v = json!({ "redis_memory": bold(redis_memory), "direct_memory": bold(direct_memory),
        "memory_nginx": bold(memory_nginx), "cpu_memory": cpu_memory, "cpu_nginx": cpu_nginx,
        "load_memory": load_memory, "load_nginx": load_nginx,
        "share_memory": share_memory, "share_nginx": share_nginx,
        "share_load_memory": share_load_memory, "share_load_nginx": share_load_nginx });
    format!("{md}\n{}", prose("hit-path-median", &v))
}
