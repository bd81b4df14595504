//! Command-line configuration: every flag, its default and its environment
//! variable (`STAMPEDE_*`). The README lists them.

pub use crate::proxy::ForwardedPolicy;
use crate::proxy::Origin;
use clap::Parser;
use stampede_layer::Mitigations;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A header name, as `--key-header` and `--credential-header` take it.
fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("not a header name: {s:?}"))
}

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

fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than 0".into()),
        d => Ok(d),
    }
}

fn connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(_) => Err("must be between 1 and 1000000".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Bounds of `--max-header-bytes` (hyper's read buffer is ~400 KiB).
const HEADER_BYTES: std::ops::RangeInclusive<usize> = 1024..=256 * 1024;

fn header_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if HEADER_BYTES.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "must be between {} and {}",
            HEADER_BYTES.start(),
            HEADER_BYTES.end()
        ))
    }
}

fn via_name(s: &str) -> Result<String, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:".contains(c);
    if !s.is_empty() && s.chars().all(token) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a host name or pseudonym (letters, digits, -._:)"
        ))
    }
}

/// Why a Redis URL is refused, if it is: not a `redis://` / `rediss://` URL
/// (or their `-cluster` forms). `rediss://` is TLS (rustls; the built-in
/// roots plus `--redis-ca`), never plaintext: a TLS failure is a connection
/// failure, with no fallback. No message repeats the URL.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if ["redis", "redis-cluster", "rediss", "rediss-cluster"].contains(&scheme) {
        Ok(())
    } else {
        Err("not a redis:// or rediss:// URL (or redis-cluster://host:port?node=host:port for a cluster)".into())
    }
}

/// Whether a Redis URL asks for TLS (`rediss://`, `rediss-cluster://`).
pub fn redis_url_uses_tls(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(s, _)| s.starts_with("rediss") || s.starts_with("valkeys"))
}

