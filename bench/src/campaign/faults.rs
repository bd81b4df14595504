//! The nemesis: a seeded schedule of faults, one at a time with quiet gaps,
//! each recorded in the history with its start and end. Only processes the
//! campaign started are ever signalled, always by PID.
//!
//! Two faults also set up the race they are meant to expose, with the
//! nemesis's own (recorded) operations on keys the workload never touches:
//!
//! * **pause-gateway** pauses a gateway right after sending it reads of
//!   never-cached keys (so it is likely mid-rebuild, holding their locks),
//!   past the lock TTL; meanwhile it updates those items through another
//!   gateway and reads them through a third (a new rebuild), then resumes
//!   the paused one and keeps reading the keys everywhere: a paused leader
//!   whose late fill beats the newer one shows as an old version served
//!   from the cache after a newer one.
//! * **slow-origin** makes the origin slower than the lock TTL and reads a
//!   never-cached key through two gateways: the second waits the lock wait
//!   out and rebuilds without the lock; an update through a third gateway
//!   lands while both rebuilds are in flight.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use http::Method;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

use super::Procs;
use super::history::{Entry, Fault, FaultKind, OpKind};
use super::workload::{Keys, Target};

/// How the nemesis paces itself.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Run faults until this much time has passed since the campaign started…
    pub duration: Duration,
    /// …and every kind ran at least this often (bounded by twice `duration`).
    pub min_per_kind: usize,
    /// Quiet gap between two faults, drawn uniformly in this range (ms).
    pub gap_ms: (u64, u64),
    /// The gateways' lock TTL (faults are sized past it).
    pub lock_ttl: Duration,
    /// origin-sim's normal latency.
    pub origin_latency_ms: u64,
    /// Print one line per fault on stderr.
    pub progress: bool,
}

/// The nemesis's state: its RNG, the next key of its own pool, what it did.
pub struct Nemesis {
    rng: StdRng,
    next_key: u64,
    last_key: u64,
    pub counts: BTreeMap<FaultKind, usize>,
    followups: JoinSet<()>,
}

const NEMESIS: &str = "nemesis";

