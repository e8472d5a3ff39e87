//! Learn the gateways from every register and keep one authenticated link to each: the building
//! block under both a web backend's `GatewayClient` and a business worker (which also receives
//! client events, through an [`Inbound`] of its own).
//!
//! Each link runs on `gw_link`'s engine (heartbeat, coalescing writer, graceful flush) and is
//! redialed with backoff while any register lists its gateway.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gw_config::LinkConfig;
use gw_link::wire::GatewayPeerSide;
use gw_link::{
    Attempt, Ended, Handler, HandshakeOptions, LinkEngine, LinkError, LinkOptions, RegisterEvent, RegisterLink,
};
use gw_proto::{ClientId, Event, FromGateway, Role, ToGateway, ToRegister};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::adoptions::Adoptions;
use crate::link::GatewayLink;
use crate::routing::{Kind, Routing, RoutingStats};

/// What a process does with what gateways send besides answers to its queries: the client events
/// a business worker receives. One [`LinkInbound`] per link incarnation.
pub trait Inbound: Send + Sync + 'static {
    /// What one link does with its events.
    type Link: LinkInbound;

    /// A link came up (before anything is read from it). Messages sent on `link` here go out
    /// before anything else this process sends on it.
    fn link_up(&self, link: &Arc<GatewayLink>) -> Self::Link;
}

/// What one link does with the events its gateway sends.
pub trait LinkInbound: Send + 'static {
    /// A client event. While this waits the link reads nothing more but keeps its heartbeat:
    /// backpressure onto the gateway. An error drops the link.
    fn event(&mut self, event: Event) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// The gateway answered a drain: it routes no new events here, and every event it routed
    /// here before has arrived.
    fn drained(&mut self) {}

    /// The link is being closed gracefully (reading has stopped): queue its final messages now.
    fn closing(&mut self) {}

    /// Work that runs beside the link for as long as it lives (a worker's acknowledgements),
    /// independent of reading: it goes on while [`event`](Self::event) waits. None by default.
    fn alongside(&mut self) -> impl Future<Output = ()> + Send + 'static {
        async {}
    }

    /// The link is gone (it was removed from the table first).
    fn down(self)
    where
        Self: Sized,
    {
    }
}

/// The inbound of a web backend's client: gateways send it no events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl Inbound for NoEvents {
    type Link = NoEvents;
    fn link_up(&self, _link: &Arc<GatewayLink>) -> NoEvents {
        NoEvents
    }
}

impl LinkInbound for NoEvents {
    async fn event(&mut self, _event: Event) -> Result<(), LinkError> {
        Err(LinkError::Unexpected("event sent to a gateway client".into()))
    }
}

/// Who this process is to the cluster, and how to reach it.
#[derive(Debug, Clone)]
pub struct LinksOptions {
    /// Register addresses (`host:port`).
    pub registers: Vec<String>,
    /// The shared cluster secret.
    pub secret: String,
    /// Node name shown in gateway logs.
    pub name: String,
    /// [`Role::Client`] for a web backend, [`Role::Worker`] for a business worker.
    pub role: Role,
    /// Frame limit, heartbeats, reconnect backoff, queue length.
    pub link: LinkConfig,
}

/// What the registers have told this process so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterState {
    /// At least one register has sent a gateway list.
    Heard,
    /// No register has sent a list, and this one refused the handshake.
    Refused(Refusal),
    /// No register has answered yet.
    Silent,
}

/// A peer that refused this process's handshake, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The register's or gateway's address.
    pub peer: String,
    /// What the handshake failed with (`the peer refused us: authentication failed`, ...).
    pub reason: String,
}

impl Refusal {
    /// True when the secrets differ (the usual cause), rather than, say, the protocol version.
    pub fn is_authentication(&self) -> bool {
        self.reason.contains("authentication failed")
    }
}

#[derive(Debug, Default)]
struct Known {
    /// Last list from each register (kept while that register is away, so a register restart does
    /// not make anyone forget gateways).
    per_register: HashMap<usize, BTreeSet<String>>,
    /// Addresses with a running link driver.
    driving: HashSet<String>,
}

impl Known {
    fn union(&self) -> BTreeSet<String> {
        self.per_register.values().flatten().cloned().collect()
    }
}

type DriverFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the link driver for one gateway address, with the process's [`Inbound`].
struct Spawner(Box<dyn Fn(Arc<GatewayLinks>, String) -> DriverFuture + Send + Sync>);

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

