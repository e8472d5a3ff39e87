//! What the delivery-core fuzz target runs, and what it checks: random operation sequences on
//! each state machine of `gw-delivery`, checked after every operation against a plain model and
//! the invariants of the delivery rules (nothing lost, no duplicate outside a declared
//! redelivery, FIFO / order per client, limits never exceeded, byte accounting exact, the
//! watermark only moves forward, a replay exact or an explicit gap).
//!
//! Shared word for word with the crate's property tests (`delivery/tests/properties.rs`, which
//! generates the operations with proptest) and its stable replay test
//! (`delivery/tests/fuzz_corpus.rs`); both include this file with `#[path]`. Depends only on
//! `gw-delivery`. Like the other targets, [`run`] returns the most heap the input may make the
//! code hold: a settled range of any length must cost one entry, not one per number.

use std::collections::{BTreeMap, VecDeque};

use gw_delivery::{
    AckWatermark, Deadlines, KEEP_CAPACITY, Limits, Marked, Pushed, Refusal, ReplayBuffer, ReplayCaps, ReplayError,
    RetentionLog, Weigher,
};

/// Names of the targets in this file, which are also the corpus directories they own.
pub const TARGETS: [&str; 1] = ["delivery"];

/// Heap the scaffolding may use, and per input byte (each byte is at most one operation, and an
/// operation leaves at most a few small entries in a machine and its model).
const SLACK: usize = 64 * 1024;
const PER_BYTE: usize = 1024;

/// Runs the target `name` on `data`; `None` if the name is not one of [`TARGETS`].
pub fn run(name: &str, data: &[u8]) -> Option<usize> {
    match name {
        "delivery" => Some(delivery(data)),
        _ => None,
    }
}

/// Decodes `data` as an operation sequence for each of the five machines in turn and checks it.
pub fn delivery(data: &[u8]) -> usize {
    check_queue(&QueueCase::decode(data));
    check_log(&LogCase::decode(data));
    check_watermark(&WatermarkCase::decode(data));
    check_replay(&ReplayCase::decode(data));
    check_deadlines(&DeadlinesCase::decode(data));
    SLACK + PER_BYTE * data.len()
}

/// Reads bytes as small numbers; zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    /// A small number, or `u64::MAX` for 255 (the far edge every counter must survive).
    fn number(&mut self) -> u64 {
        match self.byte() {
            255 => u64::MAX,
            b => u64::from(b),
        }
    }

    /// `None` (no limit) for a multiple of 4, else `b / 4` (0 to 63).
    fn limit(&mut self) -> Option<usize> {
        let b = self.byte();
        (!b.is_multiple_of(4)).then_some(usize::from(b / 4))
    }
}

/// Most operations decoded from one input, so that a long input stays quick.
const MAX_OPS: usize = 4096;

// ---------------------------------------------------------------------------------------------
// BoundedQueue

/// A queued item: its identity (to check order, loss and duplicates) and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Unique per case, in push order.
    pub id: u64,
    /// Bytes it counts for.
    pub weight: usize,
}

/// Weighs an [`Item`] by its `weight`.
#[derive(Debug)]
pub struct ItemWeight;

impl Weigher<Item> for ItemWeight {
    fn weight(item: &Item) -> usize {
        item.weight
    }
}

/// One operation on a [`gw_delivery::BoundedQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOp {
    /// Push an item of this weight.
    Push(usize),
    /// Append a batch of items of these weights.
    Append(Vec<usize>),
    /// Pop one.
    Pop,
    /// Take everything.
    Drain,
    /// Close.
    Close,
    /// Free an idle queue's memory.
    ReleaseIdle,
}

/// Limits (`None`: no limit) and operations for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCase {
    /// Item limit.
    pub items: Option<usize>,
    /// Byte limit.
    pub bytes: Option<usize>,
    /// What happens to the queue.
    pub ops: Vec<QueueOp>,
}

impl QueueCase {
    /// Reads a case from fuzzer bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input(data);
        let items = match input.byte() % 9 {
            0 => None,
            n => Some(usize::from(n)),
        };
        let bytes = input.limit();
        let mut ops = Vec::new();
        while let Some(b) = input.next() {
            ops.push(match b % 16 {
                0..=5 => QueueOp::Push(usize::from(input.byte() % 40)),
                6..=9 | 14 => QueueOp::Pop,
                10 | 11 => {
                    let n = input.byte() % 5;
                    QueueOp::Append((0..n).map(|_| usize::from(input.byte() % 20)).collect())
                }
                12 => QueueOp::Drain,
                13 => QueueOp::ReleaseIdle,
                _ => QueueOp::Close,
            });
            if ops.len() == MAX_OPS {
                break;
            }
        }
        Self { items, bytes, ops }
    }
}

