//! Read-while-write: one origin body, read once by its fill, streamed to
//! every request of the flight as it arrives.
//!
//! The fill's pump appends each chunk to a [`Tee`]; every reader follows at
//! its own pace from its own position. The pump never waits for a reader, so
//! a slow or vanished client never slows the fill or the other clients. While
//! the body is within the size the cache stores (`max_object_size`), the tee
//! keeps it all — it is the entry being built, and a request that joins late
//! still reads it from the first byte. Past that size only a window of the
//! most recent bytes is kept (memory per flight is bounded by the window, not
//! by the object), and a reader that falls more than the window behind is
//! cut off with an error (its connection is closed mid-body, never served a
//! gap).

use crate::body::{BoxError, CacheBody};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How a pumped body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Every byte arrived.
    Complete,
    /// The origin's body failed (reset, timeout, the fill deadline).
    Failed(Arc<str>),
}

struct State {
    /// Chunks with the offset of their first byte, oldest first.
    chunks: VecDeque<(u64, Bytes)>,
    /// Bytes appended so far.
    len: u64,
    /// Whether every byte from the first is still held.
    whole: bool,
    end: Option<End>,
    /// The pump is done with everything after the body too (the store write).
    settled: bool,
}

/// A body being pumped from the origin, readable by many (see the module docs).
pub(crate) struct Tee {
    state: Mutex<State>,
    /// Bumped on every change; readers and waiters watch it.
    changed: watch::Sender<u64>,
    keep_whole: u64,
    window: u64,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock().expect("tee lock");
        f.debug_struct("Tee")
            .field("len", &s.len)
            .field("whole", &s.whole)
            .field("end", &s.end)
            .finish()
    }
}

impl Tee {
    /// A tee that keeps the whole body while it is at most `keep_whole`
    /// bytes, then the last `window` bytes.
    pub(crate) fn new(keep_whole: u64, window: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                len: 0,
                whole: true,
                end: None,
                settled: false,
            }),
            changed: watch::channel(0).0,
            keep_whole,
            window: window.max(1),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Append a chunk (the pump).
    pub(crate) fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut s = self.state.lock().expect("tee lock");
            let offset = s.len;
            s.len += chunk.len() as u64;
            s.chunks.push_back((offset, chunk));
            if s.len > self.keep_whole {
                s.whole = false;
                while let Some((off, c)) = s.chunks.front() {
                    if s.len - (off + c.len() as u64) >= self.window {
                        s.chunks.pop_front();
                    } else {
                        break;
                    }
                }
            }
        }
        self.bump();
    }

    /// The body ended (the pump).
    pub(crate) fn finish(&self, end: End) {
        self.state.lock().expect("tee lock").end = Some(end);
        self.bump();
    }

    /// Everything after the body is done too (the pump, after its write).
    pub(crate) fn settle(&self) {
        self.state.lock().expect("tee lock").settled = true;
        self.bump();
    }

    /// The whole body, if it arrived complete and was kept whole.
    pub(crate) fn whole_body(&self) -> Option<Bytes> {
        let s = self.state.lock().expect("tee lock");
        if s.end != Some(End::Complete) || !s.whole {
            return None;
        }
        Some(match s.chunks.len() {
            0 => Bytes::new(),
            1 => s.chunks[0].1.clone(),
            _ => {
                let mut all = BytesMut::with_capacity(s.len as usize);
                for (_, c) in &s.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        })
    }

    /// Wait until the pump settled (body read, and stored or not).
    pub(crate) async fn settled(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.state.lock().expect("tee lock").settled {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A reader from the first byte; `None` when the first bytes are gone
    /// (past the size kept whole): the caller must fetch on its own.
    pub(crate) fn reader(self: &Arc<Self>) -> Option<CacheBody> {
        if !self.state.lock().expect("tee lock").whole {
            return None;
        }
        let rx = self.changed.subscribe();
        let start = Some((self.clone(), 0u64, rx));
        let stream = futures_util::stream::unfold(start, |cursor| async move {
            let (tee, pos, mut rx) = cursor?;
            loop {
                let next = {
                    let s = tee.state.lock().expect("tee lock");
                    let first = s.chunks.front().map_or(s.len, |(off, _)| *off);
                    if pos < first {
                        Some(Err(BoxError::from(
                            "client fell behind the streaming window and was cut off",
                        )))
                    } else if pos < s.len {
                        let i = s.chunks.partition_point(|(off, _)| *off <= pos) - 1;
                        let (off, chunk) = &s.chunks[i];
                        Some(Ok(chunk.slice((pos - off) as usize..)))
                    } else {
                        match &s.end {
                            Some(End::Complete) => return None,
                            Some(End::Failed(why)) => {
                                Some(Err(BoxError::from(format!("origin body failed: {why}"))))
                            }
                            None => None,
                        }
                    }
                };
                match next {
                    Some(Ok(data)) => {
                        let pos = pos + data.len() as u64;
                        return Some((Ok(http_body::Frame::data(data)), Some((tee, pos, rx))));
                    }
                    // An error ends the stream: reported once, then the end.
                    Some(Err(err)) => return Some((Err(err), None)),
                    None => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        });
        Some(CacheBody::Stream(StreamBody::new(stream).boxed_unsync()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn read_all(body: CacheBody) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn every_reader_gets_every_byte_as_it_arrives() {
        let tee = Tee::new(1 << 20, 1 << 10);
        let early = tee.reader().unwrap();
        let pump = {
            let tee = tee.clone();
            tokio::spawn(async move {
                for i in 0..10u8 {
                    tee.push(Bytes::from(vec![i; 1000]));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tee.finish(End::Complete);
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let late = tee.reader().expect("the whole body is still held");
        let (a, b) = tokio::join!(read_all(early), read_all(late));
        pump.await.unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
        assert_eq!(a[9_999], 9);
        assert_eq!(tee.whole_body().unwrap(), a);
    }

    #[tokio::test]
    async fn past_the_kept_size_only_a_window_is_held_and_laggards_are_cut() {
        let tee = Tee::new(2_000, 1_500);
        let laggard = tee.reader().unwrap();
        for i in 0..10u8 {
            tee.push(Bytes::from(vec![i; 1000]));
        }
        tee.finish(End::Complete);
        assert!(tee.reader().is_none(), "the start is gone");
        assert!(tee.whole_body().is_none(), "not stored");
        let held: usize = tee
            .state
            .lock()
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.1.len())
            .sum();
        assert!(held <= 2_500, "held {held}");
        assert!(read_all(laggard).await.is_err(), "cut off, never a gap");
    }

    #[tokio::test]
    async fn a_failed_body_fails_its_readers() {
        let tee = Tee::new(1 << 20, 1 << 20);
        let r = tee.reader().unwrap();
        tee.push(Bytes::from_static(b"partial"));
        tee.finish(End::Failed("reset".into()));
        assert!(read_all(r).await.is_err());
        assert!(tee.whole_body().is_none());
    }

    #[tokio::test]
    async fn settled_waits_for_the_pump() {
        let tee = Tee::new(10, 10);
        let waiter = {
            let tee = tee.clone();
            tokio::spawn(async move { tee.settled().await })
        };
        tee.finish(End::Complete);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        tee.settle();
        waiter.await.unwrap();
    }
}