fn streams(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        Ok(_) => Err("must be between 1 and 10000".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `url` with its password (and any `…password=` query value) replaced by
/// `***`, for logs and error messages: `redis://:***@host:6379`. A user
/// name alone before `@` is redacted too (some clients read it as the password).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#` after the last `@`: a
    // password is often not percent-encoded.
    let host_from = rest.rfind('@').map_or(0, |at| at + 1);
    let end = rest[host_from..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| host_from + i);
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `--redis`: a custom parser so that a refusal never echoes the URL (clap's
/// own message would print the password).
#[derive(Clone, Debug)]
struct RedisUrl;

impl clap::builder::TypedValueParser for RedisUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let url = value.to_string_lossy();
        match check_redis_url(&url) {
            Ok(()) => Ok(url.into_owned()),
            Err(why) => Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value '{}' for '--redis <REDIS>': {why}\n",
                    redact_url(&url)
                ),
            )
            .with_cmd(cmd)),
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

/// The host name, or `gateway` when it cannot be read.
pub fn default_instance() -> String {
    whoami::fallible::hostname()
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

/// The gateway's configuration. Every flag can also be set by an environment
/// variable: `STAMPEDE_` and the flag's name in capitals with `_` for `-`
/// (`--lock-ttl` → `STAMPEDE_LOCK_TTL`); a flag on the command line wins.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway",
    version,
    about = "Reverse proxy that stacks the stampede-layer mitigations in front of an HTTP origin"
)]
pub struct Config {
    /// Address for proxied traffic.
    #[arg(long, env = "STAMPEDE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for /metrics, /healthz, /readyz and the admin API.
    #[arg(long, env = "STAMPEDE_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,
    /// The origin to proxy to (http://host:port or https://host:port).
    #[arg(long, env = "STAMPEDE_ORIGIN", default_value = "http://127.0.0.1:8081")]
    pub origin: Origin,
    /// https:// origins: also trust the CA certificates in this PEM file
    /// (a private CA), besides the roots built into the binary.
    #[arg(long, env = "STAMPEDE_ORIGIN_CA")]
    pub origin_ca: Option<PathBuf>,
    /// Redis URL: store and lock live in Redis (shared by a fleet). Without it the
    /// store is in-process and the lock reaches this process only. A cluster:
    /// redis-cluster://host:port?node=host:port&node=host:port. rediss:// (and
    /// rediss-cluster://) connect over TLS, never in plaintext.
    #[arg(long, env = "STAMPEDE_REDIS", hide_env_values = true, value_parser = RedisUrl)]
    pub redis: Option<String>,
    /// rediss://: also trust the CA certificates in this PEM file (a private
    /// CA), besides the roots built into the binary.
    #[arg(long, env = "STAMPEDE_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// Proxy listener: serve TLS with this certificate chain (PEM, leaf
    /// first; needs --tls-key). HTTP/2 or HTTP/1.1 by ALPN. Reloaded on
    /// SIGHUP and when the file changes; a bad new one is logged and the
    /// current one kept.
    #[arg(long, env = "STAMPEDE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STAMPEDE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often --tls-cert and --tls-key are checked for changes.
    #[arg(long, env = "STAMPEDE_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub tls_reload_interval: Duration,
    /// Fresh TTL when the origin sends no max-age.
    #[arg(long, env = "STAMPEDE_TTL", default_value = "5s", value_parser = duration)]
    pub ttl: Duration,
    /// Stale-while-revalidate window after the TTL.
    #[arg(long, env = "STAMPEDE_STALE_TTL", default_value = "5s", value_parser = duration)]
    pub stale_ttl: Duration,
    /// Stale-if-error window after the TTL (at least the stale TTL).
    #[arg(long, env = "STAMPEDE_STALE_IF_ERROR", default_value = "60s", value_parser = duration)]
    pub stale_if_error: Duration,
    /// Keep entries this long past their freshness (and stale windows), so a
    /// stale entry can still be revalidated with If-None-Match /
    /// If-Modified-Since (a 304 saves the body transfer).
    #[arg(long, env = "STAMPEDE_RETAIN_STALE", default_value = "5m", value_parser = duration)]
    pub retain_stale: Duration,
    /// Heuristic freshness for responses without explicit freshness: 10 % of
    /// the time since Last-Modified, at most a day (RFC 9111 §4.2.2).
    #[arg(long, env = "STAMPEDE_HEURISTIC_FRESHNESS")]
    pub heuristic_freshness: bool,
    /// Strict HTTP caching: no operator override of the origin's freshness
    /// (--ttl, --stale-ttl, --stale-if-error and --negative-ttl all 0s, TTL
    /// jitter off). What the HTTP cache conformance suite is run with.
    #[arg(long, env = "STAMPEDE_HTTP_STRICT")]
    pub http_strict: bool,
    /// TTL of cached 404/410 answers (negative caching).
    #[arg(long, env = "STAMPEDE_NEGATIVE_TTL", default_value = "5s", value_parser = duration)]
    pub negative_ttl: Duration,
    /// TTL jitter: each TTL is scaled by a random factor in [1-j, 1+j].
    #[arg(long, env = "STAMPEDE_JITTER", default_value = "0.2", value_parser = fraction)]
    pub jitter: f64,
    /// Lifetime of a rebuild lock (must exceed a normal rebuild).
    #[arg(long, env = "STAMPEDE_LOCK_TTL", default_value = "2s", value_parser = duration)]
    pub lock_ttl: Duration,
    /// Do not renew the rebuild lock while a rebuild runs (renewal is on by
    /// default: every third of --lock-ttl, so an origin slower than the lock
    /// still gets one rebuild fleet-wide). For the comparison rung.
    #[arg(long, env = "STAMPEDE_NO_LOCK_RENEWAL")]
    pub no_lock_renewal: bool,
    /// Longest a rebuild may take, response headers and the body the cache
    /// buffers (then 504, or the stale copy within --stale-if-error).
    #[arg(long, env = "STAMPEDE_FILL_DEADLINE", default_value = "30s", value_parser = positive_duration)]
    pub fill_deadline: Duration,
    /// Longest a lock loser waits for the fill (default: the lock TTL).
    #[arg(long, env = "STAMPEDE_LOCK_WAIT", value_parser = duration)]
    pub lock_wait: Option<Duration>,
    /// XFetch beta (> 1 refreshes earlier, < 1 later; 0 disables).
    #[arg(long, env = "STAMPEDE_XFETCH_BETA", default_value = "1.0", value_parser = beta)]
    pub xfetch_beta: f64,
    /// none, all, or a comma list of single-flight,lock,swr,xfetch,jitter,negative,overload-gate.
    #[arg(long, env = "STAMPEDE_MITIGATIONS", default_value = "all")]
    pub mitigations: Mitigations,
    /// Instance name (metrics label `gateway`, logs); default: the host name,
    /// so replicas never share a label.
    #[arg(long, env = "STAMPEDE_INSTANCE", default_value_t = default_instance())]
    pub instance: String,
    /// Origin answer timeout (then 504).
    #[arg(long, env = "STAMPEDE_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// Largest body stored (16 MiB by default). Every body streams to the
    /// requests that wait on its rebuild as it arrives; a larger one is not
    /// stored and its key goes to the origin uncoordinated for a while
    /// (hit-for-miss). `--max-body-bytes` is the old name.
    #[arg(
        long,
        alias = "max-body-bytes",
        env = "STAMPEDE_MAX_OBJECT_SIZE",
        default_value_t = stampede_layer::CacheConfig::DEFAULT_MAX_OBJECT_SIZE
    )]
    pub max_object_size: usize,
    /// Overload gate: most requests at the origin at once (set it from what the
    /// origin can serve; the default sheds nothing a normal burst of distinct
    /// misses needs).
    #[arg(long, env = "STAMPEDE_GATE_MAX_INFLIGHT", default_value_t = 256)]
    pub gate_max_inflight: usize,
    /// Overload gate: longest wait for an origin slot before a 503.
    #[arg(long, env = "STAMPEDE_GATE_QUEUE_WAIT", default_value = "0ms", value_parser = duration)]
    pub gate_queue_wait: Duration,
    /// In-process store bound: entries.
    #[arg(long, env = "STAMPEDE_MEMORY_MAX_ENTRIES", default_value_t = 100_000)]
    pub memory_max_entries: u64,
    /// In-process store bound: bytes.
    #[arg(long, env = "STAMPEDE_MEMORY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub memory_max_bytes: u64,
    /// With --redis, while Redis fails (the in-process fallback serves): the
    /// longest an entry written meanwhile is served fresh or stale. No purge
    /// reaches it during the outage, so this bounds how long this gateway can
    /// serve a version older than one the fleet already has.
    #[arg(long, env = "STAMPEDE_DEGRADED_TTL", default_value = "1s", value_parser = duration)]
    pub degraded_ttl: Duration,
    /// With --redis: near cache in process memory in front of Redis. A fresh
    /// entry read from Redis is served from memory for up to this long (never
    /// past its freshness), so hot-key hits skip the Redis round trip; purges
    /// and invalidations reach every gateway at once over Redis pub/sub.
    /// 0s: off (every lookup asks Redis).
    #[arg(long, env = "STAMPEDE_NEAR_CACHE_TTL", default_value = "1s", value_parser = duration)]
    pub near_cache_ttl: Duration,
    /// Near cache bound: bytes.
    #[arg(long, env = "STAMPEDE_NEAR_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub near_cache_max_bytes: u64,
    /// Near cache bound: entries.
    #[arg(
        long,
        env = "STAMPEDE_NEAR_CACHE_MAX_ENTRIES",
        default_value_t = 10_000
    )]
    pub near_cache_max_entries: u64,
    /// Cache answers to requests with Authorization or Cookie (off: they bypass).
    #[arg(long, env = "STAMPEDE_CACHE_CREDENTIALED")]
    pub cache_credentialed: bool,
    /// A request header that carries a credential besides Authorization and
    /// Cookie (`X-Api-Key`): requests carrying it bypass the cache as those
    /// do. Repeat, or comma-separate, for several.
    #[arg(
        long = "credential-header",
        env = "STAMPEDE_CREDENTIAL_HEADERS",
        value_delimiter = ',',
        value_parser = header_name
    )]
    pub credential_headers: Vec<http::HeaderName>,
    /// A request header whose value scopes the cache key (a tenant header):
    /// requests with different values never share an entry. Repeat, or
    /// comma-separate, for several. Purges then act on the unscoped key only.
    #[arg(
        long = "key-header",
        env = "STAMPEDE_KEY_HEADERS",
        value_delimiter = ',',
        value_parser = header_name
    )]
    pub key_headers: Vec<http::HeaderName>,
    /// Forward the client's `Host` to the origin (instead of the origin's
    /// own) and scope the cache key by it: one gateway in front of an origin
    /// that serves several sites. Off by default: a client-chosen `Host`
    /// could otherwise change what a key stands for.
    #[arg(long, env = "STAMPEDE_PRESERVE_HOST")]
    pub preserve_host: bool,
    /// How long a key whose answer could not be shared (private, Set-Cookie,
    /// no-store, Vary: *, …) goes straight to the origin, uncoordinated
    /// (hit-for-miss; Varnish's default is 120 s; 0s: never mark).
    #[arg(long, env = "STAMPEDE_HIT_FOR_MISS_TTL", default_value = "120s", value_parser = duration)]
    pub hit_for_miss_ttl: Duration,
    /// Log one event per proxied request at info level (target
    /// `gateway::access`): request id, client address, method, path without
    /// the query string, status, body bytes, duration, cache outcome,
    /// Cache-Status.
    #[arg(long, env = "STAMPEDE_ACCESS_LOG")]
    pub access_log: bool,
    /// Log format on stderr: `text` (one human-readable line per event) or
    /// `json` (one JSON object per line, the event's fields at the top level).
    #[arg(long, env = "STAMPEDE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The herd window of `stampede_rebuilds_per_key_window`: origin rebuilds
    /// of one key that start within this long of its first are counted as
    /// one window (a herd: many; a coordinated key: one). Keep it below half
    /// the shortest TTL served: XFetch may refresh a key from half its
    /// lifetime on, and that refresh should open a window of its own.
    #[arg(long, env = "STAMPEDE_HERD_WINDOW", default_value = "1s", value_parser = positive_duration)]
    pub herd_window: Duration,
    /// With --redis: /readyz answers 503 while Redis cannot be reached. By
    /// default the gateway stays ready on its in-process fallback store and
    /// /readyz says `ready (degraded …)`, so a Redis outage does not take the
    /// whole fleet out of its load balancer.
    #[arg(long, env = "STAMPEDE_READYZ_REQUIRES_REDIS")]
    pub readyz_requires_redis: bool,
    /// Bearer token for the admin API (purge, warm, hot keys); unset: admin API off.
    #[arg(long, env = "STAMPEDE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// On SIGTERM: how long the gateway keeps serving after /readyz turns 503
    /// (`draining`), so load balancers stop sending it traffic before its
    /// listeners close. SIGINT (Ctrl-C) skips it.
    #[arg(long, env = "STAMPEDE_SHUTDOWN_DELAY", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// Once the listeners closed: how long requests in flight may take to
    /// finish; then the gateway exits anyway (their connections are cut).
    #[arg(long, env = "STAMPEDE_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// File of paths (one per line, `#` comments) to warm before /readyz says ready.
    #[arg(long, env = "STAMPEDE_WARM_LIST")]
    pub warm_list: Option<PathBuf>,
    /// Both listeners: longest a client may take to send a request's line and
    /// headers, counted from the connection's accept or, on a kept-alive
    /// connection, from the request's first byte; then the connection is closed.
    #[arg(long, env = "STAMPEDE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
    /// Both listeners: longest a kept-alive connection may wait, idle, for its
    /// next request; then it is closed.
    #[arg(long, env = "STAMPEDE_IDLE_TIMEOUT", default_value = "75s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Proxy listener: most client connections open at once. One more is
    /// answered `503` (`Connection: close`) and closed at once, not queued.
    #[arg(long, env = "STAMPEDE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = connections)]
    pub max_connections: usize,
    /// Admin listener: most connections open at once (as --max-connections).
    #[arg(long, env = "STAMPEDE_ADMIN_MAX_CONNECTIONS", default_value_t = 64, value_parser = connections)]
    pub admin_max_connections: usize,
    /// Both listeners: largest request line plus headers, in bytes; a larger
    /// request is answered `431` and its connection closed (HTTP/2: the
    /// largest header list, `431` on its stream).
    #[arg(long, env = "STAMPEDE_MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = header_bytes)]
    pub max_header_bytes: usize,
    /// Both listeners, HTTP/2: most streams (requests) open at once on one
    /// connection; more are refused (REFUSED_STREAM).
    #[arg(long, env = "STAMPEDE_MAX_CONCURRENT_STREAMS", default_value_t = 128, value_parser = streams)]
    pub max_concurrent_streams: u32,
    /// Both listeners, plain HTTP/1.1: answer ordinary `GET`s (no body, no
    /// `Connection`, one at a time) in the gateway's own lean HTTP/1.1 lane,
    /// and hand a connection to hyper at its first other request; `false`:
    /// hyper serves every request (the lane is the hit path's speed, issue 22).
    #[arg(long, env = "STAMPEDE_HTTP1_LANE", default_value_t = true, action = clap::ArgAction::Set)]
    pub http1_lane: bool,
    /// Client-supplied X-Forwarded-For / Forwarded: `replace` them with the
    /// connecting peer's address, or `append` the peer to them (behind a
    /// trusted load balancer).
    #[arg(long, env = "STAMPEDE_FORWARDED_HEADERS", value_enum, default_value_t = ForwardedPolicy::Replace)]
    pub forwarded_headers: ForwardedPolicy,
    /// Name this proxy gives itself in the `Via` header it adds to requests
    /// and responses (a pseudonym, so no host name leaks to clients).
    #[arg(long, env = "STAMPEDE_VIA", default_value = "stampede", value_parser = via_name)]
    pub via: String,
}

