//! The real-traffic rung (issue #20): the herds the `/items` protocol does
//! not show — a cold large body, a hot large body, a failing origin, an
//! origin slower than the lock TTL, negotiated variants — each under the
//! same clients ([`crate::traffic`]) for nginx, Varnish and the gateway
//! before (`--mitigations none`, plain cache-aside) and after
//! (`--mitigations all`), on origin-sim's scenario routes.
//!
//! Every case is data (`cases`): its route and path, its clients, what
//! their answers must be, which fronts it runs, and how its cell of the
//! summary table reads. The runner's [`Measure::Traffic`] records per run:
//! origin requests (origin-sim's `/stats/requests` for the route, started
//! while the clients ran), client requests, served, errors, the slowest
//! client's first byte and total time, whether every answer was complete
//! and byte-identical, and, for the slow origin, the most requests in flight
//! at the origin at once. The gateway runs with its defaults plus what a row
//! needs (`--redis`, `--lock-ttl`): no `--ttl`, the origin's `Cache-Control`
//! decides.

use std::time::Duration;

use serde_json::{Value, json};

use super::peers::{self, Variant};
use super::record::{LadderOptions, Results, Run};
use super::table::{Col, Front, Measure, Part, RunSpec, Section, human, installed, opt, prose};
use crate::load::LoadConfig;
use crate::traffic::{Expect, TrafficConfig, TrafficSummary};

/// What a real-traffic run does (see [`Measure::Traffic`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficCase {
    /// The case's key (`cold`, `hot`, `fail`, `slow`, `vary`).
    pub case: &'static str,
    /// The origin-sim route whose requests count.
    pub route: &'static str,
    /// The clients (targets filled in when run).
    pub clients: TrafficConfig,
    /// Record the most origin requests in flight at once (`max_in_flight`).
    pub in_flight: bool,
}

/// The large body: 4 MiB, first byte at 0.5 s, last at 1.4 s.
pub const BLOB_BYTES: u64 = 4 << 20;
pub const BLOB_FIRST_BYTE_MS: u64 = 500;
pub const BLOB_LAST_BYTE_MS: u64 = 1400;
/// The cold case's object lives long enough never to expire in the run.
pub const COLD_MAX_AGE: u64 = 60;
/// `max-age` of the hot and negotiated objects.
pub const MAX_AGE: u64 = 2;
/// The failing origin's delay before its 503.
pub const FAIL_DELAY_MS: u64 = 400;
/// The slow origin.
pub const SLOW_DELAY_MS: u64 = 3000;
/// `max-age` of the slow object: longer than the origin takes, so an answer
/// is fresh when it arrives (RFC 9111 §4.2.3 counts the response delay into
/// its age: with `max-age=2` a 3 s answer arrives stale, a different herd).
pub const SLOW_MAX_AGE: u64 = 5;
/// The lock TTL of the slow-origin row (the gateway's default, named).
pub const SLOW_LOCK_TTL: Duration = Duration::from_secs(2);
/// The negotiated object's delay and size (decoded).
pub const NEGOTIATED_DELAY_MS: u64 = 200;
pub const NEGOTIATED_BYTES: u64 = 64 * 1024;
/// The three `Accept-Encoding` populations of the negotiated case.
pub const POPULATIONS: [Option<&str>; 3] = [Some("gzip, deflate, br, zstd"), Some("gzip"), None];
/// Per request, headers to the last body byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Fleet size of the failing-origin case's fleet rows.
pub const FAIL_FLEET: usize = 2;
/// Fleet size of the slow-origin case.
pub const SLOW_FLEET: usize = 3;

/// How long the looping cases run: half the protocol duration, at most 10 s.
pub fn loop_duration(o: &LadderOptions) -> Duration {
    (o.duration / 2).min(Duration::from_secs(10))
}

/// A column of the summary table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender {
    Nginx,
    Varnish,
    /// Gateways with these mitigations; the sizes of the fleets the case runs
    /// (1 = one gateway, in-process store; more = on one Redis).
    Gateway(&'static str),
}

const CONTENDERS: [Contender; 4] = [
    Contender::Nginx,
    Contender::Varnish,
    Contender::Gateway("none"),
    Contender::Gateway("all"),
];

/// One row of the summary table.
struct Case {
    key: &'static str,
    /// The row's text in the summary table.
    what: String,
    /// The goal, as issue #20 states it.
    goal: &'static str,
    route: &'static str,
    path: String,
    clients: usize,
    looping: bool,
    accept: Vec<Option<String>>,
    expect_status: u16,
    expect: Expect,
    in_flight: bool,
    /// nginx and Varnish run it too.
    peers: bool,
    /// Gateway fleet sizes (1 = one gateway, in-process store).
    fleets: &'static [usize],
    /// Further gateway flags.
    flags: &'static [&'static str],
    /// The summary cell of one run.
    cell: fn(&Run) -> String,
}

