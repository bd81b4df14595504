//! The Redis store (fred): entries, the rebuild lock and the fence records.
//!
//! Every key for one cache key shares a hash tag,
//! `{prefix}:v{FORMAT_VERSION}:{<digest>}:e|l|f` (the entry format version is
//! in the prefix, so two versions of the gateway in one fleet never read each
//! other's entries),
//! so the scripts that touch several of them stay valid on Redis Cluster, and
//! every key a script touches is passed through `KEYS`.
//!
//! * entry `…:e` — a hash `{t: the writing lease's seq, d: encoded entry}`
//!   with `PEXPIRE` = fresh TTL + stale window (+ the retention for
//!   revalidation);
//! * lock `…:l` — `owner|epoch|seq`, `PX` = lock TTL, extended by its owner
//!   while the rebuild runs; one per URL, whatever the variant;
//! * fence record `…:f` — a hash `{e: epoch, i: last seq drawn, p: purge
//!   floor, w / w:<variant>: last seq written}` (see
//!   [`fence`](super::fence)), `PEXPIRE` = the longest lease TTL drawn or
//!   renewed on it. It lives while leases keep it and is then gone: a flood of
//!   distinct keys leaves nothing behind, and a lost record (expiry,
//!   eviction, restart, `FLUSHALL`) voids its leases instead of re-issuing
//!   their tokens. Epochs are drawn by the client (64 random bits), so a
//!   re-created record never matches an old lease.
//! * soft purge — fields `s` (soft-purged at, ms) and `g` (stale until, ms)
//!   on the entry's hash and on every variant slot's: the encoded entry
//!   (`d`) is opaque to Lua, so [`get`](CacheStore::get) applies them to the
//!   decoded entry; a write clears them.
//!
//! And per purge tag ([`tags`](super::tags)), under a hash tag of its own
//! (`{prefix}:v{FORMAT_VERSION}:{t:<tag digest>}:i|p`: another slot than the
//! entries, so nothing crosses slots on Redis Cluster):
//!
//! * index `…:i` — a sorted set of the digests of the keys whose entries
//!   carry the tag, each scored with the instant its entry is kept until;
//!   members past it are dropped on every add, `PEXPIRE` = the longest
//!   member's keep (extended on every add), at most `max_tag_members` (the
//!   members kept the shortest go first, and their entries are deleted: the
//!   index never loses a live entry);
//! * purge record `…:p` — `<time>|<purge id>` of the tag's last purge, `PX` =
//!   the purge window (see [`RedisStoreBuilder::purge_window`]); each key the
//!   purge fenced notes `<purge id>|<floor>` in its fence record, under
//!   `t:<tag digest>`.
//!
//! A fill of a tagged entry runs one script per tag (add to the index, read
//! the purge record), then the fenced write on the entry's slot; a tag purge
//! runs one script on the tag's slot (record the purge, list the members),
//! then the per-key delete script once per member.

use super::fence::{FencingToken, Refusal, new_epoch};
use super::tags::{self, PurgeMode, SeenPurge, TagPurge};
use super::{
    CacheStore, LockAttempt, LockLease, PutOutcome, RebuildFailure, StoreError, StreamChunks,
    StreamHead,
};
use crate::entry::{CachedResponse, FORMAT_VERSION, now_ms};
use crate::key::CacheKey;
use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::Arc;
use std::time::Duration;

/// Draw the key's next lease token (a Lua snippet shared by the scripts):
/// from the live record, or a new incarnation with the caller's epoch; the
/// record then lives at least `ttl` ms more.
const DRAW: &str = r#"
local function draw(rec, epoch, ttl)
  local e = redis.call('HGET', rec, 'e')
  if not e then
    e = epoch
    redis.call('HSET', rec, 'e', e)
  end
  local n = redis.call('HINCRBY', rec, 'i', 1)
  if redis.call('PTTL', rec) < tonumber(ttl) then redis.call('PEXPIRE', rec, ttl) end
  return {e, n}
end
"#;

/// Fence a key's record against every lease drawn so far (a Lua snippet of
/// the delete scripts): raise a live record's purge floor to a fresh draw.
/// For a purge of a tag (`field`: `t:<tag digest>`, not empty), note
/// `<purge id>|<floor>` under `field`, making the record (epoch `epoch`) if
/// the key has none, and keep it at least `window` ms: a fill whose lease
/// is drawn after it is then known to come after that purge.
const FENCE: &str = r#"
local function fence(rec, field, id, epoch, window)
  if field and field ~= '' then
    if redis.call('EXISTS', rec) == 0 then redis.call('HSET', rec, 'e', epoch) end
    local p = redis.call('HINCRBY', rec, 'i', 1)
    redis.call('HSET', rec, 'p', p, field, id .. '|' .. p)
    if redis.call('PTTL', rec) < tonumber(window) then redis.call('PEXPIRE', rec, window) end
  elseif redis.call('EXISTS', rec) == 1 then
    redis.call('HSET', rec, 'p', redis.call('HINCRBY', rec, 'i', 1))
  end
end
"#;

