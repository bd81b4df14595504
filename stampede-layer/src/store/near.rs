//! A near cache (L1): fresh entries kept in process memory in front of a
//! shared store (L2, Redis), so a fleet's hot-key hits stop costing a Redis
//! round trip each.
//!
//! * **Reads**: [`get`](CacheStore::get) answers from the near copy only
//!   while the entry is still fresh *and* younger than the configured bound
//!   ([`NearCacheConfig::ttl`]); anything else goes to the inner store, and a
//!   fresh answer is remembered for `min(remaining freshness, bound)`. A near
//!   copy is never served past its own freshness: stale entries, misses and
//!   hit-for-miss decisions past the bound always come from the store of
//!   record, so stale-while-revalidate and the lock see the fleet's state.
//!   The re-reads that coordinate a rebuild
//!   ([`get_authoritative`](CacheStore::get_authoritative)) skip the near
//!   copy altogether.
//! * **Writes, locks, fencing**: every other operation goes to the inner
//!   store unchanged; an entry written under a lock (its fencing token known)
//!   also replaces the local near copy.
//! * **Invalidation**: [`delete`](CacheStore::delete) (purge, unsafe
//!   methods), [`soft_delete`](CacheStore::soft_delete) and every key a
//!   [`purge_tag`](CacheStore::purge_tag) fenced drop the local copy and, with
//!   [`with_redis_invalidation`](NearCacheStore::with_redis_invalidation),
//!   publishes the key's digest on the store's invalidation channel; every
//!   other instance drops its copy when the message arrives. Entries are held
//!   per digest, so one delete drops every variant of a key. When the
//!   subscriber loses its connection (or falls behind) the whole near cache
//!   is cleared, since invalidations may have been missed; either way no
//!   copy outlives the bound.
//!
//! Concurrent misses of one key share one read of the inner store, so the
//! end of a hot key's near copy costs one Redis read per instance, not one per
//! request in flight (a stale or absent answer is shared by the requests that
//! waited on that read, never kept).
//!
//! A read that raced an invalidation (it read the store before the delete
//! and lands its copy after it) is caught by a per-shard invalidation
//! counter: the copy is dropped again if an invalidation of its shard
//! happened while it was being read.

use super::tags::{PurgeMode, TagPurge};
use super::{CacheStore, LockAttempt, LockLease, PutOutcome, RebuildFailure, StoreError};
use crate::entry::{CachedResponse, now_ms};
use crate::key::CacheKey;
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The near-cache slot of a key's entry (`digest`) or of a variant.
fn slot_of(digest: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{digest}|{v}"),
        None => digest.to_owned(),
    }
}

/// Invalidation counters: a digest maps to one of these shards.
const SHARDS: usize = 64;

/// Bounds of a [`NearCacheStore`]. Start from [`Default`] and set the fields
/// you need (`#[non_exhaustive]`: bounds may be added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheConfig {
    /// Longest a copy is served from memory after it was read from (or
    /// written to) the inner store; never past the entry's freshness.
    /// Zero turns the near cache off (every operation goes to the inner store).
    pub ttl: Duration,
    /// Most entries held.
    pub max_entries: u64,
    /// About the most bytes held (entries are weighed as in [`MemoryStore`](super::MemoryStore)).
    pub max_bytes: u64,
}

impl Default for NearCacheConfig {
    /// 1 s, 10,000 entries, 64 MiB.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(1),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a read of the inner store found, to share with the requests that
/// waited on it (`None`: the read failed).
fn found_now(
    found: &Result<Option<Arc<CachedResponse>>, StoreError>,
) -> Option<Option<Arc<CachedResponse>>> {
    found.as_ref().ok().cloned()
}

/// A near copy and the instant (ms since the epoch) it stops being served.
struct NearEntry {
    entry: Arc<CachedResponse>,
    until_ms: u64,
}

struct NearExpiry;

impl NearExpiry {
    /// Until `until_ms`, less the millisecond `now_ms` may have truncated:
    /// moka drops a copy no later than `until_ms`. A copy moka still held
    /// past it would be passed over by the lookup but handed back by moka's
    /// coalesced read, so every request in that window would read the inner
    /// store on its own.
    fn left(value: &NearEntry) -> Option<Duration> {
        Some(Duration::from_millis(
            value.until_ms.saturating_sub(now_ms() + 1).max(1),
        ))
    }
}

impl Expiry<String, Arc<NearEntry>> for NearExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<NearEntry>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Self::left(value)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<NearEntry>,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Self::left(value)
    }
}

