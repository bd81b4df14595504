//! Purge by tag and by prefix, soft or hard.
//!
//! * **Tags** come from the origin's response headers: `Surrogate-Key`
//!   (space separated, Fastly's) and `Cache-Tag` (comma separated,
//!   Cloudflare's), every field line of each. A tag is 1 to
//!   [`MAX_TAG_BYTES`] bytes of visible ASCII (case-sensitive); others are
//!   skipped. An entry carries at most [`MAX_TAGS`] of them; further ones
//!   are skipped too, and both are counted in
//!   `stampede_purge_tags_skipped_total{reason}` (a purge by a skipped tag
//!   does not reach that entry).
//! * **Prefixes** are implicit tags: an entry is indexed under each prefix
//!   of its normalised path that ends at a `/`, up to [`MAX_PREFIX_DEPTH`]
//!   segments deep — `/shop/items/42?x=1` under `/shop/` and `/shop/items/`.
//!   So a prefix ends at a `/` (`/shop/` reaches `/shop/items/42` and
//!   `/shop/`, never `/shop` nor `/shopping/`), a prefix purge is a tag purge,
//!   and the query string is no part of it.
//! * **The index**: per tag, the digests of the keys whose entries carry it
//!   (not the variant: a purge reaches every variant of a key), each with the
//!   instant its entry is kept until, so the index expires with its entries
//!   and never holds more than the live ones. It is bounded; a member it has
//!   to drop takes its entry with it (evicted), so a purge never misses an
//!   entry the index lost.
//! * **Fenced**: a purge records "tag T purged at P, purge id I" first (kept
//!   [`DEFAULT_PURGE_WINDOW`], or the store's purge window: the fill deadline
//!   and a margin), then fences and purges every member: the per-key delete
//!   raises the key's purge floor (see [`fence`](super::fence)) and notes in
//!   the key's fence record "fenced by purge I of T at floor F". A fill of a
//!   tagged entry first adds its key to its tags' indexes, then reads their
//!   purge records, then writes. For each tag purged, the write lands if its
//!   lease was drawn after that very purge fenced the key (the record says
//!   purge I at floor F, and the lease's `seq` ≥ F: ordered by the record,
//!   no clock involved); otherwise — the purge did not list the key, or has
//!   not reached it yet — only if the purge time is before the fill's origin
//!   request by [`CLOCK_SKEW`]. And a tagged fill older than the purge window
//!   is refused (a purge record may have lapsed meanwhile). Either the purge
//!   lists the member (and its fence refuses the fill's older lease), or the
//!   fill reads the purge record: no fill that asked the origin before a
//!   purge lands after it, and a fill that started after the purge fenced
//!   its key lands at once.
//! * **Soft**: the entry is marked stale instead of removed — fresh until
//!   now, stale for at least the grace — so stale-while-revalidate answers it
//!   while one refresh runs; fenced like a hard purge.

use crate::entry::{CachedResponse, EntryKind};
use crate::key::CacheKey;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The origin's space-separated tag header (Fastly).
pub const SURROGATE_KEY: &str = "surrogate-key";
/// The origin's comma-separated tag header (Cloudflare).
pub const CACHE_TAG: &str = "cache-tag";
/// Most origin tags indexed per entry.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Deepest prefix indexed, in path segments (`/a/b/c/d/`).
pub const MAX_PREFIX_DEPTH: usize = 4;
/// The clock skew allowed between the gateways of a fleet: a fill whose
/// origin request started less than this after a tag purge is refused too.
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);
/// How long a tag's purge record is kept by default: the default fill
/// deadline (30 s) and as much again. A tagged fill older than this is
/// refused.
pub const DEFAULT_PURGE_WINDOW: Duration = Duration::from_secs(60);

/// What a prefix tag's index name starts with: a space, which no origin tag
/// holds, so the two never collide.
const PREFIX_MARK: &str = "prefix ";

/// A hard or a soft purge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PurgeMode {
    /// Remove the entries (clients then wait for the rebuild).
    #[default]
    Hard,
    /// Mark the entries stale: fresh until now, stale for at least `grace`
    /// more, so stale-while-revalidate answers them while one refresh runs.
    Soft {
        /// How long the stale copy may still be answered (at least).
        grace: Duration,
    },
}

/// What a purge by tag did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagPurge {
    /// Entries the purge hit (held, and removed or marked stale).
    pub hit: u64,
    /// Every key the purge fenced: the tag's index members, held or not.
    pub keys: Vec<CacheKey>,
}

