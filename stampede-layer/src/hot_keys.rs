//! A bounded hot-key report: the top keys by request rate over the last
//! window, without per-key metric labels (unbounded cardinality). Published
//! as `stampede_hot_key_requests_per_second{rank="1".."N"}` and readable via
//! [`HotKeys::top`] (the gateway serves it on its admin listener).
//!
//! A hit must not take a lock: one request in [`DEFAULT_SAMPLE`] (chosen at
//! random, so no request pattern aliases with it) is counted, with weight
//! [`DEFAULT_SAMPLE`]. A hot key's rate is estimated within a few percent
//! over a window; a key too cold to be sampled was not hot.

use crate::key::CacheKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One hot key and its request rate over the last complete window.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HotKey {
    /// The normalised request (`GET /items/1`), truncated.
    pub key: String,
    /// Requests per second over the last window.
    pub requests_per_second: f64,
}

/// One request in this many is counted by default (see the module docs).
pub(crate) const DEFAULT_SAMPLE: u32 = 8;

/// Counts requests per key in fixed windows, tracking at most `capacity` keys.
#[derive(Clone, Debug)]
pub struct HotKeys {
    state: Arc<Mutex<State>>,
    window: Duration,
    capacity: usize,
    top_n: usize,
    sample: u32,
}

#[derive(Debug)]
struct State {
    started: Instant,
    counts: HashMap<String, u64>,
    top: Vec<HotKey>,
}

impl HotKeys {
    /// Top `top_n` keys over `window`, tracking at most `capacity` distinct keys a window.
    pub fn new(top_n: usize, window: Duration, capacity: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                counts: HashMap::new(),
                top: Vec::new(),
            })),
            window,
            capacity,
            top_n,
            sample: DEFAULT_SAMPLE,
        }
    }

    /// Count one request in `n` (1: every request, exact counts).
    pub fn sample_one_in(mut self, n: u32) -> Self {
        self.sample = n.max(1);
        self
    }

    /// Count one request for `key` (sampled: most calls return at once).
    pub fn record(&self, key: &CacheKey) {
        if self.sample > 1 && !rand::random_ratio(1, self.sample) {
            return;
        }
        let weight = u64::from(self.sample);
        let mut s = self.state.lock().expect("hot keys lock");
        self.rotate_if_due(&mut s);
        let full = s.counts.len() >= self.capacity;
        if let Some(c) = s.counts.get_mut(key.display()) {
            *c += weight;
        } else if !full {
            s.counts.insert(key.display().to_owned(), weight);
        }
    }

    /// The top keys of the last complete window.
    pub fn top(&self) -> Vec<HotKey> {
        let mut s = self.state.lock().expect("hot keys lock");
        self.rotate_if_due(&mut s);
        s.top.clone()
    }

    fn rotate_if_due(&self, s: &mut State) {
        let elapsed = s.started.elapsed();
        if elapsed < self.window {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let mut all: Vec<(String, u64)> = s.counts.drain().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.top_n);
        s.top = all
            .into_iter()
            .map(|(key, n)| HotKey {
                key,
                requests_per_second: n as f64 / secs,
            })
            .collect();
        s.started = Instant::now();
        for rank in 0..self.top_n {
            let rate = s.top.get(rank).map_or(0.0, |k| k.requests_per_second);
            metrics::gauge!("stampede_hot_key_requests_per_second", "rank" => (rank + 1).to_string())
                .set(rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn ranks_and_bounds() {
        let hot = HotKeys::new(2, Duration::from_millis(50), 3).sample_one_in(1);
        let k = |p: &str| CacheKey::new(&Method::GET, &p.parse().unwrap());
        for _ in 0..10 {
            hot.record(&k("/hot"));
        }
        for _ in 0..3 {
            hot.record(&k("/warm"));
        }
        for i in 0..100 {
            hot.record(&k(&format!("/cold/{i}")));
        }
        std::thread::sleep(Duration::from_millis(60));
        let top = hot.top();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].key, "GET /hot");
        assert_eq!(top[1].key, "GET /warm");
        assert!(top[0].requests_per_second > top[1].requests_per_second);
    }

    #[test]
    fn sampled_counts_estimate_the_rate() {
        let window = Duration::from_millis(200);
        let created = Instant::now();
        let hot = HotKeys::new(1, window, 100);
        let k = CacheKey::new(&Method::GET, &"/hot".parse().unwrap());
        let n = 40_000u32;
        for _ in 0..n {
            hot.record(&k);
        }
        assert!(created.elapsed() < window, "all in one window");
        std::thread::sleep(window);
        // The rate is per second of the window as it was closed: between these two.
        let (before, top, after) = (created.elapsed(), hot.top(), created.elapsed());
        let rate = top[0].requests_per_second;
        // Binomial(n, 1/8) × 8: the standard deviation is under 2 % of n.
        let n = f64::from(n);
        assert!(rate * before.as_secs_f64() < 1.15 * n, "{rate}/s for {n}");
        assert!(rate * after.as_secs_f64() > 0.85 * n, "{rate}/s for {n}");
    }
}
