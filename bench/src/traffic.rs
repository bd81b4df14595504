//! Real-traffic clients: concurrent clients that each hold their own
//! keep-alive connection, send one request at once (a burst) or loop for a
//! while, time each answer's first body byte and its last, and check every
//! body against the content origin-sim's scenario routes generate
//! (`origin_sim::scenario`: a function of the offset, so every byte is
//! checked, not only the length). Clients can come in populations with
//! different `Accept-Encoding` headers; a gzip answer is decoded (real gzip,
//! flate2) before it is compared, and gzip sent to a client that did not
//! accept it is an error of its own.
//!
//! The ladder's `real-traffic` rung drives these against nginx, Varnish and
//! the gateway (see `ladder::table`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::cache_status::classify;
use crate::load::{now_ms, parse_base_url};
use crate::procs::Http;
use crate::stats::{CacheCounts, round};

/// The size of origin-sim's `/slow` body when not given (`bytes=`).
pub const SLOW_BYTES: u64 = 1024;

/// SplitMix64, as origin-sim's blob content (`origin_sim::scenario::blob`).
fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first `len` bytes origin-sim's `/blob` and `/slow` send: byte `i` is
/// byte `i % 8` of SplitMix64(`i / 8`), little-endian.
pub fn blob(len: u64) -> Vec<u8> {
    let words = (0..len.div_ceil(8)).flat_map(|i| word(i).to_le_bytes());
    words.take(len as usize).collect()
}

/// The first `len` bytes of origin-sim's `/negotiated` text (decoded).
pub fn text(len: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(len as usize + 64);
    let mut i = 0u64;
    while (out.len() as u64) < len {
        let _ = writeln!(out, "{i:08} the quick brown fox jumps over the lazy dog");
        i += 1;
    }
    out.truncate(len as usize);
    out
}

/// What every answer's body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// [`blob`] content of this length, identity-encoded.
    Blob(u64),
    /// [`text`] content of this length once decoded (gzip or identity).
    Text(u64),
    /// Not checked (an error answer).
    Any,
}

impl Expect {
    /// The decoded body expected, if one is.
    pub fn bytes(self) -> Option<Bytes> {
        match self {
            Expect::Blob(n) => Some(blob(n).into()),
            Expect::Text(n) => Some(text(n).into()),
            Expect::Any => None,
        }
    }
}

/// The clients and what they expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficConfig {
    /// Base URLs; client `i` sends to target `i % targets` (a fleet's load
    /// spread evenly, each client on its own gateway).
    pub targets: Vec<String>,
    /// Path and query of every request.
    pub path: String,
    pub clients: usize,
    /// `None`: one request per client, all released at once; `Some(d)`: each
    /// client loops (next request as soon as the last answer is read) until
    /// `d` has passed.
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// `Accept-Encoding` populations: client `i` sends entry `i % len`
    /// (`None`: no header). Empty: no header.
    pub accept_encodings: Vec<Option<String>>,
    /// The status an answer must have to count as served.
    pub expect_status: u16,
    /// What its body must be.
    pub expect: Expect,
    /// Per request, headers to the end of the body.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// The median and the largest of a set of durations, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        let ms = |d: Option<&Duration>| round(d.map_or(0.0, |d| d.as_secs_f64() * 1000.0), 1);
        Self {
            p50_ms: ms(v.get(v.len().saturating_sub(1) / 2)),
            max_ms: ms(v.last()),
        }
    }
}

/// One `Accept-Encoding` population's requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Population {
    /// Its `Accept-Encoding` (`null`: none sent).
    pub accept_encoding: Option<String>,
    pub requests: u64,
    pub served: u64,
    /// Answers with `Content-Encoding: gzip`.
    pub gzip: u64,
}

