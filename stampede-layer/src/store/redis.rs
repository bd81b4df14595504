//! The Redis store (fred): entries, the rebuild lock and fencing tokens.
//!
//! Every key for one cache key shares a hash tag,
//! `{prefix}:v{FORMAT_VERSION}:{<digest>}:e|l|f` (the entry format version is
//! in the prefix, so two versions of the gateway in one fleet never read each
//! other's entries),
//! so the scripts that touch several of them stay valid on Redis Cluster, and
//! every key a script touches is passed through `KEYS`.
//!
//! * entry `…:e` — a hash `{t: fencing token, d: encoded entry}` with `PEXPIRE`
//!   = fresh TTL + stale window (+ the retention for revalidation); after a
//!   delete, a tombstone `{t}` (no `d`) for [`INVALIDATION_HOLD`] fences out
//!   fills that started before it;
//! * lock `…:l` (`…:l:<variant>` for a variant's rebuild) — `owner|token`, `PX` =
//!   lock TTL, extended by its owner while the rebuild runs;
//! * fence `…:f` — the per-key token counter (`INCR`); lock acquisitions,
//!   unlocked writes and deletes draw from it. It expires with the entry (and
//!   never before a held lock): if it is gone, the next token is seeded from the
//!   entry's, so tokens stay monotonic while nothing for a key outlives what it
//!   serves — a flood of distinct keys leaves nothing behind.

use super::{CacheStore, INVALIDATION_HOLD, LockLease, PutOutcome, StoreError};
use crate::entry::{CachedResponse, FORMAT_VERSION, now_ms};
use crate::key::CacheKey;
use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::Arc;
use std::time::Duration;

/// Draw the key's next fencing token (a Lua snippet shared by the scripts):
/// `INCR` the counter, never below the stored entry's token + 1 (the counter
/// may have expired before a tombstone or a retained entry).
const NEXT_TOKEN: &str = r#"
local function next_token(entry, fence)
  local stored = tonumber(redis.call('HGET', entry, 't') or '0')
  local tok = redis.call('INCR', fence)
  if tok <= stored then
    tok = stored + 1
    redis.call('SET', fence, tok)
  end
  return tok
end
-- The counter lives at least `ms` more (as long as what it fences).
local function keep_fence(fence, ms)
  if redis.call('PTTL', fence) < tonumber(ms) then redis.call('PEXPIRE', fence, ms) end
end
"#;

/// Take the lock and a fresh fencing token atomically. Idempotent for its
/// owner: a resent attempt (fred retries after a dropped connection) finds
/// its own value and gets its token back instead of a false "contended".
/// KEYS: lock, fence, entry. ARGV: owner, lock TTL (ms).
const LOCK_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, tok = string.match(cur, '^(.*)|(%d+)$')
  if owner == ARGV[1] then return tonumber(tok) end
  return 0
end
local tok = next_token(KEYS[3], KEYS[2])
keep_fence(KEYS[2], math.max(redis.call('PTTL', KEYS[3]), tonumber(ARGV[2])))
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. tok, 'PX', ARGV[2])
return tok
"#;

