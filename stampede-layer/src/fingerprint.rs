//! The herd's fingerprint, computed where the herd happens: in the gateway,
//! per key, so alert rules read it at any scrape interval and in front of
//! any origin.
//!
//! A stampede is many origin rebuilds of *one* key at once. Seen from
//! Prometheus as the total origin request rate it is a sawtooth at the TTL
//! period, which a 15–30 s scrape folds into a flat line and which the
//! misses of other keys blur (issue #24: a naive stampede of 46 rebuilds per
//! boundary never made the rate-shaped alert pending). Counted here instead:
//!
//! * **`stampede_rebuilds_per_key_window`** (histogram): for each key, the
//!   origin rebuilds that *start* within one herd window (`--herd-window`,
//!   1 s by default) of the key's first rebuild; the count is observed when
//!   the window closes. A coordinated key is rebuilt once per window (once
//!   per TTL, or per refresh); a herd puts every client that missed during
//!   the rebuild into one window — dozens. Observed per window, not per
//!   scrape, so a `rate()` over any range sees every herd. Requests passed
//!   straight to the origin (hit-for-miss: the key is known to be
//!   uncacheable) are not rebuilds and are not counted.
//! * **`stampede_stale_served_age_seconds`** (histogram): how long past its
//!   freshness lifetime each stale answer was (its RFC 9211 `ttl`, negated:
//!   whole seconds, rounded up). Stale-while-revalidate answers are a few
//!   seconds old at most; answers older than the stale window are
//!   stale-if-error (or a lock wait or a shed that fell back to the stale
//!   copy): the origin has been failing that long, and grace is hiding it.
//!
//! # State and memory
//!
//! The windows are process-wide (like the metrics recorder they report to):
//! one map from a hash of the key (and its variant) to its open window, at
//! most [`MAX_TRACKED_KEYS`] keys; a key rebuilt while the map is full and
//! holds no expired window is observed at once as a window of one. A
//! background thread started on the first rebuild closes the windows that
//! have ended (every half window), so a window's count reaches the histogram
//! at most half a window after it closes, also when the key is never rebuilt
//! again.
//!
//! # Exporter buckets
//!
//! A window's count is not a duration, and stale ages run to minutes: an
//! exporter should give the two histograms [`REBUILDS_BUCKETS`] and
//! [`STALE_AGE_BUCKETS`] (the gateway does; `metrics-exporter-prometheus`
//! renders a histogram it has no buckets for as a summary).

use crate::context::{Lookup, LookupState};
use crate::key::CacheKey;
use crate::status::{CacheStatus, Outcome};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Histogram: origin rebuilds per key per herd window.
pub const REBUILDS_PER_KEY_WINDOW: &str = "stampede_rebuilds_per_key_window";
/// Histogram: seconds past freshness of each stale answer served.
pub const STALE_SERVED_AGE: &str = "stampede_stale_served_age_seconds";
/// Buckets of [`REBUILDS_PER_KEY_WINDOW`]: exact up to 5 (1 is the
/// coordinated case; the herd alert counts windows above 4), then doubling.
pub const REBUILDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Buckets of [`STALE_SERVED_AGE`], in seconds: the stale-while-revalidate
/// range (up to the default 5 s window), then the stale-if-error range.
pub const STALE_AGE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// The herd window unless [`set_herd_window`] says otherwise.
pub const DEFAULT_HERD_WINDOW: Duration = Duration::from_secs(1);
/// Most keys with an open window at once (about 60 bytes each).
pub(crate) const MAX_TRACKED_KEYS: usize = 10_000;

/// Set the herd window (process-wide; the gateway's `--herd-window`). A
/// window already open keeps the length it opened with.
pub fn set_herd_window(window: Duration) {
    let ms = window.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
    herd().window_ms.store(ms, Ordering::Relaxed);
}

