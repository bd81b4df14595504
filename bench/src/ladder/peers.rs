//! The peers: nginx and Varnish as caching reverse proxies under the
//! measurement protocol — nginx `proxy_cache` with `proxy_cache_lock` alone
//! and with `proxy_cache_use_stale updating` + `proxy_cache_background_update`,
//! Varnish without grace (its waiting list coalesces misses) and with grace —
//! nginx with one worker (on one core) for the hit-path comparison, and for the
//! real-traffic rung nginx with `proxy_cache_use_stale updating error
//! http_503` and Varnish's default VCL (the origin's `Cache-Control` sets the
//! TTL) with 10 s of grace.
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
use crate::procs::{ChildProc, pinned, which};

/// Varnish's grace in the "grace" rows (the gateway's `--stale-ttl` default).
pub const VARNISH_GRACE: Duration = Duration::from_secs(5);
/// Varnish's grace in the real-traffic rung (its own `default_grace`).
pub const VARNISH_REAL_GRACE: Duration = Duration::from_secs(10);
/// nginx `proxy_cache_use_stale` of the stale rows.
pub const NGINX_USE_STALE: &str = "updating error timeout";
/// nginx `proxy_cache_use_stale` of the real-traffic rung: also a stale
/// entry instead of an origin 503.
pub const NGINX_REAL_USE_STALE: &str = "updating error http_503";
/// nginx `proxy_cache_lock_timeout` and `proxy_cache_lock_age`: the same bound
/// as the gateway's default `--lock-ttl`. A waiter gives up after it and goes
/// to the origin itself (uncached); a lock older than it lets one more
/// request through.
pub const NGINX_LOCK_BOUND: Duration = Duration::from_secs(2);

/// A peer: its binary and Debian package, its config template with the
/// template's file name in an instance's directory, and its arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    pub binary: &'static str,
    pub package: &'static str,
    pub template: &'static str,
    pub file: &'static str,
    pub args: &'static str,
}

pub const NGINX: Kind = Kind {
    binary: "nginx",
    package: "nginx",
    template: include_str!("../../peers/nginx.conf"),
    file: "nginx.conf",
    args: "-e {dir}/error.log -c {dir}/nginx.conf -p {dir}/ -g 'daemon off;'",
};

/// `-j none`: no privilege separation (a bench on loopback; works as root
/// and as a user); `-T none`: no admin CLI.
pub const VARNISH: Kind = Kind {
    binary: "varnishd",
    package: "varnish",
    template: include_str!("../../peers/varnish.vcl"),
    file: "default.vcl",
    args: "-F -j none -a 127.0.0.1:{port} -T none -f {dir}/default.vcl -n {dir}/varnish -s malloc,64m",
};

/// Varnish with the default VCL's caching (the origin's `Cache-Control`
/// sets the TTL), grace set, for the real-traffic rung.
pub const VARNISH_DEFAULT_VCL: Kind = Kind {
    template: include_str!("../../peers/varnish-real.vcl"),
    ..VARNISH
};

/// One peer configuration: `stale` is nginx's `proxy_cache_use_stale
/// {use_stale}` + background update, Varnish's `grace`; `workers` nginx's
/// `worker_processes`; `key` the run id part and config file stem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub kind: &'static Kind,
    pub key: &'static str,
    pub stale: bool,
    pub workers: &'static str,
    pub use_stale: &'static str,
    pub grace: Duration,
}

const fn variant(kind: &'static Kind, key: &'static str, stale: bool) -> Variant {
    Variant {
        kind,
        key,
        stale,
        workers: "auto",
        use_stale: NGINX_USE_STALE,
        grace: VARNISH_GRACE,
    }
}

/// The configurations of the peers rung, in table order.
pub const VARIANTS: [Variant; 4] = [
    variant(&NGINX, "nginx-lock", false),
    variant(&NGINX, "nginx-stale", true),
    variant(&VARNISH, "varnish-no-grace", false),
    variant(&VARNISH, "varnish-grace", true),
];

/// nginx for the hit-path comparison: one worker (the rung gives the server
/// one core, see [`HIT_PINNING`](super::table::HIT_PINNING)), `proxy_cache_lock`.
pub const NGINX_HIT: Variant = Variant {
    workers: "1",
    ..variant(&NGINX, "nginx-hit", false)
};

