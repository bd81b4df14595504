//! The cache entry envelope: one buffered response plus the timing the
//! mitigations need (stored-at, fresh and stale deadlines, rebuild duration,
//! fencing token), with a versioned binary encoding for remote stores.

use bytes::Bytes;
use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Magic prefix of an encoded entry: a foreign value under our key decodes to
/// an error (and is treated as a miss), never to a wrong response.
const MAGIC: &[u8; 3] = b"SLe";
/// Version of the encoding; bump it when [`CachedResponse`] changes shape or
/// a remote store's key layout does (3: fence records and leases, see
/// [`fence`](crate::store::fence)). Remote stores put it in their key prefix
/// too, so two versions of the gateway in one fleet (a rolling deploy) never
/// read each other's entries or locks.
pub(crate) const FORMAT_VERSION: u8 = 3;

/// Milliseconds since the Unix epoch, the clock every deadline uses (it is
/// shared by all instances of a fleet, unlike `Instant`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One cached response and its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (hop-by-hop headers already removed by the proxy).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Bytes,
    /// When the entry was written (ms since the epoch).
    pub stored_at_ms: u64,
    /// Fresh until this instant (ms since the epoch).
    pub fresh_until_ms: u64,
    /// May be served stale while revalidating (SWR) until this instant.
    pub stale_until_ms: u64,
    /// May be served stale when the origin fails (stale-if-error) until this
    /// instant; never before `stale_until_ms`. The store keeps the entry until then.
    pub error_until_ms: u64,
    /// How long the origin took to produce it: XFetch's `delta`.
    pub rebuild_ms: u32,
    /// The `seq` of the lease that wrote it ([`FencingToken`](crate::store::FencingToken);
    /// informational: the store's fence record decides writes).
    pub fence: u64,
    /// Request header values this response varies on (`Vary`).
    pub vary: VaryValues,
    /// A stored response, or a hit-for-miss marker.
    pub kind: EntryKind,
    /// How old the response already was when stored (RFC 9111 §4.2.3), ms.
    pub initial_age_ms: u64,
    /// The store keeps it until this instant (≥ every window), so it can
    /// still be revalidated with a conditional request.
    pub retain_until_ms: u64,
    /// Never serve it stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
    /// Revalidate it before every use (`no-cache`).
    pub no_cache: bool,
    /// `headers` as a [`HeaderMap`], built on the first hit and shared by
    /// every hit after it (derived data: never encoded, never compared;
    /// leave it `Default::default()`).
    #[serde(skip)]
    pub head: HeadCache,
}

/// Headers an answer from an entry gains after the entry's own: `Age` and
/// `Cache-Status` from the stack, and two for the service around it (the
/// gateway's `Via` and `X-Request-Id`).
pub(crate) const HEADERS_ADDED: usize = 4;

/// The [`HeaderMap`] of an entry's `headers`, built once
/// ([`CachedResponse::header_map`]): a hit clones it — two allocations and
/// a reference count per value — instead of parsing and copying every
/// name and value again. A clone of an entry starts without it (the clone's
/// `headers` may be changed before it is served); an entry's `headers` are
/// never changed once it is shared.
#[derive(Default)]
pub struct HeadCache(OnceLock<HeaderMap>);

impl Clone for HeadCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for HeadCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HeadCache {}

impl std::fmt::Debug for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "HeadCache(built)"
        } else {
            "HeadCache"
        })
    }
}

/// What an entry holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A stored response.
    #[default]
    Response,
    /// Hit-for-miss (Varnish's name): the key's last answer could not be
    /// shared, so requests for it go straight to the origin, uncoordinated,
    /// until the marker expires or a cacheable answer replaces it.
    HitForMiss,
    /// The key's answers vary: its `vary` names the request headers that
    /// select a variant, each stored under its own slot (Varnish's secondary
    /// hash). Never served; the variant a request selects is read next.
    Variants,
}

