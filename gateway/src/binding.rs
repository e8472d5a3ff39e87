//! Which worker a client's events go to, and the one path that puts them there.
//!
//! Every client has a [`Binding`]: the worker link it is bound to (sticky, least-loaded first),
//! whether that worker has met the client yet, and the sequence number of the last event queued
//! there. An event reaches a worker link only through [`Binding::send`], which introduces the
//! client to a worker that has not seen it (its info rides on the first event) and numbers the
//! event. Three callers use it: the client task for its own events ([`Binding::dispatch`]), the
//! client task again for events a dead worker handed back ([`Binding::ensure_bound`]), and the
//! delivery of a closed client's leftover events (`redeliver.rs`).
//!
//! When the bound worker goes away or drains, the client switches workers without reordering its
//! events: it waits until the old worker acknowledged what it was given, or its link is gone and
//! has handed the unacknowledged events back ([`Redelivery`]); then it sends the handed-back
//! events, then new ones.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use gw_delivery::{BoundedQueue, Limits, Weightless};
use gw_proto::{ClientInfo, Event, EventKind, codec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client_handle::ClientHandle;
use crate::gateway::Gateway;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::router::{EventSlot, LinkGone, Router, WorkerLink};

/// How long a closing client's last event waits for a worker (its socket is already gone).
const CLOSING_WAIT: Duration = Duration::from_millis(500);
/// How long a client waits for a dead link to hand its events back before it moves on.
pub(crate) const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// Why a client's event could not be routed to a worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unrouted {
    /// No worker was usable within the hold time; the event was dropped and counted.
    #[error("no business worker became available within {0:?}")]
    NoWorker(Duration),
    /// The gateway began to stop while the client waited for a worker.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The gateway closed the client (command, slow consumer, heartbeat) while it waited.
    #[error("the client was closed while waiting for a worker")]
    Closed,
}

/// What the client-task side of a binding works with.
pub(crate) struct ClientCx<'a> {
    pub gw: &'a Arc<Gateway>,
    pub handle: &'a ClientHandle,
    /// The gateway is stopping.
    pub shutdown: &'a CancellationToken,
}

/// One client's route to a business worker.
#[derive(Debug)]
pub(crate) struct Binding {
    info: Arc<ClientInfo>,
    link: Option<Arc<WorkerLink>>,
    /// Whether the bound worker already has this client's info.
    introduced: bool,
    /// Sequence number of the last event queued on the bound link.
    last_seq: u64,
}

impl Binding {
    /// An unbound client.
    pub fn new(info: Arc<ClientInfo>) -> Self {
        Self { info, link: None, introduced: false, last_seq: 0 }
    }

    fn bind(&mut self, link: Arc<WorkerLink>) {
        self.unbind();
        link.load.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(worker = %link.name, "client bound to worker");
        self.link = Some(link);
        self.introduced = false;
        self.last_seq = 0;
    }

    /// Binds to `link`, which holds this client's events up to `last_seq` unacknowledged (sent
    /// by its previous connection): its next events follow them there, or, if that worker goes
    /// away, wait for them as any switch of workers does.
    pub fn bind_after(&mut self, link: Arc<WorkerLink>, last_seq: u64) {
        self.bind(link);
        self.last_seq = last_seq;
    }

