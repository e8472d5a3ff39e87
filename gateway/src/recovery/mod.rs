//! Connection state recovery on the same gateway (issue 25, phase R1; `docs/recovery.md`).
//!
//! A WebSocket client that asked for it (`gw_recover=1`) keeps a [`ReplayBuffer`] of the
//! messages queued for it (shared [`OutMessage`] handles, numbered 1, 2, ... across its
//! connections). When its connection ends without a clean close (reset, end of stream without a
//! close frame, heartbeat timeout) it is *held*: it stays in the client map and the uid and group
//! indexes under its id, so whatever is sent to it is recorded (never written) for the window.
//! A new connection presenting its token and its count takes it back ([`resume`]) and gets
//! exactly the messages it missed; otherwise [`release`] ends it (its one `on_close`) when the
//! window ends or its state is known lost (a cap dropped a message it would need).
//!
//! The held state is keyed by client id and is a plain value ([`ClientRecovery`]: the buffer,
//! the generation, the phase) next to the client's session and index entries, so a later phase
//! (R2) can ship it to another gateway.
//!
//! Locks: a client's `Mutex<ClientRecovery>` is taken before the client map (to find the
//! client's current connection) and before the gateway's deadlines; never the other way round.

pub(crate) mod frames;
pub(crate) mod release;
pub(crate) mod resume;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_config::RecoveryConfig;
use gw_delivery::{Deadlines, ReplayBuffer, ReplayCaps};
use gw_proto::{ClientId, ResumeToken};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::outgoing::{OutMessage, PayloadLen};
pub(crate) use frames::Reason;

/// Lost clients remembered, so that a late resume is told why (`gap`) rather than `expired`.
const TOMBSTONES: usize = 65_536;

/// Where a client with recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A connection serves it.
    Live,
    /// Gone without closing; waiting for a resume until its deadline.
    Held,
    /// Ended: closed cleanly, or released. Nothing is recorded any more.
    Released,
}

/// One client's recovery state, shared by its successive connections' handles.
#[derive(Debug)]
pub(crate) struct ClientRecovery {
    /// What was queued for it, numbered, since its last acknowledgement.
    pub buffer: ReplayBuffer<OutMessage, PayloadLen>,
    /// The generation its current token names; one more on each resume (u32: next to `phase`
    /// it takes no room of its own).
    pub generation: u32,
    pub phase: Phase,
    /// Data messages taken from the client across its connections (told to it on a resume, so
    /// it sends again exactly those the gateway never read).
    pub accepted: u64,
    /// Set while held when its state is known lost (a cap dropped a message it would need):
    /// its release is due at once, and a resume meanwhile is refused with this. Boxed: rare,
    /// and every client with recovery would carry its 32 bytes.
    pub lost: Option<Box<(Reason, String)>>,
}

/// A client's recovery state, behind its lock.
pub(crate) type Cell = Arc<Mutex<ClientRecovery>>;

impl ClientRecovery {
    pub fn new_cell() -> Cell {
        Arc::new(Mutex::new(Self {
            buffer: ReplayBuffer::new(),
            generation: 0,
            phase: Phase::Live,
            accepted: 0,
            lost: None,
        }))
    }
}

/// What became of a message recorded for a client with recovery.
pub(crate) enum Recorded {
    /// The client is connected: queue it.
    Queue(OutMessage),
    /// Kept for a held client; nothing to write.
    Kept,
    /// The client's state is gone or lost: the message is dropped.
    Gone,
}

/// The gateway-wide side of recovery: caps, the signing key, the held clients' deadlines.
#[derive(Debug)]
pub(crate) struct Hub {
    pub caps: ReplayCaps,
    pub window: Duration,
    max_held_bytes: u64,
    key: Vec<u8>,
    deadlines: Mutex<Deadlines<u64, Instant>>,
    /// Wakes the release timer when a deadline earlier than the one it sleeps for is set.
    wake: Notify,
    lost: Mutex<Tombstones>,
}

impl Hub {
    /// The hub for `config`, or `None` when recovery is off. Tokens are signed with the cluster
    /// secret; without one (a loopback-only gateway) with a random key of this run.
    pub fn new(config: &RecoveryConfig, secret: &str) -> Option<Arc<Self>> {
        if !config.enabled {
            return None;
        }
        let key = if secret.is_empty() { rand::random::<[u8; 32]>().to_vec() } else { secret.as_bytes().to_vec() };
        Some(Arc::new(Self {
            caps: ReplayCaps { messages: config.max_messages, bytes: config.max_bytes },
            window: config.window,
            max_held_bytes: config.max_held_bytes as u64,
            key,
            deadlines: Mutex::new(Deadlines::new()),
            wake: Notify::new(),
            lost: Mutex::new(Tombstones::default()),
        }))
    }

