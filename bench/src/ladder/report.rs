//! The report (`RESULTS.md`, or `QUICK.md` for the quick profile) and the
//! charts, rendered from [`Results`] and the table: every number comes from
//! the run it describes or from the table that configured it.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::record::{MetaSecond, Profile, Results, Run};
use super::table::{
    Col, Front, HEADLINE, Measure, OriginSpec, Part, Row, RunSpec, Section, human, prose,
    protocol_load,
};
use crate::charts::{self, Panel, Series};
use crate::load::{LoadSummary, TimelineSecond};
use crate::stats::{BURST_GAP_CAP, BURST_GAP_TTL_DIVISOR, SLOW_THRESHOLD};

/// A markdown table of `rows` (those that ran) with `cols`.
pub fn table(cols: &[Col], rows: &[Row<'_>]) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let align = cols.iter().map(|c| if c.num() { "--:" } else { "---" });
    let mut md = line(cols.iter().map(|c| c.head()).collect());
    md += &format!("|{}|\n", align.collect::<Vec<_>>().join("|"));
    for r in rows {
        md += &line(cols.iter().map(|c| c.cell(r)).collect());
    }
    md
}

fn rows_of<'a>(res: &'a Results, specs: &'a [RunSpec]) -> Vec<Row<'a>> {
    let row = |spec| {
        Some(Row {
            spec,
            run: res.run(&spec.id)?,
        })
    };
    specs.iter().filter_map(row).collect()
}

/// Rows with distinct ids, in order.
pub fn dedup<'a>(rows: impl Iterator<Item = &'a RunSpec>) -> Vec<&'a RunSpec> {
    let mut out: Vec<&RunSpec> = Vec::new();
    for r in rows {
        if !out.iter().any(|o| o.id == r.id) {
            out.push(r);
        }
    }
    out
}

/// The report: its header (`prose.md`), what did not run, every section.
pub fn render(res: &Results, sections: &[Section]) -> String {
    let quick = res.options.profile == Profile::Quick;
    let (l, origin) = (protocol_load(&res.options), OriginSpec::default());
    let mut v = serde_json::to_value(&res.machine).unwrap_or_default();
    let more = json!({
        "title": if quick { "Quick look" } else { "Results" }, "command": res.options.command,
        "started": res.generated_at, "wall": format!("{:.0}", res.elapsed_s),
        "clients": l.concurrency, "hot_pct": format!("{:.0}", l.hot_fraction * 100.0),
        "hot_key": l.hot_key, "keys": l.keys, "duration": human(l.duration),
        "ttl": l.ttl.map_or_else(|| "–".into(), human), "base_ms": origin.latency_ms,
        "pool": origin.db_connections, "n": res.options.instances, "seed": l.seed.unwrap_or(0),
        "gap_divisor": BURST_GAP_TTL_DIVISOR, "gap_cap": human(BURST_GAP_CAP),
        "slow": SLOW_THRESHOLD.as_millis() as u64,
    });
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    let mut md = format!("{}\n", prose("header", &v));
    if quick {
        md += &format!("{}\n", prose("quick-note", &v));
    }
    md.push('\n');
    if !res.skipped.is_empty() || !res.failed.is_empty() {
        md += "**Not run:**\n\n";
        for s in &res.skipped {
            let _ = writeln!(md, "- {} — skipped: {}", s.what, s.why);
        }
        for s in &res.failed {
            // The error's first line, and the last line of the log tail that names an error.
            let mut lines = s.why.lines();
            let first = lines.next().unwrap_or_default();
            let cause = lines.rev().find(|l| l.contains("error"));
            let cause = cause.map_or(String::new(), |l| format!(" … {}", l.trim()));
            let _ = writeln!(md, "- {} — **failed**: `{first}{cause}`", s.what);
        }
        md.push('\n');
    }
    md += &format!("{}\n\n", prose("how-to-read", &v));
    let selected = |s: &Section| s.rung.is_empty() || res.options.rungs.iter().any(|r| r == s.rung);
    for (i, s) in sections.iter().enumerate().filter(|(_, s)| selected(s)) {
        let runs: Vec<&Run> = dedup(s.rows())
            .iter()
            .filter_map(|r| res.run(&r.id))
            .collect();
        if s.rows().next().is_some() && runs.is_empty() {
            continue;
        }
        let mut body = String::new();
        for part in &s.parts {
            let text = match part {
                Part::Text(t) => t.clone(),
                Part::Note(f) => f(res, &runs),
                Part::Table(intro, cols, specs) => {
                    let rows = rows_of(res, specs);
                    if rows.is_empty() {
                        continue;
                    }
                    format!("{intro}\n\n{}", table(cols, &rows))
                }
            };
            if !text.trim().is_empty() {
                body += &format!("{}\n\n", text.trim());
            }
        }
        if !body.is_empty() {
            let _ = write!(md, "## {}. {}\n\n{body}", i + 1, s.heading);
        }
    }
    md
}