/// The near copies, shared with the invalidation listener.
struct Near {
    /// Copies by slot: `digest`, or `digest|variant` for a variant.
    entries: Cache<String, Arc<NearEntry>>,
    /// Digests with variant copies (dropped by prefix on invalidation).
    varied: Cache<String, ()>,
    /// Lock waiters of this process, per digest, woken by fill events.
    fills: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    ttl_ms: u64,
    epochs: [AtomicU64; SHARDS],
}

impl Near {
    fn new(config: &NearCacheConfig) -> Self {
        let floor = (config.max_bytes / config.max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let entries = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_k: &String, v: &Arc<NearEntry>| v.entry.weight().max(floor))
            .expire_after(NearExpiry)
            .support_invalidation_closures()
            .build();
        Self {
            entries,
            varied: Cache::builder()
                .max_capacity(config.max_entries.max(1))
                .time_to_live(config.ttl.max(Duration::from_millis(1)) * 2)
                .build(),
            fills: Default::default(),
            ttl_ms: config.ttl.as_millis().min(u64::MAX as u128) as u64,
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn enabled(&self) -> bool {
        self.ttl_ms > 0
    }

    /// The shard of a digest, or of a slot (`digest|variant`): every slot of
    /// one key shares its digest's shard.
    fn shard(slot: &str) -> usize {
        let digest = slot.split('|').next().unwrap_or(slot);
        digest
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % SHARDS
    }

    fn epoch(&self, digest: &str) -> u64 {
        self.epochs[Self::shard(digest)].load(Ordering::SeqCst)
    }

    /// The near copy of `digest`, if it may still be served.
    async fn lookup(&self, digest: &str) -> Option<Arc<CachedResponse>> {
        let near = self.entries.get(digest).await?;
        (now_ms() < near.until_ms).then(|| near.entry.clone())
    }

    /// The copy to keep of `entry` at `now`: while it is fresh, at most
    /// for the bound (`None`: not to be kept).
    fn copy_of(&self, entry: &Arc<CachedResponse>, now: u64) -> Option<Arc<NearEntry>> {
        (self.enabled() && entry.is_fresh(now)).then(|| {
            Arc::new(NearEntry {
                entry: entry.clone(),
                until_ms: entry.fresh_until_ms.min(now.saturating_add(self.ttl_ms)),
            })
        })
    }

    /// Keep a copy of `entry` (just read from or written to the inner store,
    /// which began when the shard's counter read `epoch`) while it is fresh,
    /// at most for the bound.
    async fn remember(&self, slot: &str, entry: &Arc<CachedResponse>, epoch: u64) {
        let Some(near) = self.copy_of(entry, now_ms()) else {
            self.entries.invalidate(slot).await;
            return;
        };
        if let Some((digest, _)) = slot.split_once('|') {
            self.varied.insert(digest.to_owned(), ()).await;
        }
        self.entries.insert(slot.to_owned(), near).await;
        // An invalidation of this shard since the read began may have come
        // before our insert: drop what we just inserted (a miss at worst).
        if self.epoch(slot) != epoch {
            self.entries.invalidate(slot).await;
        }
    }

    /// Drop the copies of `digest`: its entry (or variant index) and every
    /// variant copy of it.
    async fn invalidate(&self, digest: &str, source: &'static str) {
        self.epochs[Self::shard(digest)].fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(digest).await;
        if self.varied.remove(digest).await.is_some() {
            let prefix = format!("{digest}|");
            let _ = self
                .entries
                .invalidate_entries_if(move |k, _| k.starts_with(&prefix));
        }
        metrics::counter!("stampede_near_cache_invalidations_total", "source" => source)
            .increment(1);
    }

    /// Wake this process's waiters on `digest` (its key was filled, or its
    /// lock released).
    fn wake(&self, digest: &str) {
        let notify = self.fills.lock().expect("fills lock").remove(digest);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Wait for a wake-up on `digest`, at most `timeout`.
    async fn wait(&self, digest: &str, timeout: Duration) {
        let notify = self
            .fills
            .lock()
            .expect("fills lock")
            .entry(digest.to_owned())
            .or_default()
            .clone();
        let _ = tokio::time::timeout(timeout, notify.notified()).await;
        let mut fills = self.fills.lock().expect("fills lock");
        if fills
            .get(digest)
            .is_some_and(|n| Arc::ptr_eq(n, &notify) && Arc::strong_count(n) == 2)
        {
            fills.remove(digest);
        }
    }

    /// Drop every copy.
    fn reset(&self) {
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.entries.invalidate_all();
        metrics::counter!("stampede_near_cache_invalidations_total", "source" => "reset")
            .increment(1);
    }
}

/// A near cache (L1) in front of `S` (see the module docs).
pub struct NearCacheStore<S> {
    inner: S,
    near: Arc<Near>,
    #[cfg(feature = "redis")]
    bus: Option<bus::Bus>,
}

impl<S: CacheStore> std::fmt::Debug for NearCacheStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("NearCacheStore");
        d.field("inner", &self.inner.backend())
            .field("ttl_ms", &self.near.ttl_ms)
            .field("entries", &self.near.entries.entry_count());
        #[cfg(feature = "redis")]
        d.field(
            "invalidation",
            &self.bus.as_ref().map(|b| b.channel.as_str()),
        );
        d.finish()
    }
}

impl<S: CacheStore> NearCacheStore<S> {
    /// The near copy of `slot`'s entry, if held (counted as a near hit).
    async fn near_hit(&self, slot: &str) -> Option<Arc<CachedResponse>> {
        let entry = self.near.lookup(slot).await?;
        metrics::counter!("stampede_near_cache_hits_total").increment(1);
        Some(entry)
    }

