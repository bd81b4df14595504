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
use crate::cache_status::classify;
use crate::stats::OriginQuery;

const MS: u64 = 1_000_000;

/// A violation is attributed to a fault in force when it happened, or
/// lifted at most this long (ms) before.
pub const CONTEXT_MS: u64 = 5000;

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
    /// The fault in force, or lifted at most [`CONTEXT_MS`] before, when the
    /// violation's cause happened (kind and history line), if any: the first
    /// completion of the newer version (a), the invalidation's completion
    /// (b, d), the overlap (c), the failed operation (e).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_line: Option<usize>,
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
    /// Violations by the fault in force (or just lifted) when they happened
    /// (`none`: no fault within [`CONTEXT_MS`]).
    pub by_fault: BTreeMap<String, usize>,
    /// Distinct keys (item ids) with a violation.
    pub keys: usize,
    /// The first `max_examples` violations, and the first under each fault context.
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
    keys: BTreeMap<String, std::collections::BTreeSet<u64>>,
}

impl Ctx<'_> {
    fn bound_ns(&self) -> u64 {
        (self.meta.near_cache_ttl_ms + self.cfg.slack_ms) * MS
    }

    /// The fault in force at `ns` (or lifted at most [`CONTEXT_MS`] before);
    /// the latest started one.
    fn fault_at(&self, ns: u64) -> Option<(String, usize)> {
        self.faults
            .iter()
            .filter(|(_, f)| f.start_ns <= ns && ns <= f.end_ns + CONTEXT_MS * MS)
            .max_by_key(|(_, f)| f.start_ns)
            .map(|(l, f)| (f.kind.name().to_string(), l.no))
    }

    fn violate(&mut self, mut v: Violation, at_ns: u64) {
        if let Some((kind, line)) = self.fault_at(at_ns) {
            (v.fault, v.fault_line) = (Some(kind), Some(line));
        }
        if let Some(k) = v.key {
            self.keys.entry(v.invariant.clone()).or_default().insert(k);
        }
        let r = self.out.entry(v.invariant.clone()).or_default();
        r.violations += 1;
        let ctx = v.fault.clone().unwrap_or_else(|| "none".into());
        *r.by_fault.entry(ctx).or_default() += 1;
        // The first ones, and the first under each fault context.
        let new_context = !r.examples.iter().any(|e| e.fault == v.fault);
        if r.examples.len() < self.cfg.max_examples || new_context {
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

/// Line numbers and lines, each once, in the order given.
fn evidence(lines: &[&Line]) -> (Vec<usize>, Vec<String>) {
    let mut seen = Vec::new();
    let mut ev = Vec::new();
    for l in lines {
        if !seen.contains(&l.no) {
            seen.push(l.no);
            ev.push(l.json());
        }
    }
    (seen, ev)
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
        keys: BTreeMap::new(),
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
        r.keys = ctx.keys.remove(id).map_or(0, |k| k.len());
        invariants.insert(id.to_string(), r);
    }
    let first = ctx.ops.iter().map(|(_, o)| o.invoke_ns).min().unwrap_or(0);
    let last = ctx
        .ops
        .iter()
        .map(|(_, o)| o.complete_ns)
        .max()
        .unwrap_or(0);
    CheckResult {
        meta,
        duration_s: ((last.saturating_sub(first)) as f64 / 1e8).round() / 10.0,
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
            let first = earliest.above(w).map_or(top, |(_, i)| seen[i]);
            if h.invoke_ns <= first.1 + bound || ctx.across_gateway_fault(h) {
                continue;
            }
            let (lines, ev) = evidence(&[l, first.0, top.0]);
            found.push((Violation {
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
                fault: None,
                fault_line: None,
            }, first.1));
        }
    }
    found.sort_by_key(|(v, _)| v.lines[0]);
    for (v, at) in found {
        ctx.violate(v, at);
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
            let Some(inv) = n
                .checked_sub(1)
                .map(|i| &invs[best[i]])
                .filter(|i| i.floor > w)
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
            found.push((Violation {
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
                fault: None,
                fault_line: None,
            }, inv.op.complete_ns));
        }
    }
    found.sort_by_key(|(v, _)| v.lines[0]);
    for (v, at) in found {
        ctx.violate(v, at);
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
    // (gateway, invalidation line) → its worst stale serve.
    let mut worst: BTreeMap<(usize, usize), Stale<'_>> = BTreeMap::new();
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
    let mut found: Vec<(Violation, u64)> = worst
        .into_iter()
        .map(|((g, _), (stale, l, inv, w, floor))| {
            let (lines, ev) = evidence(&[l, inv]);
            let at = match &inv.entry {
                Entry::Op(o) => o.complete_ns,
                _ => 0,
            };
            let v = Violation {
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
                fault: None,
                fault_line: None,
            };
            (v, at)
        })
        .collect();
    found.sort_by_key(|(v, _)| v.lines[0]);
    for (v, at) in found {
        ctx.violate(v, at);
    }
    for v in max.values_mut() {
        *v = (*v * 10.0).round() / 10.0;
    }
    max
}

