//! One client's events, one at a time and in order, through the application's handlers; the
//! session written back, the event acknowledged. Handler errors and panics are logged with the
//! client id and contained.
//!
//! A client costs the worker little while it is quiet: its [`ClientSlot`] holds its waiting
//! events (none, most of the time) and what its handlers carry from one event to the next. A
//! task runs only while the client has events, and lingers one to two [`LINGER`]s after the last
//! one (a chatty client keeps its task) before it ends; the next event starts a new one. A million
//! idle clients are a million slots of about 200 bytes, not a million tasks and queues.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use gw_delivery::{BoundedQueue, Limits, Weightless};
use gw_gateway_client::{ClientId, GatewayClient, Session};
use gw_gateway_links::GatewayLink;
use gw_proto::{ClientInfo, Command, Event, EventKind};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::WorkerStats;
use crate::acks::Acks;
use crate::events::{Context, Events, HandlerResult, ServerData, WebSocketRequest};
use crate::session_writes::PendingWrites;

/// How long a client's task waits for its next event before it ends.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// One client on one link: the events waiting for its handlers, and its handlers' state between
/// tasks.
pub(crate) struct ClientSlot {
    inner: Mutex<SlotInner>,
    /// Wakes a lingering task when an event comes.
    arrived: Notify,
}

struct SlotInner {
    /// At most the configured `queue` events (the rule: `gw_delivery::BoundedQueue`).
    pending: BoundedQueue<Event, Weightless>,
    /// A task is handling (or waiting for) this client's events; the next event must not start
    /// another.
    running: bool,
    /// What a task starts from; taken by the running task and put back when it ends.
    state: ClientState,
}

/// What a client's handlers carry from one event to the next.
#[derive(Default)]
struct ClientState {
    /// The client's addresses, parsed once (they come with the first event on each link).
    server: Option<Box<ServerData>>,
    /// Set when on_websocket_connect closed the client: later messages are not handled.
    rejected: bool,
    writes: PendingWrites,
}

/// What [`ClientSlot::push`] found.
pub(crate) enum Pushed {
    /// Queued; the client's task (running, or `start` to be spawned) will handle it.
    Queued { start: bool },
    /// The client already has `queue` events waiting: the event comes back (boxed: rare, and
    /// it keeps `Pushed` small).
    Full(Box<Event>),
}