/// Whether `tag` is a valid tag: 1 to [`MAX_TAG_BYTES`] bytes of visible
/// ASCII, without the separators (space, comma).
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_BYTES
        && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// The origin's tags in `headers` (`Surrogate-Key`, `Cache-Tag`, every
/// field line), deduplicated, in order, at most [`MAX_TAGS`]; invalid and
/// extra ones are skipped (and counted).
pub fn origin_tags(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let (mut invalid, mut extra) = (0u64, 0u64);
    for (name, value) in headers {
        let split: fn(&u8) -> bool = if name.eq_ignore_ascii_case(SURROGATE_KEY) {
            |b| b.is_ascii_whitespace()
        } else if name.eq_ignore_ascii_case(CACHE_TAG) {
            |b| *b == b','
        } else {
            continue;
        };
        for raw in value.split(split) {
            let raw = raw.trim_ascii();
            if raw.is_empty() {
                continue;
            }
            match std::str::from_utf8(raw).ok().filter(|t| is_valid_tag(t)) {
                None => invalid += 1,
                Some(t) if tags.iter().any(|have| have == t) => {}
                Some(_) if tags.len() >= MAX_TAGS => extra += 1,
                Some(t) => tags.push(t.to_owned()),
            }
        }
    }
    if invalid > 0 {
        metrics::counter!("stampede_purge_tags_skipped_total", "reason" => "invalid")
            .increment(invalid);
    }
    if extra > 0 {
        metrics::counter!("stampede_purge_tags_skipped_total", "reason" => "too-many")
            .increment(extra);
    }
    tags
}

/// The index name of the path prefix `prefix` (normalised, ending at a `/`,
/// see [`normalise_prefix`]).
pub fn prefix_tag(prefix: &str) -> String {
    format!("{PREFIX_MARK}{prefix}")
}

/// The prefixes `path` is indexed under: each of its prefixes that ends at a
/// `/`, but `/` itself, up to [`MAX_PREFIX_DEPTH`] segments.
pub fn path_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .take(MAX_PREFIX_DEPTH)
        .map(move |(i, _)| &path[..=i])
}

/// Why a prefix cannot be purged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not a path ending at a `/`.
    #[error(
        "a prefix is a path that starts and ends with '/' (a prefix ends at a '/'), e.g. \"/items/\""
    )]
    NotAPrefix,
    /// `/` alone: every entry.
    #[error("the prefix \"/\" would purge everything; name at least one segment, e.g. \"/items/\"")]
    Root,
    /// A query or fragment.
    #[error("a prefix is a path only: no '?' or '#'")]
    Query,
    /// Deeper than the index goes.
    #[error(
        "entries are indexed under their first {MAX_PREFIX_DEPTH} path segments; this prefix has {0}"
    )]
    TooDeep(usize),
    /// No unambiguous normal form (see [`CacheKey`]).
    #[error("{0}")]
    Target(String),
}

/// `prefix` in the normal form keys have (percent-encoding case, dot
/// segments, as [`CacheKey`] normalises them), checked: a path starting and ending with
/// `/`, not `/` alone, at most [`MAX_PREFIX_DEPTH`] segments.
pub fn normalise_prefix(prefix: &str) -> Result<String, PrefixError> {
    if prefix.contains(['?', '#']) {
        return Err(PrefixError::Query);
    }
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        return Err(PrefixError::NotAPrefix);
    }
    let uri: http::Uri = prefix.parse().map_err(|_| PrefixError::NotAPrefix)?;
    let target =
        crate::key::normalise_target(&uri).map_err(|e| PrefixError::Target(e.to_string()))?;
    let path = target.path().to_owned();
    if path == "/" {
        return Err(PrefixError::Root);
    }
    if !path.ends_with('/') {
        return Err(PrefixError::NotAPrefix);
    }
    let depth = path.matches('/').count() - 1;
    if depth > MAX_PREFIX_DEPTH {
        return Err(PrefixError::TooDeep(depth));
    }
    Ok(path)
}

/// Every tag `entry`, stored under `key`, is indexed under: the origin's
/// tags and its path's prefixes ([`prefix_tag`]). None for anything but a
/// stored response (variant indexes, hit-for-miss markers).
pub fn entry_tags(key: &CacheKey, entry: &CachedResponse) -> Vec<String> {
    if entry.kind != EntryKind::Response {
        return Vec::new();
    }
    let mut tags = origin_tags(&entry.headers);
    // The key's text: "GET /path?query", cut for display past 256 bytes
    // (a prefix ends at a '/', so a cut segment is never one).
    if let Some((_, target)) = key.display().split_once(' ') {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        tags.extend(path_prefixes(path).map(prefix_tag));
    }
    tags
}