/// The request header values a stored response varies on (RFC 9111 §4.1):
/// lower-case header names from `Vary`, each with the request's value
/// (`None`: absent), normalised (field lines combined, whitespace around
/// commas removed) so equivalent requests match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VaryValues(pub Vec<(String, Option<Vec<u8>>)>);

impl VaryValues {
    /// The `Vary` of `response`, with the values `request` sent.
    /// `Accept-Encoding` is left out when the representation serves every
    /// coding (gzip, decompressed for clients that do not accept it, or
    /// none).
    pub fn of(response: &HeaderMap, request: &HeaderMap) -> Self {
        let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let any_coding = crate::coding::serves_every_coding(response);
        for name in vary_names(response) {
            if any_coding && name == "accept-encoding" {
                continue;
            }
            if !out.iter().any(|(n, _)| *n == name) {
                let value = normalised_value(request, &name);
                out.push((name, value));
            }
        }
        VaryValues(out)
    }

    /// Whether the response varies on nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `request` selects this variant.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, want)| normalised_value(request, name).as_deref() == want.as_deref())
    }

    /// A short digest of `request`'s values for these header names: the
    /// variant it selects, to scope rebuild coordination.
    pub fn variant_of(&self, request: &HeaderMap) -> String {
        Self::digest(
            self.0
                .iter()
                .map(|(name, _)| (name.as_str(), normalised_value(request, name))),
        )
    }

    /// The variant these stored values select (what [`variant_of`](Self::variant_of)
    /// gives for a matching request); `None` when nothing varies.
    pub fn variant_id(&self) -> Option<String> {
        (!self.is_empty()).then(|| {
            Self::digest(
                self.0
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.clone())),
            )
        })
    }

    fn digest<'a>(values: impl Iterator<Item = (&'a str, Option<Vec<u8>>)>) -> String {
        let mut h = blake3::Hasher::new();
        for (name, value) in values {
            h.update(name.as_bytes());
            match value {
                Some(v) => h.update(b"=").update(&v),
                None => h.update(b"!"),
            };
            h.update(b"\n");
        }
        h.finalize().to_hex()[..16].to_owned()
    }

    /// Approximate bytes held, for store weighing.
    pub fn weight(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len) + 32)
            .sum()
    }
}

/// Lower-case header names listed in `Vary` (`*` included as is).
pub(crate) fn vary_names(response: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// All field lines of `name` combined with `,`, whitespace around commas removed.
fn normalised_value(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for value in headers.get_all(name) {
        let buf = out.get_or_insert_with(Vec::new);
        for part in value.as_bytes().split(|b| *b == b',') {
            if !buf.is_empty() {
                buf.push(b',');
            }
            buf.extend_from_slice(part.trim_ascii());
        }
    }
    out
}

/// Where an entry stands at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Within its fresh TTL.
    Fresh,
    /// Past its TTL but within the stale-while-revalidate window.
    Stale,
    /// Past the SWR window, still servable if the origin fails (stale-if-error).
    ErrorOnly,
    /// Past the stale window: as good as absent.
    Expired,
}

/// Why an encoded entry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not an entry of ours (no magic prefix).
    #[error("not a stampede-layer entry")]
    Foreign,
    /// An entry written by another format version.
    #[error("entry format version {0}, expected {FORMAT_VERSION}")]
    Version(u8),
    /// The payload is corrupt.
    #[error("corrupt entry: {0}")]
    Corrupt(#[from] postcard::Error),
}

impl Default for CachedResponse {
    /// An empty `200` stored at the epoch, expired: fill in what matters.
    fn default() -> Self {
        CachedResponse {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            stored_at_ms: 0,
            fresh_until_ms: 0,
            stale_until_ms: 0,
            error_until_ms: 0,
            rebuild_ms: 0,
            fence: 0,
            vary: VaryValues::default(),
            kind: EntryKind::Response,
            initial_age_ms: 0,
            retain_until_ms: 0,
            must_revalidate: false,
            no_cache: false,
            head: Default::default(),
        }
    }
}