/// The before/after table in a few columns, for the terminal.
pub fn headline(res: &Results, sections: &[Section]) -> Option<String> {
    let s = sections
        .iter()
        .find(|s| s.rung == "table" && res.options.rungs.iter().any(|r| r == s.rung))?;
    let specs: Vec<RunSpec> = dedup(s.rows()).into_iter().cloned().collect();
    let rows = rows_of(res, &specs);
    (!rows.is_empty()).then(|| format!("{}\n\n{}", s.heading, table(&HEADLINE, &rows)))
}

/// The seconds of a run that lie inside its load duration (the partial last
/// bucket would read as a drop to zero).
fn timeline(s: &LoadSummary) -> &[TimelineSecond] {
    let n = s.config.duration.as_secs_f64().floor() as usize;
    &s.timeline[..n.clamp(1, s.timeline.len().max(1)).min(s.timeline.len())]
}

/// A line over the seconds of a run (points at the middle of each second).
fn series(label: &str, color: usize, values: impl Iterator<Item = Option<f64>>) -> Series {
    let points = values.enumerate().map(|(i, y)| (i as f64 + 0.5, y));
    Series(label.into(), color, points.collect())
}

fn panel(y: &str, log_y: bool, reference: Option<(f64, String)>, series: Vec<Series>) -> Panel {
    let y_label = y.into();
    Panel {
        y_label,
        log_y,
        reference,
        series,
    }
}

/// A client-latency panel (log scale, the slow threshold marked).
fn latency(y_label: &str, series: Vec<Series>) -> Panel {
    let ms = SLOW_THRESHOLD.as_millis();
    panel(y_label, true, Some((ms as f64, format!("{ms} ms"))), series)
}

fn draw(out: &Path, file: String, title: &str, panels: &[Panel]) -> Option<String> {
    let drawn = charts::draw(&out.join(&file), title, "seconds since load start", panels);
    drawn
        .map(|()| file)
        .map_err(|e| eprintln!("warning: chart: {e:#}"))
        .ok()
}

