//! The worker's side of acknowledgement: which events of one gateway link are done, and the
//! single cumulative number that tells the gateway so.
//!
//! Clients' events finish out of order (each client has its own task), so the watermark is the
//! highest `k` such that every event numbered `1..=k` is done; the gateway keeps every event
//! above it and hands them to another worker if this one dies. "Done" is either handled, or
//! settled: declared finished without being handled, so that one event that can never be handled
//! (or never arrives) cannot hold the watermark back forever (issue 26, item 1: one unframeable
//! event stalled a link's acknowledgements and grew the gateway's retention without bound).
//!
//! Done events above the watermark are kept as runs (`start..=end`), not one by one: a settled
//! range costs one entry however long it is, and events handled nearly in order cost a few runs
//! however many they are.
//!
//! # Wiring
//!
//! Wired into `Acks` in `business-worker/src/acks.rs` (it replaced `AckState`): `Acks` keeps its
//! `Mutex` and the `moved` Notify (notified when [`handled`](AckWatermark::handled) returns
//! [`Marked::Advanced`]), `send_acks` and the link's last acknowledgement on close call
//! [`take`](AckWatermark::take).
//!
//! Not wired yet: [`arrived`](AckWatermark::arrived) and [`settle`](AckWatermark::settle). The
//! gateway drops an event too large for a frame before numbering it (`Binding::send`), so today no
//! number is skipped and every event that arrives is handled; the worker's link reader would
//! call `arrived` for each event in the order it reads them (a number skipped on arrival is an
//! event the gateway dropped after numbering it, which will never come and is settled at once:
//! log and count it), and an event the worker received but will not handle would be
//! `settle`d.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// What marking events done changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// The watermark moved: wake the acknowledgement sender.
    Advanced,
    /// Recorded, but a lower event is not done yet.
    Waiting,
    /// Nothing new: already done, or at or below the watermark.
    Again,
}

/// An event arrived out of order on a link that delivers in order: a bug on the sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} arrived out of order: the last event that arrived was {last}")]
pub struct ArrivalError {
    /// The sequence number that arrived.
    pub seq: u64,
    /// The highest one that arrived before it.
    pub last: u64,
}

/// Events skipped on arrival, settled by [`AckWatermark::arrived`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The skipped sequence numbers.
    pub seqs: RangeInclusive<u64>,
    /// What settling them changed.
    pub marked: Marked,
}

/// The done events of one link and the watermark to acknowledge.
///
/// # Examples
///
/// ```
/// use gw_delivery::{AckWatermark, Marked};
///
/// let mut acks = AckWatermark::new();
/// assert_eq!(acks.handled(2), Marked::Waiting); // 1 is not done yet
/// assert_eq!(acks.take(), None);
/// assert_eq!(acks.handled(1), Marked::Advanced);
/// assert_eq!(acks.take(), Some(2)); // send `Ack { seq: 2 }`
/// assert_eq!(acks.take(), None); // once
/// acks.handled(4);
/// acks.settle(3..=3); // 3 will never be handled
/// assert_eq!(acks.take(), Some(4));
/// ```
#[derive(Debug, Default)]
pub struct AckWatermark {
    /// Every event `1..=watermark` is done.
    watermark: u64,
    /// Done events above the watermark: disjoint, non-adjacent runs `start => end`, none starting
    /// at `watermark + 1` (such a run is folded into the watermark at once).
    above: BTreeMap<u64, u64>,
    /// The watermark last handed out by `take`.
    sent: u64,
    /// The highest sequence number that arrived.
    last_arrived: u64,
}

impl AckWatermark {
    /// Nothing done yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Event `seq` was handled. Repeats and numbers at or below the watermark (including 0,
    /// which no event has) are [`Marked::Again`].
    pub fn handled(&mut self, seq: u64) -> Marked {
        self.mark(seq, seq)
    }

    /// The events `seqs` are finished without being handled (they never arrived, or cannot be
    /// handled): they no longer hold the watermark back. Costs the same for any length.
    pub fn settle(&mut self, seqs: RangeInclusive<u64>) -> Marked {
        let (lo, hi) = seqs.into_inner();
        self.mark(lo, hi)
    }

