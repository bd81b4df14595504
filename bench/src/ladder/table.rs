//! The table of experiments: every rung of the ladder as data. The plan
//! (what runs, in which order, how many), the runner (how each row is set
//! up, loaded and measured) and the report (sections, prose, columns) all
//! read [`sections`]; the numbers in the prose come from the same variables
//! that configure the runs.
//!
//! Adding a rung is adding a [`Section`] to [`sections`]: its rows are
//! [`RunSpec`]s (gateways or a peer, origin, TTL, load phases), its columns
//! [`Col`]s. A number that neither the load summary nor the gateway
//! counters give needs a [`Measure`] variant, a field in
//! [`Measured`](super::record::Measured) and a small function in `runner`.
//! For instance a slow-origin rung (origin 3 s, `--lock-ttl 2s`, 3 gateways,
//! with and without lease renewal) is two fleet rows with
//! `OriginSpec { latency_ms: 3000, .. }` and a measure sampling
//! `stampede_inflight_rebuilds`; a hit-throughput comparison is rows with a
//! `Front::Peer` and a hot fraction of 1.

use std::time::Duration;

use super::peers::{self, Variant};
use super::record::{LadderOptions, Profile, Protocol, Results, Run};
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

/// Gateway counters scraped after each run: `(name, metric, label filter)`.
pub const COUNTERS: [(&str, &str, &str); 8] = [
    (
        "lock_acquired",
        "stampede_lock_acquisitions_total",
        "result=\"acquired\"",
    ),
    (
        "lock_contended",
        "stampede_lock_acquisitions_total",
        "result=\"contended\"",
    ),
    (
        "lock_wait_timeouts",
        "stampede_lock_wait_seconds_count",
        "result=\"timeout\"",
    ),
    (
        "swr_refreshes",
        "stampede_background_refreshes_total",
        "trigger=\"swr\"",
    ),
    (
        "xfetch_refreshes",
        "stampede_background_refreshes_total",
        "trigger=\"xfetch\"",
    ),
    (
        "fencing_rejections",
        "stampede_fencing_rejections_total",
        "",
    ),
    ("shed", "stampede_shed_total", ""),
    ("origin_requests", "stampede_origin_requests_total", ""),
];

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
        if self == Profile::Quick {
            "target/ladder-quick"
        } else {
            "docs/results"
        }
    }
}

/// One section of the report, and the runs behind it.
pub struct Section {
    /// `--rungs` name; empty for a section that only summarises others.
    pub rung: &'static str,
    /// Heading (without its number).
    pub heading: String,
    /// What it shows, in order.
    pub parts: Vec<Part>,
}

/// A piece of a section.
pub enum Part {
    /// Prose.
    Text(String),
    /// A table, one row per run that ran, with the prose before it.
    Table(String, Vec<Col>, Vec<RunSpec>),
    /// Prose from measured values: `(results, the section's runs)`.
    Note(fn(&Results, &[&Run]) -> String),
}

impl Section {
    /// Every row of every table of the section, in order.
    pub fn rows(&self) -> impl Iterator<Item = &RunSpec> {
        self.parts.iter().flat_map(|p| match p {
            Part::Table(_, _, rows) => rows.as_slice(),
            _ => &[],
        })
    }
}

/// The origin-sim a run starts.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginSpec {
    /// `--items`.
    pub items: u64,
    /// `--latency-ms`.
    pub latency_ms: u64,
    /// `--db-connections`.
    pub db_connections: u32,
    /// Further flags (e.g. `--cache-control`).
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
        /// `--mitigations`.
        mitigations: String,
        /// Store and lock in Redis.
        redis: bool,
        /// Further flags.
        flags: Vec<String>,
    },
    /// nginx or Varnish instances, each with its own cache.
    Peer(Variant),
}

