//! `Cache-Control` response directives (RFC 9111 §5.2.2, RFC 5861), parsed
//! apart from the policy that uses them.

use http::HeaderMap;
use http::header::CACHE_CONTROL;
use std::time::Duration;

/// The response directives the cache acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (treated as not storable: this cache does not revalidate).
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` (or, for a shared cache, `proxy-revalidate`).
    pub must_revalidate: bool,
    /// `max-age`.
    pub max_age: Option<Duration>,
    /// `s-maxage` (wins over `max-age` for a shared cache).
    pub s_maxage: Option<Duration>,
    /// RFC 5861 `stale-while-revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    /// RFC 5861 `stale-if-error`.
    pub stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    /// Parse every `Cache-Control` header of `headers`; unknown or malformed
    /// directives are ignored.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for part in value.split(',') {
                let part = part.trim();
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (part, None),
                };
                let secs = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "max-age" => d.max_age = secs(),
                    "s-maxage" => d.s_maxage = secs(),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }

    /// The freshness lifetime the origin gave, if any (`s-maxage` first).
    pub fn freshness(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age)
    }

    /// Whether a shared cache may store the response at all.
    pub fn storable(&self) -> bool {
        !(self.no_store || self.no_cache || self.private)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> ResponseDirectives {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, v.parse().unwrap());
        ResponseDirectives::parse(&h)
    }

    #[test]
    fn parses_directives() {
        let d = parse(
            "public, max-age=60, s-maxage=30, stale-while-revalidate=5, stale-if-error=\"600\"",
        );
        assert_eq!(d.freshness(), Some(Duration::from_secs(30)));
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(5)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(600)));
        assert!(d.storable());
        assert!(!parse("private, max-age=60").storable());
        assert!(!parse("No-Store").storable());
        assert_eq!(parse("max-age=abc").freshness(), None);
    }
}
