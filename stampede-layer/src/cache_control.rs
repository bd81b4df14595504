//! Response caching directives (RFC 9111 §5.2.2, RFC 5861, RFC 9213), parsed
//! apart from the policy that uses them.
//!
//! Which field speaks for the response: the first one present, valid and
//! non-empty of `Stampede-Cache-Control` (targeted at this gateway alone),
//! `CDN-Cache-Control` (RFC 9213, targeted at CDNs and reverse proxies) and
//! `Surrogate-Control` (the W3C Edge Architecture field, directives without
//! a `;target` or targeted at us); when one is, `Cache-Control` and `Expires`
//! are ignored (RFC 9213 §2.1). Otherwise `Cache-Control`.
//!
//! Parsing follows RFC 9111 §5.2: directive names are case-insensitive,
//! values are tokens or quoted strings (commas inside quotes do not split),
//! the first occurrence of a directive wins, and an invalid delta-seconds
//! (`max-age='60'`, `max-age=1.5`, `max-age=-1`) makes the response stale
//! rather than being ignored (§4.2.1). Values above 2^31 s are clamped to it
//! (§1.2.2), so no origin value can overflow a deadline.

use http::HeaderMap;
use http::header::CACHE_CONTROL;
use std::time::Duration;

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2).
pub(crate) const MAX_DELTA_SECS: u64 = 2_147_483_648;

/// The field naming this gateway (RFC 9213 targeted field).
pub(crate) const STAMPEDE_CACHE_CONTROL: &str = "stampede-cache-control";
/// RFC 9213's field for CDNs and reverse proxies.
pub(crate) const CDN_CACHE_CONTROL: &str = "cdn-cache-control";
/// The W3C Edge Architecture field.
pub(crate) const SURROGATE_CONTROL: &str = "surrogate-control";
/// Our device token in `Surrogate-Capability` / `Surrogate-Control` targets.
pub(crate) const SURROGATE_DEVICE: &str = "stampede";
/// The `Surrogate-Capability` request header a rebuild sends to the origin.
pub(crate) const SURROGATE_CAPABILITY: (&str, &str) =
    ("surrogate-capability", "stampede=\"Surrogate/1.0\"");

/// A delta-seconds directive value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delta {
    /// A valid value (clamped to [`MAX_DELTA_SECS`]).
    Secs(u64),
    /// Present but not a delta-seconds: treated as zero (stale).
    Invalid,
}

impl Delta {
    fn parse(value: Option<&str>) -> Delta {
        match value {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Delta::Secs(
                v.parse::<u64>()
                    .unwrap_or(MAX_DELTA_SECS)
                    .min(MAX_DELTA_SECS),
            ),
            _ => Delta::Invalid,
        }
    }

    /// An `Age` value: exactly one non-negative integer, clamped.
    pub(crate) fn parse_age(v: &str) -> Option<u64> {
        match Delta::parse(Some(v)) {
            Delta::Secs(s) => Some(s),
            Delta::Invalid => None,
        }
    }

    /// As a duration (invalid: zero).
    pub(crate) fn duration(self) -> Duration {
        match self {
            Delta::Secs(s) => Duration::from_secs(s),
            Delta::Invalid => Duration::ZERO,
        }
    }
}