impl ClientSlot {
    /// An empty slot whose client may have `queue` events waiting (at least one).
    pub fn new(queue: usize) -> Self {
        Self {
            inner: Mutex::new(SlotInner {
                pending: BoundedQueue::new(Limits::items(queue)),
                running: false,
                state: ClientState::default(),
            }),
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().expect("client slot lock")
    }

    /// Queues `event` unless the client's `queue` events already wait; then the link waits on
    /// the `space` its client task notifies (see [`next`](Self::next)).
    pub fn push(&self, event: Event) -> Pushed {
        let mut inner = self.lock();
        if let Err(refused) = inner.pending.push(event) {
            // The slot is never closed and an event weighs nothing: only full is possible.
            return Pushed::Full(Box::new(refused.item));
        }
        let start = !std::mem::replace(&mut inner.running, true);
        drop(inner);
        if !start {
            self.arrived.notify_one();
        }
        Pushed::Queued { start }
    }

    /// The next waiting event; notifies `space` when the link was refused room in this slot
    /// since the last time (it waits on `space` to push again).
    fn next(&self, space: &Notify) -> Option<Event> {
        let popped = self.lock().pending.pop()?;
        if popped.wake_producer {
            space.notify_one();
        }
        Some(popped.item)
    }

    /// Events waiting.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Where one client's task runs: the handlers, the Gateway API, and the link its events came on.
pub(crate) struct ClientTask<E> {
    pub events: Arc<E>,
    /// The handlers' Gateway API, `Some` once the worker is ready; events wait until then.
    pub ready: watch::Receiver<Option<GatewayClient>>,
    pub link: Arc<GatewayLink>,
    pub acks: Arc<Acks>,
    pub stats: Arc<WorkerStats>,
    pub client_id: ClientId,
    pub slot: Arc<ClientSlot>,
    /// The link waits on this while the client's slot is full.
    pub space: Arc<Notify>,
    /// Cancelled when the link carries no more events: nothing is worth lingering for.
    pub link_done: CancellationToken,
}

/// Handles the client's events until none is left and none came for [`LINGER`] (or its link
/// is done, or the client closed).
///
/// What stays the same from one event to the next is made once per task, not per event (a
/// callgrind profile under echo: BENCHMARKS.md, "Echo (issue 29)"): the handlers' [`Context`]
/// (its client id, addresses and Gateway API were cloned and dropped for every event), the wait
/// for the link's end (a waiter on a `Notify` shared by all the link's clients, added and removed
/// whenever a queue ran dry), and the linger timer, armed once per [`LINGER`] rather than
/// whenever the queue runs dry: when it fires after events were handled, it is armed again, so
/// a task ends between one and two [`LINGER`]s after its last event.
pub(crate) async fn client_task<E: Events>(task: ClientTask<E>) {
    let ClientTask { events, mut ready, link, acks, stats, client_id, slot, space, link_done } = task;
    let _running = Running::count(&stats);
    // Handle nothing before the worker is ready: the events wait in the slot (the gateway keeps
    // them until acknowledged). A worker stopped before it was ready handles none.
    let Some(gateway) = ready.wait_for(Option::is_some).await.ok().and_then(|g| g.clone()) else {
        return;
    };
    drop(ready);
    let mut state = std::mem::take(&mut slot.lock().state);
    // Boxed: a lingering task should not hold room for it while it waits (see `handle`).
    let mut ctx = Box::new(Context {
        client_id,
        session: Session::new(),
        server: state.server.as_deref().cloned().unwrap_or_else(|| server_data(None)),
        redelivered: false,
        gateway,
        link,
        local: 0,
        closed: false,
    });
    let mut link_done = pin!(link_done.cancelled());
    let mut linger = pin!(tokio::time::sleep(LINGER));
    // Events handled since the linger timer was last armed.
    let mut handled = 0u64;
    loop {
        let Some(event) = slot.next(&space) else {
            // Wait a little for the next event; `arrived` keeps a wake-up sent meanwhile.
            let woken = tokio::select! {
                _ = slot.arrived.notified() => true,
                _ = linger.as_mut() => {
                    if std::mem::take(&mut handled) > 0 {
                        // Not quiet for a whole LINGER yet.
                        linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                        continue;
                    }
                    false
                }
                _ = link_done.as_mut() => false,
            };
            if woken {
                continue;
            }
            let mut inner = slot.lock();
            if inner.pending.is_empty() {
                // A quiet client keeps no buffer for events.
                inner.pending.release_idle();
                inner.state = state;
                inner.running = false;
                return;
            }
            continue;
        };
        handled += 1;
        let closing = matches!(event.kind, EventKind::Close);
        // Boxed: the handlers' futures are large (kilobytes), and a lingering task should not
        // hold room for them while it waits.
        Box::pin(handle(&*events, &stats, &mut ctx, &mut state, event, &acks)).await;
        if closing {
            // Nothing comes after a close: the slot is gone from the link's clients.
            return;
        }
    }
}

/// Counts a client's task in `client_tasks` while it lives.
struct Running(Arc<WorkerStats>);

impl Running {
    fn count(stats: &Arc<WorkerStats>) -> Self {
        stats.client_tasks.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.client_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One event through the handlers, with the task's `ctx` (whatever the previous handler left in
/// its public fields is put right first).
async fn handle<E: Events>(
    events: &E,
    stats: &WorkerStats,
    ctx: &mut Context,
    state: &mut ClientState,
    event: Event,
    acks: &Acks,
) {
    if let Some(info) = &event.info {
        state.server = Some(Box::new(server_data(Some(info))));
    }
    stats.events.fetch_add(1, Ordering::Relaxed);
    if event.redelivered {
        stats.redelivered.fetch_add(1, Ordering::Relaxed);
    }
    let original = state.writes.catch_up(event.session_writes, parse_session(event.session.as_ref()));
    let server = state.server.as_deref();
    if server.is_some_and(|s| *s != ctx.server) || (server.is_none() && ctx.server != server_data(None)) {
        ctx.server = server.cloned().unwrap_or_else(|| server_data(None));
    }
    let link = &ctx.link;
    if (ctx.client_id.gateway.as_str(), ctx.client_id.instance, ctx.client_id.local)
        != (link.address.as_str(), link.instance, event.client)
    {
        ctx.client_id = link.client_id(event.client);
    }
    ctx.session = original.clone();
    ctx.redelivered = event.redelivered;
    ctx.local = event.client;
    ctx.closed = state.rejected;
    let closing = matches!(event.kind, EventKind::Close);
    match event.kind {
        EventKind::Connect => guarded("on_connect", stats, events.on_connect(ctx)).await,
        EventKind::WebSocketConnect { path, query, headers } => {
            let request = WebSocketRequest { path, query, headers };
            guarded("on_websocket_connect", stats, events.on_websocket_connect(ctx, &request)).await;
        }
        EventKind::Message(msg) if !ctx.closed => {
            guarded("on_message", stats, events.on_message(ctx, msg)).await;
        }
        EventKind::Message(_) => tracing::debug!("message after the client was closed by a handler; skipped"),
        EventKind::Close => guarded("on_close", stats, events.on_close(ctx)).await,
        EventKind::Resume { replayed } => guarded("on_resume", stats, events.on_resume(ctx, replayed)).await,
    }
    state.rejected = ctx.closed;
    if !closing && ctx.session != original {
        let (changed, removed) = session_diff(&original, &ctx.session);
        let seq = state.writes.record(event.session_writes, changed.clone(), removed.clone());
        write_back(&ctx.link, event.client, seq, &changed, removed).await;
    }
    acks.handled(event.seq);
}

async fn guarded(what: &str, stats: &WorkerStats, handler: impl Future<Output = HandlerResult>) {
    let started = std::time::Instant::now();
    let outcome = AssertUnwindSafe(handler).catch_unwind().await;
    stats.latency.observe(started.elapsed());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "{what} handler failed");
        }
        Err(panic) => {
            stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            tracing::error!(panic = %msg, "{what} handler panicked; the worker goes on");
        }
    }
}

/// The top-level keys a handler changed (with their new values) or removed.
fn session_diff(before: &Session, after: &Session) -> (Session, Vec<String>) {
    let changed =
        after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    (changed, removed)
}

/// Sends only the top-level keys the handler changed or removed.
async fn write_back(link: &GatewayLink, client: u64, seq: u64, changed: &Session, removed: Vec<String>) {
    let changed = Bytes::from(serde_json::to_vec(changed).expect("a JSON map serializes"));
    if let Err(e) = link.command(Command::WriteBackSession { client, seq, changed, removed }).await {
        tracing::warn!(error = %e, "session write-back failed");
    }
}

fn parse_session(bytes: Option<&Bytes>) -> Session {
    match bytes.map(|b| serde_json::from_slice::<Value>(b)) {
        Some(Ok(Value::Object(m))) => m,
        _ => Session::new(),
    }
}

fn server_data(info: Option<&ClientInfo>) -> ServerData {
    ServerData {
        client_addr: info.and_then(|i| i.client_addr.parse().ok()),
        gateway_addr: info.and_then(|i| i.gateway_addr.parse().ok()),
        listener: info.map(|i| i.listener.to_string()).unwrap_or_default(),
        protocol: info.map(|i| i.protocol),
    }
}

#[cfg(test)]
mod tests {
    fn future_size<A, F: Future>(_: impl Fn(A) -> F) -> usize {
        size_of::<F>()
    }