/// Count one origin rebuild of the looked-up key, starting now (called by
/// [`CacheFill`](crate::fill::CacheFill) when it asks the origin). Pass-through
/// requests are not rebuilds and are ignored.
pub(crate) fn rebuild_started(lookup: &Lookup) {
    if lookup.state == LookupState::Pass {
        return;
    }
    let herd = herd();
    herd.ensure_sweeper();
    let mut closed = Vec::new();
    {
        let mut windows = herd.windows.lock().expect("herd windows lock");
        windows.start(
            key_id(&lookup.key),
            Instant::now(),
            herd.window(),
            &mut closed,
        );
    }
    observe(&closed);
}

/// Record what the fingerprint needs of one client answer (called by
/// [`CacheLookup`](crate::lookup::CacheLookup)): the age of a stale answer.
#[inline]
pub(crate) fn answered(status: &CacheStatus, outcome: Outcome) {
    if outcome != Outcome::Stale {
        return;
    }
    if let Some(ttl) = status.ttl.filter(|t| *t < 0) {
        metrics::histogram!(STALE_SERVED_AGE).record(ttl.unsigned_abs() as f64);
    }
}

/// Describe both histograms and create their (empty) series.
pub(crate) fn register() {
    metrics::describe_histogram!(
        REBUILDS_PER_KEY_WINDOW,
        "Origin rebuilds of one key that started within one herd window (--herd-window), observed when the window closes"
    );
    metrics::describe_histogram!(
        STALE_SERVED_AGE,
        metrics::Unit::Seconds,
        "How long past its freshness each stale answer served was (whole seconds, rounded up)"
    );
    let _ = metrics::histogram!(REBUILDS_PER_KEY_WINDOW);
    let _ = metrics::histogram!(STALE_SERVED_AGE);
}

fn observe(closed: &[u32]) {
    if closed.is_empty() {
        return;
    }
    let h = metrics::histogram!(REBUILDS_PER_KEY_WINDOW);
    for &n in closed {
        h.record(f64::from(n));
    }
}

/// A stable 64-bit identity of the key and its variant (what rebuilds
/// coordinate on): no key text is kept.
fn key_id(key: &CacheKey) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.digest().hash(&mut h);
    key.variant().hash(&mut h);
    h.finish()
}

struct Herd {
    window_ms: AtomicU64,
    windows: Mutex<Windows>,
    sweeper: OnceLock<()>,
}

impl Herd {
    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.load(Ordering::Relaxed))
    }

    /// Start the thread that closes ended windows (once per process).
    fn ensure_sweeper(&'static self) {
        self.sweeper.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("stampede-herd-windows".into())
                .spawn(move || {
                    loop {
                        let window = self.window();
                        std::thread::sleep((window / 2).clamp(
                            Duration::from_millis(10),
                            Duration::from_secs(1),
                        ));
                        let mut closed = Vec::new();
                        self.windows
                            .lock()
                            .expect("herd windows lock")
                            .sweep(Instant::now(), &mut closed);
                        observe(&closed);
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "cannot start the herd-window thread; windows close on the next rebuild only");
            }
        });
    }
}

fn herd() -> &'static Herd {
    static HERD: OnceLock<Herd> = OnceLock::new();
    HERD.get_or_init(|| Herd {
        window_ms: AtomicU64::new(DEFAULT_HERD_WINDOW.as_millis() as u64),
        windows: Mutex::new(Windows::new(MAX_TRACKED_KEYS)),
        sweeper: OnceLock::new(),
    })
}

/// One key's open window.
#[derive(Clone, Copy, Debug)]
struct Open {
    ends: Instant,
    rebuilds: u32,
}

/// The open windows, at most `capacity` of them (pure logic: times are
/// passed in, closed windows' counts are pushed to `closed`).
#[derive(Debug)]
struct Windows {
    open: HashMap<u64, Open>,
    capacity: usize,
}