/// When the fill that produced `entry` asked the origin (ms since the
/// epoch): its arrival less the rebuild time.
pub(crate) fn request_ms(entry: &CachedResponse) -> u64 {
    entry
        .stored_at_ms
        .saturating_sub(u64::from(entry.rebuild_ms))
}

/// Whether a purge at `purged_ms` (0: never) may have come after a fill's
/// origin request at `request_ms`, clocks [`CLOCK_SKEW`] apart.
pub(crate) fn purged_after(purged_ms: u64, request_ms: u64) -> bool {
    purged_ms > 0 && purged_ms + CLOCK_SKEW.as_millis() as u64 >= request_ms
}

/// Whether a tagged fill that asked the origin at `request_ms` is, at
/// `now_ms`, older than the purge `window`: a purge record may have lapsed
/// since.
pub(crate) fn older_than(request_ms: u64, now_ms: u64, window: Duration) -> bool {
    now_ms + CLOCK_SKEW.as_millis() as u64 > request_ms.saturating_add(window.as_millis() as u64)
}

/// The latest purge of a tag a fill saw: its time (ms) and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenPurge {
    pub(crate) tag: String,
    pub(crate) at_ms: u64,
    pub(crate) id: u64,
}

/// What a tag purge notes in each member's fence record: purge `id` of
/// `tag` fenced it at purge floor `floor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TagFence {
    pub(crate) tag: String,
    pub(crate) id: u64,
    pub(crate) floor: u64,
}

/// Whether a tagged write holding a lease of `seq`, of an entry whose
/// origin request started at `request_ms`, must be refused for the purges
/// it saw (`seen`; `floor_ms`: a time every tag counts as purged at) given
/// what its key's fence record notes (`fences`).
pub(crate) fn refused_by_purges(
    seen: &[SeenPurge],
    floor_ms: u64,
    fences: &[TagFence],
    seq: u64,
    request_ms: u64,
) -> bool {
    purged_after(floor_ms, request_ms)
        || seen.iter().any(|p| {
            let fenced_before_lease = fences
                .iter()
                .any(|f| f.tag == p.tag && f.id == p.id && seq >= f.floor);
            !fenced_before_lease && purged_after(p.at_ms, request_ms)
        })
}

/// Mark `entry` soft-purged at `at_ms`: fresh no longer, stale (answerable
/// by stale-while-revalidate) until at least `stale_until_ms`. Only stored
/// responses: a variant index or a hit-for-miss marker is left as it is.
pub(crate) fn soften(entry: &mut CachedResponse, at_ms: u64, stale_until_ms: u64) {
    if entry.kind != EntryKind::Response {
        return;
    }
    entry.fresh_until_ms = entry.fresh_until_ms.min(at_ms);
    entry.stale_until_ms = entry.stale_until_ms.max(stale_until_ms);
    entry.error_until_ms = entry.error_until_ms.max(entry.stale_until_ms);
}

/// A digest (32 hex digits) as a number, kept compactly in the in-process
/// index.
fn digest_bits(digest: &str) -> Option<u128> {
    u128::from_str_radix(digest, 16).ok()
}

/// The members of one tag in the in-process index: digest → kept until.
#[derive(Default, Debug)]
struct Members {
    until: HashMap<u128, u64>,
    order: BTreeSet<(u64, u128)>,
}

impl Members {
    fn insert(&mut self, digest: u128, until: u64) {
        let until = match self.until.get(&digest) {
            Some(&old) if old >= until => return,
            Some(&old) => {
                self.order.remove(&(old, digest));
                until
            }
            None => until,
        };
        self.until.insert(digest, until);
        self.order.insert((until, digest));
    }

    /// Drop the members kept until `now` at most; how many.
    fn prune(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(until, digest)) = self.order.first() {
            if until > now {
                break;
            }
            self.order.pop_first();
            self.until.remove(&digest);
            n += 1;
        }
        n
    }

    /// Drop the member kept the shortest.
    fn pop_earliest(&mut self) -> Option<u128> {
        let (_, digest) = self.order.pop_first()?;
        self.until.remove(&digest);
        Some(digest)
    }

    fn len(&self) -> usize {
        self.until.len()
    }
}