    /// A lingering task (one per client that had an event in the last second) holds its future
    /// whole; the handlers' own futures, kilobytes with their `Context`, are boxed per event
    /// instead of sized into it. 3,808 bytes before they were boxed.
    fn event(seq: u64) -> gw_proto::Event {
        gw_proto::Event {
            seq,
            client: 7,
            kind: gw_proto::EventKind::Connect,
            info: None,
            session: None,
            session_writes: 0,
            redelivered: false,
        }
    }

    #[test]
    fn the_first_event_starts_a_task_and_a_full_slot_gives_the_event_back() {
        use super::{ClientSlot, Pushed};
        let slot = ClientSlot::new(2);
        assert!(matches!(slot.push(event(1)), Pushed::Queued { start: true }));
        assert!(matches!(slot.push(event(2)), Pushed::Queued { start: false }));
        match slot.push(event(3)) {
            Pushed::Full(back) => assert_eq!(back.seq, 3),
            Pushed::Queued { .. } => panic!("queued past the limit"),
        }
        assert_eq!(slot.waiting(), 2);
    }

    /// The link waits on `space` after a refusal; the client task's next pop must wake it, or
    /// the link stalls for good. A pop nobody waits for stores no wake-up.
    #[tokio::test]
    async fn a_pop_after_a_refusal_wakes_the_waiting_link_once() {
        use super::{ClientSlot, Pushed};
        use std::time::Duration;
        use tokio::sync::Notify;
        let space = Notify::new();
        let woken = || async { tokio::time::timeout(Duration::ZERO, space.notified()).await.is_ok() };
        let slot = ClientSlot::new(1);
        assert!(matches!(slot.push(event(1)), Pushed::Queued { .. }));
        assert_eq!(slot.next(&space).map(|e| e.seq), Some(1));
        assert!(!woken().await, "woken with nobody refused");
        assert!(matches!(slot.push(event(2)), Pushed::Queued { .. }));
        assert!(matches!(slot.push(event(3)), Pushed::Full(_)));
        assert!(!woken().await, "woken before there was room");
        assert_eq!(slot.next(&space).map(|e| e.seq), Some(2));
        assert!(woken().await, "the waiting link was not woken");
        assert!(matches!(slot.push(event(3)), Pushed::Queued { .. }));
        assert_eq!(slot.next(&space).map(|e| e.seq), Some(3));
        assert!(!woken().await, "woken twice for one refusal");
        assert!(slot.next(&space).is_none());
    }

    /// An application whose handlers hold something across an await, as real ones do.
    struct Echo;

    impl crate::Events for Echo {
        async fn on_message(&self, ctx: &mut crate::Context, msg: crate::Message) -> crate::HandlerResult {
            let copy = msg.clone();
            ctx.send(msg).await?;
            ctx.gateway().send_to_group("g", copy).await?;
            Ok(())
        }
    }

    #[test]
    fn a_client_task_is_small_while_it_waits() {
        let size = future_size(super::client_task::<Echo>);
        assert!(size <= 1024, "a client task's future is {size} bytes");
    }
}
