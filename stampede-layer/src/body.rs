//! The response body every layer above the origin speaks: either a whole
//! buffered `Bytes` (cacheable, shareable between coalesced requests) or a
//! stream passed through untouched (too large to buffer).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Boxed error type of the layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body of the cache layers.
#[derive(Debug)]
pub enum CacheBody {
    /// A whole body in memory (taken once when polled).
    Full(Option<Bytes>),
    /// A body streamed through from the inner service.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl CacheBody {
    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        CacheBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// An empty body.
    pub fn empty() -> Self {
        CacheBody::Full(None)
    }

    /// Wrap any body (boxing it unless it already is a `CacheBody`).
    pub fn from_body<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        if let Some(same) =
            (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<CacheBody>>()
        {
            return same.take().expect("slot is filled");
        }
        let body = slot.expect("slot is filled");
        CacheBody::Stream(body.map_err(Into::into).boxed_unsync())
    }

    /// The bytes of a whole body (`None` for a stream).
    pub fn as_bytes(&self) -> Option<Bytes> {
        match self {
            CacheBody::Full(b) => Some(b.clone().unwrap_or_default()),
            CacheBody::Stream(_) => None,
        }
    }
}

impl Default for CacheBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for CacheBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            CacheBody::Full(data) => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            CacheBody::Stream(inner) => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CacheBody::Full(data) => data.is_none(),
            CacheBody::Stream(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CacheBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            CacheBody::Stream(inner) => inner.size_hint(),
        }
    }
}

/// The outcome of [`buffer`].
#[derive(Debug)]
pub(crate) enum Buffered {
    /// The whole body fit in the limit.
    Complete(Bytes),
    /// Larger than the limit: the body, re-assembled, to stream through.
    TooLarge(CacheBody),
}

/// Read `body` whole if it is at most `limit` bytes; otherwise hand back a
/// body that replays what was read and streams the rest (nothing is lost).
pub(crate) async fn buffer<B>(body: B, limit: usize) -> Result<Buffered, BoxError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(upper) = body.size_hint().upper()
        && upper as usize > limit
    {
        return Ok(Buffered::TooLarge(CacheBody::from_body(body)));
    }
    let mut body = Box::pin(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not cached
        };
        total += data.len();
        chunks.push(data);
        if total > limit {
            let head = futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, BoxError>(Frame::data(c))),
            );
            let rest = http_body_util::BodyStream::new(body.map_err(Into::into));
            let stream = futures_util::StreamExt::chain(head, rest);
            return Ok(Buffered::TooLarge(CacheBody::Stream(
                StreamBody::new(stream).boxed_unsync(),
            )));
        }
    }
    Ok(Buffered::Complete(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn small_bodies_are_buffered() {
        let out = buffer(Full::new(Bytes::from_static(b"abc")), 10)
            .await
            .unwrap();
        assert!(matches!(out, Buffered::Complete(b) if b == "abc"));
    }

    #[tokio::test]
    async fn large_bodies_stream_through_intact() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..10)
            .map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + i; 100]))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let Buffered::TooLarge(body) = buffer(body, 250).await.unwrap() else {
            panic!("expected TooLarge");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 1000);
        assert_eq!(all[999], b'j');
    }
}
