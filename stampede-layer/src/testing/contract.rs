//! The store contract: what every [`CacheStore`] must do, as checks a custom
//! store (memcached, DynamoDB, …) can run against itself. Each check panics
//! with the broken promise; [`run`] runs them all.
//!
//! `a` and `b` are two handles on one store (two gateways' connections to
//! one Redis; the same in-process store twice), so the checks see what one
//! instance's writes and locks do to the other's.
//!
//! ```no_run
//! # async fn demo() {
//! use stampede_layer::MemoryStore;
//! let store = MemoryStore::default();
//! stampede_layer::testing::contract::run(&store, &store).await;
//! # }
//! ```

use crate::entry::{CachedResponse, VaryValues, now_ms};
use crate::key::CacheKey;
use crate::store::tags::{PurgeMode, prefix_tag};
use crate::store::{CacheStore, LockAttempt, LockLease, PutOutcome, RebuildFailure, Refusal};
use bytes::Bytes;
use http::Method;
use std::time::Duration;

/// A lease TTL long enough for every check but the expiry ones.
const TTL: Duration = Duration::from_secs(10);

fn key(path: &str) -> CacheKey {
    CacheKey::new(&Method::GET, &path.parse().expect("a path"))
}

/// A `200` with `body`, fresh for `fresh_ms`, then stale for `stale_ms`.
pub fn entry(body: &str, fresh_ms: u64, stale_ms: u64) -> CachedResponse {
    let now = now_ms();
    CachedResponse {
        status: 200,
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        body: Bytes::from(body.to_owned()),
        stored_at_ms: now,
        fresh_until_ms: now + fresh_ms,
        stale_until_ms: now + fresh_ms + stale_ms,
        error_until_ms: now + fresh_ms + stale_ms,
        rebuild_ms: 10,
        ..Default::default()
    }
}

fn variant(mut e: CachedResponse, accept_language: &str) -> CachedResponse {
    e.vary = VaryValues(vec![(
        "accept-language".into(),
        Some(accept_language.as_bytes().to_vec()),
    )]);
    e
}

async fn body(store: &dyn CacheStore, k: &CacheKey) -> Option<String> {
    store
        .get_authoritative(k)
        .await
        .expect("get")
        .map(|e| String::from_utf8_lossy(&e.body).into_owned())
}

async fn put(
    store: &dyn CacheStore,
    k: &CacheKey,
    e: &CachedResponse,
    lease: &LockLease,
) -> PutOutcome {
    store.put(k, e, lease).await.expect("put")
}

/// Run every check.
pub async fn run(a: &dyn CacheStore, b: &dyn CacheStore) {
    round_trip_and_delete(a, b).await;
    writes_land_in_lease_order(a, b).await;
    a_purge_refuses_every_earlier_lease(a, b).await;
    variants_are_fenced_apart(a, b).await;
    one_lock_per_url_and_owner_release(a, b).await;
    renewal_keeps_a_lease_and_stops_when_it_is_void(a, b).await;
    a_lapsed_lease_is_void_on_a_cold_and_a_warm_key(a, b).await;
    a_failed_rebuild_answers_its_waiters_only(a, b).await;
    every_variant_has_its_slot_and_a_purge_takes_them_all(a, b).await;
    a_tag_or_prefix_purge_takes_its_entries_only(a, b).await;
    a_fill_that_started_before_a_tag_purge_is_refused(a, b).await;
    a_soft_purge_marks_every_variant_stale_and_fences(a, b).await;
    expires_after_the_stale_window(a).await;
}

/// A fresh name for this run (tags and paths), so checks run twice against
/// one shared store do not see each other's entries.
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `e` tagged by the origin: `Surrogate-Key` and `Cache-Tag`.
fn tagged(mut e: CachedResponse, surrogate: &str, cache_tag: &str) -> CachedResponse {
    e.headers
        .push(("surrogate-key".into(), surrogate.as_bytes().to_vec()));
    e.headers
        .push(("cache-tag".into(), cache_tag.as_bytes().to_vec()));
    e
}

