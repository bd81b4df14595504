//! The in-process store: moka with per-entry expiry, bounded by entries and
//! bytes, plus one [`FenceRecord`] (and the rebuild lock) per key with a
//! lease in flight, and the tag index ([`tags`](super::tags)).

use super::fence::{FenceRecord, FencingToken, new_epoch};
use super::tags::{self, PurgeMode, TagFence, TagIndex, TagPurge};
use super::{CacheStore, LockAttempt, LockLease, PutOutcome, RebuildFailure, StoreError};
use crate::entry::{CachedResponse, now_ms};
use crate::key::CacheKey;
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// In-process cache store (the embedded default).
///
/// Bounded by both entry count and bytes: each entry weighs
/// `max(its size, max_bytes / max_entries)` against a `max_bytes` capacity,
/// so neither bound can be exceeded. Its lock only coordinates one process.
/// Fence records live while a lease keeps them (the lease TTL, renewed);
/// at most `max_entries` of them are held — one dropped early voids its
/// leases (their writes are refused), it never lets an old write in.
///
/// The tag index ([`tags`](super::tags)) has an eighth of `max_bytes` (the
/// entries the rest): at most `min(4 × max_entries, max_bytes / 1024)`
/// (tag, key) pairs (at least 1024; a pair costs the index up to ~128
/// bytes); past it the members kept the shortest are dropped and their
/// entries evicted, so a purge never misses an entry the index lost.
#[derive(Clone)]
pub struct MemoryStore {
    /// Keyed by digests (uniform, and seeded besides): foldhash, not
    /// SipHash, hashes one per read.
    entries: Cache<String, Arc<CachedResponse>, foldhash::fast::RandomState>,
    keys: Arc<Mutex<KeyStates>>,
    fills: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    tags: Arc<Mutex<TagIndex>>,
}

/// Per key with a lease in flight: the fence record and the lock.
struct KeyState {
    record: FenceRecord,
    /// The record lives until then (extended by draws and renewals).
    until: Instant,
    lock: Option<HeldLock>,
    /// The last rebuild's failure, answered until its `until_ms`.
    failure: Option<RebuildFailure>,
    /// Leases drawn and not released yet: at zero (and no lock, no failure
    /// to answer) nothing can write with this record any more, and it goes.
    outstanding: u32,
    /// The tag purges that fenced the key (the latest per tag).
    tag_fences: Vec<TagFence>,
}

/// What one (tag, key) pair of the tag index may cost: the member's entry
/// in its tag's map and its expiry order, with their allocations.
const TAG_PAIR_BYTES: u64 = 128;

/// Most tag purges a key's state remembers (the oldest is forgotten first:
/// a fill then waits out the clock skew instead).
const MAX_TAG_FENCES: usize = 64;

struct HeldLock {
    owner: String,
    expires: Instant,
    token: FencingToken,
}

struct KeyStates {
    map: HashMap<String, KeyState>,
    max: usize,
}

impl KeyStates {
    /// The live state of `digest` (an expired record is as good as absent).
    fn live(&mut self, digest: &str, now: Instant) -> Option<&mut KeyState> {
        if self.map.get(digest).is_some_and(|s| s.until <= now) {
            self.map.remove(digest);
        }
        self.map.get_mut(digest)
    }

    /// The state of `digest`, a new incarnation if it has none, kept at least `ttl`.
    fn draw_state(&mut self, digest: &str, now: Instant, ttl: Duration) -> &mut KeyState {
        if self.live(digest, now).is_none() {
            self.make_room(now);
            self.map.insert(
                digest.to_owned(),
                KeyState {
                    record: FenceRecord::new(new_epoch()),
                    until: now,
                    lock: None,
                    failure: None,
                    outstanding: 0,
                    tag_fences: Vec::new(),
                },
            );
        }
        let state = self.map.get_mut(digest).expect("just inserted");
        state.until = state.until.max(now + ttl);
        state
    }

    /// Keep the map bounded: drop expired records; past the bound, drop
    /// records outright (their leases' writes are then refused).
    fn make_room(&mut self, now: Instant) {
        if self.map.len() < self.max {
            return;
        }
        self.map.retain(|_, s| s.until > now);
        if self.map.len() >= self.max {
            let excess = self.map.len() + 1 - self.max / 2;
            let dropped: Vec<String> = self.map.keys().take(excess).cloned().collect();
            for d in dropped {
                self.map.remove(&d);
            }
            metrics::counter!("stampede_fence_records_dropped_total").increment(excess as u64);
        }
    }
}