impl CachedResponse {
    /// The variant this entry is (`None`: it varies on nothing): the scope
    /// of its fenced write.
    pub fn variant_id(&self) -> Option<String> {
        self.vary.variant_id()
    }

    /// A hit-for-miss marker kept `ttl` from `now_ms` (see [`EntryKind::HitForMiss`]).
    pub fn hit_for_miss(now_ms: u64, ttl: Duration, fence: u64) -> Self {
        let until = now_ms + ttl.as_millis().min(u64::MAX as u128 / 2) as u64;
        CachedResponse {
            status: 0,
            headers: Vec::new(),
            body: Bytes::new(),
            stored_at_ms: now_ms,
            fresh_until_ms: until,
            stale_until_ms: until,
            error_until_ms: until,
            rebuild_ms: 0,
            fence,
            vary: VaryValues::default(),
            kind: EntryKind::HitForMiss,
            initial_age_ms: 0,
            retain_until_ms: until,
            must_revalidate: true,
            no_cache: false,
            head: Default::default(),
        }
    }

    /// Its `Age` at `now_ms`, in whole seconds (RFC 9111 §4.2.3: the initial
    /// age plus the time it spent in storage).
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        (self.initial_age_ms + now_ms.saturating_sub(self.stored_at_ms)) / 1000
    }

    /// Whether it may be served without contacting the origin at `now_ms`.
    pub fn usable_fresh(&self, now_ms: u64) -> bool {
        self.is_fresh(now_ms) && !self.no_cache
    }

    /// Whether it may be served stale at all (no directive forbids it).
    pub fn may_serve_stale(&self) -> bool {
        !self.must_revalidate && !self.no_cache
    }

    /// The validators a conditional revalidation sends: `ETag` and `Last-Modified`.
    pub fn validators(&self) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let get = |name: &str| {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| HeaderValue::from_bytes(v).ok())
        };
        (get("etag"), get("last-modified"))
    }

    /// Whether this is a hit-for-miss marker.
    pub fn is_hit_for_miss(&self) -> bool {
        self.kind == EntryKind::HitForMiss
    }

    /// The index of a key whose answers vary on `names` (see
    /// [`EntryKind::Variants`]), kept `keep` from `now_ms`.
    pub fn variant_index(names: &VaryValues, now_ms: u64, keep: Duration) -> Self {
        let until = now_ms + keep.as_millis().min(u64::MAX as u128 / 4) as u64;
        CachedResponse {
            status: 0,
            vary: VaryValues(names.0.iter().map(|(n, _)| (n.clone(), None)).collect()),
            kind: EntryKind::Variants,
            stored_at_ms: now_ms,
            // "Fresh" while any variant may be: a near cache keeps it.
            fresh_until_ms: until,
            stale_until_ms: until,
            error_until_ms: until,
            retain_until_ms: until,
            ..CachedResponse::default()
        }
    }

    /// Whether it is a variant index (never served).
    pub fn is_variant_index(&self) -> bool {
        self.kind == EntryKind::Variants
    }

    /// Whether it is within its fresh TTL at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// Whether it is past every window (as good as absent) at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.freshness(now_ms) == Freshness::Expired
    }

    /// Classify the entry at `now_ms`.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if now_ms < self.fresh_until_ms {
            Freshness::Fresh
        } else if now_ms < self.stale_until_ms {
            Freshness::Stale
        } else if now_ms < self.error_until_ms {
            Freshness::ErrorOnly
        } else {
            Freshness::Expired
        }
    }

    /// Remaining freshness in whole seconds; negative once stale (RFC 9211 `ttl`).
    pub fn ttl_secs(&self, now_ms: u64) -> i64 {
        (self.fresh_until_ms as i64 - now_ms as i64).div_euclid(1000)
    }

    /// How long a store must keep the entry: until the end of its retention
    /// (never before its last stale window ends).
    pub fn keep_for(&self, now_ms: u64) -> Duration {
        let until = self
            .retain_until_ms
            .max(self.stale_until_ms)
            .max(self.error_until_ms);
        Duration::from_millis(until.saturating_sub(now_ms).max(1))
    }

    /// Whether the store holds nothing of use any more at `now_ms`.
    pub fn is_gone(&self, now_ms: u64) -> bool {
        now_ms
            >= self
                .retain_until_ms
                .max(self.error_until_ms)
                .max(self.stale_until_ms)
    }

    /// Approximate size in memory, for store weighing.
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + self.vary.weight() + 128).min(u32::MAX as usize) as u32
    }

    /// Status as a [`StatusCode`] (an invalid stored code reads as 500).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Headers as a [`HeaderMap`], skipping any that are no longer valid:
    /// built once per entry (a `HeadCache`), cloned per call, with room for
    /// the four an answer gains (`Age`, `Cache-Status`, and two for the
    /// service around the stack) without growing.
    pub fn header_map(&self) -> HeaderMap {
        self.head.0.get_or_init(|| self.build_header_map()).clone()
    }

    fn build_header_map(&self) -> HeaderMap {
        // Room for the headers an answer gains: a clone keeps the map's
        // table, so adding them neither grows nor rehashes it.
        let mut map = HeaderMap::with_capacity(self.headers.len() + HEADERS_ADDED);
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// Capture a header map into the envelope's owned form.
    pub fn headers_from(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        map.iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Encode for a remote store: magic, format version, postcard payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        postcard::to_extend(self, out).expect("serializing into a Vec cannot fail")
    }

    /// Decode what [`encode`](Self::encode) wrote; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Foreign)?;
        let (&version, payload) = rest.split_first().ok_or(DecodeError::Foreign)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        Ok(postcard::from_bytes(payload)?)
    }
}

