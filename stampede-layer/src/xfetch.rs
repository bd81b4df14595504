//! XFetch — probabilistic early expiration (Vattani, Chierichetti, Lowenstein,
//! VLDB 2015): bounds the *cliff*. A fresh entry is refreshed in the
//! background a random while before it expires. The paper's per-read test
//! ([`should_refresh_early`]) is
//!
//! ```text
//! now - delta * beta * ln(U) >= expiry,   U ~ Uniform(0, 1]
//! ```
//!
//! rolled on every read. With `r` reads a second its trigger times compound:
//! the first refresh comes about `delta*beta*ln(r*delta*beta)` before expiry,
//! earlier the hotter the key and the slower the origin (at 1,800 reads/s and
//! a 200 ms rebuild, 1.2 s early on a 2 s TTL; with a saturated origin, right
//! after the previous fill). Here `U` is drawn once per *entry* instead
//! ([`entry_draw`]: a hash of the key and the write, so every instance of a
//! fleet draws the same), and the refresh is due at
//!
//! ```text
//! expiry - s * (1 - ln U),   s = min(delta * beta, lifetime / 8),
//! never more than lifetime / 2 before expiry
//! ```
//!
//! ([`early_refresh_gap_ms`]). For a single read (a cold key) the trigger
//! probability is `e` times the paper's (capped at 1) while `s` is not
//! capped; for any read rate the earliness has the same distribution: at least `s` (a refresh that takes `delta` lands before
//! expiry while `delta*beta <= lifetime/8`), `2s` on average, so at most
//! `1 / (1 - 2/8)` ≈ 1.33 rebuilds per lifetime whatever the rate and the
//! rebuild time, and never two within half a lifetime (no chain against a
//! saturated origin). `beta` (> 0) scales `s`; 0 disables early refresh. A
//! key read about once per TTL rarely has a read in the window, and still
//! misses at expiry.
//!
//! **Not where stale-while-revalidate covers the expiry.** An entry that may
//! be served stale for at least twice its rebuild time past its expiry, in a
//! stack whose SWR layer is on, has no cliff: at expiry the first read gets
//! the stale answer and starts the one refresh, and no client waits. An
//! early refresh there only shortens every lifetime (by `2s` on average:
//! about one origin request in four more on a 2 s `max-age` with a 200 ms
//! origin, measured on the real-traffic rung), so XFetch leaves such entries
//! to SWR ([`XFetchPolicy::stale_covers`]) and refreshes early only those that
//! must not be served stale (`must-revalidate`, `no-cache`, a stale window
//! shorter than the rebuild, SWR off).
//!
//! It sits outside [`CacheLookup`](crate::lookup::CacheLookup): it reads the
//! [`FreshHit`] the lookup attaches to a fresh hit and, when the entry is
//! due, starts the refresh itself, through its own inner service (the
//! lookup, then single-flight and the lock), marked [`ForceRefresh`]. The
//! client's answer is the hit, untouched. At most one refresh per key runs in
//! a process, and on a shared store one per fleet (the refresh claims the
//! key's lock first).

use crate::body::{BoxError, CacheBody};
use crate::context::{ForceRefresh, FreshHit};
use crate::entry::{CachedResponse, now_ms};
use crate::key::CacheKey;
use crate::refresh::{Refresher, refresh_request};
use crate::store::SharedStore;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// Largest spread `s` of the early refresh, as a fraction of the entry's
/// fresh lifetime: a slow (saturated) origin cannot pull refreshes earlier.
pub(crate) const MAX_SPREAD_OF_LIFETIME: f64 = 1.0 / 8.0;

/// Earliest early refresh, as a fraction of the entry's fresh lifetime: an
/// entry younger than this is never refreshed early.
pub(crate) const MIN_AGE_OF_LIFETIME: f64 = 0.5;

/// The XFetch decision for an entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct XFetchPolicy {
    /// The `beta` knob (default 1.0).
    pub beta: f64,
    /// Whether the stack serves stale while revalidating: entries SWR covers
    /// are not refreshed early ([`Self::stale_covers`]).
    pub swr: bool,
}

