//! Gateway-to-gateway links, from the gateway that dials: one link per other gateway, opened on
//! first need and kept while it lives, carrying every relayed client of that gateway (its
//! home) and what this gateway sends its peers (Pusher client events, and Pusher presence and
//! occupancy to and from channels' homes). A gateway
//! that cannot be reached is not dialled again for [`RETRY_AFTER`], so a reconnect storm toward
//! a dead gateway costs one dial, not one per client.
//!
//! The peers are the gateways the registers list (a gateway hears the list like a subscriber),
//! this one excepted.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_link::wire::GatewayPeerSide;
use gw_link::{Handler, LinkEngine, LinkError, LinkOptions};
use gw_proto::{Command, FromGateway, GatewayInfo, RelayFrame, ToGateway};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::gateway::Gateway;

/// How long a home that could not be reached is not dialled again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Commands queued for one peer gateway before more are dropped (and counted).
const PEER_QUEUE: usize = 4096;

/// What the home says about one relayed client.
#[derive(Debug)]
pub(crate) enum FromHome {
    /// Resumed there; frames follow.
    Opened,
    /// Not resumed: the `not_recovered` frame for the client.
    Refused(String),
    /// A frame for the client.
    Frame(RelayFrame),
}

/// Why a home could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MeshError {
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("it could not be reached a moment ago ({0})")]
    Recently(String),
    #[error("it answered with {0} instead of a welcome")]
    NoWelcome(String),
}

/// This gateway's links to other gateways, by advertised address.
#[derive(Debug, Default)]
pub(crate) struct Mesh {
    homes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    next_conn: AtomicU64,
    /// Cancelled when the gateway has stopped: every link closes.
    pub down: CancellationToken,
    /// The other gateways, as each register lists them.
    listed: Mutex<HashMap<String, BTreeSet<String>>>,
    /// An ordered outbox per peer gateway, drained by its own task onto the link to it.
    peers: Mutex<HashMap<String, mpsc::Sender<ToGateway>>>,
    /// Held while a register's list is applied.
    list_changes: Mutex<()>,
    /// Wakes who waits for a first list ([`Mesh::wait_listed`]).
    listed_changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Entry {
    link: Option<Arc<HomeLink>>,
    failed: Option<(Instant, String)>,
}

/// A link to one home gateway.
#[derive(Debug)]
pub(crate) struct HomeLink {
    /// The home's instance (its run).
    pub instance: u64,
    tx: mpsc::Sender<ToGateway>,
    conns: Mutex<HashMap<u64, mpsc::Sender<FromHome>>>,
    closed: CancellationToken,
    /// The gateway instances whose clients this peer said it adopted (`FromGateway::Adopted`),
    /// and a wake-up for who waits for one.
    adoptions: Mutex<Vec<(String, u64)>>,
    adopted: tokio::sync::Notify,
    /// The instances whose hand-over this peer said it applied (`FromGateway::HandOverDone`).
    finished: tokio::sync::watch::Sender<Vec<u64>>,
}

impl HomeLink {
    /// Registers a relayed socket: its number, and where the home's frames for it arrive.
    pub fn register(&self, mesh: &Mesh, capacity: usize) -> (u64, mpsc::Receiver<FromHome>) {
        let conn = mesh.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity);
        self.conns.lock().expect("relay conns lock").insert(conn, tx);
        (conn, rx)
    }

    /// Forgets a relayed socket.
    pub fn forget(&self, conn: u64) {
        self.conns.lock().expect("relay conns lock").remove(&conn);
    }

