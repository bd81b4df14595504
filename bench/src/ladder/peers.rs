//! The peers rung: nginx and Varnish as caching reverse proxies under the
//! measurement protocol — nginx `proxy_cache` with `proxy_cache_lock` alone
//! and with `proxy_cache_use_stale updating` + `proxy_cache_background_update`,
//! Varnish without grace (its waiting list coalesces misses) and with grace —
//! each as one instance and as a fleet with one cache per instance.
//!
//! Their configs are the templates in `bench/peers/`, filled per instance
//! (free loopback ports, the run's own directory) and started as child
//! processes (`nginx … -g 'daemon off;'`, `varnishd -F …`), never touching a
//! system-wide instance. Filled a second time with `<tmp>` for the directory,
//! they are what the report shows. The ladder never installs packages: a
//! peer that is not installed is reported as skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
        if self == Kind::Nginx {
            "nginx"
        } else {
            "varnishd"
        }
    }

    /// Its Debian package.
    pub fn package(self) -> &'static str {
        if self == Kind::Nginx {
            "nginx"
        } else {
            "varnish"
        }
    }

    /// Config template, its file name in an instance's directory, arguments.
    fn template(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Nginx => (
                include_str!("../../peers/nginx.conf"),
                "nginx.conf",
                "-e {dir}/error.log -c {dir}/nginx.conf -p {dir}/ -g 'daemon off;'",
            ),
            // -j none: no privilege separation (a bench on loopback; works as
            // root and as a user); -T none: no admin CLI.
            Kind::Varnish => (
                include_str!("../../peers/varnish.vcl"),
                "default.vcl",
                "-F -j none -a 127.0.0.1:{port} -T none -f {dir}/default.vcl -n {dir}/varnish -s malloc,64m",
            ),
        }
    }
}

/// One peer configuration: `stale` is nginx's `proxy_cache_use_stale
/// updating` + background update, Varnish's grace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Which peer.
    pub kind: Kind,
    /// Run id part and config file stem.
    pub key: &'static str,
    /// Serve stale while one request refreshes.
    pub stale: bool,
}

const fn variant(kind: Kind, key: &'static str, stale: bool) -> Variant {
    Variant { kind, key, stale }
}

/// The peer configurations, in table order.
pub const VARIANTS: [Variant; 4] = [
    variant(Kind::Nginx, "nginx-lock", false),
    variant(Kind::Nginx, "nginx-stale", true),
    variant(Kind::Varnish, "varnish-no-grace", false),
    variant(Kind::Varnish, "varnish-grace", true),
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
        let nginx_stale =
            ", proxy_cache_use_stale updating error timeout, proxy_cache_background_update";
        match (self.kind, self.stale) {
            (Kind::Nginx, s) => format!(
                "nginx: proxy_cache_lock{}",
                if s { nginx_stale } else { "" }
            ),
            (Kind::Varnish, s) => {
                let only = if s { "" } else { " (waiting list only)" };
                format!(
                    "varnish: beresp.grace = {}{only}",
                    conf_duration(self.grace())
                )
            }
        }
    }

    fn grace(&self) -> Duration {
        if self.stale {
            VARNISH_GRACE
        } else {
            Duration::ZERO
        }
    }

    /// Its config file's name under the output directory.
    pub fn file_name(&self) -> String {
        let ext = if self.kind == Kind::Nginx {
            "conf"
        } else {
            "vcl"
        };
        format!("{}.{ext}", self.key)
    }

    /// `template` filled for an instance in `dir` on `port`.
    fn fill(
        &self,
        template: &str,
        dir: &Path,
        port: u16,
        origin_port: u16,
        ttl: Duration,
    ) -> String {
        let values = [
            ("dir", dir.display().to_string()),
            ("port", port.to_string()),
            ("origin_port", origin_port.to_string()),
            ("ttl", conf_duration(ttl)),
            ("lock", conf_duration(NGINX_LOCK_BOUND)),
            ("grace", conf_duration(self.grace())),
            ("stale", if self.stale { "" } else { "# " }.into()),
        ];
        values.iter().fold(template.into(), |t, (k, v)| {
            t.replace(&format!("{{{k}}}"), v)
        })
    }

    /// Start one instance in `work/name` on `port`: the process (stopped
    /// with SIGTERM first, so it takes its workers down), and its config as
    /// the report shows it (`<tmp>` for `work`).
    pub fn spawn(
        &self,
        bin: &Path,
        work: &Path,
        name: &str,
        ports: (u16, u16),
        ttl: Duration,
    ) -> anyhow::Result<(ChildProc, PeerConfig)> {
        let ((template, file, args), (port, origin_port)) = (self.kind.template(), ports);
        let (dir, shown_dir) = (work.join(name), Path::new("<tmp>").join(name));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(
            dir.join(file),
            self.fill(template, &dir, port, origin_port, ttl),
        )?;
        let args = shlex::split(&self.fill(args, &dir, port, origin_port, ttl))
            .context("peer arguments")?;
        let log = work.join(format!("{name}.log"));
        let proc_ =
            ChildProc::spawn(name, bin, &args, &log)?.terminate_first(Duration::from_secs(5));
        let config = PeerConfig {
            version: version(self.kind, bin),
            file: format!("peers/{}", self.file_name()),
            command: format!(
                "{} {}",
                self.kind.binary(),
                self.fill(self.kind.template().2, &shown_dir, port, origin_port, ttl)
            ),
            text: self.fill(template, &shown_dir, port, origin_port, ttl),
        };
        Ok((proc_, config))
    }
}

