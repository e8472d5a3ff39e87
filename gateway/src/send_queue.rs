//! A client's outgoing queue: what workers and the heartbeat ask the client task to write, bounded
//! in messages, holding no memory while empty.

use std::collections::VecDeque;
use std::sync::Mutex;

use gw_proto::CloseReason;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message;

use crate::outgoing::OutMessage;

/// What the client task is asked to do next.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message from a worker or gateway client, counted and held against the byte budget.
    Msg(OutMessage),
    /// A heartbeat ping: not counted as a message and not held against the byte budget.
    Control(Message),
    /// Write `last` (if any), then close with `close` (1000 when `None`).
    Close { last: Option<OutMessage>, close: Option<CloseReason> },
    /// Write what was queued before, then drop the connection without a close frame.
    Destroy,
}

/// A client's outgoing queue, bounded in messages. It holds no memory while empty: an idle client
/// costs nothing here, where a tokio channel allocates its first 32-slot block up front (about
/// 2.8 KiB per client, plus 512 bytes of channel state; see BENCHMARKS.md). Producers never wait;
/// the client task waits for [`ready`](Self::ready), then takes items one by one and writes what
/// it finds with one flush.
#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    limit: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// The client task has finished: nothing will be taken any more.
    closed: bool,
}

/// Capacity a drained queue may keep; a larger one (left by a burst) is freed.
const QUEUE_KEEP: usize = 16;

impl SendQueue {
    /// An empty queue that takes at most `limit` items (at least one).
    pub fn new(limit: usize) -> Self {
        Self { state: Mutex::new(QueueState::default()), ready: Notify::new(), limit: limit.max(1) }
    }

    /// Queues without waiting; refuses when `limit` items wait or the client task has finished.
    pub fn try_send(&self, item: Outbound) -> Result<(), TrySendError<Outbound>> {
        let mut s = self.state.lock().expect("send queue lock");
        if s.closed {
            return Err(TrySendError::Closed(item));
        }
        if s.items.len() >= self.limit {
            return Err(TrySendError::Full(item));
        }
        let was_empty = s.items.is_empty();
        s.items.push_back(item);
        drop(s);
        // While items wait, a wake-up is already pending: the task takes all it finds before it
        // waits again.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next item without waiting.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut s = self.state.lock().expect("send queue lock");
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > QUEUE_KEEP {
            s.items = VecDeque::new();
        }
        item
    }

    /// Resolves once an item waits (never after the queue was closed). Takes nothing, so it can
    /// be dropped at any time.
    pub async fn ready(&self) {
        loop {
            {
                let s = self.state.lock().expect("send queue lock");
                if !s.items.is_empty() && !s.closed {
                    return;
                }
            }
            // A push after the check above leaves a permit, so this cannot miss it.
            self.ready.notified().await;
        }
    }

    /// Refuses further items and drops what waits; returns how many messages (not heartbeats or
    /// close requests) were dropped, for the caller to count.
    pub fn close(&self) -> u64 {
        let mut s = self.state.lock().expect("send queue lock");
        s.closed = true;
        let items = std::mem::take(&mut s.items);
        drop(s);
        self.ready.notify_one();
        items.iter().filter(|i| matches!(i, Outbound::Msg(_) | Outbound::Close { last: Some(_), .. })).count() as u64
    }

    /// Frees the memory of an empty queue (a drained queue keeps up to [`QUEUE_KEEP`] slots
    /// otherwise). Called after a heartbeat was written, so a client that receives nothing for
    /// a heartbeat interval holds no queue memory.
    pub fn release_idle(&self) {
        let mut s = self.state.lock().expect("send queue lock");
        if s.items.is_empty() && s.items.capacity() > 0 {
            s.items = VecDeque::new();
        }
    }

    /// Whether the client task has finished (a held client's queue, with recovery).
    pub fn is_closed(&self) -> bool {
        self.state.lock().expect("send queue lock").closed
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.state.lock().expect("send queue lock").items.len()
    }
}
