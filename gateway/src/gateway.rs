//! A running gateway's shared state, built once from its configuration and the bound listeners,
//! and shared by every connection and link task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use gw_config::GatewayConfig;
use gw_link::fds::{FdBudget, SpareFd};
use gw_link::{Admission, AdmissionConfig, ConnLimits, HandshakeOptions};
use gw_proto::{ClientId, Role};
use tokio_util::task::TaskTracker;

use crate::clients::Clients;
use crate::clock::Clock;
use crate::error::GatewayError;
use crate::listener;
use crate::router::Router;
use crate::serve::Listeners;

/// A running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    /// Clients, their uid and group indexes, and the counters.
    pub state: Arc<Clients>,
    /// The worker links and which of them gets a new client.
    pub(crate) router: Router,
    /// Random per start: client ids of an earlier run never match this one.
    pub(crate) instance: u64,
    /// Advertised internal address, embedded in client ids.
    pub(crate) address: String,
    /// The internal listener's bound address.
    pub(crate) internal: SocketAddr,
    pub(crate) listeners: Vec<Arc<listener::ListenerSpec>>,
    /// The `[gatewayworker]` listener's bound address, if there is one.
    pub(crate) gatewayworker: Option<SocketAddr>,
    /// Caps on open client sockets, in all and per address.
    pub(crate) limits: Arc<ConnLimits>,
    /// Client capacity as the open-files limit allows it.
    pub(crate) fds: FdBudget,
    /// Held back to shed pending clients when the process is out of descriptors.
    pub(crate) spare_fd: SpareFd,
    /// Admission on both internal listeners (ours and the GatewayWorker one): connections still
    /// unauthenticated are capped in all and per address, so that they cannot use up the
    /// descriptors kept for workers, and failed handshakes are budgeted per address
    /// (`[link] failed_handshakes`).
    pub(crate) admission: Admission,
    /// The local number the next client gets.
    pub(crate) next_client: AtomicU64,
    /// The gateway's monotonic clock (heartbeat bookkeeping in ms).
    pub(crate) clock: Clock,
    /// How this gateway introduces itself to workers and gateway clients.
    pub(crate) handshake: HandshakeOptions,
    /// How this gateway introduces itself to registers.
    pub(crate) register_handshake: HandshakeOptions,
    /// Background tasks the gateway waits for when it stops, before it takes the worker links
    /// down: the delivery of closed clients' leftover events.
    pub(crate) tasks: TaskTracker,
    /// Every client connection task, local or relayed; the gateway waits for them when it stops.
    pub(crate) client_tasks: TaskTracker,
    /// Cancelled when the gateway stops: every client connection closes (1001). See
    /// [`stop_clients`](Self::stop_clients).
    pub(crate) clients_down: tokio_util::sync::CancellationToken,
    /// Set when the gateway stops, before `clients_down` is cancelled: what a client
    /// connection's loop reads (see [`stop_clients`](Self::stop_clients)).
    pub(crate) clients_stopping: std::sync::atomic::AtomicBool,
    /// Links to other gateways, for clients relayed to their home gateway.
    pub(crate) mesh: crate::relay::mesh::Mesh,
    /// Held clients handed over when stopping, and adopted from stopping gateways.
    pub(crate) handover: crate::handover::Handover,
}

impl Gateway {
    /// Closes every client connection (1001): sets the flag their loops read and wakes each of
    /// them, then cancels `clients_down` for everything else that waits on it. A client's loop
    /// does not wait on the token itself: that wait, shared by every client, was made, polled
    /// and dropped, each time under the token's lock, for every message in and every batch out
    /// (BENCHMARKS.md, "Echo (issue 29)").
    pub(crate) fn stop_clients(&self) {
        // Set before the wake-ups: a loop that registers its waker after them reads it.
        self.clients_stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.state.handles() {
            handle.kill.wake();
        }
        self.clients_down.cancel();
    }

    /// The gateway is stopping and hands its clients over to another one.
    pub(crate) fn is_handing_over_clients(&self) -> bool {
        self.clients_stopping.load(std::sync::atomic::Ordering::SeqCst) && self.handover.is_handing_over()
    }

    /// The id clients of this gateway get for local number `local`.
    /// A client adopted from a stopped gateway keeps the id that gateway gave it.
    pub fn client_id(&self, local: u64) -> ClientId {
        if let Some((gateway, instance, old)) = self.handover.origin(local) {
            return ClientId::new(gateway, instance, old);
        }
        ClientId::new(self.address.clone(), self.instance, local)
    }

