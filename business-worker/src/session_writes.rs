//! A worker's session write-backs for one client that the gateway may not have applied yet.
//!
//! After a handler changes the session, the worker writes the changed top-level keys back to the
//! gateway. Events of the same client that left the gateway before that write-back arrived carry
//! the older session; each event says which write-back its session already shows
//! (`Event::session_writes`), so the worker lays the later ones on top again, in order. A client
//! that logs in and speaks at once is logged in for its second message.

use std::collections::VecDeque;

use gw_gateway_client::Session;

/// One client's write-backs not yet seen applied.
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    /// The last sequence number this worker used for the client.
    last: u64,
    pending: VecDeque<Write>,
}

#[derive(Debug)]
struct Write {
    seq: u64,
    changed: Session,
    removed: Vec<String>,
}

impl PendingWrites {
    /// The session to handle an event with: the event's own, plus this worker's write-backs
    /// that the gateway had not applied when the event left it (`applied` is the event's
    /// `session_writes`).
    pub fn catch_up(&mut self, applied: u64, mut session: Session) -> Session {
        while self.pending.front().is_some_and(|w| w.seq <= applied) {
            self.pending.pop_front();
        }
        for w in &self.pending {
            for (k, v) in &w.changed {
                session.insert(k.clone(), v.clone());
            }
            for k in &w.removed {
                session.remove(k);
            }
        }
        session
    }

    /// Records a write-back made while handling an event whose `session_writes` was `applied`;
    /// returns its sequence number, above both that and this worker's earlier ones.
    pub fn record(&mut self, applied: u64, changed: Session, removed: Vec<String>) -> u64 {
        let seq = self.last.max(applied) + 1;
        self.last = seq;
        self.pending.push_back(Write { seq, changed, removed });
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(v: serde_json::Value) -> Session {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn write_backs_not_yet_applied_are_laid_on_top_in_order() {
        let mut w = PendingWrites::default();
        let s1 = w.record(0, session(json!({"room": "a"})), vec![]);
        let s2 = w.record(0, session(json!({"name": "x"})), vec!["old".into()]);
        assert_eq!((s1, s2), (1, 2));
        // An event sent before either arrived, with a key a web backend set meanwhile.
        let seen = w.catch_up(0, session(json!({"old": 1, "web": true, "room": "z"})));
        assert_eq!(seen, session(json!({"web": true, "room": "a", "name": "x"})));
        // One applied: only the second is laid on top (the first may have been overwritten since).
        let seen = w.catch_up(1, session(json!({"room": "web-won", "old": 1})));
        assert_eq!(seen, session(json!({"room": "web-won", "name": "x"})));
        // Both applied: the event's session as it is.
        assert_eq!(w.catch_up(2, session(json!({"room": "b"}))), session(json!({"room": "b"})));
        assert!(w.pending.is_empty());
    }

    #[test]
    fn sequence_numbers_continue_above_what_another_worker_wrote() {
        let mut w = PendingWrites::default();
        // The client comes from a worker that wrote 5 times.
        assert_eq!(w.record(5, Session::new(), vec![]), 6);
        // An event sent before number 6 landed still says 5: number 6 is laid on top.
        assert_eq!(w.record(5, Session::new(), vec![]), 7);
        assert_eq!(w.pending.len(), 2);
        w.catch_up(7, Session::new());
        assert!(w.pending.is_empty());
    }
}