/// Take the lock with a fresh lease atomically: `{epoch, seq}`; when held,
/// `{'h', epoch, seq}` of the holder; for a waiter that saw the holder
/// `(ARGV[5], ARGV[6])`, `{'!', status, until, epoch, seq}` when that rebuild
/// (or a later one) failed and `until` (ms) is still ahead of `now`.
/// Idempotent for its owner: a resent attempt finds its own value and gets
/// its token back instead of a false "contended".
/// KEYS: lock, record. ARGV: owner, lock TTL (ms), epoch for a new record,
/// now (ms), the holder's epoch and seq ('' when not waiting).
const LOCK_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, e, n = string.match(cur, '^([^|]*)|([^|]*)|(%d+)$')
  if owner == ARGV[1] then return {e, tonumber(n)} end
  return {'h', e, tonumber(n)}
end
local x = redis.call('HGET', KEYS[2], 'x')
if x and ARGV[5] ~= '' then
  local status, untl, e, n = string.match(x, '^(%d+)|(%d+)|([^|]*)|(%d+)$')
  if untl and tonumber(untl) > tonumber(ARGV[4]) and e == ARGV[5]
     and tonumber(n) >= tonumber(ARGV[6]) then
    return {'!', tonumber(status), tonumber(untl), e, tonumber(n)}
  end
end
local t = draw(KEYS[2], ARGV[3], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. t[1] .. '|' .. t[2], 'PX', ARGV[2])
return t
"#;

/// A lease without the lock. KEYS: record. ARGV: TTL (ms), epoch for a new record.
const TICKET_SCRIPT: &str = r#"
return draw(KEYS[1], ARGV[2], ARGV[1])
"#;

/// Release our lock (if it still is) and leave the rebuild's failure on the
/// record until `until`, for its waiters. KEYS: lock, record. ARGV: owner,
/// status, until (ms), keep (ms: how long from now the record must last),
/// the lease's epoch and seq.
const UNLOCK_FAILED_SCRIPT: &str = r#"
local released = 0
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)|') == ARGV[1] then
  released = redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[2], 'x', ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[5] .. '|' .. ARGV[6])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return released
"#;

/// Compare-and-delete: release only our own lock.
const UNLOCK_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^([^|]*)|') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Keep a lease valid: its record is still the same incarnation and no purge
/// came after it (else its write would be refused: stop), and, for a lock,
/// compare-and-expire the lock.
/// KEYS: lock, record. ARGV: owner, TTL (ms), epoch, seq, locked (1/0).
const RENEW_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[2], 'e') ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) < tonumber(redis.call('HGET', KEYS[2], 'p') or '0') then return 0 end
if ARGV[5] == '1' then
  local cur = redis.call('GET', KEYS[1])
  if not cur or string.match(cur, '^([^|]*)|') ~= ARGV[1] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"#;

/// Fenced write ([`FenceRecord::write`](super::fence::FenceRecord::write) in
/// Lua): 1 written; refused: -3 lease lost, -2 purged, -1 superseded.
/// KEYS: entry, record. ARGV: payload, keep (ms), epoch, seq, written field.
/// A tagged entry (`ARGV[11]` not empty) is refused (-2) when its origin
/// request (`ARGV[12]`, ms) is older than the purge window (`ARGV[14]`, ms)
/// by Redis' clock, or for a purge of one of its tags it saw (from
/// `ARGV[15]`, three each: the record field the purge notes, its time, its
/// id) unless the record notes that very purge at a floor the lease is not
/// below — then only if the purge is not before the request by the clock
/// skew (`ARGV[13]`, ms).
/// A write clears a soft purge's fields (`s`, `g`) from the slot it writes.
/// A variant (`ARGV[6]`, its index, not empty) goes in its own slot
/// (`KEYS[3]`), the key's index of variants under the entry key, and the
/// variant in the set of the key's variants (`KEYS[4]`, scored by time; past
/// `ARGV[8]` variants the least recently stored are deleted — their slots
/// share the hash tag, `ARGV[10]` .. id).
/// KEYS: entry, record, slot, variants. ARGV: payload, keep (ms), epoch, seq,
/// written field, index payload or '', now (ms), most variants, variant id,
/// slot prefix.
const PUT_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[2], 'e') ~= ARGV[3] then return -3 end
local n = tonumber(ARGV[4])
if n > tonumber(redis.call('HGET', KEYS[2], 'i') or '0') then return -3 end
if n < tonumber(redis.call('HGET', KEYS[2], 'p') or '0') then return -2 end
if n < tonumber(redis.call('HGET', KEYS[2], ARGV[5]) or '0') then return -1 end
if ARGV[11] ~= '' then
  local req, skew = tonumber(ARGV[12]), tonumber(ARGV[13])
  for j = 15, #ARGV, 3 do
    local noted = redis.call('HGET', KEYS[2], ARGV[j])
    local after = false
    if noted then
      local id, floor = string.match(noted, '^([^|]*)|(%d+)$')
      after = id == ARGV[j + 2] and floor ~= nil and n >= tonumber(floor)
    end
    if not after and tonumber(ARGV[j + 1]) + skew >= req then return -2 end
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now + skew > req + tonumber(ARGV[14]) then return -2 end
end
redis.call('HSET', KEYS[2], ARGV[5], n)
redis.call('HDEL', KEYS[3], 's', 'g')
redis.call('HSET', KEYS[3], 't', n, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
if ARGV[6] == '' then return 1 end
local keep = tonumber(ARGV[2])
redis.call('HDEL', KEYS[1], 's', 'g')
redis.call('HSET', KEYS[1], 't', n, 'd', ARGV[6])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[9])
if redis.call('PTTL', KEYS[4]) < keep then redis.call('PEXPIRE', KEYS[4], keep) end
local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[8])
if extra > 0 then
  for _, v in ipairs(redis.call('ZRANGE', KEYS[4], 0, extra - 1)) do
    redis.call('DEL', ARGV[10] .. v)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1)
