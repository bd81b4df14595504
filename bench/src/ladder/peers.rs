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
//! The config text is generated twice: with the run's directories to start
//! the peer, and with `<tmp>` in their place for the report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::record::PeerConfig;
use crate::procs::{ChildProc, which};

/// Varnish's grace in the "grace" rows (the gateway's `--stale-ttl` default).
pub const VARNISH_GRACE: Duration = Duration::from_secs(5);
/// nginx `proxy_cache_lock_timeout` and `proxy_cache_lock_age`: the same bound
/// as the gateway's default `--lock-ttl`. A waiter gives up after it and goes
/// to the origin itself (uncached); a lock older than it lets one more
/// request through.
pub const NGINX_LOCK_BOUND: Duration = Duration::from_secs(2);

/// How the peers' hits and misses are told apart (the configs below add the header).
pub const CACHE_STATUS_PROSE: &str = "Hits and misses come from a `Cache-Status` header each config adds: nginx maps `$upstream_cache_status` HIT/REVALIDATED → `nginx; hit`, STALE/UPDATING → `nginx; hit; ttl=-1`, EXPIRED → `nginx; fwd=stale`, MISS/BYPASS → `nginx; fwd=miss`; Varnish sets `varnish; hit` when `obj.hits > 0` (`ttl=-1` when served in grace), else `varnish; fwd=miss`. A request that waited for another's fetch (nginx's cache lock, Varnish's waiting list) counts as a hit there, where the gateway says `fwd=miss; collapsed`: compare the origin-query and latency columns across systems, not the miss rate.";

/// What the peers' documented behaviour does to the rows.
pub const WHAT_DRIVES_THE_ROWS: &str = "What drives these rows:

- nginx's `proxy_cache_lock` only covers populating a *new* entry: once an entry has expired, every request that finds it expired goes to the origin (`EXPIRED`) until one refresh lands — the lock-only rows' burst per boundary. Its lock waiters poll every 500 ms (fixed in nginx), which is what the cold fill costs them (the first second's hot p99 in the charts).
- With `proxy_cache_background_update`, nginx answers with the stale entry at once but keeps the client connection that triggered the refresh busy until the refresh finishes: the next request on that keep-alive connection waits for the origin. Refreshes of the other (expired, rarely read) keys do this too, so hot-key requests queue behind them — the slow hot-key tail of those rows.
- Varnish coalesces the requests for an object being fetched on its waiting list (no timeout): without grace they all wait for the one fetch; with grace they get the stale object while one background fetch refreshes it.
- A fleet of either keeps one cache per instance and no shared lock: about one rebuild per instance per boundary. stampede-layer's fleet shares the lock and the store through Redis.
";

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx `proxy_cache`.
    Nginx,
    /// Varnish.
    Varnish,
}

impl Kind {
    /// Its binary.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnishd",
        }
    }

    /// Its Debian package.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnish",
        }
    }
}

/// One peer configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Which peer.
    pub kind: Kind,
    /// Run id part and config file stem.
    pub key: &'static str,
    /// nginx: `proxy_cache_use_stale updating …` + background update; Varnish: grace.
    pub stale: bool,
}

/// The peer configurations, in table order.
pub const VARIANTS: [Variant; 4] = [
    Variant {
        kind: Kind::Nginx,
        key: "nginx-lock",
        stale: false,
    },
    Variant {
        kind: Kind::Nginx,
        key: "nginx-stale",
        stale: true,
    },
    Variant {
        kind: Kind::Varnish,
        key: "varnish-no-grace",
        stale: false,
    },
    Variant {
        kind: Kind::Varnish,
        key: "varnish-grace",
        stale: true,
    },
];

impl Variant {
    /// Row label.
    pub fn label(&self) -> String {
        match (self.kind, self.stale) {
            (Kind::Nginx, false) => "nginx (lock only)".into(),
            (Kind::Nginx, true) => "nginx (lock + stale updating + background update)".into(),
            (Kind::Varnish, false) => "Varnish (no grace)".into(),
            (Kind::Varnish, true) => format!("Varnish (grace {})", conf_duration(VARNISH_GRACE)),
        }
    }

    /// Its settings in a few words (the run's `mitigations` field).
    pub fn what(&self) -> String {
        match (self.kind, self.stale) {
            (Kind::Nginx, false) => "nginx: proxy_cache_lock".into(),
            (Kind::Nginx, true) => "nginx: proxy_cache_lock, proxy_cache_use_stale updating error timeout, proxy_cache_background_update".into(),
            (Kind::Varnish, s) => format!("varnish: beresp.grace = {}{}", conf_duration(self.grace()), if s { "" } else { " (waiting list only)" }),
        }
    }

    fn grace(&self) -> Duration {
        if self.stale {
            VARNISH_GRACE
        } else {
            Duration::ZERO
        }
    }

    /// Its config file's name.
    pub fn file_name(&self) -> String {
        match self.kind {
            Kind::Nginx => format!("{}.conf", self.key),
            Kind::Varnish => format!("{}.vcl", self.key),
        }
    }

