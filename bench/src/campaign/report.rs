//! The campaign's JSON summary and the generated section of
//! docs/RELIABILITY.md (between `<!-- campaign:start -->` and
//! `<!-- campaign:end -->`), rendered from that JSON — never typed by hand.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::checker::{CheckResult, INVARIANTS, Violation};
use super::history::{FaultKind, OpKind};
use crate::procs::{display_path, proc_field};

pub const START: &str = "<!-- campaign:start -->";
pub const END: &str = "<!-- campaign:end -->";

/// The JSON summary of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub seed: u64,
    pub profile: String,
    pub gateways: usize,
    /// When the campaign started (UTC, RFC 3339).
    pub started: String,
    pub machine: String,
    /// The command that produced it.
    pub command: String,
    pub history: String,
    pub queries: String,
    /// Violations per invariant (`a`…`e`); all 0 is the goal.
    pub violations: std::collections::BTreeMap<String, usize>,
    pub total_violations: usize,
    #[serde(flatten)]
    pub check: CheckResult,
}

impl Report {
    pub fn new(check: &CheckResult, history: &Path, queries: &Path) -> Self {
        let meta = check
            .meta
            .clone()
            .unwrap_or_else(super::checker::default_meta);
        let started = UNIX_EPOCH + Duration::from_millis(meta.started_wall_ms);
        Self {
            seed: meta.seed,
            profile: meta.profile.clone(),
            gateways: meta.gateways,
            started: humantime::format_rfc3339_seconds(started).to_string(),
            machine: meta.machine.clone(),
            command: meta.command.clone(),
            history: display_path(history),
            queries: display_path(queries),
            violations: check
                .invariants
                .iter()
                .map(|(k, v)| (k.clone(), v.violations))
                .collect(),
            total_violations: check.total_violations(),
            check: check.clone(),
        }
    }

    /// Read a report written by `--output`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))
    }
}

/// `host (N cores, M GiB, Linux release)`, as the other reports say it.
pub fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: f64 = proc_field(&meminfo, "MemTotal:")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    format!(
        "{} ({cores} cores, {:.0} GiB, Linux {})",
        host.trim(),
        kb / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn fault_label(name: &str) -> &'static str {
    let kind = FaultKind::ALL.into_iter().find(|k| k.name() == name);
    match kind {
        Some(FaultKind::PauseGateway) => {
            "gateway paused (SIGSTOP) past the lock TTL mid-rebuild of never-cached keys, then SIGCONT"
        }
        Some(FaultKind::KillGateway) => "gateway SIGKILLed and restarted on the same ports",
        Some(FaultKind::RestartRedis) => "redis-server killed and restarted empty on the same port",
        Some(FaultKind::KillPubsub) => {
            "the gateways' pub/sub (invalidation) connections killed (`CLIENT KILL TYPE pubsub`)"
        }
        Some(FaultKind::SlowOrigin) => "origin slowed past the lock TTL (1.5 s), then back",
        Some(FaultKind::OriginErrors) => "origin answering 5xx (error rate 0.5 or 1.0), then back",
        None => "",
    }
}

fn op_label(name: &str) -> &'static str {
    let kind = OpKind::ALL.into_iter().find(|k| k.name() == name);
    match kind {
        Some(OpKind::Read) => "`GET /items/{id}` through a gateway",
        Some(OpKind::Update) => "`PUT /items/{id}` through a gateway (invalidates fleet-wide)",
        Some(OpKind::UpdateDirect) => "`PUT /items/{id}` straight to the origin",
        Some(OpKind::Purge) => "`POST /admin/purge` on a gateway",
        None => "",
    }
}

