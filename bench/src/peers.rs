//! (9) Peers: nginx and Varnish under the measurement protocol.
//!
//! The same load as the before/after table (50 keep-alive clients, 95 % hot
//! key, TTL, origin-sim 200 ms × 16 connections, same duration), against what
//! a reader would otherwise deploy in front of a slow origin:
//!
//! - **nginx** `proxy_cache` with `proxy_cache_lock` alone, and with
//!   `proxy_cache_use_stale updating` + `proxy_cache_background_update`;
//! - **Varnish** without grace (its waiting list coalesces misses) and with
//!   grace (serve the stale object while one background fetch refreshes it);
//!
//! each as one instance and as a fleet of `--instances` (default 3) instances,
//! every instance with its own cache and the load round-robin — what a user
//! deploys without a shared lock. stampede-layer's full stack runs next to
//! them (one gateway with the in-process store; the fleet on one Redis — the
//! latter is the table's `full stack` run, reused when the table ran).
//!
//! Each run starts a fresh origin-sim and fresh peers. The config files are
//! written into the run's work dir and started as child processes on free
//! loopback ports (`nginx -e … -c FILE -p DIR -g 'daemon off;'`,
//! `varnishd -F …`), never touching a system-wide instance. The ladder never
//! installs packages: a peer that is not installed is reported as skipped
//! (`scripts/demo.sh` installs both from Debian's packages).
//!
//! This is a child module of `ladder` (it extends `Ladder` and reuses its
//! private run machinery).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{GatewayCounters, Ladder, OriginOpts, Results, RowMetrics, Run, Rung, Setup, Skipped};
use crate::load::run_load;
use crate::procs::{ChildProc, free_port, which};

/// Varnish's grace in the "grace" rows (the gateway's `--stale-ttl` default).
pub const VARNISH_GRACE: Duration = Duration::from_secs(5);
/// nginx `proxy_cache_lock_timeout` and `proxy_cache_lock_age`: the same bound
/// as the gateway's default `--lock-ttl` (2 s). A waiter gives up after it
/// and goes to the origin itself (uncached); a lock older than it lets one
/// more request through.
pub const NGINX_LOCK_BOUND: Duration = Duration::from_secs(2);

/// (9) Peers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeersResult {
    /// What happened (one line; the reason when the rung was skipped).
    pub note: String,
    /// `nginx -v` / `varnishd -V` of the binaries used.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Rows in display order (stampede-layer's included).
    #[serde(default)]
    pub rows: Vec<PeerRow>,
    /// The config file of each peer setup, verbatim (the single instance's).
    #[serde(default)]
    pub configs: Vec<PeerConfig>,
    /// Peer setups that failed, with the error.
    #[serde(default)]
    pub failed: Vec<Skipped>,
}

/// One row of the peers table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRow {
    /// Row label.
    pub label: String,
    /// `nginx`, `varnish` or `stampede-layer`.
    pub kind: String,
    /// Instances (each peer instance has its own cache).
    pub instances: usize,
    /// Run id.
    pub run: String,
    /// What the second column shows (config / mitigations).
    pub setup: String,
    /// Config file (relative to the output directory), for peers.
    pub config: Option<String>,
}

/// A peer's config file as used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Setup label.
    pub label: String,
    /// File written under the output directory.
    pub file: String,
    /// The command line that ran it.
    pub command: String,
    /// The file's text.
    pub text: String,
}

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Varnish,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnishd",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnish",
        }
    }

    fn id(self) -> &'static str {
        self.package()
    }
}

