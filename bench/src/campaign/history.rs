//! The recorded history of a campaign: one JSON object per line (JSON
//! lines), in the order they were recorded. Three kinds of line:
//!
//! * `meta` (the first line): seed, profile, the gateways' settings the
//!   checker's bounds come from (near-cache TTL, lock TTL, …);
//! * `op`: one client operation — a read, an update (through a gateway or
//!   straight to the origin) or an admin purge — with its invoke and
//!   completion times (monotonic ns since the campaign started, plus wall
//!   ms), the status, the `version` of the body, the `Cache-Status` header
//!   and the client error, if any;
//! * `fault`: one fault the nemesis injected, with its start and end.
//!
//! Times on `op` and `fault` lines come from one monotonic clock (the
//! bench's), so the checker never compares two clocks except for origin-sim's
//! `/stats/queries` (wall ms on the same machine).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The settings the checker's bounds are derived from, as the campaign ran
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub seed: u64,
    pub profile: String,
    pub gateways: usize,
    /// Wall clock (ms since the Unix epoch) at monotonic 0.
    pub started_wall_ms: u64,
    pub ttl_ms: u64,
    pub stale_ttl_ms: u64,
    pub lock_ttl_ms: u64,
    /// The near cache's bound: the longest a copy is served from a gateway's
    /// memory after it was read from Redis (the documented staleness bound).
    pub near_cache_ttl_ms: u64,
    pub origin_latency_ms: u64,
    pub client_timeout_ms: u64,
    /// The command line that produced the run.
    #[serde(default)]
    pub command: String,
    /// The machine it ran on (host, cores, memory, kernel).
    #[serde(default)]
    pub machine: String,
}

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// `GET /items/{id}` through a gateway.
    Read,
    /// `PUT /items/{id}` through a gateway: the origin bumps the version, the
    /// gateway invalidates the key fleet-wide on success.
    Update,
    /// `PUT /items/{id}` straight to origin-sim (a write the cache is not told
    /// about; a purge is what invalidates it).
    UpdateDirect,
    /// `POST /admin/purge` on a gateway's admin listener.
    Purge,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [Self::Read, Self::Update, Self::UpdateDirect, Self::Purge];

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Update => "update",
            Self::UpdateDirect => "update-direct",
            Self::Purge => "purge",
        }
    }
}

/// One operation, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Who issued it: `c0`…`c7` (workload clients) or `nemesis`.
    pub process: String,
    pub kind: OpKind,
    /// Gateway index (0-based); `None` for a write straight to the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<usize>,
    /// Item id (`/items/{key}`).
    pub key: u64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub invoke_wall_ms: u64,
    pub complete_wall_ms: u64,
    /// HTTP status; `None` when no answer came (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `version` of the JSON body (reads and updates answered 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The `Cache-Status` response header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_status: Option<String>,
    /// Client error: `timeout`, a connection error, or a body that is not the
    /// item (`body: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the body of a non-2xx answer (what produced it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Op {
    /// Whether the body came from the cache (`hit` in `Cache-Status`).
    pub fn is_hit(&self) -> bool {
        self.status == Some(200) && crate::cache_status::classify(self.cache_status.as_deref()).hit
    }

    /// Whether the cache layer served it without a rebuild of its own: a hit,
    /// or a share of another request's rebuild (`collapsed`).
    pub fn is_cache_served(&self) -> bool {
        let c = crate::cache_status::classify(self.cache_status.as_deref());
        self.status == Some(200) && (c.hit || c.collapsed)
    }

    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.error.is_none()
    }
}

/// The faults the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGSTOP a gateway (mid-rebuild of a never-cached key) for longer than
    /// the lock TTL, then SIGCONT.
    PauseGateway,
    /// SIGKILL a gateway and start it again on the same ports.
    KillGateway,
    /// Kill redis-server and start it again on the same port, empty.
    RestartRedis,
    /// `CLIENT KILL TYPE pubsub`: every gateway's invalidation subscriber.
    KillPubsub,
    /// origin-sim's latency raised past the lock TTL, then back.
    SlowOrigin,
    /// origin-sim answering 5xx (`error_rate`), then back to 0.
    OriginErrors,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        Self::PauseGateway,
        Self::KillGateway,
        Self::RestartRedis,
        Self::KillPubsub,
        Self::SlowOrigin,
        Self::OriginErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PauseGateway => "pause-gateway",
            Self::KillGateway => "kill-gateway",
            Self::RestartRedis => "restart-redis",
            Self::KillPubsub => "kill-pubsub",
            Self::SlowOrigin => "slow-origin",
            Self::OriginErrors => "origin-errors",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The gateway it hit (pause, kill), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<usize>,
    pub start_ns: u64,
    /// When the fault was lifted: SIGCONT sent, the restarted gateway or Redis
    /// ready, the origin's config restored, the subscribers' kill sent.
    pub end_ns: u64,
    pub start_wall_ms: u64,
    pub end_wall_ms: u64,
    /// What exactly was done (`latency_ms=1500`, `error_rate=0.5`, …).
    #[serde(default)]
    pub detail: String,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Entry {
    Meta(Meta),
    Op(Op),
    Fault(Fault),
}

/// A history line with its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub no: usize,
    pub entry: Entry,
}

impl Line {
    /// The line as JSON (what the file holds).
    pub fn json(&self) -> String {
        serde_json::to_string(&self.entry).unwrap_or_default()
    }
}

/// Parse a JSON-lines history (blank lines skipped; line numbers kept).
pub fn parse(text: &str) -> anyhow::Result<Vec<Line>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(l).with_context(|| format!("history line {}", i + 1))?;
        out.push(Line { no: i + 1, entry });
    }
    Ok(out)
}

/// Read and parse a history file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Line>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse(&text)
}

/// Appends entries to the history file as they happen (buffered, flushed
/// at the end), and keeps them in memory for the checker.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
}

struct RecorderInner {
    out: Option<std::io::BufWriter<std::fs::File>>,
    lines: Vec<Line>,
}

impl Recorder {
    /// Record to `path` (created or truncated).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let f =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let inner = RecorderInner {
            out: Some(std::io::BufWriter::new(f)),
            lines: Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Append one entry.
    pub fn record(&self, entry: Entry) {
        use std::io::Write;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let no = g.lines.len() + 1;
        if let Some(out) = g.out.as_mut() {
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let _ = writeln!(out, "{json}");
        }
        g.lines.push(Line { no, entry });
    }

    /// Flush the file; the lines recorded so far.
    pub fn finish(&self) -> anyhow::Result<Vec<Line>> {
        use std::io::Write;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = g.out.as_mut() {
            out.flush().context("flush history")?;
        }
        Ok(g.lines.clone())
    }

    /// Operations and faults recorded so far (for progress lines).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let count = |f: fn(&Entry) -> bool| g.lines.iter().filter(|l| f(&l.entry)).count();
        (
            count(|e| matches!(e, Entry::Op(_))),
            count(|e| matches!(e, Entry::Fault(_))),
        )
    }
}