/// Runs a queue case against a model: the items in order, and whether someone was refused for
/// lack of room and not yet told of room.
pub fn check_queue(case: &QueueCase) {
    let limits = Limits { items: case.items.unwrap_or(usize::MAX), bytes: case.bytes.unwrap_or(usize::MAX) };
    let mut q: gw_delivery::BoundedQueue<Item, ItemWeight> = gw_delivery::BoundedQueue::new(limits);
    let limits = q.limits();
    assert!(limits.items >= 1);
    let mut model: VecDeque<Item> = VecDeque::new();
    let mut closed = false;
    let mut refused_for_room = false;
    let mut next_id = 0u64;
    // Every id accepted, in order, and every id that came out (or was given back), in order.
    let mut accepted: Vec<u64> = Vec::new();
    let mut out: Vec<u64> = Vec::new();
    let mut given_back: Vec<u64> = Vec::new();
    let mut new_item = |weight| {
        next_id += 1;
        Item { id: next_id, weight }
    };
    let expected_refusal = |model: &VecDeque<Item>, closed: bool, count: usize, weight: usize| {
        let queued: usize = model.iter().map(|i| i.weight).sum();
        if closed {
            Some(Refusal::Closed)
        } else if weight > limits.bytes {
            Some(Refusal::Oversized { weight, limit: limits.bytes })
        } else if count > limits.items {
            Some(Refusal::TooMany { count, limit: limits.items })
        } else if model.len() + count > limits.items {
            Some(Refusal::FullItems { limit: limits.items })
        } else if queued + weight > limits.bytes {
            Some(Refusal::FullBytes { queued, weight, limit: limits.bytes })
        } else {
            None
        }
    };
    for op in &case.ops {
        match op {
            QueueOp::Push(weight) => {
                let item = new_item(*weight);
                let expected = expected_refusal(&model, closed, 1, *weight);
                match q.push(item.clone()) {
                    Ok(pushed) => {
                        assert_eq!(expected, None, "{op:?} accepted");
                        assert_eq!(pushed == Pushed::Wake, model.is_empty(), "wake iff it was empty");
                        accepted.push(item.id);
                        model.push_back(item);
                    }
                    Err(r) => {
                        assert_eq!(Some(r.reason), expected, "{op:?} refused");
                        assert_eq!(r.item, item, "the refused item comes back unchanged");
                        given_back.push(r.item.id);
                        refused_for_room |= r.reason.is_full();
                    }
                }
            }
            QueueOp::Append(weights) => {
                let batch: Vec<Item> = weights.iter().map(|w| new_item(*w)).collect();
                let weight = weights.iter().sum();
                let expected = expected_refusal(&model, closed, batch.len(), weight);
                match q.append(batch.clone()) {
                    Ok(pushed) => {
                        assert_eq!(expected, None, "{op:?} accepted");
                        assert_eq!(pushed == Pushed::Wake, model.is_empty() && !batch.is_empty());
                        accepted.extend(batch.iter().map(|i| i.id));
                        model.extend(batch);
                    }
                    Err(r) => {
                        assert_eq!(Some(r.reason), expected, "{op:?} refused");
                        assert_eq!(r.item, batch, "the refused batch comes back whole, in order");
                        given_back.extend(r.item.iter().map(|i| i.id));
                        refused_for_room |= r.reason.is_full();
                    }
                }
            }
            QueueOp::Pop => match q.pop() {
                Some(p) => {
                    assert_eq!(Some(&p.item), model.front(), "FIFO");
                    model.pop_front();
                    assert_eq!(p.wake_producer, std::mem::take(&mut refused_for_room), "producer woken iff refused");
                    out.push(p.item.id);
                    if model.is_empty() {
                        assert!(q.capacity() <= KEEP_CAPACITY, "a queue run empty keeps at most {KEEP_CAPACITY} slots");
                    }
                }
                None => assert!(model.is_empty(), "pop found nothing with {} queued", model.len()),
            },
            QueueOp::Drain => {
                let d = q.drain();
                assert_eq!(d.items, model, "drain takes everything in order");
                let wake = !model.is_empty() && std::mem::take(&mut refused_for_room);
                assert_eq!(d.wake_producer, wake);
                out.extend(model.drain(..).map(|i| i.id));
                assert_eq!(q.capacity(), 0);
            }
            QueueOp::Close => {
                let back = q.close();
                assert_eq!(back, model, "close hands back everything in order");
                out.extend(model.drain(..).map(|i| i.id));
                closed = true;
                refused_for_room = false;
                assert_eq!(q.capacity(), 0);
            }
            QueueOp::ReleaseIdle => {
                let before = q.capacity();
                q.release_idle();
                if model.is_empty() {
                    assert_eq!(q.capacity(), 0, "an idle queue holds no memory");
                } else {
                    assert_eq!(q.capacity(), before, "release leaves a busy queue alone");
                }
            }
        }
        // After every operation: the queue is the model, within its limits, bytes exact.
        assert_eq!(q.len(), model.len());
        assert!(q.iter().eq(model.iter()), "contents and order");
        assert_eq!(q.bytes(), model.iter().map(|i| i.weight).sum::<usize>(), "byte accounting");
        assert!(q.len() <= limits.items && q.bytes() <= limits.bytes, "limits");
        assert_eq!(q.is_closed(), closed);
    }
    // Nothing lost, nothing duplicated, FIFO: what was accepted comes out (or waits) in the order
    // it went in; every item is either accepted or given back, exactly once.
    out.extend(model.iter().map(|i| i.id));
    assert_eq!(out, accepted, "accepted items out of order, lost or duplicated");
    let mut all: Vec<u64> = accepted.iter().chain(&given_back).copied().collect();
    all.sort_unstable();
    assert!(all.iter().copied().eq(1..=next_id), "every item accepted or given back exactly once");
}