/// A purge by an origin tag (`Surrogate-Key` or `Cache-Tag`) or by a path
/// prefix takes every entry indexed under it — and fences it: a lease drawn
/// before is refused — and no other entry.
pub async fn a_tag_or_prefix_purge_takes_its_entries_only(a: &dyn CacheStore, b: &dyn CacheStore) {
    let run = run_id();
    let (even, odd, shared) = (
        format!("even-{run}"),
        format!("odd-{run}"),
        format!("all-{run}"),
    );
    let path = |i: usize| format!("/contract/{run}/tags/{i}");
    for i in 0..6 {
        let k = key(&path(i));
        let t = a.ticket(&k, TTL).await.expect("ticket");
        let parity = if i % 2 == 0 { &even } else { &odd };
        let e = tagged(
            entry(&format!("v{i}"), 60_000, 0),
            &format!("x {parity}"),
            &shared,
        );
        assert_eq!(put(a, &k, &e, &t).await, PutOutcome::Written);
    }
    let outside = key(&format!("/contract/{run}/other"));
    let t = a.ticket(&outside, TTL).await.expect("ticket");
    let e = tagged(entry("outside", 60_000, 0), "x", "y");
    assert_eq!(put(a, &outside, &e, &t).await, PutOutcome::Written);
    let before = a.ticket(&key(&path(0)), TTL).await.expect("ticket");

    let purge = b.purge_tag(&even, PurgeMode::Hard).await.expect("purge");
    assert_eq!(purge.hit, 3, "{}: the even entries", a.backend());
    for i in 0..6 {
        let held = body(b, &key(&path(i))).await;
        assert_eq!(held.is_some(), i % 2 == 1, "{}: entry {i}", a.backend());
    }
    assert_eq!(
        put(
            a,
            &key(&path(0)),
            &tagged(entry("late", 60_000, 0), &even, ""),
            &before
        )
        .await,
        PutOutcome::Fenced(Refusal::Purged),
        "{}: a fill that started before a tag purge landed",
        a.backend()
    );
    // A fill whose lease was drawn after the purge fenced its key lands at
    // once (its record orders them: no clock, no skew to wait out).
    let after = a.ticket(&key(&path(0)), TTL).await.expect("ticket");
    let refill = tagged(entry("refilled", 60_000, 0), &even, "");
    assert_eq!(
        put(a, &key(&path(0)), &refill, &after).await,
        PutOutcome::Written,
        "{}: a fill that started after a tag purge fenced its key was refused",
        a.backend()
    );
    assert!(b.delete(&key(&path(0))).await.expect("delete"));
    // The Cache-Tag header's tag, then a prefix (at a '/' boundary only).
    let purge = a.purge_tag(&shared, PurgeMode::Hard).await.expect("purge");
    assert_eq!(purge.hit, 3, "{}: the odd ones, by Cache-Tag", a.backend());
    let t = a.ticket(&key(&path(1)), TTL).await.expect("ticket");
    let e = tagged(entry("again", 60_000, 0), "x", "");
    assert_eq!(put(a, &key(&path(1)), &e, &t).await, PutOutcome::Written);
    let prefix = prefix_tag(&format!("/contract/{run}/tags/"));
    let purge = b.purge_tag(&prefix, PurgeMode::Hard).await.expect("purge");
    assert_eq!(purge.hit, 1, "{}: by prefix", a.backend());
    assert_eq!(body(a, &key(&path(1))).await, None);
    assert_eq!(
        body(a, &outside).await.as_deref(),
        Some("outside"),
        "{}: a purge took an entry outside its tags",
        a.backend()
    );
    let nothing = prefix_tag(&format!("/contract/{run}/tag/"));
    assert_eq!(
        b.purge_tag(&nothing, PurgeMode::Hard)
            .await
            .expect("purge")
            .hit,
        0
    );
}

