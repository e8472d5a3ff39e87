//! One bounded FIFO for the hand-written queues of the gateway and the worker: bounded in items
//! and in bytes, refusing (and giving the item back, saying why) instead of waiting, holding no
//! memory while empty.
//!
//! The queue never waits and never wakes anyone: it tells its wrapper when to. A push that made
//! the queue non-empty returns [`Pushed::Wake`] (wake the consumer); a pop or drain after a push
//! was refused for lack of room returns `wake_producer` (wake the producer waiting for room).
//! Each wake-up is handed out once, so with a `Notify` (which keeps one permit) nothing is missed
//! and no side is woken for nothing.
//!
//! # Wiring
//!
//! The wrapper keeps a `Mutex<BoundedQueue<..>>` and its `Notify`s, and calls the queue under
//! the lock, notifying after it is released. Wired into all three hand-written queues:
//!
//! - `SendQueue` (`gateway/src/send_queue.rs`): a `BoundedQueue<Outbound, Weightless>` with
//!   `Limits::items(send_queue)`; `try_send` is [`push`](BoundedQueue::push) (notifying on
//!   [`Pushed::Wake`]; [`Refusal::Closed`] is the client-gone case, the others the slow-consumer
//!   case), `try_recv` is [`pop`](BoundedQueue::pop), `ready` waits while
//!   [`is_empty`](BoundedQueue::is_empty), `close` counts what [`close`](BoundedQueue::close)
//!   hands back, `release_idle` is [`release_idle`](BoundedQueue::release_idle). Producers never
//!   wait there, so `wake_producer` is ignored. Not yet: the byte budget. It is still checked by
//!   the producer against the client's `queued_bytes` atomic (`commands.rs`, `client.rs`); moving
//!   it here (`with_bytes(send_queue_bytes)` and a weigher that counts a `Msg`'s bytes and nothing
//!   for heartbeats and close requests) changes those files, which the recovery work is changing
//!   at the same time.
//! - `ClientSlot` (`business-worker/src/client_task.rs`): `pending` is a
//!   `BoundedQueue<Event, Weightless>` with `Limits::items(queue)`; `running` and the handlers'
//!   state stay beside it under the same lock. A refusal gives the event back to the link task,
//!   which waits on `space`; the client task notifies `space` when a pop says `wake_producer`
//!   (before, it notified whenever the queue had been full, waiter or not). The lingering task's
//!   `pending = VecDeque::new()` is [`release_idle`](BoundedQueue::release_idle).
//! - `Redelivery` (`gateway/src/binding.rs`): [`Limits::UNBOUNDED`] (what comes back is what a
//!   dead worker held, already bounded by the link), boxed and made on the first hand-back (a
//!   queue inline in every client's handle cost 32 bytes per idle client more than the
//!   `Vec` it replaced), [`append`](BoundedQueue::append) for
//!   `hand_back` (refused as a whole once closed), [`drain`](BoundedQueue::drain) for `take`,
//!   [`close`](BoundedQueue::close) for `close`; the `pending` atomic and the `ready` Notify stay.

use std::collections::VecDeque;
use std::marker::PhantomData;

use crate::weight::Weigher;

/// Capacity a queue drained by [`pop`](BoundedQueue::pop) may keep for the next burst; a larger
/// one (left by a burst) is freed when the queue runs empty. [`release_idle`](BoundedQueue::release_idle)
/// frees the rest.
pub const KEEP_CAPACITY: usize = 16;

/// How much a queue may hold. `usize::MAX` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items at once (at least 1).
    pub items: usize,
    /// Most bytes at once, as the queue's weigher counts them.
    pub bytes: usize,
}

impl Limits {
    /// No limit at all.
    pub const UNBOUNDED: Limits = Limits { items: usize::MAX, bytes: usize::MAX };

    /// At most `items` items (at least 1: a queue that can hold nothing would refuse forever),
    /// any number of bytes.
    pub fn items(items: usize) -> Self {
        Self { items: items.max(1), bytes: usize::MAX }
    }