// ---------------------------------------------------------------------------------------------
// RetentionLog

/// One operation on a [`RetentionLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// Send (push) an event.
    Push,
    /// The worker acknowledges up to this seq.
    Ack(u64),
    /// The link drains.
    Seal,
    /// The link is gone.
    TakeAll,
}

/// Operations on one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCase {
    /// What happens to the log.
    pub ops: Vec<LogOp>,
}

impl LogCase {
    /// Reads a case from fuzzer bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input(data);
        let mut ops = Vec::new();
        while let Some(b) = input.next() {
            ops.push(match b % 16 {
                0..=7 => LogOp::Push,
                8..=12 => LogOp::Ack(input.number()),
                13 => LogOp::Seal,
                _ => LogOp::TakeAll,
            });
            if ops.len() == MAX_OPS {
                break;
            }
        }
        Self { ops }
    }
}

/// Runs a log case. Events are their own ids (1, 2, … in push order); each ends exactly once as
/// refused, released by an ack, handed back, or still retained.
pub fn check_log(case: &LogCase) {
    let mut log: RetentionLog<u64> = RetentionLog::new();
    let mut retained: VecDeque<(u64, u64)> = VecDeque::new();
    let (mut last_seq, mut watermark, mut sealed, mut next_id) = (0u64, 0u64, false, 0u64);
    let mut fates: BTreeMap<u64, &str> = BTreeMap::new();
    for op in &case.ops {
        let watermark_before = log.watermark();
        match op {
            LogOp::Push => {
                next_id += 1;
                assert_eq!(log.next_seq(), last_seq + 1);
                match log.push(next_id) {
                    Ok(seq) => {
                        assert!(!sealed, "a sealed log took an event");
                        assert_eq!(seq, last_seq + 1, "seqs rise by one");
                        last_seq = seq;
                        retained.push_back((seq, next_id));
                    }
                    Err(gw_delivery::Sealed(back)) => {
                        assert!(sealed, "an open log refused an event");
                        assert_eq!(back, next_id);
                        fates.insert(back, "refused");
                    }
                }
            }
            LogOp::Ack(seq) => match log.ack(*seq) {
                Ok(acked) => {
                    assert!(*seq <= last_seq, "an ack past the last seq sent was taken");
                    assert_eq!(acked.moved, *seq > watermark);
                    let mut released = 0;
                    while retained.front().is_some_and(|(s, _)| s <= seq) {
                        let (_, id) = retained.pop_front().unwrap();
                        assert!(fates.insert(id, "acked").is_none(), "event {id} ended twice");
                        released += 1;
                    }
                    assert_eq!(acked.released, released);
                    watermark = watermark.max(*seq);
                }
                Err(e) => {
                    assert!(*seq > last_seq, "a valid ack was refused: {e}");
                    assert_eq!((e.acked, e.last_sent), (*seq, last_seq));
                }
            },
            LogOp::Seal => {
                log.seal();
                sealed = true;
            }
            LogOp::TakeAll => {
                let back = log.take_all();
                assert_eq!(back.first_seq, retained.front().map_or(last_seq + 1, |(s, _)| *s));
                assert!(back.events.iter().eq(retained.iter().map(|(_, id)| id)), "handed back in order");
                for (_, id) in retained.drain(..) {
                    assert!(fates.insert(id, "handed back").is_none(), "event {id} ended twice");
                }
                sealed = true;
            }
        }
        assert!(log.watermark() >= watermark_before, "the watermark went back");
        assert!(log.watermark() <= log.last_seq(), "the watermark passed what was sent");
        assert_eq!((log.watermark(), log.last_seq(), log.is_sealed()), (watermark, last_seq, sealed));
        assert!(log.iter().map(|(s, e)| (s, *e)).eq(retained.iter().copied()), "retained events and their seqs");
        assert_eq!(log.len(), retained.len());
        if !retained.is_empty() && !sealed {
            assert_eq!(retained[0].0, watermark + 1, "an open log retains exactly what is above the watermark");
        }
    }
    // Nothing lost: every event refused, acknowledged, handed back or still retained, once.
    for (_, id) in &retained {
        assert!(fates.insert(*id, "retained").is_none(), "event {id} ended twice");
    }
    assert!(fates.keys().copied().eq(1..=next_id), "an event was lost");
}