/// The links of one process to every gateway the registers list. Cheap to share (`Arc`).
///
/// # Examples
///
/// ```no_run
/// # async fn f() {
/// use gw_gateway_links::{GatewayLinks, LinksOptions, NoEvents};
/// let links = GatewayLinks::start(
///     LinksOptions {
///         registers: vec!["127.0.0.1:1236".into()],
///         secret: "the cluster secret".into(),
///         name: "backend".into(),
///         role: gw_proto::Role::Client,
///         link: gw_config::LinkConfig::default(),
///     },
///     NoEvents,
/// );
/// links.wait_ready(std::time::Duration::from_secs(5)).await;
/// println!("{} gateways linked", links.links().len());
/// links.close().await;
/// # }
/// ```
#[derive(Debug)]
pub struct GatewayLinks {
    options: LinksOptions,
    handshake: HandshakeOptions,
    links: RwLock<HashMap<String, Arc<GatewayLink>>>,
    known: Mutex<Known>,
    /// Bumped on every change of `links` or of the known gateways.
    changed: watch::Sender<u64>,
    /// At least one register has sent a list.
    heard_register: watch::Sender<bool>,
    /// Registers whose last handshake refused us, by index: (address, why). Cleared when that
    /// register accepts a handshake again.
    refusals: watch::Sender<BTreeMap<usize, (String, String)>>,
    /// Gateways whose last handshake refused us: address, why. Cleared when one accepts again.
    gateway_refusals: Mutex<BTreeMap<String, String>>,
    next_link: AtomicU64,
    /// Which gateways hold which uids and groups.
    routing: Arc<Routing>,
    spawner: Spawner,
    /// Graceful close: links stop reading, queue their final messages, flush, disconnect.
    closing: CancellationToken,
    /// Hard stop of every task.
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// This process's id to gateways (`ToGateway::Sender`), random per start.
    sender_id: u64,
    /// Stopped gateways' clients and their adopters.
    adoptions: Adoptions,
}

impl GatewayLinks {
    /// Starts learning gateways from `options.registers` and linking to each; `inbound` gets the
    /// events of every link.
    pub fn start<I: Inbound>(options: LinksOptions, inbound: I) -> Arc<Self> {
        let handshake = HandshakeOptions {
            secret: options.secret.clone().into_bytes(),
            role: options.role,
            node: options.name.clone(),
            max_frame: options.link.max_frame,
            timeout: options.link.handshake_timeout,
        };
        let inbound = Arc::new(inbound);
        let spawner =
            Spawner(Box::new(move |links, address| Box::pin(gateway_driver(links, address, inbound.clone()))));
        let links = Arc::new(Self {
            handshake,
            links: RwLock::new(HashMap::new()),
            known: Mutex::new(Known::default()),
            changed: watch::channel(0).0,
            heard_register: watch::channel(false).0,
            refusals: watch::channel(BTreeMap::new()).0,
            gateway_refusals: Mutex::new(BTreeMap::new()),
            next_link: AtomicU64::new(1),
            routing: Arc::new(Routing::new(options.link.routing_index)),
            spawner,
            closing: CancellationToken::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sender_id: rand::random(),
            adoptions: Adoptions::default(),
            options,
        });
        for (i, register) in links.options.registers.clone().into_iter().enumerate() {
            let span = tracing::info_span!("register", register = %register, node = %links.options.name);
            links.tracker.spawn(register_driver(links.clone(), i, register).instrument(span));
        }
        links
    }

    /// What these links were started with.
    pub fn options(&self) -> &LinksOptions {
        &self.options
    }

    /// What the routing index holds and did (see [`RoutingStats`]).
    pub fn routing_stats(&self) -> RoutingStats {
        self.routing.stats()
    }

    /// The links among `links` a call about these uids or groups must reach: by the routing
    /// index, only those whose gateway holds one of them (or might: see [`RoutingStats`]).
    pub fn route(&self, links: Vec<Arc<GatewayLink>>, kind: Kind, names: &[String]) -> Vec<Arc<GatewayLink>> {
        self.routing.route(links, kind, names)
    }

    /// What the registers have said so far: a list, a refusal, or nothing yet.
    pub fn register_state(&self) -> RegisterState {
        if *self.heard_register.borrow() {
            return RegisterState::Heard;
        }
        match self.refusals.borrow().values().next() {
            Some((peer, reason)) => RegisterState::Refused(Refusal { peer: peer.clone(), reason: reason.clone() }),
            None => RegisterState::Silent,
        }
    }

