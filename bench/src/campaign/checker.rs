//! The checker: a pure function of the recorded history and origin-sim's
//! query log. Each invariant reports its violations with the history lines
//! that break it.
//!
//! * **(a) monotonic cache reads** — per key, once a version `v` was served
//!   (any completed read, or an update through a gateway), a later cache hit
//!   (invoked after that completion) must not serve a version below `v`.
//!   Allowed: a near-cache copy within its bound (the near-cache TTL,
//!   counted from the first completion of a newer version), and a request
//!   in flight on a gateway while it was paused or killed.
//! * **(b) no invalidation undone by an older fill** — after an update
//!   through a gateway (to version `u`) or a purge returns, a cache hit
//!   anywhere invoked later than its completion plus the near-cache TTL
//!   must serve at least `u` (for a purge: the newest version any operation
//!   had completed with before it was sent). Each offending hit names the
//!   write and, when the origin's log shows one, the rebuild that raced it.
//! * **(c) one origin rebuild per key fleet-wide** — two origin queries of
//!   one id that overlap in time. Overlaps inside a fault window that
//!   documents a takeover (a paused, killed or just restarted gateway; Redis
//!   restarted or down, when the gateways fall back to process-local
//!   coordination; an origin slower than the lock TTL) are counted as
//!   takeovers with that fault instead. Classified by time window only.
//! * **(d) bounded staleness after an invalidation** — per gateway, how long
//!   after an update or purge through any gateway returned it still served
//!   an older version from the cache (a hit, or a share of another request's
//!   rebuild); each (gateway, write) pair past the near-cache TTL is a
//!   violation, and the maximum is reported per gateway.
//! * **(e) no client error outside the documented paths** — allowed: 503
//!   (overload gate), 504 (fill deadline, upstream timeout), 502 (origin
//!   unreachable or failing), the origin's injected 500 while its error rate
//!   is up, and timeouts or connection errors to a gateway that is paused,
//!   killed or restarting. Anything else is a violation: a 500 of the
//!   gateway's own, a 404 for an item that exists, a body that is not the
//!   item, a timeout on a healthy gateway, a failed write to the origin.
//!
//! Times: operations and faults carry monotonic ns of one clock; origin
//! queries carry wall ms, compared with the faults' wall ms.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::history::{Entry, Fault, FaultKind, Line, Meta, Op, OpKind};
use crate::stats::OriginQuery;

const MS: u64 = 1_000_000;

/// The checker's tolerances (beyond the bounds the history's meta line gives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckConfig {
    /// Added to the near-cache bound: the bench measures invoke times before
    /// the request is sent, a copy's lifetime starts when the gateway stores
    /// it (after its Redis read returns). ms.
    pub slack_ms: u64,
    /// Client errors to a paused, killed or restarting gateway are allowed
    /// this long after the fault ended (pooled connections to the killed
    /// process fail on their next use). ms.
    pub error_grace_ms: u64,
    /// The origin's injected 500s are allowed this long after the error rate
    /// went back to 0 (a query draws its error when it starts). ms.
    pub origin_error_grace_ms: u64,
    /// Overlapping origin queries of one id: shorter overlaps are the ms
    /// rounding of `t_ms` and `duration_ms`, not overlaps. ms.
    pub overlap_tolerance_ms: u64,
    /// How long after a Redis restart the gateways may still coordinate
    /// process-locally (their circuit breaker's longest cool-down). ms.
    pub breaker_cool_down_ms: u64,
    /// Violations listed per invariant (all are counted).
    pub max_examples: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            slack_ms: 100,
            error_grace_ms: 1000,
            origin_error_grace_ms: 1000,
            overlap_tolerance_ms: 2,
            breaker_cool_down_ms: 5000,
            max_examples: 20,
        }
    }
}