    /// Leaves the bound worker, if any (it stops counting this client in its load).
    pub fn unbind(&mut self) {
        if let Some(old) = self.link.take() {
            old.load.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The bound link while it takes new events.
    fn usable(&self) -> Option<&Arc<WorkerLink>> {
        self.link.as_ref().filter(|l| l.usable())
    }

    /// Binds to the least-loaded usable worker, waiting for one until `deadline`.
    async fn bind_any(&mut self, router: &Router, deadline: Instant) -> Option<Arc<WorkerLink>> {
        loop {
            if let Some(link) = router.pick() {
                self.bind(link.clone());
                return Some(link);
            }
            tokio::time::timeout_at(deadline, router.wait_for_worker()).await.ok()?;
        }
    }

    /// Queues `event` in `slot`, a slot of the bound link: the only place an event is put on a
    /// worker link. A worker that has not met the client gets its info with the event.
    ///
    /// An event too large for one frame of the link is dropped here and counted
    /// (`dropped_event_too_large`), before it is numbered: numbered, the link's writer could
    /// not send it, and the worker's acknowledgements (cumulative) would never pass it again.
    /// The limits checked at start (message size, session cap, frame size) keep this from
    /// happening; this is the guard for what they miss.
    // The event comes back only when the link is gone; boxing it would add an allocation there.
    #[allow(clippy::result_large_err)]
    fn send(&mut self, slot: EventSlot<'_>, mut event: Event, metrics: &Metrics) -> Result<(), LinkGone> {
        if !self.introduced {
            event.info = Some((*self.info).clone());
        }
        let max_frame = slot.max_frame();
        if let Some(len) = too_large(&event, max_frame) {
            Metrics::inc(&metrics.dropped_event_too_large);
            if let Some(unlogged) = OVERSIZE_LOGGED.admit() {
                tracing::error!(
                    client = event.client,
                    len,
                    max_frame,
                    unlogged,
                    "dropped a client event too large for an internal frame (check max_message_size, max_session_bytes and link.max_frame)"
                );
            }
            return Ok(());
        }
        self.last_seq = slot.send(event, &self.info)?;
        self.introduced = true;
        Metrics::inc(&metrics.events_sent);
        Ok(())
    }

    /// Sends `events` in order on `link` (the bound one), waiting for room for each. If the link
    /// goes away, returns the events from the first one it refused on, in order.
    async fn send_all(&mut self, link: &WorkerLink, events: Vec<Event>, metrics: &Metrics) -> Result<(), Vec<Event>> {
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            let sent = match link.reserve().await {
                Some(slot) => self.send(slot, event, metrics),
                None => Err(LinkGone(event)),
            };
            if let Err(LinkGone(refused)) = sent {
                let mut rest = vec![refused];
                rest.extend(events);
                return Err(rest);
            }
        }
        Ok(())
    }

    /// Sends `events` of a client whose task has finished to any worker, re-introducing the
    /// client whenever a link dies under it and the rest goes to another; waits for a worker
    /// until `deadline`. Returns the events no worker took by then.
    pub async fn deliver(
        &mut self,
        router: &Router,
        metrics: &Metrics,
        mut events: Vec<Event>,
        deadline: Instant,
    ) -> Result<(), Vec<Event>> {
        while !events.is_empty() {
            let Some(link) = self.bind_any(router, deadline).await else { return Err(events) };
            match self.send_all(&link, events, metrics).await {
                Ok(()) => return Ok(()),
                Err(rest) => events = rest,
            }
        }
        Ok(())
    }

    /// Waits until the bound worker acknowledged every event this client sent it, at most
    /// `within` (handlers acknowledge after their sends, so their replies are queued by then).
    pub async fn acknowledged(&self, within: Duration) {
        if let Some(link) = &self.link {
            let mut acked = link.acked();
            let last = self.last_seq;
            let _ = tokio::time::timeout(within, acked.wait_for(|a| *a >= last)).await;
        }
    }

    /// Sends one event of the client's own to its worker, binding or re-binding as needed. Waits
    /// (the client is not read meanwhile) while no worker is usable, up to the configured hold
    /// time; past it the event is dropped and counted.
    ///
    /// Not an `async fn`, which would keep `kind` twice in every connection's task (as argument
    /// and as local); `cx` is taken by value for the same reason.
    #[allow(clippy::manual_async_fn)] // see above: the `async fn` form is 72 bytes larger
    pub fn dispatch<'a>(
        &'a mut self,
        cx: ClientCx<'a>,
        mut kind: EventKind,
    ) -> impl Future<Output = Result<(), Unrouted>> + 'a {
        async move {
            let closing = matches!(kind, EventKind::Close);
            loop {
                let link = self.ensure_bound(&cx, closing).await?;
                // Room first, then the event: the event is never held across the wait, which
                // keeps this future (part of every connection's task) small.
                let Some(slot) = link.reserve().await else { continue };
                let (session, session_writes) = cx.handle.session_snapshot();
                let event = Event {
                    seq: 0, // numbered when queued on the link
                    client: cx.handle.id,
                    kind,
                    info: None, // added by `send` for a worker that has not met the client
                    session,
                    session_writes,
                    redelivered: false,
                };
                match self.send(slot, event, &cx.gw.state.metrics) {
                    Ok(_) => return Ok(()),
                    // The link died while we waited for room: try the next worker.
                    Err(LinkGone(event)) => kind = event.kind,
                }
            }
        }
    }

    /// The link to send on: the bound one while it is usable and nothing awaits redelivery;
    /// otherwise switch workers first (see the module docs), sending the handed-back events.
    pub async fn ensure_bound(&mut self, cx: &ClientCx<'_>, closing: bool) -> Result<Arc<WorkerLink>, Unrouted> {
        if let Some(l) = self.usable()
            && !cx.handle.redelivery.pending()
        {
            return Ok(l.clone());
        }
        // Switching workers is rare: boxed, it does not enlarge every connection's task.
        Box::pin(self.switch_worker(cx, closing)).await
    }

    async fn switch_worker(&mut self, cx: &ClientCx<'_>, closing: bool) -> Result<Arc<WorkerLink>, Unrouted> {
        let metrics = &cx.gw.state.metrics;
        loop {
            if let Some(l) = self.usable()
                && !cx.handle.redelivery.pending()
            {
                return Ok(l.clone());
            }
            if let Some(old) = self.link.clone()
                && !old.usable()
            {
                self.wait_for_previous(&old, cx.gw.config.grace_period + Duration::from_secs(10)).await;
                self.unbind();
            }
            let link = match self.link.clone() {
                Some(l) => l,
                None => self.pick_worker(cx, closing).await?,
            };
            let Err(rest) = self.send_all(&link, cx.handle.redelivery.take(), metrics).await else {
                return Ok(link);
            };
            // The new worker went away too (or started draining). A worker that went away hands
            // back what we already sent it; the rest is newer, so it goes behind that. A draining
            // worker keeps and handles what it was sent: nothing comes back, nothing to wait for.
            if link.gone.is_cancelled() {
                let _ = tokio::time::timeout(HAND_BACK_WAIT, link.handed_off.cancelled()).await;
            }
            if let Err(rest) = cx.handle.redelivery.hand_back(rest) {
                crate::redeliver::spawn_orphans(cx.gw, self.info.clone(), rest);
            }
        }
    }

    /// Binds to a usable worker, waiting for one up to the hold time (shorter for a closing
    /// client). The wait ends early when the gateway stops or the client is closed, except for a
    /// closing client, whose close event still deserves its short wait.
    async fn pick_worker(&mut self, cx: &ClientCx<'_>, closing: bool) -> Result<Arc<WorkerLink>, Unrouted> {
        let wait = if closing { CLOSING_WAIT } else { cx.gw.config.worker_wait };
        let deadline = Instant::now() + wait;
        let picked = tokio::select! {
            l = self.bind_any(&cx.gw.router, deadline) => l,
            _ = cx.shutdown.cancelled(), if !closing => return Err(Unrouted::ShuttingDown),
            _ = cx.handle.kill.cancelled(), if !closing => return Err(Unrouted::Closed),
        };
        picked.ok_or_else(|| {
            Metrics::inc(&cx.gw.state.metrics.dropped_no_worker);
            tracing::warn!("no business worker available; event dropped");
            Unrouted::NoWorker(wait)
        })
    }

    /// Waits until the previous worker acknowledged this client's last event, or its link is gone
    /// and has handed unacknowledged events back; at most `limit`.
    async fn wait_for_previous(&self, old: &WorkerLink, limit: Duration) {
        let mut acked = old.acked();
        let limit = Instant::now() + limit;
        loop {
            if old.gone.is_cancelled() {
                let _ = tokio::time::timeout(HAND_BACK_WAIT, old.handed_off.cancelled()).await;
                return;
            }
            if *acked.borrow_and_update() >= self.last_seq {
                return;
            }
            tokio::select! {
                _ = acked.changed() => {}
                _ = old.gone.cancelled() => {}
                _ = tokio::time::sleep_until(limit) => {
                    tracing::warn!(worker = %old.name, "previous worker never acknowledged; moving on");
                    return;
                }
            }
        }
    }
}