fn val<'a>(r: &'a Run, key: &str) -> Option<&'a Value> {
    r.measured.values.get(key).filter(|v| !v.is_null())
}

fn num(r: &Run, key: &str) -> String {
    opt(val(r, key).and_then(Value::as_u64), thousands)
}

fn secs(r: &Run, key: &str) -> String {
    let ms = val(r, key).and_then(Value::as_f64);
    opt(ms, |ms| format!("{:.2} s", ms / 1000.0))
}

/// `4052` → `4,052`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The cases, in table order.
fn cases(o: &LadderOptions) -> Vec<Case> {
    let mib = BLOB_BYTES >> 20;
    let (first, last) = (BLOB_FIRST_BYTE_MS, BLOB_LAST_BYTE_MS);
    let blob = |max_age: u64| {
        format!("/blob/{BLOB_BYTES}?first_byte_ms={first}&total_ms={last}&max_age={max_age}")
    };
    let looping = human(loop_duration(o));
    let s = |ms: u64| format!("{:.2} s", ms as f64 / 1000.0);
    let base = || Case {
        key: "",
        what: String::new(),
        goal: "",
        route: "blob",
        path: String::new(),
        clients: 0,
        looping: false,
        accept: vec![],
        expect_status: 200,
        expect: Expect::Blob(BLOB_BYTES),
        in_flight: false,
        peers: true,
        fleets: &[1],
        flags: &[],
        cell: |r| {
            format!(
                "{} / {}",
                num(r, "origin_requests"),
                secs(r, "first_byte_max_ms")
            )
        },
    };
    let slow = || Case {
        key: "slow",
        what: format!(
            "origin {}, default `--lock-ttl {}`, {SLOW_FLEET} gateways on Redis, 24 clients looping {looping} on a cold `max-age={SLOW_MAX_AGE}` object: hot-key rebuilds in flight at once",
            s(SLOW_DELAY_MS),
            human(SLOW_LOCK_TTL)
        ),
        goal: "1",
        route: "slow",
        path: format!("/slow?delay_ms={SLOW_DELAY_MS}&max_age={SLOW_MAX_AGE}"),
        clients: 24,
        looping: true,
        expect: Expect::Blob(crate::traffic::SLOW_BYTES),
        in_flight: true,
        peers: false,
        fleets: &[SLOW_FLEET],
        flags: &["--lock-ttl", "2s"],
        cell: |r| num(r, "max_in_flight"),
        ..base()
    };
    let pops = POPULATIONS.map(|p| p.map_or("none".into(), |p| format!("`{p}`")));
    vec![
        Case {
            key: "cold",
            what: format!(
                "50 concurrent clients on a cold {mib} MiB object (origin's first byte at {}, last at {}): origin requests / slowest client's first byte",
                s(first),
                s(last)
            ),
            goal: "1 / ≤ 0.55 s",
            path: blob(COLD_MAX_AGE),
            clients: 50,
            ..base()
        },
        Case {
            key: "hot",
            what: format!(
                "hot {mib} MiB object, `max-age={MAX_AGE}`, 24 clients looping {looping}: origin requests (client requests served)"
            ),
            goal: "≤ 7",
            path: blob(MAX_AGE),
            clients: 24,
            looping: true,
            cell: |r| format!("{} ({})", num(r, "origin_requests"), num(r, "served")),
            ..base()
        },
        Case {
            key: "fail",
            what: format!(
                "origin answers 503 (`no-store`) after {}, 20 concurrent clients: origin requests / slowest client; for the gateway also over {FAIL_FLEET} gateways on Redis",
                s(FAIL_DELAY_MS)
            ),
            goal: "≤ 2 / ≤ 0.5 s, one gateway and a fleet",
            route: "fail",
            path: format!("/fail?delay_ms={FAIL_DELAY_MS}"),
            clients: 20,
            expect_status: 503,
            expect: Expect::Any,
            fleets: &[1, FAIL_FLEET],
            cell: |r| {
                format!(
                    "{} / {}",
                    num(r, "origin_requests"),
                    secs(r, "total_max_ms")
                )
            },
            ..base()
        },
        slow(),
        Case {
            key: "vary",
            what: format!(
                "`Vary: Accept-Encoding`, three client populations ({}), 24 clients looping, `max-age={MAX_AGE}`, {looping}: origin requests",
                pops.join("; ")
            ),
            goal: "≤ Varnish's in the same run",
            route: "negotiated",
            path: format!(
                "/negotiated?delay_ms={NEGOTIATED_DELAY_MS}&max_age={MAX_AGE}&bytes={NEGOTIATED_BYTES}"
            ),
            clients: 24,
            looping: true,
            accept: POPULATIONS.iter().map(|p| p.map(String::from)).collect(),
            expect: Expect::Text(NEGOTIATED_BYTES),
            cell: |r| num(r, "origin_requests"),
            ..base()
        },
        // Not in issue #20: found while building this rung.
        Case {
            key: "stale-on-arrival",
            what: format!(
                "*not in issue #20:* the slow case with `max-age={MAX_AGE}`, shorter than the origin's {} — an answer stale when it arrives (RFC 9111 §4.2.3 counts the response delay into its age): hot-key rebuilds in flight at once / slowest client",
                s(SLOW_DELAY_MS)
            ),
            goal: "— (not in #20)",
            path: format!("/slow?delay_ms={SLOW_DELAY_MS}&max_age={MAX_AGE}"),
            cell: |r| format!("{} / {}", num(r, "max_in_flight"), secs(r, "total_max_ms")),
            ..slow()
        },
    ]
}