    /// The token that takes `client` back at `generation`.
    pub fn token(&self, client: &ClientId, generation: u64) -> String {
        ResumeToken { client: client.clone(), generation }.sign(&self.key)
    }

    /// Checks a token's signature.
    pub fn verify(&self, token: &str) -> Result<ResumeToken, gw_proto::TokenError> {
        ResumeToken::verify(token, &self.key)
    }

    /// The key this gateway signs tokens with (handed to the gateway that adopts its clients).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Records `msg` for client `id` (under its lock).
    pub fn record(&self, metrics: &Metrics, id: u64, rec: &mut ClientRecovery, msg: OutMessage) -> Recorded {
        if rec.phase == Phase::Released || rec.lost.is_some() {
            return Recorded::Gone;
        }
        let weight = msg.len() as u64;
        let recorded = rec.buffer.record(msg.clone(), &self.caps);
        if rec.phase == Phase::Live {
            return Recorded::Queue(msg);
        }
        metrics.recovery_held_bytes.fetch_add(weight, Ordering::Relaxed);
        let held = metrics.recovery_held_bytes.fetch_sub(recorded.dropped.bytes as u64, Ordering::Relaxed)
            - recorded.dropped.bytes as u64;
        if recorded.dropped.messages > 0 {
            self.lose(id, rec, format!("message {} is beyond the per-client caps", recorded.n));
        } else if held > self.max_held_bytes {
            self.lose(id, rec, format!("the gateway holds {held} bytes for its held clients, over max_held_bytes"));
        }
        Recorded::Kept
    }

    /// A held client's state is known lost: its release is due now.
    fn lose(&self, id: u64, rec: &mut ClientRecovery, detail: String) {
        tracing::debug!(client = id, %detail, "held client's state lost");
        rec.lost = Some(Box::new((Reason::Gap, detail)));
        self.set_deadline(id, Instant::now());
    }

    /// Holds client `id` (under its lock) until now + window.
    pub fn hold(&self, metrics: &Metrics, id: u64, rec: &mut ClientRecovery) {
        rec.phase = Phase::Held;
        Metrics::inc(&metrics.recovery_held_clients);
        metrics.recovery_held_bytes.fetch_add(rec.buffer.bytes() as u64, Ordering::Relaxed);
        self.set_deadline(id, Instant::now() + self.window);
    }

    /// A held client (under its lock) is held no more: resumed or released.
    pub fn unhold(&self, metrics: &Metrics, id: u64, rec: &ClientRecovery) {
        metrics.recovery_held_clients.fetch_sub(1, Ordering::Relaxed);
        metrics.recovery_held_bytes.fetch_sub(rec.buffer.bytes() as u64, Ordering::Relaxed);
        self.deadlines.lock().expect("deadlines lock").remove(&id);
    }

    fn set_deadline(&self, id: u64, at: Instant) {
        let mut d = self.deadlines.lock().expect("deadlines lock");
        let earlier = d.next_deadline().is_none_or(|next| at < next);
        d.insert(id, at);
        drop(d);
        if earlier {
            self.wake.notify_one();
        }
    }

    /// Remembers why a client was let go.
    pub fn tombstone(&self, id: u64, reason: Reason, detail: String) {
        self.lost.lock().expect("tombstones lock").insert(id, reason, detail);
    }

    /// Why client `id` was let go, if remembered.
    pub fn why_lost(&self, id: u64) -> Option<(Reason, String)> {
        self.lost.lock().expect("tombstones lock").reasons.get(&id).cloned()
    }
}

/// Lost clients and why, the oldest forgotten past [`TOMBSTONES`].
#[derive(Debug, Default)]
struct Tombstones {
    order: VecDeque<u64>,
    reasons: HashMap<u64, (Reason, String)>,
}