    /// Drop the copies of `digests` here and — with Redis — on every other
    /// instance (one message per batch of keys).
    async fn invalidate_everywhere(&self, digests: &[&str]) {
        if !self.near.enabled() || digests.is_empty() {
            return;
        }
        // After the store's delete: a read that began before it and lands
        // its copy afterwards is caught by the shard counter.
        for digest in digests {
            self.near.invalidate(digest, "local").await;
        }
        // Not while the inner store is local only (an open breaker):
        // Redis is failing, and nobody could hear it.
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus
            && self.inner.is_distributed()
        {
            for batch in digests.chunks(1000) {
                if let Err(err) = bus.publish(&batch.join(" ")).await {
                    super::record_error(self, "delete", &err);
                }
            }
        }
    }

    /// Wake the waiters on `key` in this process, and — with Redis — in every
    /// other over pub/sub (a lost message costs a waiter its poll interval).
    async fn announce_fill(&self, key: &CacheKey) {
        self.near.wake(key.digest());
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus
            && self.inner.is_distributed()
            && let Err(err) = bus.publish_fill(key.digest()).await
        {
            super::record_error(self, "publish", &err);
        }
    }

    /// A near cache in front of `inner`, without fleet-wide invalidation:
    /// deletes drop this process's copy only, so another instance's purge
    /// reaches it when its copy's bound ends. For fleets use
    /// [`with_redis_invalidation`](Self::with_redis_invalidation).
    pub fn new(inner: S, config: NearCacheConfig) -> Self {
        Self {
            inner,
            near: Arc::new(Near::new(&config)),
            #[cfg(feature = "redis")]
            bus: None,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Drop every near copy (what a lost subscriber connection does).
    pub fn clear(&self) {
        self.near.reset();
    }

    /// Copies held (approximate: moka evicts lazily; see [`sync`](Self::sync)).
    pub fn near_entry_count(&self) -> u64 {
        self.near.entries.entry_count()
    }

    /// Run pending evictions now; for tests and reports.
    pub async fn sync(&self) {
        self.near.entries.run_pending_tasks().await;
    }
}

#[async_trait]
impl<S: CacheStore> CacheStore for NearCacheStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn is_distributed(&self) -> bool {
        self.inner.is_distributed()
    }

    fn get_now(&self, key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        use futures_util::FutureExt;
        if !self.near.enabled() {
            return self.inner.get_now(key);
        }
        // A near hit only: anything else reads the inner store (`get`).
        let slot = slot_of(key.digest(), key.variant());
        Some(Some(self.near_hit(slot.as_str()).now_or_never()??))
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        if !self.near.enabled() {
            return self.inner.get(key).await;
        }
        let slot = slot_of(key.digest(), key.variant());
        let digest = slot.as_str();
        if let Some(entry) = self.near_hit(digest).await {
            return Ok(Some(entry));
        }
        metrics::counter!("stampede_near_cache_misses_total").increment(1);
        // Concurrent misses of one key share one read of the inner store
        // (moka runs one initialiser per key): an expiring near copy of a hot
        // key costs one Redis read, not one per request in flight.
        let epoch = self.near.epoch(digest);
        let mut own = None;
        let shared = self
            .near
            .entries
            .try_get_with_by_ref(digest, async {
                let found = self.inner.get(key).await;
                let kept = match &found {
                    Ok(Some(entry)) => self.near.copy_of(entry, now_ms()).ok_or(found_now(&found)),
                    // Absent or stale: shared with the requests that waited
                    // on this read (read from the store at the same moment).
                    Ok(None) => Err(found_now(&found)),
                    Err(_) => Err(None),
                };
                own = Some(found);
                kept
            })
            .await;
        match own {
            // We read the inner store: our answer, kept if fresh.
            Some(found) => {
                if shared.is_ok() && self.near.epoch(digest) != epoch {
                    // An invalidation raced the read: drop the copy.
                    self.near.entries.invalidate(digest).await;
                }
                found
            }
            // Another request's read: its answer, unless it failed or an
            // invalidation came while we waited.
            None if self.near.epoch(digest) != epoch => self.inner.get(key).await,
            None => match shared {
                Ok(near) if now_ms() < near.until_ms => Ok(Some(near.entry.clone())),
                Err(found) if found.is_some() => Ok(Option::clone(&found).flatten()),
                _ => self.inner.get(key).await,
            },
        }
    }

    async fn get_authoritative(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        if !self.near.enabled() {
            return self.inner.get_authoritative(key).await;
        }
        let slot = slot_of(key.digest(), key.variant());
        let epoch = self.near.epoch(&slot);
        let found = self.inner.get_authoritative(key).await?;
        if let Some(entry) = &found {
            self.near.remember(&slot, entry, epoch).await;
        }
        Ok(found)
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        if !self.near.enabled() {
            return self.inner.put(key, entry, lease).await;
        }
        let digest = key.digest();
        let variant = entry.variant_id();
        let slot = slot_of(digest, variant.as_deref());
        let epoch = self.near.epoch(digest);
        let outcome = self.inner.put(key, entry, lease).await;
        if variant.is_some() {
            // The key's variant index changed in the store: read it again.
            self.near.entries.invalidate(digest).await;
        }
        match &outcome {
            Ok(PutOutcome::Written) => {
                let mut stored = entry.clone();
                stored.fence = lease.token.seq;
                self.near.remember(&slot, &Arc::new(stored), epoch).await;
                self.announce_fill(key).await;
            }
            // A newer entry is in the store (or we do not know): no copy.
            _ => self.near.entries.invalidate(&slot).await,
        }
        outcome
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let result = self.inner.delete(key).await;
        self.invalidate_everywhere(&[key.digest()]).await;
        result
    }

    async fn soft_delete(&self, key: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        let result = self.inner.soft_delete(key, grace).await;
        // The stale entry is read from the store from now on (a near copy
        // is only ever a fresh one), on every instance.
        self.invalidate_everywhere(&[key.digest()]).await;
        result
    }

    async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<TagPurge, StoreError> {
        let purge = self.inner.purge_tag(tag, mode).await?;
        let digests: Vec<&str> = purge.keys.iter().map(CacheKey::digest).collect();
        self.invalidate_everywhere(&digests).await;
        Ok(purge)
    }

    async fn try_lock_after(
        &self,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<super::FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        self.inner.try_lock_after(key, ttl, holder).await
    }

    async fn unlock_failed(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        failure: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        let released = self.inner.unlock_failed(key, lease, failure).await;
        self.announce_fill(key).await;
        released
    }

    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError> {
        self.inner.ticket(key, ttl).await
    }

    fn release_lease(&self, key: &CacheKey, lease: &LockLease) {
        self.inner.release_lease(key, lease)
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        let released = self.inner.unlock(key, lease).await;
        if matches!(released, Ok(true)) {
            self.announce_fill(key).await;
        }
        released
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lock(key, lease, ttl).await
    }

    fn is_degraded(&self) -> bool {
        self.inner.is_degraded()
    }

    async fn stream_open(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        head: bytes::Bytes,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.inner.stream_open(key, lease, head, ttl).await
    }

    async fn stream_append(
        &self,
        key: &CacheKey,
        id: &str,
        index: u64,
        chunk: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.stream_append(key, id, index, chunk, ttl).await?;
        self.announce_fill(key).await;
        Ok(())
    }

    async fn stream_end(&self, key: &CacheKey, id: &str, complete: bool) -> Result<(), StoreError> {
        self.inner.stream_end(key, id, complete).await?;
        self.announce_fill(key).await;
        Ok(())
    }

    async fn stream_find(
        &self,
        key: &CacheKey,
        holder: super::FencingToken,
    ) -> Result<Option<super::StreamHead>, StoreError> {
        self.inner.stream_find(key, holder).await
    }

    async fn stream_read(
        &self,
        key: &CacheKey,
        id: &str,
        from: u64,
    ) -> Result<super::StreamChunks, StoreError> {
        self.inner.stream_read(key, id, from).await
    }

    /// Woken by fill events where they reach this process (this process's
    /// own fills and lock releases; with Redis, every gateway's, over pub/sub),
    /// else the inner store's wait.
    async fn wait_for_fill(&self, key: &CacheKey, timeout: Duration) {
        #[cfg(feature = "redis")]
        if self.bus.is_some() && self.inner.is_distributed() {
            return self.near.wait(key.digest(), timeout).await;
        }
        self.inner.wait_for_fill(key, timeout).await
    }

    fn entry_count(&self) -> Option<u64> {
        self.inner.entry_count()
    }

    fn clear(&self) {
        self.near.reset();
        self.inner.clear();
    }
}

#[cfg(feature = "redis")]
mod bus {
    //! Fleet-wide invalidation over Redis pub/sub.

