//! The fencing protocol, as one pure state machine per cache key: what the
//! in-process store runs, what the Redis scripts do in Lua, and what the
//! model check (`tests/model.rs`) explores.
//!
//! Every write to a key holds a **lease** drawn before the rebuild asked the
//! origin: the rebuild lock's (lock layer, background refreshes) or a
//! lock-less **ticket** (every other fill). A lease carries a
//! [`FencingToken`] `(epoch, seq)` drawn from the key's **fence record**:
//!
//! * `epoch` names one incarnation of the record. A record is created with
//!   a fresh random epoch when none exists, and it lives only while leases
//!   keep it alive (each draw and renewal extends it to the lease TTL).
//!   When it expires, is evicted, flushed or lost in a restart, every lease
//!   drawn from it is void for good: its epoch never comes back.
//! * `seq` orders the draws within one incarnation (strictly increasing).
//!
//! A write lands only if its lease's epoch is the record's current one and
//! its `seq` is at least the purge floor and at least the last write of the
//! same variant. A delete (purge, unsafe method) raises the purge floor to a
//! fresh draw, so every lease drawn before it is refused. A delete of a key
//! without a record needs no fence at all: no lease drawn before it can be
//! valid any more.
//!
//! The invariant, and why it needs no clock: *a write lands only if no purge
//! and no write of the same variant was ordered after its lease was drawn.*
//! Within an incarnation the record itself orders draws, writes and purges.
//! Across incarnations nothing is compared: a lease of an earlier one is
//! refused. So a holder paused for any length of time, a Redis restart or
//! `FLUSHALL`, an evicted record, the in-process fallback's leases (another
//! store's epochs) — all end in a refusal, never in an old answer landing.
//! Time only bounds liveness: a rebuild slower than its lease TTL that could
//! not renew is not stored.

use std::sync::Arc;

/// A fencing token: the fence record's incarnation and the order of the draw
/// within it (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken {
    /// The incarnation of the key's fence record the token was drawn from.
    pub epoch: u64,
    /// The order of the draw within that incarnation (from 1).
    pub seq: u64,
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}.{}", self.epoch, self.seq)
    }
}

/// Why a fenced write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// A write of the same variant with a later lease landed first.
    Superseded,
    /// A purge was ordered after the lease was drawn.
    Purged,
    /// The lease's fence record is gone (expired, evicted, flushed) or was
    /// re-created since: the lease is void.
    LeaseLost,
}

impl Refusal {
    /// The metric label value (`stampede_fencing_rejections_total{reason}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Superseded => "superseded",
            Refusal::Purged => "purged",
            Refusal::LeaseLost => "lease-lost",
        }
    }

    /// Every label value.
    pub const ALL: [Refusal; 3] = [Refusal::Superseded, Refusal::Purged, Refusal::LeaseLost];
}

/// One key's fence record (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FenceRecord {
    epoch: u64,
    issued: u64,
    purged: u64,
    /// The last written `seq` per variant (`None`: the response varies on
    /// nothing). Bounded by the variants written within one incarnation.
    written: Vec<(Option<Arc<str>>, u64)>,
}

impl FenceRecord {
    /// A new incarnation.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            issued: 0,
            purged: 0,
            written: Vec::new(),
        }
    }

    /// The incarnation.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Draw the next token.
    pub fn draw(&mut self) -> FencingToken {
        self.issued += 1;
        FencingToken {
            epoch: self.epoch,
            seq: self.issued,
        }
    }

    /// Whether a write of `variant` holding `token` may land.
    pub fn check_write(&self, token: FencingToken, variant: Option<&str>) -> Result<(), Refusal> {
        if token.epoch != self.epoch || token.seq > self.issued {
            return Err(Refusal::LeaseLost);
        }
        if token.seq < self.purged {
            return Err(Refusal::Purged);
        }
        match self.written.iter().find(|(v, _)| v.as_deref() == variant) {
            Some((_, w)) if token.seq < *w => Err(Refusal::Superseded),
            _ => Ok(()),
        }
    }

    /// Check and record a write of `variant` holding `token`.
    pub fn write(&mut self, token: FencingToken, variant: Option<&str>) -> Result<(), Refusal> {
        self.check_write(token, variant)?;
        match self
            .written
            .iter_mut()
            .find(|(v, _)| v.as_deref() == variant)
        {
            Some((_, w)) => *w = token.seq,
            None => self.written.push((variant.map(Into::into), token.seq)),
        }
        Ok(())
    }

    /// A delete: every lease drawn before it is refused from now on.
    /// Returns the new purge floor (a lease of at least this `seq` was drawn
    /// after the delete).
    pub fn purge(&mut self) -> u64 {
        self.purged = self.draw().seq;
        self.purged
    }

    /// Whether a lease holding `token` could still write (some variant): it
    /// is worth renewing.
    pub fn is_live(&self, token: FencingToken) -> bool {
        token.epoch == self.epoch && token.seq >= self.purged && token.seq <= self.issued
    }
}

/// A fresh random epoch (never 0).
pub fn new_epoch() -> u64 {
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_lease_order_per_variant() {
        let mut r = FenceRecord::new(7);
        let a = r.draw();
        let b = r.draw();
        assert_eq!(r.write(b, None), Ok(()));
        assert_eq!(r.write(a, None), Err(Refusal::Superseded));
        // Another variant is not superseded by this one's write.
        assert_eq!(r.write(a, Some("gzip")), Ok(()));
        // The same lease may write again (a revalidation's refresh).
        assert_eq!(r.write(b, None), Ok(()));
    }

    #[test]
    fn a_purge_refuses_every_earlier_lease() {
        let mut r = FenceRecord::new(7);
        let a = r.draw();
        r.purge();
        assert_eq!(r.write(a, Some("x")), Err(Refusal::Purged));
        assert!(!r.is_live(a));
        let b = r.draw();
        assert_eq!(r.write(b, Some("x")), Ok(()));
    }

    #[test]
    fn another_incarnation_voids_the_lease() {
        let mut old = FenceRecord::new(7);
        let a = old.draw();
        let mut new = FenceRecord::new(8);
        let _ = new.draw();
        assert_eq!(new.write(a, None), Err(Refusal::LeaseLost));
        // A token from the future of this incarnation is not ours either.
        let forged = FencingToken { epoch: 8, seq: 99 };
        assert_eq!(new.write(forged, None), Err(Refusal::LeaseLost));
    }
}
