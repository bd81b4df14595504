//! The hit / stale / miss / collapsed classification the bench reports, from
//! the RFC 9211 `Cache-Status` response header. The header is a structured
//! field list (RFC 9651), parsed with the `sfv` crate. Examples the gateway
//! sends:
//!
//! ```text
//! stampede; hit; ttl=3
//! stampede; fwd=uri-miss; fwd-status=200; collapsed
//! stampede; hit; ttl=-1; detail=swr          (stale)
//! ```
//!
//! A header that is not a valid structured field list counts as `unknown`.

use sfv::{BareItem, ListEntry, Parser};

/// How one response was served, as far as `Cache-Status` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheClass {
    /// No (valid) `Cache-Status` header: e.g. straight from the origin.
    pub unknown: bool,
    /// The body came from the cache (`hit` parameter).
    pub hit: bool,
    /// A hit with a negative `ttl` (served stale).
    pub stale: bool,
    /// Went to the origin (`fwd=` present and not a hit).
    pub miss: bool,
    /// Shared another request's rebuild (`collapsed`).
    pub collapsed: bool,
    /// The `fwd` value, if any (`miss`, `uri-miss`, `bypass`, `stale`, …).
    pub fwd: Option<String>,
}

/// The cache name the gateway uses; its member is preferred when several
/// caches appear in one header.
pub const GATEWAY_CACHE_NAME: &str = "stampede";

fn text(b: &BareItem) -> Option<&str> {
    b.as_token()
        .map(|t| t.as_str())
        .or_else(|| b.as_string().map(|s| s.as_str()))
}

/// Classify a response from its `Cache-Status` header value (`None` when
/// absent). With several members, the `stampede` member is used, else the
/// last one (the cache nearest the client, per RFC 9211).
pub fn classify(header: Option<&str>) -> CacheClass {
    let list: sfv::List = header
        .and_then(|h| Parser::new(h).parse().ok())
        .unwrap_or_default();
    let items: Vec<&sfv::Item> = list
        .iter()
        .filter_map(|e| match e {
            ListEntry::Item(i) => Some(i),
            ListEntry::InnerList(_) => None,
        })
        .collect();
    let named = |i: &&&sfv::Item| text(&i.bare_item) == Some(GATEWAY_CACHE_NAME);
    let Some(m) = items.iter().rev().find(named).or(items.last()) else {
        return CacheClass {
            unknown: true,
            ..CacheClass::default()
        };
    };
    let flag = |k: &str| {
        m.params
            .get(k)
            .is_some_and(|v| v.as_boolean() != Some(false))
    };
    let hit = flag("hit");
    let ttl = m
        .params
        .get("ttl")
        .and_then(BareItem::as_integer)
        .map(i64::from);
    let fwd = m
        .params
        .get("fwd")
        .map(|v| text(v).unwrap_or("").to_string());
    CacheClass {
        unknown: false,
        hit,
        stale: hit && ttl.is_some_and(|t| t < 0),
        miss: !hit && fwd.is_some(),
        collapsed: flag("collapsed"),
        fwd,
    }
}
