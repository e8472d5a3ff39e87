//! Which worker gets a client's events: sticky per client, least-loaded first, re-bound when the
//! worker goes away or drains. Each worker link keeps the events it was given until the worker
//! acknowledges them, so a worker that dies loses nothing: its unacknowledged events go back to
//! their clients and on to another worker, in order, marked as redelivered.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gw_delivery::{AckAhead, RetentionLog, Sealed};
use gw_proto::{ClientInfo, Event, FromGateway};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::log_limit::LogLimit;

/// A connected business worker.
#[derive(Debug)]
pub(crate) struct WorkerLink {
    pub id: u64,
    pub name: String,
    tx: mpsc::Sender<FromGateway>,
    /// Clients currently bound to this worker.
    pub load: AtomicUsize,
    /// The worker asked for no new events (it is being replaced).
    pub draining: AtomicBool,
    /// Cancelled when the link is gone.
    pub gone: CancellationToken,
    /// Cancelled once the unacknowledged events of a gone link were handed back to their clients.
    pub handed_off: CancellationToken,
    /// Events sent and not yet acknowledged, numbered, each with its client's info so a
    /// redelivered batch can introduce the client to a worker that has never seen it (the rule:
    /// `gw_delivery::RetentionLog`). Held only for a push, an ack or the hand-back; the lock
    /// also makes sequence order equal queue order.
    retained: Mutex<RetentionLog<(Event, Arc<ClientInfo>)>>,
    /// Highest sequence number the worker acknowledged.
    acked: watch::Sender<u64>,
    /// Largest frame the link carries: an event must fit before it is numbered.
    pub max_frame: usize,
}

/// Bad acknowledgements are logged at most once per this window.
static BAD_ACK_LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// The link went away before the event could be queued.
#[derive(Debug)]
pub(crate) struct LinkGone(pub Event);

impl WorkerLink {
    pub fn usable(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && !self.gone.is_cancelled() && !self.tx.is_closed()
    }

    /// Waits for room for one event in the link's queue; `None` once the link is gone. A caller
    /// that builds its event only after this returns keeps the event out of the waiting future,
    /// which is part of every client connection's task (see BENCHMARKS.md).
    pub async fn reserve(&self) -> Option<EventSlot<'_>> {
        self.tx.reserve().await.ok().map(|permit| EventSlot { link: self, permit })
    }
}

/// Room for one event on a worker link.
pub(crate) struct EventSlot<'a> {
    link: &'a WorkerLink,
    permit: mpsc::Permit<'a, FromGateway>,
}

impl EventSlot<'_> {
    /// Largest frame of the link this slot is on.
    pub fn max_frame(&self) -> usize {
        self.link.max_frame
    }

    /// Numbers, retains and queues the event; returns its sequence number, or the event back if
    /// the link is gone. Called only by `Binding::send`, which introduces the client first.
    // The event comes back only when the link is gone; boxing it would add an allocation there.
    #[allow(clippy::result_large_err)]
    pub fn send(self, mut event: Event, info: &Arc<ClientInfo>) -> Result<u64, LinkGone> {
        let mut log = self.link.retained.lock().expect("retained lock");
        // Checked under the lock the hand-back takes (after `gone` is set): an event is either
        // retained before the hand-back, and handed back with the rest, or refused here. Without
        // this, an event retained just after the hand-back was never sent anywhere.
        // Likewise for a drain: once `seal` returned, nothing more is queued here. (The log
        // refuses once sealed or taken; the flags refuse from the moment they are set.)
        if log.is_sealed() || self.link.gone.is_cancelled() || self.link.draining.load(Ordering::Acquire) {
            return Err(LinkGone(event));
        }
        event.seq = log.next_seq();
        match log.push((retained_copy(&event), info.clone())) {
            Ok(seq) => {
                self.permit.send(FromGateway::Event(event));
                Ok(seq)
            }
            // Not reached: checked above, under the same lock.
            Err(Sealed(_)) => Err(LinkGone(event)),
        }
    }
}

/// What the log keeps of an event for redelivery: all of it but the client's info, which the
/// log keeps once per event as the shared `Arc` (a hand-back re-introduces the client from it),
/// so the first event of a client on a link copies no strings for the log. The rest is
/// reference-counted (`Bytes`) but for a `WebSocketConnect`'s path, query and headers.
fn retained_copy(event: &Event) -> Event {
    Event {
        seq: event.seq,
        client: event.client,
        kind: event.kind.clone(),
        info: None,
        session: event.session.clone(),
        session_writes: event.session_writes,
        redelivered: event.redelivered,
    }
}

