//! The gateway: holds client sockets and never runs business logic.
//!
//! It gives every client a routable, never-reused client id, keeps each client's session, uid
//! binding and groups, forwards client events to one business worker per client (sticky,
//! least-loaded first, re-bound when that worker goes away), and executes the commands and queries
//! that workers and gateway clients send over the internal listener. It announces its internal
//! address to every register.

mod accept;
mod announce;
mod client;
mod fds;
pub mod framing;
pub mod gatewayworker;
mod heartbeat;
mod listener;
pub mod metrics;
mod node;
mod peer;
mod redeliver;
mod router;
mod session;
mod state;
mod stream;
mod transport;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gw_config::GatewayConfig;
use gw_link::HandshakeOptions;
use gw_proto::{ClientId, Role};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use fds::FdBudget;
pub use metrics::Metrics;
pub use node::GatewayNode;
pub use state::State;

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// The sockets a gateway serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Public listeners for clients, in the order of `GatewayConfig::effective_listeners`.
    pub public: Vec<TcpListener>,
    /// Internal listener for business workers and gateway clients.
    pub internal: TcpListener,
}

impl Listeners {
    /// Binds every listener the configuration names.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let mut public = Vec::new();
        for l in config.effective_listeners() {
            let url = gw_config::parse_listener_url(&l.url).map_err(GatewayError::Config)?;
            let socket = accept::listen(&url.addr.to_string())
                .await
                .map_err(|e| GatewayError::Config(format!("cannot listen on {} ({}): {e}", url.addr, l.url)))?;
            public.push(socket);
        }
        let internal = accept::listen(&config.internal_listen).await.map_err(|e| {
            GatewayError::Config(format!("cannot listen on {} (internal_listen): {e}", config.internal_listen))
        })?;
        Ok(Self { public, internal })
    }
}

/// A running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    /// Clients, indexes and counters.
    pub state: State,
    pub(crate) router: router::Router,
    /// Random per start: client ids of an earlier run never match this one.
    pub(crate) instance: u64,
    /// Advertised internal address, embedded in client ids.
    pub(crate) address: String,
    pub(crate) listeners: Vec<Arc<listener::ListenerSpec>>,
    pub(crate) limits: Arc<listener::ConnLimits>,
    /// Client capacity as the open-files limit allows it.
    pub(crate) fds: FdBudget,
    /// Held back to shed pending clients when the process is out of descriptors.
    spare_fd: fds::SpareFd,
    /// Internal connections still in their handshake, capped in all and per address so that
    /// unauthenticated peers cannot use up the descriptors kept for workers.
    pub(crate) pending_links: Arc<listener::ConnLimits>,
    /// Failed internal handshakes per address (`[link] failed_handshakes`).
    pub(crate) limiter: gw_link::HandshakeLimiter,
    pub(crate) next_client: AtomicU64,
    /// Start of the gateway's monotonic clock (heartbeat bookkeeping in ms).
    epoch: tokio::time::Instant,
    pub(crate) handshake: HandshakeOptions,
    pub(crate) register_handshake: HandshakeOptions,
}

