//! A small, forgiving parser for the RFC 9211 `Cache-Status` response header,
//! and the hit / stale / miss / collapsed classification the bench reports.
//!
//! The header is a structured-field *list*: members separated by commas, each
//! member a cache name (token or quoted string) followed by `;`-separated
//! parameters (`key` or `key=value`). Examples the gateway sends:
//!
//! ```text
//! stampede; hit; ttl=3
//! stampede; fwd=miss; collapsed
//! stampede; hit; ttl=-1          (stale)
//! stampede; fwd=bypass
//! ```
//!
//! The parser does not reject malformed input: it splits on commas and
//! semicolons outside quoted strings, trims whitespace and keeps what it can.

/// One member of a `Cache-Status` list: the cache's name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatusMember {
    /// The cache name (`stampede` for the gateway), unquoted.
    pub cache: String,
    /// Parameters in header order: key (lower-cased) and the value, `None` for
    /// a bare boolean parameter such as `hit`. Quoted values are unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl CacheStatusMember {
    /// The parameter `key` if present: `Some(None)` for a bare flag,
    /// `Some(Some(v))` for `key=v`.
    pub fn param(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_deref())
    }

    /// Whether the boolean parameter `key` is present and true (a bare `key`
    /// or `key=?1`; `key=?0` is false).
    pub fn flag(&self, key: &str) -> bool {
        match self.param(key) {
            None => false,
            Some(None) => true,
            Some(Some(v)) => v != "?0",
        }
    }
}

/// Parse a `Cache-Status` header value into its members. Empty members are
/// skipped; never fails.
pub fn parse(value: &str) -> Vec<CacheStatusMember> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|member| {
            let mut parts = split_outside_quotes(member, ';').into_iter();
            let cache = unquote(parts.next()?.trim());
            if cache.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| {
                    let p = p.trim();
                    if p.is_empty() {
                        return None;
                    }
                    Some(match p.split_once('=') {
                        Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(unquote(v.trim()))),
                        None => (p.to_ascii_lowercase(), None),
                    })
                })
                .collect();
            Some(CacheStatusMember { cache, params })
        })
        .collect()
}

/// Split on `sep` wherever it is not inside a double-quoted string
/// (backslash escapes inside quotes are honoured).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Remove surrounding double quotes and backslash escapes, if quoted.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"') {
        Some(inner) => {
            let inner = inner.strip_suffix('"').unwrap_or(inner);
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => s.to_string(),
    }
}

/// How one response was served, as far as `Cache-Status` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheClass {
    /// No `Cache-Status` header (or no member in it): e.g. straight from the origin.
    pub unknown: bool,
    /// The body came from the cache (`hit` parameter).
    pub hit: bool,
    /// A hit with a negative `ttl` (served stale).
    pub stale: bool,
    /// Went to the origin (`fwd=` present and not a hit).
    pub miss: bool,
    /// Shared another request's rebuild (`collapsed`).
    pub collapsed: bool,
    /// The `fwd` value, if any (`miss`, `bypass`, `stale`, …).
    pub fwd: Option<String>,
}

/// The cache name the gateway uses; its member is preferred when several
/// caches appear in one header.
pub const GATEWAY_CACHE_NAME: &str = "stampede";

/// Classify a response from its `Cache-Status` header value (`None` when
/// absent). With several members, the `stampede` member is used, else the
/// last one (the cache nearest the client, per RFC 9211).
pub fn classify(header: Option<&str>) -> CacheClass {
    let Some(value) = header else {
        return CacheClass {
            unknown: true,
            ..CacheClass::default()
        };
    };
    let members = parse(value);
    let member = members
        .iter()
        .rev()
        .find(|m| m.cache.eq_ignore_ascii_case(GATEWAY_CACHE_NAME))
        .or_else(|| members.last());
    let Some(m) = member else {
        return CacheClass {
            unknown: true,
            ..CacheClass::default()
        };
    };
    let hit = m.flag("hit");
    let ttl = m.param("ttl").flatten().and_then(|v| v.parse::<i64>().ok());
    let fwd = m.param("fwd").map(|v| v.unwrap_or("").to_string());
    CacheClass {
        unknown: false,
        hit,
        stale: hit && ttl.is_some_and(|t| t < 0),
        miss: !hit && fwd.is_some(),
        collapsed: m.flag("collapsed"),
        fwd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_examples() {
        let m = parse("stampede; hit; ttl=3");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].cache, "stampede");
        assert_eq!(m[0].param("hit"), Some(None));
        assert_eq!(m[0].param("ttl"), Some(Some("3")));
        assert_eq!(m[0].param("fwd"), None);

        let m = parse("stampede;fwd=miss;collapsed");
        assert_eq!(
            m[0].params,
            vec![
                ("fwd".to_string(), Some("miss".to_string())),
                ("collapsed".to_string(), None)
            ]
        );
    }

    #[test]
    fn parses_lists_quotes_and_junk() {
        let m = parse(r#"  origin; fwd=uri-miss , "my, cache"; key="a;b\"c"; hit ,, "#);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].cache, "origin");
        assert_eq!(m[1].cache, "my, cache");
        assert_eq!(m[1].param("key"), Some(Some("a;b\"c")));
        assert!(m[1].flag("hit"));
        assert!(parse("").is_empty());
        assert!(parse(" , ; ").is_empty());
        // Unterminated quote: kept, not a panic.
        assert_eq!(parse("\"abc; hit").len(), 1);
    }

    #[test]
    fn classifies() {
        let c = classify(Some("stampede; hit; ttl=3"));
        assert!(c.hit && !c.stale && !c.miss && !c.collapsed && !c.unknown);

        let c = classify(Some("stampede; hit; ttl=-1"));
        assert!(c.hit && c.stale && !c.miss);

        let c = classify(Some("stampede; fwd=miss; collapsed"));
        assert!(!c.hit && c.miss && c.collapsed);
        assert_eq!(c.fwd.as_deref(), Some("miss"));

        let c = classify(Some("stampede; fwd=bypass"));
        assert!(c.miss && !c.collapsed);
        assert_eq!(c.fwd.as_deref(), Some("bypass"));

        let c = classify(None);
        assert!(c.unknown && !c.hit && !c.miss);
        assert!(classify(Some("")).unknown);

        // hit=?0 is not a hit; the stampede member wins over a later cache.
        let c = classify(Some("stampede; fwd=miss, cdn; hit"));
        assert!(c.miss && !c.hit);
        let c = classify(Some("cdn; hit=?0; fwd=miss"));
        assert!(c.miss && !c.hit);
    }
}