    /// Waits until a register has sent a list ([`RegisterState::Heard`]), every register has
    /// refused the handshake (a refusal is final until the configuration changes:
    /// [`RegisterState::Refused`]), or `timeout` passes ([`RegisterState::Silent`]).
    pub async fn wait_for_register(&self, timeout: Duration) -> RegisterState {
        let mut heard = self.heard_register.subscribe();
        let mut refusals = self.refusals.subscribe();
        let registers = self.options.registers.len();
        tokio::select! {
            heard = tokio::time::timeout(timeout, heard.wait_for(|h| *h)) => {
                if heard.is_ok() { RegisterState::Heard } else { RegisterState::Silent }
            }
            Ok(refused) = refusals.wait_for(|r| registers > 0 && r.len() >= registers) => {
                let (peer, reason) = refused.values().next().cloned().unwrap_or_default();
                RegisterState::Refused(Refusal { peer, reason })
            }
        }
    }

    /// Why this process is linked to no gateway when a peer refused its handshake: a register
    /// (before any has sent a list) or a gateway. `None` while a gateway is linked, or when
    /// nobody refused (the peers may just be unreachable).
    pub fn refusal(&self) -> Option<Refusal> {
        if !self.links.read().expect("links lock").is_empty() {
            return None;
        }
        if let RegisterState::Refused(r) = self.register_state() {
            return Some(r);
        }
        let gateways = self.gateway_refusals.lock().expect("gateway refusals lock");
        gateways.iter().next().map(|(peer, reason)| Refusal { peer: peer.clone(), reason: reason.clone() })
    }

    /// The link to the gateway at `address`, if connected.
    pub fn link(&self, address: &str) -> Option<Arc<GatewayLink>> {
        self.links.read().expect("links lock").get(address).cloned()
    }

    /// Every connected link.
    pub fn links(&self) -> Vec<Arc<GatewayLink>> {
        self.links.read().expect("links lock").values().filter(|l| !l.is_moved()).cloned().collect()
    }

    /// Where client `id` is if its gateway handed it over to another one (a graceful stop,
    /// issue 25): the adopter's link and the client's number there.
    pub fn adopted(&self, id: &ClientId) -> Option<(Arc<GatewayLink>, u64)> {
        let (adopter, local) = self.adoptions.resolve(id)?;
        Some((self.links.read().expect("links lock").get(&adopter)?.clone(), local))
    }

    /// Whether gateway instance `instance` at `gateway` handed its clients over.
    pub fn is_adopted(&self, gateway: &str, instance: u64) -> bool {
        self.adoptions.is_adopted(gateway, instance)
    }

