//! Content codings: one stored representation for every client.
//!
//! A response that varies on `Accept-Encoding` would need one stored variant
//! per distinct header value (`gzip, deflate, br, zstd`; `gzip`; none; …), so
//! each population of clients rebuilds it at every boundary. Instead, as
//! Varnish does, a fill asks the origin for `gzip` whatever the client sent,
//! the stored representation (gzip or identity) leaves `Accept-Encoding` out
//! of its variant (RFC 9111 §4.1 lets a cache use what it knows of a header's
//! semantics), and a client that does not accept gzip gets it decompressed on
//! the way out — streaming, chunk by chunk, bounded.

use crate::body::{BoxError, CacheBody};
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use std::io::Write;

/// What a fill asks the origin for.
pub(crate) const FILL_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("gzip");

/// Most bytes a decompressed body may reach: a body that inflates past it is
/// cut with an error (a decompression bomb), never buffered.
pub(crate) const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Whether `request` accepts gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip`, or
/// `*` not overridden, with a non-zero quality.
pub(crate) fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut star = None;
    for value in request.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = Some(q > 0.0),
                _ => {}
            }
        }
    }
    star.unwrap_or(false)
}

/// Whether a representation with these headers can serve every client: it
/// is gzip (decompressed for those that do not accept it) or not encoded.
pub(crate) fn serves_every_coding(response: &HeaderMap) -> bool {
    match response.get(CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None => true,
        Some(v) => {
            let v = v.trim_ascii();
            v.is_empty()
                || v.eq_ignore_ascii_case(b"gzip")
                || v.eq_ignore_ascii_case(b"x-gzip")
                || v.eq_ignore_ascii_case(b"identity")
        }
    }
}

/// Whether `headers` say `Content-Encoding: gzip`.
pub(crate) fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes().trim_ascii())
        .is_some_and(|v| v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip"))
}

/// `resp` for a client that does not accept gzip: a gzip `200` is
/// decompressed as it streams (`Content-Encoding` and `Content-Length`
/// removed, a strong `ETag` made weak: the bytes differ from the stored
/// ones); anything else is returned as is.
pub(crate) fn decode_for_identity(resp: Response<CacheBody>) -> Response<CacheBody> {
    if !resp.status().is_success()
        || resp.status() == http::StatusCode::PARTIAL_CONTENT
        || !is_gzip(resp.headers())
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(CONTENT_ENCODING);
    parts.headers.remove(CONTENT_LENGTH);
    if let Some(etag) = parts.headers.get(ETAG).cloned()
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            parts.headers.insert(ETAG, weak);
        }
    }
    metrics::counter!("stampede_decompressed_responses_total").increment(1);
    if http_body::Body::is_end_stream(&body) {
        return Response::from_parts(parts, CacheBody::empty());
    }
    Response::from_parts(parts, gunzip(body, MAX_DECODED_BYTES))
}

/// Decompress `body` chunk by chunk, at most `limit` bytes out.
fn gunzip(body: CacheBody, limit: u64) -> CacheBody {
    struct State {
        body: CacheBody,
        decoder: Option<flate2::write::GzDecoder<Vec<u8>>>,
        out: u64,
    }
    let state = State {
        body,
        decoder: Some(flate2::write::GzDecoder::new(Vec::new())),
        out: 0,
    };
    let stream = futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            let mut decoder = st.decoder.take()?;
            let chunk: Result<Bytes, BoxError> = match st.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => decoder
                        .write_all(&data)
                        .map(|()| Bytes::from(std::mem::take(decoder.get_mut())))
                        .map_err(Into::into),
                    Err(_) => Ok(Bytes::new()), // trailers: dropped
                },
                Some(Err(err)) => Err(err),
                None => {
                    // The end: flush what the decoder holds; it is done.
                    let rest = decoder.finish().map(Bytes::from).map_err(Into::into);
                    return match rest {
                        Ok(rest) if rest.is_empty() => None,
                        other => Some((other.map(http_body::Frame::data), st)),
                    };
                }
            };
            let chunk = chunk.and_then(|c| {
                st.out += c.len() as u64;
                if st.out > limit {
                    Err(format!("decompressed body over {limit} bytes").into())
                } else {
                    Ok(c)
                }
            });
            match chunk {
                Ok(c) if c.is_empty() => st.decoder = Some(decoder),
                Ok(c) => {
                    st.decoder = Some(decoder);
                    return Some((Ok(http_body::Frame::data(c)), st));
                }
                // An error ends the stream after it is reported.
                Err(err) => return Some((Err(err), st)),
            }
        }
    });
    CacheBody::Stream(StreamBody::new(stream).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ae: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, ae.parse().unwrap());
        h
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        assert!(accepts_gzip(&headers("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&headers("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0, *")));
        assert!(!accepts_gzip(&headers("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_is_decompressed_as_it_streams_and_the_etag_weakened() {
        let text = "the same words ".repeat(10_000);
        let packed = gzip(text.as_bytes());
        // In small chunks, as a slow origin would send them.
        let chunks: Vec<Result<http_body::Frame<Bytes>, BoxError>> = packed
            .chunks(100)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body =
            CacheBody::Stream(StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync());
        let resp = Response::builder()
            .header(CONTENT_ENCODING, "gzip")
            .header(CONTENT_LENGTH, packed.len())
            .header(ETAG, "\"v1\"")
            .body(body)
            .unwrap();
        let out = decode_for_identity(resp);
        assert!(out.headers().get(CONTENT_ENCODING).is_none());
        assert!(out.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(out.headers()[ETAG], "W/\"v1\"");
        let bytes = out.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, text.as_bytes());
    }

    #[tokio::test]
    async fn a_bomb_is_cut_at_the_limit() {
        let packed = gzip(&vec![0u8; 4 << 20]);
        let out = gunzip(CacheBody::full(packed), 1 << 20);
        assert!(out.collect().await.is_err(), "inflated past the limit");
    }

    #[tokio::test]
    async fn corrupt_gzip_is_an_error_not_garbage() {
        let out = gunzip(CacheBody::full(&b"not gzip at all"[..]), 1 << 20);
        assert!(out.collect().await.is_err());
    }
}