/// The race between a tag purge and a fill of an entry the tag's index does
/// not list yet: the fill's lease was drawn and its origin request started
/// before the purge, its key joins the index after the purge listed it.
/// It must be refused (the purge's record of the tag); a fill that started
/// past the clock skew after the purge lands; a tagged fill older than any
/// purge record is kept is refused.
pub async fn a_fill_that_started_before_a_tag_purge_is_refused(
    a: &dyn CacheStore,
    b: &dyn CacheStore,
) {
    let run = run_id();
    let tag = format!("race-{run}");
    let k = key(&format!("/contract/{run}/race"));
    let slow = a.ticket(&k, TTL).await.expect("ticket");
    // Its origin request started now (stored_at − rebuild time).
    let fetched = tagged(entry("fetched before the purge", 60_000, 0), &tag, "");
    let purge = b.purge_tag(&tag, PurgeMode::Hard).await.expect("purge");
    assert!(purge.keys.is_empty(), "not indexed yet");
    assert_eq!(
        put(a, &k, &fetched, &slow).await,
        PutOutcome::Fenced(Refusal::Purged),
        "{}: a fill that asked the origin before a tag purge landed after it",
        a.backend()
    );
    assert_eq!(body(b, &k).await, None);
    // Untagged entries are not concerned (another key: this one's index
    // membership is not what is checked).
    let plain = key("/plain");
    let t = a.ticket(&plain, TTL).await.expect("ticket");
    assert_eq!(
        put(a, &plain, &entry("untagged", 60_000, 0), &t).await,
        PutOutcome::Written
    );
    // Past the clock skew after the purge, a new fill lands.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = a.ticket(&k, TTL).await.expect("ticket");
    let fresh = tagged(entry("fetched after", 60_000, 0), &tag, "");
    assert_eq!(put(a, &k, &fresh, &next).await, PutOutcome::Written);
    assert_eq!(body(b, &k).await.as_deref(), Some("fetched after"));
    // An hour-old request: any purge record could have lapsed since.
    let mut old = tagged(entry("an hour old", 60_000, 0), &tag, "");
    old.stored_at_ms -= 3_600_000;
    let t = a.ticket(&k, TTL).await.expect("ticket");
    assert_eq!(
        put(a, &k, &old, &t).await,
        PutOutcome::Fenced(Refusal::Purged),
        "{}: a tagged fill older than the purge window landed",
        a.backend()
    );
}

