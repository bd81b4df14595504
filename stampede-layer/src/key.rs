//! Cache-key derivation: method + normalised request target, hashed before it
//! reaches a store — and the *same* normalised target is what the origin
//! receives ([`normalise_target`]), so a raw request can never make the origin
//! answer something else than what the key stands for.
//!
//! Two requests share a key exactly when they ask for the same representation:
//! `HEAD` shares `GET`'s key (a `HEAD` can be answered from a cached `GET`), the
//! path is normalised (RFC 3986 §6.2.2: percent-encoding case, unreserved
//! characters decoded, dot segments removed) and the query parameters are
//! ordered by name (a stable sort: parameters of one name keep their order).
//! The scheme and authority are not part of the key: a gateway proxies to one
//! origin and sets the origin's `Host` itself, so no client-controlled header
//! can change the body behind a key (cache poisoning).
//!
//! Targets that have no unambiguous normal form are refused
//! ([`TargetError`], a 400): a backslash (raw or `%5C`, a path separator to
//! some servers and not to others) and an encoded NUL. Kept verbatim, as data:
//! an encoded slash `%2F` (never a separator, so `..` around it is not a dot
//! segment) and duplicate slashes (`/a//b` is its own key and is forwarded as
//! `/a//b`: an origin that collapses them serves one resource under two keys,
//! never two resources under one).
//!
//! The normalised text is hashed with BLAKE3 and only the hex digest is used in
//! store keys, so no client-controlled string ever becomes a raw Redis key.

use http::uri::PathAndQuery;
use http::{Method, Uri};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Longest normalised text kept for display (hot-key report, logs).
const DISPLAY_LIMIT: usize = 256;

/// A derived cache key: a 128-bit digest plus a bounded display form, and —
/// once the key is known to vary — the variant the request selects, which
/// scopes rebuild coordination (flights and locks) to that variant.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    digest: Digest,
    display: String,
    variant: Option<Arc<str>>,
}

/// A key's hex digest, held inline (a key derived per request allocates
/// no string for it); a digest of another length (taken from a store, see
/// [`CacheKey::from_digest`]) is kept as it came.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Digest {
    /// The 32 hex digits of a derived key.
    Hex([u8; DIGEST_LEN]),
    Other(Box<str>),
}

/// Hex digits of a derived key's digest (128 bits).
const DIGEST_LEN: usize = 32;

/// The first [`DIGEST_LEN`] lower-case hex digits of `hash` (as
/// `blake3::Hash::to_hex` writes them, without formatting all 64).
fn hex_prefix(hash: &[u8; 32]) -> [u8; DIGEST_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; DIGEST_LEN];
    for (i, b) in hash[..DIGEST_LEN / 2].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

impl Digest {
    fn of(text: &str) -> Self {
        match <[u8; DIGEST_LEN]>::try_from(text.as_bytes()) {
            Ok(hex) => Digest::Hex(hex),
            Err(_) => Digest::Other(text.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Made from a `&str` of that length: always UTF-8.
            Digest::Hex(hex) => std::str::from_utf8(hex).unwrap_or_default(),
            Digest::Other(text) => text,
        }
    }
}

/// A request target that cannot be normalised unambiguously (answered 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// A backslash, raw or `%5C`: a path separator to some servers only.
    #[error("backslash in the request target")]
    Backslash,
    /// An encoded NUL (`%00`).
    #[error("encoded NUL in the request target")]
    Nul,
}

impl CacheKey {
    /// Derive the key for `method` and `uri`.
    pub fn new(method: &Method, uri: &Uri) -> Self {
        Self::from_normalised(normalise(method, uri))
    }

    /// The key for `method` and `uri` within `scope` (a tenant, a host: what
    /// a [`StampedeLayer::key_fn`](crate::StampedeLayer::key_fn) derives from
    /// the request). Two scopes never share an entry.
    pub fn scoped(method: &Method, uri: &Uri, scope: Option<&str>) -> Self {
        match scope {
            None => Self::new(method, uri),
            Some(scope) => {
                let mut text = normalise(method, uri);
                // A newline never occurs in a request target.
                text.push('\n');
                text.push_str(scope);
                Self::from_normalised(text)
            }
        }
    }