/// The in-process tag index and purge records (see the module docs): at
/// most `max_pairs` (tag, member) pairs and `max_purges` purge records.
#[derive(Debug)]
pub(crate) struct TagIndex {
    tags: HashMap<String, Members>,
    /// Tag → (purged at, record kept until (ms), purge id).
    purges: HashMap<String, (u64, u64, u64)>,
    last_id: u64,
    /// Raised to a dropped purge record's time when records had to be
    /// dropped for room: every tag counts as purged then.
    purge_floor: u64,
    pairs: usize,
    max_pairs: usize,
    max_purges: usize,
    pub(crate) window: Duration,
}

impl TagIndex {
    pub(crate) fn new(max_pairs: usize, max_purges: usize) -> Self {
        Self {
            tags: HashMap::new(),
            purges: HashMap::new(),
            last_id: 0,
            purge_floor: 0,
            pairs: 0,
            max_pairs: max_pairs.max(1),
            max_purges: max_purges.max(1),
            window: DEFAULT_PURGE_WINDOW,
        }
    }

    /// (tag, member) pairs held.
    pub(crate) fn pairs(&self) -> usize {
        self.pairs
    }

    /// The latest purge of `tag` still recorded at `now`.
    fn purged(&self, tag: &str, now: u64) -> Option<SeenPurge> {
        match self.purges.get(tag) {
            Some(&(at_ms, until, id)) if until > now => Some(SeenPurge {
                tag: tag.to_owned(),
                at_ms,
                id,
            }),
            _ => None,
        }
    }

    /// A time every tag counts as purged at (0: none): the latest of the
    /// records dropped for room.
    pub(crate) fn purge_floor(&self) -> u64 {
        self.purge_floor
    }

    /// Index `digest` under `tags`, kept until `until`: the latest purge of
    /// each of those tags still recorded, and the digests dropped from the
    /// index to keep it bounded (their entries must be evicted).
    pub(crate) fn add(
        &mut self,
        tags: &[String],
        digest: &str,
        until: u64,
        now: u64,
    ) -> (Vec<SeenPurge>, Vec<String>) {
        let mut seen = Vec::new();
        let Some(bits) = digest_bits(digest) else {
            return (seen, Vec::new());
        };
        for tag in tags {
            let members = self.tags.entry(tag.clone()).or_default();
            self.pairs -= members.prune(now);
            let before = members.len();
            members.insert(bits, until);
            self.pairs += members.len() - before;
            seen.extend(self.purged(tag, now));
        }
        (seen, self.make_room(now))
    }

    /// Keep at most `max_pairs` pairs: drop lapsed members; past the bound
    /// the members kept the shortest, from the largest tags, down to 90 %.
    fn make_room(&mut self, now: u64) -> Vec<String> {
        if self.pairs <= self.max_pairs {
            return Vec::new();
        }
        let mut evicted = Vec::new();
        for members in self.tags.values_mut() {
            self.pairs -= members.prune(now);
        }
        let target = self.max_pairs - self.max_pairs / 10;
        while self.pairs > target {
            let Some(largest) = self.tags.values_mut().max_by_key(|m| m.len()) else {
                break;
            };
            let take = (self.pairs - target).min(largest.len());
            for _ in 0..take {
                if let Some(d) = largest.pop_earliest() {
                    evicted.push(format!("{d:032x}"));
                    self.pairs -= 1;
                }
            }
        }
        self.tags.retain(|_, m| m.len() > 0);
        if !evicted.is_empty() {
            metrics::counter!("stampede_tag_index_evictions_total").increment(evicted.len() as u64);
        }
        evicted
    }