    /// Event `seq` arrived on the link. Events arrive in sequence order, so numbers skipped since
    /// the last arrival will never come: they are settled, and returned for the caller to log
    /// and count. A number at or below the last arrival is an error and changes nothing.
    pub fn arrived(&mut self, seq: u64) -> Result<Option<Skipped>, ArrivalError> {
        if seq <= self.last_arrived {
            return Err(ArrivalError { seq, last: self.last_arrived });
        }
        let skipped = self.last_arrived + 1..=seq - 1;
        self.last_arrived = seq;
        if skipped.is_empty() {
            return Ok(None);
        }
        let marked = self.settle(skipped.clone());
        Ok(Some(Skipped { seqs: skipped, marked }))
    }

    /// Marks `lo..=hi` done.
    fn mark(&mut self, lo: u64, hi: u64) -> Marked {
        // Everything is done once the watermark is u64::MAX.
        let Some(floor) = self.watermark.checked_add(1) else { return Marked::Again };
        let mut lo = lo.max(floor);
        let mut hi = hi;
        if lo > hi {
            return Marked::Again;
        }
        // The run starting at or below `lo`: covers the range already, or touches it.
        if let Some((&start, &end)) = self.above.range(..=lo).next_back() {
            if end >= hi {
                return Marked::Again;
            }
            if end.saturating_add(1) >= lo {
                self.above.remove(&start);
                lo = start;
                hi = hi.max(end);
            }
        }
        // Runs starting inside the range or right after it are absorbed.
        while let Some((&start, &end)) = self.above.range(lo..=hi.saturating_add(1)).next() {
            self.above.remove(&start);
            hi = hi.max(end);
        }
        if lo == floor {
            self.watermark = hi;
            Marked::Advanced
        } else {
            self.above.insert(lo, hi);
            Marked::Waiting
        }
    }

    /// The watermark to acknowledge, if it moved since the last call.
    pub fn take(&mut self) -> Option<u64> {
        (self.watermark > self.sent).then(|| {
            self.sent = self.watermark;
            self.watermark
        })
    }

    /// Highest `k` with every event `1..=k` done; only ever rises.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// The event that holds the watermark back: the lowest one not done while a higher one is.
    pub fn waiting_for(&self) -> Option<u64> {
        (!self.above.is_empty()).then(|| self.watermark + 1)
    }

    /// Runs of done events above the watermark (what this costs in memory, in entries).
    pub fn runs_above(&self) -> usize {
        self.above.len()
    }