impl Windows {
    fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            capacity,
        }
    }

    /// A rebuild of `key` starts at `now`.
    fn start(&mut self, key: u64, now: Instant, window: Duration, closed: &mut Vec<u32>) {
        if let Some(w) = self.open.get_mut(&key) {
            if now < w.ends {
                w.rebuilds = w.rebuilds.saturating_add(1);
                return;
            }
            closed.push(w.rebuilds);
            *w = Open {
                ends: now + window,
                rebuilds: 1,
            };
            return;
        }
        if self.open.len() >= self.capacity {
            self.sweep(now, closed);
        }
        if self.open.len() >= self.capacity {
            // Full of live windows: this key's window is observed alone.
            closed.push(1);
            return;
        }
        self.open.insert(
            key,
            Open {
                ends: now + window,
                rebuilds: 1,
            },
        );
    }

    /// Close every window that has ended by `now`.
    fn sweep(&mut self, now: Instant, closed: &mut Vec<u32>) {
        self.open.retain(|_, w| {
            let live = now < w.ends;
            if !live {
                closed.push(w.rebuilds);
            }
            live
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(1);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_herd_is_one_window_with_every_rebuild() {
        let t0 = Instant::now();
        let mut w = Windows::new(100);
        let mut closed = Vec::new();
        // 46 clients miss within the 200 ms rebuild: one window of 46.
        for i in 0..46 {
            w.start(7, ms(t0, i * 4), W, &mut closed);
        }
        w.sweep(ms(t0, 999), &mut closed);
        assert!(closed.is_empty(), "the window is still open");
        w.sweep(ms(t0, 1000), &mut closed);
        assert_eq!(closed, [46]);
        assert!(w.open.is_empty());
    }

    #[test]
    fn a_coordinated_key_is_one_rebuild_per_window() {
        let t0 = Instant::now();
        let mut w = Windows::new(100);
        let mut closed = Vec::new();
        // One rebuild per 2 s TTL, and a cold key rebuilt once.
        for boundary in 0..5 {
            w.start(1, ms(t0, boundary * 2000), W, &mut closed);
        }
        w.start(2, ms(t0, 500), W, &mut closed);
        w.sweep(ms(t0, 20_000), &mut closed);
        closed.sort_unstable();
        assert_eq!(closed, [1; 6]);
    }

    #[test]
    fn a_rebuild_after_the_window_closes_the_old_one_at_once() {
        let t0 = Instant::now();
        let mut w = Windows::new(100);
        let mut closed = Vec::new();
        w.start(1, t0, W, &mut closed);
        w.start(1, ms(t0, 10), W, &mut closed);
        w.start(1, ms(t0, 1500), W, &mut closed);
        assert_eq!(closed, [2]);
        assert_eq!(w.open[&1].rebuilds, 1);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut w = Windows::new(3);
        let mut closed = Vec::new();
        for key in 0..3 {
            w.start(key, t0, W, &mut closed);
        }
        // Full of live windows: a fourth key is a window of one, at once.
        w.start(99, ms(t0, 1), W, &mut closed);
        assert_eq!(closed, [1]);
        assert_eq!(w.open.len(), 3);
        // Once they have ended, a new key sweeps them out and is tracked.
        w.start(100, ms(t0, 1001), W, &mut closed);
        assert_eq!(closed, [1, 1, 1, 1]);
        assert_eq!(w.open.len(), 1);
        assert!(w.open.contains_key(&100));
    }

    #[test]
    fn variants_and_keys_are_told_apart() {
        let k = |p: &str| CacheKey::new(&http::Method::GET, &p.parse().unwrap());
        assert_ne!(key_id(&k("/a")), key_id(&k("/b")));
        assert_ne!(
            key_id(&k("/a")),
            key_id(&k("/a").with_variant(Some("gzip".into())))
        );
        assert_eq!(key_id(&k("/a")), key_id(&k("/a")));
    }

    #[test]
    fn stale_age_is_the_negated_ttl() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            answered(&CacheStatus::hit(-7), Outcome::Stale);
            answered(&CacheStatus::hit(3), Outcome::Hit);
            answered(&CacheStatus::hit(-1), Outcome::Stale);
        });
        let values: Vec<f64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == STALE_SERVED_AGE)
            .flat_map(|(.., value)| match value {
                DebugValue::Histogram(v) => v.into_iter().map(|x| x.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(values, [7.0, 1.0]);
    }
}
