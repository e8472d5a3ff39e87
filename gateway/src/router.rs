//! Which worker gets a client's events: sticky per client, least-loaded first, re-bound when the
//! worker goes away or drains.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use gw_proto::FromGateway;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A connected business worker.
#[derive(Debug)]
pub(crate) struct WorkerLink {
    pub id: u64,
    pub name: String,
    pub tx: mpsc::Sender<FromGateway>,
    /// Clients currently bound to this worker.
    pub load: AtomicUsize,
    /// The worker asked for no new events (it is being replaced).
    pub draining: AtomicBool,
    /// Cancelled when the link is gone.
    pub gone: CancellationToken,
    /// Highest event sequence number the worker acknowledged.
    pub acked: AtomicU64,
}

impl WorkerLink {
    pub fn usable(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && !self.gone.is_cancelled() && !self.tx.is_closed()
    }
}

/// The set of worker links.
#[derive(Debug)]
pub(crate) struct Router {
    links: RwLock<Vec<Arc<WorkerLink>>>,
    next_id: AtomicU64,
    usable: watch::Sender<usize>,
}

impl Router {
    pub fn new() -> Self {
        Self { links: RwLock::new(Vec::new()), next_id: AtomicU64::new(1), usable: watch::channel(0).0 }
    }

    pub fn add(&self, name: String, tx: mpsc::Sender<FromGateway>) -> Arc<WorkerLink> {
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name,
            tx,
            load: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            gone: CancellationToken::new(),
            acked: AtomicU64::new(0),
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
}
