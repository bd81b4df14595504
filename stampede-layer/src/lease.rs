//! A held rebuild lock, released when the guard goes away however the
//! rebuild ends (an explicit [`LeaseGuard::release`], or a drop — a
//! cancelled or panicking rebuild — which releases it in the background).

use crate::context::FencingToken;
use crate::key::CacheKey;
use crate::store::{LockLease, SharedStore, record_error};
use std::time::Duration;

/// Why taking a rebuild lock did not give one.
#[derive(Debug)]
pub enum Acquire {
    /// We hold it.
    Held(LeaseGuard),
    /// Someone else holds it.
    Contended,
    /// The lock service failed (counted and logged).
    Failed,
}

/// A held lock on one key (and variant): releases on drop.
#[derive(Debug)]
pub struct LeaseGuard {
    store: SharedStore,
    key: CacheKey,
    lease: Option<LockLease>,
}

impl LeaseGuard {
    /// Try to take `key`'s rebuild lock for `ttl`.
    pub async fn acquire(store: &SharedStore, key: &CacheKey, ttl: Duration) -> Acquire {
        match store.try_lock(key, ttl).await {
            Ok(Some(lease)) => Acquire::Held(LeaseGuard {
                store: store.clone(),
                key: key.clone(),
                lease: Some(lease),
            }),
            Ok(None) => Acquire::Contended,
            Err(err) => {
                record_error(store.as_ref(), "lock", &err);
                Acquire::Failed
            }
        }
    }

    /// The fencing token the fill must write with.
    pub fn token(&self) -> FencingToken {
        FencingToken(self.lease.as_ref().map_or(0, |l| l.token))
    }

    /// Release now (compare-and-delete: only if we still own it).
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take()
            && let Err(err) = self.store.unlock(&self.key, &lease).await
        {
            record_error(self.store.as_ref(), "lock", &err);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = store.unlock(&key, &lease).await {
                    record_error(store.as_ref(), "lock", &err);
                }
            });
        }
    }
}