/// What the clients saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    /// First request sent / last answer read, ms since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Requests sent (answered or not).
    pub requests: u64,
    /// Answered with the expected status and, for a 2xx, the full,
    /// byte-identical body in an encoding the client accepted.
    pub served: u64,
    /// `requests - served`.
    pub errors: u64,
    /// Answers per status code.
    pub status: BTreeMap<String, u64>,
    /// No complete answer: connection errors, timeouts, bodies cut short by
    /// the connection.
    pub transport_errors: u64,
    /// Answers with another status than the expected one.
    pub unexpected_status: u64,
    /// Answers with the expected status whose body was not the expected one
    /// (short, long, different bytes, undecodable).
    pub bad_bodies: u64,
    /// Answers gzip-encoded to a client that did not accept gzip.
    pub wrong_encoding: u64,
    /// Whether every request was served with the full, byte-identical body.
    pub bodies_intact: bool,
    /// Body bytes received (as sent, before decoding).
    pub bytes: u64,
    /// Request sent → first body byte (headers, for an empty body).
    pub first_byte: Spread,
    /// Request sent → last body byte.
    pub total: Spread,
    /// `Cache-Status` outcomes.
    pub cache: CacheCounts,
    /// Per `Accept-Encoding` population, in config order.
    pub populations: Vec<Population>,
}

/// One request's fate.
struct Outcome {
    population: usize,
    first_byte: Duration,
    total: Duration,
    result: Result<Answered, ()>,
}

struct Answered {
    status: StatusCode,
    cache_status: Option<String>,
    bytes: u64,
    gzip: bool,
    body_ok: bool,
}

/// Run the clients; an error only when the configuration is unusable.
pub async fn run_traffic(cfg: &TrafficConfig) -> anyhow::Result<TrafficSummary> {
    anyhow::ensure!(cfg.clients > 0, "at least one client");
    let targets = cfg.targets.iter().map(|t| parse_base_url(t));
    let targets: Vec<String> = targets.collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!targets.is_empty(), "at least one target");
    let expected = cfg.expect.bytes();
    let pops: Vec<Option<String>> = match cfg.accept_encodings.is_empty() {
        true => vec![None],
        false => cfg.accept_encodings.clone(),
    };
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(cfg.clients));
    let (start_ms, start) = (now_ms(), Instant::now());
    let deadline = cfg.duration.map(|d| start + d);
    let mut clients = JoinSet::new();
    for i in 0..cfg.clients {
        let url = format!("{}{}", targets[i % targets.len()], cfg.path);
        let (population, accept) = (i % pops.len(), pops[i % pops.len()].clone());
        let (barrier, outcomes, expected) = (barrier.clone(), outcomes.clone(), expected.clone());
        let (cfg, http) = (cfg.clone(), Http::with_pool(1));
        clients.spawn(async move {
            barrier.wait().await;
            loop {
                let t = Instant::now();
                let req = one(&http, &url, accept.as_deref(), &cfg, expected.as_ref());
                let result = tokio::time::timeout(cfg.timeout, req).await;
                let (first_byte, result) = result.unwrap_or((None, Err(())));
                let total = t.elapsed();
                let first_byte = first_byte.unwrap_or(total);
                let o = Outcome {
                    population,
                    first_byte,
                    total,
                    result,
                };
                outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                if deadline.is_none_or(|d| Instant::now() >= d) {
                    break;
                }
            }
        });
    }
    let bound = cfg.duration.unwrap_or_default() + cfg.timeout + Duration::from_secs(5);
    let all = async { while clients.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all).await.is_err() {
        clients.abort_all();
        anyhow::bail!("traffic clients did not finish within {bound:?}");
    }
    let end_ms = now_ms();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(summarise(cfg, &pops, outcomes, (start_ms, end_ms)))
}

fn summarise(
    cfg: &TrafficConfig,
    pops: &[Option<String>],
    outcomes: Vec<Outcome>,
    (start_ms, end_ms): (u64, u64),
) -> TrafficSummary {
    let mut s = TrafficSummary {
        start_ms,
        end_ms,
        populations: pops
            .iter()
            .map(|a| Population {
                accept_encoding: a.clone(),
                ..Population::default()
            })
            .collect(),
        ..TrafficSummary::default()
    };
    let (mut first, mut total) = (Vec::new(), Vec::new());
    for o in outcomes {
        s.requests += 1;
        let pop = &mut s.populations[o.population];
        pop.requests += 1;
        first.push(o.first_byte);
        total.push(o.total);
        let Ok(a) = o.result else {
            s.transport_errors += 1;
            continue;
        };
        *s.status.entry(a.status.as_u16().to_string()).or_default() += 1;
        s.cache.add(&classify(a.cache_status.as_deref()));
        s.bytes += a.bytes;
        pop.gzip += u64::from(a.gzip);
        let accepts = pops[o.population]
            .as_deref()
            .is_some_and(|v| v.contains("gzip"));
        let wrong = a.gzip && !accepts;
        s.wrong_encoding += u64::from(wrong);
        if a.status.as_u16() != cfg.expect_status {
            s.unexpected_status += 1;
        } else if !a.body_ok {
            s.bad_bodies += 1;
        } else if !wrong {
            s.served += 1;
            pop.served += 1;
        }
    }
    s.errors = s.requests - s.served;
    s.bodies_intact = s.requests > 0 && s.errors == 0;
    (s.first_byte, s.total) = (Spread::of(first), Spread::of(total));
    s
}