/// A soft purge marks the entry stale — every variant of it, by key or by
/// tag — for at least the grace, instead of removing it; it fences like a
/// hard purge (a lease drawn before is refused), and the next write makes
/// the entry fresh again.
pub async fn a_soft_purge_marks_every_variant_stale_and_fences(
    a: &dyn CacheStore,
    b: &dyn CacheStore,
) {
    let run = run_id();
    let grace = Duration::from_secs(30);
    let k = key(&format!("/contract/{run}/soft"));
    let t = a.ticket(&k, TTL).await.expect("ticket");
    assert_eq!(
        put(a, &k, &entry("v1", 60_000, 0), &t).await,
        PutOutcome::Written
    );
    let before = a.ticket(&k, TTL).await.expect("ticket");
    assert!(b.soft_delete(&k, grace).await.expect("soft delete"), "held");
    let now = now_ms();
    let stale = a
        .get_authoritative(&k)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("{}: a soft purge removed the entry", a.backend()));
    assert_eq!(stale.body, "v1");
    assert!(
        !stale.is_fresh(now),
        "{}: still fresh after a soft purge",
        a.backend()
    );
    assert!(
        stale.stale_until_ms >= now + grace.as_millis() as u64 - 2_000,
        "{}: not stale for the grace",
        a.backend()
    );
    assert_eq!(
        put(a, &k, &entry("fetched before", 60_000, 0), &before).await,
        PutOutcome::Fenced(Refusal::Purged),
        "{}: a fill that started before a soft purge undid it",
        a.backend()
    );
    let after = a.ticket(&k, TTL).await.expect("ticket");
    assert_eq!(
        put(a, &k, &entry("v2", 60_000, 0), &after).await,
        PutOutcome::Written
    );
    let fresh = b
        .get_authoritative(&k)
        .await
        .expect("get")
        .expect("written");
    assert!(
        fresh.is_fresh(now_ms()),
        "{}: a write after a soft purge is fresh",
        a.backend()
    );

    // By tag, on a key with variants: every variant is marked.
    let tag = format!("soft-{run}");
    let kv = key(&format!("/contract/{run}/soft-variants"));
    for lang in ["fr", "de"] {
        let t = a.ticket(&kv, TTL).await.expect("ticket");
        let e = tagged(variant(entry(lang, 60_000, 0), lang), &tag, "");
        assert_eq!(put(a, &kv, &e, &t).await, PutOutcome::Written);
    }
    let purge = b
        .purge_tag(&tag, PurgeMode::Soft { grace })
        .await
        .expect("purge");
    assert_eq!(purge.hit, 1, "{}: one key", a.backend());
    for lang in ["fr", "de"] {
        let slot = kv
            .clone()
            .with_variant(variant(entry("", 0, 0), lang).variant_id());
        let got = b
            .get_authoritative(&slot)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{}: variant {lang} removed", a.backend()));
        assert_eq!(got.body, lang);
        assert!(
            !got.is_fresh(now_ms()),
            "{}: variant {lang} fresh",
            a.backend()
        );
    }
    // The refresh that follows (its lease drawn after the purge) lands at once.
    let t = a.ticket(&kv, TTL).await.expect("ticket");
    let e = tagged(variant(entry("fr, refreshed", 60_000, 0), "fr"), &tag, "");
    assert_eq!(
        put(a, &kv, &e, &t).await,
        PutOutcome::Written,
        "{}: the refresh after a soft tag purge was refused",
        a.backend()
    );
}

/// Entries round-trip between handles; a delete says whether it held one.
pub async fn round_trip_and_delete(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/contract/round-trip");
    let lease = a.ticket(&k, TTL).await.expect("ticket");
    assert!(!lease.locked, "a ticket holds no lock");
    let e = entry("hello", 5_000, 5_000);
    assert_eq!(put(a, &k, &e, &lease).await, PutOutcome::Written);
    let got = b.get(&k).await.expect("get").expect("written");
    assert_eq!(got.body, e.body);
    assert_eq!(got.fence, lease.token.seq, "the entry names its lease");
    assert!(b.delete(&k).await.expect("delete"), "an entry was held");
    assert_eq!(body(a, &k).await, None);
    assert!(!a.delete(&k).await.expect("delete"), "nothing left");
}

/// Two leases drawn in order: the later one's write lands first, then the
/// earlier one's is refused (superseded).
pub async fn writes_land_in_lease_order(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/contract/order");
    let first = a
        .try_lock(&k, TTL)
        .await
        .expect("lock")
        .acquired()
        .expect("free");
    let second = b.ticket(&k, TTL).await.expect("ticket");
    assert!(second.token > first.token, "draws are ordered");
    assert_eq!(
        put(b, &k, &entry("second", 5_000, 0), &second).await,
        PutOutcome::Written
    );
    assert_eq!(
        put(a, &k, &entry("first", 5_000, 0), &first).await,
        PutOutcome::Fenced(Refusal::Superseded),
        "{}: an earlier lease wrote over a later one",
        a.backend()
    );
    assert_eq!(body(a, &k).await.as_deref(), Some("second"));
    // The same lease may write again (a revalidated entry).
    assert_eq!(
        put(b, &k, &entry("second again", 5_000, 0), &second).await,
        PutOutcome::Written
    );
    assert!(a.unlock(&k, &first).await.expect("unlock"));
}