impl XFetchPolicy {
    /// Whether `entry`, found under `key`, is due for its early refresh at `now_ms`.
    pub(crate) fn should_refresh(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        now_ms: u64,
    ) -> bool {
        let lifetime = entry.fresh_until_ms.saturating_sub(entry.stored_at_ms);
        let earliest = entry.fresh_until_ms - max_gap_ms(lifetime);
        // Cheap test first: most hits of a hot key are far from expiry.
        now_ms >= earliest && !self.stale_covers(entry) && now_ms >= self.refresh_at_ms(key, entry)
    }

    /// Whether stale-while-revalidate covers `entry`'s expiry: SWR is on, the
    /// entry may be served stale, and its stale window is at least twice its
    /// rebuild time (the refresh started at expiry lands within it).
    pub(crate) fn stale_covers(&self, entry: &CachedResponse) -> bool {
        let window = entry.stale_until_ms.saturating_sub(entry.fresh_until_ms);
        self.swr
            && entry.may_serve_stale()
            && window > 0
            && window >= 2 * u64::from(entry.rebuild_ms)
    }

    /// When `entry`, found under `key`, is due for its early refresh (ms
    /// since the epoch; `fresh_until_ms` when early refresh is off).
    pub(crate) fn refresh_at_ms(&self, key: &CacheKey, entry: &CachedResponse) -> u64 {
        let lifetime = entry.fresh_until_ms.saturating_sub(entry.stored_at_ms);
        let gap = early_refresh_gap_ms(
            lifetime,
            u64::from(entry.rebuild_ms),
            self.beta,
            entry_draw(key, entry),
        );
        entry.fresh_until_ms - gap
    }
}

/// The paper's per-read test with an explicit `u` in (0, 1]:
/// `now - delta * beta * ln(u) >= expiry`. Kept as the reference the layer
/// is argued against (see the module docs); the layer uses
/// [`early_refresh_gap_ms`] with one `u` per entry.
#[cfg(test)]
pub(crate) fn should_refresh_early(
    now_ms: u64,
    delta_ms: u64,
    beta: f64,
    expiry_ms: u64,
    u: f64,
) -> bool {
    let gap = -(delta_ms as f64) * beta * u.ln(); // ≥ 0
    now_ms as f64 + gap >= expiry_ms as f64
}

/// How long before expiry an entry with fresh lifetime `lifetime_ms`,
/// rebuilt in `delta_ms`, is due for its early refresh, for its draw `u` in
/// (0, 1]: `s * (1 - ln u)` with `s = min(delta * beta, lifetime / 8)`, at
/// most `lifetime / 2`; 0 when `beta` or `delta` is 0.
pub(crate) fn early_refresh_gap_ms(lifetime_ms: u64, delta_ms: u64, beta: f64, u: f64) -> u64 {
    let spread = (delta_ms as f64 * beta.max(0.0)).min(lifetime_ms as f64 * MAX_SPREAD_OF_LIFETIME);
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    let gap = spread * (1.0 - u.ln());
    (gap as u64).min(max_gap_ms(lifetime_ms))
}

fn max_gap_ms(lifetime_ms: u64) -> u64 {
    (lifetime_ms as f64 * (1.0 - MIN_AGE_OF_LIFETIME)) as u64
}