impl WorkerLink {
    /// The worker handled everything up to `seq`. An acknowledgement of an event never sent is
    /// the worker's bug: logged (rate-limited), it changes nothing, and it comes back as the
    /// error for the caller to count (`Metrics::bad_acks`).
    pub fn ack(&self, seq: u64) -> Result<(), AckAhead> {
        let acked = self.retained.lock().expect("retained lock").ack(seq);
        match acked {
            Ok(acked) => {
                if acked.moved {
                    self.acked.send_if_modified(|a| {
                        let moved = seq > *a;
                        *a = (*a).max(seq);
                        moved
                    });
                }
                Ok(())
            }
            Err(ahead) => {
                if let Some(unlogged) = BAD_ACK_LOGGED.admit() {
                    tracing::warn!(worker = %self.name, error = %ahead, unlogged, "bad acknowledgement from a worker");
                }
                Err(ahead)
            }
        }
    }

    /// Refuses every later event (called after `draining` is set) and waits out one being
    /// queued right now (queueing holds this lock): from then on every event routed here is
    /// already in the link's queue.
    pub fn seal(&self) {
        self.retained.lock().expect("retained lock").seal();
    }

    /// Highest acknowledged sequence number, and its changes.
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Takes every unacknowledged event, in sequence order (the link is gone); refuses every
    /// later one.
    pub fn take_retained(&self) -> Vec<(Event, Arc<ClientInfo>)> {
        Vec::from(self.retained.lock().expect("retained lock").take_all().events)
    }

    /// The sequence number of client `client`'s last event this link holds unacknowledged.
    pub fn last_retained_of(&self, client: u64) -> Option<u64> {
        let log = self.retained.lock().expect("retained lock");
        log.iter().filter(|(_, (e, _))| e.client == client).map(|(seq, _)| seq).last()
    }

    /// Events retained now (for metrics).
    pub fn retained_len(&self) -> usize {
        self.retained.lock().expect("retained lock").len()
    }
}

/// The set of worker links.
#[derive(Debug)]
pub(crate) struct Router {
    links: RwLock<Vec<Arc<WorkerLink>>>,
    next_id: AtomicU64,
    usable: watch::Sender<usize>,
    /// Largest frame of every worker link (`link.max_frame`).
    max_frame: usize,
}