    /// Config file, its text and the peer's arguments, for an instance in `dir`.
    fn layout(
        &self,
        dir: &Path,
        port: u16,
        origin_port: u16,
        ttl: Duration,
    ) -> (PathBuf, String, Vec<String>) {
        let d = |p: &str| dir.join(p).display().to_string();
        match self.kind {
            Kind::Nginx => {
                let text = nginx_conf(dir, port, origin_port, ttl, self.stale);
                let args = [
                    "-e",
                    &d("error.log"),
                    "-c",
                    &d("nginx.conf"),
                    "-p",
                    &format!("{}/", dir.display()),
                ];
                let args = args
                    .iter()
                    .chain(&["-g", "daemon off;"])
                    .map(|s| s.to_string())
                    .collect();
                (dir.join("nginx.conf"), text, args)
            }
            Kind::Varnish => {
                // -j none: no privilege separation (a bench on loopback; works
                // as root and as a user); -T none: no admin CLI.
                let listen = format!("127.0.0.1:{port}");
                let args = [
                    "-F",
                    "-j",
                    "none",
                    "-a",
                    &listen,
                    "-T",
                    "none",
                    "-f",
                    &d("default.vcl"),
                ];
                let args = args
                    .iter()
                    .chain(&["-n", &d("varnish"), "-s", "malloc,64m"])
                    .map(|s| s.to_string())
                    .collect();
                (
                    dir.join("default.vcl"),
                    varnish_vcl(origin_port, ttl, self.grace()),
                    args,
                )
            }
        }
    }

    /// Start one instance in `work/name` listening on `port`: the process,
    /// and its config as the report shows it (`<tmp>` for `work`).
    pub fn spawn(
        &self,
        bin: &Path,
        work: &Path,
        name: &str,
        port: u16,
        origin_port: u16,
        ttl: Duration,
    ) -> anyhow::Result<(PeerProc, PeerConfig)> {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let (file, text, args) = self.layout(&dir, port, origin_port, ttl);
        std::fs::write(&file, &text).with_context(|| format!("write {}", file.display()))?;
        let proc_ = ChildProc::spawn(name, bin, &args, &work.join(format!("{name}.log")))?;
        let (_, shown, shown_args) =
            self.layout(&Path::new("<tmp>").join(name), port, origin_port, ttl);
        let quoted = shown_args.iter().map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        });
        let config = PeerConfig {
            version: version(self.kind, bin),
            file: format!("peers/{}", self.file_name()),
            command: std::iter::once(self.kind.binary().to_string())
                .chain(quoted)
                .collect::<Vec<_>>()
                .join(" "),
            text: shown,
        };
        Ok((
            PeerProc {
                proc_,
                url: format!("http://127.0.0.1:{port}"),
            },
            config,
        ))
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

fn version(kind: Kind, bin: &Path) -> String {
    let flag = if kind == Kind::Nginx { "-v" } else { "-V" };
    Command::new(bin)
        .arg(flag)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stderr) + String::from_utf8_lossy(&o.stdout);
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

/// `template` with each `{name}` replaced by its value.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// The nginx config of one instance (`bench/peers/nginx.conf`).
fn nginx_conf(dir: &Path, port: u16, origin_port: u16, ttl: Duration, stale: bool) -> String {
    let values = [
        ("dir", dir.display().to_string()),
        ("port", port.to_string()),
        ("origin_port", origin_port.to_string()),
        ("ttl", conf_duration(ttl)),
        ("lock", conf_duration(NGINX_LOCK_BOUND)),
        ("stale", if stale { "" } else { "# " }.to_string()),
    ];
    fill(include_str!("../../peers/nginx.conf"), &values)
}

/// The VCL of one instance (`bench/peers/varnish.vcl`).
fn varnish_vcl(origin_port: u16, ttl: Duration, grace: Duration) -> String {
    let values = [
        ("origin_port", origin_port.to_string()),
        ("ttl", conf_duration(ttl)),
        ("grace", conf_duration(grace)),
    ];
    fill(include_str!("../../peers/varnish.vcl"), &values)
}

/// A peer server (nginx master / varnishd manager) owned by the ladder.
///
/// Stopped with SIGTERM first, by its PID, so it takes its own worker /
/// cache processes down with it (a SIGKILLed nginx master leaves its workers
/// serving); SIGKILL (the inner guard) if it has not exited within 5 s.
pub struct PeerProc {
    proc_: ChildProc,
    /// Its base URL.
    pub url: String,
}

impl PeerProc {
    /// The process.
    pub fn proc_mut(&mut self) -> &mut ChildProc {
        &mut self.proc_
    }
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
        assert!(
            lock.contains("# proxy_cache_use_stale")
                && lock.contains("# proxy_cache_background_update")
        );
        let vcl = varnish_vcl(2, Duration::from_secs(2), Duration::ZERO);
        for k in [
            "{dir}",
            "{port}",
            "{origin_port}",
            "{ttl}",
            "{lock}",
            "{stale}",
            "{grace}",
        ] {
            assert!(!lock.contains(k) && !vcl.contains(k), "{k} left");
        }
        let stale = nginx_conf(dir, 1, 2, Duration::from_secs(2), true);
        assert!(stale.contains("\n            proxy_cache_use_stale updating error timeout;"));
        assert!(stale.contains("proxy_cache_background_update on;"));
    }

    /// What the report shows names no directory of the machine that ran it.
    #[test]
    fn shown_config_has_no_machine_paths() {
        for v in VARIANTS {
            let (_, text, args) = v.layout(
                &Path::new("<tmp>").join("peers-x-1"),
                1,
                2,
                Duration::from_secs(2),
            );
            let tmp = std::env::temp_dir().display().to_string();
            assert!(
                !text.contains(&tmp) && !args.iter().any(|a| a.contains(&tmp)),
                "{text}"
            );
            assert!(
                text.contains("<tmp>/peers-x-1") || v.kind == Kind::Varnish,
                "{text}"
            );
        }
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
}