/// The chart of one run, drawn into `out`; its file name. Load runs:
/// origin queries per second (all keys, or per status when there are several;
/// the hot key) and client p99 (hot key, all); the metastable run: origin
/// queries started and in flight, their duration, client errors.
pub fn chart(out: &Path, spec: &RunSpec, run: &Run) -> Option<String> {
    let (file, label, n) = (format!("{}.png", run.id), &run.label, run.instances);
    let capacity =
        |o: &OriginSpec, what| Some((o.capacity_qps() as f64, format!("{what} capacity")));
    match &spec.measure {
        Measure::Load | Measure::InFlight => {
            let s = run.summary.as_ref()?;
            let (tl, o) = (timeline(s), s.origin.as_ref());
            let line = |label: &str, color, f: fn(&TimelineSecond) -> Option<f64>| {
                series(label, color, tl.iter().map(f))
            };
            let statuses = o.map(|o| &o.status_per_second).filter(|s| s.len() > 1);
            let by_status = statuses.into_iter().flatten().enumerate();
            let mut origin: Vec<Series> = by_status
                .map(|(i, (status, v))| {
                    let per_second = v.iter().take(tl.len()).map(|n| Some(*n as f64));
                    series(&format!("status {status}"), 3 + i, per_second)
                })
                .collect();
            if origin.is_empty() {
                origin.push(line("all keys", 1, |t| t.origin_queries.map(|v| v as f64)));
            }
            let mut p99 = vec![line("all requests p99", 2, |t| t.p99_ms)];
            if s.config.hot_fraction > 0.0 {
                let hot = |t: &TimelineSecond| t.hot_origin_queries.map(|v| v as f64);
                origin.push(line("hot key", 0, hot));
                p99.insert(0, line("hot key p99", 0, |t| t.hot_p99_ms));
            }
            let default = capacity(&OriginSpec::default(), "default origin");
            let panels = [
                panel("origin queries/s", false, default, origin),
                latency("client p99 ms (log)", p99),
            ];
            let title = match &spec.front {
                Front::Gateway { .. } => {
                    format!("{n} × gateway, --mitigations {}", run.mitigations)
                }
                Front::Peer(v) => format!("{n} × {}, own cache each", v.kind.binary),
            };
            draw(out, file, &format!("{label} — {title}"), &panels)
        }
        Measure::Recovery(_) => {
            let col = |f: fn(&MetaSecond) -> Option<f64>| run.measured.timeline.iter().map(f);
            let base = spec.load.first()?.duration.as_secs();
            let spike = spec.load.get(1)?.duration.as_secs();
            let base_latency = Some((spec.origin.latency_ms as f64, "base latency".to_string()));
            let started = series("started", 1, col(|s| Some(s.started as f64)));
            let in_flight = series("in flight (sampled)", 3, col(|s| s.inflight));
            let finishing = col(|s| s.finished_mean_ms);
            let finishing = series("mean duration of queries finishing", 0, finishing);
            let errors = series("failed requests", 5, col(|s| Some(s.errors as f64)));
            let capacity = capacity(&spec.origin, "origin");
            let panels = [
                panel(
                    "origin queries/s",
                    false,
                    capacity,
                    vec![started, in_flight],
                ),
                panel("origin query ms (log)", true, base_latency, vec![finishing]),
                panel("client errors/s", false, None, vec![errors]),
            ];
            let title = format!(
                "metastable: {label} — spike from {base} s to {} s",
                base + spike
            );
            draw(out, file, &title, &panels)
        }
        Measure::Fencing(_) | Measure::Throughput(_) | Measure::Traffic(_) => None,
    }
}

/// naive vs full stack, hot key only: the overview chart of section 1.
pub fn overview(out: &Path, res: &Results) -> Option<String> {
    let summary = |id| res.run(id)?.summary.as_ref();
    let (naive, full) = (summary("table-naive")?, summary("table-full")?);
    let hot = |s| {
        timeline(s)
            .iter()
            .map(|t| t.hot_origin_queries.map(|v| v as f64))
    };
    let p99 = |s| timeline(s).iter().map(|t| t.hot_p99_ms);
    let origin = vec![
        series("naive", 0, hot(naive)),
        series("full stack", 2, hot(full)),
    ];
    let p99 = vec![
        series("naive", 0, p99(naive)),
        series("full stack", 2, p99(full)),
    ];
    let panels = [
        panel("hot-key origin queries/s", false, None, origin),
        latency("hot-key client p99 ms (log)", p99),
    ];
    let n = res.options.instances;
    let title = format!("naive vs full stack — {n} gateways on one Redis, identical load");
    draw(out, "table-overview.png".into(), &title, &panels)
}