impl Nemesis {
    pub fn new(seed: u64, keys: Keys, items: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            next_key: keys.nemesis_first,
            last_key: items,
            counts: BTreeMap::new(),
            followups: JoinSet::new(),
        }
    }

    /// A key nobody has read yet (the nemesis's pool, each used once).
    fn fresh_key(&mut self) -> anyhow::Result<u64> {
        if self.next_key > self.last_key {
            bail!("the nemesis ran out of fresh keys: raise --items");
        }
        self.next_key += 1;
        Ok(self.next_key - 1)
    }

    /// Three distinct gateways when there are three (a: the faulted one).
    fn three(&mut self, n: usize) -> (usize, usize, usize) {
        let a = self.rng.random_range(0..n);
        let b = (a + 1 + self.rng.random_range(0..n - 1)) % n;
        let c = (0..n).find(|g| *g != a && *g != b).unwrap_or(b);
        (a, b, c)
    }

    /// Run faults until the schedule is done; every fault is recorded.
    pub async fn run(
        &mut self,
        procs: &mut Procs,
        target: &Target,
        s: &Schedule,
    ) -> anyhow::Result<()> {
        let clock = target.clock;
        let mut order: Vec<FaultKind> = Vec::new();
        loop {
            let t = clock.elapsed();
            let short = FaultKind::ALL
                .iter()
                .any(|k| self.counts.get(k).copied().unwrap_or(0) < s.min_per_kind);
            if (t >= s.duration && !short) || t >= s.duration * 2 {
                break;
            }
            if order.is_empty() {
                // One round: every kind once, in a seeded random order.
                order = FaultKind::ALL.to_vec();
                order.shuffle(&mut self.rng);
                order.reverse();
            }
            let kind = order.pop().expect("a round has every kind");
            procs.check_alive()?;
            let fault = self
                .inject(kind, procs, target, s)
                .await
                .with_context(|| format!("fault {}", kind.name()))?;
            *self.counts.entry(kind).or_default() += 1;
            if s.progress {
                eprintln!(
                    "campaign {:>6.1}s  fault {:<14} {:<22} {:>5} ms  (#{} of this kind)",
                    fault.start_ns as f64 / 1e9,
                    kind.name(),
                    fault.detail,
                    (fault.end_ns - fault.start_ns) / 1_000_000,
                    self.counts[&kind],
                );
            }
            target.recorder.record(Entry::Fault(fault));
            let gap = self.rng.random_range(s.gap_ms.0..=s.gap_ms.1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        while self.followups.join_next().await.is_some() {}
        Ok(())
    }

    async fn inject(
        &mut self,
        kind: FaultKind,
        procs: &mut Procs,
        target: &Target,
        s: &Schedule,
    ) -> anyhow::Result<Fault> {
        let n = target.addrs.gateways.len();
        let clock = target.clock;
        let mut fault = Fault {
            kind,
            gateway: None,
            start_ns: 0,
            end_ns: 0,
            start_wall_ms: 0,
            end_wall_ms: 0,
            detail: String::new(),
        };
        let begin = |f: &mut Fault| (f.start_ns, f.start_wall_ms) = clock.now();
        let end = |f: &mut Fault| (f.end_ns, f.end_wall_ms) = clock.now();
        match kind {
            FaultKind::PauseGateway => {
                let (a, b, c) = self.three(n);
                let pause = Duration::from_millis(self.rng.random_range(1000..=3000));
                let keys = [self.fresh_key()?, self.fresh_key()?, self.fresh_key()?];
                // Reads of never-cached keys, so the paused gateway is
                // likely holding their rebuild locks when it stops.
                let mut inflight = JoinSet::new();
                for k in keys {
                    let t = target.clone();
                    inflight.spawn(async move {
                        t.run(NEMESIS, OpKind::Read, a, k).await;
                    });
                    tokio::time::sleep(Duration::from_millis(self.rng.random_range(1..=4))).await;
                }
                tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..=6))).await;
                let pid = procs.gateway_pid(a)?;
                begin(&mut fault);
                signal("-STOP", pid)?;
                // Past the lock TTL: the paused gateway's locks (and their
                // fence counters) expire.
                tokio::time::sleep(s.lock_ttl + Duration::from_millis(250)).await;
                for k in keys {
                    target.run(NEMESIS, OpKind::Update, b, k).await;
                    target.run(NEMESIS, OpKind::Read, c, k).await;
                }
                let left =
                    pause.saturating_sub(Duration::from_nanos(clock.now().0 - fault.start_ns));
                tokio::time::sleep(left).await;
                signal("-CONT", pid)?;
                end(&mut fault);
                fault.gateway = Some(a);
                fault.detail = format!(
                    "g{a} {} ms, keys {}-{}",
                    pause.as_millis(),
                    keys[0],
                    keys[2]
                );
                self.followups
                    .spawn(async move { while inflight.join_next().await.is_some() {} });
                self.follow_up(
                    target,
                    &keys,
                    Duration::from_millis(2500),
                    Duration::from_millis(150),
                );
            }
            FaultKind::KillGateway => {
                let a = self.rng.random_range(0..n);
                let down = Duration::from_millis(self.rng.random_range(100..=1000));
                begin(&mut fault);
                procs.kill_gateway(a);
                tokio::time::sleep(down).await;
                procs.start_gateway(a).await?;
                end(&mut fault);
                fault.gateway = Some(a);
                fault.detail = format!("g{a} down {} ms", down.as_millis());
            }
            FaultKind::RestartRedis => {
                let down = Duration::from_millis(self.rng.random_range(100..=1000));
                begin(&mut fault);
                procs.kill_redis();
                tokio::time::sleep(down).await;
                procs.start_redis().await?;
                end(&mut fault);
                fault.detail = format!("down {} ms", down.as_millis());
            }
            FaultKind::KillPubsub => {
                // Near copies of a hot key everywhere, then the subscribers
                // killed, then an update: how stale does each gateway get?
                let key = self.rng.random_range(1..=3);
                for g in 0..n {
                    target.run(NEMESIS, OpKind::Read, g, key).await;
                }
                begin(&mut fault);
                let killed = procs.redis_cli(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
                end(&mut fault);
                let a = self.rng.random_range(0..n);
                target.run(NEMESIS, OpKind::Update, a, key).await;
                fault.detail = format!("{killed} subscribers, key {key}");
                self.follow_up(
                    target,
                    &[key],
                    Duration::from_millis(1500),
                    Duration::from_millis(100),
                );
            }
            FaultKind::SlowOrigin => {
                let (a, b, c) = self.three(n);
                let latency = 1500;
                let hold = Duration::from_millis(self.rng.random_range(2300..=3000));
                let key = self.fresh_key()?;
                begin(&mut fault);
                origin_config(target, json!({ "latency_ms": latency })).await?;
                let mut inflight = JoinSet::new();
                for g in [a, b] {
                    let t = target.clone();
                    inflight.spawn(async move {
                        t.run(NEMESIS, OpKind::Read, g, key).await;
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The second reader waits the lock wait (the lock TTL) out,
                // then rebuilds on its own; both rebuilds are in flight now.
                tokio::time::sleep(s.lock_ttl + Duration::from_millis(300)).await;
                target.run(NEMESIS, OpKind::Update, c, key).await;
                let left =
                    hold.saturating_sub(Duration::from_nanos(clock.now().0 - fault.start_ns));
                tokio::time::sleep(left).await;
                origin_config(target, json!({ "latency_ms": s.origin_latency_ms })).await?;
                end(&mut fault);
                fault.detail = format!("latency_ms={latency}, key {key}");
                self.followups
                    .spawn(async move { while inflight.join_next().await.is_some() {} });
                self.follow_up(
                    target,
                    &[key],
                    Duration::from_millis(2500),
                    Duration::from_millis(150),
                );
            }
            FaultKind::OriginErrors => {
                let rate = if self.rng.random_bool(0.5) { 0.5 } else { 1.0 };
                let hold = Duration::from_millis(self.rng.random_range(1500..=2500));
                begin(&mut fault);
                origin_config(target, json!({ "error_rate": rate })).await?;
                tokio::time::sleep(hold).await;
                origin_config(target, json!({ "error_rate": 0.0 })).await?;
                end(&mut fault);
                fault.detail = format!("error_rate={rate}");
            }
        }
        Ok(fault)
    }

    /// Read `keys` through every gateway every `every` for `span` (in the
    /// background, recorded like any operation).
    fn follow_up(&mut self, target: &Target, keys: &[u64], span: Duration, every: Duration) {
        let (t, keys) = (target.clone(), keys.to_vec());
        self.followups.spawn(async move {
            let until = t.clock.elapsed() + span;
            while t.clock.elapsed() < until {
                for &k in &keys {
                    for g in 0..t.addrs.gateways.len() {
                        t.run(NEMESIS, OpKind::Read, g, k).await;
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// `kill SIG PID` for a process the campaign started.
pub fn signal(sig: &str, pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill {sig} {pid} failed: {status}");
    }
    Ok(())
}

/// `PUT /admin/config` on origin-sim.
async fn origin_config(target: &Target, body: serde_json::Value) -> anyhow::Result<()> {
    let http = crate::procs::Http {
        client: target.client.clone(),
    };
    let url = format!("{}/admin/config", target.addrs.origin);
    http.ok(Method::PUT, &url, Some(&body)).await?;
    Ok(())
}