    /// The same limits with at most `bytes` bytes.
    pub fn with_bytes(self, bytes: usize) -> Self {
        Self { bytes, ..self }
    }
}

/// What a successful push asks of the wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The queue went from empty to non-empty: wake the consumer.
    Wake,
    /// Nothing to wake: items were already waiting, so the consumer already had its wake-up (or
    /// nothing was added).
    Quiet,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The queue holds its limit of items; it takes more once the consumer pops.
    #[error("queue full: {limit} items waiting")]
    FullItems {
        /// The item limit.
        limit: usize,
    },
    /// The item would take the queue over its byte limit; it fits once the consumer pops.
    #[error("queue full: {queued} bytes waiting, {weight} more would pass the limit of {limit}")]
    FullBytes {
        /// Bytes waiting now.
        queued: usize,
        /// The refused item's (or batch's) weight.
        weight: usize,
        /// The byte limit.
        limit: usize,
    },
    /// The item (or batch) alone is heavier than the byte limit: it never fits, waiting is
    /// pointless.
    #[error("{weight} bytes never fit in a queue of at most {limit} bytes")]
    Oversized {
        /// The refused item's (or batch's) weight.
        weight: usize,
        /// The byte limit.
        limit: usize,
    },
    /// A batch of more items than the item limit: it never fits, waiting is pointless.
    #[error("a batch of {count} items never fits in a queue of at most {limit} items")]
    TooMany {
        /// Items in the refused batch.
        count: usize,
        /// The item limit.
        limit: usize,
    },
    /// The queue was closed: its consumer is gone.
    #[error("queue closed")]
    Closed,
}

impl Refusal {
    /// Whether the refused push may succeed later (the queue is full, not closed, and the item
    /// is not too heavy to ever fit): a producer waits for room only then.
    pub fn is_full(self) -> bool {
        matches!(self, Refusal::FullItems { .. } | Refusal::FullBytes { .. })
    }
}

/// A refused push: the item, given back, and why.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Refused<T> {
    /// What was not queued.
    pub item: T,
    /// Why.
    pub reason: Refusal,
}

/// An item taken from the front of the queue.
#[derive(Debug)]
pub struct Popped<T> {
    /// The item.
    pub item: T,
    /// A push was refused for lack of room since the last time room was reported: wake the
    /// producer that waits for it.
    pub wake_producer: bool,
}

/// Everything that waited, taken at once.
#[derive(Debug)]
pub struct Drained<T> {
    /// The items, oldest first.
    pub items: VecDeque<T>,
    /// As in [`Popped::wake_producer`].
    pub wake_producer: bool,
}

/// A FIFO bounded in items and in bytes (as `W` weighs them) that refuses instead of waiting.
///
/// Small (64 bytes on 64-bit targets) and holding no heap memory while empty and idle: one per
/// client is affordable.
///
/// # Examples
///
/// ```
/// use gw_delivery::{BoundedQueue, Len, Limits, Pushed, Refusal};
///
/// let mut q: BoundedQueue<Vec<u8>, Len> = BoundedQueue::new(Limits::items(2).with_bytes(8));
/// assert_eq!(q.push(b"abc".to_vec()).unwrap(), Pushed::Wake); // wake the consumer
/// assert_eq!(q.push(b"de".to_vec()).unwrap(), Pushed::Quiet);
/// let refused = q.push(b"f".to_vec()).unwrap_err();
/// assert_eq!(refused.reason, Refusal::FullItems { limit: 2 });
/// assert_eq!(refused.item, b"f"); // given back
/// let popped = q.pop().unwrap();
/// assert_eq!(popped.item, b"abc");
/// assert!(popped.wake_producer); // someone was refused: tell them there is room
/// assert_eq!(q.bytes(), 2);
/// ```
pub struct BoundedQueue<T, W> {
    items: VecDeque<T>,
    /// Sum of the weights of `items`.
    bytes: usize,
    limits: Limits,
    closed: bool,
    /// A push was refused for lack of room and no pop or drain has reported room since.
    refused: bool,
    weigher: PhantomData<fn() -> W>,
}

