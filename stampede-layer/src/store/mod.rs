//! Cache store backends behind one trait: the in-process store (moka, the
//! embedded default) and Redis (fred), plus two wrappers: a circuit breaker
//! that falls back to the in-process store, and a near cache (L1) that
//! answers fresh hits without a round trip to Redis. A store holds entries *and* the
//! per-key rebuild lock with its fencing token, so that one backend decides
//! the scope of coordination: process-wide for memory, fleet-wide for Redis.
//!
//! This module is also the protocol a custom store (memcached, DynamoDB, …)
//! implements against: the [`CacheStore`] trait and what it stores and is
//! keyed by — [`CachedResponse`] (with its [`encode`](CachedResponse::encode)
//! and [`decode`](CachedResponse::decode)), [`CacheKey`], the leases
//! ([`LockLease`], [`LockAttempt`]) and their [`FencingToken`]s ([`fence`]:
//! the fence record every write is checked against), [`RebuildFailure`],
//! [`PutOutcome`], and tag purges ([`tags`]). The layers use a store only
//! through the trait. `testing::contract::run` (feature `test-util`) checks
//! that a store keeps the contract.
//!
//! A fleet's store, as the gateway builds it: Redis, an in-process store
//! standing in while Redis is down, and a near cache in front whose deletes
//! reach every instance:
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo() -> Result<(), stampede_layer::StoreError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use stampede_layer::{
//!     FallbackStore, MemoryStore, NearCacheConfig, NearCacheStore, RedisStore, SharedStore,
//!     StampedeLayer,
//! };
//!
//! let redis = RedisStore::builder("redis://127.0.0.1:6379").connect().await?;
//! let breaker = FallbackStore::new(redis.clone(), MemoryStore::default())
//!     .degraded_ttl(Duration::from_secs(1));
//! let near =
//!     NearCacheStore::with_redis_invalidation(breaker, NearCacheConfig::default(), &redis).await?;
//! let store: SharedStore = Arc::new(near);
//! let layer = StampedeLayer::new(store);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod fallback;
pub mod fence;
mod memory;
mod near;
#[cfg(feature = "redis")]
mod redis;
pub mod tags;
#[cfg(test)]
mod test_fake;

pub use fallback::FallbackStore;
pub use fence::{FencingToken, Refusal};
pub use memory::MemoryStore;
pub use near::{NearCacheConfig, NearCacheStore};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
pub use tags::{PurgeMode, TagPurge};

// What a store holds and is keyed by: the protocol a custom store implements.
pub use crate::entry::{CachedResponse, DecodeError, EntryKind, Freshness, VaryValues, now_ms};
pub use crate::key::CacheKey;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// A store operation that failed. The layers treat every error as "no answer
/// from the cache" and go on without it; none reaches a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the command.
    #[error("store backend error: {0}")]
    Backend(String),
    /// An entry was found but could not be decoded (corrupt or foreign).
    #[error("undecodable entry: {0}")]
    Decode(#[from] DecodeError),
}

/// The result of a fenced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry was written.
    Written,
    /// Refused by the key's fence (see [`fence`]).
    Fenced(Refusal),
}

/// A lease on one key, drawn before its rebuild asks the origin: the
/// rebuild lock's ([`CacheStore::try_lock`]) or a lock-less ticket
/// ([`CacheStore::ticket`]). Every write holds one (see [`fence`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLease {
    /// The fencing token the write is checked with.
    pub token: FencingToken,
    /// Unique owner value; only the owner can renew or release the lock.
    pub owner: String,
    /// Whether the lease holds the key's rebuild lock (else: a ticket).
    pub locked: bool,
}

/// What taking a rebuild lock gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockAttempt {
    /// The lock, with a fresh lease.
    Acquired(LockLease),
    /// Someone else holds it: a rebuild is running, with this lease.
    Held(FencingToken),
    /// Free, but the rebuild this waiter waited on failed: answer its outcome
    /// (stale-if-error, or an error with `Retry-After`) instead of asking
    /// the failing origin again. Only a waiter gets it
    /// ([`CacheStore::try_lock_after`]); a request that comes later starts
    /// a new rebuild, as HTTP caching wants.
    RecentFailure(RebuildFailure),
}