// ---------------------------------------------------------------------------------------------
// AckWatermark

/// One operation on an [`AckWatermark`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkOp {
    /// Event handled.
    Handled(u64),
    /// Events settled without handling.
    Settle(u64, u64),
    /// Event arrived on the link.
    Arrived(u64),
    /// The ack sender takes the watermark.
    Take,
}

/// Operations on one watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkCase {
    /// What happens.
    pub ops: Vec<WatermarkOp>,
}

impl WatermarkCase {
    /// Reads a case from fuzzer bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input(data);
        let mut ops = Vec::new();
        while let Some(b) = input.next() {
            ops.push(match b % 8 {
                0..=3 => WatermarkOp::Handled(input.number()),
                4 => {
                    let lo = input.number();
                    WatermarkOp::Settle(lo, lo.saturating_add(input.number()))
                }
                5 => WatermarkOp::Arrived(input.number()),
                6 => WatermarkOp::Take,
                // Somewhere far away, then back: runs must merge across any distance.
                _ => WatermarkOp::Handled(u64::MAX - input.number()),
            });
            if ops.len() == MAX_OPS {
                break;
            }
        }
        Self { ops }
    }
}

/// The model of done events: sorted, disjoint, non-adjacent runs, rebuilt by sorting and merging
/// after every mark (simple rather than fast, and independent of the machine's algorithm).
#[derive(Debug, Default)]
struct Runs(Vec<(u64, u64)>);

