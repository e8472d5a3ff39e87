//! One client's replay buffer for connection state recovery (issue 25): the messages the gateway
//! wrote to it, numbered, so that after a reconnect the client gets exactly the ones it did not
//! receive, or is told plainly that this is impossible.
//!
//! Messages are numbered 1, 2, … in the order they are written to the client: the number is the
//! count of data messages ever written to this client, across reconnects. The client says how
//! many it received; [`ack`](ReplayBuffer::ack) trims those, and after a reconnect
//! [`replay_after`](ReplayBuffer::replay_after) gives the rest, in order. The buffer is capped in
//! messages and bytes ([`ReplayCaps`], passed in rather than stored so that an empty buffer is
//! seven words): recording past a cap drops the oldest, and a later replay that would need a
//! dropped message is a [`ReplayError::Gap`], never a silent skip.
//!
//! Messages are shared handles (`Bytes`, `Arc<..>`): a broadcast recorded for ten thousand
//! clients is one copy of the payload and ten thousand handles. An empty buffer holds no heap
//! memory, so a live idle client with recovery on costs only the buffer's own size.
//!
//! # Wiring
//!
//! New (recovery, issue 25). The gateway keeps one per client beside its send queue, behind the
//! client's lock: [`record`](ReplayBuffer::record) when a data message is queued for the client
//! (the number goes out with it), [`ack`](ReplayBuffer::ack) when the client reports its count,
//! [`replay_after`](ReplayBuffer::replay_after) on a resume. The wrapper adds what
//! [`Recorded::dropped`] and [`Trimmed`] report to its gateway-wide gauges and enforces the
//! gateway-wide cap; held clients' expiry is [`Deadlines`](crate::Deadlines).

use std::collections::VecDeque;
use std::collections::vec_deque;
use std::marker::PhantomData;

use crate::weight::Weigher;

/// Caps of one client's buffer. `usize::MAX` means no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCaps {
    /// Most messages kept.
    pub messages: usize,
    /// Most bytes kept, as the buffer's weigher counts them.
    pub bytes: usize,
}

/// Messages and bytes removed from a buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Messages removed.
    pub messages: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// What [`ReplayBuffer::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The message's number.
    pub n: u64,
    /// The oldest messages dropped to stay within the caps (possibly the new one itself, if it
    /// alone is over the byte cap): the buffer can no longer replay from before them.
    pub dropped: Trimmed,
}

/// Why the messages after a client's count cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The client claims more messages than were ever written to it: it is lying or confused.
    #[error("the client says it received {received} messages, but only {written} were written to it")]
    Ahead {
        /// The client's count.
        received: u64,
        /// Messages written.
        written: u64,
    },
    /// The client acknowledged more messages before than it now says it received; those were
    /// trimmed on its word.
    #[error("the client says it received {received} messages, but it acknowledged {acked} before")]
    BehindAck {
        /// The client's count.
        received: u64,
        /// Its earlier acknowledgement.
        acked: u64,
    },
    /// Messages the client did not receive were dropped by the caps.
    #[error("messages {} to {} were dropped by the replay caps", .missing.start(), .missing.end())]
    Gap {
        /// The numbers of the dropped messages the client would need.
        missing: std::ops::RangeInclusive<u64>,
    },
}

/// The messages to replay, in order (borrowed: clone the handles to send them).
pub type Replay<'a, M> = vec_deque::Iter<'a, M>;

/// One client's written messages since its last acknowledgement, within caps.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use gw_delivery::{Len, ReplayBuffer, ReplayCaps, ReplayError};
///
/// let caps = ReplayCaps { messages: 100, bytes: 1 << 20 };
/// let mut buf: ReplayBuffer<Bytes, Len> = ReplayBuffer::new();
/// for m in ["a", "b", "c"] {
///     buf.record(Bytes::from(m), &caps);
/// }
/// buf.ack(1).unwrap(); // the client got "a"
/// // The socket died; the client reconnects having read "a" and "b":
/// let replay: Vec<_> = buf.replay_after(2).unwrap().cloned().collect();
/// assert_eq!(replay, [Bytes::from("c")]);
/// assert!(matches!(buf.replay_after(4), Err(ReplayError::Ahead { .. })));
/// ```
pub struct ReplayBuffer<M, W> {
    /// Messages numbered `written - len + 1 ..= written`.
    kept: VecDeque<M>,
    /// Messages ever recorded; the number of the last one.
    written: u64,
    /// Highest count the client acknowledged; everything up to it is trimmed.
    acked: u64,
    /// Sum of the weights of `kept`.
    bytes: usize,
    weigher: PhantomData<fn() -> W>,
}