/// Most variants stored per key; the least recently stored goes first.
const MAX_VARIANTS: usize = 16;

/// The slot of `digest`'s entry, or of one of its variants.
fn slot(digest: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{digest}|{v}"),
        None => digest.to_owned(),
    }
}

/// The variants a key's index lists (its body: ids separated by commas).
fn variant_list(index: &CachedResponse) -> Vec<String> {
    std::str::from_utf8(&index.body)
        .unwrap_or_default()
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

struct EntryExpiry;

impl Expiry<String, Arc<CachedResponse>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.keep_for(now_ms()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for(now_ms()))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(100_000, 256 * 1024 * 1024)
    }
}

impl MemoryStore {
    /// `key`'s entry (`get` and `get_now`). The common case, no variant, is
    /// looked up by the digest as it is (no slot string made per read).
    async fn read(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        match key.variant() {
            None => self.entries.get(key.digest()).await,
            Some(_) => self.entries.get(&slot(key.digest(), key.variant())).await,
        }
    }

    /// A store holding at most `max_entries` entries and about `max_bytes` bytes.
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        // An eighth of the bytes for the tag index, the rest for entries.
        let index_bytes = max_bytes / 8;
        let entry_bytes = max_bytes - index_bytes;
        let floor = (entry_bytes / max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let entries = Cache::builder()
            .max_capacity(entry_bytes)
            .weigher(move |_k: &String, v: &Arc<CachedResponse>| v.weight().max(floor))
            .expire_after(EntryExpiry)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let pairs = max_entries
            .saturating_mul(4)
            .min(index_bytes / TAG_PAIR_BYTES)
            .clamp(1024, 1 << 24) as usize;
        Self {
            entries,
            keys: Arc::new(Mutex::new(KeyStates {
                map: HashMap::new(),
                max: max_entries.clamp(1024, 1 << 20) as usize,
            })),
            fills: Arc::default(),
            tags: Arc::new(Mutex::new(TagIndex::new(pairs, 65_536))),
        }
    }

    /// How long a tag purge is remembered, for the fills that started
    /// before it (default [`tags::DEFAULT_PURGE_WINDOW`]): at least the
    /// longest a fill may take (the fill deadline) and a margin. A tagged
    /// fill older than this is refused.
    pub fn purge_window(self, window: Duration) -> Self {
        self.tags.lock().expect("tags lock").window = window;
        self
    }

    /// (tag, key) pairs the tag index holds.
    pub fn tag_index_pairs(&self) -> usize {
        self.tags.lock().expect("tags lock").pairs()
    }

    /// Run pending evictions now (moka evicts lazily); for tests and reports.
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// Total weight currently held (≈ bytes).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Fence records held (keys with a lease in flight, or lately).
    pub fn fence_records(&self) -> usize {
        self.keys.lock().expect("keys lock").map.len()
    }

    /// Fence `digest` against every lease drawn so far; for a purge of a
    /// tag (`tag`: the tag and the purge's id), note it in the key's state,
    /// made for the purge window if the key has none.
    fn fence(&self, digest: &str, tag: Option<(&str, u64)>) {
        let window = self.tags.lock().expect("tags lock").window;
        let mut keys = self.keys.lock().expect("keys lock");
        let now = Instant::now();
        let Some((tag, id)) = tag else {
            if let Some(state) = keys.live(digest, now) {
                state.record.purge();
            }
            return;
        };
        let state = keys.draw_state(digest, now, window);
        let floor = state.record.purge();
        state.tag_fences.retain(|f| f.tag != tag);
        if state.tag_fences.len() >= MAX_TAG_FENCES {
            state.tag_fences.remove(0);
        }
        state.tag_fences.push(TagFence {
            tag: tag.to_owned(),
            id,
            floor,
        });
    }