/// One peer configuration.
#[derive(Debug, Clone, Copy)]
struct Variant {
    kind: Kind,
    /// Run id / file stem.
    key: &'static str,
    label: &'static str,
    /// nginx: `proxy_cache_use_stale updating …` + background update;
    /// Varnish: grace.
    stale: bool,
    /// Short description (the run's `mitigations` field).
    what: &'static str,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        kind: Kind::Nginx,
        key: "nginx-lock",
        label: "nginx (lock only)",
        stale: false,
        what: "nginx: proxy_cache_lock",
    },
    Variant {
        kind: Kind::Nginx,
        key: "nginx-stale",
        label: "nginx (lock + stale updating + background update)",
        stale: true,
        what: "nginx: proxy_cache_lock, proxy_cache_use_stale updating error timeout, proxy_cache_background_update",
    },
    Variant {
        kind: Kind::Varnish,
        key: "varnish-no-grace",
        label: "Varnish (no grace)",
        stale: false,
        what: "varnish: beresp.grace = 0s (waiting list only)",
    },
    Variant {
        kind: Kind::Varnish,
        key: "varnish-grace",
        label: "Varnish (grace 5s)",
        stale: true,
        what: "varnish: beresp.grace = 5s",
    },
];

impl Variant {
    fn file_name(&self) -> String {
        match self.kind {
            Kind::Nginx => format!("{}.conf", self.key),
            Kind::Varnish => format!("{}.vcl", self.key),
        }
    }
}

/// `name` on `$PATH`, or in the sbin directories (where Debian puts both, and
/// which a non-root `$PATH` often lacks).
pub fn find_peer_binary(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        ["/usr/sbin", "/usr/local/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

/// The installed peers.
fn installed() -> Vec<(Kind, PathBuf)> {
    [Kind::Nginx, Kind::Varnish]
        .into_iter()
        .filter_map(|k| find_peer_binary(k.binary()).map(|p| (k, p)))
        .collect()
}

/// Runs the peers rung will make (for the progress counter).
pub(super) fn planned_runs(redis: bool, table_has_full: bool) -> usize {
    let kinds = installed().len();
    if kinds == 0 {
        return 0;
    }
    kinds * 4 + 1 + usize::from(redis && !table_has_full)
}

fn version(kind: Kind, bin: &Path) -> String {
    let flag = match kind {
        Kind::Nginx => "-v",
        Kind::Varnish => "-V",
    };
    Command::new(bin)
        .arg(flag)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// `2s`, `500ms`: a duration both nginx and VCL accept.
fn conf_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The nginx config of one instance.
fn nginx_conf(dir: &Path, port: u16, origin_port: u16, ttl: Duration, stale: bool) -> String {
    let d = dir.display();
    let ttl = conf_duration(ttl);
    let lock = conf_duration(NGINX_LOCK_BOUND);
    let stale_lines = if stale {
        "            # Serve the stale entry while one request refreshes it (and when the\n            # origin fails); the refresh runs as a background subrequest.\n            proxy_cache_use_stale updating error timeout;\n            proxy_cache_background_update on;\n"
    } else {
        ""
    };
    format!(
        r#"# stampede-bench ladder, rung (9) peers: nginx as a caching reverse proxy.
# Started as: nginx -e {d}/error.log -c {d}/nginx.conf -p {d}/ -g 'daemon off;'
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;

    # One cache per instance; entries stay (stale) long after expiry, so
    # use_stale has something to serve.
    proxy_cache_path {d}/cache levels=1:2 keys_zone=items:10m max_size=256m inactive=10m use_temp_path=off;

    # RFC 9211 Cache-Status for the bench: hit / stale hit (negative ttl) / forwarded.
    map $upstream_cache_status $stampede_cache_status {{
        HIT         "nginx; hit";
        REVALIDATED "nginx; hit";
        STALE       "nginx; hit; ttl=-1";
        UPDATING    "nginx; hit; ttl=-1";
        EXPIRED     "nginx; fwd=stale";
        default     "nginx; fwd=miss";
    }}

    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};

        # Readiness probe for the bench (never reaches the origin).
        location = /__ready {{
            return 204;
        }}

        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";

            proxy_cache items;
            proxy_cache_valid 200 {ttl};
            # One request per key populates a new entry; the others wait.
            proxy_cache_lock on;
            proxy_cache_lock_timeout {lock};
            proxy_cache_lock_age {lock};
{stale_lines}
            add_header Cache-Status $stampede_cache_status always;
        }}
    }}
}}
"#
    )
}

