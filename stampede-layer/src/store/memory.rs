//! The in-process store: moka with per-entry expiry, bounded by entries and bytes.

use super::{CacheStore, INVALIDATION_HOLD, LockLease, PutOutcome, StoreError};
use crate::entry::{CachedResponse, now_ms};
use crate::key::CacheKey;
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// In-process cache store (the embedded default).
///
/// Bounded by both entry count and bytes: each entry weighs
/// `max(its size, max_bytes / max_entries)` against a `max_bytes` capacity,
/// so neither bound can be exceeded. Its lock only coordinates one process.
#[derive(Clone)]
pub struct MemoryStore {
    entries: Cache<String, Arc<CachedResponse>>,
    locks: Arc<Mutex<HashMap<String, HeldLock>>>,
    fills: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Fences left by deletes: a write with an older token is refused.
    tombstones: Cache<String, u64>,
    next_token: Arc<AtomicU64>,
}

struct HeldLock {
    owner: String,
    expires: Instant,
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
    /// A store holding at most `max_entries` entries and about `max_bytes` bytes.
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        let floor = (max_bytes / max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_k: &String, v: &Arc<CachedResponse>| v.weight().max(floor))
            .expire_after(EntryExpiry)
            .build();
        Self {
            entries,
            locks: Arc::default(),
            fills: Arc::default(),
            tombstones: Cache::builder()
                .max_capacity(max_entries.max(1024))
                .time_to_live(INVALIDATION_HOLD)
                .build(),
            next_token: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Run pending evictions now (moka evicts lazily); for tests and reports.
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// Total weight currently held (≈ bytes).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
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
        Ok(self.entries.get(key.digest()).await)
    }

    async fn put(&self, key: &CacheKey, entry: &CachedResponse) -> Result<PutOutcome, StoreError> {
        let mut entry = entry.clone();
        if entry.fence == 0 {
            // An unlocked write is the newest at the moment it lands.
            entry.fence = self.next_token.fetch_add(1, Ordering::Relaxed);
        }
        let new = Arc::new(entry);
        let mut outcome = PutOutcome::Written;
        let tombstones = &self.tombstones;
        let out = &mut outcome;
        self.entries
            .entry(key.digest().to_owned())
            .and_compute_with(|current| {
                let fenced_at = current.map(|c| c.value().fence);
                async move {
                    let tomb = tombstones.get(key.digest()).await;
                    match fenced_at.into_iter().chain(tomb).max() {
                        Some(cur) if cur > new.fence => {
                            *out = PutOutcome::Fenced { current: cur };
                            moka::ops::compute::Op::Nop
                        }
                        _ => moka::ops::compute::Op::Put(new.clone()),
                    }
                }
            })
            .await;
        if outcome == PutOutcome::Written {
            let notify = self.fills.lock().expect("fills lock").remove(key.digest());
            if let Some(n) = notify {
                n.notify_waiters();
            }
        }
        Ok(outcome)
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        // Fence first, then remove, both before any later write of this key
        // computes: a fill holding an older token is refused when it lands.
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.tombstones.insert(key.digest().to_owned(), token).await;
        self.entries
            .entry(key.digest().to_owned())
            .and_compute_with(|_| std::future::ready(moka::ops::compute::Op::Remove))
            .await;
        Ok(())
    }