/// `name` on `$PATH`, or in the sbin directories (where Debian puts both, and
/// which a non-root `$PATH` often lacks).
pub fn find_peer_binary(name: &str) -> Option<PathBuf> {
    let sbin = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(|d| Path::new(d).join(name));
    which(name).or_else(|| sbin.into_iter().find(|p| p.is_file()))
}

fn version(kind: Kind, bin: &Path) -> String {
    let out = Command::new(bin)
        .arg(if kind == Kind::Nginx { "-v" } else { "-V" })
        .output();
    let text = out
        .map(|o| [o.stderr, o.stdout].concat())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    text.lines().next().unwrap_or("").trim().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_status::classify;

    fn config(v: &Variant, dir: &str) -> String {
        v.fill(
            v.kind.template().0,
            Path::new(dir),
            1,
            2,
            Duration::from_secs(2),
        )
    }

    #[test]
    fn durations_render_for_nginx_and_vcl() {
        assert_eq!(conf_duration(Duration::from_secs(2)), "2s");
        assert_eq!(conf_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(conf_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn configs_have_the_row_settings() {
        let [lock, stale, no_grace, grace] = VARIANTS.map(|v| config(&v, "/d"));
        for want in [
            "listen 127.0.0.1:1;",
            "server 127.0.0.1:2;",
            "proxy_cache_valid 200 2s;",
            "proxy_cache_lock on;",
        ] {
            assert!(lock.contains(want) && stale.contains(want), "{want}");
        }
        assert!(
            lock.contains("# proxy_cache_use_stale")
                && lock.contains("# proxy_cache_background_update")
        );
        assert!(stale.contains("\n            proxy_cache_use_stale updating error timeout;"));
        assert!(stale.contains("\n            proxy_cache_background_update on;"));
        assert!(no_grace.contains(".port = \"2\";") && no_grace.contains("set beresp.ttl = 2s;"));
        assert!(
            no_grace.contains("set beresp.grace = 0s;") && grace.contains("set beresp.grace = 5s;")
        );
        for (text, k) in [&lock, &no_grace]
            .iter()
            .flat_map(|t| ["{dir}", "{port}", "{ttl}", "{stale}", "{grace}"].map(|k| (t, k)))
        {
            assert!(!text.contains(k), "{k} left");
        }
    }

    /// What the report shows names no directory of the machine that ran it.
    #[test]
    fn shown_config_has_no_machine_paths() {
        let tmp = std::env::temp_dir().display().to_string();
        for v in VARIANTS {
            let shown = config(&v, "<tmp>/peers-x-1");
            assert!(
                !shown.contains(&tmp)
                    && (shown.contains("<tmp>/peers-x-1") || v.kind == Kind::Varnish)
            );
        }
    }

    /// The headers the configs send classify as the bench expects.
    #[test]
    fn peer_cache_status_values_classify() {
        let all = VARIANTS.map(|v| config(&v, "/d")).concat();
        for (value, hit, stale) in [
            ("nginx; hit", true, false),
            ("nginx; hit; ttl=-1", true, true),
            ("nginx; fwd=stale", false, false),
            ("nginx; fwd=miss", false, false),
            ("varnish; hit", true, false),
            ("varnish; hit; ttl=-1", true, true),
            ("varnish; fwd=miss", false, false),
        ] {
            let c = classify(Some(value));
            assert_eq!((c.hit, c.stale, c.miss), (hit, stale, !hit), "{value}");
            assert!(
                all.contains(&format!("\"{value}\"")),
                "{value} is not in the configs"
            );
        }
    }
}