/// A run id: `real-{case}-{nginx|varnish|none|all}[-xN]`.
fn run_id(case: &str, c: Contender, fleet: usize) -> String {
    let who = match c {
        Contender::Nginx => "nginx",
        Contender::Varnish => "varnish",
        Contender::Gateway(m) => m,
    };
    let x = if fleet > 1 {
        format!("-x{fleet}")
    } else {
        String::new()
    };
    format!("real-{case}-{who}{x}")
}

/// The rows (runs) of one case.
fn rows(o: &LadderOptions, c: &Case) -> Vec<RunSpec> {
    let clients = TrafficConfig {
        targets: vec![],
        path: c.path.clone(),
        clients: c.clients,
        duration: c.looping.then(|| loop_duration(o)),
        accept_encodings: c.accept.clone(),
        expect_status: c.expect_status,
        expect: c.expect,
        timeout: TIMEOUT,
    };
    let measure = Measure::Traffic(Box::new(TrafficCase {
        case: c.key,
        route: c.route,
        clients,
        in_flight: c.in_flight,
    }));
    // No protocol load: the clients are the measure's.
    let none = LoadConfig::default();
    let spec = |id: String, label: String, m: &str| {
        let mut s = RunSpec::gateway(&id, &label, m, Duration::ZERO, &none);
        s.load = vec![];
        s.measure(measure.clone())
    };
    let mut out = Vec::new();
    for who in CONTENDERS {
        match who {
            Contender::Nginx | Contender::Varnish if c.peers => {
                let v: Variant = match who {
                    Contender::Nginx => peers::NGINX_REAL,
                    _ => peers::VARNISH_REAL,
                };
                let name = if v.is_nginx() { "nginx" } else { "Varnish" };
                let setup = format!("{} ([config](peers/{}))", v.label(), v.file_name());
                let s = spec(run_id(c.key, who, 1), name.into(), "");
                out.push(RunSpec {
                    front: Front::Peer(v),
                    ..s.labelled(name, &setup)
                });
            }
            Contender::Gateway(m) => {
                for &n in c.fleets {
                    let on = if n > 1 {
                        format!(" × {n} on Redis")
                    } else {
                        String::new()
                    };
                    let label = format!("gateway `--mitigations {m}`{on}");
                    let mut s = spec(run_id(c.key, who, n), label, m).flags(c.flags);
                    if n > 1 {
                        s = s.fleet(n);
                    }
                    let redis = if n > 1 { " --redis …" } else { "" };
                    s.setup = format!("`{}{redis}`", s.gateway_flags().join(" "));
                    out.push(s);
                }
            }
            _ => {}
        }
    }
    out
}

/// Why the bodies were not all intact, or `yes`.
pub fn bodies(s: &TrafficSummary) -> String {
    if s.bodies_intact {
        return "yes".into();
    }
    let parts = [
        (s.transport_errors, "without a complete answer"),
        (s.unexpected_status, "with another status"),
        (s.bad_bodies, "body not byte-identical"),
        (s.wrong_encoding, "gzip to a client that did not accept it"),
    ];
    let why: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    format!("no: {}", why.join(", "))
}