    /// Held by a call from picking its gateways (or resolving its client ids) until its commands
    /// are queued: a switch to an adopter (`crate::adoptions`) falls wholly before or after it.
    pub async fn switch_guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.adoptions.switch.read().await
    }

    /// Gateways listed by the registers but not connected now.
    ///
    /// A gateway that handed its clients over (a graceful stop, issue 25) is not missed: what
    /// was for its clients goes to the gateway that adopted them.
    pub fn unreachable(&self) -> Vec<String> {
        let known = self.known.lock().expect("known lock").union();
        let links = self.links.read().expect("links lock");
        known.into_iter().filter(|a| !links.contains_key(a) && !self.adoptions.handed_over(a)).collect()
    }

    /// Every gateway known from registers or connected.
    pub fn known(&self) -> BTreeSet<String> {
        let mut all = self.known.lock().expect("known lock").union();
        all.extend(self.links.read().expect("links lock").keys().cloned());
        all
    }

    /// Waits until a register has answered and every gateway it lists is connected; false on
    /// timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut heard = self.heard_register.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        if tokio::time::timeout_at(deadline, heard.wait_for(|h| *h)).await.is_err() {
            return false;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_until(left, |connected, known| connected >= known).await
    }

    /// Waits until `cond` holds for (connected links, known gateways), or `deadline` passes.
    pub async fn wait_until(&self, deadline: Duration, cond: impl Fn(usize, usize) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(deadline, async {
            loop {
                let connected = self.links.read().expect("links lock").len();
                let known = self.known().len();
                if cond(connected, known) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Closes every link gracefully (each stops reading, queues its final messages and flushes,
    /// within 3 s in all), then stops every task.
    pub async fn close(&self) {
        self.closing.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
        self.cancel.cancel();
    }

    /// Stops every task at once, without flushing.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// True once [`stop`](Self::stop) or [`close`](Self::close) has finished.
    pub fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A guard that [`stop`](Self::stop)s the links when dropped: for an owner whose own drop
    /// (a cancelled task) must not leave the links running.
    pub fn stop_on_drop(&self) -> DropGuard {
        self.cancel.clone().drop_guard()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn set_register_list(self: &Arc<Self>, register: usize, list: BTreeSet<String>) {
        let mut known = self.known.lock().expect("known lock");
        known.per_register.insert(register, list);
        let union = known.union();
        let to_start: Vec<String> = union.iter().filter(|a| !known.driving.contains(*a)).cloned().collect();
        for address in to_start {
            known.driving.insert(address.clone());
            let span = tracing::info_span!(parent: None, "gateway_link", gateway = %address, node = %self.options.name);
            self.tracker.spawn((self.spawner.0)(self.clone(), address).instrument(span));
        }
        drop(known);
        self.heard_register.send_replace(true);
        self.bump();
    }

    /// Still listed by a register: keep redialing. Otherwise forget the address.
    fn still_listed(&self, address: &str) -> bool {
        let mut known = self.known.lock().expect("known lock");
        if known.union().contains(address) {
            return true;
        }
        known.driving.remove(address);
        tracing::info!("gateway no longer listed; not reconnecting");
        drop(known);
        self.gateway_refusals.lock().expect("gateway refusals lock").remove(address);
        self.bump();
        false
    }
}

/// Keeps the subscription to one register (the loop is `gw_link::keep_register_link`); a graceful
/// close ends it too.
async fn register_driver(links: Arc<GatewayLinks>, index: usize, address: String) {
    let target = RegisterLink {
        address: &address,
        handshake: &links.handshake,
        link: &links.options.link,
        hello: ToRegister::Subscribe,
    };
    gw_link::keep_register_link(target, &links.cancel, &links.closing, |event| match event {
        RegisterEvent::Up => {
            tracing::debug!("subscribed to register");
            links.refusals.send_if_modified(|r| r.remove(&index).is_some());
        }
        RegisterEvent::Refused(reason) => {
            links.refusals.send_modify(|r| {
                r.insert(index, (address.clone(), reason));
            });
        }
        RegisterEvent::Gateways(list) => {
            tracing::debug!(gateways = list.len(), "gateway list");
            links.set_register_list(index, list.into_iter().map(|g| g.address).collect());
        }
        _ => {}
    })
    .await;
}

/// Keeps a link to one gateway while any register lists it (or while the link lives).
async fn gateway_driver<I: Inbound>(links: Arc<GatewayLinks>, address: String, inbound: Arc<I>) {
    gw_link::keep_dialing(
        "gateway",
        &links.options.link,
        &links.cancel,
        || async {
            let mut connected = false;
            let result = gateway_once(&links, &address, &*inbound, &mut connected).await;
            let mut refusals = links.gateway_refusals.lock().expect("gateway refusals lock");
            match &result {
                Err(LinkError::Handshake(refusal)) => {
                    refusals.insert(address.clone(), refusal.to_string());
                }
                _ if connected => {
                    refusals.remove(&address);
                }
                _ => {}
            }
            drop(refusals);
            Attempt { connected, result }
        },
        || !links.closing.is_cancelled() && links.still_listed(&address),
    )
    .await;
}

/// One link to one gateway, from connect until it ends.
async fn gateway_once<I: Inbound>(
    links: &Arc<GatewayLinks>,
    address: &str,
    inbound: &I,
    connected: &mut bool,
) -> Result<(), LinkError> {
    let mut conn = gw_link::connect(address, &links.handshake).await?;
    let (instance, advertised) = match conn.reader.read::<FromGateway>().await? {
        Some(FromGateway::Welcome { instance, address }) => (instance, address),
        Some(other) => return Err(LinkError::Unexpected(format!("expected welcome, got {other:?}"))),
        None => return Err(LinkError::ClosedDuringHandshake),
    };
    if advertised != address {
        tracing::debug!(advertised = %advertised, "gateway advertises another spelling of its address");
    }
    *connected = true;
    let engine = LinkEngine::<GatewayPeerSide>::new(LinkOptions::from(&links.options.link), links.options.link.queue);
    let link = Arc::new(GatewayLink::new(
        links.next_link.fetch_add(1, Ordering::Relaxed),
        address.to_string(),
        instance,
        conn.peer.node.clone(),
        engine.sender(),
        links.routing.clone(),
    ));
    // A gateway at this address now has nothing handed over (it may be a new run).
    links.adoptions.unmark_handed_over(address);
    // First on the link: who we are, the same on every link (the queue is empty: it fits).
    link.try_queue(ToGateway::Sender { id: links.sender_id });
    // Before anyone can queue on it, so the index writes on it are numbered from the first.
    links.routing.link_up(&link);
    links.links.write().expect("links lock").insert(address.to_string(), link.clone());
    let mut reader = Reader { link: link.clone(), links: links.clone(), inbound: inbound.link_up(&link) };
    links.bump();
    tracing::info!(gateway_node = %link.node, "connected to gateway");

    let alongside = reader.inbound.alongside();
    let result = {
        let run = engine.run(conn.reader, conn.writer, &mut reader, &links.closing);
        tokio::pin!(run, alongside);
        let mut alongside_done = false;
        loop {
            tokio::select! {
                r = &mut run => break r,
                _ = &mut alongside, if !alongside_done => alongside_done = true,
            }
        }
    };
    link.down.cancel();
    {
        let mut table = links.links.write().expect("links lock");
        if table.get(address).is_some_and(|l| l.id == link.id) {
            table.remove(address);
        }
    }
    link.fail_pending();
    links.adoptions.forget_adopter(address);
    links.routing.link_down(link.id);
    links.bump();
    reader.inbound.down();
    result.map(|_: Ended| ())
}

/// Everything a gateway sends on one link: replies go to their requests, events to the inbound.
struct Reader<L> {
    link: Arc<GatewayLink>,
    links: Arc<GatewayLinks>,
    inbound: L,
}

/// `link`'s gateway adopted the clients of gateway instance `instance` at `gateway`: switch to
/// it for them (see `crate::adoptions`).
async fn adopted(links: Arc<GatewayLinks>, link: Arc<GatewayLink>, adoption: u32, gateway: String, instance: u64) {
    link.adopt(adoption, gateway.clone(), instance);
    let _switching = links.adoptions.switch.write().await;
    link.adopter.store(true, Ordering::Release);
    // Who held them until now: their own gateway, or one that had adopted them and is
    // handing them on (a rolling restart moves a client more than once).
    let holder = links.adoptions.holder(&gateway, instance);
    links.adoptions.insert(gateway.clone(), instance, link.address.clone(), adoption);
    let old = match &holder {
        Some(h) if *h != link.address => links.links.read().expect("links lock").get(h).cloned(),
        Some(_) => None,
        None => links.links.read().expect("links lock").get(&gateway).filter(|l| l.instance == instance).cloned(),
    };
    if let Some(old) = old {
        old.moved.store(true, Ordering::Release);
        links.adoptions.mark_handed_over(&old.address);
        let _ = old.send(ToGateway::Switched { instance }).await;
    }
    let _ = link.send(ToGateway::Switched { instance }).await;
    links.bump();
    tracing::info!(stopped = %gateway, "a stopped gateway's clients were adopted by this one; switched to it for them");
}

impl<L: LinkInbound> Handler<GatewayPeerSide> for Reader<L> {
    async fn on_message(&mut self, msg: FromGateway) -> Result<(), LinkError> {
        match msg {
            FromGateway::Event(event) => return self.inbound.event(event).await,
            FromGateway::Reply { id, reply } => self.link.resolve(id, reply),
            FromGateway::Drained => self.inbound.drained(),
            FromGateway::Index(update) => self.link.routing().update(self.link.id, update),
            FromGateway::Adopted { adoption, gateway, instance } => {
                adopted(self.links.clone(), self.link.clone(), adoption, gateway, instance).await;
            }
            FromGateway::Welcome { .. } => return Err(LinkError::Unexpected("second welcome".into())),
            FromGateway::RelayOpened { .. } | FromGateway::RelayRefused { .. } | FromGateway::Relay { .. } => {
                return Err(LinkError::Unexpected("a relay frame on a worker or client link".into()));
            }
            FromGateway::HandOverDone { .. } => {
                return Err(LinkError::Unexpected("a hand-over frame on a worker or client link".into()));
            }
            // The engine answers heartbeats.
            FromGateway::Ping | FromGateway::Pong => {}
        }
        Ok(())
    }

    fn on_close(&mut self) {
        self.inbound.closing();
    }
}