impl Runs {
    fn add(&mut self, lo: u64, hi: u64) {
        self.0.push((lo, hi));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if last.1.saturating_add(1) >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// Whether every seq in `lo..=hi` is done (runs are merged, so one run must hold them all).
    fn covers(&self, lo: u64, hi: u64) -> bool {
        self.0.iter().any(|&(s, e)| s <= lo && hi <= e)
    }

    /// The highest `k` with `1..=k` done.
    fn watermark(&self) -> u64 {
        match self.0.first() {
            Some(&(1, e)) => e,
            _ => 0,
        }
    }
}

/// Runs a watermark case against the model.
pub fn check_watermark(case: &WatermarkCase) {
    let mut w = AckWatermark::new();
    let mut runs = Runs::default();
    let (mut sent, mut last_arrived, mut taken) = (0u64, 0u64, Vec::new());
    let mark = |runs: &mut Runs, lo: u64, hi: u64, marked: Marked| {
        let lo = lo.max(1);
        let before = runs.watermark();
        let was_covered = lo > hi || runs.covers(lo, hi);
        if lo <= hi {
            runs.add(lo, hi);
        }
        let expected = if runs.watermark() > before {
            Marked::Advanced
        } else if was_covered {
            Marked::Again
        } else {
            Marked::Waiting
        };
        assert_eq!(marked, expected, "marking {lo}..={hi}");
    };
    for op in &case.ops {
        let before = w.watermark();
        match *op {
            WatermarkOp::Handled(seq) => {
                let m = w.handled(seq);
                mark(&mut runs, seq, seq, m);
            }
            WatermarkOp::Settle(lo, hi) => {
                let m = w.settle(lo..=hi);
                mark(&mut runs, lo, hi, m);
            }
            WatermarkOp::Arrived(seq) => match w.arrived(seq) {
                Ok(skipped) => {
                    assert!(seq > last_arrived, "arrival {seq} after {last_arrived} taken");
                    let gap = (last_arrived + 1, seq - 1);
                    last_arrived = seq;
                    match skipped {
                        Some(s) => {
                            assert_eq!((*s.seqs.start(), *s.seqs.end()), gap);
                            mark(&mut runs, gap.0, gap.1, s.marked);
                        }
                        None => assert!(gap.0 > gap.1, "skipped {gap:?} not reported"),
                    }
                }
                Err(e) => {
                    assert!(seq <= last_arrived, "arrival {seq} after {last_arrived} refused");
                    assert_eq!((e.seq, e.last), (seq, last_arrived));
                }
            },
            WatermarkOp::Take => {
                let expected = (w.watermark() > sent).then_some(w.watermark());
                assert_eq!(w.take(), expected);
                if let Some(t) = expected {
                    sent = t;
                    taken.push(t);
                }
            }
        }
        let k = runs.watermark();
        assert!(w.watermark() >= before, "the watermark went back");
        assert_eq!(w.watermark(), k, "watermark");
        let above = runs.0.iter().filter(|(s, _)| *s > 1).count();
        assert_eq!(w.waiting_for(), (above > 0).then(|| k + 1), "waiting_for");
        assert_eq!(w.runs_above(), above, "one entry per run of done events above the watermark");
        for probe in [0, 1, 2, 3, 5, 8, 13, k, k.saturating_add(1), k.saturating_add(2), u64::MAX] {
            assert_eq!(w.is_done(probe), probe >= 1 && runs.covers(probe, probe), "is_done({probe})");
        }
    }
    // What the sender sent rises strictly: each watermark acknowledged once.
    assert!(taken.windows(2).all(|p| p[0] < p[1]), "acks not rising: {taken:?}");
}

// ---------------------------------------------------------------------------------------------
// ReplayBuffer

/// One operation on a [`ReplayBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOp {
    /// A message of this weight is written to the client.
    Record(usize),
    /// The client says it received this many.
    Ack(u64),
    /// The client reconnects saying it received this many.
    Replay(u64),
}

/// Caps (`None`: no cap) and operations for one client's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCase {
    /// Message cap.
    pub messages: Option<usize>,
    /// Byte cap.
    pub bytes: Option<usize>,
    /// What happens.
    pub ops: Vec<ReplayOp>,
}

impl ReplayCase {
    /// Reads a case from fuzzer bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input(data);
        let messages = match input.byte() % 10 {
            9 => None,
            n => Some(usize::from(n)),
        };
        let bytes = input.limit();
        let mut ops = Vec::new();
        while let Some(b) = input.next() {
            ops.push(match b % 8 {
                0..=3 => ReplayOp::Record(usize::from(input.byte() % 30)),
                4 | 5 => ReplayOp::Ack(input.number()),
                _ => ReplayOp::Replay(input.number()),
            });
            if ops.len() == MAX_OPS {
                break;
            }
        }
        Self { messages, bytes, ops }
    }
}

/// What became of a recorded message, in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    Acked,
    Dropped,
}