/// The five invariants.
pub const INVARIANTS: [(&str, &str); 5] = [
    (
        "a",
        "the version served from the cache never goes backwards (beyond the near-cache bound)",
    ),
    (
        "b",
        "no update or purge is undone by an older fill (cache hits after completion + near-cache TTL)",
    ),
    (
        "c",
        "at most one origin rebuild of a key in flight fleet-wide (documented takeovers counted apart)",
    ),
    (
        "d",
        "after an update or purge returns, no gateway serves the older version past the near-cache TTL",
    ),
    ("e", "no client error outside the documented paths"),
];

/// One broken invariant, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub invariant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<usize>,
    pub what: String,
    /// History line numbers (1-based), the offending operation first.
    pub lines: Vec<usize>,
    /// Those lines (and, for (c), the origin queries) as JSON.
    pub evidence: Vec<String>,
}

/// One invariant's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvariantResult {
    pub description: String,
    pub violations: usize,
    /// The first `max_examples` violations.
    pub examples: Vec<Violation>,
}

/// Operation counts of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    pub total: usize,
    /// Answered 2xx with a well-formed body.
    pub ok: usize,
    /// Answered with another status.
    pub status_errors: usize,
    /// No answer (timeout, connection error) or a malformed body.
    pub client_errors: usize,
    /// Reads served from the cache (`hit`).
    pub hits: usize,
}

/// A documented takeover: overlapping origin queries explained by a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    pub id: u64,
    pub fault: String,
    pub fault_line: usize,
    pub queries: Vec<String>,
}

/// The checker's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub meta: Option<Meta>,
    /// First to last recorded operation, s.
    pub duration_s: f64,
    pub operations: BTreeMap<String, OpCounts>,
    pub faults: BTreeMap<String, usize>,
    pub invariants: BTreeMap<String, InvariantResult>,
    /// Documented takeovers (overlapping rebuilds inside a fault window), by fault kind.
    pub takeovers: BTreeMap<String, usize>,
    pub takeover_examples: Vec<Takeover>,
    /// Per gateway (`g0`…): the longest an older version was served from the
    /// cache after an update or purge through a gateway returned, ms.
    pub max_staleness_ms: BTreeMap<String, f64>,
    /// Origin queries in the campaign window.
    pub origin_queries: usize,
    pub config: CheckConfig,
}

impl CheckResult {
    pub fn total_violations(&self) -> usize {
        self.invariants.values().map(|r| r.violations).sum()
    }
}

struct Ctx<'a> {
    meta: Meta,
    cfg: &'a CheckConfig,
    ops: Vec<(&'a Line, &'a Op)>,
    faults: Vec<(&'a Line, &'a Fault)>,
    out: BTreeMap<String, InvariantResult>,
}

impl Ctx<'_> {
    fn bound_ns(&self) -> u64 {
        (self.meta.near_cache_ttl_ms + self.cfg.slack_ms) * MS
    }

    fn violate(&mut self, v: Violation) {
        let r = self.out.entry(v.invariant.clone()).or_default();
        r.violations += 1;
        if r.examples.len() < self.cfg.max_examples {
            r.examples.push(v);
        }
    }

    /// Whether `op` was in flight on its gateway while that gateway was
    /// paused or killed (its answer may predate the fault).
    fn across_gateway_fault(&self, op: &Op) -> bool {
        self.faults.iter().any(|(_, f)| {
            matches!(f.kind, FaultKind::PauseGateway | FaultKind::KillGateway)
                && f.gateway.is_some()
                && f.gateway == op.gateway
                && op.invoke_ns <= f.end_ns
                && op.complete_ns >= f.start_ns
        })
    }
}

fn evidence(lines: &[&Line]) -> (Vec<usize>, Vec<String>) {
    (
        lines.iter().map(|l| l.no).collect(),
        lines.iter().map(|l| l.json()).collect(),
    )
}