impl LockAttempt {
    /// The lease, if the lock was taken.
    pub fn acquired(self) -> Option<LockLease> {
        match self {
            LockAttempt::Acquired(lease) => Some(lease),
            _ => None,
        }
    }

    /// Whether someone else holds the lock.
    pub fn is_held(&self) -> bool {
        matches!(self, LockAttempt::Held(_))
    }
}

/// The outcome a failed rebuild leaves on its key's lock, briefly (as
/// pingora's `LockStatus`): every request that waited on it, on any
/// instance, learns it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RebuildFailure {
    /// The status the rebuild ended with (a 5xx).
    pub status: u16,
    /// Until when (ms since the epoch) it is answered to its waiters; also
    /// the `Retry-After` they are given.
    pub until_ms: u64,
    /// The lease of the rebuild that failed (set by the store).
    pub lease: FencingToken,
}

impl RebuildFailure {
    /// Whether a waiter that saw `holder` hold the lock waited on this failure.
    pub fn answers(&self, holder: FencingToken, now_ms: u64) -> bool {
        self.until_ms > now_ms && self.lease.epoch == holder.epoch && self.lease.seq >= holder.seq
    }
}

/// A body a rebuild is streaming into the store ([`CacheStore::stream_open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHead {
    /// The stream's id.
    pub id: String,
    /// The answer's status and headers (an encoded entry without body).
    pub head: Bytes,
}

/// What [`CacheStore::stream_read`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChunks {
    /// The chunks from the one asked for, in order.
    pub chunks: Vec<Bytes>,
    /// `Some(true)`: every chunk is written; `Some(false)`: the body failed
    /// or the stream is gone; `None`: more to come.
    pub end: Option<bool>,
}

/// A shared store handle.
pub type SharedStore = Arc<dyn CacheStore>;

impl std::fmt::Debug for dyn CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheStore({})", self.backend())
    }
}