/// The worst stale serve after one invalidation on one gateway:
/// (staleness ns, offending line, invalidation line, version served, floor).
type Stale<'a> = (u64, &'a Line, &'a Line, i64, i64);

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
    let mut fetches: HashMap<u64, Vec<(&Line, &Op)>> = HashMap::new();
    for (l, o) in &ctx.ops {
        if o.kind == OpKind::Read {
            fetches.entry(o.key).or_default().push((l, o));
        }
    }
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
                let mut ev = vec![query_json(a), query_json(b)];
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
                    None => {
                        // The operations whose rebuilds they may be: went to
                        // the origin, in flight around the query.
                        let mut lines = Vec::new();
                        for q in [a, b] {
                            let end = q.t_ms + q.duration_ms;
                            let fits = |o: &&(&Line, &Op)| {
                                let fwd = classify(o.1.cache_status.as_deref());
                                !fwd.hit
                                    && fwd.fwd.is_some()
                                    && o.1.invoke_wall_ms <= q.t_ms + 1
                                    && o.1.complete_wall_ms + 1 >= end
                            };
                            let ops = fetches.get(&id).map_or(&[][..], Vec::as_slice);
                            lines.extend(ops.iter().filter(fits).map(|o| o.0));
                        }
                        let (nos, mut ops_ev) = evidence(&lines);
                        ops_ev.append(&mut ev);
                        let at = lo.saturating_sub(start) * MS;
                        found.push((
                            Violation {
                                invariant: "c".into(),
                                key: Some(id),
                                gateway: None,
                                what: format!(
                                    "two origin queries of id {id} overlapped {} ms outside any takeover window",
                                    hi - lo
                                ),
                                lines: nos,
                                evidence: ops_ev,
                                fault: None,
                                fault_line: None,
                            },
                            at,
                        ));
                    }
                }
            }
        }
    }
    for (v, at) in found {
        ctx.violate(v, at);
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
                let injected = op
                    .body
                    .as_deref()
                    .is_some_and(|b| b.contains("injected error"));
                let window = fault_on(
                    &[FaultKind::OriginErrors],
                    ctx.cfg.origin_error_grace_ms,
                    false,
                );
                match (injected, window) {
                    (true, Some(_)) => None,
                    (true, None) => {
                        Some("the origin's injected 500 outside an error window".into())
                    }
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
            found.push((
                Violation {
                    invariant: "e".into(),
                    key: Some(op.key),
                    gateway: op.gateway,
                    what: format!("{} of /items/{}: {why}", op.kind.name(), op.key),
                    lines,
                    evidence: ev,
                    fault: None,
                    fault_line: None,
                },
                op.invoke_ns,
            ));
        }
    }
    for (v, at) in found {
        ctx.violate(v, at);
    }
}

#[cfg(test)]
mod tests {
    //! Small hand-made histories: each invariant firing, and not firing.
    //! Times are in ms; the near-cache bound is 1000 ms (+100 ms slack).

    use super::*;
    use crate::campaign::history::parse;

    const HIT: &str = "stampede; hit; ttl=1";
    const MISS: &str = "stampede; fwd=uri-miss; fwd-status=200; ttl=2; stored";
    const COLLAPSED: &str = "stampede; fwd=uri-miss; fwd-status=200; collapsed";

    fn meta() -> Entry {
        Entry::Meta(Meta {
            gateways: 2,
            started_wall_ms: 1_000_000,
            ..default_meta()
        })
    }