/// Check a history (and the origin's query log) against the invariants.
pub fn check(lines: &[Line], queries: &[OriginQuery], cfg: &CheckConfig) -> CheckResult {
    let meta = lines.iter().find_map(|l| match &l.entry {
        Entry::Meta(m) => Some(m.clone()),
        _ => None,
    });
    let mut ctx = Ctx {
        meta: meta.clone().unwrap_or_else(default_meta),
        cfg,
        ops: lines
            .iter()
            .filter_map(|l| match &l.entry {
                Entry::Op(o) => Some((l, o)),
                _ => None,
            })
            .collect(),
        faults: lines
            .iter()
            .filter_map(|l| match &l.entry {
                Entry::Fault(f) => Some((l, f)),
                _ => None,
            })
            .collect(),
        out: BTreeMap::new(),
    };
    let mut operations: BTreeMap<String, OpCounts> = BTreeMap::new();
    for (_, op) in &ctx.ops {
        let c = operations.entry(op.kind.name().into()).or_default();
        c.total += 1;
        if op.ok() {
            c.ok += 1;
        } else if op.error.is_some() {
            c.client_errors += 1;
        } else {
            c.status_errors += 1;
        }
        c.hits += usize::from(op.kind == OpKind::Read && op.is_hit());
    }
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for (_, f) in &ctx.faults {
        *faults.entry(f.kind.name().into()).or_default() += 1;
    }
    check_monotonic(&mut ctx);
    check_invalidations(&mut ctx, queries);
    let max_staleness_ms = check_staleness(&mut ctx);
    let (takeovers, takeover_examples, origin_queries) = check_rebuilds(&mut ctx, queries);
    check_errors(&mut ctx);

    let mut invariants = BTreeMap::new();
    for (id, description) in INVARIANTS {
        let mut r = ctx.out.remove(id).unwrap_or_default();
        r.description = description.into();
        invariants.insert(id.to_string(), r);
    }
    let first = ctx.ops.iter().map(|(_, o)| o.invoke_ns).min().unwrap_or(0);
    let last = ctx.ops.iter().map(|(_, o)| o.complete_ns).max().unwrap_or(0);
    CheckResult {
        meta,
        duration_s: (last.saturating_sub(first)) as f64 / 1e9,
        operations,
        faults,
        invariants,
        takeovers,
        takeover_examples,
        max_staleness_ms,
        origin_queries,
        config: cfg.clone(),
    }
}

/// The meta line's defaults, for a history without one.
pub fn default_meta() -> Meta {
    Meta {
        seed: 0,
        profile: String::new(),
        gateways: 0,
        started_wall_ms: 0,
        ttl_ms: 2000,
        stale_ttl_ms: 1000,
        lock_ttl_ms: 500,
        near_cache_ttl_ms: 1000,
        origin_latency_ms: 20,
        client_timeout_ms: 3000,
        command: String::new(),
        machine: String::new(),
    }
}

/// Operations grouped by key, in completion order.
fn by_key<'a>(ops: &[(&'a Line, &'a Op)]) -> BTreeMap<u64, Vec<(&'a Line, &'a Op)>> {
    let mut m: BTreeMap<u64, Vec<(&Line, &Op)>> = BTreeMap::new();
    for (l, o) in ops {
        m.entry(o.key).or_default().push((l, o));
    }
    for v in m.values_mut() {
        v.sort_by_key(|(_, o)| o.complete_ns);
    }
    m
}

/// A version a client saw through a gateway: a read or an update answered 200.
fn observed(op: &Op) -> Option<i64> {
    let through = matches!(op.kind, OpKind::Read | OpKind::Update);
    (through && op.status == Some(200) && op.error.is_none())
        .then_some(op.version)
        .flatten()
}