impl<M, W> std::fmt::Debug for ReplayBuffer<M, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBuffer")
            .field("written", &self.written)
            .field("acked", &self.acked)
            .field("kept", &self.kept.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<M, W> Default for ReplayBuffer<M, W> {
    fn default() -> Self {
        Self { kept: VecDeque::new(), written: 0, acked: 0, bytes: 0, weigher: PhantomData }
    }
}

impl<M, W: Weigher<M>> ReplayBuffer<M, W> {
    /// An empty buffer; allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `msg` as written to the client; returns its number and what the caps dropped.
    pub fn record(&mut self, msg: M, caps: &ReplayCaps) -> Recorded {
        self.written += 1;
        self.bytes += W::weight(&msg);
        if self.kept.capacity() == 0 {
            // One slot, not the four a first push makes: a client at rest between
            // acknowledgements usually keeps one message (its last), and holds it per client.
            self.kept.reserve_exact(1);
        }
        self.kept.push_back(msg);
        let mut dropped = Trimmed::default();
        while self.kept.len() > caps.messages || self.bytes > caps.bytes {
            let Some(old) = self.kept.pop_front() else { break };
            let w = W::weight(&old);
            self.bytes -= w;
            dropped.messages += 1;
            dropped.bytes += w;
        }
        if self.kept.is_empty() {
            self.kept = VecDeque::new();
        }
        Recorded { n: self.written, dropped }
    }

    /// The client received the first `received` messages: trims them. A count at or below an
    /// earlier one trims nothing; a count above what was written is an error
    /// ([`ReplayError::Ahead`], the only error here) and changes nothing.
    pub fn ack(&mut self, received: u64) -> Result<Trimmed, ReplayError> {
        if received > self.written {
            return Err(ReplayError::Ahead { received, written: self.written });
        }
        if received <= self.acked {
            return Ok(Trimmed::default());
        }
        self.acked = received;
        let first = self.first_kept();
        let count = usize::try_from(received.saturating_sub(first - 1)).unwrap_or(usize::MAX).min(self.kept.len());
        let bytes = self.kept.drain(..count).map(|m| W::weight(&m)).sum();
        self.bytes -= bytes;
        self.fit();
        Ok(Trimmed { messages: count, bytes })
    }

    /// Frees a burst's capacity once it is mostly acknowledged, and everything once empty.
    fn fit(&mut self) {
        let len = self.kept.len();
        if len == 0 {
            self.kept = VecDeque::new();
        } else if self.kept.capacity() > 16.max(4 * len) {
            self.kept.shrink_to(2 * len);
        }
    }

    /// The messages numbered `received + 1 ..= written`, in order: exactly what a client that
    /// received `received` messages is missing; or why that is impossible.
    pub fn replay_after(&self, received: u64) -> Result<Replay<'_, M>, ReplayError> {
        if received > self.written {
            return Err(ReplayError::Ahead { received, written: self.written });
        }
        if received < self.acked {
            return Err(ReplayError::BehindAck { received, acked: self.acked });
        }
        let first = self.first_kept();
        if received + 1 < first {
            // Not trimmed by an ack (received >= acked): dropped by the caps.
            return Err(ReplayError::Gap { missing: received + 1..=first - 1 });
        }
        let skip = usize::try_from(received + 1 - first).unwrap_or(usize::MAX);
        Ok(self.kept.range(skip..))
    }

    /// A buffer that has numbered `written` messages, of which the client acknowledged
    /// `acked`, keeping `kept` (the last ones, in order): one taken over from another process.
    /// `None` when those do not fit together (more kept than written, or the acknowledged ones
    /// among them).
    pub fn from_parts(written: u64, acked: u64, kept: impl IntoIterator<Item = M>) -> Option<Self> {
        let kept: VecDeque<M> = kept.into_iter().collect();
        let first = (written + 1).checked_sub(kept.len() as u64)?;
        if acked > written || (!kept.is_empty() && first <= acked) {
            return None;
        }
        let bytes = kept.iter().map(W::weight).sum();
        Some(Self { kept, written, acked, bytes, weigher: PhantomData })
    }

    /// The messages kept, oldest first (numbered from [`first_kept`](Self::first_kept)).
    pub fn kept(&self) -> impl Iterator<Item = &M> {
        self.kept.iter()
    }

    /// Number of the oldest message kept (`written + 1` when none is).
    pub fn first_kept(&self) -> u64 {
        self.written + 1 - self.kept.len() as u64
    }

    /// Messages ever written to the client (the number of the last one).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The highest count the client acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Bytes kept, as `W` weighs them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Slots allocated (the buffer's heap cost, in handles).
    pub fn capacity(&self) -> usize {
        self.kept.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::weight::Len;

    type Buf = ReplayBuffer<Bytes, Len>;

    const ROOMY: ReplayCaps = ReplayCaps { messages: usize::MAX, bytes: usize::MAX };

    fn record_all(buf: &mut Buf, msgs: &[&'static str], caps: &ReplayCaps) -> Vec<Recorded> {
        msgs.iter().map(|m| buf.record(Bytes::from_static(m.as_bytes()), caps)).collect()
    }

    fn replay(buf: &Buf, received: u64) -> Result<Vec<&str>, ReplayError> {
        buf.replay_after(received).map(|r| r.map(|b| std::str::from_utf8(b).unwrap()).collect())
    }

    #[test]
    fn a_buffer_rebuilt_from_its_parts_replays_and_numbers_on_as_the_original() {
        let mut buf = Buf::new();
        record_all(&mut buf, &["a", "bb", "ccc", "d"], &ROOMY);
        buf.ack(1).unwrap();
        let mut copy = Buf::from_parts(buf.written(), buf.acked(), buf.kept().cloned()).unwrap();
        assert_eq!((copy.written(), copy.len(), copy.bytes(), copy.first_kept()), (4, 3, 6, 2));
        assert_eq!(replay(&copy, 2).unwrap(), ["ccc", "d"]);
        assert_eq!(copy.record(Bytes::from_static(b"e"), &ROOMY).n, 5);
        assert!(Buf::from_parts(1, 0, [Bytes::new(), Bytes::new()]).is_none(), "more kept than written");
        assert!(Buf::from_parts(4, 3, [Bytes::new(), Bytes::new()]).is_none(), "an acknowledged one kept");
        assert!(Buf::from_parts(4, 5, []).is_none(), "acknowledged past written");
    }

    #[test]
    fn replays_exactly_what_the_client_missed() {
        let mut buf = Buf::new();
        let rec = record_all(&mut buf, &["a", "bb", "ccc", "d"], &ROOMY);
        assert_eq!(rec.iter().map(|r| r.n).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(rec.iter().all(|r| r.dropped == Trimmed::default()));
        assert_eq!((buf.written(), buf.len(), buf.bytes(), buf.first_kept()), (4, 4, 7, 1));
        assert_eq!(replay(&buf, 0).unwrap(), ["a", "bb", "ccc", "d"]);
        assert_eq!(replay(&buf, 2).unwrap(), ["ccc", "d"]);
        assert_eq!(replay(&buf, 4).unwrap(), Vec::<&str>::new(), "nothing missed");
    }

    #[test]
    fn an_ack_trims_what_the_client_has() {
        let mut buf = Buf::new();
        record_all(&mut buf, &["a", "bb", "ccc"], &ROOMY);
        assert_eq!(buf.ack(2).unwrap(), Trimmed { messages: 2, bytes: 3 });
        assert_eq!((buf.len(), buf.bytes(), buf.first_kept(), buf.acked()), (1, 3, 3, 2));
        assert_eq!(buf.ack(1).unwrap(), Trimmed::default(), "an older count trims nothing");
        assert_eq!(buf.ack(2).unwrap(), Trimmed::default());
        assert_eq!(replay(&buf, 2).unwrap(), ["ccc"]);
        assert_eq!(buf.ack(3).unwrap(), Trimmed { messages: 1, bytes: 3 });
        assert!(buf.is_empty() && buf.capacity() == 0, "an acknowledged buffer holds no memory");
        assert_eq!(replay(&buf, 3).unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn a_count_above_what_was_written_is_refused() {
        let mut buf = Buf::new();
        record_all(&mut buf, &["a", "b"], &ROOMY);
        let e = buf.ack(3).unwrap_err();
        assert_eq!(e, ReplayError::Ahead { received: 3, written: 2 });
        assert_eq!(e.to_string(), "the client says it received 3 messages, but only 2 were written to it");
        assert_eq!((buf.len(), buf.acked()), (2, 0), "a refused ack changes nothing");
        assert_eq!(replay(&buf, u64::MAX).unwrap_err(), ReplayError::Ahead { received: u64::MAX, written: 2 });
    }

    #[test]
    fn a_count_below_an_earlier_ack_is_refused() {
        let mut buf = Buf::new();
        record_all(&mut buf, &["a", "b", "c"], &ROOMY);
        buf.ack(2).unwrap();
        let e = replay(&buf, 1).unwrap_err();
        assert_eq!(e, ReplayError::BehindAck { received: 1, acked: 2 });
        assert_eq!(e.to_string(), "the client says it received 1 messages, but it acknowledged 2 before");
    }

    #[test]
    fn the_message_cap_drops_the_oldest_and_a_replay_into_the_drop_is_a_gap() {
        let caps = ReplayCaps { messages: 2, bytes: usize::MAX };
        let mut buf = Buf::new();
        let rec = record_all(&mut buf, &["a", "b", "c", "d"], &caps);
        assert_eq!(rec[2].dropped, Trimmed { messages: 1, bytes: 1 });
        assert_eq!(rec[3].dropped, Trimmed { messages: 1, bytes: 1 });
        assert_eq!((buf.first_kept(), buf.len()), (3, 2));
        assert_eq!(replay(&buf, 2).unwrap(), ["c", "d"]);
        let e = replay(&buf, 0).unwrap_err();
        assert_eq!(e, ReplayError::Gap { missing: 1..=2 });
        assert_eq!(e.to_string(), "messages 1 to 2 were dropped by the replay caps");
        assert_eq!(replay(&buf, 1).unwrap_err(), ReplayError::Gap { missing: 2..=2 });
        // Once the client acknowledges past the gap, it is complete again from there.
        buf.ack(3).unwrap();
        assert_eq!(replay(&buf, 3).unwrap(), ["d"]);
    }

    #[test]
    fn the_byte_cap_drops_as_many_of_the_oldest_as_needed() {
        let caps = ReplayCaps { messages: usize::MAX, bytes: 5 };
        let mut buf = Buf::new();
        record_all(&mut buf, &["aa", "bb", "c"], &caps);
        assert_eq!(buf.bytes(), 5);
        let rec = buf.record(Bytes::from_static(b"dddd"), &caps);
        assert_eq!(rec, Recorded { n: 4, dropped: Trimmed { messages: 2, bytes: 4 } });
        assert_eq!(replay(&buf, 2).unwrap(), ["c", "dddd"]);
        assert_eq!(replay(&buf, 1).unwrap_err(), ReplayError::Gap { missing: 2..=2 });
    }

    #[test]
    fn a_message_over_the_byte_cap_alone_is_itself_dropped() {
        let caps = ReplayCaps { messages: 10, bytes: 3 };
        let mut buf = Buf::new();
        record_all(&mut buf, &["a"], &caps);
        let rec = buf.record(Bytes::from_static(b"toolong"), &caps);
        assert_eq!(rec, Recorded { n: 2, dropped: Trimmed { messages: 2, bytes: 8 } });
        assert!(buf.is_empty() && buf.capacity() == 0);
        assert_eq!(replay(&buf, 1).unwrap_err(), ReplayError::Gap { missing: 2..=2 });
        assert_eq!(replay(&buf, 2).unwrap(), Vec::<&str>::new());
        // Numbering goes on.
        assert_eq!(buf.record(Bytes::from_static(b"e"), &caps).n, 3);
        assert_eq!(replay(&buf, 2).unwrap(), ["e"]);
    }

    #[test]
    fn a_broadcast_is_one_copy_shared_by_every_buffer() {
        let payload = Bytes::from(vec![7u8; 4096]);
        let mut bufs: Vec<Buf> = (0..100).map(|_| Buf::new()).collect();
        for b in &mut bufs {
            b.record(payload.clone(), &ROOMY);
        }
        // Every buffer's message points at the same 4096 bytes.
        let p = payload.as_ptr();
        assert!(bufs.iter().all(|b| b.replay_after(0).unwrap().next().unwrap().as_ptr() == p));
        // Likewise with Arc handles and a weigher of the caller's own.
        struct ArcLen;
        impl Weigher<Arc<str>> for ArcLen {
            fn weight(m: &Arc<str>) -> usize {
                m.len()
            }
        }
        let msg: Arc<str> = Arc::from("hello");
        let mut a: ReplayBuffer<Arc<str>, ArcLen> = ReplayBuffer::new();
        a.record(msg.clone(), &ROOMY);
        assert_eq!(Arc::strong_count(&msg), 2);
        assert_eq!(a.bytes(), 5);
    }

    #[test]
    fn an_empty_buffer_is_a_few_words_and_holds_no_heap() {
        let buf = Buf::new();
        assert_eq!(buf.capacity(), 0);
        assert!(size_of::<Buf>() <= 7 * size_of::<usize>(), "{} bytes", size_of::<Buf>());
    }

    #[test]
    fn a_burst_s_capacity_is_given_back_as_it_is_acknowledged() {
        let mut buf = Buf::new();
        for _ in 0..1000 {
            buf.record(Bytes::from_static(b"x"), &ROOMY);
        }
        buf.ack(998).unwrap();
        assert!(buf.capacity() <= 16, "capacity {} for 2 messages", buf.capacity());
        assert_eq!(buf.replay_after(998).unwrap().count(), 2);
    }
}