    fn op(kind: OpKind, g: Option<usize>, key: u64, t: (u64, u64)) -> Op {
        Op {
            process: "c0".into(),
            kind,
            gateway: g,
            key,
            invoke_ns: t.0 * MS,
            complete_ns: t.1 * MS,
            invoke_wall_ms: 1_000_000 + t.0,
            complete_wall_ms: 1_000_000 + t.1,
            status: Some(200),
            version: None,
            cache_status: None,
            error: None,
            body: None,
        }
    }

    fn read(g: usize, key: u64, t: (u64, u64), version: i64, cs: &str) -> Entry {
        Entry::Op(Op {
            version: Some(version),
            cache_status: Some(cs.into()),
            ..op(OpKind::Read, Some(g), key, t)
        })
    }

    fn update(g: usize, key: u64, t: (u64, u64), version: i64) -> Entry {
        Entry::Op(Op {
            version: Some(version),
            ..op(OpKind::Update, Some(g), key, t)
        })
    }

    fn update_direct(key: u64, t: (u64, u64), version: i64) -> Entry {
        Entry::Op(Op {
            version: Some(version),
            ..op(OpKind::UpdateDirect, None, key, t)
        })
    }

    fn purge(g: usize, key: u64, t: (u64, u64)) -> Entry {
        Entry::Op(op(OpKind::Purge, Some(g), key, t))
    }

    fn failed(
        g: usize,
        key: u64,
        t: (u64, u64),
        status: Option<u16>,
        err: Option<&str>,
        body: Option<&str>,
    ) -> Entry {
        Entry::Op(Op {
            status,
            error: err.map(String::from),
            body: body.map(String::from),
            ..op(OpKind::Read, Some(g), key, t)
        })
    }

    fn fault(kind: FaultKind, g: Option<usize>, t: (u64, u64), detail: &str) -> Entry {
        Entry::Fault(Fault {
            kind,
            gateway: g,
            start_ns: t.0 * MS,
            end_ns: t.1 * MS,
            start_wall_ms: 1_000_000 + t.0,
            end_wall_ms: 1_000_000 + t.1,
            detail: detail.into(),
        })
    }

    fn run(entries: Vec<Entry>, queries: &[(u64, u64, u64)]) -> CheckResult {
        let mut all = vec![meta()];
        all.extend(entries);
        // Through the file format, as `campaign check` reads it.
        let text: String = all
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        let lines = parse(&text).unwrap();
        let qs: Vec<OriginQuery> = queries
            .iter()
            .map(|&(id, t, d)| OriginQuery {
                t_ms: 1_000_000 + t,
                id,
                status: 200,
                duration_ms: d,
                bytes: 0,
            })
            .collect();
        check(&lines, &qs, &CheckConfig::default())
    }

    fn count(r: &CheckResult, inv: &str) -> usize {
        r.invariants[inv].violations
    }

    #[test]
    fn a_fires_on_a_hit_older_than_a_completed_version_past_the_bound() {
        let r = run(
            vec![
                read(0, 7, (0, 100), 2, MISS),
                read(1, 7, (1300, 1301), 1, HIT),
            ],
            &[],
        );
        assert_eq!(count(&r, "a"), 1, "{:#?}", r.invariants["a"]);
        let v = &r.invariants["a"].examples[0];
        assert_eq!(v.lines, vec![3, 2], "the hit first, then the newer version");
        assert_eq!(v.key, Some(7));
        assert_eq!(v.evidence.len(), 2);
    }

    #[test]
    fn a_allows_a_near_cache_copy_within_the_bound_and_newer_hits() {
        let r = run(
            vec![
                read(0, 7, (0, 100), 2, MISS),
                read(1, 7, (900, 901), 1, HIT),
                read(1, 7, (1300, 1301), 2, HIT),
                // Not a hit: a read that went to the origin is (b)/(c)'s business.
                read(1, 7, (1400, 1420), 1, MISS),
            ],
            &[],
        );
        assert_eq!(count(&r, "a"), 0, "{:#?}", r.invariants["a"]);
    }