    async fn renew_lock(
        &self,
        key: &CacheKey,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // A newer token reached the key (a delete, another writer): this
        // rebuild's write would be refused; stop holding the lock for it.
        let tomb = self.tombstones.get(key.digest()).await;
        let stored = self.entries.get(key.digest()).await.map(|e| e.fence);
        if tomb.into_iter().chain(stored).any(|t| t > lease.token) {
            return Ok(false);
        }
        let mut locks = self.locks.lock().expect("locks lock");
        let now = Instant::now();
        match locks.get_mut(&key.flight_id()) {
            Some(held) if held.owner == lease.owner && held.expires > now => {
                held.expires = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn try_lock(
        &self,
        key: &CacheKey,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError> {
        let mut locks = self.locks.lock().expect("locks lock");
        let now = Instant::now();
        let id = key.flight_id();
        if let Some(held) = locks.get(&id)
            && held.expires > now
        {
            return Ok(None);
        }
        // Keep the map bounded: drop expired locks while we hold the mutex.
        if locks.len() > 1024 {
            locks.retain(|_, l| l.expires > now);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let owner = format!("{}:{token}", uuid::Uuid::new_v4());
        locks.insert(
            id,
            HeldLock {
                owner: owner.clone(),
                expires: now + ttl,
            },
        );
        Ok(Some(LockLease { token, owner }))
    }

    async fn unlock(&self, key: &CacheKey, lease: &LockLease) -> Result<bool, StoreError> {
        let mut locks = self.locks.lock().expect("locks lock");
        let id = key.flight_id();
        match locks.get(&id) {
            Some(held) if held.owner == lease.owner => {
                locks.remove(&id);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::sample;
    use http::Method;

    fn key(p: &str) -> CacheKey {
        CacheKey::new(&Method::GET, &p.parse().unwrap())
    }

    #[tokio::test]
    async fn round_trip_and_delete() {
        let s = MemoryStore::default();
        let mut e = sample("hello", 5000, 5000);
        assert_eq!(s.put(&key("/a"), &e).await.unwrap(), PutOutcome::Written);
        let got = s.get(&key("/a")).await.unwrap().unwrap();
        assert!(got.fence > 0, "an unlocked write takes a fresh token");
        e.fence = got.fence;
        assert_eq!(*got, e);
        assert_eq!(s.get(&key("/b")).await.unwrap(), None);
        s.delete(&key("/a")).await.unwrap();
        assert_eq!(s.get(&key("/a")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn entries_expire_after_the_stale_window() {
        let s = MemoryStore::default();
        s.put(&key("/a"), &sample("x", 50, 50)).await.unwrap();
        assert!(s.get(&key("/a")).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(s.get(&key("/a")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn unlocked_writes_are_the_newest_when_they_land() {
        let s = MemoryStore::default();
        let k = key("/a");
        let lease = s
            .try_lock(&k, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        // Someone without the lock writes meanwhile (lock wait timed out)...
        s.put(&k, &sample("unlocked", 5000, 0)).await.unwrap();
        // ...so the lock holder's late write is refused.
        let mut late = sample("late", 5000, 0);
        late.fence = lease.token;
        assert!(matches!(
            s.put(&k, &late).await.unwrap(),
            PutOutcome::Fenced { .. }
        ));
        assert_eq!(s.get(&k).await.unwrap().unwrap().body, "unlocked");
    }

    #[tokio::test]
    async fn a_delete_is_not_undone_by_a_fill_in_flight() {
        let s = MemoryStore::default();
        let k = key("/a");
        let lease = s
            .try_lock(&k, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        // A purge lands while the lock holder is rebuilding...
        s.delete(&k).await.unwrap();
        // ...so its answer, fetched before the purge, is refused.
        let mut late = sample("before the purge", 5000, 0);
        late.fence = lease.token;
        assert!(matches!(
            s.put(&k, &late).await.unwrap(),
            PutOutcome::Fenced { .. }
        ));
        assert_eq!(s.get(&k).await.unwrap(), None);
        assert!(s.unlock(&k, &lease).await.unwrap());
        // A rebuild that starts after the purge writes as usual.
        let lease = s.try_lock(&k, Duration::from_secs(5)).await.unwrap();
        let mut fresh = sample("after", 5000, 0);
        fresh.fence = lease.unwrap().token;
        assert_eq!(s.put(&k, &fresh).await.unwrap(), PutOutcome::Written);
    }

    #[tokio::test]
    async fn renewal_extends_only_the_owners_lock() {
        let s = MemoryStore::default();
        let k = key("/a");
        let ttl = Duration::from_millis(100);
        let a = s.try_lock(&k, ttl).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(s.renew_lock(&k, &a, ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // 120 ms after taking a 100 ms lock: still held thanks to the renewal.
        assert!(s.try_lock(&k, ttl).await.unwrap().is_none());
        let stranger = LockLease {
            token: a.token,
            owner: "someone else".into(),
        };
        assert!(!s.renew_lock(&k, &stranger, ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!s.renew_lock(&k, &a, ttl).await.unwrap(), "expired");
    }

    #[tokio::test]
    async fn older_fencing_token_is_rejected() {
        let s = MemoryStore::default();
        let mut newer = sample("new", 5000, 0);
        newer.fence = 7;
        let mut older = sample("old", 5000, 0);
        older.fence = 6;
        s.put(&key("/a"), &newer).await.unwrap();
        assert_eq!(
            s.put(&key("/a"), &older).await.unwrap(),
            PutOutcome::Fenced { current: 7 }
        );
        assert_eq!(s.get(&key("/a")).await.unwrap().unwrap().body, "new");
    }

    #[tokio::test]
    async fn lock_is_exclusive_and_owner_released() {
        let s = MemoryStore::default();
        let k = key("/a");
        let a = s
            .try_lock(&k, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.try_lock(&k, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none()
        );
        let stranger = LockLease {
            token: a.token,
            owner: "someone-else".into(),
        };
        assert!(!s.unlock(&k, &stranger).await.unwrap());
        assert!(s.unlock(&k, &a).await.unwrap());
        let b = s
            .try_lock(&k, Duration::from_millis(20))
            .await
            .unwrap()
            .unwrap();
        assert!(b.token > a.token, "fencing tokens are monotonic");
        tokio::time::sleep(Duration::from_millis(40)).await;
        let c = s.try_lock(&k, Duration::from_secs(1)).await.unwrap();
        assert!(c.is_some(), "an expired lock can be taken over");
    }

    #[tokio::test]
    async fn bounded_by_entries() {
        let s = MemoryStore::new(10, 1_000_000);
        for i in 0..100 {
            s.put(&key(&format!("/{i}")), &sample("x", 60_000, 0))
                .await
                .unwrap();
        }
        s.sync().await;
        assert!(s.entry_count().unwrap() <= 10, "{:?}", s.entry_count());
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
        s.put(&k, &sample("x", 1000, 0)).await.unwrap();
        assert!(waiter.await.unwrap() < Duration::from_secs(2));
    }
}
