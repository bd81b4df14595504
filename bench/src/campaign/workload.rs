//! The workload: a few concurrent clients reading hot and cold keys, updating
//! items (through a gateway, or straight at the origin) and purging keys on a
//! gateway's admin API, each through a gateway drawn at random. Every
//! operation, the nemesis's own included, goes through [`Target::run`], which
//! records it in the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{Entry, Op, OpKind, Recorder};
use crate::procs::{Http, HttpClient};

/// The campaign's clock: monotonic ns since the start, and the wall clock
/// (ms since the Unix epoch) read at the same moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    t0: Instant,
    wall0_ms: u64,
}

impl Clock {
    pub fn start() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            t0: Instant::now(),
            wall0_ms: wall.as_millis() as u64,
        }
    }

    pub fn wall0_ms(&self) -> u64 {
        self.wall0_ms
    }

    /// Monotonic ns since the start and the matching wall ms.
    pub fn now(&self) -> (u64, u64) {
        let ns = self.t0.elapsed().as_nanos() as u64;
        (ns, self.wall0_ms + ns / 1_000_000)
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }
}

/// Where the operations go: the gateways' proxy and admin URLs, the origin.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub gateways: Vec<String>,
    pub admins: Vec<String>,
    pub origin: String,
    pub admin_token: String,
}

/// Key space of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    /// Hot keys `1..=hot`.
    pub hot: u64,
    /// Cold keys `hot+1..=hot+cold`.
    pub cold: u64,
    /// First key of the nemesis's own pool (never touched by the workload).
    pub nemesis_first: u64,
}

/// Sends operations and records them.
#[derive(Clone)]
pub struct Target {
    pub addrs: Arc<Addrs>,
    pub client: HttpClient,
    pub recorder: Recorder,
    pub clock: Clock,
    pub timeout: Duration,
}

impl Target {
    pub fn new(addrs: Addrs, recorder: Recorder, clock: Clock, timeout: Duration) -> Self {
        Self {
            addrs: Arc::new(addrs),
            client: Http::with_pool(64).client,
            recorder,
            clock,
            timeout,
        }
    }

    /// Run one operation (`gateway` ignored for [`OpKind::UpdateDirect`]),
    /// record it and return it.
    pub async fn run(&self, process: &str, kind: OpKind, gateway: usize, key: u64) -> Op {
        let a = &self.addrs;
        let path = format!("/items/{key}");
        let (method, url, body, auth) = match kind {
            OpKind::Read => (
                Method::GET,
                format!("{}{path}", a.gateways[gateway]),
                None,
                false,
            ),
            OpKind::Update => (
                Method::PUT,
                format!("{}{path}", a.gateways[gateway]),
                None,
                false,
            ),
            OpKind::UpdateDirect => (Method::PUT, format!("{}{path}", a.origin), None, false),
            OpKind::Purge => {
                let body = serde_json::json!({ "paths": [path] }).to_string();
                let url = format!("{}/admin/purge", a.admins[gateway]);
                (Method::POST, url, Some(body), true)
            }
        };
        let mut req = Request::builder().method(method).uri(&url);
        if auth {
            req = req.header("authorization", format!("Bearer {}", a.admin_token));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        let (invoke_ns, invoke_wall_ms) = self.clock.now();
        let exchange = async {
            let (parts, body) = self.client.request(req).await?.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts.status, parts.headers, body))
        };
        let answer = tokio::time::timeout(self.timeout, exchange).await;
        let (complete_ns, complete_wall_ms) = self.clock.now();
        let mut op = Op {
            process: process.to_string(),
            kind,
            gateway: (kind != OpKind::UpdateDirect).then_some(gateway),
            key,
            invoke_ns,
            complete_ns,
            invoke_wall_ms,
            complete_wall_ms,
            status: None,
            version: None,
            cache_status: None,
            error: None,
            body: None,
        };
        match answer {
            Err(_) => op.error = Some("timeout".into()),
            Ok(Err(e)) => op.error = Some(format!("{e:#}")),
            Ok(Ok((status, headers, body))) => {
                op.status = Some(status.as_u16());
                op.cache_status = headers
                    .get("cache-status")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body);
                    op.body = Some(text.chars().take(160).collect());
                } else if kind != OpKind::Purge {
                    match item_version(&body, key) {
                        Ok(v) => op.version = Some(v),
                        Err(e) => op.error = Some(format!("body: {e}")),
                    }
                }
            }
        }
        self.recorder.record(Entry::Op(op.clone()));
        op
    }
}

/// The `version` of an item body `{"id":key,"version":…}`; an error for any
/// other body.
fn item_version(body: &[u8], key: u64) -> Result<i64, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["id"].as_u64() != Some(key) {
        return Err(format!("id {} instead of {key}", v["id"]));
    }
    v["version"]
        .as_i64()
        .ok_or_else(|| "no version".to_string())
}

/// Operation mix of a workload client (weights out of 1000).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub read_hot: u32,
    pub read_cold: u32,
    pub update: u32,
    pub update_direct: u32,
    pub purge: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            read_hot: 640,
            read_cold: 260,
            update: 50,
            update_direct: 20,
            purge: 30,
        }
    }
}

/// One workload client: draws its operations from its own seeded RNG until
/// `stop`, pausing `think` (uniform 0.5×–1.5×) between operations.
pub async fn client(
    id: usize,
    seed: u64,
    target: Target,
    keys: Keys,
    mix: Mix,
    think: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(id as u64 + 1)));
    let name = format!("c{id}");
    let n = target.addrs.gateways.len();
    let total = mix.read_hot + mix.read_cold + mix.update + mix.update_direct + mix.purge;
    while !stop.load(Ordering::Relaxed) {
        let gateway = rng.random_range(0..n);
        let hot = rng.random_range(1..=keys.hot);
        let cold = keys.hot + rng.random_range(1..=keys.cold.max(1));
        let mut pick = rng.random_range(0..total);
        let mut next = |w: u32| {
            let hit = pick < w;
            pick = pick.saturating_sub(w);
            hit
        };
        let (kind, key) = if next(mix.read_hot) {
            (OpKind::Read, hot)
        } else if next(mix.read_cold) {
            (OpKind::Read, cold)
        } else if next(mix.update) {
            // Writes go to hot keys mostly: that is where a lost invalidation shows.
            (
                OpKind::Update,
                if rng.random_bool(0.7) { hot } else { cold },
            )
        } else if next(mix.update_direct) {
            (
                OpKind::UpdateDirect,
                if rng.random_bool(0.7) { hot } else { cold },
            )
        } else {
            (OpKind::Purge, if rng.random_bool(0.7) { hot } else { cold })
        };
        target.run(&name, kind, gateway, key).await;
        let pause = think.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(pause).await;
    }
}