end
return 1
"#;

/// Delete: the entry goes, and a live record's purge floor becomes a fresh
/// draw, so every lease drawn before it is refused. Without a record no lease
/// is valid: nothing is left behind. Returns whether an entry was held, and a
/// chunked entry's manifest (its chunks are deleted next). Every variant goes
/// too, and a body being streamed (its readers fail: it predates the purge).
/// KEYS: entry, record, variants, stream. ARGV: slot prefix; for a tag
/// purge, [`FENCE`]'s field, purge id, epoch, window.
const DELETE_SCRIPT: &str = r#"
local d = redis.call('HGET', KEYS[1], 'd')
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[4])
for _, v in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  redis.call('DEL', ARGV[1] .. v)
end
redis.call('DEL', KEYS[3])
fence(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if d and string.sub(d, 1, 5) == 'SLc1|' then return {existed, d} end
return {existed, ''}
"#;

/// Soft purge: mark the entry and every variant slot stale (fields `s`:
/// soft-purged at, `g`: stale until — [`get`](CacheStore::get) applies them),
/// keep them (and the variant set) at least the grace, drop a body being
/// streamed, and raise a live record's purge floor as [`DELETE_SCRIPT`]
/// does. Returns whether an entry was held.
/// KEYS: entry, record, variants, stream. ARGV: slot prefix, now (ms), stale
/// until (ms), grace (ms); for a tag purge, [`FENCE`]'s field, purge id,
/// epoch, window.
const SOFT_DELETE_SCRIPT: &str = r#"
local keep = tonumber(ARGV[4])
local function soften(k)
  if redis.call('EXISTS', k) == 0 then return 0 end
  redis.call('HSET', k, 's', ARGV[2])
  if tonumber(redis.call('HGET', k, 'g') or '0') < tonumber(ARGV[3]) then
    redis.call('HSET', k, 'g', ARGV[3])
  end
  if redis.call('PTTL', k) < keep then redis.call('PEXPIRE', k, keep) end
  return 1
end
local held = soften(KEYS[1])
for _, v in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do soften(ARGV[1] .. v) end
if redis.call('EXISTS', KEYS[3]) == 1 and redis.call('PTTL', KEYS[3]) < keep then
  redis.call('PEXPIRE', KEYS[3], keep)
end
redis.call('DEL', KEYS[4])
fence(KEYS[2], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return held
"#;

/// A fill indexes its key under a tag, then reads the tag's purge record:
/// `{'<purged at>|<purge id>' or '', digests dropped to keep the index
/// bounded...}`.
/// KEYS: index, purge record. ARGV: digest, kept until (ms), drop members
/// kept until before this (ms), most members, keep (ms: the index lives at
/// least as long as the entry, by Redis' own clock).
const TAG_ADD_SCRIPT: &str = r#"
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local out = {redis.call('GET', KEYS[2]) or ''}
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], extra)
  for i = 1, #popped, 2 do out[#out + 1] = popped[i] end
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return out
"#;

/// A tag purge begins: record it (`<time>|<purge id>`: the latest time
/// and this purge's id, kept the purge window), then list the members still
/// kept.
/// KEYS: index, purge record. ARGV: now (ms), window (ms), members kept
/// until after this (ms), purge id.
const TAG_PURGE_SCRIPT: &str = r#"
local at = ARGV[1]
local cur = string.match(redis.call('GET', KEYS[2]) or '', '^(%d+)|')
if cur and tonumber(cur) > tonumber(at) then at = cur end
redis.call('SET', KEYS[2], at .. '|' .. ARGV[4], 'PX', ARGV[2])
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[3], '+inf')
"#;