/// Runs a replay case against a model holding every message ever recorded and its fate.
pub fn check_replay(case: &ReplayCase) {
    let caps = ReplayCaps { messages: case.messages.unwrap_or(usize::MAX), bytes: case.bytes.unwrap_or(usize::MAX) };
    let mut buf: ReplayBuffer<Item, ItemWeight> = ReplayBuffer::new();
    // Message n is `all[n - 1]`.
    let mut all: Vec<(Item, Fate)> = Vec::new();
    let mut acked = 0u64;
    for op in &case.ops {
        let first_before = buf.first_kept();
        match *op {
            ReplayOp::Record(weight) => {
                let n = all.len() as u64 + 1;
                let rec = buf.record(Item { id: n, weight }, &caps);
                assert_eq!(rec.n, n, "messages numbered 1, 2, …");
                all.push((Item { id: n, weight }, Fate::Kept));
                // What the caps dropped: the oldest kept ones, and only as many as needed.
                let first = buf.first_kept();
                let dropped: Vec<usize> = (first_before..first).map(|m| all[m as usize - 1].0.weight).collect();
                assert_eq!((rec.dropped.messages, rec.dropped.bytes), (dropped.len(), dropped.iter().sum()));
                for m in first_before..first {
                    all[m as usize - 1].1 = Fate::Dropped;
                }
                if !dropped.is_empty() {
                    let last_dropped = all[first as usize - 2].0.weight;
                    assert!(
                        buf.len() + 1 > caps.messages || buf.bytes() + last_dropped > caps.bytes,
                        "dropped more than the caps needed"
                    );
                }
            }
            ReplayOp::Ack(received) => match buf.ack(received) {
                Ok(trimmed) => {
                    assert!(received <= all.len() as u64, "an ack past what was written was taken");
                    let mut expected = (0, 0);
                    if received > acked {
                        for (item, fate) in &mut all[..received as usize] {
                            if *fate == Fate::Kept {
                                *fate = Fate::Acked;
                                expected.0 += 1;
                                expected.1 += item.weight;
                            }
                        }
                        acked = received;
                    }
                    assert_eq!((trimmed.messages, trimmed.bytes), expected, "ack({received}) trimmed");
                }
                Err(e) => {
                    assert_eq!(e, ReplayError::Ahead { received, written: all.len() as u64 });
                }
            },
            ReplayOp::Replay(received) => {
                let written = all.len() as u64;
                let expected = if received > written {
                    Err(ReplayError::Ahead { received, written })
                } else if received < acked {
                    Err(ReplayError::BehindAck { received, acked })
                } else {
                    let wanted = &all[received as usize..];
                    match wanted.iter().rposition(|(_, f)| *f != Fate::Kept) {
                        // Above the ack, nothing is trimmed by an ack: a missing message was
                        // dropped by the caps, and so was every one before it in the range.
                        Some(i) => {
                            assert!(wanted[..=i].iter().all(|(_, f)| *f == Fate::Dropped));
                            Err(ReplayError::Gap { missing: received + 1..=received + 1 + i as u64 })
                        }
                        None => Ok(wanted.iter().map(|(item, _)| item.clone()).collect::<Vec<_>>()),
                    }
                };
                let got = buf.replay_after(received).map(|r| r.cloned().collect::<Vec<_>>());
                assert_eq!(got, expected, "replay after {received}");
            }
        }
        // After every operation: the kept messages are the model's, a run up to the last one
        // written, within the caps, bytes exact.
        let kept: Vec<&Item> = all.iter().filter(|(_, f)| *f == Fate::Kept).map(|(i, _)| i).collect();
        assert_eq!(buf.written(), all.len() as u64);
        assert_eq!(buf.acked(), acked);
        assert_eq!(buf.len(), kept.len());
        assert_eq!(buf.first_kept(), all.len() as u64 + 1 - kept.len() as u64, "kept messages are a suffix");
        assert_eq!(buf.bytes(), kept.iter().map(|i| i.weight).sum::<usize>(), "byte accounting");
        assert!(buf.len() <= caps.messages && buf.bytes() <= caps.bytes, "caps");
        if buf.is_empty() {
            assert_eq!(buf.capacity(), 0, "an empty buffer holds no memory");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines

/// One operation on [`Deadlines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlinesOp {
    /// Hold `key` until `at`.
    Insert(u8, u64),
    /// `key` resumed.
    Remove(u8),
    /// The timer fired at `now`.
    Expired(u64),
}

/// Operations on one timer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlinesCase {
    /// What happens.
    pub ops: Vec<DeadlinesOp>,
}

impl DeadlinesCase {
    /// Reads a case from fuzzer bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input(data);
        let mut ops = Vec::new();
        while let Some(b) = input.next() {
            ops.push(match b % 8 {
                0..=3 => DeadlinesOp::Insert(input.byte() % 16, input.number()),
                4 | 5 => DeadlinesOp::Remove(input.byte() % 16),
                _ => DeadlinesOp::Expired(input.number()),
            });
            if ops.len() == MAX_OPS {
                break;
            }
        }
        Self { ops }
    }
}