/// The directives the cache acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// `no-store`.
    pub no_store: bool,
    /// Unqualified `no-cache`: store, but revalidate before every use.
    pub no_cache: bool,
    /// `private`, unqualified: a shared cache must not store it.
    pub private: bool,
    /// Fields named by a qualified `no-cache="…"` or `private="…"`: stored
    /// without them (lower-case).
    pub withheld_fields: Vec<String>,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` (which implies
    /// `proxy-revalidate` for a shared cache): never served stale.
    pub must_revalidate: bool,
    /// `must-understand`: store only statuses this cache understands.
    pub must_understand: bool,
    /// `max-age`.
    pub max_age: Option<Delta>,
    /// `s-maxage` (wins over `max-age` for a shared cache).
    pub s_maxage: Option<Delta>,
    /// RFC 5861 `stale-while-revalidate`.
    pub stale_while_revalidate: Option<Delta>,
    /// RFC 5861 `stale-if-error`.
    pub stale_if_error: Option<Delta>,
    /// Taken from a targeted field (so `Expires` does not apply).
    pub targeted: bool,
}

impl ResponseDirectives {
    /// The directives of `headers`: from the first targeted field present and
    /// valid, else from `Cache-Control`.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        for field in [STAMPEDE_CACHE_CONTROL, CDN_CACHE_CONTROL] {
            if let Some(d) = targeted_sf(headers, field) {
                return d;
            }
        }
        if let Some(d) = surrogate(headers) {
            return d;
        }
        let mut d = ResponseDirectives::default();
        for (name, value, _) in directives(headers.get_all(CACHE_CONTROL).iter(), false) {
            d.apply(&name, value.as_deref());
        }
        d
    }

    /// The explicit freshness lifetime the directives give, if any
    /// (`s-maxage` first).
    pub(crate) fn explicit_lifetime(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age).map(Delta::duration)
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        let first = |slot: &mut Option<Delta>| {
            if slot.is_none() {
                *slot = Some(Delta::parse(value));
            }
        };
        let fields = |value: Option<&str>| -> Vec<String> {
            value
                .map(|v| {
                    v.split(',')
                        .map(|f| f.trim().to_ascii_lowercase())
                        .filter(|f| !f.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" if value.is_none() => self.no_cache = true,
            "no-cache" => self.withheld_fields.extend(fields(value)),
            "private" if value.is_none() => self.private = true,
            "private" => self.withheld_fields.extend(fields(value)),
            "public" => self.public = true,
            "must-revalidate" | "proxy-revalidate" => self.must_revalidate = true,
            "must-understand" => self.must_understand = true,
            "max-age" => first(&mut self.max_age),
            "s-maxage" => {
                first(&mut self.s_maxage);
                self.must_revalidate = true;
            }
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate),
            "stale-if-error" => first(&mut self.stale_if_error),
            _ => {}
        }
    }
}

/// A directive: lower-case name, value (unquoted; [`INVALID`] when it is
/// neither a token nor a quoted string), and — for `Surrogate-Control` — the
/// `;target` it is meant for.
type Directive = (String, Option<String>, Option<String>);

/// The value of a directive whose value is malformed: never a valid delta.
const INVALID: &str = "\u{0}invalid";

/// The comma-separated directives in `values`; malformed members are skipped.
fn directives<'a>(
    values: impl Iterator<Item = &'a http::HeaderValue>,
    targets: bool,
) -> Vec<Directive> {
    let mut out = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for member in split_outside_quotes(text) {
            let member = member.trim();
            if member.is_empty() {
                continue;
            }
            let (member, target) = match member.rsplit_once(';') {
                Some((m, t)) if targets && !t.contains('"') => (m, Some(t.trim().to_owned())),
                _ => (member, None),
            };
            let (name, value) = match member.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (member, None),
            };
            if !is_token(name) {
                continue; // e.g. `max-age =60`: not a directive
            }
            let value = match value {
                None => None,
                Some(v) if v.starts_with('"') => match unquote(v) {
                    Some(v) => Some(v),
                    None => continue,
                },
                Some(v) if is_token(v) => Some(v.to_owned()),
                Some(_) => Some(INVALID.to_owned()), // `max-age= 60`, `max-age='60'`
            };
            out.push((name.to_ascii_lowercase(), value, target));
        }
    }
    out
}

fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// RFC 9110 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An RFC 9213 targeted field (a Structured Fields dictionary), if present,
/// valid and non-empty. A known directive whose value has the wrong type
/// (`max-age="10000"`, a String where delta-seconds are an Integer;
/// `no-store=1`) makes the whole field invalid: it is ignored, as if absent,
/// and the next field speaks (RFC 9213 §2.1).
fn targeted_sf(headers: &HeaderMap, field: &str) -> Option<ResponseDirectives> {
    use sfv::{BareItem, ListEntry};
    let values: Vec<&str> = headers
        .get_all(field)
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<_, _>>()
        .ok()?;
    if values.is_empty() {
        return None;
    }
    let dict: sfv::Dictionary = sfv::Parser::new(values.join(", ").as_str()).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut d = ResponseDirectives {
        targeted: true,
        ..Default::default()
    };
    for (key, entry) in &dict {
        let item = match entry {
            ListEntry::Item(item) => item,
            // An inner list is no known directive's type.
            ListEntry::InnerList(_) if expected_type(key.as_str()).is_some() => return None,
            ListEntry::InnerList(_) => continue,
        };
        if let Some(expected) = expected_type(key.as_str())
            && !expected.accepts(&item.bare_item)
        {
            return None;
        }
        let value = match &item.bare_item {
            BareItem::Boolean(true) => None,
            BareItem::Boolean(false) => continue,
            BareItem::Integer(i) => Some(i64::from(*i).to_string()),
            BareItem::Token(t) => Some(t.as_str().to_owned()),
            BareItem::String(s) => Some(s.as_str().to_owned()),
            _ => Some(INVALID.to_owned()),
        };
        d.apply(key.as_str(), value.as_deref());
    }
    Some(d)
}

/// The Structured Fields type a known directive takes in a targeted field
/// (RFC 9213 §2.1): delta-seconds are Integers, field-name lists Strings,
/// the rest Booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SfType {
    Integer,
    /// `no-cache`, `private`: bare (true), or a String listing fields.
    BooleanOrString,
    Boolean,
}

impl SfType {
    fn accepts(self, item: &sfv::BareItem) -> bool {
        use sfv::BareItem;
        matches!(
            (self, item),
            (SfType::Integer, BareItem::Integer(_))
                | (
                    SfType::BooleanOrString,
                    BareItem::Boolean(_) | BareItem::String(_)
                )
                | (SfType::Boolean, BareItem::Boolean(_))
        )
    }
}

/// The type of a directive this cache acts on; `None` for extensions (any type).
fn expected_type(name: &str) -> Option<SfType> {
    match name {
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
            Some(SfType::Integer)
        }
        "no-cache" | "private" => Some(SfType::BooleanOrString),
        "no-store" | "public" | "must-revalidate" | "proxy-revalidate" | "must-understand" => {
            Some(SfType::Boolean)
        }
        _ => None,
    }
}

/// `Surrogate-Control`: directives without a target, or targeted at us.
fn surrogate(headers: &HeaderMap) -> Option<ResponseDirectives> {
    if !headers.contains_key(SURROGATE_CONTROL) {
        return None;
    }
    let mut d = ResponseDirectives {
        targeted: true,
        ..Default::default()
    };
    for (name, value, target) in directives(headers.get_all(SURROGATE_CONTROL).iter(), true) {
        // `max-age=60;device`: a directive for another device.
        if target.is_some_and(|t| !t.eq_ignore_ascii_case(SURROGATE_DEVICE)) {
            continue;
        }
        d.apply(&name, value.as_deref());
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> ResponseDirectives {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        ResponseDirectives::parse(&h)
    }

    fn cc(v: &'static str) -> ResponseDirectives {
        parse(&[("cache-control", v)])
    }

    #[test]
    fn parses_directives() {
        let d =
            cc("public, max-age=60, s-maxage=30, stale-while-revalidate=5, stale-if-error=\"600\"");
        assert_eq!(d.explicit_lifetime(), Some(Duration::from_secs(30)));
        assert_eq!(d.stale_while_revalidate, Some(Delta::Secs(5)));
        assert_eq!(d.stale_if_error, Some(Delta::Secs(600)));
        assert!(
            d.public && d.must_revalidate,
            "s-maxage implies proxy-revalidate"
        );
        assert!(cc("private, max-age=60").private);
        assert!(cc("No-Store").no_store);
        assert!(cc("MAX-AGE=5").max_age == Some(Delta::Secs(5)));
    }

    #[test]
    fn invalid_values_mean_stale_and_first_occurrence_wins() {
        for bad in [
            "max-age='60'",
            "max-age=1.5",
            "max-age=-1",
            "max-age= 60",
            "max-age=",
            "max-age",
        ] {
            assert_eq!(cc(bad).explicit_lifetime(), Some(Duration::ZERO), "{bad}");
        }
        assert_eq!(cc("max-age =60").max_age, None, "not a directive");
        assert_eq!(cc("max-age=003600").max_age, Some(Delta::Secs(3600)));
        assert_eq!(
            cc("max-age=99999999999").max_age,
            Some(Delta::Secs(MAX_DELTA_SECS))
        );
        assert_eq!(cc("max-age=10, max-age=20").max_age, Some(Delta::Secs(10)));
        let d = parse(&[
            ("cache-control", "max-age=10"),
            ("cache-control", "max-age=20"),
        ]);
        assert_eq!(d.max_age, Some(Delta::Secs(10)));
    }

    #[test]
    fn quoted_strings_do_not_split() {
        assert_eq!(
            cc("extension=\"max-age=3600\", max-age=1").max_age,
            Some(Delta::Secs(1))
        );
        assert!(cc("foo=\"a, b\", no-store").no_store);
        let d = cc("no-cache=\"Set-Cookie, X-Secret\", private=\"X-User\", max-age=5");
        assert!(!d.no_cache && !d.private);
        assert_eq!(d.withheld_fields, ["set-cookie", "x-secret", "x-user"]);
    }

    #[test]
    fn targeted_fields_win_over_cache_control() {
        let d = parse(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert!(!d.no_store && d.targeted);
        assert_eq!(d.max_age, Some(Delta::Secs(60)));
        let d = parse(&[
            ("cdn-cache-control", "max-age=60"),
            (
                "stampede-cache-control",
                "max-age=5, stale-while-revalidate=9",
            ),
        ]);
        assert_eq!(
            (d.max_age, d.stale_while_revalidate),
            (Some(Delta::Secs(5)), Some(Delta::Secs(9)))
        );
        // An invalid targeted field is ignored: the next one speaks.
        let d = parse(&[
            ("cdn-cache-control", "max-age=\"x"),
            ("cache-control", "max-age=7"),
        ]);
        assert!(!d.targeted);
        assert_eq!(d.max_age, Some(Delta::Secs(7)));
        let d = parse(&[
            ("cache-control", "max-age=3600"),
            ("surrogate-control", "max-age=1"),
        ]);
        assert_eq!(d.max_age, Some(Delta::Secs(1)));
        let d = parse(&[("surrogate-control", "max-age=3600;other-device")]);
        assert_eq!(d.max_age, None);
        assert!(parse(&[("surrogate-control", "no-store")]).no_store);
    }

    /// The suite's `cdn-cc-invalid-sh-type-*` cases: an invalid Structured
    /// Field, by syntax or by a known directive's type, is ignored whole and
    /// `Cache-Control: no-store` beside it applies.
    #[test]
    fn invalid_targeted_fields_are_ignored_whole() {
        for bad in [
            "max-age=\"10000\"",         // cdn-cc-invalid-sh-type-wrong
            "max-age=10000, &&&&&",      // cdn-cc-invalid-sh-type-unknown
            "max-age=10000, no-store=1", // a Boolean directive given an Integer
            "max-age=?1",
            "max-age=(1 2)",
            "max-age=tok",
            "max-age=1.5",
            "private=7",
        ] {
            let d = parse(&[("cdn-cache-control", bad), ("cache-control", "no-store")]);
            assert!(!d.targeted, "{bad}: the field must be ignored");
            assert!(d.no_store, "{bad}: Cache-Control: no-store applies");
            assert_eq!(d.max_age, None, "{bad}");
        }
        // Well-typed values and extensions of any type still parse.
        for (good, max_age) in [
            ("max-age=10000", Some(Delta::Secs(10000))),
            (
                "max-age=10000, foo=\"bar\", baz=(1 2), qux=1.5",
                Some(Delta::Secs(10000)),
            ),
            ("private=\"x-user\", max-age=5", Some(Delta::Secs(5))),
            ("no-store", None),
            ("no-store=?0, max-age=3", Some(Delta::Secs(3))),
        ] {
            let d = parse(&[("cdn-cache-control", good), ("cache-control", "no-store")]);
            assert!(d.targeted, "{good}");
            assert_eq!(d.max_age, max_age, "{good}");
        }
        // The same rule for this gateway's own targeted field.
        let d = parse(&[
            ("stampede-cache-control", "s-maxage=\"5\""),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert_eq!(d.max_age, Some(Delta::Secs(60)));
    }
}
