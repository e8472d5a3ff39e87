//! From a gateway link straight to a client's task: the worker's side of its links.
//!
//! Each link reads its gateway's events in order and queues each one in the slot of its client
//! (one [`ClientSlot`] per client per link, made on the client's first event), starting the
//! client's task when none runs, and waiting while that client already has `queue` events
//! waiting; the link meanwhile reads nothing more but keeps its heartbeat. A client's events
//! therefore reach its handlers in the order the gateway sent them, while different clients run
//! concurrently. Beside each link runs its acknowledgement sender.
//!
//! Stopping: [`Dispatch::drain`] asks every gateway to route nothing new here and waits for each
//! one's `Drained` answer, after which that link carries no more events and its clients' tasks
//! finish what they hold.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gw_gateway_client::GatewayClient;
use gw_gateway_links::{GatewayLink, GatewayLinks, Inbound, LinkInbound};
use gw_link::LinkError;
use gw_proto::{Event, EventKind, ToGateway};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::WorkerStats;
use crate::acks::{Acks, send_acks};
use crate::client_task::{ClientSlot, ClientTask, Pushed, client_task};
use crate::events::Events;

/// The worker's [`Inbound`]: what every link does with its events. Cheap to clone.
pub(crate) struct Dispatch<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for Dispatch<E> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

struct Shared<E> {
    events: Arc<E>,
    /// The handlers' Gateway API; `None` until the worker is ready, and events wait until then.
    gateway: watch::Sender<Option<GatewayClient>>,
    /// Every client task.
    tracker: TaskTracker,
    /// Events queued per client before its link waits.
    queue: usize,
    stats: Arc<WorkerStats>,
    /// The worker asked the gateways to route nothing new to it.
    draining: AtomicBool,
    /// Links (by id) whose gateway answered the drain.
    drained: Mutex<HashSet<u64>>,
    /// Bumped when a link answers the drain or goes down.
    drain_progress: watch::Sender<u64>,
}

impl<E: Events> Dispatch<E> {
    pub fn new(events: Arc<E>, tracker: TaskTracker, queue: usize, stats: Arc<WorkerStats>) -> Self {
        let shared = Shared {
            events,
            gateway: watch::channel(None).0,
            tracker,
            queue,
            stats,
            draining: AtomicBool::new(false),
            drained: Mutex::new(HashSet::new()),
            drain_progress: watch::channel(0).0,
        };
        Self { shared: Arc::new(shared) }
    }

    /// Lets events through to the handlers, which reach the cluster through `gateway`.
    pub fn open(&self, gateway: GatewayClient) {
        self.shared.gateway.send_replace(Some(gateway));
    }

    /// Drops the handlers' Gateway API once the links are closed: it holds the links, whose
    /// driver holds this dispatch, and the application would otherwise never be dropped.
    pub fn close(&self) {
        self.shared.gateway.send_replace(None);
    }

    /// Asks every gateway, including any linked from now on, to route no new events here, then
    /// waits until each linked gateway has answered that everything it routed here has been sent
    /// (a gateway whose link goes away counts as answered), or `deadline` passes.
    pub async fn drain(&self, links: &GatewayLinks, deadline: Instant) {
        // Set before taking the list: a link added after the list was taken sees the flag.
        self.shared.draining.store(true, Ordering::SeqCst);
        let mut progress = self.shared.drain_progress.subscribe();
        for link in links.links() {
            let _ = tokio::time::timeout_at(deadline, link.send(ToGateway::Drain)).await;
        }
        loop {
            progress.borrow_and_update();
            let waiting: Vec<String> = {
                let drained = self.shared.drained.lock().expect("drained lock");
                links
                    .links()
                    .into_iter()
                    .filter(|l| !drained.contains(&l.link_id()))
                    .map(|l| l.address.clone())
                    .collect()
            };
            if waiting.is_empty() {
                tracing::debug!("every gateway answered the drain");
                return;
            }
            tokio::select! {
                _ = progress.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(gateways = ?waiting, "grace period over before these gateways answered the drain");
                    return;
                }
            }
        }
    }
}

impl<E: Events> Inbound for Dispatch<E> {
    type Link = LinkDispatch<E>;