/// What a run measures beyond the load summary and the gateway counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// Nothing more.
    Load,
    /// Seconds in which more origin queries than this started.
    SecondsAbove(u64),
    /// Origin answers by status per second (the origin's query log).
    Statuses,
    /// Three load phases (base, spike, after), the origin's in-flight count
    /// sampled: how long after the spike until origin queries finish within
    /// this many ms again.
    Recovery(u64),
    /// No load: one scripted fencing trial.
    Fencing(Fencing),
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
    /// Row label.
    pub label: String,
    /// The row's setup column.
    pub setup: String,
    /// Gateways or a peer.
    pub front: Front,
    /// How many of them (the load goes round-robin).
    pub instances: usize,
    /// The origin.
    pub origin: OriginSpec,
    /// The cache TTL.
    pub ttl: Duration,
    /// Keys read once through the first instance before the load.
    pub prewarm: Vec<u64>,
    /// Keys `1..=N` filled by one burst of concurrent GETs before the load (timed).
    pub warm_burst: u64,
    /// Load phases (targets and origin URL filled in when run).
    pub load: Vec<LoadConfig>,
    /// What is measured.
    pub measure: Measure,
}

impl RunSpec {
    /// One gateway with the in-process store.
    fn gateway(id: &str, label: &str, mitigations: &str, ttl: Duration, load: &LoadConfig) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            setup: format!("`{mitigations}`"),
            front: Front::Gateway {
                mitigations: mitigations.into(),
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
    fn fleet(mut self, n: usize) -> Self {
        self.instances = n;
        if let Front::Gateway { redis, .. } = &mut self.front {
            *redis = true;
        }
        self
    }

    fn flags(mut self, more: &[&str]) -> Self {
        if let Front::Gateway { flags, .. } = &mut self.front {
            flags.extend(more.iter().map(|s| s.to_string()));
        }
        self
    }

    fn labelled(mut self, label: impl Into<String>, setup: &str) -> Self {
        (self.label, self.setup) = (label.into(), setup.into());
        self
    }

    fn measure(mut self, m: Measure) -> Self {
        self.measure = m;
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
            Front::Peer(v) => v.what(),
        }
    }

    /// Gateway flags beyond addresses: `--ttl`, `--mitigations`, the rest.
    pub fn gateway_flags(&self) -> Vec<String> {
        let mut f = vec![
            "--ttl".into(),
            human(self.ttl),
            "--mitigations".into(),
            self.mitigations(),
        ];
        if let Front::Gateway { flags, .. } = &self.front {
            f.extend(flags.iter().cloned());
        }
        f
    }
}