    /// Build a key from an already normalised text (e.g. a warm-list entry).
    pub fn from_normalised(text: String) -> Self {
        let hash = blake3::hash(text.as_bytes());
        let digest = Digest::Hex(hex_prefix(hash.as_bytes()));
        let mut display = text;
        if display.len() > DISPLAY_LIMIT {
            let mut cut = DISPLAY_LIMIT;
            while !display.is_char_boundary(cut) {
                cut -= 1;
            }
            display.truncate(cut);
            display.push('…');
        }
        Self {
            digest,
            display,
            variant: None,
        }
    }

    /// The key whose [`digest`](Self::digest) is `digest` (e.g. a member of
    /// a purge tag's index, see [`store::tags`](crate::store::tags)): stores
    /// use only the digest and the variant, so it reaches the same entry as
    /// the key it was taken from. It has no display text beyond the digest.
    pub fn from_digest(digest: &str) -> Self {
        Self {
            digest: Digest::of(digest),
            display: format!("#{digest}"),
            variant: None,
        }
    }

    /// The same key, scoped to one variant (a digest of the request's values
    /// of the headers the stored response varies on): two concurrent
    /// requests that select different variants rebuild separately.
    pub fn with_variant(mut self, variant: Option<String>) -> Self {
        self.variant = variant.map(Into::into);
        self
    }

    /// The hex digest: the only form of the key that reaches a store.
    pub fn digest(&self) -> &str {
        self.digest.as_str()
    }