    use super::{Near, NearCacheConfig, NearCacheStore};
    use crate::store::{CacheStore, RedisStore, StoreError};
    use fred::clients::{Pool, SubscriberClient};
    use fred::prelude::*;
    use fred::types::ConnectHandle;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::broadcast::error::RecvError;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    /// The publisher (the store's pool) and the subscriber with its listener.
    pub(super) struct Bus {
        pool: Pool,
        pub(super) channel: String,
        /// This instance's id in every message it publishes, so it skips its own.
        node: String,
        subscriber: SubscriberClient,
        connection: Option<ConnectHandle>,
        listener: tokio::task::JoinHandle<()>,
    }

    impl Bus {
        /// Announce that `digest` was filled or its lock released, for lock
        /// waiters: `<node> +<digest>`.
        pub(super) async fn publish_fill(&self, digest: &str) -> Result<(), StoreError> {
            self.publish(&format!("+{digest}")).await
        }

        /// Announce that `digests` (one, or several separated by spaces)
        /// were deleted: `<node> <digest> [<digest>…]`.
        pub(super) async fn publish(&self, digest: &str) -> Result<(), StoreError> {
            let _receivers: i64 = self
                .pool
                .next()
                .publish(self.channel.as_str(), format!("{} {digest}", self.node))
                .await
                .map_err(backend)?;
            Ok(())
        }
    }

