//! The engine shared by gateway clients and business workers: learns gateways from every register
//! and keeps one authenticated link to each, reconnecting with backoff. Workers additionally get
//! the events gateways send and acknowledge them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gw_config::LinkConfig;
use gw_link::{Backoff, HandshakeOptions, LinkError, RegisterEvent, RegisterLink, WriterStats};
use gw_proto::{Event, FromGateway, Role, ToGateway, ToRegister};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::link::GatewayLink;

/// What a worker's event loop receives from the links.
// `Event` is by far the most common variant; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LinkEvent {
    /// A link to a gateway came up.
    Up(Arc<GatewayLink>),
    /// A client event arrived on a link.
    Event(Arc<GatewayLink>, Event),
    /// A link went down; its clients will be re-routed by the gateway.
    Down(Arc<GatewayLink>),
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub(crate) struct CoreOptions {
    pub registers: Vec<String>,
    pub secret: String,
    pub name: String,
    pub role: Role,
    pub link: LinkConfig,
    pub query_timeout: Duration,
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

/// Shared state of one gateway client or worker.
#[derive(Debug)]
pub(crate) struct Core {
    pub opts: CoreOptions,
    handshake: HandshakeOptions,
    links: RwLock<HashMap<String, Arc<GatewayLink>>>,
    known: Mutex<Known>,
    /// Bumped on every change of `links` or of the known gateways.
    changed: watch::Sender<u64>,
    /// At least one register has sent a list.
    pub heard_register: watch::Sender<bool>,
    /// Registers whose last handshake refused us, by index: (address, why). Cleared when that
    /// register accepts a handshake again.
    pub refusals: watch::Sender<BTreeMap<usize, (String, String)>>,
    events: Option<mpsc::Sender<LinkEvent>>,
    next_link: AtomicU64,
    /// The worker asked the gateways to route nothing new to it (it is stopping).
    draining: AtomicBool,
    /// Graceful close: stop reading, send the final acknowledgements, flush, disconnect.
    pub closing: CancellationToken,
    /// Hard stop of every task.
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

impl Core {
    pub fn start(opts: CoreOptions, events: Option<mpsc::Sender<LinkEvent>>) -> Arc<Self> {
        let handshake = HandshakeOptions {
            secret: opts.secret.clone().into_bytes(),
            role: opts.role,
            node: opts.name.clone(),
            max_frame: opts.link.max_frame,
            timeout: opts.link.handshake_timeout,
        };
        let core = Arc::new(Self {
            handshake,
            links: RwLock::new(HashMap::new()),
            known: Mutex::new(Known::default()),
            changed: watch::channel(0).0,
            heard_register: watch::channel(false).0,
            refusals: watch::channel(BTreeMap::new()).0,
            events,
            next_link: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            closing: CancellationToken::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            opts,
        });
        for (i, register) in core.opts.registers.clone().into_iter().enumerate() {
            let span = tracing::info_span!("register", register = %register, node = %core.opts.name);
            core.tracker.spawn(register_driver(core.clone(), i, register).instrument(span));
        }
        core
    }

    /// The link to the gateway at `address`, if connected.
    pub fn link(&self, address: &str) -> Option<Arc<GatewayLink>> {
        self.links.read().expect("links lock").get(address).cloned()
    }

    /// Every connected link.
    pub fn links(&self) -> Vec<Arc<GatewayLink>> {
        self.links.read().expect("links lock").values().cloned().collect()
    }

    /// Gateways listed by the registers but not connected now.
    pub fn unreachable(&self) -> Vec<String> {
        let known = self.known.lock().expect("known lock").union();
        let links = self.links.read().expect("links lock");
        known.into_iter().filter(|a| !links.contains_key(a)).collect()
    }

    /// Every gateway known from registers or connected.
    pub fn known(&self) -> BTreeSet<String> {
        let mut all = self.known.lock().expect("known lock").union();
        all.extend(self.links.read().expect("links lock").keys().cloned());
        all
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
            let span = tracing::info_span!(parent: None, "gateway_link", gateway = %address, node = %self.opts.name);
            self.tracker.spawn(gateway_driver(self.clone(), address).instrument(span));
        }
        drop(known);
        self.heard_register.send_replace(true);
        self.bump();
    }

    /// Asks every gateway to stop routing events to this worker, including gateways linked later.
    pub async fn drain_all(&self) {
        // Set before taking the list: a link added after the list was taken sees the flag.
        self.draining.store(true, Ordering::SeqCst);
        for link in self.links() {
            let _ = link.send(ToGateway::Drain).await;
        }
    }
}

/// Keeps the subscription to one register (the loop is `gw_link::keep_register_link`); a graceful
/// close ends it too.
async fn register_driver(core: Arc<Core>, index: usize, address: String) {
    let target = RegisterLink {
        address: &address,
        handshake: &core.handshake,
        link: &core.opts.link,
        hello: ToRegister::Subscribe,
    };
    gw_link::keep_register_link(target, &core.cancel, &core.closing, |event| match event {
        RegisterEvent::Up => {
            tracing::debug!("subscribed to register");
            core.refusals.send_if_modified(|r| r.remove(&index).is_some());
        }
        RegisterEvent::Refused(reason) => {
            core.refusals.send_modify(|r| {
                r.insert(index, (address.clone(), reason));
            });
        }
        RegisterEvent::Gateways(list) => {
            tracing::debug!(gateways = list.len(), "gateway list");
            core.set_register_list(index, list.into_iter().map(|g| g.address).collect());
        }
        _ => {}
    })
    .await;
}

/// Keeps a link to one gateway while any register lists it (or while the link lives).
async fn gateway_driver(core: Arc<Core>, address: String) {
    let mut backoff = Backoff::new(core.opts.link.reconnect_min, core.opts.link.reconnect_max);
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            _ = core.cancel.cancelled() => return,
            r = gateway_once(&core, &address, &mut backoff) => r,
        };
        if core.closing.is_cancelled() {
            return;
        }
        match result {
            Ok(()) => tracing::info!("gateway link closed"),
            Err(e) if e.is_disconnect() => tracing::info!(error = %e, "gateway link closed"),
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "gateway link failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, failures, "gateway still unreachable");
                }
            }
        }
        {
            let mut known = core.known.lock().expect("known lock");
            if !known.union().contains(&address) {
                known.driving.remove(&address);
                tracing::info!("gateway no longer listed; not reconnecting");
                drop(known);
                core.bump();
                return;
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = core.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn gateway_once(core: &Arc<Core>, address: &str, backoff: &mut Backoff) -> Result<(), LinkError> {
    let mut conn = gw_link::connect(address, &core.handshake).await?;
    let (instance, advertised) = match conn.reader.read::<FromGateway>().await? {
        Some(FromGateway::Welcome { instance, address }) => (instance, address),
        Some(other) => return Err(LinkError::Unexpected(format!("expected welcome, got {other:?}"))),
        None => return Err(LinkError::ClosedDuringHandshake),
    };
    if advertised != address {
        tracing::debug!(advertised = %advertised, "gateway advertises another spelling of its address");
    }
    backoff.reset();
    let (tx, mut rx) = mpsc::channel(core.opts.link.queue);
    let link = Arc::new(GatewayLink::new(
        core.next_link.fetch_add(1, Ordering::Relaxed),
        address.to_string(),
        instance,
        conn.peer.node.clone(),
        tx,
    ));
    core.links.write().expect("links lock").insert(address.to_string(), link.clone());
    if core.draining.load(Ordering::SeqCst) {
        // A stopping worker that links to a gateway (one restarted, or back from a stall) during
        // its drain tells it at once, or that gateway would bind clients to a worker about to exit.
        let _ = link.tx.try_send(ToGateway::Drain);
    }
    core.bump();
    tracing::info!(gateway_node = %link.node, "connected to gateway");
    if let Some(events) = &core.events {
        let _ = events.send(LinkEvent::Up(link.clone())).await;
    }

    let stats = WriterStats::default();
    let finish = CancellationToken::new();
    let result = {
        let writer = gw_link::write_loop(conn.writer, &mut rx, core.opts.link.max_frame, &stats, &finish, |_| {});
        tokio::pin!(writer);
        let reader = read_gateway(core, &link, &mut conn.reader);
        let acks = ack_loop(&link);
        let result = tokio::select! {
            r = reader => r,
            r = &mut writer => r,
            _ = acks => Ok(()),
        };
        if core.closing.is_cancelled() && !core.cancel.is_cancelled() {
            // Graceful close: acknowledge what was handled so the gateway does not redeliver it,
            // and flush before disconnecting.
            if let Some(seq) = link.take_ack() {
                let _ = link.tx.try_send(ToGateway::Ack { seq });
            }
            finish.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        }
        result
    };
    link.down.cancel();
    {
        let mut links = core.links.write().expect("links lock");
        if links.get(address).is_some_and(|l| l.id == link.id) {
            links.remove(address);
        }
    }
    link.fail_pending();
    core.bump();
    if let Some(events) = &core.events {
        let _ = events.send(LinkEvent::Down(link.clone())).await;
    }
    result
}

async fn read_gateway(
    core: &Core,
    link: &Arc<GatewayLink>,
    reader: &mut gw_link::FrameReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<(), LinkError> {
    let mut ping = tokio::time::interval(core.opts.link.heartbeat_interval);
    let timeout = core.opts.link.heartbeat_timeout;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = core.cancel.cancelled() => return Ok(()),
            _ = core.closing.cancelled() => return Ok(()),
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(LinkError::HeartbeatTimeout(timeout));
                }
                let _ = link.tx.try_send(ToGateway::Ping);
            }
            msg = reader.read::<FromGateway>() => {
                last_heard = tokio::time::Instant::now();
                match msg? {
                    None => return Ok(()),
                    Some(FromGateway::Event(ev)) => match &core.events {
                        Some(events) => {
                            // Backpressure: wait for room without reading on, but keep pinging
                            // meanwhile. A worker whose handlers are slow is busy, not dead, and
                            // must not have its events redelivered elsewhere.
                            let permit = loop {
                                tokio::select! {
                                    permit = events.reserve() => break permit,
                                    _ = ping.tick() => {
                                        let _ = link.tx.try_send(ToGateway::Ping);
                                    }
                                    _ = core.cancel.cancelled() => return Ok(()),
                                }
                            };
                            let Ok(permit) = permit else { return Ok(()) };
                            permit.send(LinkEvent::Event(link.clone(), ev));
                            // Not reading meanwhile, we could not hear the gateway: the silence
                            // says nothing about it.
                            last_heard = tokio::time::Instant::now();
                        }
                        None => return Err(LinkError::Unexpected("event sent to a gateway client".into())),
                    },
                    Some(FromGateway::Reply { id, reply }) => link.resolve(id, reply),
                    Some(FromGateway::Ping) => {
                        let _ = link.tx.try_send(ToGateway::Pong);
                    }
                    Some(FromGateway::Pong) => {}
                    Some(FromGateway::Welcome { .. }) => return Err(LinkError::Unexpected("second welcome".into())),
                }
            }
        }
    }
}

/// Sends the acknowledgement watermark whenever it moves, at most every few milliseconds: one
/// small frame acknowledges any number of events.
async fn ack_loop(link: &GatewayLink) {
    loop {
        link.ack_ready.notified().await;
        if let Some(seq) = link.take_ack()
            && link.tx.send(ToGateway::Ack { seq }).await.is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Pick up whatever completed during the pause.
        if let Some(seq) = link.take_ack()
            && link.tx.send(ToGateway::Ack { seq }).await.is_err()
        {
            return;
        }
    }
}