    /// Whether event `seq` is done (never for 0, which no event has).
    pub fn is_done(&self, seq: u64) -> bool {
        (1..=self.watermark).contains(&seq) || self.above.range(..=seq).next_back().is_some_and(|(_, &end)| end >= seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_over_out_of_order_completion() {
        // The case of business-worker/src/acks.rs, seq for seq.
        let mut a = AckWatermark::new();
        assert_eq!(a.handled(2), Marked::Waiting);
        assert_eq!(a.handled(3), Marked::Waiting);
        assert_eq!((a.take(), a.waiting_for(), a.runs_above()), (None, Some(1), 1));
        assert_eq!(a.handled(1), Marked::Advanced);
        assert_eq!((a.take(), a.take()), (Some(3), None));
        assert_eq!(a.handled(5), Marked::Waiting);
        assert_eq!(a.handled(4), Marked::Advanced);
        assert_eq!(a.take(), Some(5));
        assert_eq!(a.handled(2), Marked::Again, "a stale duplicate is ignored");
        assert_eq!(a.handled(0), Marked::Again, "no event is numbered 0");
        assert_eq!((a.take(), a.waiting_for(), a.runs_above()), (None, None, 0));
    }

    #[test]
    fn a_repeat_above_the_watermark_is_again() {
        let mut a = AckWatermark::new();
        a.handled(3);
        assert_eq!(a.handled(3), Marked::Again);
        assert!(a.is_done(3) && !a.is_done(2) && !a.is_done(4));
    }

    #[test]
    fn runs_merge_with_neighbours_on_both_sides() {
        let mut a = AckWatermark::new();
        a.handled(3);
        a.handled(7);
        a.handled(5);
        assert_eq!(a.runs_above(), 3);
        a.handled(4); // 3..=5
        assert_eq!(a.runs_above(), 2);
        a.handled(6); // 3..=7
        assert_eq!(a.runs_above(), 1);
        assert_eq!(a.settle(9..=12), Marked::Waiting);
        assert_eq!(a.settle(5..=10), Marked::Waiting, "overlaps both runs: 3..=12");
        assert_eq!(a.runs_above(), 1);
        assert_eq!(a.settle(4..=6), Marked::Again);
        assert_eq!(a.handled(2), Marked::Waiting);
        assert_eq!(a.handled(1), Marked::Advanced);
        assert_eq!(a.watermark(), 12);
    }

    #[test]
    fn a_settled_event_no_longer_holds_the_watermark_back() {
        let mut a = AckWatermark::new();
        for seq in 2..=1000 {
            a.handled(seq);
        }
        assert_eq!((a.take(), a.waiting_for(), a.runs_above()), (None, Some(1), 1));
        assert_eq!(a.settle(1..=1), Marked::Advanced);
        assert_eq!(a.take(), Some(1000));
    }

    #[test]
    fn huge_ranges_cost_one_entry() {
        let mut a = AckWatermark::new();
        assert_eq!(a.settle(10..=u64::MAX - 1), Marked::Waiting);
        assert_eq!(a.handled(u64::MAX), Marked::Waiting);
        assert_eq!(a.runs_above(), 1);
        assert_eq!(a.settle(1..=9), Marked::Advanced);
        assert_eq!(a.watermark(), u64::MAX);
        // Nothing more can be done once everything is.
        assert_eq!(a.handled(u64::MAX), Marked::Again);
        assert_eq!(a.settle(0..=u64::MAX), Marked::Again);
    }

    #[test]
    fn an_empty_range_settles_nothing() {
        let mut a = AckWatermark::new();
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 5..=4;
        assert_eq!(a.settle(empty), Marked::Again);
        assert_eq!(a.runs_above(), 0);
    }

    #[test]
    fn numbers_skipped_on_arrival_are_settled() {
        let mut a = AckWatermark::new();
        assert_eq!(a.arrived(1).unwrap(), None);
        assert_eq!(a.arrived(2).unwrap(), None);
        a.handled(1);
        a.handled(2);
        // 3 was dropped by the gateway after numbering: 4 arrives next.
        let skipped = a.arrived(4).unwrap().unwrap();
        assert_eq!(skipped, Skipped { seqs: 3..=3, marked: Marked::Advanced });
        assert_eq!(a.take(), Some(3));
        a.handled(4);
        assert_eq!(a.take(), Some(4));
        // Right after the watermark, a skip moves it.
        assert_eq!(a.arrived(7).unwrap().unwrap(), Skipped { seqs: 5..=6, marked: Marked::Advanced });
        assert_eq!(a.take(), Some(6));
        // Above an event not handled yet, a skip only records.
        a.arrived(8).unwrap();
        assert_eq!(a.arrived(10).unwrap().unwrap(), Skipped { seqs: 9..=9, marked: Marked::Waiting });
        assert_eq!(a.waiting_for(), Some(7));
        a.handled(8);
        a.handled(10);
        assert_eq!(a.handled(7), Marked::Advanced);
        assert_eq!(a.take(), Some(10));
    }

    #[test]
    fn an_arrival_out_of_order_is_an_error_and_changes_nothing() {
        let mut a = AckWatermark::new();
        a.arrived(3).unwrap();
        let e = a.arrived(3).unwrap_err();
        assert_eq!(e, ArrivalError { seq: 3, last: 3 });
        assert_eq!(e.to_string(), "event 3 arrived out of order: the last event that arrived was 3");
        assert!(a.arrived(2).is_err());
        assert!(a.arrived(0).is_err());
        assert_eq!(a.watermark(), 2, "1 and 2 were settled by the first arrival");
        assert_eq!(a.arrived(4).unwrap(), None);
    }
}