    /// Purge `key` (every variant), fenced: removed, or marked stale for a
    /// soft purge's grace. Whether an entry was held.
    async fn purge_key(&self, key: &CacheKey, mode: PurgeMode, tag: Option<(&str, u64)>) -> bool {
        let entries = &self.entries;
        let digest = key.digest();
        let now = now_ms();
        let soft = |entry: &Arc<CachedResponse>, grace: Duration| {
            let mut e = (**entry).clone();
            tags::soften(&mut e, now, now + grace.as_millis() as u64);
            Arc::new(e)
        };
        let mut held = false;
        let was = &mut held;
        // One at a time with the key's writes (moka computes on the primary
        // slot): the fence and the purge are atomic against a fenced write.
        self.entries
            .entry(digest.to_owned())
            .and_compute_with(|current| {
                *was = current.is_some();
                self.fence(digest, tag);
                let current = current.map(|c| c.into_value());
                async move {
                    let Some(current) = current else {
                        return Op::Nop;
                    };
                    let variants = match current.is_variant_index() {
                        true => variant_list(&current),
                        false => Vec::new(),
                    };
                    match mode {
                        PurgeMode::Hard => {
                            for v in variants {
                                entries.invalidate(&slot(digest, Some(&v))).await;
                            }
                            Op::Remove
                        }
                        PurgeMode::Soft { grace } if current.is_variant_index() => {
                            // Every variant (the index itself stays as it is).
                            for v in variants {
                                let slot = slot(digest, Some(&v));
                                if let Some(variant) = entries.get(&slot).await {
                                    entries.insert(slot, soft(&variant, grace)).await;
                                }
                            }
                            Op::Nop
                        }
                        PurgeMode::Soft { grace } => Op::Put(soft(&current, grace)),
                    }
                }
            })
            .await;
        held
    }

    fn lease(
        &self,
        key: &CacheKey,
        ttl: Duration,
        lock: bool,
        holder: Option<FencingToken>,
    ) -> LockAttempt {
        let mut keys = self.keys.lock().expect("keys lock");
        let now = Instant::now();
        if lock && let Some(state) = keys.live(key.digest(), now) {
            if let Some(held) = state.lock.as_ref().filter(|l| l.expires > now) {
                return LockAttempt::Held(held.token);
            }
            if let Some(failure) = state
                .failure
                .filter(|f| holder.is_some_and(|h| f.answers(h, now_ms())))
            {
                return LockAttempt::RecentFailure(failure);
            }
        }
        let state = keys.draw_state(key.digest(), now, ttl);
        let token = state.record.draw();
        state.outstanding += 1;
        let owner = uuid::Uuid::new_v4().simple().to_string();
        if lock {
            state.lock = Some(HeldLock {
                owner: owner.clone(),
                expires: now + ttl,
                token,
            });
        }
        LockAttempt::Acquired(LockLease {
            token,
            owner,
            locked: lock,
        })
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn is_distributed(&self) -> bool {
        false
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        Ok(self.read(key).await)
    }

    fn get_now(&self, key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        use futures_util::FutureExt;
        // moka's read never waits for another task; polled once, it is done.
        self.read(key).now_or_never()
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        lease: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        let mut entry = entry.clone();
        entry.fence = lease.token.seq;
        let variant = entry.variant_id();
        let now = now_ms();
        let digest = key.digest();
        // A tagged entry is indexed first, then its tags' purge times are
        // read (see `tags`): a purge either lists it or is seen here.
        let tagged = tags::entry_tags(key, &entry);
        let (seen, evicted, floor, window) = {
            let mut index = self.tags.lock().expect("tags lock");
            let (seen, evicted) = if tagged.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                let until = now + entry.keep_for(now).as_millis() as u64;
                index.add(&tagged, digest, until, now)
            };
            (seen, evicted, index.purge_floor(), index.window)
        };
        let request_ms = tags::request_ms(&entry);
        let new = Arc::new(entry);
        let mut outcome = PutOutcome::Written;
        let out = &mut outcome;
        let keys = &self.keys;
        let entries = &self.entries;
        // Every write and delete of a key computes on its primary slot, one
        // at a time (moka): the fence check, the write and the variant index
        // are atomic against a purge of the same key.
        self.entries
            .entry(digest.to_owned())
            .and_compute_with(|current| {
                let checked = match keys.lock().expect("keys lock").live(digest, Instant::now()) {
                    Some(state) => state
                        .record
                        .check_write(lease.token, variant.as_deref())
                        .and_then(|()| {
                            let refused = !tagged.is_empty()
                                && (tags::older_than(request_ms, now_ms(), window)
                                    || tags::refused_by_purges(
                                        &seen,
                                        floor,
                                        &state.tag_fences,
                                        lease.token.seq,
                                        request_ms,
                                    ));
                            match refused {
                                true => Err(super::Refusal::Purged),
                                false => state.record.write(lease.token, variant.as_deref()),
                            }
                        }),
                    None => Err(super::Refusal::LeaseLost),
                };
                async move {
                    if let Err(refusal) = checked {
                        *out = PutOutcome::Fenced(refusal);
                        return Op::Nop;
                    }
                    let Some(v) = &variant else {
                        return Op::Put(new.clone());
                    };
                    // A variant: its own slot, and the key's index of variants
                    // (the most recently stored last, at most MAX_VARIANTS).
                    entries.insert(slot(digest, Some(v)), new.clone()).await;
                    let mut list: Vec<String> = current
                        .as_ref()
                        .filter(|c| c.value().is_variant_index())
                        .map(|c| variant_list(c.value()))
                        .unwrap_or_default();
                    list.retain(|x| x != v);
                    list.push(v.clone());
                    while list.len() > MAX_VARIANTS {
                        let evicted = list.remove(0);
                        entries.invalidate(&slot(digest, Some(&evicted))).await;
                    }
                    let keep = current
                        .as_ref()
                        .map_or(Duration::ZERO, |c| c.value().keep_for(now))
                        .max(new.keep_for(now));
                    let mut index = CachedResponse::variant_index(&new.vary, now, keep);
                    index.body = list.join(",").into();
                    Op::Put(Arc::new(index))
                }
            })
            .await;
        if outcome == PutOutcome::Written {
            let notify = self.fills.lock().expect("fills lock").remove(digest);
            if let Some(n) = notify {
                n.notify_waiters();
            }
        }
        // Members the bounded index dropped: their entries go too.
        for dropped in evicted {
            self.delete(&CacheKey::from_digest(&dropped)).await?;
        }
        Ok(outcome)
    }