/// Oversize events are logged at most once per this window (each is counted).
static OVERSIZE_LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// What an event frame holds besides the lengths of its strings and byte buffers, at most: its
/// numbers, tags and the length prefixes of its fields (bincode varints, 9 bytes at most each).
const EVENT_FIXED_BYTES: usize = 160;
/// What each header adds besides its name and value: their two length prefixes.
const HEADER_FIXED_BYTES: usize = 18;

/// `Some(encoded length)` if `event` does not fit in a frame of `max_frame` bytes. An upper
/// bound from the lengths of its parts settles it for every event of a sane configuration; only
/// one near the limit is measured exactly.
fn too_large(event: &Event, max_frame: usize) -> Option<usize> {
    if upper_bound(event) <= max_frame {
        return None;
    }
    let exact = framed_len(event);
    (exact > max_frame).then_some(exact)
}

/// At least the length of `event`'s frame payload, from the lengths of its parts.
fn upper_bound(event: &Event) -> usize {
    let strings = |parts: &[&str]| parts.iter().map(|s| s.len()).sum::<usize>();
    let kind = match &event.kind {
        EventKind::Connect | EventKind::Close | EventKind::Resume { .. } => 0,
        EventKind::Message(p) => p.data.len(),
        EventKind::WebSocketConnect { path, query, headers } => {
            strings(&[path, query]) + headers.iter().map(|(n, v)| n.len() + v.len() + HEADER_FIXED_BYTES).sum::<usize>()
        }
    };
    let info = event.info.as_ref().map_or(0, |i| strings(&[&i.client_addr, &i.gateway_addr, &i.listener]));
    EVENT_FIXED_BYTES + kind + info + event.session.as_ref().map_or(0, |s| s.len())
}

