//! Command-line configuration (the interface contract in DESIGN.md).

use crate::proxy::Origin;
use clap::Parser;
use stampede_layer::Mitigations;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 500ms, 5s, 1m)"))
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside [0, 1)"))
    }
}

fn beta(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be a finite number ≥ 0"))
    }
}

fn redis_url(s: &str) -> Result<String, String> {
    if ["redis://", "rediss://", "redis-cluster://"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a redis:// URL (or redis-cluster://host:port?node=host:port for a cluster)"
        ))
    }
}

/// The gateway's configuration.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway",
    version,
    about = "Reverse proxy that stacks the stampede-layer mitigations in front of an HTTP origin"
)]
pub struct Config {
    /// Address for proxied traffic.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for /metrics, /healthz, /readyz and the admin API.
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,
    /// The origin to proxy to (http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub origin: Origin,
    /// Redis URL: store and lock live in Redis (shared by a fleet). Without it the
    /// store is in-process and the lock reaches this process only. A cluster:
    /// redis-cluster://host:port?node=host:port&node=host:port.
    #[arg(long, value_parser = redis_url)]
    pub redis: Option<String>,
    /// Fresh TTL when the origin sends no max-age.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub ttl: Duration,
    /// Stale-while-revalidate window after the TTL.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub stale_ttl: Duration,
    /// Stale-if-error window after the TTL (at least the stale TTL).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub stale_if_error: Duration,
    /// TTL of cached 404/410 answers (negative caching).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub negative_ttl: Duration,
    /// TTL jitter: each TTL is scaled by a random factor in [1-j, 1+j].
    #[arg(long, default_value = "0.2", value_parser = fraction)]
    pub jitter: f64,
    /// Lifetime of a rebuild lock (must exceed a normal rebuild).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub lock_ttl: Duration,
    /// Longest a lock loser waits for the fill (default: the lock TTL).
    #[arg(long, value_parser = duration)]
    pub lock_wait: Option<Duration>,
    /// XFetch beta (> 1 refreshes earlier, < 1 later; 0 disables).
    #[arg(long, default_value = "1.0", value_parser = beta)]
    pub xfetch_beta: f64,
    /// none, all, or a comma list of single-flight,lock,swr,xfetch,jitter,negative,overload-gate.
    #[arg(long, default_value = "all")]
    pub mitigations: Mitigations,
    /// Instance name (metrics label `gateway`, logs).
    #[arg(long, default_value = "gateway")]
    pub instance: String,
    /// Origin answer timeout (then 504).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// Largest body cached or shared; larger ones stream through uncached.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Overload gate: most requests at the origin at once.
    #[arg(long, default_value_t = 64)]
    pub gate_max_inflight: usize,
    /// Overload gate: longest wait for an origin slot before a 503.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub gate_queue_wait: Duration,
    /// In-process store bound: entries.
    #[arg(long, default_value_t = 100_000)]
    pub memory_max_entries: u64,
    /// In-process store bound: bytes.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub memory_max_bytes: u64,
    /// Cache answers to requests with Authorization or Cookie (off: they bypass).
    #[arg(long)]
    pub cache_credentialed: bool,
    /// How long a key whose answer could not be shared (private, Set-Cookie,
    /// no-store, Vary: *, …) goes straight to the origin, uncoordinated
    /// (hit-for-miss; Varnish's default is 120 s; 0s: never mark).
    #[arg(long, default_value = "120s", value_parser = duration)]
    pub hit_for_miss_ttl: Duration,
    /// Bearer token for the admin API (purge, warm, hot keys); unset: admin API off.
    #[arg(long, env = "STAMPEDE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File of paths (one per line, `#` comments) to warm before /readyz says ready.
    #[arg(long)]
    pub warm_list: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["gateway"])
    }
}
