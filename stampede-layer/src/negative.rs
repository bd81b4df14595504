//! Negative caching: bounds the miss storm on *absent* keys. Without it every
//! request for an id that does not exist reaches the origin (404s are not
//! stored by default); with it the fill stores a 404/410 for a short negative
//! TTL (the `negative` mitigation,
//! [`StampedeLayer::negative_ttl`](crate::StampedeLayer::negative_ttl)). A
//! write through the cache (an unsafe method) invalidates the key, so a
//! created item is not hidden by its cached 404.

use std::time::Duration;

/// How long the fill stores an answer with `status` as a negative answer:
/// `ttl` for a 404 or 410, else not at all.
pub(crate) fn negative_ttl(status: http::StatusCode, ttl: Duration) -> Option<Duration> {
    (matches!(status.as_u16(), 404 | 410) && !ttl.is_zero()).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absent_answers_get_a_negative_ttl() {
        let ttl = Duration::from_secs(5);
        assert_eq!(negative_ttl(http::StatusCode::NOT_FOUND, ttl), Some(ttl));
        assert_eq!(negative_ttl(http::StatusCode::GONE, ttl), Some(ttl));
        assert_eq!(negative_ttl(http::StatusCode::OK, ttl), None);
        assert_eq!(
            negative_ttl(http::StatusCode::NOT_FOUND, Duration::ZERO),
            None
        );
    }
}
