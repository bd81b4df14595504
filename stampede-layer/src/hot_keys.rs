//! A bounded hot-key report: the top keys by request rate over the last
//! window, without per-key metric labels (unbounded cardinality). Published
//! as `stampede_hot_key_requests_per_second{rank="1".."N"}` and readable via
//! [`HotKeys::top`] (the gateway serves it on its admin listener).

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

/// Counts requests per key in fixed windows, tracking at most `capacity` keys.
#[derive(Clone, Debug)]
pub struct HotKeys {
    state: Arc<Mutex<State>>,
    window: Duration,
    capacity: usize,
    top_n: usize,
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
        }
    }

    /// Count one request for `key`.
    pub fn record(&self, key: &CacheKey) {
        let mut s = self.state.lock().expect("hot keys lock");
        self.rotate_if_due(&mut s);
        let full = s.counts.len() >= self.capacity;
        if let Some(c) = s.counts.get_mut(key.display()) {
            *c += 1;
        } else if !full {
            s.counts.insert(key.display().to_owned(), 1);
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
        let hot = HotKeys::new(2, Duration::from_millis(50), 3);
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
}