impl Tombstones {
    fn insert(&mut self, id: u64, reason: Reason, detail: String) {
        if self.reasons.insert(id, (reason, detail)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }
}

/// How a new connection starts, as far as recovery goes.
pub(crate) enum Opening {
    /// A new client; `recover` when it gets recovery (and its token); `refusal` the
    /// `not_recovered` frame owed to it first when it asked to resume and could not.
    Fresh { recover: bool, refusal: Option<String> },
    /// A held client taken back.
    Resumed(resume::Resumed),
    /// This gateway is handing its clients over (see `crate::handover`): the client comes back
    /// to another gateway, its token unused (a resume after the freeze), or opens there (a new
    /// client with recovery, once the stop has begun). Its connection here is closed with 1012
    /// (service restart), as its clients' were.
    Elsewhere,
}

/// What a new WebSocket connection asking `ask` becomes. A failed resume is counted by reason.
pub(crate) fn open(
    gw: &Arc<crate::gateway::Gateway>,
    ask: frames::Ask,
    make: impl FnOnce(u64, Cell) -> crate::client_handle::ClientHandle,
) -> Opening {
    let hub = gw.state.recovery.as_ref();
    let failed = |reason: Reason, detail: &str| {
        Metrics::inc(&gw.state.metrics.recovery_failed[Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)]);
        tracing::debug!(reason = reason.as_str(), %detail, "client not recovered");
        Opening::Fresh { recover: hub.is_some(), refusal: Some(frames::not_recovered(reason, detail)) }
    };
    match (ask, hub) {
        (frames::Ask::Nothing, _) => Opening::Fresh { recover: false, refusal: None },
        // A gateway handing its clients over opens no new client with recovery: one opened
        // after its hand-over shipped would be held here and lost when it exits.
        (frames::Ask::Recover, Some(_)) if gw.is_handing_over_clients() => Opening::Elsewhere,
        (frames::Ask::Recover, hub) => Opening::Fresh { recover: hub.is_some(), refusal: None },
        (_, None) => failed(Reason::Disabled, "recovery is not enabled on this gateway"),
        (frames::Ask::Malformed(detail), Some(_)) => failed(Reason::Malformed, detail),
        (frames::Ask::Resume { token, received }, Some(hub)) => match resume::resume(gw, hub, &token, received, make) {
            Ok(r) => {
                Metrics::inc(&gw.state.metrics.recovery_resumed);
                gw.state.metrics.recovery_replayed_messages.fetch_add(r.replay.len() as u64, Ordering::Relaxed);
                Opening::Resumed(r)
            }
            Err(resume::Failed::HandingOver) => {
                tracing::debug!("a resume at a gateway handing its clients over: sent elsewhere");
                Opening::Elsewhere
            }
            Err(resume::Failed::Refused(reason, detail)) => failed(reason, &detail),
        },
    }
}

/// A text frame starting with NUL from a client with recovery: an ack (applied), or data with
/// an escaping NUL (returns true: strip it), or a bad control frame (counted and ignored).
pub(crate) fn from_client(metrics: &Metrics, client: u64, cell: &Cell, data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    match frames::from_client(text) {
        frames::FromClient::Data(_) => true,
        frames::FromClient::Ack(n) => {
            if let Err(e) = cell.lock().expect("recovery lock").buffer.ack(n) {
                Metrics::inc(&metrics.recovery_bad_control);
                tracing::debug!(client, error = %e, "bad recovery ack ignored");
            }
            false
        }
        frames::FromClient::Bad(e) => {
            Metrics::inc(&metrics.recovery_bad_control);
            tracing::debug!(client, error = %e, "unknown recovery control frame ignored");
            false
        }
    }
}

/// A data message from a client with recovery, read on the connection `handle`: counted as
/// accepted (true), or, when a resume took the client over from this connection meanwhile,
/// left alone (false): the client was told the count without it and sends it again.
pub(crate) fn accept(cell: &Cell, handle: &crate::client_handle::ClientHandle) -> bool {
    let mut rec = cell.lock().expect("recovery lock");
    // A resume kills the connection it takes the client from under this lock.
    if handle.kill_reason() == crate::client_handle::KillReason::Superseded {
        tracing::debug!(
            client = handle.id,
            "message on a connection taken over by a resume: left for the client to send again"
        );
        return false;
    }
    rec.accepted += 1;
    true
}

impl Hub {
    /// An application closed a held client: release it now, as closed by the application.
    pub fn close_held(&self, id: u64, cell: &Cell) -> bool {
        let mut rec = cell.lock().expect("recovery lock");
        if rec.phase != Phase::Held {
            return false;
        }
        if rec.lost.is_none() {
            rec.lost = Some(Box::new((Reason::Expired, "the application closed the client while it was away".into())));
        }
        self.set_deadline(id, Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_s_recovery_state_is_small() {
        // Plus the Arc's two counts: what docs/recovery.md promises per client with recovery.
        let size = size_of::<Mutex<ClientRecovery>>();
        assert!(size <= 88, "{size} bytes");
        // Every other client pays one pointer.
        assert_eq!(size_of::<Option<Cell>>(), size_of::<usize>());
    }

    #[test]
    fn tombstones_forget_the_oldest_past_their_cap() {
        let mut t = Tombstones::default();
        for id in 0..(TOMBSTONES as u64 + 10) {
            t.insert(id, Reason::Gap, String::new());
        }
        assert_eq!(t.reasons.len(), TOMBSTONES);
        assert!(!t.reasons.contains_key(&9) && t.reasons.contains_key(&10));
        t.insert(10, Reason::Expired, "again".into());
        assert_eq!(t.order.len(), TOMBSTONES, "a second insert of one id takes no second slot");
    }
}