/// The VCL of one instance.
fn varnish_vcl(origin_port: u16, ttl: Duration, grace: Duration) -> String {
    let ttl = conf_duration(ttl);
    let grace = conf_duration(grace);
    format!(
        r#"vcl 4.1;
# stampede-bench ladder, rung (9) peers: Varnish in front of origin-sim.

backend origin {{
    .host = "127.0.0.1";
    .port = "{origin_port}";
}}

sub vcl_recv {{
    # Readiness probe for the bench (never reaches the origin).
    if (req.url == "/__ready") {{
        return (synth(204));
    }}
}}

sub vcl_backend_response {{
    set beresp.ttl = {ttl};
    # Grace: past its TTL the object is still served for this long while
    # one background fetch refreshes it. 0s = no grace: requests for an
    # expired object wait on the waiting list for the one fetch.
    set beresp.grace = {grace};
    set beresp.keep = 0s;
}}

sub vcl_deliver {{
    # RFC 9211 Cache-Status for the bench: hit / stale hit (negative ttl) / forwarded.
    if (obj.hits > 0) {{
        if (obj.ttl < 0s) {{
            set resp.http.Cache-Status = "varnish; hit; ttl=-1";
        }} else {{
            set resp.http.Cache-Status = "varnish; hit";
        }}
    }} else {{
        set resp.http.Cache-Status = "varnish; fwd=miss";
    }}
}}
"#
    )
}

/// A peer server (nginx master / varnishd manager) owned by the ladder.
///
/// Stopped with SIGTERM first, by its PID, so it takes its own worker /
/// cache processes down with it (a SIGKILLed nginx master leaves its workers
/// serving); SIGKILL (the inner guard) if it has not exited within 5 s.
struct PeerProc {
    proc_: ChildProc,
    url: String,
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        terminate(&self.proc_, Duration::from_secs(5));
        // `self.proc_` drops next: SIGKILL if still running, then reaped.
    }
}

/// Whether the (unreaped) child `pid` has exited: a zombie or gone. The PID
/// cannot be reused before we reap it, so this never looks at a stranger.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].trim_start().chars().next())
            .is_none_or(|c| c == 'Z' || c == 'X'),
    }
}