/// (a): per key, hits never go below a version that completed before they
/// were invoked, beyond the near-cache bound.
fn check_monotonic(ctx: &mut Ctx<'_>) {
    let bound = ctx.bound_ns();
    let keys = by_key(&ctx.ops);
    let mut found = Vec::new();
    for (key, ops) in &keys {
        // Completed observations in completion order, with the running max.
        let seen: Vec<(&Line, u64, i64)> = ops
            .iter()
            .filter_map(|(l, o)| observed(o).map(|v| (*l, o.complete_ns, v)))
            .collect();
        let mut best: Vec<usize> = Vec::with_capacity(seen.len()); // index of the max so far
        for (i, s) in seen.iter().enumerate() {
            match best.last() {
                Some(&b) if seen[b].2 >= s.2 => best.push(b),
                _ => best.push(i),
            }
        }
        let earliest = EarliestAbove::new(seen.iter().map(|s| (s.2, s.1)));
        for (l, h) in ops {
            let (true, Some(w)) = (h.kind == OpKind::Read && h.is_hit(), h.version) else {
                continue;
            };
            let n = seen.partition_point(|s| s.1 < h.invoke_ns);
            if n == 0 {
                continue;
            }
            let top = seen[best[n - 1]];
            if top.2 <= w {
                continue;
            }
            // The first completion of any version newer than w.
            let first = earliest
                .above(w)
                .map_or(top, |(_, i)| seen[i]);
            if h.invoke_ns <= first.1 + bound || ctx.across_gateway_fault(h) {
                continue;
            }
            let (lines, ev) = evidence(&[l, first.0, top.0]);
            found.push(Violation {
                invariant: "a".into(),
                key: Some(*key),
                gateway: h.gateway,
                what: format!(
                    "hit served version {w} {:.0} ms after version {} first completed (line {}); newest completed before it: {} (line {})",
                    (h.invoke_ns - first.1) as f64 / 1e6,
                    first.2,
                    first.0.no,
                    top.2,
                    top.0.no
                ),
                lines,
                evidence: ev,
            });
        }
    }
    found.sort_by_key(|v| v.lines[0]);
    for v in found {
        ctx.violate(v);
    }
}

/// For values with times: the earliest time among values above a bound.
struct EarliestAbove {
    /// (value, earliest time among this and every higher value, its index)
    sorted: Vec<(i64, u64, usize)>,
}

impl EarliestAbove {
    fn new(items: impl Iterator<Item = (i64, u64)>) -> Self {
        let mut sorted: Vec<(i64, u64, usize)> =
            items.enumerate().map(|(i, (v, t))| (v, t, i)).collect();
        sorted.sort_by_key(|s| (s.0, s.1));
        for i in (0..sorted.len().saturating_sub(1)).rev() {
            if sorted[i + 1].1 < sorted[i].1 {
                (sorted[i].1, sorted[i].2) = (sorted[i + 1].1, sorted[i + 1].2);
            }
        }
        Self { sorted }
    }

    /// The earliest (time, index) among values above `w`.
    fn above(&self, w: i64) -> Option<(u64, usize)> {
        let i = self.sorted.partition_point(|s| s.0 <= w);
        self.sorted.get(i).map(|s| (s.1, s.2))
    }
}

/// An invalidation: an update through a gateway, or a purge, that returned.
struct Invalidation<'a> {
    line: &'a Line,
    op: &'a Op,
    /// Hits after it must serve at least this version.
    floor: i64,
}

/// Updates through a gateway and purges of `ops` (one key, in completion
/// order) with the version each guarantees.
fn invalidations<'a>(ops: &[(&'a Line, &'a Op)]) -> Vec<Invalidation<'a>> {
    let mut out = Vec::new();
    for (l, o) in ops {
        let floor = match o.kind {
            OpKind::Update if o.ok() => o.version,
            OpKind::Purge if o.ok() => {
                // The origin had at least every version any operation on
                // the key had completed with before the purge was sent.
                ops.iter()
                    .filter(|(_, p)| p.complete_ns < o.invoke_ns && p.ok())
                    .filter_map(|(_, p)| p.version)
                    .max()
            }
            _ => None,
        };
        if let Some(floor) = floor {
            out.push(Invalidation {
                line: l,
                op: o,
                floor,
            });
        }
    }
    out
}