/// The entry's `U` in (0, 1]: a hash of the key and of the write (when it
/// was stored, its fencing token), uniform over entries, the same in every
/// process that reads the entry — so a fleet agrees on when it is due.
pub(crate) fn entry_draw(key: &CacheKey, entry: &CachedResponse) -> f64 {
    let digest = key.digest();
    let key_bits = digest
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| digest.bytes().fold(0u64, |h, b| mix(h ^ u64::from(b))));
    let h = mix(mix(key_bits ^ entry.stored_at_ms) ^ entry.fence);
    ((h >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit permutation.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Layer for [`XFetch`].
#[derive(Clone, Debug)]
pub(crate) struct XFetchLayer {
    policy: XFetchPolicy,
    refresher: Refresher,
    enabled: bool,
}

impl XFetchLayer {
    /// XFetch with `beta` (1.0 is the paper's optimum for most loads).
    pub(crate) fn new(beta: f64) -> Self {
        Self {
            policy: XFetchPolicy {
                beta: beta.max(0.0),
                swr: false,
            },
            refresher: Refresher::new("xfetch"),
            enabled: true,
        }
    }

    /// Switch the layer off (`false`): requests pass through untouched. A
    /// stack can then toggle one mitigation without changing its type.
    pub(crate) fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Whether the stack serves stale while revalidating (`true`): entries
    /// whose expiry SWR covers are then left to it (see the module docs).
    pub(crate) fn stale_while_revalidate(mut self, on: bool) -> Self {
        self.policy.swr = on;
        self
    }

    /// The policy, when the layer is on.
    pub(crate) fn active_policy(&self) -> Option<XFetchPolicy> {
        self.enabled.then_some(self.policy)
    }

    /// Most early refreshes in flight at once in this process.
    pub(crate) fn max_refreshes(mut self, n: usize) -> Self {
        self.refresher = self.refresher.max_in_flight(n);
        self
    }

    /// On a shared `store`, claim the key's lock (for `ttl`) before a
    /// refresh, so one instance of the fleet refreshes it, not each.
    pub(crate) fn claim_through(mut self, store: SharedStore, ttl: Duration) -> Self {
        self.refresher = self.refresher.claim_through(store, ttl);
        self
    }

    /// Renewal of the claimed lock and the refresh's deadline (default:
    /// [`LeaseOptions::default`](crate::LeaseOptions)).
    pub(crate) fn lease(mut self, lease: crate::LeaseOptions) -> Self {
        self.refresher = self.refresher.lease(lease);
        self
    }
}

impl Default for XFetchLayer {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl<S> Layer<S> for XFetchLayer {
    type Service = XFetch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        XFetch {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// Refreshes fresh hits early, probabilistically (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct XFetch<S> {
    inner: S,
    config: Arc<XFetchLayer>,
}

impl<S, B> Service<Request<B>> for XFetch<S>
where
    S: Service<Request<B>, Response = Response<CacheBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Default + Send + 'static,
{
    type Response = Response<CacheBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<CacheBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.config.enabled {
            let inner = self.inner.clone();
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        }
        // One clone of the stack below per request: it answers this request
        // and, when the entry is due, runs the refresh.
        let mut inner = self.inner.clone();
        let config = self.config.clone();
        let version = req.version();
        Box::pin(async move {
            let resp = inner
                .ready()
                .await
                .map_err(Into::into)?
                .call(req)
                .await
                .map_err(Into::into)?;
            if let Some(hit) = resp.extensions().get::<FreshHit>()
                && config.policy.should_refresh(&hit.key, &hit.entry, now_ms())
            {
                let headers = hit.refresh_headers.clone();
                let mut refresh: Request<B> =
                    refresh_request(&hit.target, version, headers, ForceRefresh);
                refresh
                    .extensions_mut()
                    .insert(crate::context::RefreshKey(hit.key.clone()));
                config.refresher.spawn(inner, refresh, &hit.key);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: u64 = 2_000; // fresh lifetime, ms

    fn entry(stored_at_ms: u64, lifetime_ms: u64, rebuild_ms: u32) -> CachedResponse {
        CachedResponse {
            status: 200,
            headers: vec![],
            body: Default::default(),
            stored_at_ms,
            fresh_until_ms: stored_at_ms + lifetime_ms,
            stale_until_ms: stored_at_ms + lifetime_ms,
            error_until_ms: stored_at_ms + lifetime_ms,
            rebuild_ms,
            fence: 7,
            vary: Default::default(),
            kind: Default::default(),
            initial_age_ms: 0,
            retain_until_ms: stored_at_ms + lifetime_ms,
            must_revalidate: false,
            no_cache: false,
            head: Default::default(),
        }
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&http::Method::GET, &path.parse().unwrap())
    }

    /// `n` draws spread evenly over (0, 1].
    fn draws(n: u32) -> impl Iterator<Item = f64> + Clone {
        (1..=n).map(move |i| f64::from(i) / f64::from(n))
    }

    /// The first of `rate` evenly spaced reads a second of an entry stored
    /// at 0 (a read at `t` rolls `u_of(t)`) that triggers, per `trigger`.
    fn first_trigger(rate: u64, mut trigger: impl FnMut(u64) -> bool) -> Option<u64> {
        let step = 1_000_000 / rate; // µs
        (0..)
            .map(|i| i * step / 1_000)
            .take_while(|t| *t < L)
            .find(|t| trigger(*t))
    }

    #[test]
    fn paper_formula() {
        // Far from expiry: only an astronomically small u triggers.
        assert!(!should_refresh_early(0, 200, 1.0, 10_000, 0.5));
        assert!(should_refresh_early(0, 200, 1.0, 10_000, 1e-30));
        // At or past expiry: always.
        assert!(should_refresh_early(10_000, 200, 1.0, 10_000, 1.0));
        // beta 0 disables early refresh.
        assert!(!should_refresh_early(9_999, 200, 0.0, 10_000, 1e-30));
    }

    #[test]
    fn gap_is_at_least_the_spread_and_bounded() {
        // s = delta * beta while that is under lifetime / 8.
        assert_eq!(early_refresh_gap_ms(L, 200, 1.0, 1.0), 200);
        for u in draws(1_000) {
            let gap = early_refresh_gap_ms(L, 200, 1.0, u);
            assert!(gap >= 200, "a refresh taking delta lands in time: {gap}");
            assert!(gap <= L / 2, "never younger than half its lifetime: {gap}");
        }
        // Even the smallest draw stays within half the lifetime.
        assert_eq!(early_refresh_gap_ms(L, 200, 1.0, f64::MIN_POSITIVE), L / 2);
        assert_eq!(early_refresh_gap_ms(L, 200, 1.0, 0.0), L / 2);
        // beta 0 or an instant rebuild: no early refresh.
        assert_eq!(early_refresh_gap_ms(L, 200, 0.0, 1e-9), 0);
        assert_eq!(early_refresh_gap_ms(L, 0, 1.0, 1e-9), 0);
        // beta scales the spread.
        assert_eq!(early_refresh_gap_ms(L, 100, 2.0, 1.0), 200);
    }

    #[test]
    fn a_slow_origin_cannot_pull_refreshes_earlier() {
        let capped = (L as f64 * MAX_SPREAD_OF_LIFETIME) as u64;
        for delta in [capped, 1_000, 5_000, 60_000] {
            assert_eq!(early_refresh_gap_ms(L, delta, 1.0, 1.0), capped);
        }
        // Mean earliness over the draws is about 2 s, so cycles last at
        // least lifetime - 2 s on average.
        let n = 100_000;
        let mean = draws(n)
            .map(|u| early_refresh_gap_ms(L, 60_000, 1.0, u) as f64)
            .sum::<f64>()
            / f64::from(n);
        let bound = 2.0 * L as f64 * MAX_SPREAD_OF_LIFETIME;
        assert!(mean <= bound, "{mean} > {bound}");
        assert!(
            L as f64 / (L as f64 - mean) <= 1.5,
            "rebuilds per lifetime, refreshes landing at once"
        );
    }

    #[test]
    fn read_rate_does_not_move_the_refresh() {
        // One entry, its draw fixed: the refresh is due at one instant, and
        // the first read at or after it triggers, at any rate.
        let policy = XFetchPolicy {
            beta: 1.0,
            swr: false,
        };
        let k = key("/hot");
        let e = entry(0, L, 200);
        let due = policy.refresh_at_ms(&k, &e);
        assert!((L / 2..=L - 200).contains(&due), "{due}");
        for rate in [10, 100, 1_000, 10_000] {
            let t = first_trigger(rate, |t| policy.should_refresh(&k, &e, t)).unwrap();
            assert!(
                t >= due && t - due <= 1_000 / rate,
                "rate {rate}: {t} vs {due}"
            );
        }
        // The paper's per-read test, one fresh u per read (a fixed
        // sequence), triggers earlier the more reads there are.
        let per_read = |rate| {
            let mut us = draws(997).cycle().step_by(389);
            first_trigger(rate, |t| {
                should_refresh_early(t, 200, 1.0, L, us.next().unwrap())
            })
            .unwrap()
        };
        assert!(per_read(10_000) < per_read(100) && per_read(100) < due);
    }

    #[test]
    fn one_read_triggers_at_least_as_often_as_the_papers_test() {
        // A cold key: a single read at `gap` before expiry, over the draws.
        let n = 10_000;
        for gap in [50, 200, 400, 800] {
            let ours = draws(n)
                .filter(|u| early_refresh_gap_ms(L, 200, 1.0, *u) >= gap)
                .count();
            let paper = draws(n)
                .filter(|u| should_refresh_early(L - gap, 200, 1.0, L, *u))
                .count();
            assert!(ours >= paper, "gap {gap}: {ours} < {paper}");
        }
    }

    #[test]
    fn draw_is_per_entry_and_uniform() {
        let (a, b) = (key("/a"), key("/b"));
        let e = entry(1_700_000_000_000, L, 200);
        let u = entry_draw(&a, &e);
        assert!(u > 0.0 && u <= 1.0);
        assert_eq!(u, entry_draw(&a, &e.clone()), "every reader draws the same");
        assert_ne!(u, entry_draw(&b, &e), "keys written together differ");
        let mut next = e.clone();
        next.stored_at_ms += 1;
        assert_ne!(u, entry_draw(&a, &next), "each write draws anew");
        // Uniform enough: the mean and the lower tail of many writes.
        let n = 20_000;
        let us: Vec<f64> = (0..n)
            .map(|i| entry_draw(&a, &entry(1_700_000_000_000 + i * 2_000, L, 200)))
            .collect();
        let mean = us.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let low = us.iter().filter(|u| **u < 0.1).count() as f64 / n as f64;
        assert!((low - 0.1).abs() < 0.02, "{low}");
    }

    #[test]
    fn young_entries_are_never_due() {
        let policy = XFetchPolicy {
            beta: 100.0,
            swr: false,
        };
        for i in 0..1_000 {
            let e = entry(i * 3_000, L, 60_000);
            let k = key(&format!("/k/{i}"));
            assert!(!policy.should_refresh(&k, &e, e.stored_at_ms + L / 2 - 1));
            assert!(policy.should_refresh(&k, &e, e.fresh_until_ms));
        }
    }

    #[test]
    fn entries_stale_while_revalidate_covers_are_left_to_it() {
        let off = XFetchPolicy {
            beta: 1.0,
            swr: false,
        };
        let on = XFetchPolicy { swr: true, ..off };
        let k = key("/hot");
        // 10 s of stale window after a 2 s lifetime, rebuilt in 200 ms.
        let mut e = entry(0, L, 200);
        e.stale_until_ms = e.fresh_until_ms + 10_000;
        let due = off.refresh_at_ms(&k, &e);
        assert!(off.should_refresh(&k, &e, due), "without SWR: early");
        assert!(on.stale_covers(&e));
        for t in due..e.fresh_until_ms {
            assert!(!on.should_refresh(&k, &e, t), "SWR covers it: not at {t}");
        }
        // Entries that must not be served stale still refresh early ...
        let marks: [fn(&mut CachedResponse); 2] =
            [|e| e.must_revalidate = true, |e| e.no_cache = true];
        for mark in marks {
            let mut strict = e.clone();
            mark(&mut strict);
            assert!(!on.stale_covers(&strict));
            assert!(on.should_refresh(&k, &strict, due));
        }
        // ... and so do those whose stale window a rebuild would outlast.
        let mut short = e.clone();
        short.stale_until_ms = short.fresh_until_ms + 399;
        assert!(!on.stale_covers(&short));
        assert!(on.should_refresh(&k, &short, due));
        short.stale_until_ms = short.fresh_until_ms + 400;
        assert!(on.stale_covers(&short));
        // No stale window at all (the entry() default).
        assert!(!on.stale_covers(&entry(0, L, 0)));
    }
}