impl Router {
    /// No links yet; each will carry frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { links: RwLock::new(Vec::new()), next_id: AtomicU64::new(1), usable: watch::channel(0).0, max_frame }
    }

    pub fn add(&self, name: String, tx: mpsc::Sender<FromGateway>) -> Arc<WorkerLink> {
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name,
            tx,
            load: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            gone: CancellationToken::new(),
            handed_off: CancellationToken::new(),
            retained: Mutex::new(RetentionLog::new()),
            acked: watch::channel(0).0,
            max_frame: self.max_frame,
        });
        self.links.write().expect("router lock").push(link.clone());
        self.refresh();
        link
    }

    pub fn remove(&self, link: &WorkerLink) {
        link.gone.cancel();
        self.links.write().expect("router lock").retain(|l| l.id != link.id);
        self.refresh();
    }

    /// Recomputes the number of usable workers (after add, remove or drain). Counted and
    /// published under the write lock: two refreshes at once (two workers linking together)
    /// would otherwise each publish their own count, the older one possibly last.
    pub fn refresh(&self) {
        let links = self.links.write().expect("router lock");
        let n = links.iter().filter(|l| l.usable()).count();
        self.usable.send_replace(n);
    }

    /// The usable worker with the fewest bound clients.
    pub fn pick(&self) -> Option<Arc<WorkerLink>> {
        self.links
            .read()
            .expect("router lock")
            .iter()
            .filter(|l| l.usable())
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .cloned()
    }

    /// Waits until at least one worker is usable.
    pub async fn wait_for_worker(&self) {
        let mut rx = self.usable.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    pub fn worker_count(&self) -> usize {
        *self.usable.borrow()
    }

    pub fn names(&self) -> Vec<String> {
        self.links.read().expect("router lock").iter().map(|l| l.name.clone()).collect()
    }

    /// Events waiting for acknowledgement on every link.
    /// Every link now.
    pub fn links(&self) -> Vec<Arc<WorkerLink>> {
        self.links.read().expect("router lock").clone()
    }

    pub fn retained_total(&self) -> usize {
        self.links.read().expect("router lock").iter().map(|l| l.retained_len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_proto::{EventKind, Protocol};

    fn info() -> Arc<ClientInfo> {
        Arc::new(ClientInfo {
            client_addr: "127.0.0.1:1".into(),
            gateway_addr: "127.0.0.1:2".into(),
            listener: "websocket://127.0.0.1:2".into(),
            protocol: Protocol::WebSocket,
        })
    }

    fn event(client: u64, with_info: bool) -> Event {
        Event {
            seq: 0,
            client,
            kind: EventKind::Connect,
            info: with_info.then(|| (*info()).clone()),
            session: None,
            session_writes: 0,
            redelivered: false,
        }
    }

    /// Sends one event on `link`; its sequence number, or `None` if the link refused it.
    async fn send(link: &WorkerLink, client: u64) -> Option<u64> {
        link.reserve().await.expect("room").send(event(client, true), &info()).ok()
    }

    fn queued(rx: &mut mpsc::Receiver<FromGateway>) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| match m {
                FromGateway::Event(e) => (e.seq, e.client),
                other => panic!("not an event: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn events_are_numbered_in_queue_order_and_kept_until_acknowledged() {
        let router = Router::new(1 << 20);
        let (tx, mut rx) = mpsc::channel(16);
        let link = router.add("w".into(), tx);
        for client in [7, 8, 7] {
            send(&link, client).await.unwrap();
        }
        assert_eq!(queued(&mut rx), [(1, 7), (2, 8), (3, 7)]);
        assert_eq!(router.retained_total(), 3);
        let mut acked = link.acked();
        link.ack(2).unwrap();
        assert_eq!((*acked.borrow_and_update(), link.retained_len()), (2, 1));
        // Stale, repeated and impossible acknowledgements change nothing; the impossible one is
        // an error for the caller to count.
        link.ack(1).unwrap();
        link.ack(2).unwrap();
        assert!(link.ack(9).is_err());
        assert!(!acked.has_changed().unwrap());
        assert_eq!(link.retained_len(), 1);
        // The link dies: what is left comes back, in order, without the info the queued copy
        // carried (the client's `Arc` comes with it instead).
        router.remove(&link);
        let back = link.take_retained();
        assert_eq!(back.iter().map(|(e, _)| (e.seq, e.client, e.info.is_some())).collect::<Vec<_>>(), [(3, 7, false)]);
        assert_eq!(&*back[0].1.listener, "websocket://127.0.0.1:2");
        assert_eq!(link.retained_len(), 0);
    }

    #[tokio::test]
    async fn a_sealed_or_emptied_link_refuses_every_later_event() {
        let router = Router::new(1 << 20);
        let (tx, mut rx) = mpsc::channel(16);
        let draining = router.add("draining".into(), tx);
        send(&draining, 1).await.unwrap();
        draining.draining.store(true, Ordering::Release);
        draining.seal();
        assert_eq!(send(&draining, 1).await, None);
        assert_eq!(queued(&mut rx), [(1, 1)], "a refused event is not queued");
        // What a draining worker was given stays until acknowledged.
        assert_eq!(draining.retained_len(), 1);

        let (tx, mut rx) = mpsc::channel(16);
        let dead = router.add("dead".into(), tx);
        send(&dead, 1).await.unwrap();
        // Taken before `gone` is set (the order does not matter: either one refuses).
        assert_eq!(dead.take_retained().len(), 1);
        assert_eq!(send(&dead, 2).await, None, "an event after the hand-back would be lost");
        assert_eq!(queued(&mut rx), [(1, 1)]);
    }

    #[test]
    fn workers_linking_at_the_same_moment_are_all_counted() {
        // Two workers that link at once (both learned of a new gateway from the register in the
        // same message) were counted as one: each computed the count and published it, and the
        // older count could be published last. Seen in the compose check of a late gateway.
        let router = Arc::new(Router::new(1 << 20));
        let mut keep = Vec::new();
        for round in 1..=300 {
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let adders: Vec<_> = (0..2)
                .map(|_| {
                    let (router, barrier) = (router.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let (tx, rx) = mpsc::channel(1);
                        barrier.wait();
                        (router.add("worker-0".into(), tx), rx)
                    })
                })
                .collect();
            keep.extend(adders.into_iter().map(|t| t.join().unwrap()));
            assert_eq!(router.worker_count(), 2 * round, "round {round}");
        }
    }
}
