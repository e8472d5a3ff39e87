//! Which worker gets a client's events: sticky per client, least-loaded first, re-bound when the
//! worker goes away or drains. Each worker link keeps the events it was given until the worker
//! acknowledges them, so a worker that dies loses nothing: its unacknowledged events go back to
//! their clients and on to another worker, in order, marked as redelivered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use gw_proto::{ClientInfo, Event, FromGateway};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

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
    /// Events sent and not yet acknowledged, in sequence order, and the next sequence number.
    /// Held only for a push or a pop; the lock also makes sequence order equal queue order.
    retained: Mutex<Retained>,
    /// Highest sequence number the worker acknowledged.
    acked: watch::Sender<u64>,
    /// Largest frame the link carries: an event must fit before it is numbered.
    pub max_frame: usize,
}

#[derive(Debug, Default)]
struct Retained {
    next_seq: u64,
    /// Each event with its client's info, so a redelivered batch can introduce the client to a
    /// worker that has never seen it.
    events: VecDeque<(Event, Arc<ClientInfo>)>,
}

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
        let mut r = self.link.retained.lock().expect("retained lock");
        // Checked under the lock the hand-back takes (after `gone` is set): an event is either
        // retained before the hand-back, and handed back with the rest, or refused here. Without
        // this, an event retained just after the hand-back was never sent anywhere.
        // Likewise for a drain: once `seal` returned, nothing more is queued here.
        if self.link.gone.is_cancelled() || self.link.draining.load(Ordering::Acquire) {
            return Err(LinkGone(event));
        }
        r.next_seq += 1;
        event.seq = r.next_seq;
        r.events.push_back((event.clone(), info.clone()));
        self.permit.send(FromGateway::Event(event));
        Ok(r.next_seq)
    }
}

impl WorkerLink {
    /// The worker handled everything up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut r = self.retained.lock().expect("retained lock");
        while r.events.front().is_some_and(|(e, _)| e.seq <= seq) {
            r.events.pop_front();
        }
        drop(r);
        self.acked.send_if_modified(|a| {
            let moved = seq > *a;
            *a = (*a).max(seq);
            moved
        });
    }

    /// Waits out an event being queued right now (queueing holds this lock). Called after
    /// `draining` is set: from then on every event routed here is already in the link's queue.
    pub fn seal(&self) {
        drop(self.retained.lock().expect("retained lock"));
    }

    /// Highest acknowledged sequence number, and its changes.
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Takes every unacknowledged event (the link is gone).
    pub fn take_retained(&self) -> Vec<(Event, Arc<ClientInfo>)> {
        self.retained.lock().expect("retained lock").events.drain(..).collect()
    }

    /// Events retained now (for metrics).
    pub fn retained_len(&self) -> usize {
        self.retained.lock().expect("retained lock").events.len()
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
            retained: Mutex::new(Retained::default()),
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

    /// Recomputes the number of usable workers (after add, remove or drain).
    pub fn refresh(&self) {
        let n = self.links.read().expect("router lock").iter().filter(|l| l.usable()).count();
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
    pub fn retained_total(&self) -> usize {
        self.links.read().expect("router lock").iter().map(|l| l.retained_len()).sum()
    }
}
