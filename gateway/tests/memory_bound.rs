//! The in-process store's byte bound holds under a flood of distinct keys
//! whose stored Vary request values are large: the process's resident memory
//! grows by at most the configured bound plus a documented overhead.
//!
//! `STAMPEDE_MEMORY_KEYS` sets the number of keys (default 100 000 here;
//! `scripts/reliability.py` runs 1 000 000 in a release build).

mod common;

use bytes::Bytes;
use http::Method;
use stampede_layer::store::{CacheKey, CachedResponse, VaryValues, now_ms};
use stampede_layer::{CacheStore, MemoryStore};

/// The process's resident set size, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

const MIB: u64 = 1024 * 1024;
/// The store's configured byte bound in this test.
const BOUND: u64 = 64 * MIB;
/// Documented overhead on top of the bound (docs/RELIABILITY.md): moka's
/// per-entry bookkeeping (key string, timer wheel and LRU nodes, ~200 B an
/// entry for the ~40 k entries the bound admits here), the allocator's
/// retained free memory, and the test's own buffers.
const OVERHEAD: u64 = BOUND / 2 + 32 * MIB;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_within_the_bound_under_a_flood_of_keys_with_large_vary_values() {
    let keys: u64 = std::env::var("STAMPEDE_MEMORY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // Entries bound far above what the bytes admit: the byte bound binds.
    let store = MemoryStore::new(10_000_000, BOUND);
    let vary_value = vec![b'x'; 1024];
    let body = Bytes::from(vec![b'b'; 256]);
    let before = rss_bytes();
    let mut peak = before;
    let started = std::time::Instant::now();
    for i in 0..keys {
        let now = now_ms();
        let entry = CachedResponse {
            status: 200,
            body: body.clone(),
            stored_at_ms: now,
            fresh_until_ms: now + 600_000,
            stale_until_ms: now + 600_000,
            error_until_ms: now + 600_000,
            retain_until_ms: now + 600_000,
            vary: VaryValues(vec![(
                "accept-language".into(),
                Some({
                    let mut v = vary_value.clone();
                    v.extend_from_slice(i.to_string().as_bytes());
                    v
                }),
            )]),
            ..CachedResponse::default()
        };
        let uri = format!("/items/{i}?lang={i}").parse().unwrap();
        stampede_layer::testing::fill(&store, &CacheKey::new(&Method::GET, &uri), &entry)
            .await
            .unwrap();
        if i % 50_000 == 0 {
            store.sync().await;
            peak = peak.max(rss_bytes());
        }
    }
    store.sync().await;
    let after = rss_bytes();
    peak = peak.max(after);
    let held = store.entry_count().unwrap_or(0);
    let weighed = store.weighted_size();
    common::report(
        "memory_bound::rss_stays_within_the_bound_under_a_flood_of_keys_with_large_vary_values",
        serde_json::json!({
            "distinct keys written": keys,
            "stored size each (body + Vary value)": "256 B + 1 KiB",
            "byte bound (MiB)": BOUND / MIB,
            "entries held at the end": held,
            "weighed size held (MiB)": format!("{:.1}", weighed as f64 / MIB as f64),
            "RSS growth at the end (MiB)": format!("{:.1}", after.saturating_sub(before) as f64 / MIB as f64),
            "RSS growth at its peak (MiB)": format!("{:.1}", peak.saturating_sub(before) as f64 / MIB as f64),
            "documented overhead allowed (MiB)": OVERHEAD / MIB,
            "seconds": format!("{:.1}", started.elapsed().as_secs_f64()),
        }),
    );
    assert!(weighed <= BOUND, "weighed {weighed} > bound {BOUND}");
    // Each key writes two entries: its variant (its own slot) and the key's
    // variant index.
    assert!(
        held < 2 * keys,
        "the bound evicted nothing ({held} entries of {keys} keys held)"
    );
    assert!(
        peak.saturating_sub(before) <= BOUND + OVERHEAD,
        "RSS grew {} MiB, more than the {} MiB bound + {} MiB overhead",
        peak.saturating_sub(before) / MIB,
        BOUND / MIB,
        OVERHEAD / MIB
    );
}