/// The summary table: one row per case, one column per contender, the goal.
fn summary(res: &Results) -> String {
    let head = [
        "case",
        "nginx",
        "Varnish",
        "gateway before: `--mitigations none`",
        "gateway after: `--mitigations all`",
        "goal (issue #20)",
    ];
    let mut md = format!("| {} |\n|---|--:|--:|--:|--:|---|\n", head.join(" | "));
    let mut any = false;
    for c in cases(&res.options) {
        let mut cells = vec![c.what.clone()];
        for who in CONTENDERS {
            let fleets: &[usize] = match who {
                Contender::Gateway(_) => c.fleets,
                _ if c.peers => &[1],
                _ => &[],
            };
            let shown: Vec<String> = fleets
                .iter()
                .filter_map(|&n| {
                    let run = res.run(&run_id(c.key, who, n))?;
                    any = true;
                    let mut cell = (c.cell)(run);
                    if let Some(b) = val(run, "bodies").and_then(Value::as_str)
                        && b != "yes"
                    {
                        cell += &format!(" ({b})");
                    }
                    Some(match n {
                        n if n > 1 && c.fleets.len() > 1 => format!("{n} on Redis: {cell}"),
                        _ => cell,
                    })
                })
                .collect();
            cells.push(if shown.is_empty() {
                "—".into()
            } else {
                shown.join("; ")
            });
        }
        cells.push(c.goal.into());
        md += &format!("| {} |\n", cells.join(" | "));
    }
    if !any {
        return String::new();
    }
    let m = &res.machine;
    let when = format!(
        "Measured from {} (UTC) on `{}`: {} CPU(s) ({}), Linux {}; gateway and origin-sim from `{}`; each cell one run (— : not run for that front).",
        res.generated_at, m.host.hostname, m.host.nproc, m.cpu, m.kernel, m.bin_dir
    );
    format!("{md}\n{when}")
}

/// The rung's section of the report.
pub fn section(o: &LadderOptions) -> Section {
    use Col::*;
    let cases = cases(o);
    let v = json!({
        "mib": BLOB_BYTES >> 20, "first_ms": BLOB_FIRST_BYTE_MS, "last_ms": BLOB_LAST_BYTE_MS,
        "cold_max_age": COLD_MAX_AGE, "looping": human(loop_duration(o)),
        "nginx": peers::NGINX_REAL.label(), "varnish": peers::VARNISH_REAL.label(),
        "fail_fleet": FAIL_FLEET, "slow_fleet": SLOW_FLEET, "timeout": human(TIMEOUT),
        "negotiated_ms": NEGOTIATED_DELAY_MS, "negotiated_kib": NEGOTIATED_BYTES >> 10,
    });
    let mut parts = vec![
        Part::Text(prose("real-traffic", &v)),
        Part::Note(|res, _| summary(res)),
        Part::Text(prose("real-traffic-runs", &v)),
    ];
    for (i, c) in cases.iter().enumerate() {
        let mut cols = vec![
            Label,
            Setup,
            Val("origin_requests", "origin requests"),
            Val("requests", "client requests"),
            Val("served", "served"),
            Val("errors", "client errors"),
            Val("first_byte_max_ms", "slowest first byte ms"),
            Val("total_max_ms", "slowest client ms"),
            Val("bodies", "every answer complete and byte-identical"),
        ];
        if c.in_flight {
            cols.push(Val(
                "max_in_flight",
                "origin requests in flight at once: max",
            ));
        }
        if !c.accept.is_empty() {
            cols.push(Val("origin_by_encoding", "origin answers by encoding"));
        }
        let intro = format!("**{}.** {} — `GET {}`", i + 1, c.what, c.path);
        parts.push(Part::Table(intro, cols, rows(o, c)));
    }
    parts.push(Part::Note(|_, runs| installed(runs)));
    Section::new(
        "real-traffic",
        "Real traffic: large bodies, a failing origin, a slow origin, variants (issue #20)",
        parts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::record::Profile;

    #[test]
    fn every_case_has_its_runs() {
        let o = LadderOptions::of(Profile::Full);
        let s = section(&o);
        let ids: Vec<&str> = s.rows().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 4 + 4 + 6 + 2 + 4 + 2, "{ids:?}");
        assert!(ids.contains(&"real-fail-all-x2") && ids.contains(&"real-slow-all-x3"));
        let slow = s.rows().find(|r| r.id == "real-slow-all-x3").unwrap();
        assert_eq!(
            slow.gateway_flags(),
            ["--mitigations", "all", "--lock-ttl", "2s"],
            "defaults plus what the row needs: no --ttl"
        );
        assert!(slow.needs_redis() && slow.instances == 3);
        assert_eq!(thousands(4052), "4,052");
        assert_eq!(thousands(154), "154");
    }
}