/// Origin queries of `id` that raced an invalidation: started before it
/// returned, ended after it was sent (an older fill in flight across it).
fn racing_fill(queries: &[&OriginQuery], inv: &Op) -> Option<String> {
    queries
        .iter()
        .filter(|q| q.t_ms <= inv.complete_wall_ms && q.t_ms + q.duration_ms >= inv.invoke_wall_ms)
        .map(|q| format!("origin query t_ms={} duration_ms={}", q.t_ms, q.duration_ms))
        .next()
}

/// (b): hits after an invalidation's completion + bound serve its version.
fn check_invalidations(ctx: &mut Ctx<'_>, queries: &[OriginQuery]) {
    let bound = ctx.bound_ns();
    let keys = by_key(&ctx.ops);
    let mut found = Vec::new();
    for (key, ops) in &keys {
        let mut invs = invalidations(ops);
        invs.sort_by_key(|i| i.op.complete_ns);
        let qs: Vec<&OriginQuery> = queries.iter().filter(|q| q.id == *key).collect();
        // Index of the highest floor among the first i+1 invalidations.
        let mut best: Vec<usize> = Vec::with_capacity(invs.len());
        for (i, inv) in invs.iter().enumerate() {
            match best.last() {
                Some(&b) if invs[b].floor >= inv.floor => best.push(b),
                _ => best.push(i),
            }
        }
        for (l, h) in ops {
            let (true, Some(w)) = (h.kind == OpKind::Read && h.is_hit(), h.version) else {
                continue;
            };
            // The newest-floored invalidation that is past its bound.
            let n = invs.partition_point(|i| i.op.complete_ns + bound < h.invoke_ns);
            let Some(inv) = n.checked_sub(1).map(|i| &invs[best[i]]).filter(|i| i.floor > w)
            else {
                continue;
            };
            if ctx.across_gateway_fault(h) {
                continue;
            }
            let cause = racing_fill(&qs, inv.op)
                .map(|q| format!("; an older fill raced it ({q})"))
                .unwrap_or_default();
            let (lines, ev) = evidence(&[l, inv.line]);
            found.push(Violation {
                invariant: "b".into(),
                key: Some(*key),
                gateway: h.gateway,
                what: format!(
                    "hit served version {w} {:.0} ms after the {} on line {} returned (version {} or newer expected){cause}",
                    (h.invoke_ns - inv.op.complete_ns) as f64 / 1e6,
                    inv.op.kind.name(),
                    inv.line.no,
                    inv.floor
                ),
                lines,
                evidence: ev,
            });
        }
    }
    found.sort_by_key(|v| v.lines[0]);
    for v in found {
        ctx.violate(v);
    }
}