/// Send one request and read its answer: when its first body byte came, and
/// the answer (`Err` when it did not come whole).
async fn one(
    http: &Http,
    url: &str,
    accept: Option<&str>,
    cfg: &TrafficConfig,
    expected: Option<&Bytes>,
) -> (Option<Duration>, Result<Answered, ()>) {
    let t = Instant::now();
    let mut req = Request::get(url);
    if let Some(a) = accept {
        req = req.header(header::ACCEPT_ENCODING, a);
    }
    let Ok(req) = req.body(Full::new(Bytes::new())) else {
        return (None, Err(()));
    };
    let Ok(resp) = http.client.request(req).await else {
        return (None, Err(()));
    };
    let (parts, mut body) = resp.into_parts();
    let header_at = t.elapsed();
    let value = |h| {
        let v = parts.headers.get(h);
        v.map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let cache_status = value("cache-status");
    let gzip = value(header::CONTENT_ENCODING.as_str()).is_some_and(|e| e.contains("gzip"));
    let check = parts.status.as_u16() == cfg.expect_status && parts.status.is_success();
    // Blob bodies are compared as they arrive (no copy); others collected.
    let streamed = matches!(cfg.expect, Expect::Blob(_)) && !gzip;
    let (mut first, mut offset, mut matches, mut kept) = (None, 0usize, true, Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (first, Err(()));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        first.get_or_insert_with(|| t.elapsed());
        if check && streamed {
            let want = expected.and_then(|e| e.get(offset..offset + data.len()));
            matches &= want.is_some_and(|w| w == &data[..]);
        } else if check {
            kept.extend_from_slice(&data);
        }
        offset += data.len();
    }
    let body_ok = match (check, expected) {
        (false, _) | (true, None) => true,
        (true, Some(want)) if streamed => matches && offset == want.len(),
        (true, Some(want)) if gzip => {
            let mut decoded = Vec::with_capacity(want.len());
            let read = flate2::read::GzDecoder::new(&kept[..]).read_to_end(&mut decoded);
            read.is_ok() && decoded == want[..]
        }
        (true, Some(want)) => kept == want[..],
    };
    let answered = Answered {
        status: parts.status,
        cache_status,
        bytes: offset as u64,
        gzip,
        body_ok,
    };
    (Some(first.unwrap_or(header_at)), Ok(answered))
}

/// One scenario request as origin-sim's `GET /stats/requests` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioRequest {
    pub t_ms: u64,
    pub route: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub completed: bool,
    #[serde(default)]
    pub accept_encoding: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
}

/// The body of `GET /stats/requests`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioRequests {
    pub requests: Vec<ScenarioRequest>,
    #[serde(default)]
    pub in_flight: u64,
}

/// origin-sim's scenario request log for `route` from `since_ms` on, once
/// no scenario request is in flight (waiting at most `bound`).
pub async fn origin_requests(
    http: &Http,
    origin: &str,
    route: &str,
    since_ms: u64,
    bound: Duration,
) -> anyhow::Result<ScenarioRequests> {
    let url = format!("{origin}/stats/requests?since_ms={since_ms}&route={route}");
    let start = Instant::now();
    loop {
        let body = http.get_ok(&url).await?;
        let log: ScenarioRequests = serde_json::from_slice(&body).context("bad JSON")?;
        if log.in_flight == 0 || start.elapsed() >= bound {
            return Ok(log);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