impl Gateway {
    /// The id clients of this gateway get for local number `local`.
    pub fn client_id(&self, local: u64) -> ClientId {
        ClientId::new(self.address.clone(), self.instance, local)
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

    pub(crate) fn config_worker_wait(&self) -> Duration {
        self.config.worker_wait
    }

    /// Milliseconds since the gateway started (monotonic; unaffected by wall-clock jumps).
    pub(crate) fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The public listener URLs with their bound addresses.
    pub fn listener_urls(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.url.clone()).collect()
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
    let fds = FdBudget::compute(config.max_connections, config.fd_reserve).map_err(GatewayError::Config)?;
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
    let handshake = HandshakeOptions {
        secret: config.secret.clone().into_bytes(),
        role: Role::Gateway,
        node: config.name.clone(),
        max_frame: config.link.max_frame,
        timeout: config.link.handshake_timeout,
    };
    Ok(Arc::new(Gateway {
        register_handshake: handshake.clone(),
        handshake,
        instance: rand::random(),
        address,
        listeners: specs,
        limits: Arc::new(listener::ConnLimits::new(fds.client_capacity, config.max_connections_per_ip)),
        fds,
        spare_fd: fds::SpareFd::new(),
        limiter: gw_link::HandshakeLimiter::new(gw_link::LimiterConfig::from(&config.link)),
        pending_links: Arc::new(listener::ConnLimits::new(
            (config.fd_reserve / 2).max(8),
            (config.fd_reserve / 8).max(4),
        )),
        next_client: AtomicU64::new(1),
        epoch: tokio::time::Instant::now(),
        state: State::new(config.send_queue_bytes, config.slow_consumer == gw_config::SlowConsumerPolicy::Drop),
        router: router::Router::new(),
        config,
    }))
}

/// Runs a gateway until `shutdown` is cancelled, then stops gracefully: stop accepting, close
/// every client with a close frame (1001), deliver their close events to the workers, flush the
/// worker links, all within the grace period.
pub async fn run(config: GatewayConfig, listeners: Listeners, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let gw = build(config, &listeners)?;
    serve(gw, listeners, shutdown).await
}

/// [`run`] with state built by [`build`], so callers can observe it.
pub async fn serve(gw: Arc<Gateway>, listeners: Listeners, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let first_public =
        listeners.public.first().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        name = %gw.config.name,
        public = %first_public,
        listeners = ?gw.listener_urls(),
        internal = %listeners.internal.local_addr().map_err(GatewayError::Listener)?,
        advertise = %gw.address,
        "gateway listening"
    );
    let clients_down = CancellationToken::new();
    let links_down = CancellationToken::new();
    let clients = TaskTracker::new();
    let links = TaskTracker::new();

    announce::spawn_all(&gw, &links_down, &links);
    let internal = accept::accept_loop(listeners.internal, shutdown.clone(), None, {
        let gw = gw.clone();
        let links_down = links_down.clone();
        let links = links.clone();
        move |stream, addr| {
            let Ok(pending) = gw.pending_links.acquire(addr.ip()) else {
                Metrics::inc(&gw.state.metrics.rejected_links_busy);
                tracing::debug!(peer = %addr, "internal connection refused: too many handshakes pending");
                return;
            };
            links.spawn(peer::serve(stream, addr, gw.clone(), links_down.clone(), pending));
        }
    });
    let heartbeat = tokio::spawn(heartbeat::run(gw.clone(), clients_down.clone()));
    let mut public = Vec::new();
    for (socket, spec) in listeners.public.into_iter().zip(gw.listeners.clone()) {
        let (gw, clients_down, clients) = (gw.clone(), clients_down.clone(), clients.clone());
        let shed = Some(accept::Shedding { gw: gw.clone(), spec: spec.clone() });
        public.push(accept::accept_loop(socket, shutdown.clone(), shed, move |stream, addr| {
            let slot = match gw.limits.acquire(addr.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    let counter = match refusal {
                        listener::Refusal::Total => &gw.state.metrics.rejected_total_limit,
                        listener::Refusal::PerIp => &gw.state.metrics.rejected_ip_limit,
                    };
                    Metrics::inc(counter);
                    tracing::debug!(peer = %addr, ?refusal, "connection refused: limit reached");
                    accept::refuse(&spec, &stream);
                    return;
                }
            };
            let span = tracing::debug_span!("conn", peer = %addr);
            clients.spawn(
                client::serve(stream, addr, spec.clone(), gw.clone(), clients_down.clone(), slot).instrument(span),
            );
        }));
    }
    tokio::join!(internal, futures_util::future::join_all(public));

    tracing::info!(clients = gw.state.client_count(), "gateway stopping: closing clients");
    let deadline = tokio::time::Instant::now() + gw.config.grace_period;
    clients_down.cancel();
    clients.close();
    if tokio::time::timeout_at(deadline, clients.wait()).await.is_err() {
        tracing::warn!("grace period over with clients still closing; dropping them");
    }
    // The clients' close events are on their way to the workers, whose on_close handlers
    // usually answer through this gateway (a "left the room" to the others): keep the links up
    // until every event is acknowledged, i.e. its handler returned and its commands arrived.
    let acknowledged = async {
        while gw.unacknowledged() > 0 && gw.worker_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout_at(deadline, acknowledged).await.is_err() {
        tracing::warn!(events = gw.unacknowledged(), "grace period over with events not acknowledged by workers");
    }
    heartbeat.abort();
    links_down.cancel();
    links.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), links.wait()).await;
    tracing::info!("gateway stopped");
    Ok(())
}
