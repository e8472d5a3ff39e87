//! What a gateway keeps of the events it sent one worker: every event, numbered, until the
//! worker's cumulative acknowledgement covers it; the rest handed back when the link is gone, so
//! another worker gets them (client events reach workers at least once).
//!
//! Sequence numbers start at 1 and rise by one per pushed event, so the retained events are
//! always the consecutive run `first_seq..=last_seq` and the log stores no number per event.
//!
//! # Wiring
//!
//! Wired into `WorkerLink` in `gateway/src/router.rs` (it replaced `Retained` and the bodies of
//! `WorkerLink::{ack, seal, take_retained, retained_len}`). The link keeps
//! `Mutex<RetentionLog<(Event, Arc<ClientInfo>)>>`, the `acked` watch (sent when
//! [`Acked::moved`]), the `gone`/`draining` flags read without the lock, and the mpsc permit:
//!
//! - `EventSlot::send`: under the lock, refused (`LinkGone`) once the log is sealed or a flag is
//!   set; otherwise `event.seq = log.next_seq()`, then [`push`](RetentionLog::push) of the
//!   retained copy (without the client's info, which the `Arc` beside it carries) and
//!   `permit.send(event)` (queue order is sequence order because both happen under the lock).
//! - Draining: set `draining`, then [`seal`](RetentionLog::seal) (it also waits out a push in
//!   flight, as the lock did before; the log now refuses every later one itself).
//! - `Ack { seq }` from the worker (or, on a GatewayWorker link, the write of event `seq`):
//!   [`ack`](RetentionLog::ack); an [`AckAhead`] is logged (rate-limited) as a peer bug and
//!   changes nothing. (Before, such an ack released everything and moved the watch past what
//!   was sent.)
//! - Link gone: [`take_all`](RetentionLog::take_all), which also seals, so an event is either
//!   handed back with the rest or refused, never stranded in between.

use std::collections::VecDeque;

/// Events sent on one link and not yet acknowledged.
///
/// # Examples
///
/// ```
/// use gw_delivery::RetentionLog;
///
/// let mut log = RetentionLog::new();
/// assert_eq!(log.push("connect").unwrap(), 1);
/// assert_eq!(log.push("hello").unwrap(), 2);
/// assert_eq!(log.push("bye").unwrap(), 3);
/// assert_eq!(log.ack(1).unwrap().released, 1);
/// let back = log.take_all(); // the link is gone
/// assert_eq!((back.first_seq, Vec::from(back.events)), (2, vec!["hello", "bye"]));
/// assert!(log.push("late").is_err()); // sealed: goes to another worker instead
/// ```
#[derive(Debug)]
pub struct RetentionLog<E> {
    /// The retained events, numbered `last_seq - len + 1 ..= last_seq`.
    events: VecDeque<E>,
    /// Sequence number of the last event pushed (0 before the first).
    last_seq: u64,
    /// Highest sequence number the worker acknowledged.
    acked: u64,
    sealed: bool,
}

/// The log is sealed (the link drains or is gone): the event comes back, unnumbered.
#[derive(Debug, thiserror::Error)]
#[error("the link takes no more events")]
pub struct Sealed<E>(pub E);

/// The peer acknowledged an event that was never sent: a bug on its side. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("acknowledgement of event {acked}, but the last event sent was {last_sent}; ignored")]
pub struct AckAhead {
    /// The sequence number acknowledged.
    pub acked: u64,
    /// The last sequence number sent.
    pub last_sent: u64,
}

/// What an acknowledgement changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The watermark moved (a stale or repeated ack leaves it): tell whoever waits on it.
    pub moved: bool,
    /// Events released from the log.
    pub released: usize,
}

/// The unacknowledged events, handed back when the link is gone.
#[derive(Debug)]
pub struct HandedBack<E> {
    /// Sequence number of the first of `events` (the rest follow one by one).
    pub first_seq: u64,
    /// The events, in sequence order.
    pub events: VecDeque<E>,
}

impl<E> Default for RetentionLog<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> RetentionLog<E> {
    /// An empty log; the first event pushed is number 1.
    pub fn new() -> Self {
        Self { events: VecDeque::new(), last_seq: 0, acked: 0, sealed: false }
    }

    /// The sequence number the next [`push`](Self::push) will give, for a caller that writes it
    /// into the event before retaining a copy.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Numbers and retains `event`; returns its sequence number, or the event back once the log
    /// is sealed.
    pub fn push(&mut self, event: E) -> Result<u64, Sealed<E>> {
        if self.sealed {
            return Err(Sealed(event));
        }
        self.last_seq += 1;
        self.events.push_back(event);
        Ok(self.last_seq)
    }