    /// The other gateways the registers list now (its peers).
    pub fn peers(&self) -> std::collections::BTreeSet<String> {
        self.mesh.peer_addresses()
    }

    /// The advertised internal address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Number of workers currently accepting events.
    pub fn worker_count(&self) -> usize {
        self.router.worker_count()
    }

    /// Client events sent to workers and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.router.retained_total()
    }

    /// Names of connected workers.
    pub fn worker_names(&self) -> Vec<String> {
        self.router.names()
    }

    /// Milliseconds since the gateway started (monotonic; unaffected by wall-clock jumps).
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock.ms()
    }

    /// The public listener URLs with their bound addresses.
    pub fn listener_urls(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.url.to_string()).collect()
    }

    /// Every address the gateway listens on, as `status` shows them: the public listener URLs,
    /// the internal listener, and the `[gatewayworker]` listener as `gatewayworker://ip:port`.
    pub fn listen_addresses(&self) -> Vec<String> {
        let mut all = self.listener_urls();
        all.push(self.internal.to_string());
        all.extend(self.gatewayworker.map(|a| format!("gatewayworker://{a}")));
        all
    }

    /// The `[gatewayworker]` listener's bound address, if the gateway has one.
    pub fn gatewayworker_addr(&self) -> Option<SocketAddr> {
        self.gatewayworker
    }

    /// Open client sockets (handshakes included).
    pub fn open_sockets(&self) -> usize {
        self.limits.open()
    }

    /// How many client sockets the gateway takes, as `max_connections` and the open-files limit
    /// allow.
    pub fn fd_budget(&self) -> FdBudget {
        self.fds
    }
}

/// Builds the gateway state for the given listeners (the advertised address defaults to the
/// internal listener's real address, so port 0 works in tests).
pub fn build(config: GatewayConfig, listeners: &Listeners) -> Result<Arc<Gateway>, GatewayError> {
    let internal = listeners.internal.local_addr().map_err(GatewayError::Listener)?;
    let bound: Vec<SocketAddr> =
        listeners.public.iter().map(|l| l.local_addr()).collect::<Result<_, _>>().map_err(GatewayError::Listener)?;
    let specs = listener::specs(&config, &bound)?.into_iter().map(Arc::new).collect();
    let address = config.advertise.clone().unwrap_or_else(|| internal.to_string());
    let fds = FdBudget::compute(config.max_connections, config.fd_reserve)?;
    if fds.client_capacity < config.max_connections {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files_limit = fds.limit,
            open_at_start = fds.open_at_start,
            fd_reserve = fds.reserve,
            client_capacity = fds.client_capacity,
            "the open-files limit caps clients below max_connections; raise it (ulimit -n) for more"
        );
    }
    let handshake = HandshakeOptions::new(&config.secret, Role::Gateway, &config.name, &config.link);
    let gatewayworker = match &listeners.gatewayworker {
        Some(l) => Some(l.local_addr().map_err(GatewayError::Listener)?),
        None => None,
    };
    // Half the descriptors kept for internal links may be pending handshakes, an eighth of them
    // from one address.
    let admission =
        AdmissionConfig::from_link(&config.link, (config.fd_reserve / 2).max(8), (config.fd_reserve / 8).max(4));
    Ok(Arc::new(Gateway {
        register_handshake: handshake.clone(),
        handshake,
        instance: rand::random(),
        address,
        internal,
        gatewayworker,
        listeners: specs,
        limits: Arc::new(ConnLimits::new(fds.client_capacity, config.max_connections_per_ip)),
        fds,
        spare_fd: SpareFd::new(),
        admission: Admission::new(admission),
        next_client: AtomicU64::new(1),
        clock: Clock::start(),
        state: Arc::new(
            Clients::new(config.send_queue_bytes, config.slow_consumer == gw_config::SlowConsumerPolicy::Drop)
                .with_limits(crate::clients::StateLimits::from(&config))
                .with_recovery(crate::recovery::Hub::new(&config.recovery, &config.secret)),
        ),
        router: Router::new(config.link.max_frame),
        tasks: TaskTracker::new(),
        client_tasks: TaskTracker::new(),
        clients_down: tokio_util::sync::CancellationToken::new(),
        clients_stopping: std::sync::atomic::AtomicBool::new(false),
        mesh: crate::relay::mesh::Mesh::default(),
        handover: crate::handover::Handover::default(),
        config,
    }))
}