    /// Record that `tag` is purged at `now`: the purge's id, and the
    /// tag's members.
    pub(crate) fn begin_purge(&mut self, tag: &str, now: u64) -> (u64, Vec<String>) {
        let until = now + self.window.as_millis() as u64;
        if !self.purges.contains_key(tag) && self.purges.len() >= self.max_purges {
            self.purges.retain(|_, &mut (_, u, _)| u > now);
            if self.purges.len() >= self.max_purges {
                // No room: every tag counts as purged at the latest time
                // dropped (conservative: a few more fills refused).
                let latest = self.purges.values().map(|&(at, _, _)| at).max();
                self.purge_floor = self.purge_floor.max(latest.unwrap_or(0));
                self.purges.clear();
            }
        }
        self.last_id += 1;
        let id = self.last_id;
        let record = self.purges.entry(tag.to_owned()).or_insert((0, 0, 0));
        *record = (record.0.max(now), until, id);
        let members = match self.tags.get_mut(tag) {
            Some(members) => {
                self.pairs -= members.prune(now);
                members.until.keys().map(|d| format!("{d:032x}")).collect()
            }
            None => Vec::new(),
        };
        (id, members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn origin_tags_from_both_headers() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("surrogate-key", "  product-42 \t category-7  product-42 "),
            ("Cache-Tag", "shop, product-42 ,, blue sky,x"),
            ("surrogate-key", "second-line"),
        ]);
        assert_eq!(
            origin_tags(&h),
            ["product-42", "category-7", "shop", "x", "second-line"],
            "deduplicated, in order; a tag with a space is invalid"
        );
        assert!(origin_tags(&headers(&[("x-surrogate-key", "a")])).is_empty());
    }

    #[test]
    fn invalid_and_extra_tags_are_skipped() {
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        let h = headers(&[("surrogate-key", &format!("ok {long} caf\u{e9}"))]);
        assert_eq!(origin_tags(&h), ["ok"]);
        let many: Vec<String> = (0..MAX_TAGS + 10).map(|i| format!("t{i}")).collect();
        let h = headers(&[("surrogate-key", &many.join(" "))]);
        let tags = origin_tags(&h);
        assert_eq!(tags.len(), MAX_TAGS);
        assert_eq!(tags[0], "t0");
        assert!(is_valid_tag("product:42/a"));
        for bad in ["", "a b", "a,b", "\u{e9}", &long] {
            assert!(!is_valid_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_end_at_a_slash_and_are_depth_limited() {
        fn p(path: &str) -> Vec<&str> {
            path_prefixes(path).collect()
        }
        assert_eq!(p("/items/42"), ["/items/"]);
        assert_eq!(p("/items/"), ["/items/"]);
        assert_eq!(p("/items"), Vec::<&str>::new());
        assert_eq!(p("/"), Vec::<&str>::new());
        assert_eq!(p("/a/b/c/d/e/f"), ["/a/", "/a/b/", "/a/b/c/", "/a/b/c/d/"]);
        let key = |t: &str| CacheKey::new(&Method::GET, &t.parse().unwrap());
        let mut e = CachedResponse {
            headers: headers(&[("surrogate-key", "p42")]),
            ..CachedResponse::default()
        };
        assert_eq!(
            entry_tags(&key("/shop/items/42?q=/x/y/"), &e),
            ["p42", "prefix /shop/", "prefix /shop/items/"]
        );
        e.kind = EntryKind::HitForMiss;
        assert!(entry_tags(&key("/shop/items/42"), &e).is_empty());
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(normalise_prefix("/items/").unwrap(), "/items/");
        assert_eq!(normalise_prefix("/%69tems/./").unwrap(), "/items/");
        assert_eq!(normalise_prefix("/a/b/c/d/").unwrap(), "/a/b/c/d/");
        assert_eq!(normalise_prefix("/"), Err(PrefixError::Root));
        assert_eq!(normalise_prefix("/a/.."), Err(PrefixError::NotAPrefix));
        assert_eq!(normalise_prefix("/items"), Err(PrefixError::NotAPrefix));
        assert_eq!(normalise_prefix("items/"), Err(PrefixError::NotAPrefix));
        assert_eq!(normalise_prefix("/items/?a"), Err(PrefixError::Query));
        assert_eq!(
            normalise_prefix("/a/b/c/d/e/"),
            Err(PrefixError::TooDeep(5))
        );
        assert!(matches!(
            normalise_prefix("/a%5cb/"),
            Err(PrefixError::Target(_))
        ));
        // Every message says why.
        for e in [
            PrefixError::Root,
            PrefixError::TooDeep(5),
            PrefixError::Query,
        ] {
            assert!(e.to_string().len() > 20, "{e}");
        }
    }

    #[test]
    fn the_fill_is_refused_after_a_purge_within_the_skew_and_when_too_old() {
        let w = DEFAULT_PURGE_WINDOW;
        let now = 1_000_000;
        assert!(!purged_after(0, now - 100), "never purged");
        assert!(purged_after(now - 50, now - 100), "purged after it asked");
        assert!(
            purged_after(now - 500, now - 100),
            "purged within the skew before it asked"
        );
        assert!(!purged_after(now - 1200, now - 100));
        assert!(!older_than(now - 100, now, w));
        assert!(older_than(now - w.as_millis() as u64, now, w));
    }

    #[test]
    fn a_lease_drawn_after_the_purge_fenced_its_key_is_not_judged_by_the_clock() {
        let seen = [SeenPurge {
            tag: "t".into(),
            at_ms: 1000,
            id: 7,
        }];
        let fenced = [TagFence {
            tag: "t".into(),
            id: 7,
            floor: 5,
        }];
        // Asked the origin right after the purge (within the skew).
        let req = 1200;
        assert!(
            refused_by_purges(&seen, 0, &[], 9, req),
            "not fenced: the clock"
        );
        assert!(
            !refused_by_purges(&seen, 0, &fenced, 5, req),
            "leased after the fence"
        );
        assert!(
            refused_by_purges(&seen, 0, &fenced, 4, req),
            "leased before it"
        );
        let other = [TagFence {
            id: 6,
            ..fenced[0].clone()
        }];
        assert!(
            refused_by_purges(&seen, 0, &other, 9, req),
            "an earlier purge's fence"
        );
        assert!(refused_by_purges(&[], 1100, &fenced, 9, req), "the floor");
        assert!(!refused_by_purges(&seen, 0, &[], 9, 2500), "past the skew");
    }

    #[test]
    fn soften_marks_stale_for_the_grace() {
        let mut e = CachedResponse {
            fresh_until_ms: 10_000,
            stale_until_ms: 12_000,
            error_until_ms: 12_000,
            ..CachedResponse::default()
        };
        soften(&mut e, 5_000, 8_000);
        assert_eq!((e.fresh_until_ms, e.stale_until_ms), (5_000, 12_000));
        soften(&mut e, 6_000, 20_000);
        assert_eq!((e.fresh_until_ms, e.stale_until_ms), (5_000, 20_000));
        assert_eq!(e.error_until_ms, 20_000);
    }

    fn d(i: u32) -> String {
        format!("{i:032x}")
    }

    #[test]
    fn the_index_expires_with_its_entries() {
        let mut index = TagIndex::new(1000, 100);
        let tags = vec!["a".to_owned(), "b".to_owned()];
        for i in 0..10 {
            index.add(&tags, &d(i), 100 + u64::from(i), 0);
        }
        assert_eq!(index.pairs(), 20);
        // Kept until 100..110: at 105 half of them lapsed.
        let (_, mut members) = index.begin_purge("a", 105);
        members.sort();
        assert_eq!(members, (6..10).map(d).collect::<Vec<_>>());
        index.add(&tags[1..], &d(99), 200, 105);
        assert_eq!(index.pairs(), 4 + 5, "pruned on the next add to the tag");
    }

    #[test]
    fn the_index_is_bounded_and_evicts_what_it_drops() {
        let mut index = TagIndex::new(100, 100);
        let tags = vec!["hot".to_owned()];
        let mut evicted = Vec::new();
        for i in 0..500 {
            let (_, e) = index.add(&tags, &d(i), 10_000 + u64::from(i), 0);
            evicted.extend(e);
            assert!(index.pairs() <= 100, "{}", index.pairs());
        }
        assert_eq!(
            evicted.len() + index.pairs(),
            500,
            "every dropped member evicted"
        );
        assert!(evicted.contains(&d(0)), "the shortest kept go first");
        assert!(index.begin_purge("hot", 0).1.contains(&d(499)));
    }

    #[test]
    fn purge_records_are_bounded_and_conservative() {
        let mut index = TagIndex::new(100, 4);
        let at = |index: &TagIndex, tag: &str, now: u64| index.purged(tag, now).map(|p| p.at_ms);
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            let (id, _) = index.begin_purge(t, 1000 + i as u64);
            assert_eq!(id, i as u64 + 1, "ids are distinct");
        }
        assert_eq!(at(&index, "b", 2000), Some(1001));
        assert_eq!(at(&index, "z", 2000), None);
        assert_eq!(index.purge_floor(), 0);
        // A fifth record: no room, the dropped ones become a floor.
        index.begin_purge("e", 3000);
        assert_eq!(at(&index, "b", 3000), None);
        assert_eq!(index.purge_floor(), 1003);
        assert_eq!(at(&index, "e", 3000), Some(3000));
        // Records lapse after the window.
        let later = 3000 + DEFAULT_PURGE_WINDOW.as_millis() as u64;
        assert_eq!(at(&index, "e", later), None);
    }
}