/// Runs a deadlines case against a plain map.
pub fn check_deadlines(case: &DeadlinesCase) {
    let mut d: Deadlines<u8, u64> = Deadlines::new();
    let mut model: BTreeMap<u8, u64> = BTreeMap::new();
    for op in &case.ops {
        match *op {
            DeadlinesOp::Insert(key, at) => assert_eq!(d.insert(key, at), model.insert(key, at)),
            DeadlinesOp::Remove(key) => assert_eq!(d.remove(&key), model.remove(&key)),
            DeadlinesOp::Expired(now) => {
                let mut due: Vec<(u64, u8)> =
                    model.iter().filter(|(_, at)| **at <= now).map(|(k, at)| (*at, *k)).collect();
                due.sort_unstable();
                for (_, k) in &due {
                    model.remove(k);
                }
                assert_eq!(d.expired(now), due.into_iter().map(|(_, k)| k).collect::<Vec<_>>(), "expired at {now}");
            }
        }
        assert_eq!(d.len(), model.len());
        assert_eq!(d.next_deadline(), model.values().min().copied());
        for key in 0..16 {
            assert_eq!(d.deadline(&key), model.get(&key).copied());
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Seed inputs: for each machine, one input that decodes to its case of [`SeedCases`] (the other
/// machines read the same bytes their own way), and one with every byte value.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let cases = SeedCases::new();
    let mut out = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| out.push(("delivery", format!("seed-{name}"), data));
    add("queue", cases.queue.encode());
    add("log", cases.log.encode());
    add("watermark", cases.watermark.encode());
    add("replay", cases.replay.encode());
    add("deadlines", cases.deadlines.encode());
    add("all-bytes", (0..=255).collect());
    out
}

/// One chosen case per machine, written to reach its interesting paths.
#[derive(Debug)]
pub struct SeedCases {
    /// Queue case.
    pub queue: QueueCase,
    /// Log case.
    pub log: LogCase,
    /// Watermark case.
    pub watermark: WatermarkCase,
    /// Replay case.
    pub replay: ReplayCase,
    /// Deadlines case.
    pub deadlines: DeadlinesCase,
}

impl SeedCases {
    /// The cases.
    pub fn new() -> Self {
        use DeadlinesOp as D;
        use LogOp as L;
        use QueueOp as Q;
        use ReplayOp as R;
        use WatermarkOp as W;
        let far = u64::MAX;
        // Two items or 12 bytes: full by items, full by bytes, oversized, a batch too large, the
        // producer woken by a pop, drained, released, closed.
        let ops = vec![
            Q::Push(5),
            Q::Push(5),
            Q::Push(1),
            Q::Pop,
            Q::Push(8),
            Q::Push(20),
            Q::Append(vec![1, 1, 1]),
            Q::Pop,
            Q::Append(vec![2, 3]),
            Q::Drain,
            Q::ReleaseIdle,
            Q::Push(4),
            Q::Close,
            Q::Push(1),
        ];
        let queue = QueueCase { items: Some(2), bytes: Some(12), ops };
        // Acks in order, stale, past the end; the link drains, then dies; a late ack.
        let ops = vec![
            L::Push,
            L::Push,
            L::Push,
            L::Ack(1),
            L::Ack(1),
            L::Ack(4),
            L::Ack(far),
            L::Push,
            L::Ack(3),
            L::Seal,
            L::Push,
            L::TakeAll,
            L::Ack(4),
            L::Push,
        ];
        let log = LogCase { ops };
        // Out of order completion, a stale repeat, a settled range, arrivals with a gap and out of
        // order, the far edge.
        let ops = vec![
            W::Arrived(1),
            W::Arrived(2),
            W::Arrived(4),
            W::Handled(2),
            W::Take,
            W::Handled(1),
            W::Take,
            W::Handled(2),
            W::Arrived(3),
            W::Handled(10),
            W::Settle(5, 9),
            W::Handled(4),
            W::Take,
            W::Handled(far),
            W::Settle(11, 200),
            W::Take,
        ];
        let watermark = WatermarkCase { ops };
        // Three messages or 10 bytes: replays exact, behind the ack, ahead, and into a gap left by
        // each cap; a message over the byte cap alone.
        let ops = vec![
            R::Record(3),
            R::Record(3),
            R::Replay(0),
            R::Ack(1),
            R::Replay(0),
            R::Replay(1),
            R::Record(3),
            R::Record(3),
            R::Replay(1),
            R::Replay(2),
            R::Record(1),
            R::Replay(2),
            R::Record(12),
            R::Replay(5),
            R::Replay(6),
            R::Replay(7),
            R::Ack(far),
            R::Ack(6),
            R::Replay(6),
        ];
        let replay = ReplayCase { messages: Some(3), bytes: Some(10), ops };
        // Ties, a re-arm, a removal, expiries before, at and after deadlines.
        let ops = vec![
            D::Insert(3, 10),
            D::Insert(1, 10),
            D::Insert(2, 5),
            D::Insert(2, 30),
            D::Insert(4, far),
            D::Expired(4),
            D::Remove(1),
            D::Remove(1),
            D::Expired(10),
            D::Insert(5, 0),
            D::Expired(30),
            D::Expired(far),
        ];
        let deadlines = DeadlinesCase { ops };
        Self { queue, log, watermark, replay, deadlines }
    }
}

/// A number as [`Input::number`] reads it.
fn number_byte(n: u64) -> u8 {
    match n {
        u64::MAX => 255,
        n => u8::try_from(n).ok().filter(|b| *b < 255).expect("a number the fuzz input can hold"),
    }
}

/// A limit as [`Input::limit`] reads it.
fn limit_byte(limit: Option<usize>) -> u8 {
    limit.map_or(0, |b| u8::try_from(b * 4 + 1).expect("a limit the fuzz input can hold"))
}

fn small(n: usize) -> u8 {
    u8::try_from(n).expect("a value the fuzz input can hold")
}

impl QueueCase {
    /// The bytes that [`decode`](Self::decode) reads as this case (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![small(self.items.unwrap_or(0)), limit_byte(self.bytes)];
        for op in &self.ops {
            match op {
                QueueOp::Push(w) => out.extend([0, small(*w)]),
                QueueOp::Pop => out.push(6),
                QueueOp::Append(ws) => {
                    out.extend([10, small(ws.len())]);
                    out.extend(ws.iter().map(|w| small(*w)));
                }
                QueueOp::Drain => out.push(12),
                QueueOp::ReleaseIdle => out.push(13),
                QueueOp::Close => out.push(15),
            }
        }
        out
    }
}

impl LogCase {
    /// The bytes that [`decode`](Self::decode) reads as this case (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                LogOp::Push => out.push(0),
                LogOp::Ack(n) => out.extend([8, number_byte(*n)]),
                LogOp::Seal => out.push(13),
                LogOp::TakeAll => out.push(14),
            }
        }
        out
    }
}