/// The length of `event`'s frame payload, `FromGateway::Event(event)`: the event and a variant
/// tag (counted as the longest a tag can be, 5 bytes; it takes 1).
fn framed_len(event: &Event) -> usize {
    codec::encoded_len(event).map_or(usize::MAX, |n| n.saturating_add(5))
}

impl Drop for Binding {
    fn drop(&mut self) {
        self.unbind();
    }
}

/// Events a dead worker link handed back to a client, waiting to go to its next worker before
/// anything newer. Link tasks hand back and the client task takes, so it lives in the client's
/// handle; once the client task has finished, hand-backs are refused and go the orphan way.
///
/// The queue is a `gw_delivery::BoundedQueue` without limits (what comes back is what a dead
/// worker link held, already bounded by that link), made on the first hand-back: a client whose
/// worker never died, nearly every one, keeps a pointer here and no queue.
#[derive(Debug, Default)]
pub(crate) struct Redelivery {
    state: Mutex<Handed>,
    /// Set while events wait; checked on every dispatch without taking the lock.
    pending: AtomicBool,
    /// Set by a hand-back, taken by the client task's wait (one wake-up per hand-back, as a
    /// `Notify` permit was).
    signalled: AtomicBool,
    /// The client task, woken when events were handed back. One waker, no lock: only the
    /// client's own task waits, once per turn of its loop (see `KillSwitch`).
    ready: AtomicWaker,
}

/// What was handed back to one client.
#[derive(Debug, Default)]
enum Handed {
    /// Nothing yet, and the client task runs.
    #[default]
    Nothing,
    /// The client task finished before anything was handed back.
    Closed,
    /// The queue, open until the client task finishes.
    Queue(Box<BoundedQueue<Event, Weightless>>),
}