    impl Drop for Bus {
        fn drop(&mut self) {
            self.listener.abort();
            let subscriber = self.subscriber.clone();
            let connection = self.connection.take();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), subscriber.quit()).await;
                        if let Some(c) = connection {
                            c.abort();
                        }
                    });
                }
                Err(_) => {
                    if let Some(c) = connection {
                        c.abort();
                    }
                }
            }
        }
    }

    /// Drop copies as invalidations arrive; clear everything when the
    /// connection fails or comes back (messages may have been missed) or
    /// when the listener falls behind.
    async fn listen(subscriber: SubscriberClient, channel: String, node: String, near: Arc<Near>) {
        let mut messages = subscriber.message_rx();
        let mut errors = subscriber.error_rx();
        let mut reconnects = subscriber.reconnect_rx();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(m) if *m.channel == *channel => {
                        let text = m.value.as_str();
                        match text.as_deref().and_then(|t| t.split_once(' ')) {
                            Some((from, _)) if from == node => {}
                            Some((_, filled)) if filled.starts_with('+') => near.wake(&filled[1..]),
                            Some((_, digests)) => {
                                for digest in digests.split(' ').filter(|d| !d.is_empty()) {
                                    near.invalidate(digest, "remote").await;
                                }
                            }
                            None => tracing::warn!("near cache: malformed invalidation message"),
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "near cache: invalidation listener fell behind; cleared");
                        near.reset();
                    }
                    Err(RecvError::Closed) => return,
                },
                error = errors.recv() => match error {
                    Ok((err, _)) => {
                        tracing::warn!(error = %err, "near cache: invalidation subscriber disconnected; cleared");
                        near.reset();
                    }
                    Err(RecvError::Lagged(_)) => near.reset(),
                    Err(RecvError::Closed) => return,
                },
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if let Err(err) = subscriber.resubscribe_all().await {
                            tracing::warn!(error = %err, "near cache: resubscribing failed");
                        }
                        // Whatever was published while we were away is lost.
                        near.reset();
                        tracing::info!("near cache: invalidation subscriber reconnected; cleared");
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    impl<S: CacheStore> NearCacheStore<S> {
        /// A near cache in front of `inner` (typically `redis` itself, or a
        /// [`FallbackStore`](crate::store::FallbackStore) around it) whose
        /// deletes reach every instance: published on
        /// [`RedisStore::invalidation_channel`] and received by a subscriber
        /// connection of its own (fred's `SubscriberClient`, same settings
        /// and reconnect policy as the store's pool; it resubscribes after a
        /// reconnect). Waits up to 2 s for the subscription; if Redis cannot
        /// be reached by then, subscribes in the background when it answers.
        pub async fn with_redis_invalidation(
            inner: S,
            config: NearCacheConfig,
            redis: &RedisStore,
        ) -> Result<Self, StoreError> {
            let mut store = Self::new(inner, config);
            if !store.near.enabled() {
                return Ok(store);
            }
            let channel = redis.invalidation_channel();
            let client = redis.pool().next();
            let subscriber = SubscriberClient::new(
                client.client_config(),
                Some(client.perf_config()),
                Some(client.connection_config().clone()),
                client.client_reconnect_policy(),
            );
            // Connect in the background (the pool's settings: a gateway started
            // during a Redis outage comes up and subscribes once Redis answers;
            // until then deletes reach only this instance, and every near copy
            // still ends at its bound).
            let connection = subscriber.connect();
            // (Not at all when the store already knows Redis is unreachable.)
            let live = !redis.is_degraded() && {
                let subscribed = async {
                    subscriber.wait_for_connect().await?;
                    subscriber.subscribe(channel.as_str()).await
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), subscribed).await,
                    Ok(Ok(()))
                )
            };
            let node = uuid::Uuid::new_v4().simple().to_string();
            let listener = tokio::spawn({
                let (subscriber, channel, node, near) = (
                    subscriber.clone(),
                    channel.clone(),
                    node.clone(),
                    store.near.clone(),
                );
                async move {
                    let mut live = live;
                    while !live {
                        let attempt = async {
                            subscriber.wait_for_connect().await?;
                            subscriber.subscribe(channel.as_str()).await
                        };
                        live = attempt.await.is_ok();
                        if live {
                            near.reset();
                            tracing::info!("near cache: invalidation subscriber live");
                        } else {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    listen(subscriber, channel, node, near).await
                }
            });
            store.bus = Some(Bus {
                pool: redis.pool().clone(),
                channel,
                node,
                subscriber,
                connection: Some(connection),
                listener,
            });
            Ok(store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::sample;
    use crate::store::MemoryStore;
    use crate::store::test_fake::FakeRemote;
    use http::Method;

    fn key(p: &str) -> CacheKey {
        CacheKey::new(&Method::GET, &p.parse().unwrap())
    }

    fn near(inner: &MemoryStore, ttl_ms: u64) -> NearCacheStore<MemoryStore> {
        NearCacheStore::new(
            inner.clone(),
            NearCacheConfig {
                ttl: Duration::from_millis(ttl_ms),
                ..Default::default()
            },
        )
    }

    async fn body(store: &dyn CacheStore, k: &CacheKey) -> Option<String> {
        let e = store.get(k).await.unwrap()?;
        Some(String::from_utf8_lossy(&e.body).into_owned())
    }

    /// Write behind the near cache's back (another instance's fill).
    async fn write_elsewhere(inner: &MemoryStore, k: &CacheKey, e: CachedResponse) {
        let lease = inner.ticket(k, Duration::from_secs(5)).await.unwrap();
        assert_eq!(inner.put(k, &e, &lease).await.unwrap(), PutOutcome::Written);
    }

    /// Write through `store` with a fresh ticket.
    async fn write(store: &dyn CacheStore, k: &CacheKey, e: CachedResponse) -> PutOutcome {
        let lease = store.ticket(k, Duration::from_secs(5)).await.unwrap();
        store.put(k, &e, &lease).await.unwrap()
    }

    #[tokio::test]
    async fn serves_the_near_copy_while_fresh_and_never_past_its_freshness() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let k = key("/a");
        write_elsewhere(&inner, &k, sample("v1", 150, 60_000)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        write_elsewhere(&inner, &k, sample("v2", 0, 60_000)).await;
        assert_eq!(
            body(&store, &k).await.as_deref(),
            Some("v1"),
            "fresh: served from the near copy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // v1 is stale now: the answer comes from the inner store (v2, stale),
        // and a stale answer is not remembered.
        assert_eq!(body(&store, &k).await.as_deref(), Some("v2"));
        write_elsewhere(&inner, &k, sample("v3", 0, 60_000)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v3"));
    }

    #[tokio::test]
    async fn the_bound_is_respected() {
        let inner = MemoryStore::default();
        let store = near(&inner, 100);
        let k = key("/a");
        write_elsewhere(&inner, &k, sample("v1", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        write_elsewhere(&inner, &k, sample("v2", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            body(&store, &k).await.as_deref(),
            Some("v2"),
            "past the bound: re-read"
        );
    }

    #[tokio::test]
    async fn delete_invalidates_every_variant() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let k = key("/a");
        write(&store, &k, sample("v1", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        // Someone else writes; then a delete through a variant-scoped key.
        write_elsewhere(&inner, &k, sample("v2", 60_000, 0)).await;
        let variant = k.clone().with_variant(Some("lang=de".into()));
        store.delete(&variant).await.unwrap();
        assert_eq!(body(&store, &k).await, None, "local copy and entry gone");
    }

    #[tokio::test]
    async fn reset_clears_every_copy() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let (a, b) = (key("/a"), key("/b"));
        for k in [&a, &b] {
            write_elsewhere(&inner, k, sample("old", 60_000, 0)).await;
            assert_eq!(body(&store, k).await.as_deref(), Some("old"));
            write_elsewhere(&inner, k, sample("new", 60_000, 0)).await;
        }
        store.clear();
        for k in [&a, &b] {
            assert_eq!(body(&store, k).await.as_deref(), Some("new"));
        }
    }

    #[tokio::test]
    async fn writes_replace_the_copy_and_fenced_writes_drop_it() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let k = key("/a");
        let late = store.ticket(&k, Duration::from_secs(5)).await.unwrap();
        write(&store, &k, sample("newer", 60_000, 0)).await;
        assert!(
            store.near.lookup(k.digest()).await.is_some(),
            "written: kept"
        );
        assert_eq!(body(&store, &k).await.as_deref(), Some("newer"));
        assert_eq!(
            store
                .put(&k, &sample("late", 60_000, 0), &late)
                .await
                .unwrap(),
            PutOutcome::Fenced(crate::store::Refusal::Superseded)
        );
        assert!(
            store.near.lookup(k.digest()).await.is_none(),
            "fenced: dropped"
        );
        assert_eq!(body(&store, &k).await.as_deref(), Some("newer"));
    }

    #[tokio::test]
    async fn authoritative_reads_skip_the_copy_and_refresh_it() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let k = key("/a");
        write_elsewhere(&inner, &k, sample("v1", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        write_elsewhere(&inner, &k, sample("v2", 60_000, 0)).await;
        let reread = store.get_authoritative(&k).await.unwrap().unwrap();
        assert_eq!(reread.body, "v2");
        assert_eq!(body(&store, &k).await.as_deref(), Some("v2"));
    }

    #[tokio::test]
    async fn a_read_racing_an_invalidation_leaves_no_copy() {
        let inner = MemoryStore::default();
        let store = near(&inner, 60_000);
        let k = key("/a");
        let e = sample("v1", 60_000, 0);
        // A read began (epoch taken), an invalidation landed, then the read's copy.
        let epoch = store.near.epoch(k.digest());
        store.near.invalidate(k.digest(), "remote").await;
        store
            .near
            .remember(k.digest(), &Arc::new(e.clone()), epoch)
            .await;
        assert!(store.near.lookup(k.digest()).await.is_none());
        // Without an invalidation in between it is kept.
        let epoch = store.near.epoch(k.digest());
        store
            .near
            .remember(k.digest(), &Arc::new(e.clone()), epoch)
            .await;
        assert!(store.near.lookup(k.digest()).await.is_some());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read_of_a_fresh_entry() {
        let inner = MemoryStore::default();
        let store = Arc::new(NearCacheStore::new(
            FakeRemote {
                inner: inner.clone(),
                read_delay: Duration::from_millis(50),
                ..FakeRemote::default()
            },
            NearCacheConfig::default(),
        ));
        let k = key("/hot");
        write_elsewhere(&inner, &k, sample("v1", 60_000, 0)).await;
        let reads = futures_util::future::join_all((0..20).map(|_| {
            let (store, k) = (store.clone(), k.clone());
            async move { store.get(&k).await.unwrap().unwrap().body.clone() }
        }))
        .await;
        assert!(reads.iter().all(|b| b == "v1"));
        assert_eq!(store.inner().reads.load(Ordering::SeqCst), 1);

        // A stale answer is shared by the reads in flight, but never kept.
        let s = key("/stale");
        write_elsewhere(&inner, &s, sample("old", 0, 60_000)).await;
        let stale = futures_util::future::join_all((0..5).map(|_| store.get(&s))).await;
        assert!(
            stale
                .iter()
                .all(|e| e.as_ref().unwrap().as_ref().unwrap().body == "old")
        );
        assert_eq!(store.inner().reads.load(Ordering::SeqCst), 2);
        store.get(&s).await.unwrap();
        assert_eq!(store.inner().reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn zero_ttl_is_a_pass_through() {
        let inner = MemoryStore::default();
        let store = near(&inner, 0);
        let k = key("/a");
        write_elsewhere(&inner, &k, sample("v1", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v1"));
        write_elsewhere(&inner, &k, sample("v2", 60_000, 0)).await;
        assert_eq!(body(&store, &k).await.as_deref(), Some("v2"));
        store.sync().await;
        assert_eq!(store.near_entry_count(), 0);
    }

    #[tokio::test]
    async fn bounded_by_entries() {
        let inner = MemoryStore::default();
        let store = NearCacheStore::new(
            inner.clone(),
            NearCacheConfig {
                ttl: Duration::from_secs(60),
                max_entries: 10,
                max_bytes: 1_000_000,
            },
        );
        for i in 0..100 {
            write(&store, &key(&format!("/{i}")), sample("x", 60_000, 0)).await;
        }
        store.sync().await;
        assert!(
            store.near_entry_count() <= 10,
            "{}",
            store.near_entry_count()
        );
    }
}
