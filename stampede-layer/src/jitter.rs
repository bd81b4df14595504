//! TTL jitter: bounds the *multi-key* herd. Keys written together (a bulk
//! warm, a deploy) would expire together; spreading each write's TTL by a
//! random fraction turns the needle of misses into a hill. The fill applies
//! it to every TTL it writes (the `jitter` mitigation,
//! [`StampedeLayer::jitter`](crate::StampedeLayer::jitter)).

use rand::Rng;

/// The random TTL factor for `fraction`: uniform in `[1 - fraction, 1 +
/// fraction]` (`fraction` clamped to `[0, 1)`; the mean TTL is unchanged).
pub(crate) fn ttl_scale(fraction: f64) -> f64 {
    let fraction = fraction.clamp(0.0, 0.99);
    if fraction == 0.0 {
        return 1.0;
    }
    1.0 + rand::rng().random_range(-fraction..=fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_stays_in_range_and_spreads() {
        let samples: Vec<f64> = (0..2000).map(|_| ttl_scale(0.2)).collect();
        assert!(samples.iter().all(|s| (0.8..=1.2).contains(s)));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 1.0).abs() < 0.02);
        assert!(samples.iter().any(|s| *s < 0.85) && samples.iter().any(|s| *s > 1.15));
        assert_eq!(ttl_scale(0.0), 1.0);
    }
}
