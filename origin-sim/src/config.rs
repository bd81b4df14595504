//! Command-line / library configuration.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use axum::http::HeaderValue;
use clap::Parser;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default database URL (mapped to a temporary file shared by the pool).
pub const DEFAULT_DATABASE: &str = "sqlite::memory:";
/// Default number of seeded items.
pub const DEFAULT_ITEMS: u32 = 1000;
/// Default time a query holds its pool connection, in milliseconds.
pub const DEFAULT_LATENCY_MS: u64 = 200;
/// Default pool size.
pub const DEFAULT_DB_CONNECTIONS: u32 = 16;
/// Default capacity of the `/stats/queries` ring buffer.
pub const DEFAULT_STATS_CAPACITY: usize = 1_000_000;
/// Upper bound accepted for `latency_ms` (one hour), on the CLI and at run time.
pub const MAX_LATENCY_MS: u64 = 3_600_000;

/// The routes, for `--help`.
const ROUTES_HELP: &str = "\
Routes:
  GET /items/{id}            item JSON after a real SQL query holding a pool connection for --latency-ms (404 past --items)
  PUT /items/{id}            bump the item's version
  GET /stats/queries         every /items query (?since_ms=, ?id=); DELETE resets
  PUT /admin/config          {\"latency_ms\":..,\"error_rate\":..} at run time
  GET /metrics, /healthz
Scenario routes (real traffic for a cache; delays in ms, max_age in s sets Cache-Control: max-age; other
query parameters are ignored, to make distinct cache keys):
  GET /blob/{bytes}?first_byte_ms=&total_ms=&max_age=&chunk=65536
                             200, deterministic content (byte i from i alone), headers + first chunk at
                             first_byte_ms, chunks paced evenly until the last byte at total_ms
  GET /fail?delay_ms=        503 Cache-Control: no-store after the delay
  GET /slow?delay_ms=&max_age=&bytes=1024
                             200 after the delay, deterministic content
  GET /negotiated?delay_ms=&max_age=&bytes=65536
                             200 with Vary: Accept-Encoding: numbered text lines, gzip-encoded when the
                             request accepts gzip, identity otherwise
  GET /stats/requests        every scenario request (t_ms, route, path, status, duration_ms, bytes,
                             completed, accept_encoding, content_encoding; ?since_ms=, ?route=) and
                             in_flight; DELETE resets";

/// Configuration of the slow origin. Parsed from the command line by the
/// binary; library users (tests, the bench) build it with [`Config::default`]
/// and struct update syntax. Every flag can also be set by an environment
/// variable: `ORIGIN_SIM_` and the flag's name in capitals with `_` for `-`
/// (`--latency-ms` → `ORIGIN_SIM_LATENCY_MS`); a flag on the command line wins.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "origin-sim", version, about, after_help = ROUTES_HELP)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ORIGIN_SIM_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Database URL: `sqlite::memory:` (a temporary file shared by the whole
    /// pool), `sqlite:PATH`, or `postgres://…`.
    #[arg(long, env = "ORIGIN_SIM_DATABASE", hide_env_values = true, default_value = DEFAULT_DATABASE)]
    pub database: String,

    /// Number of items seeded (ids 1..=items answer 200, anything else 404).
    #[arg(long, env = "ORIGIN_SIM_ITEMS", default_value_t = DEFAULT_ITEMS)]
    pub items: u32,

    /// How long each `GET /items/{id}` holds its pool connection, in ms.
    #[arg(long, env = "ORIGIN_SIM_LATENCY_MS", default_value_t = DEFAULT_LATENCY_MS, value_parser = clap::value_parser!(u64).range(0..=MAX_LATENCY_MS))]
    pub latency_ms: u64,

    /// Maximum pool connections (concurrent queries before requests queue).
    #[arg(long, env = "ORIGIN_SIM_DB_CONNECTIONS", default_value_t = DEFAULT_DB_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_connections: u32,

    /// `Cache-Control` value sent on 200 and 404 item answers (none by default).
    #[arg(long, env = "ORIGIN_SIM_CACHE_CONTROL", value_parser = parse_cache_control)]
    pub cache_control: Option<String>,

    /// Fraction (0.0–1.0) of item queries that answer 500.
    #[arg(long, env = "ORIGIN_SIM_ERROR_RATE", default_value_t = 0.0, value_parser = parse_error_rate)]
    pub error_rate: f64,

    /// Give items validators: an `ETag` (from id and version) and a
    /// `Last-Modified`, and answer a matching `If-None-Match` /
    /// `If-Modified-Since` with `304 Not Modified` (no body; the query still
    /// runs and is counted).
    /// (`ORIGIN_SIM_VALIDATORS`: `0`, `false`, `no`, `off` or empty keep them off.)
    #[arg(long, env = "ORIGIN_SIM_VALIDATORS", value_parser = clap::builder::FalseyValueParser::new())]
    pub validators: bool,

    /// How many query records `/stats/queries` keeps (oldest dropped first).
    #[arg(long, env = "ORIGIN_SIM_STATS_CAPACITY", default_value_t = DEFAULT_STATS_CAPACITY, value_parser = parse_capacity)]
    pub stats_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            database: DEFAULT_DATABASE.to_owned(),
            items: DEFAULT_ITEMS,
            latency_ms: DEFAULT_LATENCY_MS,
            db_connections: DEFAULT_DB_CONNECTIONS,
            cache_control: None,
            error_rate: 0.0,
            validators: false,
            stats_capacity: DEFAULT_STATS_CAPACITY,
        }
    }
}