    #[test]
    fn a_allows_a_request_in_flight_across_a_pause_of_its_gateway() {
        let r = run(
            vec![
                read(0, 7, (0, 100), 2, MISS),
                fault(FaultKind::PauseGateway, Some(1), (1500, 3000), ""),
                read(1, 7, (1490, 3001), 1, HIT),
                // The same on the gateway that was not paused is a violation.
                read(0, 7, (1490, 3001), 1, HIT),
            ],
            &[],
        );
        assert_eq!(count(&r, "a"), 1, "{:#?}", r.invariants["a"]);
        assert_eq!(r.invariants["a"].examples[0].gateway, Some(0));
        // Attributed to what was in force when version 2 completed: nothing.
        assert_eq!(r.invariants["a"].by_fault["none"], 1);
    }

    #[test]
    fn b_fires_on_a_hit_below_an_update_past_the_bound() {
        let r = run(
            vec![
                read(0, 3, (0, 10), 4, MISS),
                update(0, 3, (50, 100), 5),
                read(1, 3, (900, 901), 4, HIT),   // within the bound
                read(1, 3, (1300, 1301), 4, HIT), // past it
            ],
            &[(3, 20, 90)],
        );
        assert_eq!(count(&r, "b"), 1, "{:#?}", r.invariants["b"]);
        let v = &r.invariants["b"].examples[0];
        assert_eq!(v.lines, vec![5, 3]);
        assert!(v.what.contains("an older fill raced it"), "{}", v.what);
    }

    #[test]
    fn b_fires_after_a_purge_of_a_write_made_straight_at_the_origin() {
        let r = run(
            vec![
                read(0, 3, (0, 10), 4, MISS),
                update_direct(3, (20, 30), 5),
                // Before the purge the cache may serve 4 (nobody told it).
                read(1, 3, (40, 41), 4, HIT),
                purge(1, 3, (50, 60)),
                read(0, 3, (1200, 1201), 5, MISS),
                read(1, 3, (1300, 1301), 4, HIT),
            ],
            &[],
        );
        assert_eq!(count(&r, "b"), 1, "{:#?}", r.invariants["b"]);
        assert_eq!(r.invariants["b"].examples[0].lines, vec![7, 5]);
        // No purge, no (b): the direct write alone guarantees nothing.
        let r = run(
            vec![
                read(0, 3, (0, 10), 4, MISS),
                update_direct(3, (20, 30), 5),
                read(1, 3, (1300, 1301), 4, HIT),
            ],
            &[],
        );
        assert_eq!(count(&r, "b"), 0, "{:#?}", r.invariants["b"]);
        assert_eq!(
            count(&r, "a"),
            0,
            "a direct write is not a version the cache served"
        );
    }

    #[test]
    fn c_fires_on_overlapping_rebuilds_and_counts_takeovers_in_fault_windows() {
        let r = run(
            vec![
                read(0, 9, (995, 1110), 1, MISS),
                read(1, 9, (1045, 1160), 1, MISS),
            ],
            &[(9, 1000, 100), (9, 1050, 100)],
        );
        assert_eq!(count(&r, "c"), 1, "{:#?}", r.invariants["c"]);
        let v = &r.invariants["c"].examples[0];
        assert_eq!(v.lines, vec![2, 3], "the reads whose rebuilds they were");
        assert_eq!(v.evidence.len(), 4);
        // The same overlap while the origin was slower than the lock: a takeover.
        let r = run(
            vec![fault(
                FaultKind::SlowOrigin,
                None,
                (900, 2000),
                "latency_ms=1500",
            )],
            &[(9, 1000, 100), (9, 1050, 100)],
        );
        assert_eq!(count(&r, "c"), 0);
        assert_eq!(r.takeovers["slow-origin"], 1);
        assert_eq!(r.takeover_examples[0].fault_line, 2);
        // Back to back (ms rounding) is not an overlap; neither is another id.
        let r = run(vec![], &[(9, 1000, 100), (9, 1099, 100), (8, 1050, 100)]);
        assert_eq!(count(&r, "c"), 0);
        assert!(r.takeovers.is_empty());
        // An origin error window documents no takeover.
        let r = run(
            vec![fault(
                FaultKind::OriginErrors,
                None,
                (900, 2000),
                "error_rate=1",
            )],
            &[(9, 1000, 100), (9, 1050, 100)],
        );
        assert_eq!(count(&r, "c"), 1);
        assert_eq!(r.invariants["c"].by_fault["origin-errors"], 1);
    }