    /// The worker handled everything up to `seq`: release those events. An ack at or below the
    /// watermark changes nothing (acks are cumulative, a late one is harmless); an ack above the
    /// last event sent is refused and changes nothing, so the watermark never passes what was
    /// sent.
    pub fn ack(&mut self, seq: u64) -> Result<Acked, AckAhead> {
        if seq > self.last_seq {
            return Err(AckAhead { acked: seq, last_sent: self.last_seq });
        }
        if seq <= self.acked {
            return Ok(Acked { moved: false, released: 0 });
        }
        self.acked = seq;
        let first = self.first_seq();
        // After `take_all` the acknowledged events may already be gone (handed back).
        let released = usize::try_from(seq.saturating_sub(first - 1)).unwrap_or(usize::MAX).min(self.events.len());
        self.events.drain(..released);
        Ok(Acked { moved: true, released })
    }

    /// Refuses every later push ([`Sealed`]); what is retained stays until acknowledged or taken.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Seals the log and takes every unacknowledged event, in order (the link is gone). Frees
    /// the log's memory.
    pub fn take_all(&mut self) -> HandedBack<E> {
        self.sealed = true;
        let first_seq = self.first_seq();
        HandedBack { first_seq, events: std::mem::take(&mut self.events) }
    }

    /// Sequence number of the oldest retained event (`last_seq + 1` when none is retained).
    pub fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.events.len() as u64
    }

    /// Sequence number of the last event pushed (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Highest sequence number acknowledged (0 before the first ack); only ever rises.
    pub fn watermark(&self) -> u64 {
        self.acked
    }

    /// Events retained now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether pushes are refused.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The retained events with their sequence numbers, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &E)> {
        (self.first_seq()..).zip(self.events.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> RetentionLog<u64> {
        let mut log = RetentionLog::new();
        for i in 1..=n {
            assert_eq!(log.push(i * 10).unwrap(), i);
        }
        log
    }

    fn retained(log: &RetentionLog<u64>) -> Vec<(u64, u64)> {
        log.iter().map(|(s, e)| (s, *e)).collect()
    }

    #[test]
    fn numbers_from_one_and_releases_on_cumulative_acks() {
        let mut log = log_of(5);
        assert_eq!((log.first_seq(), log.last_seq(), log.len(), log.next_seq()), (1, 5, 5, 6));
        assert_eq!(log.ack(2).unwrap(), Acked { moved: true, released: 2 });
        assert_eq!(retained(&log), [(3, 30), (4, 40), (5, 50)]);
        assert_eq!(log.ack(5).unwrap(), Acked { moved: true, released: 3 });
        assert!(log.is_empty());
        assert_eq!((log.first_seq(), log.watermark()), (6, 5));
        assert_eq!(log.push(60).unwrap(), 6);
        assert_eq!(retained(&log), [(6, 60)]);
    }

    #[test]
    fn stale_and_repeated_acks_change_nothing() {
        let mut log = log_of(4);
        log.ack(3).unwrap();
        assert_eq!(log.ack(3).unwrap(), Acked { moved: false, released: 0 });
        assert_eq!(log.ack(1).unwrap(), Acked { moved: false, released: 0 });
        assert_eq!(log.ack(0).unwrap(), Acked { moved: false, released: 0 });
        assert_eq!((log.watermark(), retained(&log)), (3, vec![(4, 40)]));
    }

    #[test]
    fn an_ack_past_what_was_sent_is_an_error_and_moves_nothing() {
        let mut log = log_of(3);
        let e = log.ack(4).unwrap_err();
        assert_eq!(e, AckAhead { acked: 4, last_sent: 3 });
        assert_eq!(e.to_string(), "acknowledgement of event 4, but the last event sent was 3; ignored");
        assert_eq!(log.ack(u64::MAX).unwrap_err().acked, u64::MAX);
        assert_eq!((log.watermark(), log.len()), (0, 3));
        // Before anything was sent, any ack but 0 is ahead.
        let mut empty = RetentionLog::<u8>::new();
        assert!(empty.ack(1).is_err());
        assert!(!empty.ack(0).unwrap().moved);
    }

    #[test]
    fn take_all_hands_back_the_unacknowledged_in_order_and_seals() {
        let mut log = log_of(5);
        log.ack(2).unwrap();
        let back = log.take_all();
        assert_eq!((back.first_seq, Vec::from(back.events)), (3, vec![30, 40, 50]));
        assert!(log.is_empty() && log.is_sealed());
        let Sealed(refused) = log.push(60).unwrap_err();
        assert_eq!(refused, 60);
        assert_eq!(log.last_seq(), 5, "a refused event takes no number");
        // A late ack of events already handed back still moves the watermark (the worker did
        // handle them: they are redelivered anyway, flagged as such) but releases nothing.
        assert_eq!(log.ack(4).unwrap(), Acked { moved: true, released: 0 });
        assert!(log.ack(6).is_err());
        let again = log.take_all();
        assert!(again.events.is_empty());
        assert_eq!(again.first_seq, 6);
    }

    #[test]
    fn a_sealed_log_keeps_what_it_has_until_acknowledged() {
        let mut log = log_of(3);
        log.seal();
        assert!(log.push(40).is_err());
        assert_eq!(log.len(), 3);
        assert_eq!(log.ack(3).unwrap().released, 3);
        assert!(log.is_empty());
    }
}
