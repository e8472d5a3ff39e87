//! A connected client as the rest of the gateway sees it: its send queue, session, counters, the
//! token that closes it out of band, and the events handed back to it for redelivery.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use gw_proto::{ClientInfo, Event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::send_queue::SendQueue;

/// Why a client was killed out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KillReason {
    None = 0,
    SlowConsumer = 1,
    Destroy = 2,
    /// Silent for `ping_not_response_limit` intervals.
    Heartbeat = 3,
}

/// A connected client as the rest of the gateway sees it.
#[derive(Debug)]
pub(crate) struct ClientHandle {
    pub id: u64,
    pub tx: SendQueue,
    pub kill: CancellationToken,
    kill_reason: AtomicU8,
    pub info: Arc<ClientInfo>,
    pub session: Mutex<SessionSlot>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Bytes of messages queued and not yet written.
    pub queued_bytes: AtomicUsize,
    /// When the client last sent something, in ms of the gateway clock.
    pub last_active: AtomicU64,
    /// Events a dead worker link handed back, to be sent to another worker before anything new.
    redelivery: Mutex<Redelivery>,
    /// Set while `redelivery` holds events; checked on every dispatch without taking the lock.
    pub redelivery_pending: AtomicBool,
    /// Wakes the client task when events were handed back.
    pub redeliver: Notify,
}

/// A client's session, and the sequence number of the last worker write-back applied to it: an
/// event carries both, read together, so a worker can tell which of its own write-backs the
/// event's session does not show yet.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot {
    pub data: Option<Bytes>,
    pub writes: u64,
}

#[derive(Debug, Default)]
struct Redelivery {
    events: Vec<Event>,
    /// The client task has finished: hand-backs must be delivered without it.
    closed: bool,
}

impl ClientHandle {
    pub fn new(id: u64, tx: SendQueue, info: ClientInfo, now_ms: u64) -> Self {
        Self {
            id,
            tx,
            kill: CancellationToken::new(),
            kill_reason: AtomicU8::new(KillReason::None as u8),
            info: Arc::new(info),
            session: Mutex::new(SessionSlot::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            last_active: AtomicU64::new(now_ms),
            redelivery: Mutex::new(Redelivery::default()),
            redelivery_pending: AtomicBool::new(false),
            redeliver: Notify::new(),
        }
    }

    /// Queues handed-back events for the client task; gives them back if the task has finished.
    pub fn hand_back(&self, events: Vec<Event>) -> Result<(), Vec<Event>> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        if r.closed {
            return Err(events);
        }
        r.events.extend(events);
        self.redelivery_pending.store(true, Ordering::Release);
        drop(r);
        self.redeliver.notify_one();
        Ok(())
    }

    /// Takes the handed-back events, in order.
    pub fn take_redelivery(&self) -> Vec<Event> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        self.redelivery_pending.store(false, Ordering::Release);
        std::mem::take(&mut r.events)
    }

    /// Marks the client task finished and returns what is still waiting.
    pub fn close_redelivery(&self) -> Vec<Event> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        r.closed = true;
        self.redelivery_pending.store(false, Ordering::Release);
        std::mem::take(&mut r.events)
    }

    pub fn kill(&self, reason: KillReason) {
        let _ = self.kill_reason.compare_exchange(
            KillReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.kill.cancel();
    }

    pub fn kill_reason(&self) -> KillReason {
        match self.kill_reason.load(Ordering::Acquire) {
            1 => KillReason::SlowConsumer,
            2 => KillReason::Destroy,
            3 => KillReason::Heartbeat,
            _ => KillReason::None,
        }
    }

    pub fn session(&self) -> Option<Bytes> {
        self.session.lock().expect("session lock").data.clone()
    }

    /// The session and the last write-back applied to it, as one snapshot.
    pub fn session_snapshot(&self) -> (Option<Bytes>, u64) {
        let slot = self.session.lock().expect("session lock");
        (slot.data.clone(), slot.writes)
    }
}