/// A purge refuses every lease drawn before it — lock or ticket, on a key
/// with or without an entry — and none drawn after it.
pub async fn a_purge_refuses_every_earlier_lease(a: &dyn CacheStore, b: &dyn CacheStore) {
    for warm in [false, true] {
        let k = key(&format!("/contract/purge-{warm}"));
        if warm {
            let t = a.ticket(&k, TTL).await.expect("ticket");
            assert_eq!(
                put(a, &k, &entry("v1", 5_000, 0), &t).await,
                PutOutcome::Written
            );
        }
        let lock = a
            .try_lock(&k, TTL)
            .await
            .expect("lock")
            .acquired()
            .expect("free");
        let ticket = a.ticket(&k, TTL).await.expect("ticket");
        b.delete(&k).await.expect("delete");
        for lease in [&lock, &ticket] {
            assert_eq!(
                put(a, &k, &entry("fetched before the purge", 5_000, 0), lease).await,
                PutOutcome::Fenced(Refusal::Purged),
                "{}: a purge was undone (warm: {warm})",
                a.backend()
            );
        }
        assert_eq!(body(b, &k).await, None);
        let after = b.ticket(&k, TTL).await.expect("ticket");
        assert_eq!(
            put(b, &k, &entry("after", 5_000, 0), &after).await,
            PutOutcome::Written
        );
        a.unlock(&k, &lock).await.expect("unlock");
    }
}

/// A write of one variant does not supersede another variant's lease.
pub async fn variants_are_fenced_apart(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/contract/variants");
    let de = a.ticket(&k, TTL).await.expect("ticket");
    let fr = b.ticket(&k, TTL).await.expect("ticket");
    assert_eq!(
        put(b, &k, &variant(entry("fr", 5_000, 0), "fr"), &fr).await,
        PutOutcome::Written
    );
    assert_eq!(
        put(a, &k, &variant(entry("de", 5_000, 0), "de"), &de).await,
        PutOutcome::Written,
        "{}: one variant's write refused another's",
        a.backend()
    );
    assert!(
        a.renew_lock(&k, &de, TTL).await.expect("renew"),
        "another variant's write stops no renewal"
    );
}

/// One rebuild lock per URL, whatever the variant a request saw; only its
/// owner releases it.
pub async fn one_lock_per_url_and_owner_release(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/contract/lock");
    let lease = a
        .try_lock(&k, TTL)
        .await
        .expect("lock")
        .acquired()
        .expect("free");
    assert!(lease.locked);
    assert!(b.try_lock(&k, TTL).await.expect("lock").is_held());
    let scoped = k.clone().with_variant(Some("lang=de".into()));
    assert!(
        b.try_lock(&scoped, TTL).await.expect("lock").is_held(),
        "{}: a variant-scoped request took a second lock on one URL",
        a.backend()
    );
    let stranger = LockLease {
        owner: "someone else".into(),
        ..lease.clone()
    };
    assert!(!b.unlock(&k, &stranger).await.expect("unlock"));
    assert!(a.unlock(&k, &lease).await.expect("unlock"));
    let next = b
        .try_lock(&k, TTL)
        .await
        .expect("lock")
        .acquired()
        .expect("released");
    assert!(next.token > lease.token);
    assert!(
        !a.unlock(&k, &lease).await.expect("unlock"),
        "not the owner"
    );
    assert!(b.unlock(&k, &next).await.expect("unlock"));
}

