//! A connected client as the rest of the gateway sees it: its send queue, session, counters, the
//! token that closes it out of band, and the events handed back to it for redelivery.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use gw_proto::ClientInfo;
use tokio_util::sync::CancellationToken;

use crate::binding::Redelivery;
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
    pub redelivery: Redelivery,
}

/// A client's session, and the sequence number of the last worker write-back applied to it: an
/// event carries both, read together, so a worker can tell which of its own write-backs the
/// event's session does not show yet.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot {
    pub data: Option<Bytes>,
    pub writes: u64,
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
            redelivery: Redelivery::default(),
        }
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
