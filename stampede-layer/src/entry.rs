//! The cache entry envelope: one buffered response plus the timing the
//! mitigations need (stored-at, fresh and stale deadlines, rebuild duration,
//! fencing token), with a versioned binary encoding for remote stores.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Magic prefix of an encoded entry: a foreign value under our key decodes to
/// an error (and is treated as a miss), never to a wrong response.
const MAGIC: &[u8; 3] = b"SLe";
/// Version of the encoding; bump it when [`CachedResponse`] changes shape.
pub const FORMAT_VERSION: u8 = 1;

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
    /// The fencing token of the lock holder that wrote it (0: written without a lock).
    pub fence: u64,
    /// Request header values this response varies on (`Vary`), lower-case names.
    pub vary: Vec<(String, Option<Vec<u8>>)>,
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

impl CachedResponse {
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

    /// How long a store must keep the entry: until the end of its last stale window.
    pub fn keep_for(&self, now_ms: u64) -> Duration {
        let until = self.stale_until_ms.max(self.error_until_ms);
        Duration::from_millis(until.saturating_sub(now_ms).max(1))
    }

    /// Approximate size in memory, for store weighing.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        (self.body.len() + headers + 128).min(u32::MAX as usize) as u32
    }

    /// Status as a [`StatusCode`] (an invalid stored code reads as 500).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Headers as a [`HeaderMap`], skipping any that are no longer valid.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
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
        vary: Vec::new(),
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
}