/// nginx for the real-traffic rung: `proxy_cache_lock`, `proxy_cache_use_stale
/// updating error http_503`, `proxy_cache_background_update on`.
pub const NGINX_REAL: Variant = Variant {
    use_stale: NGINX_REAL_USE_STALE,
    ..variant(&NGINX, "nginx-real", true)
};

/// Varnish for the real-traffic rung: the default VCL's caching, 10 s grace.
pub const VARNISH_REAL: Variant = Variant {
    grace: VARNISH_REAL_GRACE,
    ..variant(&VARNISH_DEFAULT_VCL, "varnish-real", true)
};

impl Variant {
    /// Row label.
    pub fn label(&self) -> String {
        let grace = conf_duration(self.grace);
        match (self.is_nginx(), self.stale) {
            (true, false) => "nginx (lock only)".into(),
            (true, true) if self.use_stale == NGINX_USE_STALE => {
                "nginx (lock + stale updating + background update)".into()
            }
            (true, true) => format!(
                "nginx (lock + use_stale {} + background update)",
                self.use_stale
            ),
            (false, false) => "Varnish (no grace)".into(),
            (false, true) if self.kind == &VARNISH_DEFAULT_VCL => {
                format!("Varnish (default VCL, grace {grace})")
            }
            (false, true) => format!("Varnish (grace {grace})"),
        }
    }

    /// nginx (else Varnish).
    pub fn is_nginx(&self) -> bool {
        self.kind.binary == NGINX.binary
    }

    fn grace(&self) -> Duration {
        if self.stale {
            self.grace
        } else {
            Duration::ZERO
        }
    }

    /// Its config file's name under the output directory.
    pub fn file_name(&self) -> String {
        let ext = if self.is_nginx() { "conf" } else { "vcl" };
        format!("{}.{ext}", self.key)
    }

    /// `template` filled for an instance in `dir` on `port` in front of
    /// `origin_port`, caching for `ttl`.
    pub fn fill(
        &self,
        template: &str,
        dir: &Path,
        (port, origin_port): (u16, u16),
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
            ("use_stale", self.use_stale.into()),
            ("workers", self.workers.into()),
        ];
        let fill = |t: String, (k, v): &(&str, String)| t.replace(&format!("{{{k}}}"), v);
        values.iter().fold(template.into(), fill)
    }

    /// Start one instance in `work/name` (pinned to CPU `cpu`, if given):
    /// the process (stopped with SIGTERM first, so it takes its workers
    /// down), and its config as the report shows it (`<tmp>` for `work`).
    pub fn spawn(
        &self,
        bin: &Path,
        work: &Path,
        name: &str,
        ports: (u16, u16),
        ttl: Duration,
        cpu: Option<usize>,
    ) -> anyhow::Result<(ChildProc, PeerConfig)> {
        let Kind {
            template,
            file,
            args,
            ..
        } = self.kind;
        let (dir, shown_dir) = (work.join(name), Path::new("<tmp>").join(name));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join(file), self.fill(template, &dir, ports, ttl))?;
        let argv = shlex::split(&self.fill(args, &dir, ports, ttl)).context("peer arguments")?;
        let log = work.join(format!("{name}.log"));
        let (program, argv) = pinned(cpu, bin, &argv);
        let proc_ =
            ChildProc::spawn(name, &program, &argv, &log)?.terminate_first(Duration::from_secs(5));
        let config = PeerConfig {
            version: version(bin),
            file: format!("peers/{}", self.file_name()),
            command: format!(
                "{} {}",
                self.kind.binary,
                self.fill(args, &shown_dir, ports, ttl)
            ),
            text: self.fill(template, &shown_dir, ports, ttl),
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

fn version(bin: &Path) -> String {
    // nginx -v and varnishd -V print to stderr.
    let out = Command::new(bin)
        .arg(if bin.ends_with("nginx") { "-v" } else { "-V" })
        .output();
    let text = out
        .map(|o| [o.stderr, o.stdout].concat())
        .unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `2s`, `500ms`: a duration both nginx and VCL accept.
pub fn conf_duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}