    /// The variant this key is scoped to, if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The identity rebuilds coordinate on: the digest, plus the variant.
    pub fn flight_id(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}:{v}", self.digest.as_str()),
            None => self.digest.as_str().to_owned(),
        }
    }

    /// The normalised request text, truncated for display.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = self.digest.as_str();
        write!(
            f,
            "CacheKey({} {:?}",
            digest.get(..8).unwrap_or(digest),
            self.display
        )?;
        if let Some(v) = &self.variant {
            write!(f, " variant {v}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// The normalised text a key is derived from: `"GET /path?a=1&b=2"`.
pub(crate) fn normalise(method: &Method, uri: &Uri) -> String {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let target = normalised_target_text(uri);
    let mut out = String::with_capacity(method.len() + target.len() + 1);
    out.push_str(method);
    out.push(' ');
    out.push_str(&target);
    out
}

/// The normalised origin-form target (`/path?query`) of `uri`: what the key
/// is derived from and what the origin must receive. Refuses targets without
/// an unambiguous normal form (see the module docs).
pub(crate) fn normalise_target(uri: &Uri) -> Result<PathAndQuery, TargetError> {
    if let Some(pq) = uri.path_and_query()
        && is_normal_path(pq.as_str())
    {
        // Already in normal form (the common case): forwarded as it came.
        return Ok(pq.clone());
    }
    let raw = uri.path_and_query().map_or("/", |p| p.as_str());
    let upper = raw.to_ascii_uppercase();
    if raw.contains('\\') || upper.contains("%5C") {
        return Err(TargetError::Backslash);
    }
    if upper.contains("%00") {
        return Err(TargetError::Nul);
    }
    let text = normalised_target_text(uri);
    // The normalised text only ever removes or decodes characters of a valid
    // target, so it parses; fall back to the raw target if it ever did not.
    Ok(PathAndQuery::try_from(&*text).unwrap_or_else(|_| {
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    }))
}

/// Whether `target` is already its own normal form (see [`is_normal_path`]).
pub(crate) fn is_normal_target(target: &PathAndQuery) -> bool {
    is_normal_path(target.as_str())
}

/// Whether `target` is a path (no query) that normalisation leaves as it
/// is: it starts with `/`, has no percent-encoding, no backslash, no dot
/// segment, and only characters a path may carry unencoded (RFC 3986
/// `pchar`, no `%`). Such a target is its own normal form, so the general
/// path below (which would rebuild the same text) can be skipped.
fn is_normal_path(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // One pass: every byte a plain path character, and no segment `.`
    // or `..` (a segment ends at the next `/` or at the end).
    let mut segment = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            if is_dot_segment(&bytes[segment..i]) {
                return false;
            }
            segment = i + 1;
        } else if !PATH_CHAR[b as usize] {
            return false;
        }
    }
    !is_dot_segment(&bytes[segment..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// The bytes a path segment may carry unencoded (RFC 3986 `pchar` without
/// `%`), as a table.
static PATH_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    table
};

/// The normalised target of `uri` as text: borrowed when it is already in
/// normal form, so a key copies it once, into the key text.
fn normalised_target_text(uri: &Uri) -> Cow<'_, str> {
    if uri.query().is_none() && is_normal_path(uri.path()) {
        return Cow::Borrowed(uri.path());
    }
    let path = normalise_path(uri.path());
    let mut out = path;
    if let Some(query) = uri.query() {
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(normalise_percent)
            .collect();
        // Stable, by name only: parameters of one name keep their order.
        params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
    }
    Cow::Owned(out)
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

fn normalise_path(path: &str) -> String {
    let path = normalise_percent(if path.is_empty() { "/" } else { path });
    // RFC 3986 §5.2.4 remove_dot_segments, on already-split segments.
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    let last = parts.len() - 1;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    segments.push("");
                }
            }
            ".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let joined = segments.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Upper-case percent-encodings and decode those of unreserved characters.
/// Invalid escapes are kept literally (never a panic, never a lossy decode).
fn normalise_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = (hex_val(bytes.get(i + 1)), hex_val(bytes.get(i + 2)));
            if let (Some(h), Some(l)) = hex {
                let b = h * 16 + l;
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[h as usize]));
                    out.push(char::from(b"0123456789ABCDEF"[l as usize]));
                }
                i += 3;
                continue;
            }
        }
        // Copy one UTF-8 character (URIs from `http` are ASCII, but be safe).
        let ch = s[i..].chars().next().expect("index is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_hashs_hex_prefix() {
        for text in ["GET /", "GET /items/1", "GET /a?b=c\nscope"] {
            let hash = blake3::hash(text.as_bytes());
            assert_eq!(
                hex_prefix(hash.as_bytes()),
                hash.to_hex().as_bytes()[..DIGEST_LEN]
            );
        }
    }

    #[test]
    fn normal_paths_are_plain_characters_without_dot_segments() {
        // The one-pass scan against the rule written out (RFC 3986 pchar
        // without `%`, no `.` or `..` segment).
        let reference = |t: &str| {
            t.starts_with('/')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b))
                && !t.split('/').any(|seg| seg == "." || seg == "..")
        };
        for t in [
            "/",
            "/items/1",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/...",
            "/a/.",
            "/a/..",
            "/a/.b",
            "/a/b.",
            "/a//b",
            "//",
            "/%2e",
            "/a\\b",
            "/a b",
            "/é",
            "items",
            "",
            "/a?b",
            "/a#b",
            "/~user/(x)*",
            "/a/..b/c",
            "/.a/",
        ] {
            assert_eq!(is_normal_path(t), reference(t), "{t:?}");
        }
    }

    fn key(m: Method, u: &str) -> CacheKey {
        CacheKey::new(&m, &u.parse().unwrap())
    }

    #[test]
    fn equivalent_uris_share_a_key() {
        let base = key(Method::GET, "/items/1?a=1&b=2");
        for same in [
            "/items/1?b=2&a=1",
            "/items/./1?a=1&b=2",
            "/items/x/../1?a=1&b=2",
            "/%69tems/1?a=1&b=2",
            "http://other.example/items/1?a=1&b=2&",
        ] {
            assert_eq!(base, key(Method::GET, same), "{same}");
        }
        assert_eq!(base, key(Method::HEAD, "/items/1?a=1&b=2"));
        assert_eq!(
            key(Method::GET, "/a%2fb"),
            key(Method::GET, "/a%2Fb"),
            "escape case is insignificant"
        );
    }

    #[test]
    fn distinct_uris_get_distinct_keys() {
        let base = key(Method::GET, "/items/1");
        for other in [
            "/items/2",
            "/items/1/",
            "/items//1",
            "/items/1?a=1",
            "/ITEMS/1",
            "/items%2F1",
        ] {
            assert_ne!(base, key(Method::GET, other), "{other}");
        }
        assert_ne!(base, key(Method::POST, "/items/1"));
    }

    /// Fuzz-style: random request targets never panic, always give a
    /// 32-hex-digit digest, and normalisation is idempotent (the key of the
    /// normalised form is the key of the original).
    /// `/` and then fewer than `max_len` characters drawn from `alphabet`.
    fn random_target(rng: &mut impl rand::Rng, alphabet: &[char], max_len: usize) -> String {
        let len = rng.random_range(0..max_len);
        std::iter::once('/')
            .chain((0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]))
            .collect()
    }

    #[test]
    fn random_targets_are_safe_and_idempotent() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xcafe);
        let alphabet: Vec<char> = "abcAZ09-._~%/?&=+;:@!$'()*,#[]{}|^` \"<>\\"
            .chars()
            .collect();
        let mut tested = 0;
        for _ in 0..50_000 {
            let target = random_target(&mut rng, &alphabet, 40);
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            tested += 1;
            let k = CacheKey::new(&Method::GET, &uri);
            assert_eq!(k.digest().len(), 32);
            let text = normalise(&Method::GET, &uri);
            let path_and_query = text.strip_prefix("GET ").unwrap();
            let again: Uri = path_and_query.parse().expect("normalised target parses");
            assert_eq!(normalise(&Method::GET, &again), text, "{target:?}");
        }
        assert!(tested > 10_000, "too few valid targets: {tested}");
    }

    /// The shortcut for targets already in normal form gives what the
    /// general normalisation gives.
    #[test]
    fn normal_paths_take_the_shortcut_unchanged() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xbeef);
        let alphabet: Vec<char> = "ab09-._~!$&'()*+,;=:@/".chars().collect();
        let mut shortcut = 0;
        for _ in 0..20_000 {
            let target = random_target(&mut rng, &alphabet, 12);
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            if !is_normal_path(uri.path()) || uri.query().is_some() {
                continue;
            }
            shortcut += 1;
            let path = normalise_path(uri.path());
            assert_eq!(path, target, "{target:?}");
            assert_eq!(normalised_target_text(&uri), path, "{target:?}");
            assert_eq!(normalise_target(&uri).unwrap().as_str(), path, "{target:?}");
        }
        assert!(shortcut > 5_000, "too few shortcut targets: {shortcut}");
        for not_normal in ["/a/./b", "/a/..", "/%41", "/a?b", "/a\\b", "."] {
            assert!(!is_normal_path(not_normal), "{not_normal}");
        }
    }

    #[test]
    fn long_and_odd_keys_are_safe() {
        let long = format!("/{}", "a".repeat(60_000));
        let k = key(Method::GET, &long);
        assert_eq!(k.digest().len(), 32);
        assert!(k.display().len() <= DISPLAY_LIMIT + '…'.len_utf8());
        for odd in [
            "/%",
            "/%z",
            "/%zz%",
            "/%E2%82",
            "/{}*'",
            "/..",
            "/../../etc",
        ] {
            let k = key(Method::GET, odd);
            assert!(k.digest().chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(key(Method::GET, "/../../etc").display(), "GET /etc");
    }

    fn target(t: &str) -> Result<String, TargetError> {
        normalise_target(&t.parse().unwrap()).map(|p| p.as_str().to_owned())
    }

    /// What the origin receives is the key's own text.
    #[test]
    fn the_forwarded_target_is_the_keyed_one() {
        for (raw, clean) in [
            ("/x/../items/42", "/items/42"),
            ("/items/./42", "/items/42"),
            ("/a/%2e%2E/items/42", "/items/42"),
            ("/%69tems/1?b=2&a=1", "/items/1?a=1&b=2"),
            ("/q?a=2&b=1&a=1", "/q?a=2&a=1&b=1"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a//b", "/a//b"),
            ("/", "/"),
        ] {
            assert_eq!(target(raw).as_deref(), Ok(clean), "{raw}");
            let k = key(Method::GET, raw);
            assert_eq!(k.display(), format!("GET {clean}"), "{raw}");
            assert_eq!(k, key(Method::GET, clean), "{raw}");
        }
        for bad in ["/a%5cb", "/a%5C..%5Cb", "/a%00b"] {
            assert!(target(bad).is_err(), "{bad}");
        }
        if let Ok(uri) = "/a\\..\\b".parse::<Uri>() {
            assert_eq!(normalise_target(&uri), Err(TargetError::Backslash));
        }
    }

    #[test]
    fn variants_scope_flights_not_entries() {
        let base = key(Method::GET, "/lang");
        let fr = base.clone().with_variant(Some("fr".into()));
        assert_eq!(base.digest(), fr.digest());
        assert_ne!(base.flight_id(), fr.flight_id());
    }
}