/// (d): per gateway, the longest an older version was served from the cache
/// after an invalidation returned; each (gateway, invalidation) past the
/// bound is a violation.
fn check_staleness(ctx: &mut Ctx<'_>) -> BTreeMap<String, f64> {
    let bound = ctx.bound_ns();
    let keys = by_key(&ctx.ops);
    let mut max: BTreeMap<String, f64> = (0..ctx.meta.gateways)
        .map(|g| (format!("g{g}"), 0.0))
        .collect();
    // (gateway, invalidation line) → (staleness, offending line, invalidation)
    let mut worst: BTreeMap<(usize, usize), (u64, &Line, &Line, i64, i64)> = BTreeMap::new();
    for ops in keys.values() {
        let mut invs = invalidations(ops);
        invs.sort_by_key(|i| i.op.complete_ns);
        let earliest = EarliestAbove::new(invs.iter().map(|i| (i.floor, i.op.complete_ns)));
        for (l, r) in ops {
            let (Some(g), Some(w)) = (r.gateway, r.version) else {
                continue;
            };
            if r.kind != OpKind::Read || !r.is_cache_served() || ctx.across_gateway_fault(r) {
                continue;
            }
            // The earliest invalidation to a newer version that returned before it.
            let Some(inv) = earliest
                .above(w)
                .map(|(_, i)| &invs[i])
                .filter(|i| i.op.complete_ns < r.invoke_ns)
            else {
                continue;
            };
            let stale = r.invoke_ns - inv.op.complete_ns;
            let m = max.entry(format!("g{g}")).or_insert(0.0);
            *m = m.max(stale as f64 / 1e6);
            if stale > bound {
                let e = worst
                    .entry((g, inv.line.no))
                    .or_insert((stale, l, inv.line, w, inv.floor));
                if stale > e.0 {
                    *e = (stale, l, inv.line, w, inv.floor);
                }
            }
        }
    }
    let mut found: Vec<Violation> = worst
        .into_iter()
        .map(|((g, _), (stale, l, inv, w, floor))| {
            let (lines, ev) = evidence(&[l, inv]);
            Violation {
                invariant: "d".into(),
                key: match &l.entry {
                    Entry::Op(o) => Some(o.key),
                    _ => None,
                },
                gateway: Some(g),
                what: format!(
                    "g{g} still served version {w} {:.0} ms after the invalidation on line {} returned (version {floor}); bound {} ms",
                    stale as f64 / 1e6,
                    inv.no,
                    ctx.meta.near_cache_ttl_ms
                ),
                lines,
                evidence: ev,
            }
        })
        .collect();
    found.sort_by_key(|v| v.lines[0]);
    for v in found {
        ctx.violate(v);
    }
    for v in max.values_mut() {
        *v = (*v * 10.0).round() / 10.0;
    }
    max
}

/// The window (wall ms) in which `f` documents a rebuild takeover, if it does.
fn takeover_window(f: &Fault, meta: &Meta, cfg: &CheckConfig) -> Option<(u64, u64)> {
    let lock = meta.lock_ttl_ms;
    let after = match f.kind {
        // The paused holder's lease expires, others take over; once resumed
        // it finishes the rebuild it had started.
        FaultKind::PauseGateway => lock + meta.client_timeout_ms,
        // A killed holder's lock lives out its TTL; a restarted gateway
        // rebuilds what it was asked while it came up.
        FaultKind::KillGateway => lock * 2,
        // Gateways coordinate process-locally until their breaker closes.
        FaultKind::RestartRedis => cfg.breaker_cool_down_ms + lock,
        // Queries started while the origin was slow stay slow; leases that
        // expire meanwhile hand the key over.
        FaultKind::SlowOrigin => slow_latency_ms(f) + lock * 2,
        FaultKind::KillPubsub | FaultKind::OriginErrors => return None,
    };
    Some((f.start_wall_ms, f.end_wall_ms + after))
}

/// The slow latency a slow-origin fault set (`latency_ms=N` in its detail).
fn slow_latency_ms(f: &Fault) -> u64 {
    f.detail
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|p| p.strip_prefix("latency_ms=")?.parse().ok())
        .unwrap_or(2000)
}