/// Renewal keeps a lease (lock and ticket) past its TTL, and answers `false`
/// once the lease is void: another owner, or a purge after it.
pub async fn renewal_keeps_a_lease_and_stops_when_it_is_void(
    a: &dyn CacheStore,
    b: &dyn CacheStore,
) {
    let k = key("/contract/renew");
    let ttl = Duration::from_millis(300);
    let lock = a
        .try_lock(&k, ttl)
        .await
        .expect("lock")
        .acquired()
        .expect("free");
    let ticket = a.ticket(&k, ttl).await.expect("ticket");
    for _ in 0..4 {
        tokio::time::sleep(ttl / 3).await;
        assert!(a.renew_lock(&k, &lock, ttl).await.expect("renew"));
        assert!(a.renew_lock(&k, &ticket, ttl).await.expect("renew"));
    }
    // Four thirds of the TTL later: both still valid.
    assert!(b.try_lock(&k, ttl).await.expect("lock").is_held());
    assert_eq!(
        put(a, &k, &entry("slow fill", 5_000, 0), &ticket).await,
        PutOutcome::Written
    );
    let stranger = LockLease {
        owner: "someone else".into(),
        ..lock.clone()
    };
    assert!(!b.renew_lock(&k, &stranger, ttl).await.expect("renew"));
    b.delete(&k).await.expect("delete");
    assert!(
        !a.renew_lock(&k, &lock, ttl).await.expect("renew"),
        "purged: its write would be refused"
    );
    a.unlock(&k, &lock).await.expect("unlock");
}

/// Issue #19's headline: a lease whose holder paused past its TTL (no
/// renewal) is void for good, on a key never cached before and on one with
/// an entry — its late write is refused after a newer lease's write.
pub async fn a_lapsed_lease_is_void_on_a_cold_and_a_warm_key(
    a: &dyn CacheStore,
    b: &dyn CacheStore,
) {
    for warm in [false, true] {
        let k = key(&format!("/contract/lapsed-{warm}"));
        let ttl = Duration::from_millis(100);
        if warm {
            let t = b.ticket(&k, ttl).await.expect("ticket");
            assert_eq!(
                put(b, &k, &entry("v0", 60_000, 0), &t).await,
                PutOutcome::Written
            );
            tokio::time::sleep(ttl * 2).await;
        }
        let paused = a
            .try_lock(&k, ttl)
            .await
            .expect("lock")
            .acquired()
            .expect("free");
        tokio::time::sleep(ttl * 2).await;
        let next = b
            .try_lock(&k, ttl)
            .await
            .expect("lock")
            .acquired()
            .expect("lapsed");
        assert_eq!(
            put(b, &k, &entry("v2", 60_000, 0), &next).await,
            PutOutcome::Written
        );
        let late = put(a, &k, &entry("v1, late", 60_000, 0), &paused).await;
        assert!(
            matches!(late, PutOutcome::Fenced(_)),
            "{}: a lapsed lease wrote over a newer one (warm: {warm}): {late:?}",
            a.backend()
        );
        assert_eq!(body(a, &k).await.as_deref(), Some("v2"));
        // Even with nothing written since, a lapsed lease stays void.
        let k2 = key(&format!("/contract/lapsed-alone-{warm}"));
        let alone = a
            .try_lock(&k2, ttl)
            .await
            .expect("lock")
            .acquired()
            .expect("free");
        tokio::time::sleep(ttl * 2).await;
        let _other = b.ticket(&k2, ttl).await.expect("ticket");
        assert_eq!(
            put(a, &k2, &entry("late", 60_000, 0), &alone).await,
            PutOutcome::Fenced(Refusal::LeaseLost)
        );
    }
}