/// SIGTERM our child `p` (by PID) and wait up to `grace` for it to exit.
fn terminate(p: &ChildProc, grace: Duration) {
    let pid = p.pid();
    if exited(pid) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < grace && !exited(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Port of `http://host:port`.
fn url_port(url: &str) -> anyhow::Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}

impl Ladder {
    /// The peers rung.
    pub(super) async fn peers(&mut self) -> anyhow::Result<PeersResult> {
        let mut out = PeersResult::default();
        let found = installed();
        for kind in [Kind::Nginx, Kind::Varnish] {
            match found.iter().find(|(k, _)| *k == kind) {
                Some((_, bin)) => out.versions.push(version(kind, bin)),
                None => self.skipped.push(Skipped {
                    what: format!("(9) peers: {} rows", kind.package()),
                    why: format!(
                        "{} is not installed on this machine (Debian: apt-get install --no-install-recommends {}; scripts/demo.sh installs it when it can)",
                        kind.binary(),
                        kind.package()
                    ),
                }),
            }
        }
        if found.is_empty() {
            out.note = "skipped: neither nginx nor varnishd is installed on this machine (scripts/demo.sh installs them from Debian's packages when it can)".into();
            self.progress.note(Rung::Peers, &out.note);
            return Ok(out);
        }
        let ttl = self.opts.ttl;
        let n = self.opts.instances;
        let variants: Vec<(Variant, PathBuf)> = VARIANTS
            .iter()
            .filter_map(|v| {
                found
                    .iter()
                    .find(|(k, _)| *k == v.kind)
                    .map(|(_, b)| (*v, b.clone()))
            })
            .collect();

        // One instance each.
        let id = self
            .run(
                Rung::Peers,
                "peers-stampede-x1",
                "stampede-layer full stack × 1 (in-process store)",
                Setup::single("all", ttl),
                "protocol",
                |l, s| l.protocol_load(s, ttl),
                &[],
            )
            .await?;
        out.rows.push(PeerRow {
            label: "stampede-layer full stack × 1".into(),
            kind: "stampede-layer".into(),
            instances: 1,
            run: id,
            setup: "`--mitigations all`, in-process store".into(),
            config: None,
        });
        for (v, bin) in &variants {
            self.peer_row(&mut out, v, bin, 1).await;
        }

        // Fleets.
        if self.redis.is_some() {
            // The table's full-stack run (reused when the table ran).
            let id = self
                .run(
                    Rung::Peers,
                    "table-full",
                    "full stack",
                    Setup::fleet("all", n, ttl),
                    "protocol",
                    |l, s| l.protocol_load(s, ttl),
                    &[],
                )
                .await?;
            out.rows.push(PeerRow {
                label: format!("stampede-layer full stack × {n}"),
                kind: "stampede-layer".into(),
                instances: n,
                run: id,
                setup: "`--mitigations all`, one Redis (the table's full-stack run)".into(),
                config: None,
            });
        } else {
            self.skipped.push(Skipped {
                what: format!("(9) peers: the stampede-layer full stack × {n} comparison row"),
                why: "redis-server is not on PATH: the fleet shares its store and lock through Redis (Debian: apt-get install redis-server)".into(),
            });
        }
        for (v, bin) in &variants {
            self.peer_row(&mut out, v, bin, n).await;
        }

        let ok = out
            .rows
            .iter()
            .filter(|r| r.kind != "stampede-layer")
            .count();
        out.note = format!(
            "{ok} peer run(s) ({}){}",
            out.versions.join("; "),
            if out.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed", out.failed.len())
            }
        );
        Ok(out)
    }

    /// Run one peer setup and add its row (a failure is recorded, not fatal).
    async fn peer_row(&mut self, out: &mut PeersResult, v: &Variant, bin: &Path, instances: usize) {
        let label = format!("{} × {instances}", v.label);
        match self.peer_run(out, v, bin, instances, &label).await {
            Ok(id) => out.rows.push(PeerRow {
                label,
                kind: v.kind.id().into(),
                instances,
                run: id,
                setup: format!("{instances} × {}, own cache each", v.kind.package()),
                config: Some(format!("peers/{}", v.file_name())),
            }),
            Err(e) => {
                eprintln!("error: peers: {label}: {e:#}");
                let f = Skipped {
                    what: format!("(9) peers: {label}"),
                    why: format!("failed: {e:#}"),
                };
                self.skipped.push(f.clone());
                out.failed.push(f);
            }
        }
    }

    async fn peer_run(
        &mut self,
        out: &mut PeersResult,
        v: &Variant,
        bin: &Path,
        instances: usize,
        label: &str,
    ) -> anyhow::Result<String> {
        let ttl = self.opts.ttl;
        let id = format!("peers-{}-x{instances}", v.key);
        self.progress.line(
            Rung::Peers,
            &format!(
                "{label}: starting origin-sim + {instances} × {}",
                v.kind.binary()
            ),
        );
        // origin-sim alone (no gateway).
        let setup = Setup {
            instances: 0,
            redis: false,
            mitigations: String::new(),
            ttl,
            extra: Vec::new(),
            origin: OriginOpts::default(),
        };
        let mut stack = self.start(&setup).await?;
        let origin_port = url_port(&stack.origin_url)?;
        let mut procs: Vec<PeerProc> = Vec::new();
        let mut first: Option<(String, String)> = None;
        for i in 1..=instances {
            let dir = self.work.join(format!("{id}-{i}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let port = free_port()?;
            let (file, text, args) = match v.kind {
                Kind::Nginx => {
                    let file = dir.join("nginx.conf");
                    let text = nginx_conf(&dir, port, origin_port, ttl, v.stale);
                    let args = vec![
                        "-e".to_string(),
                        dir.join("error.log").display().to_string(),
                        "-c".into(),
                        file.display().to_string(),
                        "-p".into(),
                        format!("{}/", dir.display()),
                        "-g".into(),
                        "daemon off;".into(),
                    ];
                    (file, text, args)
                }
                Kind::Varnish => {
                    let file = dir.join("default.vcl");
                    let grace = if v.stale {
                        VARNISH_GRACE
                    } else {
                        Duration::ZERO
                    };
                    let text = varnish_vcl(origin_port, ttl, grace);
                    // -j none: no privilege separation (a bench on loopback;
                    // works as root and as a user); -T none: no admin CLI.
                    let args = vec![
                        "-F".to_string(),
                        "-j".into(),
                        "none".into(),
                        "-a".into(),
                        format!("127.0.0.1:{port}"),
                        "-T".into(),
                        "none".into(),
                        "-f".into(),
                        file.display().to_string(),
                        "-n".into(),
                        dir.join("varnish").display().to_string(),
                        "-s".into(),
                        "malloc,64m".into(),
                    ];
                    (file, text, args)
                }
            };
            std::fs::write(&file, &text).with_context(|| format!("write {}", file.display()))?;
            let command = std::iter::once(bin.display().to_string())
                .chain(args.iter().map(|a| {
                    if a.contains(' ') {
                        format!("'{a}'")
                    } else {
                        a.clone()
                    }
                }))
                .collect::<Vec<_>>()
                .join(" ");
            if first.is_none() {
                first = Some((command, text));
            }
            let name = format!("{}-{i}", v.key);
            let proc_ = ChildProc::spawn(&name, bin, &args, &self.log(&format!("{id}-{i}")))?;
            procs.push(PeerProc {
                proc_,
                url: format!("http://127.0.0.1:{port}"),
            });
        }
        for p in &mut procs {
            let url = format!("{}/__ready", p.url);
            p.proc_
                .wait_ready(&self.http, &url, Duration::from_secs(60))
                .await?;
        }
        let mut cfg = self.protocol_load(&stack, ttl);
        cfg.targets = procs.iter().map(|p| p.url.clone()).collect();
        self.progress.line(
            Rung::Peers,
            &format!(
                "{label}: load {} × {} clients on {} target(s)",
                humantime::format_duration(cfg.duration),
                cfg.concurrency,
                cfg.targets.len()
            ),
        );
        let summary = run_load(&cfg, false).await?;
        stack.check_alive()?;
        for p in &mut procs {
            p.proc_.check_alive()?;
        }
        drop(procs);
        drop(stack);
        let metrics = RowMetrics::from_summary(&summary);
        self.progress.line(
            Rung::Peers,
            &format!(
                "{label}: done — hot-key origin queries per boundary mean {:.2} max {}, max origin q/s {}, hot p99 {:.1} ms, errors {}",
                metrics.hot_mean_per_boundary,
                metrics.hot_max_per_boundary,
                metrics.max_origin_qps,
                metrics.hot_p99_ms,
                metrics.errors
            ),
        );
        self.progress.done += 1;
        let (command, text) = first.unwrap_or_default();
        // Record the config verbatim (the first setup of this variant to run:
        // normally the single instance; fleet instances differ only in port
        // and directories).
        if !out.configs.iter().any(|c| c.label == v.label) {
            let rel = format!("peers/{}", v.file_name());
            let path = self.opts.out.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
            out.configs.push(PeerConfig {
                label: v.label.into(),
                file: rel,
                command: command.clone(),
                text,
            });
        }
        let mut run = Run {
            id: id.clone(),
            label: label.to_string(),
            mitigations: v.what.into(),
            instances,
            store: v.kind.id().into(),
            gateway_flags: vec![command],
            origin_flags: setup.origin.flags(),
            metrics,
            gateways: GatewayCounters::default(),
            chart: None,
            summary,
        };
        if self.opts.charts {
            let title = format!(
                "{label} — {instances} × {}, own cache each",
                v.kind.binary()
            );
            run.chart = self.standard_chart_titled(&run, &title);
        }
        self.runs.push(run);
        Ok(id)
    }
}

/// Render section 9 of RESULTS.md.
pub(crate) fn render(md: &mut String, res: &Results, pe: &PeersResult) {
    use crate::ladder_report::{table_header, table_row};
    let _ = writeln!(
        md,
        "## 9. Peers: nginx and Varnish under the same protocol\n"
    );
    if pe.rows.is_empty() {
        let _ = writeln!(md, "{}\n", pe.note);
        return;
    }
    let p = &res.protocol;
    let _ = writeln!(
        md,
        "The load of section 1 ({} clients, {:.0} % hot key, {:.0} s, TTL {} s, origin-sim {} ms × {} connections, fresh origin-sim per run) against nginx and Varnish as caching reverse proxies, one instance and {} instances with the load round-robin. Each peer instance has its own cache: neither has a lock shared across instances, so a fleet of them rebuilds a key once per instance. stampede-layer's full stack (`--mitigations all`) is repeated from the same ladder run for comparison. Installed: {}.\n",
        p.concurrency,
        p.hot_fraction * 100.0,
        p.duration_s,
        p.ttl_s,
        p.origin_latency_ms,
        p.origin_db_connections,
        p.fleet_instances,
        pe.versions
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Hits and misses come from a `Cache-Status` header each config adds: nginx maps `$upstream_cache_status` HIT/REVALIDATED → `nginx; hit`, STALE/UPDATING → `nginx; hit; ttl=-1`, EXPIRED → `nginx; fwd=stale`, MISS/BYPASS → `nginx; fwd=miss`; Varnish sets `varnish; hit` when `obj.hits > 0` (`ttl=-1` when served in grace), else `varnish; fwd=miss`. A request that waited for another's fetch (nginx's cache lock, Varnish's waiting list) counts as a hit there, where the gateway says `fwd=miss; collapsed`: compare the origin-query and latency columns across systems, not the miss rate.\n"
    );
    let _ = writeln!(md, "{}", table_header("setup"));
    for row in &pe.rows {
        let Some(r) = res.run(&row.run) else { continue };
        let setup = match &row.config {
            Some(c) => format!("{} ([config]({c}))", row.setup),
            None => row.setup.clone(),
        };
        let _ = writeln!(md, "{}", table_row(&row.label, &setup, r));
    }
    md.push('\n');
    for f in &pe.failed {
        let _ = writeln!(
            md,
            "- {} — **{}**",
            f.what,
            f.why.lines().next().unwrap_or("")
        );
    }
    if !pe.failed.is_empty() {
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "What drives these rows:\n\n\
         - nginx's `proxy_cache_lock` only covers populating a *new* entry: once an entry has expired, every request that finds it expired goes to the origin (`EXPIRED`) until one refresh lands — the lock-only rows' burst per boundary. Its lock waiters poll every 500 ms, which is what the cold fill costs them (the first second's hot p99 in the charts).\n\
         - With `proxy_cache_background_update`, nginx answers with the stale entry at once but keeps the client connection that triggered the refresh busy until the refresh finishes: the next request on that keep-alive connection waits for the origin. Refreshes of the other (expired, rarely read) keys do this too, so hot-key requests queue behind them — the slow hot-key tail of those rows.\n\
         - Varnish coalesces the requests for an object being fetched on its waiting list (no timeout): without grace they all wait for the one fetch; with grace they get the stale object while one background fetch refreshes it.\n\
         - A fleet of either keeps one cache per instance and no shared lock: about one rebuild per instance per boundary. stampede-layer's fleet shares the lock and the store through Redis.\n"
    );
    if !pe.configs.is_empty() {
        let _ = writeln!(
            md,
            "The config files, verbatim as the single-instance runs used them (fleet instances differ only in port and directories; the ports and paths are the run's own):\n"
        );
        for c in &pe.configs {
            let lang = if c.file.ends_with(".vcl") {
                "vcl"
            } else {
                "nginx"
            };
            let _ = writeln!(
                md,
                "<details><summary>{} — <a href=\"{}\">{}</a></summary>\n\n`{}`\n\n```{lang}\n{}```\n\n</details>\n",
                c.label, c.file, c.file, c.command, c.text
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_status::classify;

    #[test]
    fn durations_render_for_nginx_and_vcl() {
        assert_eq!(conf_duration(Duration::from_secs(2)), "2s");
        assert_eq!(conf_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(conf_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn nginx_conf_has_the_row_settings() {
        let dir = Path::new("/tmp/x");
        let lock = nginx_conf(dir, 1, 2, Duration::from_secs(2), false);
        assert!(lock.contains("listen 127.0.0.1:1;"));
        assert!(lock.contains("server 127.0.0.1:2;"));
        assert!(lock.contains("proxy_cache_valid 200 2s;"));
        assert!(lock.contains("proxy_cache_lock on;"));
        assert!(!lock.contains("proxy_cache_use_stale"));
        assert!(!lock.contains("proxy_cache_background_update"));
        let stale = nginx_conf(dir, 1, 2, Duration::from_secs(2), true);
        assert!(stale.contains("proxy_cache_use_stale updating error timeout;"));
        assert!(stale.contains("proxy_cache_background_update on;"));
    }

    #[test]
    fn vcl_has_ttl_and_grace() {
        let v = varnish_vcl(2, Duration::from_secs(2), VARNISH_GRACE);
        assert!(v.contains(".port = \"2\";"));
        assert!(v.contains("set beresp.ttl = 2s;"));
        assert!(v.contains("set beresp.grace = 5s;"));
        assert!(varnish_vcl(2, Duration::from_secs(2), Duration::ZERO).contains("grace = 0s;"));
    }

    /// The headers the configs send classify as the bench expects.
    #[test]
    fn peer_cache_status_values_classify() {
        for hit in ["nginx; hit", "varnish; hit"] {
            let c = classify(Some(hit));
            assert!(c.hit && !c.stale && !c.miss, "{hit}");
        }
        for stale in ["nginx; hit; ttl=-1", "varnish; hit; ttl=-1"] {
            let c = classify(Some(stale));
            assert!(c.hit && c.stale && !c.miss, "{stale}");
        }
        for miss in ["nginx; fwd=miss", "nginx; fwd=stale", "varnish; fwd=miss"] {
            let c = classify(Some(miss));
            assert!(c.miss && !c.hit, "{miss}");
        }
        // The values in the configs are exactly these.
        let conf = nginx_conf(Path::new("/d"), 1, 2, Duration::from_secs(2), true);
        for v in [
            "\"nginx; hit\"",
            "\"nginx; hit; ttl=-1\"",
            "\"nginx; fwd=stale\"",
            "\"nginx; fwd=miss\"",
        ] {
            assert!(conf.contains(v), "{v}");
        }
        let vcl = varnish_vcl(2, Duration::from_secs(2), VARNISH_GRACE);
        for v in [
            "\"varnish; hit\"",
            "\"varnish; hit; ttl=-1\"",
            "\"varnish; fwd=miss\"",
        ] {
            assert!(vcl.contains(v), "{v}");
        }
    }

    #[test]
    fn url_ports() {
        assert_eq!(url_port("http://127.0.0.1:8081").unwrap(), 8081);
        assert!(url_port("http://x").is_err());
    }
}