impl Config {
    /// Checks the values clap checks on the command line, for configurations
    /// built in code.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.latency_ms > MAX_LATENCY_MS {
            bail!(
                "latency_ms must be at most {MAX_LATENCY_MS}, got {}",
                self.latency_ms
            );
        }
        if self.db_connections == 0 {
            bail!("db_connections must be at least 1");
        }
        check_error_rate(self.error_rate)?;
        if self.stats_capacity == 0 {
            bail!("stats_capacity must be at least 1");
        }
        if let Some(cc) = &self.cache_control {
            HeaderValue::from_str(cc).context("cache_control is not a valid header value")?;
        }
        Ok(())
    }
}

/// Accepts a finite rate in `[0.0, 1.0]`.
pub(crate) fn check_error_rate(rate: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&rate) {
        bail!("error_rate must be between 0.0 and 1.0, got {rate}");
    }
    Ok(())
}

fn parse_error_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    check_error_rate(rate).map_err(|e| e.to_string())?;
    Ok(rate)
}

fn parse_capacity(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_cache_control(s: &str) -> Result<String, String> {
    HeaderValue::from_str(s).map_err(|_| "not a valid HTTP header value".to_owned())?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_an_env_var_and_the_database_url_is_hidden() {
        use clap::CommandFactory;
        for arg in Config::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let want = format!("ORIGIN_SIM_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
        }
        let db = Config::command()
            .get_arguments()
            .find(|a| a.get_long() == Some("database"))
            .map(|a| a.is_hide_env_values_set());
        assert_eq!(db, Some(true), "a postgres:// URL carries a password");
    }

    #[test]
    fn cli_defaults_match_default_impl() {
        assert_eq!(
            Config::try_parse_from(["origin-sim"]).unwrap(),
            Config::default()
        );
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["origin-sim", "--error-rate", "1.5"][..],
            &["origin-sim", "--error-rate", "NaN"],
            &["origin-sim", "--db-connections", "0"],
            &["origin-sim", "--latency-ms", "-1"],
            &["origin-sim", "--stats-capacity", "0"],
            &["origin-sim", "--listen", "nowhere"],
            &["origin-sim", "--cache-control", "a\nb"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?} accepted");
        }
        let c = Config::try_parse_from([
            "origin-sim",
            "--cache-control",
            "public, max-age=5",
            "--error-rate",
            "0.25",
            "--validators",
        ])
        .unwrap();
        assert_eq!(c.cache_control.as_deref(), Some("public, max-age=5"));
        assert_eq!(c.error_rate, 0.25);
        assert!(c.validators);
    }
}