impl WatermarkCase {
    /// The bytes that [`decode`](Self::decode) reads as this case (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &self.ops {
            match *op {
                WatermarkOp::Handled(n) => out.extend([0, number_byte(n)]),
                WatermarkOp::Settle(lo, hi) => out.extend([4, number_byte(lo), number_byte(hi - lo)]),
                WatermarkOp::Arrived(n) => out.extend([5, number_byte(n)]),
                WatermarkOp::Take => out.push(6),
            }
        }
        out
    }
}

impl ReplayCase {
    /// The bytes that [`decode`](Self::decode) reads as this case (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![small(self.messages.unwrap_or(9)), limit_byte(self.bytes)];
        for op in &self.ops {
            match *op {
                ReplayOp::Record(w) => out.extend([0, small(w)]),
                ReplayOp::Ack(n) => out.extend([4, number_byte(n)]),
                ReplayOp::Replay(n) => out.extend([6, number_byte(n)]),
            }
        }
        out
    }
}

impl DeadlinesCase {
    /// The bytes that [`decode`](Self::decode) reads as this case (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &self.ops {
            match *op {
                DeadlinesOp::Insert(k, at) => out.extend([0, k, number_byte(at)]),
                DeadlinesOp::Remove(k) => out.extend([4, k]),
                DeadlinesOp::Expired(now) => out.extend([6, number_byte(now)]),
            }
        }
        out
    }
}