/// (c): overlapping origin queries of one id, apart from documented takeovers.
fn check_rebuilds(
    ctx: &mut Ctx<'_>,
    queries: &[OriginQuery],
) -> (BTreeMap<String, usize>, Vec<Takeover>, usize) {
    let start = ctx.meta.started_wall_ms;
    let tol = ctx.cfg.overlap_tolerance_ms;
    let mut by_id: HashMap<u64, Vec<&OriginQuery>> = HashMap::new();
    let mut n = 0;
    for q in queries.iter().filter(|q| q.t_ms >= start) {
        by_id.entry(q.id).or_default().push(q);
        n += 1;
    }
    let windows: Vec<(&Line, &Fault, (u64, u64))> = ctx
        .faults
        .iter()
        .filter_map(|(l, f)| takeover_window(f, &ctx.meta, ctx.cfg).map(|w| (*l, *f, w)))
        .collect();
    let mut takeovers: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    let mut found = Vec::new();
    let mut ids: Vec<_> = by_id.into_iter().collect();
    ids.sort_by_key(|(id, _)| *id);
    for (id, mut qs) in ids {
        qs.sort_by_key(|q| q.t_ms);
        for (i, a) in qs.iter().enumerate() {
            let a_end = a.t_ms + a.duration_ms;
            for b in &qs[i + 1..] {
                if b.t_ms + tol >= a_end {
                    break;
                }
                let (lo, hi) = (b.t_ms, a_end.min(b.t_ms + b.duration_ms));
                if hi < lo + tol {
                    continue;
                }
                let ev = vec![query_json(a), query_json(b)];
                match windows.iter().find(|(_, _, (s, e))| lo <= *e && hi >= *s) {
                    Some((l, f, _)) => {
                        *takeovers.entry(f.kind.name().into()).or_default() += 1;
                        if examples.len() < ctx.cfg.max_examples {
                            examples.push(Takeover {
                                id,
                                fault: f.kind.name().into(),
                                fault_line: l.no,
                                queries: ev,
                            });
                        }
                    }
                    None => found.push(Violation {
                        invariant: "c".into(),
                        key: Some(id),
                        gateway: None,
                        what: format!(
                            "two origin queries of id {id} overlapped {} ms outside any takeover window",
                            hi - lo
                        ),
                        lines: Vec::new(),
                        evidence: ev,
                    }),
                }
            }
        }
    }
    for v in found {
        ctx.violate(v);
    }
    (takeovers, examples, n)
}

fn query_json(q: &OriginQuery) -> String {
    serde_json::to_string(q).unwrap_or_default()
}

/// (e): every failed operation is on a documented path.
fn check_errors(ctx: &mut Ctx<'_>) {
    let mut found = Vec::new();
    for (l, op) in &ctx.ops {
        if op.ok() {
            continue;
        }
        let fault_on = |kinds: &[FaultKind], grace_ms: u64, gateway: bool| {
            ctx.faults.iter().find(|(_, f)| {
                kinds.contains(&f.kind)
                    && (!gateway || (f.gateway.is_some() && f.gateway == op.gateway))
                    && op.invoke_ns <= f.end_ns + grace_ms * MS
                    && op.complete_ns >= f.start_ns
            })
        };
        let why: Option<String> = match (op.status, &op.error) {
            (Some(s), Some(e)) => Some(format!("HTTP {s} with a bad body: {e}")),
            (Some(502..=504), None) => None,
            (Some(500), None) => {
                let injected = op.body.as_deref().is_some_and(|b| b.contains("injected error"));
                let window = fault_on(&[FaultKind::OriginErrors], ctx.cfg.origin_error_grace_ms, false);
                match (injected, window) {
                    (true, Some(_)) => None,
                    (true, None) => Some("the origin's injected 500 outside an error window".into()),
                    (false, _) => Some("a 500 that is not the origin's injected error".into()),
                }
            }
            (Some(s), None) => Some(format!("HTTP {s}")),
            (None, e) => {
                let e = e.as_deref().unwrap_or("no answer");
                let kinds = [FaultKind::PauseGateway, FaultKind::KillGateway];
                match fault_on(&kinds, ctx.cfg.error_grace_ms, true) {
                    Some(_) if op.gateway.is_some() => None,
                    _ => Some(format!("{e} (no fault on its target)")),
                }
            }
        };
        if let Some(why) = why {
            let (lines, ev) = evidence(&[l]);
            found.push(Violation {
                invariant: "e".into(),
                key: Some(op.key),
                gateway: op.gateway,
                what: format!("{} of /items/{}: {why}", op.kind.name(), op.key),
                lines,
                evidence: ev,
            });
        }
    }
    for v in found {
        ctx.violate(v);
    }
}