impl<T, W> std::fmt::Debug for BoundedQueue<T, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedQueue")
            .field("len", &self.items.len())
            .field("bytes", &self.bytes)
            .field("limits", &self.limits)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T, W: Weigher<T>> BoundedQueue<T, W> {
    /// An empty, open queue; allocates nothing until the first push.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits { items: limits.items.max(1), ..limits };
        Self { items: VecDeque::new(), bytes: 0, limits, closed: false, refused: false, weigher: PhantomData }
    }

    /// Queues `item` at the back, or gives it back saying why not.
    // The item comes back on refusal (that is the point); boxing it would allocate on the
    // slow-consumer path.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn push(&mut self, item: T) -> Result<Pushed, Refused<T>> {
        let weight = W::weight(&item);
        if let Err(reason) = self.admit(1, weight) {
            return Err(Refused { item, reason });
        }
        let wake = self.items.is_empty();
        self.items.push_back(item);
        self.bytes += weight;
        Ok(if wake { Pushed::Wake } else { Pushed::Quiet })
    }

    /// Queues all of `items` at the back, in order, or none of them (given back as a whole,
    /// saying why). A batch counts against the limits as the sum of its items.
    pub fn append(&mut self, items: Vec<T>) -> Result<Pushed, Refused<Vec<T>>> {
        let weight = items.iter().map(W::weight).fold(0usize, usize::saturating_add);
        if let Err(reason) = self.admit(items.len(), weight) {
            return Err(Refused { item: items, reason });
        }
        let wake = self.items.is_empty() && !items.is_empty();
        self.items.extend(items);
        self.bytes += weight;
        Ok(if wake { Pushed::Wake } else { Pushed::Quiet })
    }

    /// Whether `count` more items weighing `weight` in all may be queued now.
    #[inline]
    fn admit(&mut self, count: usize, weight: usize) -> Result<(), Refusal> {
        let limits = self.limits;
        if self.closed {
            return Err(Refusal::Closed);
        }
        if weight > limits.bytes {
            return Err(Refusal::Oversized { weight, limit: limits.bytes });
        }
        if count > limits.items {
            return Err(Refusal::TooMany { count, limit: limits.items });
        }
        let refusal = if count > limits.items - self.items.len() {
            Refusal::FullItems { limit: limits.items }
        } else if weight > limits.bytes - self.bytes {
            Refusal::FullBytes { queued: self.bytes, weight, limit: limits.bytes }
        } else {
            return Ok(());
        };
        // Someone now waits for room (or may): the next pop or drain says so.
        self.refused = true;
        Err(refusal)
    }

    /// Takes the oldest item. A queue that runs empty frees a capacity above [`KEEP_CAPACITY`].
    #[inline]
    pub fn pop(&mut self) -> Option<Popped<T>> {
        let item = self.items.pop_front()?;
        self.bytes -= W::weight(&item);
        if self.items.is_empty() && self.items.capacity() > KEEP_CAPACITY {
            self.items = VecDeque::new();
        }
        Some(Popped { item, wake_producer: std::mem::take(&mut self.refused) })
    }

    /// Takes everything that waits, oldest first, leaving the queue open, empty and holding no
    /// memory.
    pub fn drain(&mut self) -> Drained<T> {
        let items = std::mem::take(&mut self.items);
        self.bytes = 0;
        let wake_producer = !items.is_empty() && std::mem::take(&mut self.refused);
        Drained { items, wake_producer }
    }

    /// Refuses every later push ([`Refusal::Closed`]) and hands back what waited, oldest first.
    /// Frees the queue's memory. Closing twice hands back nothing the second time.
    pub fn close(&mut self) -> VecDeque<T> {
        self.closed = true;
        self.refused = false;
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    /// Frees the memory of an empty queue (a queue drained by [`pop`](Self::pop) keeps up to
    /// [`KEEP_CAPACITY`] slots otherwise), so an idle client costs nothing here. Does nothing to
    /// a queue that holds items.
    pub fn release_idle(&mut self) {
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = VecDeque::new();
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes waiting, as `W` weighs them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Slots allocated (what the queue costs beyond its own size, in items).
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// The limits the queue enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The oldest item, left in place.
    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// The waiting items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weight::{Len, Weightless};

    type ByLen = BoundedQueue<Vec<u8>, Len>;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn fifo_with_exact_byte_accounting() {
        let mut q = ByLen::new(Limits::UNBOUNDED);
        assert_eq!(q.push(v("a")).unwrap(), Pushed::Wake);
        assert_eq!(q.push(v("bb")).unwrap(), Pushed::Quiet);
        assert_eq!(q.push(v("ccc")).unwrap(), Pushed::Quiet);
        assert_eq!((q.len(), q.bytes()), (3, 6));
        assert_eq!(q.pop().unwrap().item, v("a"));
        assert_eq!(q.bytes(), 5);
        assert_eq!(q.pop().unwrap().item, v("bb"));
        assert_eq!(q.pop().unwrap().item, v("ccc"));
        assert!(q.pop().is_none());
        assert_eq!((q.len(), q.bytes()), (0, 0));
        // Empty again: the next push wakes the consumer again.
        assert_eq!(q.push(v("d")).unwrap(), Pushed::Wake);
    }

    #[test]
    fn full_by_items_gives_the_item_back_and_the_next_pop_wakes_the_producer_once() {
        let mut q = BoundedQueue::<u32, Weightless>::new(Limits::items(2));
        q.push(1).unwrap();
        q.push(2).unwrap();
        let r = q.push(3).unwrap_err();
        assert_eq!((r.item, r.reason), (3, Refusal::FullItems { limit: 2 }));
        assert!(r.reason.is_full());
        assert_eq!(r.to_string(), "queue full: 2 items waiting");
        let p = q.pop().unwrap();
        assert_eq!((p.item, p.wake_producer), (1, true));
        assert!(!q.pop().unwrap().wake_producer, "the producer was told once");
    }

    #[test]
    fn a_pop_with_nobody_refused_wakes_no_producer() {
        let mut q = BoundedQueue::<u32, Weightless>::new(Limits::items(1));
        q.push(1).unwrap();
        // Full, but nobody was refused: nobody waits for room.
        assert!(!q.pop().unwrap().wake_producer);
    }

    #[test]
    fn full_by_bytes_and_oversized_are_told_apart() {
        let mut q = ByLen::new(Limits::items(10).with_bytes(5));
        q.push(v("abcd")).unwrap();
        let r = q.push(v("xy")).unwrap_err();
        assert_eq!(r.reason, Refusal::FullBytes { queued: 4, weight: 2, limit: 5 });
        assert_eq!(r.reason.to_string(), "queue full: 4 bytes waiting, 2 more would pass the limit of 5");
        assert!(r.reason.is_full());
        // One byte still fits exactly.
        q.push(v("z")).unwrap();
        assert_eq!(q.bytes(), 5);
        // Six bytes never fit, even in an empty queue: a producer must not wait for room.
        let mut empty = ByLen::new(Limits::items(10).with_bytes(5));
        let r = empty.push(v("abcdef")).unwrap_err();
        assert_eq!(r.reason, Refusal::Oversized { weight: 6, limit: 5 });
        assert!(!r.reason.is_full());
        assert_eq!(r.reason.to_string(), "6 bytes never fit in a queue of at most 5 bytes");
        assert!(empty.is_empty() && empty.capacity() == 0);
        empty.push(v("a")).unwrap();
        assert!(!empty.pop().unwrap().wake_producer, "an oversized item is not waited for");
    }

    #[test]
    fn weightless_items_ignore_a_zero_byte_limit() {
        let mut q = BoundedQueue::<u8, Weightless>::new(Limits::items(3).with_bytes(0));
        for i in 0..3 {
            q.push(i).unwrap();
        }
        assert_eq!(q.push(9).unwrap_err().reason, Refusal::FullItems { limit: 3 });
    }

    #[test]
    fn an_item_limit_of_zero_is_one() {
        let mut q = BoundedQueue::<u8, Weightless>::new(Limits { items: 0, bytes: usize::MAX });
        assert_eq!(q.limits().items, 1);
        q.push(1).unwrap();
        assert_eq!(q.push(2).unwrap_err().reason, Refusal::FullItems { limit: 1 });
    }

    #[test]
    fn close_hands_back_what_waited_and_refuses_later_pushes() {
        let mut q = ByLen::new(Limits::items(1));
        q.push(v("a")).unwrap();
        let _ = q.push(v("b")).unwrap_err();
        assert_eq!(q.close(), [v("a")]);
        assert!(q.is_closed() && q.is_empty() && q.bytes() == 0 && q.capacity() == 0);
        let r = q.push(v("c")).unwrap_err();
        assert_eq!((r.item, r.reason), (v("c"), Refusal::Closed));
        assert!(!r.reason.is_full());
        assert!(q.close().is_empty());
        assert!(q.append(vec![v("d")]).is_err());
    }

    #[test]
    fn append_is_all_or_nothing() {
        let mut q = ByLen::new(Limits::items(3).with_bytes(6));
        q.push(v("a")).unwrap();
        let r = q.append(vec![v("b"), v("c"), v("d")]).unwrap_err();
        assert_eq!(r.reason, Refusal::FullItems { limit: 3 });
        assert_eq!(r.item.len(), 3);
        let r = q.append(vec![v("b"); 4]).unwrap_err();
        assert_eq!(r.reason, Refusal::TooMany { count: 4, limit: 3 });
        assert!(!r.reason.is_full());
        assert_eq!(r.reason.to_string(), "a batch of 4 items never fits in a queue of at most 3 items");
        let r = q.append(vec![v("bbb"), v("ccc")]).unwrap_err();
        assert_eq!(r.reason, Refusal::FullBytes { queued: 1, weight: 6, limit: 6 });
        assert_eq!(q.len(), 1, "nothing of a refused batch is queued");
        assert_eq!(q.append(vec![v("bb"), v("cc")]).unwrap(), Pushed::Quiet);
        assert_eq!(q.iter().cloned().collect::<Vec<_>>(), [v("a"), v("bb"), v("cc")]);
        assert_eq!(q.bytes(), 5);
        // An empty batch changes nothing and wakes nobody, even on an empty queue.
        let mut e = ByLen::new(Limits::UNBOUNDED);
        assert_eq!(e.append(Vec::new()).unwrap(), Pushed::Quiet);
        assert_eq!(e.append(vec![v("x")]).unwrap(), Pushed::Wake);
    }

    #[test]
    fn drain_takes_everything_in_order_and_leaves_the_queue_open() {
        let mut q = BoundedQueue::<u32, Weightless>::new(Limits::items(2));
        q.push(1).unwrap();
        q.push(2).unwrap();
        let _ = q.push(3).unwrap_err();
        let d = q.drain();
        assert_eq!((Vec::from(d.items), d.wake_producer), (vec![1, 2], true));
        assert!(q.capacity() == 0 && !q.is_closed());
        assert_eq!(q.push(3).unwrap(), Pushed::Wake);
        let d = q.drain();
        assert!(!d.wake_producer);
    }

    #[test]
    fn memory_is_freed_after_a_burst_and_when_idle() {
        let mut q = BoundedQueue::<u64, Weightless>::new(Limits::UNBOUNDED);
        assert_eq!(q.capacity(), 0, "a new queue allocates nothing");
        for i in 0..1000 {
            q.push(i).unwrap();
        }
        while q.pop().is_some() {}
        assert_eq!(q.capacity(), 0, "a burst's capacity is freed when the queue runs empty");
        // A small queue keeps its few slots through pops...
        q.push(1).unwrap();
        q.pop().unwrap();
        assert!(q.capacity() > 0 && q.capacity() <= KEEP_CAPACITY);
        // ...until the wrapper says the client is idle.
        q.release_idle();
        assert_eq!(q.capacity(), 0);
        // Release does nothing to a queue that holds items.
        q.push(7).unwrap();
        q.release_idle();
        assert_eq!(q.front(), Some(&7));
    }

    #[test]
    fn the_queue_is_small() {
        assert!(size_of::<BoundedQueue<u64, Weightless>>() <= 64);
    }
}