/// Append a chunk to a stream, if it is still the key's stream.
/// KEYS: stream, chunk. ARGV: id, index, chunk, TTL (ms).
const STREAM_APPEND_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if tonumber(ARGV[2]) + 1 > n then redis.call('HSET', KEYS[1], 'n', tonumber(ARGV[2]) + 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Most variants stored per key; the least recently stored goes first.
const MAX_VARIANTS: usize = 16;

/// Entries larger than this are stored in chunks of this size.
const CHUNK_BYTES: usize = 512 * 1024;

/// How long a chunk outlives its entry: a reader that got the manifest at the
/// end of the entry's life still finds every chunk.
const CHUNK_GRACE_MS: i64 = 10_000;

/// What the entry key holds for a chunked entry: which object, how many chunks.
#[derive(Debug, PartialEq, Eq)]
struct Manifest {
    object: String,
    chunks: usize,
}

impl Manifest {
    const MAGIC: &'static [u8] = b"SLc1|";

    fn encode(&self) -> Vec<u8> {
        let mut out = Self::MAGIC.to_vec();
        out.extend_from_slice(format!("{}|{}", self.object, self.chunks).as_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let rest = std::str::from_utf8(bytes.strip_prefix(Self::MAGIC)?).ok()?;
        let (object, chunks) = rest.split_once('|')?;
        Some(Manifest {
            object: object.to_owned(),
            chunks: chunks.parse().ok()?,
        })
    }
}

fn script(body: &str) -> Arc<Script> {
    Arc::new(Script::from_lua(format!("{DRAW}\n{FENCE}\n{body}")))
}

/// A token from a script's `{epoch, seq}` reply.
fn token(reply: Vec<Value>) -> Result<FencingToken, StoreError> {
    let bad = || StoreError::Backend(format!("malformed lease reply: {reply:?}"));
    let epoch = reply.first().and_then(|v| v.as_string()).ok_or_else(bad)?;
    let seq = reply.get(1).and_then(Value::as_u64).ok_or_else(bad)?;
    Ok(FencingToken {
        epoch: epoch.parse().map_err(|_| bad())?,
        seq,
    })
}

/// Redis-backed store; entries and locks are shared by every instance.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: Arc<str>,
    lock_script: Arc<Script>,
    unlock_script: Arc<Script>,
    unlock_failed_script: Arc<Script>,
    renew_script: Arc<Script>,
    ticket_script: Arc<Script>,
    stream_append_script: Arc<Script>,
    put_script: Arc<Script>,
    delete_script: Arc<Script>,
    soft_delete_script: Arc<Script>,
    tag_add_script: Arc<Script>,
    tag_purge_script: Arc<Script>,
    purge_window: Duration,
    max_tag_members: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Builder for [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
    #[cfg(feature = "redis-tls")]
    tls: Option<rustls::ClientConfig>,
    purge_window: Duration,
    max_tag_members: usize,
}

impl RedisStoreBuilder {
    /// TLS for a `rediss://` URL (feature `redis-tls`): verify the server with
    /// `config` (its roots; the server name is the URL's host). Without it a
    /// `rediss://` URL uses fred's default (the system's roots). Never used
    /// for a `redis://` URL: that stays plaintext, as its scheme says.
    #[cfg(feature = "redis-tls")]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// How long a tag purge is remembered, for the fills that started
    /// before it (default [`tags::DEFAULT_PURGE_WINDOW`]): at least the
    /// longest a fill may take (the fill deadline) and a margin. A tagged
    /// fill older than this is refused.
    pub fn purge_window(mut self, window: Duration) -> Self {
        self.purge_window = window;
        self
    }

    /// Most keys one tag's index holds (default 100,000): past it the
    /// entries kept the shortest are deleted with their members.
    pub fn max_tag_members(mut self, n: usize) -> Self {
        self.max_tag_members = n.max(1);
        self
    }

    /// Key prefix (default `stampede`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Number of pooled connections (default 4).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Timeout of one command (default 250 ms): a slow Redis is a miss, not a hang.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Connect and return the store. Fails fast when the first connection fails.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let store = self.build(true)?;
        store.pool.init().await.map_err(backend)?;
        Ok(store)
    }

    /// Return the store at once and connect in the background, retrying with
    /// backoff until Redis answers: a process started during a Redis outage
    /// comes up (on a fallback, see [`FallbackStore`](super::FallbackStore))
    /// and joins Redis when it appears. Meanwhile every command fails within
    /// the command timeout and [`CacheStore::is_degraded`] is true. Fails only
    /// on a malformed URL.
    pub fn connect_lazily(self) -> Result<RedisStore, StoreError> {
        let store = self.build(false)?;
        // The handle drives the connections; dropping it does not stop them.
        drop(store.pool.connect());
        Ok(store)
    }

    fn build(self, fail_fast: bool) -> Result<RedisStore, StoreError> {
        let mut config = self.config()?;
        config.fail_fast = fail_fast;
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = command_timeout.max(Duration::from_secs(1));
                // One attempt: the lock script is idempotent for its owner, but a
                // resent fenced write after a timeout is not worth the wait.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            // Without a policy fred never reconnects after Redis restarts.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(self.pool_size)
            .map_err(backend)?;
        Ok(RedisStore {
            pool,
            prefix: self.prefix.into(),
            lock_script: script(LOCK_SCRIPT),
            unlock_script: Arc::new(Script::from_lua(UNLOCK_SCRIPT)),
            unlock_failed_script: Arc::new(Script::from_lua(UNLOCK_FAILED_SCRIPT)),
            renew_script: script(RENEW_SCRIPT),
            ticket_script: script(TICKET_SCRIPT),
            stream_append_script: Arc::new(Script::from_lua(STREAM_APPEND_SCRIPT)),
            put_script: script(PUT_SCRIPT),
            delete_script: script(DELETE_SCRIPT),
            soft_delete_script: script(SOFT_DELETE_SCRIPT),
            tag_add_script: Arc::new(Script::from_lua(TAG_ADD_SCRIPT)),
            tag_purge_script: Arc::new(Script::from_lua(TAG_PURGE_SCRIPT)),
            purge_window: self.purge_window,
            max_tag_members: self.max_tag_members,
        })
    }
}

impl RedisStoreBuilder {
    /// fred's configuration for the URL, with the TLS configuration given
    /// (`rediss://`): a TLS URL never yields a plaintext configuration.
    fn config(&self) -> Result<Config, StoreError> {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let tls_url = scheme.starts_with("rediss") || scheme.starts_with("valkeys");
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = self.tls.clone().filter(|_| tls_url) {
            // Parsed as its plaintext form so that fred does not build (and
            // fail on) its default connector, then given ours.
            let plain_scheme = scheme
                .replacen("rediss", "redis", 1)
                .replacen("valkeys", "valkey", 1);
            let mut config =
                Config::from_url(&format!("{plain_scheme}://{rest}")).map_err(backend)?;
            config.tls = Some(tls.into());
            debug_assert!(config.uses_tls());
            return Ok(config);
        }
        #[cfg(not(feature = "redis-tls"))]
        let _ = rest;
        let config = Config::from_url(&self.url).map_err(backend)?;
        if tls_url && !config.uses_tls() {
            return Err(StoreError::Backend(
                "a rediss:// URL needs TLS, and this build has none (feature redis-tls)".into(),
            ));
        }
        Ok(config)
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisStore {
    /// Start building a store for `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "stampede".into(),
            pool_size: 4,
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            #[cfg(feature = "redis-tls")]
            tls: None,
            purge_window: tags::DEFAULT_PURGE_WINDOW,
            max_tag_members: 100_000,
        }
    }

    /// Connect with default settings.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    fn keys(&self, key: &CacheKey) -> (String, String, String) {
        let tag = self.tag(key);
        (format!("{tag}:e"), format!("{tag}:l"), format!("{tag}:f"))
    }

    fn tag(&self, key: &CacheKey) -> String {
        format!("{}:v{FORMAT_VERSION}:{{{}}}", self.prefix, key.digest())
    }

    /// The index and purge record of a purge tag (a hash tag of their own:
    /// the tag's digest, never a client's or an origin's raw text).
    fn purge_tag_keys(&self, tag: &str) -> (String, String) {
        let digest = blake3::hash(tag.as_bytes()).to_hex();
        let base = format!("{}:v{FORMAT_VERSION}:{{t:{}}}", self.prefix, &digest[..32]);
        (format!("{base}:i"), format!("{base}:p"))
    }

    /// The field of a key's fence record a purge of `tag` notes itself in.
    fn tag_fence_field(tag: &str) -> String {
        format!("t:{}", &blake3::hash(tag.as_bytes()).to_hex()[..32])
    }

    /// [`FENCE`]'s arguments for a purge of `tag` with `id` (none: a purge
    /// of the key itself).
    fn fence_args(&self, tag: Option<(&str, u64)>) -> Vec<String> {
        match tag {
            Some((tag, id)) => vec![
                Self::tag_fence_field(tag),
                id.to_string(),
                new_epoch().to_string(),
                self.purge_window.as_millis().max(1).to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// Delete `key` (every variant), fenced; for a purge of a tag, noted in
    /// its record. Whether an entry was held.
    async fn delete_fenced(
        &self,
        key: &CacheKey,
        tag: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let (entry, _, record) = self.keys(key);
        let variants = format!("{}:vs", self.tag(key));
        let mut args = vec![format!("{}:e:", self.tag(key))];
        args.extend(self.fence_args(tag));
        let (existed, manifest): (i64, Bytes) = self
            .delete_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![entry, record, variants, format!("{}:s", self.tag(key))],
                args,
            )
            .await
            .map_err(backend)?;
        // A chunked entry's chunks go with it (unreachable already).
        if let Some(manifest) = Manifest::parse(&manifest) {
            let _: Result<i64, _> = self.pool.del(self.chunk_keys(key, &manifest)).await;
        }
        Ok(existed > 0)
    }

    /// Mark `key` stale (every variant) for `grace`, fenced; for a purge of
    /// a tag, noted in its record. Whether an entry was held.
    async fn soft_delete_fenced(
        &self,
        key: &CacheKey,
        grace: Duration,
        tag: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let (entry, _, record) = self.keys(key);
        let prefix = self.tag(key);
        let now = now_ms();
        let grace_ms = grace.as_millis().max(1) as u64;
        let mut args = vec![
            format!("{prefix}:e:"),
            now.to_string(),
            (now + grace_ms).to_string(),
            grace_ms.to_string(),
        ];
        args.extend(self.fence_args(tag));
        let held: i64 = self
            .soft_delete_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![entry, record, format!("{prefix}:vs"), format!("{prefix}:s")],
                args,
            )
            .await
            .map_err(backend)?;
        Ok(held > 0)
    }

    /// Index `digest` under every tag, kept `keep_ms` from `now`: the latest
    /// purge of each of those tags still recorded, and the digests dropped
    /// from an index to keep it bounded (their entries must go).
    async fn index_tags(
        &self,
        tagged: &[String],
        digest: &str,
        now: u64,
        keep_ms: u64,
    ) -> Result<(Vec<SeenPurge>, Vec<String>), StoreError> {
        let skew = tags::CLOCK_SKEW.as_millis() as u64;
        let adds = tagged.iter().map(|tag| {
            let (index, record) = self.purge_tag_keys(tag);
            self.tag_add_script.evalsha_with_reload::<Vec<Value>, _, _>(
                self.pool.next(),
                vec![index, record],
                vec![
                    digest.to_owned(),
                    (now + keep_ms).to_string(),
                    now.saturating_sub(skew).to_string(),
                    self.max_tag_members.to_string(),
                    keep_ms.to_string(),
                ],
            )
        });
        let (mut seen, mut dropped) = (Vec::new(), Vec::new());
        for (tag, reply) in tagged
            .iter()
            .zip(futures_util::future::join_all(adds).await)
        {
            let mut reply = reply.map_err(backend)?.into_iter();
            let record = reply.next().and_then(|v| v.as_string()).unwrap_or_default();
            if let Some((at, id)) = record.split_once('|') {
                seen.push(SeenPurge {
                    tag: tag.clone(),
                    at_ms: at.parse().unwrap_or(u64::MAX / 2),
                    id: id.parse().unwrap_or(0),
                });
            }
            dropped.extend(reply.filter_map(|v| v.as_string()));
        }
        if !dropped.is_empty() {
            metrics::counter!("stampede_tag_index_evictions_total").increment(dropped.len() as u64);
        }
        Ok((seen, dropped))
    }

    /// The slot `key` is read from: its entry, or the variant it names.
    fn slot(&self, key: &CacheKey, variant: Option<&str>) -> String {
        match variant {
            Some(v) => format!("{}:e:{v}", self.tag(key)),
            None => format!("{}:e", self.tag(key)),
        }
    }

    fn chunk_keys(&self, key: &CacheKey, manifest: &Manifest) -> Vec<String> {
        let tag = self.tag(key);
        (0..manifest.chunks)
            .map(|i| format!("{tag}:b:{}:{i}", manifest.object))
            .collect()
    }

    async fn write_chunks(
        &self,
        key: &CacheKey,
        manifest: &Manifest,
        encoded: &Bytes,
        keep_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let keys = self.chunk_keys(key, manifest);
        let writes = keys.iter().enumerate().map(|(i, k)| {
            let end = ((i + 1) * CHUNK_BYTES).min(encoded.len());
            let chunk = encoded.slice(i * CHUNK_BYTES..end);
            self.pool.set::<(), _, _>(
                k.clone(),
                Value::Bytes(chunk),
                Some(Expiration::PX(keep_ms + CHUNK_GRACE_MS)),
                None,
                false,
            )
        });
        for result in futures_util::future::join_all(writes).await {
            result.map_err(backend)?;
        }
        Ok(keys)
    }

    async fn read_chunks(
        &self,
        key: &CacheKey,
        manifest: &Manifest,
    ) -> Result<Option<Bytes>, StoreError> {
        let chunks: Vec<Option<Bytes>> = self
            .pool
            .mget(self.chunk_keys(key, manifest))
            .await
            .map_err(backend)?;
        let mut whole = bytes::BytesMut::with_capacity(manifest.chunks * CHUNK_BYTES);
        for chunk in chunks {
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            whole.extend_from_slice(&chunk);
        }
        Ok(Some(whole.freeze()))
    }

    /// The Redis key an entry lives under (for tests and operators).
    pub fn entry_key(&self, key: &CacheKey) -> String {
        self.keys(key).0
    }

    /// Wait until the pooled connections are up; `false` when `timeout`
    /// passed first (see [`RedisStoreBuilder::connect_lazily`]).
    pub async fn wait_for_connect(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.pool.wait_for_connect()).await,
            Ok(Ok(()))
        )
    }

    /// The pub/sub channel near caches announce invalidations on
    /// (`{prefix}:v{FORMAT_VERSION}:invalidate`; see [`NearCacheStore`](super::NearCacheStore)).
    pub fn invalidation_channel(&self) -> String {
        format!("{}:v{FORMAT_VERSION}:invalidate", self.prefix)
    }

    /// The underlying fred pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn is_distributed(&self) -> bool {
        true
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        let entry = self.slot(key, key.variant());
        let (token, data, soft_at, soft_until): (
            Option<u64>,
            Option<Bytes>,
            Option<u64>,
            Option<u64>,
        ) = self
            .pool
            .hmget(entry, vec!["t", "d", "s", "g"])
            .await
            .map_err(backend)?;
        let Some(bytes) = data else {
            return Ok(None);
        };
        let bytes = match Manifest::parse(&bytes) {
            Some(manifest) => match self.read_chunks(key, &manifest).await? {
                Some(whole) => whole,
                // Its chunks expired first (a read at the very end of its
                // life), or were never all written: a miss.
                None => return Ok(None),
            },
            None => bytes,
        };
        let mut entry = CachedResponse::decode(&bytes)?;
        entry.fence = token.unwrap_or(entry.fence);
        if let Some(at) = soft_at {
            tags::soften(&mut entry, at, soft_until.unwrap_or(at));
        }
        Ok(Some(Arc::new(entry)))
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        let (entry_key, _, record) = self.keys(key);
        let mut entry = entry.clone();
        entry.fence = lease.token.seq;
        let variant = entry.variant_id();
        let written = match &variant {
            Some(v) => format!("w:{v}"),
            None => "w".to_owned(),
        };
        let now = now_ms();
        let encoded = Bytes::from(entry.encode());
        let keep = entry.keep_for(now);
        let keep_ms = keep.as_millis().max(1) as i64;
        // A tagged entry is indexed first, then its tags' purge times are
        // read (see `tags`): a purge either lists it or is seen here.
        let tagged = tags::entry_tags(key, &entry);
        let (seen, dropped) = if tagged.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.index_tags(&tagged, key.digest(), now, keep_ms as u64)
                .await?
        };
        let index = match &variant {
            Some(_) => Bytes::from(CachedResponse::variant_index(&entry.vary, now, keep).encode()),
            None => Bytes::new(),
        };
        // A large entry goes in chunks first (no huge value or command), the
        // fenced write then puts its manifest under the entry key.
        let (payload, chunks) = if encoded.len() > CHUNK_BYTES {
            let manifest = Manifest {
                object: uuid::Uuid::new_v4().simple().to_string(),
                chunks: encoded.len().div_ceil(CHUNK_BYTES),
            };
            let keys = self.write_chunks(key, &manifest, &encoded, keep_ms).await?;
            (Bytes::from(manifest.encode()), keys)
        } else {
            (encoded, Vec::new())
        };
        let mut args = vec![
            Value::Bytes(payload),
            Value::from(keep_ms),
            Value::from(lease.token.epoch.to_string()),
            Value::from(lease.token.seq.to_string()),
            Value::from(written),
            Value::Bytes(index),
            Value::from(now.to_string()),
            Value::from(MAX_VARIANTS.to_string()),
            Value::from(variant.clone().unwrap_or_default()),
            Value::from(format!("{}:e:", self.tag(key))),
            Value::from(if tagged.is_empty() { "" } else { "1" }),
            Value::from(tags::request_ms(&entry).to_string()),
            Value::from(tags::CLOCK_SKEW.as_millis().to_string()),
            Value::from(self.purge_window.as_millis().to_string()),
        ];
        for purge in &seen {
            args.push(Value::from(Self::tag_fence_field(&purge.tag)));
            args.push(Value::from(purge.at_ms.to_string()));
            args.push(Value::from(purge.id.to_string()));
        }
        let result: i64 = self
            .put_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![
                    entry_key,
                    record,
                    self.slot(key, variant.as_deref()),
                    format!("{}:vs", self.tag(key)),
                ],
                args,
            )
            .await
            .map_err(backend)?;
        if result != 1 && !chunks.is_empty() {
            // Refused: its chunks are nobody's (they would expire anyway).
            let _: Result<i64, _> = self.pool.del(chunks).await;
        }
        // Members an index dropped to stay bounded: their entries go too.
        for digest in dropped {
            if let Err(err) = self.delete(&CacheKey::from_digest(&digest)).await {
                super::record_error(self, "delete", &err);
            }
        }
        Ok(match result {
            1 => PutOutcome::Written,
            -1 => PutOutcome::Fenced(Refusal::Superseded),
            -2 => PutOutcome::Fenced(Refusal::Purged),
            _ => PutOutcome::Fenced(Refusal::LeaseLost),
        })
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError> {
        self.delete_fenced(key, None).await
    }

    async fn soft_delete(&self, key: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        self.soft_delete_fenced(key, grace, None).await
    }

    async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<TagPurge, StoreError> {
        use futures_util::StreamExt;
        let (index, record) = self.purge_tag_keys(tag);
        let now = now_ms();
        let id = new_epoch();
        let skew = tags::CLOCK_SKEW.as_millis() as u64;
        let members: Vec<String> = self
            .tag_purge_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![index, record],
                vec![
                    now.to_string(),
                    self.purge_window.as_millis().max(1).to_string(),
                    now.saturating_sub(skew).to_string(),
                    id.to_string(),
                ],
            )
            .await
            .map_err(backend)?;
        // One per-key script per member (each on its own slot), a few at once.
        let results: Vec<(CacheKey, Result<bool, StoreError>)> =
            futures_util::stream::iter(members)
                .map(|digest| async move {
                    let key = CacheKey::from_digest(&digest);
                    let purged = match mode {
                        PurgeMode::Hard => self.delete_fenced(&key, Some((tag, id))).await,
                        PurgeMode::Soft { grace } => {
                            self.soft_delete_fenced(&key, grace, Some((tag, id))).await
                        }
                    };
                    (key, purged)
                })
                .buffer_unordered(32)
                .collect()
                .await;
        let mut purge = TagPurge::default();
        let mut failed = 0;
        for (key, result) in results {
            match result {
                Ok(held) => purge.hit += u64::from(held),
                Err(_) => failed += 1,
            }
            purge.keys.push(key);
        }
        if failed > 0 {
            return Err(StoreError::Backend(format!(
                "purge of tag {tag:?}: {failed} of {} keys failed",
                purge.keys.len()
            )));
        }
        Ok(purge)
    }

    async fn try_lock_after(
        &self,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        let (_, lock, record) = self.keys(key);
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let (held_epoch, held_seq) = holder
            .map(|h| (h.epoch.to_string(), h.seq.to_string()))
            .unwrap_or_default();
        let reply: Vec<Value> = self
            .lock_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![lock, record],
                vec![
                    owner.clone(),
                    (ttl.as_millis().max(1) as u64).to_string(),
                    new_epoch().to_string(),
                    now_ms().to_string(),
                    held_epoch,
                    held_seq,
                ],
            )
            .await
            .map_err(backend)?;
        match reply.first().and_then(Value::as_string).as_deref() {
            Some("h") => {
                let holder = reply.get(1..).unwrap_or_default().to_vec();
                return Ok(LockAttempt::Held(token(holder)?));
            }
            Some("!") => {
                let field = |i: usize| reply.get(i).and_then(Value::as_u64).unwrap_or(0);
                return Ok(LockAttempt::RecentFailure(RebuildFailure {
                    status: field(1) as u16,
                    until_ms: field(2),
                    lease: token(reply.get(3..).unwrap_or_default().to_vec())?,
                }));
            }
            _ => {}
        }
        Ok(LockAttempt::Acquired(LockLease {
            token: token(reply)?,
            owner,
            locked: true,
        }))
    }

    async fn unlock_failed(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        failure: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        let (_, lock, record) = self.keys(key);
        let keep = failure.until_ms.saturating_sub(now_ms()).max(1);
        let n: i64 = self
            .unlock_failed_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![lock, record],
                vec![
                    if lease.locked {
                        lease.owner.clone()
                    } else {
                        String::new()
                    },
                    failure.status.to_string(),
                    failure.until_ms.to_string(),
                    keep.to_string(),
                    lease.token.epoch.to_string(),
                    lease.token.seq.to_string(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError> {
        let (_, _, record) = self.keys(key);
        let reply: Vec<Value> = self
            .ticket_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![record],
                vec![
                    (ttl.as_millis().max(1) as u64).to_string(),
                    new_epoch().to_string(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(LockLease {
            token: token(reply)?,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            locked: false,
        })
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        if !lease.locked {
            return Ok(false);
        }
        let (_, lock, _) = self.keys(key);
        let n: i64 = self
            .unlock_script
            .evalsha_with_reload(self.pool.next(), vec![lock], vec![lease.owner.clone()])
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (_, lock, record) = self.keys(key);
        let n: i64 = self
            .renew_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![lock, record],
                vec![
                    lease.owner.clone(),
                    (ttl.as_millis().max(1) as u64).to_string(),
                    lease.token.epoch.to_string(),
                    lease.token.seq.to_string(),
                    if lease.locked { "1" } else { "0" }.to_owned(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn stream_open(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        head: Bytes,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let stream = format!("{}:s", self.tag(key));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{}|{}", lease.token.epoch, lease.token.seq);
        let fields: Vec<(&str, Value)> = vec![
            ("id", Value::from(id.as_str())),
            ("t", Value::from(holder)),
            ("h", Value::Bytes(head)),
            ("n", Value::from(0)),
            ("d", Value::from("")),
        ];
        let _: () = self.pool.hset(&stream, fields).await.map_err(backend)?;
        let _: () = self
            .pool
            .pexpire(&stream, ttl.as_millis().max(1) as i64, None)
            .await
            .map_err(backend)?;
        Ok(Some(id))
    }

    async fn stream_append(
        &self,
        key: &CacheKey,
        id: &str,
        index: u64,
        chunk: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let tag = self.tag(key);
        let _: i64 = self
            .stream_append_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![format!("{tag}:s"), format!("{tag}:s:{id}:{index}")],
                vec![
                    Value::from(id),
                    Value::from(index.to_string()),
                    Value::Bytes(chunk),
                    Value::from((ttl.as_millis().max(1) as u64).to_string()),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn stream_end(&self, key: &CacheKey, id: &str, complete: bool) -> Result<(), StoreError> {
        let stream = format!("{}:s", self.tag(key));
        let current: Option<String> = self.pool.hget(&stream, "id").await.map_err(backend)?;
        if current.as_deref() == Some(id) {
            let _: () = self
                .pool
                .hset(&stream, ("d", if complete { "1" } else { "0" }))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn stream_find(
        &self,
        key: &CacheKey,
        holder: FencingToken,
    ) -> Result<Option<StreamHead>, StoreError> {
        let stream = format!("{}:s", self.tag(key));
        let (id, token, head, done): (
            Option<String>,
            Option<String>,
            Option<Bytes>,
            Option<String>,
        ) = self
            .pool
            .hmget(&stream, vec!["id", "t", "h", "d"])
            .await
            .map_err(backend)?;
        let ours = token.as_deref() == Some(&format!("{}|{}", holder.epoch, holder.seq));
        Ok(match (id, head) {
            (Some(id), Some(head)) if ours && done.as_deref() != Some("0") => {
                Some(StreamHead { id, head })
            }
            _ => None,
        })
    }

    async fn stream_read(
        &self,
        key: &CacheKey,
        id: &str,
        from: u64,
    ) -> Result<StreamChunks, StoreError> {
        let tag = self.tag(key);
        let stream = format!("{tag}:s");
        let (current, n, done): (Option<String>, Option<u64>, Option<String>) = self
            .pool
            .hmget(&stream, vec!["id", "n", "d"])
            .await
            .map_err(backend)?;
        if current.as_deref() != Some(id) {
            // Gone (expired, purged) or replaced: this body will not be whole.
            return Ok(StreamChunks {
                chunks: Vec::new(),
                end: Some(false),
            });
        }
        let n = n.unwrap_or(0);
        let mut chunks = Vec::new();
        if n > from {
            let keys: Vec<String> = (from..n).map(|i| format!("{tag}:s:{id}:{i}")).collect();
            let found: Vec<Option<Bytes>> = if keys.len() == 1 {
                vec![self.pool.get(&keys[0]).await.map_err(backend)?]
            } else {
                self.pool.mget(keys).await.map_err(backend)?
            };
            for chunk in found {
                match chunk {
                    Some(c) => chunks.push(c),
                    None => {
                        return Ok(StreamChunks {
                            chunks,
                            end: Some(false),
                        });
                    }
                }
            }
        }
        let end = match done.as_deref() {
            Some("1") if n == from + chunks.len() as u64 => Some(true),
            Some("0") => Some(false),
            _ => None,
        };
        Ok(StreamChunks { chunks, end })
    }

    fn is_degraded(&self) -> bool {
        !self.pool.clients().iter().any(|c| c.is_connected())
    }

    async fn wait_for_fill(&self, _key: &CacheKey, timeout: Duration) {
        // Polling: the lock layer backs off exponentially with jitter between reads.
        tokio::time::sleep(timeout).await;
    }
}