impl Redelivery {
    fn lock(&self) -> MutexGuard<'_, Handed> {
        self.state.lock().expect("redelivery lock")
    }

    /// Queues handed-back events for the client task, behind any still waiting; gives them back
    /// if the task has finished.
    pub fn hand_back(&self, events: Vec<Event>) -> Result<(), Vec<Event>> {
        let mut state = self.lock();
        let queue = match &mut *state {
            Handed::Closed => return Err(events),
            Handed::Queue(queue) => queue,
            Handed::Nothing => {
                *state = Handed::Queue(Box::new(BoundedQueue::new(Limits::UNBOUNDED)));
                let Handed::Queue(queue) = &mut *state else { unreachable!("just set") };
                queue
            }
        };
        // Unbounded, so only a closed queue refuses.
        queue.append(events).map_err(|refused| refused.item)?;
        // Set even for an empty batch, as before: the client task then finds nothing to take.
        self.pending.store(true, Ordering::Release);
        drop(state);
        self.signalled.store(true, Ordering::Release);
        self.ready.wake();
        Ok(())
    }

    /// Whether handed-back events wait.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Resolves when events were handed back since it last resolved (cancel-safe). For the
    /// client's own task only.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            self.ready.register(cx.waker());
            if self.signalled.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// Takes the handed-back events, in order.
    pub fn take(&self) -> Vec<Event> {
        let mut state = self.lock();
        self.pending.store(false, Ordering::Release);
        match &mut *state {
            Handed::Queue(queue) => Vec::from(queue.drain().items),
            Handed::Nothing | Handed::Closed => Vec::new(),
        }
    }

    /// The client task finished but the client is held (recovery): what is handed back from
    /// now on waits here for its resume, which moves it to the new connection
    /// ([`Self::close`] there), or for its release, which delivers it before its close event.
    pub fn park(&self) {
        // The finished task's waker would keep its memory alive while the client is held.
        drop(self.ready.take());
    }

    /// Marks the client task finished and returns what is still waiting.
    pub fn close(&self) -> Vec<Event> {
        let mut state = self.lock();
        self.pending.store(false, Ordering::Release);
        // The finished task's waker would keep its memory alive for as long as the handle lives
        // (a held client's does).
        drop(self.ready.take());
        match &mut *state {
            Handed::Queue(queue) => Vec::from(queue.close()),
            Handed::Nothing | Handed::Closed => {
                *state = Handed::Closed;
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gw_proto::{FromGateway, Payload, Protocol};

    fn event(kind: EventKind, session: usize, info: bool) -> Event {
        Event {
            seq: u64::MAX,
            client: u64::MAX,
            kind,
            info: info.then(|| ClientInfo {
                client_addr: "[2001:db8::1]:65535".into(),
                gateway_addr: "[2001:db8::2]:7272".into(),
                listener: "websocket://[::]:7272".into(),
                protocol: Protocol::WebSocket,
            }),
            session: (session > 0).then(|| Bytes::from(vec![b'x'; session])),
            session_writes: u64::MAX,
            redelivered: true,
        }
    }

    #[test]
    fn the_cheap_bound_is_never_below_the_frame_an_event_takes() {
        let headers = |n: usize, len: usize| (0..n).map(|i| (format!("h{i}"), "v".repeat(len))).collect::<Vec<_>>();
        let kinds = [
            EventKind::Connect,
            EventKind::Close,
            EventKind::Message(Payload::binary(vec![0u8; 70_000])),
            EventKind::Message(Payload::text("")),
            EventKind::WebSocketConnect { path: "/".repeat(300), query: "q".repeat(70_000), headers: headers(64, 100) },
            EventKind::WebSocketConnect { path: String::new(), query: String::new(), headers: headers(64, 0) },
        ];
        for kind in kinds {
            for (session, info) in [(0, false), (1, true), (250, true), (100_000, true)] {
                let e = event(kind.clone(), session, info);
                let mut frame = Vec::new();
                gw_proto::encode_frame(&FromGateway::Event(e.clone()), &mut frame, 1 << 24).unwrap();
                let payload = frame.len() - 4;
                let measured = framed_len(&e);
                assert!((payload..=payload + 4).contains(&measured), "{kind:?}: {measured} for {payload}");
                assert!(upper_bound(&e) >= measured, "{kind:?} session {session}: {} < {measured}", upper_bound(&e));
                assert_eq!(too_large(&e, measured), None, "fits");
                assert_eq!(too_large(&e, measured - 1), Some(measured), "one byte short");
            }
        }
    }

    fn numbered(seqs: impl IntoIterator<Item = u64>) -> Vec<Event> {
        seqs.into_iter().map(|seq| Event { seq, ..event(EventKind::Connect, 0, false) }).collect()
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn handed_back_events_wait_in_order_and_wake_the_client_task() {
        let r = Redelivery::default();
        assert!(!r.pending());
        r.hand_back(numbered([3, 4])).unwrap();
        r.hand_back(numbered([1])).unwrap();
        assert!(r.pending());
        tokio::time::timeout(Duration::ZERO, r.notified()).await.expect("the client task was not woken");
        assert_eq!(seqs(&r.take()), [3, 4, 1], "a later hand-back goes behind the earlier one");
        assert!(!r.pending());
        assert!(r.take().is_empty());
    }

    #[test]
    fn a_client_task_that_finished_before_any_hand_back_refuses_them() {
        let r = Redelivery::default();
        assert!(r.take().is_empty() && r.close().is_empty());
        assert_eq!(seqs(&r.hand_back(numbered([1])).unwrap_err()), [1]);
        assert!(!r.pending());
    }

    #[test]
    fn a_finished_client_task_hands_back_what_waited_and_refuses_the_rest() {
        let r = Redelivery::default();
        r.hand_back(numbered([5, 6])).unwrap();
        assert_eq!(seqs(&r.close()), [5, 6]);
        assert!(!r.pending());
        let refused = r.hand_back(numbered([7])).unwrap_err();
        assert_eq!(seqs(&refused), [7], "refused events go the orphan way, not lost");
        assert!(!r.pending() && r.close().is_empty());
    }
}