    async fn soft_delete(&self, key: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        Ok(self.purge_key(key, PurgeMode::Soft { grace }, None).await)
    }

    async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<TagPurge, StoreError> {
        let (id, members) = self
            .tags
            .lock()
            .expect("tags lock")
            .begin_purge(tag, now_ms());
        let mut purge = TagPurge::default();
        for digest in members {
            let key = CacheKey::from_digest(&digest);
            purge.hit += u64::from(self.purge_key(&key, mode, Some((tag, id))).await);
            purge.keys.push(key);
        }
        Ok(purge)
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool, StoreError> {
        Ok(self.purge_key(key, PurgeMode::Hard, None).await)
    }

    async fn try_lock_after(
        &self,
        key: &CacheKey,
        ttl: Duration,
        holder: Option<FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        Ok(self.lease(key, ttl, true, holder))
    }

    async fn ticket(&self, key: &CacheKey, ttl: Duration) -> Result<LockLease, StoreError> {
        Ok(self
            .lease(key, ttl, false, None)
            .acquired()
            .expect("a ticket is always drawn"))
    }

    async fn unlock_failed(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        failure: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().expect("keys lock");
        let now = Instant::now();
        let left = Duration::from_millis(failure.until_ms.saturating_sub(now_ms()));
        let state = keys.draw_state(key.digest(), now, left);
        state.failure = Some(RebuildFailure {
            lease: lease.token,
            ..*failure
        });
        let ours = lease.locked && state.lock.as_ref().is_some_and(|l| l.owner == lease.owner);
        if ours {
            state.lock = None;
        }
        Ok(ours)
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().expect("keys lock");
        let now = Instant::now();
        let Some(state) = keys.live(key.digest(), now) else {
            return Ok(false);
        };
        if !state.record.is_live(lease.token) {
            return Ok(false);
        }
        if lease.locked {
            match state.lock.as_mut() {
                Some(held) if held.owner == lease.owner && held.expires > now => {
                    held.expires = now + ttl;
                }
                _ => return Ok(false),
            }
        }
        state.until = state.until.max(now + ttl);
        Ok(true)
    }

    fn release_lease(&self, key: &CacheKey, lease: &LockLease) {
        let mut keys = self.keys.lock().expect("keys lock");
        let now = Instant::now();
        let Some(state) = keys.live(key.digest(), now) else {
            return;
        };
        if state.record.epoch() != lease.token.epoch {
            return;
        }
        state.outstanding = state.outstanding.saturating_sub(1);
        let locked = state.lock.as_ref().is_some_and(|l| l.expires > now);
        let failing = state.failure.is_some_and(|f| f.until_ms > now_ms());
        // A tag purge's note stays for its window (a later lease lands at once).
        if state.outstanding == 0 && !locked && !failing && state.tag_fences.is_empty() {
            keys.map.remove(key.digest());
        }
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        if !lease.locked {
            return Ok(false);
        }
        let mut keys = self.keys.lock().expect("keys lock");
        match keys.live(key.digest(), Instant::now()) {
            Some(state) if state.lock.as_ref().is_some_and(|l| l.owner == lease.owner) => {
                state.lock = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn wait_for_fill(&self, key: &CacheKey, timeout: Duration) {
        let notify = self
            .fills
            .lock()
            .expect("fills lock")
            .entry(key.digest().to_owned())
            .or_default()
            .clone();
        let _ = tokio::time::timeout(timeout, notify.notified()).await;
        // Keep the map bounded: drop the entry once nobody waits on it.
        let mut fills = self.fills.lock().expect("fills lock");
        if fills
            .get(key.digest())
            .is_some_and(|n| Arc::ptr_eq(n, &notify) && Arc::strong_count(n) == 2)
        {
            fills.remove(key.digest());
        }
    }

    fn entry_count(&self) -> Option<u64> {
        Some(self.entries.entry_count())
    }

    /// Drop every entry (what a fallback store does when its primary is back:
    /// what it held during the outage was never seen by the fleet's purges).
    fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::sample;
    use crate::store::Refusal;
    use http::Method;

    fn key(p: &str) -> CacheKey {
        CacheKey::new(&Method::GET, &p.parse().unwrap())
    }

    const TTL: Duration = Duration::from_secs(5);

    async fn write(s: &MemoryStore, k: &CacheKey, body: &str) -> PutOutcome {
        let lease = s.ticket(k, TTL).await.unwrap();
        s.put(k, &sample(body, 5000, 5000), &lease).await.unwrap()
    }

    #[tokio::test]
    async fn round_trip_and_delete() {
        let s = MemoryStore::default();
        let lease = s.ticket(&key("/a"), TTL).await.unwrap();
        let mut e = sample("hello", 5000, 5000);
        assert_eq!(
            s.put(&key("/a"), &e, &lease).await.unwrap(),
            PutOutcome::Written
        );
        let got = s.get(&key("/a")).await.unwrap().unwrap();
        assert_eq!(got.fence, lease.token.seq, "the entry names its lease");
        e.fence = got.fence;
        assert_eq!(*got, e);
        assert_eq!(s.get(&key("/b")).await.unwrap(), None);
        assert!(s.delete(&key("/a")).await.unwrap(), "an entry was held");
        assert_eq!(s.get(&key("/a")).await.unwrap(), None);
        assert!(
            !s.delete(&key("/a")).await.unwrap(),
            "nothing left to purge"
        );
    }

    #[tokio::test]
    async fn entries_expire_after_the_stale_window() {
        let s = MemoryStore::default();
        let lease = s.ticket(&key("/a"), TTL).await.unwrap();
        s.put(&key("/a"), &sample("x", 50, 50), &lease)
            .await
            .unwrap();
        assert!(s.get(&key("/a")).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(s.get(&key("/a")).await.unwrap(), None);
    }

    /// Finding 1 of issue #19: a fill without the lock used to draw its
    /// token when it landed, so it beat every purge. Now it holds a ticket
    /// drawn before it asked the origin, and a purge after that refuses it.
    #[tokio::test]
    async fn a_lockless_fill_that_started_before_a_purge_is_refused() {
        let s = MemoryStore::default();
        let k = key("/a");
        let before = s.ticket(&k, TTL).await.unwrap();
        assert_eq!(write(&s, &k, "v1").await, PutOutcome::Written);
        s.delete(&k).await.unwrap();
        assert_eq!(
            s.put(
                &k,
                &sample("v1, fetched before the purge", 5000, 0),
                &before
            )
            .await
            .unwrap(),
            PutOutcome::Fenced(Refusal::Purged)
        );
        assert_eq!(s.get(&k).await.unwrap(), None);
        assert_eq!(write(&s, &k, "v2").await, PutOutcome::Written);
    }

    #[tokio::test]
    async fn writes_land_in_lease_order() {
        let s = MemoryStore::default();
        let k = key("/a");
        let lock = s.try_lock(&k, TTL).await.unwrap().acquired().unwrap();
        // A ticket drawn later (a waiter that gave up) writes first...
        assert_eq!(write(&s, &k, "later lease").await, PutOutcome::Written);
        // ...so the lock holder's older answer is refused.
        assert_eq!(
            s.put(&k, &sample("earlier lease", 5000, 0), &lock)
                .await
                .unwrap(),
            PutOutcome::Fenced(Refusal::Superseded)
        );
        assert_eq!(s.get(&k).await.unwrap().unwrap().body, "later lease");
    }

    /// The fence record lives only while leases keep it; a lease whose record
    /// expired (its holder paused past the lease TTL) is void for good, even
    /// on a key nothing was ever stored under (the cold-key scenario of #19).
    #[tokio::test]
    async fn a_lease_that_outlived_its_record_is_void_on_a_cold_key() {
        let s = MemoryStore::default();
        let k = key("/cold");
        let ttl = Duration::from_millis(50);
        let paused = s.try_lock(&k, ttl).await.unwrap().acquired().unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let next = s
            .try_lock(&k, ttl)
            .await
            .unwrap()
            .acquired()
            .expect("expired lock");
        assert_ne!(next.token.epoch, paused.token.epoch, "a new incarnation");
        assert_eq!(
            s.put(&k, &sample("v2", 5000, 0), &next).await.unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            s.put(&k, &sample("v1, late", 5000, 0), &paused)
                .await
                .unwrap(),
            PutOutcome::Fenced(Refusal::LeaseLost)
        );
        assert_eq!(s.get(&k).await.unwrap().unwrap().body, "v2");
    }

    #[tokio::test]
    async fn renewal_extends_only_the_owners_lock_and_stops_after_a_purge() {
        let s = MemoryStore::default();
        let k = key("/a");
        let ttl = Duration::from_millis(100);
        let a = s.try_lock(&k, ttl).await.unwrap().acquired().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(s.renew_lock(&k, &a, ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // 120 ms after taking a 100 ms lock: still held thanks to the renewal.
        assert!(s.try_lock(&k, ttl).await.unwrap().is_held());
        let stranger = LockLease {
            owner: "someone else".into(),
            ..a.clone()
        };
        assert!(!s.renew_lock(&k, &stranger, ttl).await.unwrap());
        s.delete(&k).await.unwrap();
        assert!(
            !s.renew_lock(&k, &a, ttl).await.unwrap(),
            "purged: its write would be refused"
        );
    }

    #[tokio::test]
    async fn renewal_keeps_a_ticket_valid() {
        let s = MemoryStore::default();
        let k = key("/a");
        let ttl = Duration::from_millis(60);
        let t = s.ticket(&k, ttl).await.unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(s.renew_lock(&k, &t, ttl).await.unwrap());
        }
        assert_eq!(
            s.put(&k, &sample("slow fill", 5000, 0), &t).await.unwrap(),
            PutOutcome::Written
        );
    }

    #[tokio::test]
    async fn lock_is_exclusive_per_url_and_owner_released() {
        let s = MemoryStore::default();
        let k = key("/a");
        let a = s.try_lock(&k, TTL).await.unwrap().acquired().unwrap();
        assert!(s.try_lock(&k, TTL).await.unwrap().is_held());
        let variant = k.clone().with_variant(Some("gzip".into()));
        assert!(
            s.try_lock(&variant, TTL).await.unwrap().is_held(),
            "one lock per URL, whatever the variant"
        );
        let stranger = LockLease {
            owner: "someone-else".into(),
            ..a.clone()
        };
        assert!(!s.unlock(&k, &stranger).await.unwrap());
        assert!(s.unlock(&k, &a).await.unwrap());
        let b = s
            .try_lock(&k, Duration::from_millis(20))
            .await
            .unwrap()
            .acquired()
            .unwrap();
        assert!(b.token > a.token, "draws are ordered");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let c = s.try_lock(&k, Duration::from_secs(1)).await.unwrap();
        assert!(c.acquired().is_some(), "an expired lock can be taken over");
    }

    #[tokio::test]
    async fn a_failed_rebuild_is_answered_until_it_lapses() {
        let s = MemoryStore::default();
        let k = key("/a");
        let lease = s.try_lock(&k, TTL).await.unwrap().acquired().unwrap();
        let failure = RebuildFailure {
            status: 503,
            until_ms: now_ms() + 100,
            lease: lease.token,
        };
        assert!(s.unlock_failed(&k, &lease, &failure).await.unwrap());
        // A request that waited on that rebuild gets its outcome…
        let waited = Some(lease.token);
        assert_eq!(
            s.try_lock_after(&k, TTL, waited).await.unwrap(),
            LockAttempt::RecentFailure(failure)
        );
        // …one that comes later starts a new rebuild.
        let next = s.try_lock(&k, TTL).await.unwrap().acquired().unwrap();
        s.unlock(&k, &next).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            s.try_lock_after(&k, TTL, waited)
                .await
                .unwrap()
                .acquired()
                .is_some(),
            "lapsed"
        );
    }

    #[tokio::test]
    async fn bounded_by_entries() {
        let s = MemoryStore::new(10, 1_000_000);
        for i in 0..100 {
            write(&s, &key(&format!("/{i}")), "x").await;
        }
        s.sync().await;
        assert!(s.entry_count().unwrap() <= 10, "{:?}", s.entry_count());
    }

    /// Finding 5 of #19, in process: the records are bounded, and one dropped
    /// early refuses its leases' writes instead of letting them in.
    #[tokio::test]
    async fn fence_records_are_bounded_and_a_dropped_one_refuses() {
        let s = MemoryStore::new(10, 1_000_000);
        let k = key("/first");
        let first = s.ticket(&k, TTL).await.unwrap();
        for i in 0..5000 {
            s.ticket(&key(&format!("/{i}")), TTL).await.unwrap();
        }
        assert!(s.fence_records() <= 1024, "{}", s.fence_records());
        let outcome = s.put(&k, &sample("x", 5000, 0), &first).await.unwrap();
        if outcome != PutOutcome::Written {
            assert_eq!(outcome, PutOutcome::Fenced(Refusal::LeaseLost));
        }
    }

    /// A record goes once every lease drawn from it is released: a flood of
    /// keys leaves no record behind, and one still out keeps it.
    #[tokio::test]
    async fn records_go_when_their_leases_are_released() {
        let s = MemoryStore::default();
        let (a, b) = (key("/a"), key("/b"));
        let first = s.ticket(&a, TTL).await.unwrap();
        let second = s.ticket(&a, TTL).await.unwrap();
        let lock = s.try_lock(&b, TTL).await.unwrap().acquired().unwrap();
        assert_eq!(s.fence_records(), 2);
        s.release_lease(&a, &first);
        assert_eq!(s.fence_records(), 2, "a lease of /a is still out");
        s.release_lease(&a, &second);
        assert_eq!(s.fence_records(), 1);
        s.release_lease(&b, &lock);
        assert_eq!(s.fence_records(), 1, "the lock is still held");
        assert!(s.unlock(&b, &lock).await.unwrap());
        s.release_lease(&b, &lock);
        assert_eq!(s.fence_records(), 0);
    }

    #[tokio::test]
    async fn fill_wakes_waiters() {
        let s = MemoryStore::default();
        let k = key("/a");
        let s2 = s.clone();
        let k2 = k.clone();
        let waiter = tokio::spawn(async move {
            let t = Instant::now();
            s2.wait_for_fill(&k2, Duration::from_secs(5)).await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        write(&s, &k, "x").await;
        assert!(waiter.await.unwrap() < Duration::from_secs(2));
    }
}
