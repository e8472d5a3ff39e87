//! A connected client as the rest of the gateway sees it: its send queue, session, counters, the
//! token that closes it out of band, and the events handed back to it for redelivery.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use gw_proto::ClientInfo;

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
    /// A resume took the client over on a new connection (this one was half-open).
    Superseded = 4,
}

/// Closes a client out of band: set once, with the reason, and never reset. A byte and a waker
/// inline in the handle, where a `CancellationToken` is a separate 112-byte allocation per client
/// (it supports trees of tokens, which a client does not need).
///
/// Only the client's own task waits for it, so one waker is enough: a wait registers the task's
/// waker and reads the flag, with no lock. A `Notify` here (as before) cost its lock twice per
/// turn of the connection loop, to add and remove a waiter, for every message in and every batch
/// out (BENCHMARKS.md, "Echo (issue 29)").
#[derive(Debug)]
pub(crate) struct KillSwitch {
    reason: AtomicU8,
    waker: AtomicWaker,
}

impl KillSwitch {
    fn new() -> Self {
        Self { reason: AtomicU8::new(KillReason::None as u8), waker: AtomicWaker::new() }
    }

    /// Whether the client was killed.
    pub fn is_cancelled(&self) -> bool {
        self.reason.load(Ordering::Acquire) != KillReason::None as u8
    }

    /// Forgets the waker of the task that waited here, when that task ends: a waker keeps its
    /// task's memory (the whole connection future) allocated, and a held client's handle
    /// outlives its task.
    pub fn forget_waker(&self) {
        drop(self.waker.take());
    }

    /// Wakes the task waiting in [`cancelled`](Self::cancelled) or [`cancelled_or`](Self::cancelled_or),
    /// to read its flags again.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Resolves once the client is killed, or once `stopping` is set and the task woken by
    /// [`wake`](Self::wake) (at once if either already was), the kill first. For the client's
    /// own task only.
    pub fn cancelled_or<'a>(&'a self, stopping: &'a AtomicBool) -> impl Future<Output = Stop> + Send + 'a {
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if self.is_cancelled() {
                Poll::Ready(Stop::Killed)
            } else if stopping.load(Ordering::SeqCst) {
                Poll::Ready(Stop::Stopping)
            } else {
                Poll::Pending
            }
        })
    }

    /// Resolves once the client is killed (at once if it already was). For the client's own
    /// task only: a second task waiting at the same time would take the first one's wake-up.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(|cx| {
            // Registered before the flag is read: a kill after the read wakes this waker.
            self.waker.register(cx.waker());
            if self.is_cancelled() { Poll::Ready(()) } else { Poll::Pending }
        })
    }
}

/// What ended [`KillSwitch::cancelled_or`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Killed,
    /// The gateway is stopping.
    Stopping,
}

/// A connected client as the rest of the gateway sees it.
#[derive(Debug)]
pub(crate) struct ClientHandle {
    pub id: u64,
    pub tx: SendQueue,
    pub kill: KillSwitch,
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
    /// Connection state recovery, for a client that asked for it (shared by its successive
    /// connections' handles).
    pub recovery: Option<crate::recovery::Cell>,
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
            kill: KillSwitch::new(),
            info: Arc::new(info),
            session: Mutex::new(SessionSlot::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            last_active: AtomicU64::new(now_ms),
            redelivery: Redelivery::default(),
            recovery: None,
        }
    }

    /// The same, with recovery state.
    pub fn with_recovery(mut self, cell: Option<crate::recovery::Cell>) -> Self {
        self.recovery = cell;
        self
    }

    /// Kills the client; the first reason given is kept (`None` counts as `Destroy`).
    pub fn kill(&self, reason: KillReason) {
        let reason = if reason == KillReason::None { KillReason::Destroy } else { reason };
        let _ = self.kill.reason.compare_exchange(
            KillReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.kill.waker.wake();
    }

    pub fn kill_reason(&self) -> KillReason {
        match self.kill.reason.load(Ordering::Acquire) {
            1 => KillReason::SlowConsumer,
            2 => KillReason::Destroy,
            3 => KillReason::Heartbeat,
            4 => KillReason::Superseded,
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
