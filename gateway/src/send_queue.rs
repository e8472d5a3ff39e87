//! A client's outgoing queue: what workers and the heartbeat ask the client task to write, bounded
//! in messages, holding no memory while empty.

use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use gw_delivery::{BoundedQueue, Limits, Pushed, Refusal, Refused, Weightless};
use gw_proto::CloseReason;
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

/// A client's outgoing queue, bounded in messages (the rule: `gw_delivery::BoundedQueue`). It
/// holds no memory while empty: an idle client costs nothing here, where a tokio channel
/// allocates its first 32-slot block up front (about 2.8 KiB per client, plus 512 bytes of
/// channel state; see BENCHMARKS.md). Producers never wait; the client task waits for
/// [`ready`](Self::ready), then takes items one by one and writes what it finds with one flush.
///
/// The byte budget (`send_queue_bytes`) is still checked by the producer against the client's
/// `queued_bytes` (`commands.rs`), not here.
///
/// Only the client's own task waits for items, so one waker is enough (as for the kill switch,
/// `client_handle::KillSwitch`): a `Notify` here took its waiter-list lock to add the task and
/// again to wake it, for every message a broadcast queues to an idle client.
#[derive(Debug)]
pub(crate) struct SendQueue {
    items: Mutex<BoundedQueue<Outbound, Weightless>>,
    /// The client task, while it waits in [`ready`](Self::ready).
    ready: AtomicWaker,
}

impl SendQueue {
    /// An empty queue that takes at most `limit` items (at least one).
    pub fn new(limit: usize) -> Self {
        Self { items: Mutex::new(BoundedQueue::new(Limits::items(limit))), ready: AtomicWaker::new() }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, BoundedQueue<Outbound, Weightless>> {
        self.items.lock().expect("send queue lock")
    }

    /// Queues without waiting; refuses when `limit` items wait or the client task has finished.
    #[inline]
    pub fn try_send(&self, item: Outbound) -> Result<(), TrySendError<Outbound>> {
        let pushed = self.lock().push(item);
        match pushed {
            // While items wait, a wake-up is already pending: the task takes all it finds before
            // it waits again.
            Ok(Pushed::Wake) => self.ready.wake(),
            Ok(Pushed::Quiet) => {}
            Err(Refused { item, reason: Refusal::Closed }) => return Err(TrySendError::Closed(item)),
            // Nobody waits for room here (producers never wait), so the queue's wake-up for a
            // refused producer is ignored.
            Err(Refused { item, .. }) => return Err(TrySendError::Full(item)),
        }
        Ok(())
    }

    /// The next item without waiting. A queue that runs empty frees a capacity left by a burst
    /// (above `gw_delivery::KEEP_CAPACITY`).
    #[inline]
    pub fn try_recv(&self) -> Option<Outbound> {
        self.lock().pop().map(|p| p.item)
    }

    /// Resolves once an item waits (never after the queue was closed). Takes nothing, so it can
    /// be dropped at any time. For the client's own task only: a second task waiting at the same
    /// time would take the first one's wake-up.
    pub fn ready(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::poll_fn(|cx| {
            // Registered before the queue is read: a push after the read wakes this waker.
            self.ready.register(cx.waker());
            let q = self.lock();
            if !q.is_empty() && !q.is_closed() { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// Refuses further items and drops what waits; returns how many messages (not heartbeats or
    /// close requests) were dropped, for the caller to count. Called by the client task as it
    /// ends: the waker it left here goes too (a held client's handle outlives its task, and a
    /// waker keeps the task's memory).
    pub fn close(&self) -> u64 {
        let items = self.lock().close();
        drop(self.ready.take());
        items.iter().filter(|i| matches!(i, Outbound::Msg(_) | Outbound::Close { last: Some(_), .. })).count() as u64
    }

    /// Frees the memory of an empty queue (a drained queue keeps up to
    /// `gw_delivery::KEEP_CAPACITY` slots otherwise). Called after a heartbeat was written, so a
    /// client that receives nothing for a heartbeat interval holds no queue memory.
    pub fn release_idle(&self) {
        self.lock().release_idle();
    }

    /// Whether the client task has finished (a held client's queue, with recovery).
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn msg(text: &str) -> Outbound {
        Outbound::Msg(OutMessage::new(Message::text(text)))
    }

    fn text(item: Option<Outbound>) -> String {
        match item {
            Some(Outbound::Msg(m)) => m.message().to_text().unwrap().to_owned(),
            other => panic!("not a message: {other:?}"),
        }
    }

    async fn is_ready(q: &SendQueue) -> bool {
        tokio::time::timeout(Duration::ZERO, q.ready()).await.is_ok()
    }

    #[tokio::test]
    async fn bounded_in_messages_in_order_and_ready_only_while_items_wait() {
        let q = SendQueue::new(2);
        assert!(!is_ready(&q).await);
        q.try_send(msg("a")).unwrap();
        q.try_send(msg("b")).unwrap();
        assert!(matches!(q.try_send(msg("c")), Err(TrySendError::Full(Outbound::Msg(_)))));
        assert!(is_ready(&q).await);
        assert_eq!((text(q.try_recv()), text(q.try_recv())), ("a".into(), "b".into()));
        assert!(q.try_recv().is_none());
        assert!(!is_ready(&q).await, "ready with nothing to take");
        q.try_send(msg("c")).unwrap();
        assert!(is_ready(&q).await);
    }

    #[tokio::test]
    async fn a_waiting_client_task_is_woken_by_a_push() {
        let q = std::sync::Arc::new(SendQueue::new(4));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.ready().await }
        });
        tokio::task::yield_now().await;
        q.try_send(msg("a")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("never woken").unwrap();
    }

    /// The waker a waiting client task leaves in the queue goes when the task closes it: a held
    /// client's handle outlives its task, and the waker would keep the task's memory.
    #[test]
    fn closing_drops_the_waiting_tasks_waker() {
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let task = std::sync::Arc::new(Task);
        let waker = std::task::Waker::from(task.clone());
        let q = SendQueue::new(4);
        let mut ready = std::pin::pin!(q.ready());
        assert!(ready.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
        drop(waker);
        assert_eq!(std::sync::Arc::strong_count(&task), 2, "the queue holds the waiting task's waker");
        q.close();
        assert_eq!(std::sync::Arc::strong_count(&task), 1, "and lets it go at close");
    }

    #[tokio::test]
    async fn close_counts_the_dropped_messages_and_refuses_later_ones() {
        let q = SendQueue::new(8);
        q.try_send(msg("a")).unwrap();
        q.try_send(Outbound::Control(Message::Ping(Default::default()))).unwrap();
        q.try_send(Outbound::Close { last: Some(OutMessage::new(Message::text("bye"))), close: None }).unwrap();
        q.try_send(Outbound::Destroy).unwrap();
        assert_eq!(q.close(), 2, "a message and a close's last message; not the ping or destroy");
        assert!(matches!(q.try_send(msg("b")), Err(TrySendError::Closed(_))));
        assert_eq!(q.len(), 0);
        assert!(!is_ready(&q).await, "a closed queue is never ready");
    }
}