impl Default for Config {
    /// The command line's defaults, whatever the environment says.
    fn default() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Config::command().mut_args(|a| a.env(None));
        let matches = cmd.get_matches_from(["gateway"]);
        Config::from_arg_matches(&matches).expect("the defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_an_env_var_and_secrets_are_hidden() {
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let mut want = format!("STAMPEDE_{}", long.to_uppercase().replace('-', "_"));
            // A repeatable flag's variable holds the comma-separated list:
            // its name is the plural (`--key-header`: STAMPEDE_KEY_HEADERS).
            if arg.get_value_delimiter().is_some() && !want.ends_with('S') {
                want.push('S');
            }
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
            if ["admin-token", "redis"].contains(&long) {
                assert!(arg.is_hide_env_values_set(), "--{long} is a secret");
            }
        }
    }

    #[test]
    fn redis_urls_are_redacted_and_checked() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://user:p@ss:w@h", "redis://user:***@h"),
            ("redis://pw@h", "redis://***@h"),
            ("redis://:pa/ss?#@h:1/2", "redis://:***@h:1/2"),
            (
                "redis-cluster://:pw@h:1?node=h:2&sentinelPassword=pw",
                "redis-cluster://:***@h:1?node=h:2&sentinelPassword=***",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want);
        }
        for good in [
            "redis://h",
            "redis-cluster://h:1?node=h:2",
            "rediss://h",
            "rediss-cluster://h:1?node=h:2",
        ] {
            assert!(check_redis_url(good).is_ok(), "{good}");
        }
        assert!(redis_url_uses_tls("rediss://:pw@h:6380"));
        assert!(redis_url_uses_tls("rediss-cluster://h:1"));
        assert!(!redis_url_uses_tls("redis://h"));
        for bad in ["valkeys://h", "h:6379", "http://h", "redis-sentinel://h"] {
            assert!(check_redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_is_the_command_line_default() {
        let d = Config::default();
        assert_eq!(d.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(d.instance, default_instance());
        assert!(!d.instance.is_empty());
        assert_eq!(d.near_cache_ttl, Duration::from_secs(1));
        let off = Config::try_parse_from(["gateway", "--near-cache-ttl", "0s"]).unwrap();
        assert!(off.near_cache_ttl.is_zero());
        assert!(d.tls_cert.is_none() && d.tls_key.is_none());
        assert_eq!(d.max_concurrent_streams, 128);
        // A certificate without its key (or the reverse) is a flag error.
        assert!(Config::try_parse_from(["gateway", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["gateway", "--tls-key", "k.pem"]).is_err());
    }
}