    #[test]
    fn d_measures_staleness_per_gateway_and_fires_past_the_bound() {
        let r = run(
            vec![
                read(0, 5, (0, 10), 1, MISS),
                update(0, 5, (50, 100), 2),
                read(1, 5, (600, 601), 1, HIT),
                read(0, 5, (700, 701), 1, COLLAPSED),
            ],
            &[],
        );
        assert_eq!(count(&r, "d"), 0, "{:#?}", r.invariants["d"]);
        assert_eq!(r.max_staleness_ms["g1"], 500.0);
        assert_eq!(
            r.max_staleness_ms["g0"], 600.0,
            "a shared rebuild counts too"
        );
        let r = run(
            vec![
                read(0, 5, (0, 10), 1, MISS),
                update(0, 5, (50, 100), 2),
                read(1, 5, (1400, 1401), 1, HIT),
                read(1, 5, (1500, 1501), 1, HIT),
            ],
            &[],
        );
        // One (gateway, invalidation) pair, its worst staleness.
        assert_eq!(count(&r, "d"), 1, "{:#?}", r.invariants["d"]);
        assert_eq!(r.max_staleness_ms["g1"], 1400.0);
        assert_eq!(r.invariants["d"].examples[0].lines, vec![5, 3]);
    }

    #[test]
    fn e_allows_documented_errors_only() {
        let injected = Some(r#"{"error":"injected error","id":1}"#);
        let r = run(
            vec![
                fault(FaultKind::OriginErrors, None, (0, 1000), "error_rate=1"),
                fault(FaultKind::PauseGateway, Some(1), (2000, 3000), ""),
                failed(0, 1, (100, 130), Some(500), None, injected),
                failed(0, 1, (200, 230), Some(503), None, None),
                failed(0, 1, (210, 230), Some(504), None, None),
                failed(0, 1, (220, 230), Some(502), None, None),
                failed(1, 1, (2500, 5500), None, Some("timeout"), None),
            ],
            &[],
        );
        assert_eq!(count(&r, "e"), 0, "{:#?}", r.invariants["e"]);
        let r = run(
            vec![
                fault(FaultKind::PauseGateway, Some(1), (2000, 3000), ""),
                // An injected 500 with no error window; a 500 of the gateway's own.
                failed(0, 1, (100, 130), Some(500), None, injected),
                failed(0, 1, (100, 130), Some(500), None, Some("internal error")),
                // A timeout on the gateway that was not paused.
                failed(0, 1, (2500, 5500), None, Some("timeout"), None),
                // A 404 for an item that exists; a body that is not the item.
                failed(0, 1, (100, 130), Some(404), None, None),
                failed(
                    0,
                    1,
                    (100, 130),
                    Some(200),
                    Some("body: id 2 instead of 1"),
                    None,
                ),
            ],
            &[],
        );
        assert_eq!(count(&r, "e"), 5, "{:#?}", r.invariants["e"]);
        assert_eq!(r.operations["read"].client_errors, 2);
        assert_eq!(r.operations["read"].status_errors, 3);
    }

    #[test]
    fn counts_operations_and_faults_by_kind() {
        let r = run(
            vec![
                read(0, 1, (0, 10), 1, MISS),
                read(0, 1, (20, 21), 1, HIT),
                update(1, 1, (30, 40), 2),
                purge(1, 1, (50, 60)),
                fault(FaultKind::KillPubsub, None, (70, 71), ""),
                fault(FaultKind::KillPubsub, None, (90, 91), ""),
                fault(FaultKind::RestartRedis, None, (100, 300), ""),
            ],
            &[],
        );
        assert_eq!(r.operations["read"].total, 2);
        assert_eq!(r.operations["read"].hits, 1);
        assert_eq!(r.operations["update"].ok, 1);
        assert_eq!(r.operations["purge"].total, 1);
        assert_eq!(r.faults["kill-pubsub"], 2);
        assert_eq!(r.faults["restart-redis"], 1);
        assert_eq!(r.total_violations(), 0);
        assert_eq!(r.invariants.len(), 5);
    }
}
