//! A fake remote store for the unit tests of the store wrappers (the
//! breaker, the near cache): a [`MemoryStore`] that says it is distributed,
//! fails every operation while `down` is set, and counts (and may slow) its
//! reads. Every other operation is the memory store's own.

use super::{
    CacheStore, LockAttempt, LockLease, MemoryStore, PutOutcome, RebuildFailure, StoreError,
};
use crate::entry::CachedResponse;
use crate::key::CacheKey;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct FakeRemote {
    pub(crate) inner: MemoryStore,
    /// While set, every operation fails with a backend error.
    pub(crate) down: Arc<AtomicBool>,
    /// How long each `get` takes.
    pub(crate) read_delay: Duration,
    /// `get` calls so far.
    pub(crate) reads: AtomicUsize,
}

impl FakeRemote {
    fn check_up(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::Backend("down".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl CacheStore for FakeRemote {
    fn backend(&self) -> &'static str {
        "fake-remote"
    }
    fn is_distributed(&self) -> bool {
        true
    }
    async fn get(&self, k: &CacheKey) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.read_delay).await;
        self.check_up()?;
        self.inner.get(k).await
    }
    async fn put(
        &self,
        k: &CacheKey,
        e: &CachedResponse,
        l: &LockLease,
    ) -> Result<PutOutcome, StoreError> {
        self.check_up()?;
        self.inner.put(k, e, l).await
    }
    async fn delete(&self, k: &CacheKey) -> Result<bool, StoreError> {
        self.check_up()?;
        self.inner.delete(k).await
    }
    async fn soft_delete(&self, k: &CacheKey, grace: Duration) -> Result<bool, StoreError> {
        self.check_up()?;
        self.inner.soft_delete(k, grace).await
    }
    async fn purge_tag(
        &self,
        tag: &str,
        mode: super::PurgeMode,
    ) -> Result<super::TagPurge, StoreError> {
        self.check_up()?;
        self.inner.purge_tag(tag, mode).await
    }
    async fn try_lock_after(
        &self,
        k: &CacheKey,
        t: Duration,
        h: Option<super::FencingToken>,
    ) -> Result<LockAttempt, StoreError> {
        self.check_up()?;
        self.inner.try_lock_after(k, t, h).await
    }
    async fn unlock_failed(
        &self,
        k: &CacheKey,
        l: &LockLease,
        f: &RebuildFailure,
    ) -> Result<bool, StoreError> {
        self.check_up()?;
        self.inner.unlock_failed(k, l, f).await
    }
    async fn ticket(&self, k: &CacheKey, t: Duration) -> Result<LockLease, StoreError> {
        self.check_up()?;
        self.inner.ticket(k, t).await
    }
    fn release_lease(&self, k: &CacheKey, l: &LockLease) {
        self.inner.release_lease(k, l)
    }
    async fn unlock(&self, k: &CacheKey, l: &LockLease) -> Result<bool, StoreError> {
        self.check_up()?;
        self.inner.unlock(k, l).await
    }
    async fn renew_lock(
        &self,
        k: &CacheKey,
        l: &LockLease,
        t: Duration,
    ) -> Result<bool, StoreError> {
        self.check_up()?;
        self.inner.renew_lock(k, l, t).await
    }
    async fn wait_for_fill(&self, k: &CacheKey, t: Duration) {
        self.inner.wait_for_fill(k, t).await
    }
}