#[cfg(test)]
pub(crate) fn sample(body: &str, fresh_ms: u64, stale_ms: u64) -> CachedResponse {
    let now = now_ms();
    CachedResponse {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from(body.to_owned()),
        stored_at_ms: now,
        fresh_until_ms: now + fresh_ms,
        stale_until_ms: now + fresh_ms + stale_ms,
        error_until_ms: now + fresh_ms + stale_ms,
        rebuild_ms: 200,
        fence: 0,
        vary: VaryValues::default(),
        kind: EntryKind::Response,
        initial_age_ms: 0,
        retain_until_ms: now + fresh_ms + stale_ms,
        must_revalidate: false,
        no_cache: false,
        head: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = sample("{\"id\":1}", 1000, 1000);
        assert_eq!(CachedResponse::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn garbage_fails_safe() {
        assert!(matches!(
            CachedResponse::decode(b"hello"),
            Err(DecodeError::Foreign)
        ));
        assert!(matches!(
            CachedResponse::decode(b""),
            Err(DecodeError::Foreign)
        ));
        assert!(matches!(
            CachedResponse::decode(b"SLe\x09abc"),
            Err(DecodeError::Version(9))
        ));
        let mut enc = sample("x", 1, 1).encode();
        enc.truncate(enc.len() - 3);
        assert!(CachedResponse::decode(&enc).is_err());
        // Every truncation of a valid entry is an error, never a panic.
        let enc = sample("payload", 1, 1).encode();
        for cut in 0..enc.len() {
            assert!(CachedResponse::decode(&enc[..cut]).is_err());
        }
    }

    /// Fuzz-style: mutated encodings (bit flips, truncations, splices) and
    /// random bytes never panic the decoder; whatever decodes re-encodes.
    #[test]
    fn decoder_survives_mutations() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = sample("{\"id\":1,\"payload\":\"x\"}", 1000, 1000).encode();
        for _ in 0..50_000 {
            let mut bytes = valid.clone();
            match rng.random_range(0..4) {
                0 => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
                1 => bytes.truncate(rng.random_range(0..bytes.len())),
                2 => {
                    let i = rng.random_range(4..bytes.len());
                    let junk: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    bytes.splice(i..i, junk);
                }
                _ => {
                    bytes = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
                    if rng.random_bool(0.5) {
                        bytes.splice(0..0, MAGIC.iter().copied().chain([FORMAT_VERSION]));
                    }
                }
            }
            if let Ok(decoded) = CachedResponse::decode(&bytes) {
                let again = CachedResponse::decode(&decoded.encode()).expect("re-encodes");
                assert_eq!(again, decoded);
            }
        }
    }

    #[test]
    fn freshness_and_ttl() {
        let e = sample("x", 2000, 3000);
        let t = e.stored_at_ms;
        assert_eq!(e.freshness(t), Freshness::Fresh);
        assert_eq!(e.freshness(t + 2000), Freshness::Stale);
        assert_eq!(e.freshness(t + 5000), Freshness::Expired);
        assert_eq!(e.ttl_secs(t), 2);
        assert_eq!(e.ttl_secs(t + 2500), -1);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn vary_matching_normalises_and_scopes_variants() {
        let resp = headers(&[
            ("vary", "Accept-Language, x-device"),
            ("vary", "Accept-Language"),
        ]);
        let fr = headers(&[("accept-language", "fr, en"), ("x-device", "phone")]);
        let v = VaryValues::of(&resp, &fr);
        assert_eq!(v.0.len(), 2, "duplicates collapse: {v:?}");
        assert!(v.matches(&headers(&[
            ("accept-language", "fr,en"),
            ("x-device", "phone")
        ])));
        assert!(v.matches(&headers(&[
            ("accept-language", "fr"),
            ("accept-language", "en"),
            ("X-Device", "phone")
        ])));
        assert!(!v.matches(&headers(&[
            ("accept-language", "de"),
            ("x-device", "phone")
        ])));
        assert!(
            !v.matches(&headers(&[("x-device", "phone")])),
            "absent is a value too"
        );
        assert_eq!(
            v.variant_of(&fr),
            v.variant_of(&headers(&[
                ("accept-language", "fr,en"),
                ("x-device", "phone")
            ]))
        );
        assert_ne!(
            v.variant_of(&fr),
            v.variant_of(&headers(&[("accept-language", "de")]))
        );
        assert!(VaryValues::default().matches(&fr));
    }
    #[test]
    fn accept_encoding_is_left_out_when_every_coding_can_be_served() {
        let request = headers(&[("accept-language", "fr"), ("accept-encoding", "br")]);
        for coding in [None, Some("gzip"), Some("identity")] {
            let mut resp = headers(&[("vary", "Accept-Language, Accept-Encoding")]);
            if let Some(c) = coding {
                resp.insert(http::header::CONTENT_ENCODING, c.parse().unwrap());
            }
            let v = VaryValues::of(&resp, &request);
            assert_eq!(v.0.len(), 1, "{coding:?}: {v:?}");
            assert!(v.matches(&headers(&[("accept-language", "fr")])));
        }
        let br = headers(&[
            ("vary", "Accept-Language, Accept-Encoding"),
            ("content-encoding", "br"),
        ]);
        let v = VaryValues::of(&br, &request);
        assert_eq!(v.0.len(), 2, "a br body serves only those who sent br");
        assert!(!v.matches(&headers(&[("accept-language", "fr")])));
    }

    #[test]
    fn hit_for_miss_markers_round_trip() {
        let m = CachedResponse::hit_for_miss(1_000, Duration::from_secs(120), 3);
        assert!(m.is_hit_for_miss() && m.is_fresh(1_000) && !m.is_fresh(121_000));
        assert_eq!(CachedResponse::decode(&m.encode()).unwrap(), m);
        assert!(!sample("x", 1, 1).is_hit_for_miss());
    }
}