/// The generated section, markers included.
pub fn render_section(r: &Report, source: &str) -> String {
    let c = &r.check;
    let mut s = String::new();
    let _ = writeln!(s, "{START}");
    let _ = writeln!(s, "## Fault campaign\n");
    let _ = writeln!(
        s,
        "Generated from `{source}` (written by `{}`), started {} on `{}`; rendered by `stampede-bench campaign render`, nothing typed by hand. Seed **{}**, profile `{}`, {:.0} s of operations, {} gateways.\n",
        r.command, r.started, r.machine, r.seed, r.profile, r.check.duration_s, r.gateways
    );
    if let Some(m) = &c.meta {
        let _ = writeln!(
            s,
            "Real processes on 127.0.0.1: one redis-server, one origin-sim (latency {} ms) and {} gateways (`--redis … --mitigations all --ttl {}ms --stale-ttl {}ms --lock-ttl {}ms --near-cache-ttl {}ms`). Concurrent clients read hot and cold keys, update items (through a gateway, or straight at the origin) and purge keys, each through a random gateway, with a {} ms client timeout; the nemesis injects one fault at a time (a seeded order, quiet gaps between), and every operation and fault is recorded in a history the checker reads afterwards (`stampede-bench campaign check --history … --queries …` re-checks a saved run).\n",
            m.origin_latency_ms,
            m.gateways,
            m.ttl_ms,
            m.stale_ttl_ms,
            m.lock_ttl_ms,
            m.near_cache_ttl_ms,
            m.client_timeout_ms
        );
    }
    let _ = writeln!(
        s,
        "| invariant | violations | keys | by the fault in force at the cause (or lifted ≤ 5 s before) | what it checks |\n|---|--:|--:|---|---|"
    );
    for (id, inv) in &c.invariants {
        let desc = INVARIANTS.iter().find(|(i, _)| i == id).map_or("", |d| d.1);
        let by: Vec<String> = inv
            .by_fault
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        let by = if by.is_empty() {
            "—".to_string()
        } else {
            by.join(", ")
        };
        let _ = writeln!(
            s,
            "| ({id}) | {} | {} | {by} | {desc} |",
            inv.violations, inv.keys
        );
    }
    let _ = writeln!(
        s,
        "\n| operation | count | ok | error status | client error | cache hits |\n|---|--:|--:|--:|--:|--:|"
    );
    for (k, o) in &c.operations {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            op_label(k),
            o.total,
            o.ok,
            o.status_errors,
            o.client_errors,
            o.hits
        );
    }
    let _ = writeln!(
        s,
        "\n| fault | injected | overlapping rebuilds it explains (takeovers) |\n|---|--:|--:|"
    );
    for (k, n) in &c.faults {
        let t = c.takeovers.get(k).copied().unwrap_or(0);
        let _ = writeln!(s, "| {} | {n} | {t} |", fault_label(k));
    }
    let stale: Vec<String> = c
        .max_staleness_ms
        .iter()
        .map(|(g, ms)| format!("{g} {ms:.0} ms"))
        .collect();
    let _ = writeln!(
        s,
        "\nOrigin queries: {}. Longest an older version was served from a gateway's cache after an update or purge returned (per gateway): {} (bound: the near-cache TTL). Takeovers are classified by fault window only (a pair of overlapping origin queries that falls in the window of a paused, killed or restarted gateway, a Redis restart plus the breaker's cool-down, or an origin slower than the lock TTL), not by proving the lease expired.\n",
        c.origin_queries,
        if stale.is_empty() {
            "none".into()
        } else {
            stale.join(", ")
        }
    );
    let examples: Vec<&Violation> = c
        .invariants
        .values()
        .flat_map(|i| pick(&i.examples, 3))
        .collect();
    if !examples.is_empty() {
        let _ = writeln!(
            s,
            "Violations found (per invariant at most three, one per fault where they differ; the history lines follow each):\n"
        );
        for v in examples {
            let lines: Vec<String> = v.lines.iter().map(|l| l.to_string()).collect();
            let at = if lines.is_empty() {
                String::new()
            } else {
                format!(" (history lines {})", lines.join(", "))
            };
            let during = match (&v.fault, v.fault_line) {
                (Some(f), Some(l)) => format!(" — during or just after {f} (line {l})"),
                _ => " — no fault in force".to_string(),
            };
            let _ = writeln!(s, "* ({}) {}{at}{during}\n\n  ```json", v.invariant, v.what);
            for e in &v.evidence {
                let _ = writeln!(s, "  {e}");
            }
            let _ = writeln!(s, "  ```\n");
        }
    }
    let _ = writeln!(s, "{END}");
    s
}

/// At most `n` examples: the first of each fault context, then the first of
/// each key, in the order found.
fn pick(examples: &[Violation], n: usize) -> Vec<&Violation> {
    let mut out: Vec<&Violation> = Vec::new();
    for v in examples {
        if out.len() < n && !out.iter().any(|o| o.fault == v.fault) {
            out.push(v);
        }
    }
    for v in examples {
        if out.len() < n && !out.iter().any(|o| o.key == v.key) {
            out.push(v);
        }
    }
    out
}

/// Replace the campaign section of `doc` (or append one) with `section`.
pub fn splice(doc: &str, section: &str) -> String {
    match (doc.find(START), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            let rest = &doc[b + END.len()..];
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            format!("{}{section}{rest}", &doc[..a])
        }
        _ => {
            let sep = if doc.is_empty() || doc.ends_with("\n\n") {
                ""
            } else if doc.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{doc}{sep}{section}")
        }
    }
}

/// Render the report into the campaign section of the file at `doc`.
pub fn render_into(doc: &Path, report: &Report, source: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let out = splice(&text, &render_section(report, source));
    std::fs::write(doc, out).with_context(|| format!("write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_the_section_between_the_markers_only() {
        let doc = format!("# Reliability\n\nbefore\n\n{START}\nold\n{END}\n\n## After\n");
        let out = splice(&doc, &format!("{START}\nnew\n{END}\n"));
        assert_eq!(
            out,
            format!("# Reliability\n\nbefore\n\n{START}\nnew\n{END}\n\n## After\n")
        );
        // Idempotent.
        assert_eq!(splice(&out, &format!("{START}\nnew\n{END}\n")), out);
    }

    #[test]
    fn a_report_reads_back_what_it_wrote() {
        let check = crate::campaign::checker::check(&[], &[], &Default::default());
        let r = Report::new(&check, Path::new("h.jsonl"), Path::new("q.json"));
        let json = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let section = render_section(&back, "campaign.json");
        assert!(section.starts_with(START) && section.trim_end().ends_with(END));
        assert!(section.contains("| (e) | 0 | 0 | — |"), "{section}");
    }

    #[test]
    fn splice_appends_a_section_when_there_is_none() {
        let out = splice("# Reliability\n", &format!("{START}\nnew\n{END}\n"));
        assert_eq!(out, format!("# Reliability\n\n{START}\nnew\n{END}\n"));
    }
}