/// One table row: the row as planned and its run.
pub struct Row<'a> {
    /// As planned.
    pub spec: &'a RunSpec,
    /// As run.
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
    Chart,
    /// A gateway counter (name in [`COUNTERS`]) and its header.
    Counter(&'static str, &'static str),
    Ttl,
    SecondsAbove(u64),
    Origin404,
    Mean404,
    Max404,
    Origin200,
    Item,
    SlowVersion,
    SlowMs,
    FastVersion,
    CachedVersion,
    CachedStatus,
    OriginVersion,
    Recovery,
    BaseMs,
    WorstMs,
    Last5Ms,
    MaxInflight,
    InflightEnd,
    AfterErrors,
    AfterP99,
    Retries,
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
            Chart => "chart",
            Counter(_, head) => head,
            Ttl => "TTL",
            SecondsAbove(t) => return format!("seconds above {t} q/s"),
            Origin404 => "origin 404 queries",
            Mean404 => "404 q/s mean",
            Max404 => "404 q/s max",
            Origin200 => "origin 200 queries",
            Item => "item",
            SlowVersion => "slow rebuild answered version",
            SlowMs => "its duration ms",
            FastVersion => "fast rebuild answered version",
            CachedVersion => "cached GET version",
            CachedStatus => "its Cache-Status",
            OriginVersion => "origin version",
            Recovery => "recovery after the spike",
            BaseMs => "origin query ms: base",
            WorstMs => "worst after spike",
            Last5Ms => return format!("last {LAST_SECONDS} s"),
            MaxInflight => "origin in flight: max after spike",
            InflightEnd => "at end",
            AfterErrors => "after-spike errors / requests",
            AfterP99 => "after-spike p99 ms",
            Retries => "retries",
        }
        .to_string()
    }

    /// Right-aligned (a number).
    pub fn num(self) -> bool {
        use Col::*;
        !matches!(
            self,
            Label | Name | Mitigations | Setup | Store | Chart | CachedStatus
        )
    }

    /// Its cell in `r`.
    pub fn cell(self, r: &Row<'_>) -> String {
        use Col::*;
        let (s, m) = (r.run.summary.as_ref(), &r.run.measured);
        let o = s.and_then(|s| s.origin.as_ref());
        let (st, tr, rc) = (m.statuses.as_ref(), m.fencing.as_ref(), m.recovery.as_ref());
        let per_s = |v: &[u64]| v.iter().sum::<u64>().to_string();
        let ver = |v: Option<i64>| opt(v, |v| v.to_string());
        match self {
            Label | Name => r.spec.label.clone(),
            Mitigations | Setup => r.spec.setup.clone(),
            Store => r.run.store.clone(),
            HotMean | BoundaryMean => opt(o, |o| f2(o.hot_bursts.mean_per_boundary)),
            HotMax => opt(o, |o| o.hot_bursts.max_per_boundary.to_string()),
            Boundaries => opt(o, |o| o.hot_bursts.boundaries.to_string()),
            PerTtl => opt(o.and_then(|o| o.hot_queries_per_ttl), f2),
            MaxQps => opt(o, |o| o.max_queries_per_second.to_string()),
            Total | OriginQueries => opt(o, |o| o.total_queries.to_string()),
            HotP50 => opt(s, |s| f1(s.latency.hot.p50_ms)),
            HotP99 => opt(s, |s| f1(s.latency.hot.p99_ms)),
            OtherP50 => opt(s, |s| f1(s.latency.other.p50_ms)),
            OtherP99 => opt(s, |s| f1(s.latency.other.p99_ms)),
            P50 => opt(s, |s| f1(s.latency.all.p50_ms)),
            P99 => opt(s, |s| f1(s.latency.all.p99_ms)),
            Slow => opt(s, |s| s.latency.all.over_150ms.to_string()),
            HotSlow => opt(s, |s| s.latency.hot.over_150ms.to_string()),
            MissRate => opt(s.and_then(|s| s.cache.all.miss_rate), |v| {
                format!("{:.1} %", v * 100.0)
            }),
            Misses => opt(s, |s| s.cache.all.misses.to_string()),
            HotMisses => opt(s, |s| s.cache.hot.misses.to_string()),
            Errors => opt(s, |s| s.failed_requests.to_string()),
            Requests => opt(s, |s| s.requests.to_string()),
            Chart => opt(r.run.chart.as_ref(), |c| format!("[chart]({c})")),
            Counter(name, _) => r.run.counter(name).to_string(),
            Ttl => opt(s.and_then(|s| s.config.ttl), human),
            SecondsAbove(_) => opt(m.seconds_above, |n| n.to_string()),
            Origin404 => opt(st, |st| per_s(&st.per_second_404)),
            Mean404 => opt(st, |st| f1(st.mean_404_qps)),
            Max404 => opt(st.and_then(|st| st.per_second_404.iter().max()), |n| {
                n.to_string()
            }),
            Origin200 => opt(st, |st| per_s(&st.per_second_200)),
            Item => opt(tr, |t| t.key.to_string()),
            SlowVersion => ver(tr.and_then(|t| t.slow_version)),
            SlowMs => opt(tr, |t| t.slow_ms.to_string()),
            FastVersion => ver(tr.and_then(|t| t.fast_version)),
            CachedVersion => ver(tr.and_then(|t| t.cached_version)),
            CachedStatus => opt(tr, |t| format!("`{}`", t.cached_status)),
            OriginVersion => ver(tr.and_then(|t| t.origin_version)),
            Recovery => opt(rc, |x| match x.recovery_s {
                Some(s) => format!("{s:.1} s"),
                None => format!("not recovered within {:.0} s", x.observed_after_s),
            }),
            BaseMs => opt(rc, |x| f1(x.base_duration_ms)),
            WorstMs => opt(rc, |x| f1(x.worst_after_duration_ms)),
            Last5Ms => opt(rc, |x| f1(x.last5_duration_ms)),
            MaxInflight => opt(rc, |x| x.max_inflight_after.to_string()),
            InflightEnd => opt(rc, |x| x.inflight_at_end.to_string()),
            AfterErrors => opt(rc, |x| format!("{} / {}", x.after_errors, x.after_requests)),
            AfterP99 => opt(rc, |x| f1(x.after_p99_ms)),
            Retries => opt(rc, |x| x.retries.to_string()),
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

fn opt<T>(x: Option<T>, f: impl FnOnce(T) -> String) -> String {
    x.map_or_else(|| "–".into(), f)
}

/// The before/after columns (sections 1 and 9), `second` after the label.
fn standard(second: Col) -> Vec<Col> {
    use Col::*;
    let cols = [
        HotMean, HotMax, Boundaries, PerTtl, MaxQps, Total, HotP50, HotP99, OtherP50,
    ];
    let more = [OtherP99, Slow, MissRate, Errors, Requests, Chart];
    [Label, second]
        .into_iter()
        .chain(cols)
        .chain(more)
        .collect()
}

/// The columns printed to the terminal: the headline.
pub const HEADLINE: [Col; 6] = [
    Col::Label,
    Col::HotMean,
    Col::HotMax,
    Col::HotP99,
    Col::HotSlow,
    Col::Errors,
];

/// The load of a protocol run.
fn protocol_load(o: &LadderOptions) -> LoadConfig {
    let (ttl, seed) = (Some(o.ttl), Some(SEED));
    LoadConfig {
        concurrency: 50,
        duration: o.duration,
        hot_fraction: 0.95,
        keys: 1000,
        hot_key: HOT_KEY,
        ttl,
        seed,
        ..LoadConfig::default()
    }
}

/// The measurement protocol, as the report's header states it.
pub fn protocol(o: &LadderOptions) -> Protocol {
    let origin = OriginSpec::default();
    Protocol {
        load: protocol_load(o),
        origin_latency_ms: origin.latency_ms,
        origin_db_connections: origin.db_connections,
        fleet_instances: o.instances,
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
    let o = LadderOptions {
        profile: Profile::Full,
        out: Default::default(),
        duration: Duration::from_secs(1),
        ttl: Duration::from_secs(1),
        bin_dir: Default::default(),
        rungs: vec![],
        rows: vec![],
        instances: 2,
        charts: false,
        command: String::new(),
    };
    sections(&o)
        .iter()
        .map(|s| s.rung)
        .filter(|r| !r.is_empty())
        .collect()
}

/// The table: every section of the report, every run behind it.
pub fn sections(o: &LadderOptions) -> Vec<Section> {
    use Col::*;
    let quick = o.profile == Profile::Quick;
    let (ttl, n, p, base) = (o.ttl, o.instances, protocol_load(o), OriginSpec::default());
    let gw = |id: &str, label: &str, m: &str| RunSpec::gateway(id, label, m, ttl, &p);
    let row = |key: &str| {
        let (k, label, m) = TABLE_ROWS
            .iter()
            .find(|r| r.0 == key)
            .expect("a TABLE_ROWS name");
        gw(&format!("table-{k}"), label, m).fleet(n)
    };
    let rows: Vec<RunSpec> = TABLE_ROWS
        .iter()
        .filter(|r| o.rows.iter().any(|x| x == r.0))
        .map(|r| row(r.0))
        .collect();
    let counters = [
        Counter("lock_acquired", "lock acquired"),
        Counter("lock_contended", "lock contended"),
        Counter("lock_wait_timeouts", "lock waits timed out"),
        Counter("swr_refreshes", "SWR refreshes"),
        Counter("xfetch_refreshes", "XFetch refreshes"),
        Counter("fencing_rejections", "fencing rejections"),
        Counter("shed", "shed"),
    ];
    let rows_in_order = TABLE_ROWS.map(|r| r.1).join(", ");

    // Multi-key: keys written together expire together.
    let (mk_keys, mk_pool, jitter) = (200, 256, "0.2");
    let mk_ttl = Duration::from_secs(if quick { 4 } else { 10 });
    let mk_dur = Duration::from_secs(if quick { 10 } else { 25 });
    let mk_load = LoadConfig {
        duration: mk_dur,
        hot_fraction: 0.0,
        keys: mk_keys,
        ttl: Some(mk_ttl),
        ..p.clone()
    };
    let threshold = base.capacity_qps();
    let mk = |id: &str, label: &str, m: &str| {
        let mut s = RunSpec::gateway(id, label, m, mk_ttl, &mk_load).flags(&["--jitter", jitter]);
        (s.origin.db_connections, s.warm_burst) = (mk_pool, mk_keys);
        s.measure(Measure::SecondsAbove(threshold))
    };

    // Negative: absent ids.
    let (neg_items, neg_keys, neg_ttl) = (100, 200, Duration::from_secs(5));
    let neg_load = LoadConfig {
        hot_fraction: 0.0,
        keys: neg_keys,
        ..p.clone()
    };
    let neg = |id: &str, label: &str, m: &str| {
        let mut s = RunSpec::gateway(id, label, m, ttl, &neg_load)
            .flags(&["--negative-ttl", &human(neg_ttl)]);
        s.origin.items = neg_items;
        s.measure(Measure::Statuses)
    };

    // XFetch: a hot key on the fleet (filled first), a cold key read once a TTL.
    let xhot = |id: &str, m: &str, beta: Option<&str>| {
        let flag = beta.map_or(String::new(), |b| format!(", --xfetch-beta {b}"));
        let mut s = gw(id, &format!("hot key: {m}{flag}"), m).fleet(n);
        s.prewarm = vec![HOT_KEY];
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
    let ms = Duration::from_millis;
    let fence = Fencing {
        key: 0,
        slow: ms(1500),
        fast: ms(50),
        lock_ttl: ms(300),
    };
    let fence_ttl = Duration::from_secs(30);
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
        RunSpec {
            load: vec![],
            ..s.measure(Measure::Fencing(Fencing { key, ..fence }))
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
    let seed = Some(SEED + 1);
    let spike = LoadConfig {
        concurrency: 400,
        hot_fraction: 0.0,
        think_time: Duration::ZERO,
        seed,
        ..normal(sp)
    };
    let ok_ms = base.latency_ms * 3 / 2;
    let meta = |id: &str, label: &str, m: &str, extra: &[&str]| {
        let mut s = gw(id, label, m)
            .flags(extra)
            .measure(Measure::Recovery(ok_ms));
        (s.load, s.origin.items) = (vec![normal(b), spike.clone(), normal(a)], meta_items);
        let flags = std::iter::once(format!("--mitigations {m}"))
            .chain(extra.iter().map(|f| f.to_string()));
        s.setup = format!("{label} (`{}`)", flags.collect::<Vec<_>>().join(" "));
        s
    };
    let gate = base.db_connections.to_string();

    // Peers: nginx and Varnish, one instance and a fleet, next to the full stack.
    let peer = |v: &Variant, k: usize| RunSpec {
        id: format!("peers-{}-x{k}", v.key),
        label: format!("{} × {k}", v.label()),
        setup: format!(
            "{k} × {}, own cache each ([config](peers/{}))",
            v.kind.package(),
            v.file_name()
        ),
        front: Front::Peer(*v),
        instances: k,
        ..gw("", "", "")
    };
    let single = gw(
        "peers-stampede-x1",
        "stampede-layer full stack × 1 (in-process store)",
        "all",
    );
    let mut peer_rows = vec![single.labelled(
        "stampede-layer full stack × 1",
        "`--mitigations all`, in-process store",
    )];
    peer_rows.extend(peers::VARIANTS.iter().map(|v| peer(v, 1)));
    let fleet_label = format!("stampede-layer full stack × {n}");
    peer_rows.push(row("full").labelled(
        fleet_label,
        "`--mitigations all`, one Redis (the table's full-stack run)",
    ));
    peer_rows.extend(peers::VARIANTS.iter().map(|v| peer(v, n)));

    vec![
        Section {
            rung: "table",
            heading: format!(
                "Before/after, one mitigation added per row ({n} gateways, one Redis)"
            ),
            parts: vec![
                Part::Table(String::new(), standard(Mitigations), rows.clone()),
                Part::Table(
                    "Gateway counters of the same runs (summed over the fleet):".into(),
                    [Label].into_iter().chain(counters).collect(),
                    rows,
                ),
                Part::Note(|res, _| {
                    opt(res.overview_chart.as_ref(), |c| {
                        format!("![naive vs full stack]({c})")
                    })
                }),
                Part::Text(format!(
                    "Rows in order: {rows_in_order}. The full stack adds `overload-gate` (`--mitigations all`)."
                )),
            ],
        },
        Section {
            rung: "scope",
            heading: "Scope: single-flight is per process, the lock is per fleet".into(),
            parts: vec![Part::Table(
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
        },
        Section {
            rung: "multi-key",
            heading: format!("Multi-key: {mk_keys} keys written together expire together"),
            parts: vec![
                Part::Table(
                    format!(
                        "One gateway (in-process store). Keys 1..={mk_keys} are filled by one burst of concurrent requests (origin pool raised to {mk_pool} connections so the burst is one round trip), then {} clients read them evenly. *Seconds above* counts seconds with more than {threshold} origin queries — what a default origin-sim ({} connections × {} ms) can serve.",
                        mk_load.concurrency, base.db_connections, base.latency_ms
                    ),
                    vec![
                        Label,
                        Ttl,
                        MaxQps,
                        SecondsAbove(threshold),
                        Total,
                        P99,
                        Slow,
                        Errors,
                        Chart,
                    ],
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
                    let ms: Vec<String> = runs
                        .iter()
                        .filter_map(|r| r.measured.warm_ms)
                        .map(|m| m.to_string())
                        .collect();
                    format!("The warm bursts took {} ms.", ms.join(" / "))
                }),
            ],
        },
        Section {
            rung: "negative",
            heading: "Negative: a miss storm on ids that do not exist".into(),
            parts: vec![Part::Table(
                format!(
                    "One gateway. origin-sim has items 1..={neg_items}; {} clients read ids 1..={neg_keys} evenly, so ids above {neg_items} answer 404. Negative TTL {}.",
                    neg_load.concurrency,
                    human(neg_ttl)
                ),
                vec![
                    Label, Origin404, Mean404, Max404, Origin200, P99, Errors, Chart,
                ],
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
        },
        Section {
            rung: "xfetch",
            heading: "XFetch: refresh before the cliff — on a hot key only".into(),
            parts: vec![
                Part::Table(
                    format!(
                        "Hot key, protocol load on the fleet, `/items/{HOT_KEY}` filled before the load starts (so every hot-key miss is an expiry):"
                    ),
                    vec![
                        Name,
                        HotMisses,
                        PerTtl,
                        BoundaryMean,
                        HotMax,
                        counters[4],
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
                    format!(
                        "Cold key: one client reads `/items/{HOT_KEY}` with {} think time (≈ the TTL), one gateway:",
                        human(cold.think_time)
                    ),
                    vec![Name, Requests, Misses, MissRate, OriginQueries, P50, Chart],
                    vec![
                        xcold("xfetch-cold-off", "single-flight"),
                        xcold("xfetch-cold-on", "single-flight,xfetch"),
                    ],
                ),
            ],
        },
        Section {
            rung: "fencing",
            heading: "Fencing: a rebuild slower than the lock TTL".into(),
            parts: vec![
                Part::Table(
                    format!(
                        "Fleet with `--mitigations all --lock-ttl {} --ttl {}`, a fresh one per item. Per item: origin latency set to {} (`PUT /admin/config`), a GET through g1 starts a slow rebuild and reads version v; the item is bumped (`PUT /items/{{id}}` on the origin, → v+1) and the origin set to {}; once g1's lock has expired a GET through g2 takes a new lock (newer fencing token) and fills v+1; g1's late fill carries the older token. Then a GET through another gateway is compared with the origin's direct answer.",
                        human(fence.lock_ttl),
                        human(fence_ttl),
                        human(fence.slow),
                        human(fence.fast)
                    ),
                    vec![
                        Item,
                        SlowVersion,
                        SlowMs,
                        FastVersion,
                        CachedVersion,
                        CachedStatus,
                        OriginVersion,
                    ],
                    fencing.into(),
                ),
                Part::Note(|_, runs| {
                    let n = runs.iter().map(|r| r.gateways.len()).max().unwrap_or(0);
                    let per: Vec<f64> = (0..n)
                        .map(|i| {
                            runs.iter()
                                .filter_map(|r| r.gateways.get(i)?.get("fencing_rejections"))
                                .sum()
                        })
                        .collect();
                    let newest = runs
                        .iter()
                        .filter_map(|r| r.measured.fencing.as_ref())
                        .all(|t| {
                            t.cached_version.is_some() && t.cached_version == t.origin_version
                        });
                    format!(
                        "`stampede_fencing_rejections_total` per gateway, summed over the items: {per:?} (total {}). Cache ends with the newest version for every item: **{}**.",
                        per.iter().sum::<f64>(),
                        if newest { "yes" } else { "no" }
                    )
                }),
            ],
        },
        Section {
            rung: "metastable",
            heading: "Metastable failure: a retry storm keeps the origin pinned".into(),
            parts: vec![Part::Table(
                format!(
                    "One gateway, origin {} ms × {} connections ({} q/s). Phases: {b} s normal load, {sp} s spike, {a} s normal load again. Normal: {}. Spike: {}. origin-sim finishes every query it started, even when the client gave up. *Recovery* = seconds from the spike's end until the mean duration of origin queries finishing in each second stays ≤ {ok_ms} ms.",
                    base.latency_ms,
                    base.db_connections,
                    base.capacity_qps(),
                    describe(&normal(b)),
                    describe(&spike)
                ),
                vec![
                    Setup,
                    Recovery,
                    BaseMs,
                    WorstMs,
                    Last5Ms,
                    MaxInflight,
                    InflightEnd,
                    AfterErrors,
                    AfterP99,
                    Retries,
                    Counter("shed", "shed (503)"),
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
        },
        Section {
            rung: "",
            heading: "Charts".into(),
            parts: vec![Part::Note(|res, _| {
                let list = res.runs.iter().filter(|r| r.measured.recovery.is_none());
                let list: String = list
                    .filter_map(|r| Some(format!("- [{}]({})\n", r.label, r.chart.as_ref()?)))
                    .collect();
                if list.is_empty() {
                    return list;
                }
                format!(
                    "One PNG per run: origin queries per second (all keys and the hot key) and the p99 latency of the requests started in each second, for the hot key and for all requests (log scale). The all-requests p99 is set by the other keys, which mostly miss (see the protocol).\n\n{list}"
                )
            })],
        },
        Section {
            rung: "peers",
            heading: "Peers: nginx and Varnish under the same protocol".into(),
            parts: vec![
                Part::Table(
                    format!(
                        "The load of section 1 ({} clients, {:.0} % hot key, {}, TTL {}, origin-sim {} ms × {} connections, fresh origin-sim per run) against nginx and Varnish as caching reverse proxies, one instance and {n} instances with the load round-robin. Each peer instance has its own cache: neither has a lock shared across instances, so a fleet of them rebuilds a key once per instance. stampede-layer's full stack (`--mitigations all`) is repeated from the same ladder run for comparison. nginx's cache lock waits at most {} (`proxy_cache_lock_timeout` and `proxy_cache_lock_age`, as the gateway's default `--lock-ttl`).\n\n{}",
                        p.concurrency,
                        p.hot_fraction * 100.0,
                        human(p.duration),
                        human(ttl),
                        base.latency_ms,
                        base.db_connections,
                        human(peers::NGINX_LOCK_BOUND),
                        peers::CACHE_STATUS_PROSE
                    ),
                    standard(Setup),
                    peer_rows,
                ),
                Part::Note(|_, runs| {
                    let mut v: Vec<String> = runs
                        .iter()
                        .filter_map(|r| Some(format!("`{}`", r.measured.peer.as_ref()?.version)))
                        .collect();
                    v.sort();
                    v.dedup();
                    if v.is_empty() {
                        String::new()
                    } else {
                        format!("Installed: {}.", v.join(", "))
                    }
                }),
                Part::Text(peers::WHAT_DRIVES_THE_ROWS.into()),
                Part::Note(|_, runs| {
                    let mut md = String::from(
                        "The config files, verbatim as the single-instance runs used them (fleet instances differ only in port and directories; `<tmp>` stands for the run's temporary directory):\n\n",
                    );
                    for r in runs.iter().filter(|r| r.instances == 1) {
                        let Some(c) = &r.measured.peer else { continue };
                        let lang = if c.file.ends_with(".vcl") {
                            "vcl"
                        } else {
                            "nginx"
                        };
                        let label = r.label.rsplit_once(" × ").map_or(r.label.as_str(), |x| x.0);
                        md += &format!(
                            "<details><summary>{label} — <a href=\"{0}\">{0}</a></summary>\n\n`{1}`\n\n```{lang}\n{2}```\n\n</details>\n\n",
                            c.file, c.command, c.text
                        );
                    }
                    if md.contains("<details>") {
                        md
                    } else {
                        String::new()
                    }
                }),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(profile: Profile) -> LadderOptions {
        let (rungs, rows, duration) = (profile.rungs(), profile.rows(), profile.duration());
        let ttl = Duration::from_secs(2);
        LadderOptions {
            profile,
            out: Default::default(),
            duration,
            ttl,
            bin_dir: Default::default(),
            rungs,
            rows,
            instances: 3,
            charts: false,
            command: String::new(),
        }
    }

    /// Rows that share a run id share its whole setup (the runner runs it once).
    #[test]
    fn one_id_one_setup() {
        let all = sections(&opts(Profile::Full));
        let rows: Vec<&RunSpec> = all.iter().flat_map(Section::rows).collect();
        let key = |s: &RunSpec| {
            format!(
                "{:?}{}{:?}{:?}{:?}{:?}{:?}",
                s.front, s.instances, s.origin, s.ttl, s.load, s.measure, s.prewarm
            )
        };
        for a in &rows {
            for b in rows.iter().filter(|b| b.id == a.id) {
                assert_eq!(key(a), key(b), "{}", a.id);
            }
        }
    }

    /// Every rung has a report section with a heading and a table, and every
    /// counter column names a scraped counter.
    #[test]
    fn every_rung_has_a_report_section() {
        let names = [
            "table",
            "scope",
            "multi-key",
            "negative",
            "xfetch",
            "fencing",
            "metastable",
            "peers",
        ];
        assert_eq!(rung_names(), names);
        for s in sections(&opts(Profile::Full))
            .iter()
            .filter(|s| !s.rung.is_empty())
        {
            assert!(!s.heading.is_empty() && s.rows().count() > 0, "{}", s.rung);
            for p in &s.parts {
                if let Part::Table(_, cols, _) = p {
                    for c in cols {
                        assert!(!c.head().is_empty());
                        if let Col::Counter(name, _) = c {
                            assert!(COUNTERS.iter().any(|k| k.0 == *name), "{name}");
                        }
                    }
                }
            }
        }
    }

    /// The prose takes its numbers from the table's settings.
    #[test]
    fn prose_follows_the_table() {
        let mut o = opts(Profile::Full);
        (o.ttl, o.instances, o.duration) = (Duration::from_millis(1500), 5, Duration::from_secs(7));
        let all = sections(&o);
        assert!(all[0].heading.contains("(5 gateways"));
        let intro = |rung: &str| {
            let s = all.iter().find(|s| s.rung == rung).unwrap();
            s.parts
                .iter()
                .find_map(|p| {
                    if let Part::Table(t, ..) = p {
                        Some(t.clone())
                    } else {
                        None
                    }
                })
                .unwrap()
        };
        assert!(
            intro("peers").contains("50 clients, 95 % hot key, 7s, TTL 1s 500ms"),
            "{}",
            intro("peers")
        );
        assert!(intro("fencing").contains("--lock-ttl 300ms"));
        assert!(
            intro("metastable").contains("≤ 300 ms") && intro("metastable").contains("400 clients")
        );
        assert!(intro("multi-key").contains("more than 80 origin queries"));
    }

    #[test]
    fn profiles_select_rows_and_rungs() {
        assert_eq!(Profile::Quick.rungs(), ["table"]);
        assert_eq!(Profile::Full.rungs(), rung_names());
        assert_eq!(Profile::Full.rows().len(), TABLE_ROWS.len());
        let quick = Profile::Quick.rows();
        assert!(quick.contains(&"naive".into()) && quick.contains(&"full".into()));
        assert_eq!(
            sections(&opts(Profile::Quick))[0].rows().count(),
            2 * quick.len()
        );
        assert!(Profile::Quick.duration() < Profile::Full.duration());
    }
}