    /// Resolves once this peer says it adopted the clients of instance `instance` at `gateway`
    /// (a hand-over, `crate::handover`).
    pub async fn adopted(&self, gateway: &str, instance: u64) {
        loop {
            let notified = self.adopted.notified();
            let said =
                self.adoptions.lock().expect("adoptions lock").iter().any(|(g, i)| g == gateway && *i == instance);
            if said {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once this peer says it applied the whole hand-over of instance `instance`
    /// (`ToGateway::HandOverEnd` sent on this link first); `false` if the link ended before.
    pub async fn hand_over_done(&self, instance: u64) -> bool {
        let mut finished = self.finished.subscribe();
        tokio::select! {
            done = finished.wait_for(|f| f.contains(&instance)) => done.is_ok(),
            () = self.closed.cancelled() => false,
        }
    }

    /// Resolves once the link has ended: after `Mesh::down`, once what was queued is written
    /// (or the link's flush timeout passed).
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Sends a message to the home, in order behind everything sent before; `false` when the
    /// link is gone.
    pub async fn send(&self, msg: ToGateway) -> bool {
        self.tx.send(msg).await.is_ok()
    }
}

impl Mesh {
    /// Register `register`'s current gateway list: the peers are every gateway some register
    /// lists, this one excepted. A peer no register lists any more loses its outbox.
    pub fn peers_from(&self, gw: &Arc<Gateway>, register: &str, list: Vec<GatewayInfo>) {
        // Registers report on their own tasks: one list change at a time, in the order applied.
        let _one_at_a_time = self.list_changes.lock().expect("mesh lock");
        let all = self.listen(gw, register, list);
        let peers = all.len() as u64;
        // Pusher channels whose home moved are re-sent to their new home (docs/pusher.md §5).
        crate::pusher::gateways_changed(gw, all);
        // Counted once the homes follow the list, so a gateway that shows its peers routes to them.
        gw.state.metrics.peer_gateways.store(peers, Ordering::Relaxed);
        self.listed_changed.notify_waiters();
    }

    /// Waits until some register has told this gateway its list (up to `within`); false if
    /// none has by then.
    pub async fn wait_listed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            // Made before the check: it sees a list applied between the check and the wait.
            let changed = self.listed_changed.notified();
            if !self.listed.lock().expect("mesh lock").is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Links to every listed peer (each one, when a link to it comes up, says which stopped
    /// gateways' clients it adopted: [`Reader`] records them as aliases). Waits for a first
    /// list up to `within`, and for each dial up to the handshake timeout.
    pub async fn link_all(&self, gw: &Arc<Gateway>, within: Duration) {
        if !self.wait_listed(within).await {
            return;
        }
        let dials = self.peer_addresses().into_iter().map(|address| async move {
            let _ = tokio::time::timeout(gw.config.handshake_timeout, self.link(gw, &address)).await;
        });
        futures_util::future::join_all(dials).await;
    }

    /// Records register `register`'s list and opens or closes the peers' outboxes; returns
    /// every other gateway some register lists.
    fn listen(&self, gw: &Arc<Gateway>, register: &str, list: Vec<GatewayInfo>) -> BTreeSet<String> {
        let mut listed = self.listed.lock().expect("mesh lock");
        listed.insert(register.to_string(), list.into_iter().map(|g| g.address).filter(|a| *a != gw.address).collect());
        let all: BTreeSet<String> = listed.values().flatten().cloned().collect();
        drop(listed);
        gw.handover.forget_aliases_of(&all);
        let mut peers = self.peers.lock().expect("mesh lock");
        peers.retain(|address, _| all.contains(address));
        for address in all.iter().cloned() {
            peers.entry(address.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                // A new peer hears where the clients this gateway adopted are.
                for msg in gw.handover.adoption_messages(&gw.address) {
                    let _ = tx.try_send(msg);
                }
                let span = tracing::debug_span!("peer_gateway", peer = %address);
                tokio::spawn(drain_to_peer(gw.clone(), address, rx).instrument(span));
                tx
            });
        }
        all
    }

    /// Queues `cmd` for every peer gateway, in order behind what was queued before. A peer
    /// whose outbox is full loses it, counted (`gw_mesh_dropped_total`).
    pub fn to_peers(&self, metrics: &crate::metrics::Metrics, cmd: &Command) {
        for tx in self.peers.lock().expect("mesh lock").values() {
            if tx.try_send(ToGateway::Command(cmd.clone())).is_err() {
                crate::metrics::Metrics::inc(&metrics.mesh_dropped);
            }
        }
    }

    /// Queues `msg` for the peer gateway at `address`, in order behind what was queued for it
    /// before. A peer not listed, or whose outbox is full, loses it, counted
    /// (`gw_mesh_dropped_total`).
    pub fn to_peer(&self, metrics: &crate::metrics::Metrics, address: &str, msg: ToGateway) {
        let sent = self.peers.lock().expect("mesh lock").get(address).is_some_and(|tx| tx.try_send(msg).is_ok());
        if !sent {
            tracing::debug!(peer = %address, "no outbox to the peer gateway, or it is full: message dropped");
            crate::metrics::Metrics::inc(&metrics.mesh_dropped);
        }
    }

    /// Every other gateway some register lists now.
    pub fn peer_addresses(&self) -> BTreeSet<String> {
        self.listed.lock().expect("mesh lock").values().flatten().cloned().collect()
    }

    /// The link to the gateway at `address`, dialled if there is none.
    pub async fn link(&self, gw: &Arc<Gateway>, address: &str) -> Result<Arc<HomeLink>, MeshError> {
        let entry = self.homes.lock().expect("mesh lock").entry(address.to_string()).or_default().clone();
        // One dial per home at a time; the others wait for its outcome.
        let mut entry = entry.lock().await;
        if let Some(link) = entry.link.as_ref().filter(|l| !l.closed.is_cancelled()) {
            return Ok(link.clone());
        }
        if let Some((at, why)) = &entry.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Err(MeshError::Recently(why.clone()));
        }
        match self.dial(gw, address).await {
            Ok(link) => {
                entry.failed = None;
                entry.link = Some(link.clone());
                Ok(link)
            }
            Err(e) => {
                entry.failed = Some((Instant::now(), e.to_string()));
                entry.link = None;
                Err(e)
            }
        }
    }

    async fn dial(&self, gw: &Arc<Gateway>, address: &str) -> Result<Arc<HomeLink>, MeshError> {
        let mut conn = gw_link::connect(address, &gw.handshake).await?;
        let instance = match conn.reader.read::<FromGateway>().await? {
            Some(FromGateway::Welcome { instance, .. }) => instance,
            Some(other) => return Err(MeshError::NoWelcome(format!("{other:?}").chars().take(100).collect())),
            None => return Err(LinkError::ClosedDuringHandshake.into()),
        };
        let engine = LinkEngine::<GatewayPeerSide>::new(LinkOptions::from(&gw.config.link), gw.config.link.queue);
        let link = Arc::new(HomeLink {
            instance,
            tx: engine.sender(),
            conns: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            adoptions: Mutex::new(Vec::new()),
            adopted: tokio::sync::Notify::new(),
            finished: tokio::sync::watch::channel(Vec::new()).0,
        });
        let (l, down) = (link.clone(), self.down.clone());
        let span = tracing::info_span!("home_link", home = %address, home_node = %conn.peer.node);
        let (gw, address) = (gw.clone(), address.to_string());
        tokio::spawn(
            async move {
                tracing::debug!("linked to a home gateway for relayed clients");
                let mut reader = Reader { link: l.clone(), gw, address };
                let result = engine.run(conn.reader, conn.writer, &mut reader, &down).await;
                l.closed.cancel();
                // Every relayed socket of this home hears that it is gone (its channel closes).
                l.conns.lock().expect("relay conns lock").clear();
                match result {
                    Ok(_) => tracing::debug!("link to the home gateway closed"),
                    Err(e) => tracing::info!(error = %e, "link to the home gateway lost"),
                }
            }
            .instrument(span),
        );
        Ok(link)
    }
}

/// Sends what is queued for the peer at `address`, in order, until the peer is no longer
/// listed or the gateway has stopped. A command that cannot be sent (the peer is unreachable) is
/// dropped, counted.
async fn drain_to_peer(gw: Arc<Gateway>, address: String, mut rx: mpsc::Receiver<ToGateway>) {
    loop {
        let cmd = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
            // The gateway holds this outbox's sender: without this the task would keep it alive.
            () = gw.mesh.down.cancelled() => return,
        };
        let sent = match gw.mesh.link(&gw, &address).await {
            Ok(link) => link.send(cmd).await,
            Err(e) => {
                tracing::debug!(error = %e, "peer gateway unreachable: command dropped");
                false
            }
        };
        if !sent {
            crate::metrics::Metrics::inc(&gw.state.metrics.mesh_dropped);
        }
    }
}

/// What a home sends: answers and frames for the relayed sockets, and the adoptions it made.
struct Reader {
    link: Arc<HomeLink>,
    gw: Arc<Gateway>,
    /// The home's address.
    address: String,
}

impl Reader {
    /// Hands `msg` to relayed socket `conn`. One that cannot keep up (its channel is full: the
    /// client is not reading) loses its channel, so its relay ends and the link stays free.
    fn deliver(&self, conn: u64, msg: FromHome) {
        let mut conns = self.link.conns.lock().expect("relay conns lock");
        if let Some(tx) = conns.get(&conn)
            && tx.try_send(msg).is_err()
        {
            tracing::debug!(conn, "relayed client not keeping up: its relay ends");
            conns.remove(&conn);
        }
    }
}

impl Handler<GatewayPeerSide> for Reader {
    async fn on_message(&mut self, msg: FromGateway) -> Result<(), LinkError> {
        match msg {
            FromGateway::RelayOpened { conn } => self.deliver(conn, FromHome::Opened),
            FromGateway::RelayRefused { conn, control } => self.deliver(conn, FromHome::Refused(control)),
            FromGateway::Relay { conn, frame } => self.deliver(conn, FromHome::Frame(frame)),
            FromGateway::Ping | FromGateway::Pong => {}
            FromGateway::Adopted { gateway, instance, .. } => {
                // Its clients are at this peer now: a client of theirs that comes back here is
                // relayed there (told on every new link, so a gateway that joined after the
                // hand-over learns it by linking to its peers).
                self.gw.handover.alias(gateway.clone(), instance, self.address.clone());
                self.link.adoptions.lock().expect("adoptions lock").push((gateway, instance));
                self.link.adopted.notify_waiters();
            }
            FromGateway::HandOverDone { instance } => self.link.finished.send_modify(|f| f.push(instance)),
            other => {
                return Err(LinkError::Unexpected(format!(
                    "{} on a gateway-to-gateway link",
                    format!("{other:?}").chars().take(60).collect::<String>()
                )));
            }
        }
        Ok(())
    }
}