/// A rebuild that fails leaves its outcome on the lock: a request that waited
/// on it (on any handle) gets the failure, until it lapses; a request that
/// comes later takes the lock and rebuilds.
pub async fn a_failed_rebuild_answers_its_waiters_only(a: &dyn CacheStore, b: &dyn CacheStore) {
    let k = key("/contract/failure");
    let lease = a
        .try_lock(&k, TTL)
        .await
        .expect("lock")
        .acquired()
        .expect("free");
    let holder = match b.try_lock(&k, TTL).await.expect("lock") {
        LockAttempt::Held(holder) => holder,
        other => panic!("{}: a held lock answered {other:?}", a.backend()),
    };
    assert_eq!(holder, lease.token, "the holder is named");
    let failure = RebuildFailure {
        status: 503,
        until_ms: now_ms() + 300,
        lease: lease.token,
    };
    assert!(a.unlock_failed(&k, &lease, &failure).await.expect("unlock"));
    match b.try_lock_after(&k, TTL, Some(holder)).await.expect("lock") {
        LockAttempt::RecentFailure(f) => {
            assert_eq!((f.status, f.lease), (503, lease.token));
            assert!(f.until_ms >= failure.until_ms - 1);
        }
        other => panic!("{}: the waiter got {other:?}", a.backend()),
    }
    let later = b.try_lock(&k, TTL).await.expect("lock").acquired();
    let later = later.unwrap_or_else(|| panic!("{}: a later request must rebuild", a.backend()));
    b.unlock(&k, &later).await.expect("unlock");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        b.try_lock_after(&k, TTL, Some(holder))
            .await
            .expect("lock")
            .acquired()
            .is_some(),
        "{}: a failure must not stick",
        a.backend()
    );
}

/// Every variant of a key is stored (a slot each, an index under the key), a
/// bounded number of them, and a purge of the key removes them all.
pub async fn every_variant_has_its_slot_and_a_purge_takes_them_all(
    a: &dyn CacheStore,
    b: &dyn CacheStore,
) {
    let k = key("/contract/variants-stored");
    for lang in ["fr", "de"] {
        let t = a.ticket(&k, TTL).await.expect("ticket");
        let e = variant(entry(lang, 60_000, 0), lang);
        assert_eq!(put(a, &k, &e, &t).await, PutOutcome::Written);
    }
    let index = b.get(&k).await.expect("get").expect("an index");
    assert!(
        index.is_variant_index(),
        "{}: the key holds its variant index",
        a.backend()
    );
    for lang in ["fr", "de"] {
        let slot = k
            .clone()
            .with_variant(variant(entry("", 0, 0), lang).variant_id());
        let got = b.get(&slot).await.expect("get").expect("the variant");
        assert_eq!(got.body, lang, "{}: variants evict each other", a.backend());
    }
    // Bounded: the least recently stored go first.
    for i in 0..40 {
        let t = a.ticket(&k, TTL).await.expect("ticket");
        let e = variant(entry("many", 60_000, 0), &format!("x{i}"));
        put(a, &k, &e, &t).await;
    }
    let first = k
        .clone()
        .with_variant(variant(entry("", 0, 0), "fr").variant_id());
    // (Past any near copy: those live out their own bound.)
    assert_eq!(body(b, &first).await, None, "{}: unbounded", a.backend());
    let last = k
        .clone()
        .with_variant(variant(entry("", 0, 0), "x39").variant_id());
    assert!(body(b, &last).await.is_some());
    assert!(b.delete(&k).await.expect("delete"));
    assert_eq!(body(b, &k).await, None);
    assert_eq!(
        body(a, &last).await,
        None,
        "{}: a purge leaves a variant behind",
        a.backend()
    );
}

/// An entry outlives its freshness by the stale window, and no longer.
pub async fn expires_after_the_stale_window(store: &dyn CacheStore) {
    let k = key("/contract/expiry");
    let lease = store.ticket(&k, TTL).await.expect("ticket");
    // Fresh 100 ms, then stale 200 ms: kept through the stale window, gone after.
    put(store, &k, &entry("x", 100, 200), &lease).await;
    tokio::time::sleep(Duration::from_millis(180)).await;
    assert!(
        store.get(&k).await.expect("get").is_some(),
        "{}: an entry must outlive its fresh TTL by the stale window",
        store.backend()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.get(&k).await.expect("get"),
        None,
        "{}: gone after the stale window",
        store.backend()
    );
}