/// Compare-and-delete: release only our own lock.
const UNLOCK_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*)|%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Compare-and-expire: extend our own lock, unless a newer token reached the
/// entry meanwhile (a delete or another writer: this rebuild's write would be
/// refused, so holding the lock longer only delays the next one).
/// KEYS: lock, fence, entry. ARGV: owner, lock TTL (ms), token.
const RENEW_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, '^(.*)|%d+$') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[3], 't') or '0') > tonumber(ARGV[3]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
keep_fence(KEYS[2], ARGV[2])
return 1
"#;

/// Fenced write: refuse a token older than the stored entry's (or
/// tombstone's). A write without a lock (token 0) takes the next token of the
/// key's counter, so it counts as the newest write at the moment it lands
/// (monotonic versions): a lock holder that lost its lock meanwhile is still
/// refused afterwards. Returns -1 when written, else the stored (newer) token.
/// KEYS: entry, fence. ARGV: payload, token, keep (ms).
const PUT_SCRIPT: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
local tok = tonumber(ARGV[2])
if tok == 0 then tok = next_token(KEYS[1], KEYS[2]) end
if tok < cur then return cur end
redis.call('HSET', KEYS[1], 't', tok, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
keep_fence(KEYS[2], ARGV[3])
return -1
"#;

/// Delete with a tombstone: the entry becomes `{t: next token}` for the hold,
/// so a fill holding an older token is refused when it lands. A key with
/// neither entry nor counter has no fill in flight: nothing is left behind.
/// KEYS: entry, fence. ARGV: hold (ms).
const DELETE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local tok = next_token(KEYS[1], KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', tok)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
keep_fence(KEYS[2], ARGV[1])
return tok
"#;

fn script(body: &str) -> Arc<Script> {
    Arc::new(Script::from_lua(format!("{NEXT_TOKEN}\n{body}")))
}

/// Redis-backed store; entries and locks are shared by every instance.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: Arc<str>,
    lock_script: Arc<Script>,
    unlock_script: Arc<Script>,
    renew_script: Arc<Script>,
    put_script: Arc<Script>,
    delete_script: Arc<Script>,
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
}

impl RedisStoreBuilder {
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
        let mut config = Config::from_url(&self.url).map_err(backend)?;
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
            renew_script: script(RENEW_SCRIPT),
            put_script: script(PUT_SCRIPT),
            delete_script: script(DELETE_SCRIPT),
        })
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
        }
    }

    /// Connect with default settings.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    fn keys(&self, key: &CacheKey) -> (String, String, String) {
        let tag = format!("{}:v{FORMAT_VERSION}:{{{}}}", self.prefix, key.digest());
        let lock = match key.variant() {
            Some(v) => format!("{tag}:l:{v}"),
            None => format!("{tag}:l"),
        };
        (format!("{tag}:e"), lock, format!("{tag}:f"))
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
        let (entry, _, _) = self.keys(key);
        let (token, data): (Option<u64>, Option<Bytes>) = self
            .pool
            .hmget(entry, vec!["t", "d"])
            .await
            .map_err(backend)?;
        match data {
            None => Ok(None),
            Some(bytes) => {
                let mut entry = CachedResponse::decode(&bytes)?;
                entry.fence = token.unwrap_or(entry.fence);
                Ok(Some(Arc::new(entry)))
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &CachedResponse) -> Result<PutOutcome, StoreError> {
        let (entry_key, _, fence_key) = self.keys(key);
        let payload = Bytes::from(entry.encode());
        let keep_ms = entry.keep_for(now_ms()).as_millis() as i64;
        let result: i64 = self
            .put_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![entry_key, fence_key],
                vec![
                    Value::Bytes(payload),
                    Value::from(entry.fence.to_string()),
                    Value::from(keep_ms),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(if result < 0 {
            PutOutcome::Written
        } else {
            PutOutcome::Fenced {
                current: result as u64,
            }
        })
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        let (entry, _, fence) = self.keys(key);
        let _: i64 = self
            .delete_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![entry, fence],
                vec![INVALIDATION_HOLD.as_millis().to_string()],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn try_lock(
        &self,
        key: &CacheKey,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError> {
        let (entry, lock, fence) = self.keys(key);
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let token: i64 = self
            .lock_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![lock, fence, entry],
                vec![owner.clone(), (ttl.as_millis().max(1) as u64).to_string()],
            )
            .await
            .map_err(backend)?;
        Ok((token > 0).then_some(LockLease {
            token: token as u64,
            owner,
        }))
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
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
        let (entry, lock, fence) = self.keys(key);
        let n: i64 = self
            .renew_script
            .evalsha_with_reload(
                self.pool.next(),
                vec![lock, fence, entry],
                vec![
                    lease.owner.clone(),
                    (ttl.as_millis().max(1) as u64).to_string(),
                    lease.token.to_string(),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn is_degraded(&self) -> bool {
        !self.pool.clients().iter().any(|c| c.is_connected())
    }

    async fn wait_for_fill(&self, _key: &CacheKey, timeout: Duration) {
        // Polling: the lock layer backs off exponentially with jitter between reads.
        tokio::time::sleep(timeout).await;
    }
}