/// A cache store: entries plus the per-key rebuild lock.
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Short backend name for metrics and logs (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Whether the lock reaches other processes (a fleet).
    fn is_distributed(&self) -> bool;

    /// Read an entry (`None`: absent or expired from the store). Shared,
    /// not copied: an in-process store hands out the entry it holds.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError>;

    /// [`get`](Self::get) if it can be answered without waiting (an entry
    /// held in this process); `None` when it cannot, and the default. The
    /// stack's fast path for fresh hits reads through it and takes the
    /// layers (and [`get`](Self::get)) whenever it answers `None` or
    /// `Some(None)`, so a store gives `Some` only for what `get` would give
    /// at this moment.
    fn get_now(&self, key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        let _ = key;
        None
    }

    /// Read an entry from the store of record, past any near cache: the
    /// re-reads that coordinate a rebuild (inside a flight or a lock, after
    /// waiting for another's fill) must see what the fleet sees. Stores
    /// without a near copy answer it like [`get`](Self::get).
    async fn get_authoritative(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        self.get(key).await
    }

    /// Write `entry`, kept for `entry.keep_for(now)`, if `lease` may still
    /// write it (atomic check-and-set, [`fence`]): its fence record is the
    /// current one, no purge and no write of the same variant
    /// ([`CachedResponse::variant_id`]) was ordered after the lease was drawn.
    /// A store that purges by tag ([`purge_tag`](Self::purge_tag)) indexes
    /// the entry under its [`tags::entry_tags`] first, and refuses it
    /// ([`Refusal::Purged`]) when one of them was purged after its origin
    /// request started (see [`tags`]).
    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError>;

    /// Remove the entry (every variant), and fence the key: a fill whose
    /// lease was drawn before the delete (a rebuild in flight during a purge)
    /// is refused when it lands, so an invalidation is never undone by an
    /// older answer. Returns whether an entry was held.
    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError>;

    /// Mark the entry stale (every variant) instead of removing it: fresh
    /// until now, stale — answerable by stale-while-revalidate while one
    /// refresh runs — until at least `grace` from now; fenced like
    /// [`delete`](Self::delete) (a fill whose lease was drawn before is
    /// refused). Returns whether an entry was held. A store that cannot mark
    /// entries stale removes them (the default: a hard purge).
    async fn soft_delete(&self, key: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        let _ = grace;
        self.delete(key).await
    }

    /// [`delete`](Self::delete) or [`soft_delete`](Self::soft_delete), as
    /// `mode` says.
    async fn purge(&self, key: &CacheKey, mode: PurgeMode) -> Result<bool, StoreError> {
        match mode {
            PurgeMode::Hard => self.delete(key).await,
            PurgeMode::Soft { grace } => self.soft_delete(key, grace).await,
        }
    }

    /// Purge every entry indexed under `tag` (an origin tag, or a path
    /// prefix's [`tags::prefix_tag`]), fenced: the purge is recorded first,
    /// then every member of the tag's index is purged
    /// ([`purge`](Self::purge)), and a tagged fill that asked the origin
    /// before the purge is refused when it lands (see [`tags`]). A store
    /// keeps the index in [`put`](Self::put). The default: an error (the
    /// store indexes no tags; a purge it cannot do is never reported done).
    async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<TagPurge, StoreError> {
        let _ = (tag, mode);
        Err(StoreError::Backend(format!(
            "the {} store cannot purge by tag",
            self.backend()
        )))
    }

    /// Try to take the rebuild lock of `key` (one per URL, whatever the
    /// variant) for `ttl`, with a fresh lease.
    async fn try_lock(&self, key: &CacheKey, ttl: Duration) -> Result<LockAttempt, StoreError> {
        self.try_lock_after(key, ttl, None).await
    }

    /// [`try_lock`](Self::try_lock) for a request that waited on the rebuild
    /// of `holder` (the lease [`LockAttempt::Held`] named): if that rebuild,
    /// or one that took over from it, failed moments ago, its outcome
    /// instead ([`LockAttempt::RecentFailure`]).
    async fn try_lock_after(
        &self,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<FencingToken>,
    ) -> Result<LockAttempt, StoreError>;

    /// Release the lock `lease` holds and leave `failure` (its `lease` set to
    /// this one's) on the key until its `until_ms`, for the requests that
    /// waited on it. Returns whether the lock was ours.
    async fn unlock_failed(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        failure: &RebuildFailure,
    ) -> Result<bool, StoreError>;

    /// Draw a lease without the lock (a ticket), valid for `ttl` unless
    /// renewed: what a fill that holds no lock writes with.
    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError>;

    /// The holder of `lease` is done with it (its write landed or never will):
    /// a store may forget the key's fence record once no lease drawn from it
    /// is out (the in-process store does; Redis lets it expire). Called for
    /// every lease, besides [`unlock`](Self::unlock) for a lock's.
    fn release_lease(&self, _key: &CacheKey, _lease: &LockLease) {}

    /// Release the lock if `lease` still owns it (compare-and-delete).
    /// Returns whether it was released (`false` for a ticket).
    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError>;

    /// Keep `lease` valid for `ttl` more (its fence record, and its lock if it
    /// holds one: compare-and-expire). `false`: the lease is void (the lock
    /// is gone or someone else's, the record is another incarnation, or a
    /// purge came after it): its write would be refused, stop renewing.
    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Wait until an entry for `key` is written or `timeout` passes, whichever
    /// is first. Backends without write events just sleep `timeout`; callers
    /// re-read the entry either way.
    async fn wait_for_fill(&self, key: &CacheKey, timeout: Duration);

    /// Open a stream of the body `lease`'s rebuild is fetching (read-while-write
    /// across a fleet): `head` is the answer's status and headers; other
    /// instances waiting on the lock read the body from it as it arrives.
    /// `None`: the store streams nothing (the in-process store: single-flight
    /// already shares the body in process).
    async fn stream_open(
        &self,
        _key: &CacheKey,
        _lease: &LockLease,
        _head: Bytes,
        _ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Append chunk number `index` to the stream `id` (kept `ttl` more).
    async fn stream_append(
        &self,
        _key: &CacheKey,
        _id: &str,
        _index: u64,
        _chunk: Bytes,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The stream ended: every byte arrived (`complete`) or the body failed.
    async fn stream_end(
        &self,
        _key: &CacheKey,
        _id: &str,
        _complete: bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The stream of `key` the rebuild holding `holder` opened, if any.
    async fn stream_find(
        &self,
        _key: &CacheKey,
        _holder: FencingToken,
    ) -> Result<Option<StreamHead>, StoreError> {
        Ok(None)
    }

    /// Chunks `from..` of the stream `id` so far, and whether it ended.
    async fn stream_read(
        &self,
        _key: &CacheKey,
        _id: &str,
        _from: u64,
    ) -> Result<StreamChunks, StoreError> {
        Ok(StreamChunks {
            chunks: Vec::new(),
            end: Some(false),
        })
    }

    /// Whether the store runs degraded: a shared backend that cannot be
    /// reached, its in-process fallback serving meanwhile.
    fn is_degraded(&self) -> bool {
        false
    }

    /// Drop every entry held in this process (an in-process store; a
    /// fallback's local copies). Shared backends ignore it.
    fn clear(&self) {}

    /// Number of entries held, where the backend knows it cheaply.
    fn entry_count(&self) -> Option<u64> {
        None
    }
}

/// Read an entry; a failed read is counted and answered as a miss (the
/// layers never fail a request because the cache did).
pub(crate) async fn get_or_miss(
    store: &dyn CacheStore,
    key: &CacheKey,
) -> Option<Arc<CachedResponse>> {
    match store.get(key).await {
        Ok(found) => found,
        Err(err) => {
            record_error(store, "get", &err);
            None
        }
    }
}

/// Read `key` as a request with `request` headers selects it: a key whose
/// answers vary holds a variant index ([`EntryKind::Variants`](crate::entry::EntryKind::Variants))
/// and each variant in a slot of its own; the one the request selects is
/// read next. Returns the key scoped to that variant, and what it holds.
/// `authoritative`: past any near cache (the re-reads that coordinate a rebuild).
pub(crate) async fn read_selected(
    store: &dyn CacheStore,
    key: CacheKey,
    request: &http::HeaderMap,
    authoritative: bool,
) -> (CacheKey, Option<Arc<CachedResponse>>) {
    let read = |key: CacheKey| async move {
        let found = if authoritative {
            reread_or_miss(store, &key).await
        } else {
            get_or_miss(store, &key).await
        };
        (key, found)
    };
    let primary = match key.variant() {
        Some(_) => key.with_variant(None),
        None => key,
    };
    let (primary, found) = read(primary).await;
    match found {
        Some(index) if index.is_variant_index() => {
            let variant = index.vary.variant_of(request);
            read(primary.with_variant(Some(variant))).await
        }
        other => (primary, other),
    }
}

/// [`get_or_miss`] for the re-reads that coordinate a rebuild
/// ([`CacheStore::get_authoritative`]).
pub(crate) async fn reread_or_miss(
    store: &dyn CacheStore,
    key: &CacheKey,
) -> Option<Arc<CachedResponse>> {
    match store.get_authoritative(key).await {
        Ok(found) => found,
        Err(err) => {
            record_error(store, "get", &err);
            None
        }
    }
}

/// Count a store error under `stampede_store_errors_total{backend,op}`.
pub(crate) fn record_error(store: &dyn CacheStore, op: &'static str, err: &StoreError) {
    let op = if matches!(err, StoreError::Decode(_)) {
        "decode"
    } else {
        op
    };
    metrics::counter!("stampede_store_errors_total", "backend" => store.backend(), "op" => op)
        .increment(1);
    tracing::warn!(backend = store.backend(), op, error = %err, "cache store error");
}