    fn link_up(&self, link: &Arc<GatewayLink>) -> LinkDispatch<E> {
        self.shared.stats.gateway_links.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(gateway = %link.address, "gateway link up");
        if self.shared.draining.load(Ordering::SeqCst) {
            // A stopping worker that links to a gateway (one restarted, or back from a stall)
            // during its drain tells it at once, or that gateway would bind clients to a worker
            // about to exit. Nothing was sent on the link yet, so there is room.
            let _ = link.try_send(ToGateway::Drain);
        }
        LinkDispatch {
            shared: self.shared.clone(),
            link: link.clone(),
            clients: HashMap::new(),
            acks: Arc::default(),
            space: Arc::default(),
            done: CancellationToken::new(),
        }
    }
}

/// One link's clients: the slot of each.
pub(crate) struct LinkDispatch<E> {
    shared: Arc<Shared<E>>,
    link: Arc<GatewayLink>,
    clients: HashMap<u64, Arc<ClientSlot>>,
    acks: Arc<Acks>,
    /// Notified when a client whose slot refused an event takes one from it.
    space: Arc<Notify>,
    /// Cancelled when this link carries no more events (drained, or down).
    done: CancellationToken,
}

impl<E: Events> LinkDispatch<E> {
    /// No more events come on this link: its clients' tasks end once they finish what they hold.
    fn forget_clients(&mut self) {
        self.shared.stats.clients.fetch_sub(self.clients.len() as u64, Ordering::Relaxed);
        self.clients.clear();
        self.done.cancel();
    }

    fn spawn_client(&self, client: u64, slot: Arc<ClientSlot>) {
        let client_id = self.link.client_id(client);
        let span = tracing::info_span!("client", client_id = %client_id);
        let task = ClientTask {
            events: self.shared.events.clone(),
            ready: self.shared.gateway.subscribe(),
            link: self.link.clone(),
            acks: self.acks.clone(),
            stats: self.shared.stats.clone(),
            client_id,
            slot,
            space: self.space.clone(),
            link_done: self.done.clone(),
        };
        self.shared.tracker.spawn(client_task(task).instrument(span));
    }
}

impl<E: Events> LinkInbound for LinkDispatch<E> {
    async fn event(&mut self, event: Event) -> Result<(), LinkError> {
        // Before the worker is ready (linked to every listed gateway, after `on_worker_start`)
        // events wait in their clients' queues, not here: the link keeps reading, so replies to
        // queries made meanwhile (in `on_worker_start`, say) are not stuck behind them.
        let client = event.client;
        let closing = matches!(event.kind, EventKind::Close);
        let (stats, queue) = (&self.shared.stats, self.shared.queue);
        let slot = self
            .clients
            .entry(client)
            .or_insert_with(|| {
                stats.clients.fetch_add(1, Ordering::Relaxed);
                Arc::new(ClientSlot::new(queue))
            })
            .clone();
        let mut event = event;
        loop {
            match slot.push(event) {
                Pushed::Queued { start } => {
                    if start {
                        self.spawn_client(client, slot);
                    }
                    break;
                }
                // Waits while this client's queue is full: backpressure onto the gateway link.
                // `space` keeps a notification sent between the push and this wait.
                Pushed::Full(back) => {
                    event = *back;
                    self.space.notified().await;
                }
            }
        }
        if closing && self.clients.remove(&client).is_some() {
            self.shared.stats.clients.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn drained(&mut self) {
        // Nothing more comes on this link: its clients' tasks end once they finish what they hold.
        self.forget_clients();
        self.shared.drained.lock().expect("drained lock").insert(self.link.link_id());
        self.shared.drain_progress.send_modify(|n| *n += 1);
    }

    fn closing(&mut self) {
        // Acknowledge what was handled so the gateway does not redeliver it.
        if let Some(seq) = self.acks.take() {
            let _ = self.link.try_send(ToGateway::Ack { seq });
        }
    }

    fn alongside(&mut self) -> impl Future<Output = ()> + Send + 'static {
        send_acks(self.acks.clone(), self.link.clone())
    }

    fn down(mut self) {
        // The gateway re-routes these clients; their tasks finish what they hold.
        self.forget_clients();
        self.shared.stats.gateway_links.fetch_sub(1, Ordering::Relaxed);
        self.shared.drain_progress.send_modify(|n| *n += 1);
    }
}
