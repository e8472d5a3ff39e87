//! The gateway: holds client sockets and never runs business logic.
//!
//! It gives every client a routable, never-reused client id, keeps each client's session, uid
//! binding and groups, forwards client events to one business worker per client (sticky,
//! least-loaded first, re-bound when that worker goes away), and executes the commands and queries
//! that workers and gateway clients send over the internal listener. It announces its internal
//! address to every register.

mod announce;
mod client;
pub mod metrics;
mod node;
mod peer;
mod redeliver;
mod router;
mod session;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gw_config::GatewayConfig;
use gw_link::HandshakeOptions;
use gw_proto::{ClientId, Role};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use metrics::Metrics;
pub use node::GatewayNode;
pub use state::State;

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
}

/// The two listeners a gateway serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Public WebSocket listener for clients.
    pub public: TcpListener,
    /// Internal listener for business workers and gateway clients.
    pub internal: TcpListener,
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
    pub(crate) public_addr: SocketAddr,
    pub(crate) next_client: AtomicU64,
    pub(crate) ws_config: WebSocketConfig,
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
}

/// Builds the gateway state for the given listeners (the advertised address defaults to the
/// internal listener's real address, so port 0 works in tests).
pub fn build(config: GatewayConfig, listeners: &Listeners) -> Result<Arc<Gateway>, GatewayError> {
    let internal = listeners.internal.local_addr().map_err(GatewayError::Listener)?;
    let public_addr = listeners.public.local_addr().map_err(GatewayError::Listener)?;
    let address = config.advertise.clone().unwrap_or_else(|| internal.to_string());
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_message_size.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
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
        public_addr,
        next_client: AtomicU64::new(1),
        ws_config,
        state: State::new(),
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
    tracing::info!(
        name = %gw.config.name,
        public = %gw.public_addr,
        internal = %listeners.internal.local_addr().map_err(GatewayError::Listener)?,
        advertise = %gw.address,
        "gateway listening"
    );
    let clients_down = CancellationToken::new();
    let links_down = CancellationToken::new();
    let clients = TaskTracker::new();
    let links = TaskTracker::new();

    announce::spawn_all(&gw, &links_down, &links);
    let internal = accept_loop(listeners.internal, shutdown.clone(), {
        let gw = gw.clone();
        let links_down = links_down.clone();
        let links = links.clone();
        move |stream, addr| {
            links.spawn(peer::serve(stream, addr, gw.clone(), links_down.clone()));
        }
    });
    let public = accept_loop(listeners.public, shutdown.clone(), {
        let gw = gw.clone();
        let clients_down = clients_down.clone();
        let clients = clients.clone();
        move |stream, addr| {
            let span = tracing::debug_span!("conn", peer = %addr);
            clients.spawn(client::serve(stream, addr, gw.clone(), clients_down.clone()).instrument(span));
        }
    });
    tokio::join!(internal, public);

    tracing::info!(clients = gw.state.client_count(), "gateway stopping: closing clients");
    let deadline = tokio::time::Instant::now() + gw.config.grace_period;
    clients_down.cancel();
    clients.close();
    if tokio::time::timeout_at(deadline, clients.wait()).await.is_err() {
        tracing::warn!("grace period over with clients still closing; dropping them");
    }
    links_down.cancel();
    links.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), links.wait()).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Accepts until shutdown. Accept errors never end the loop: a reset connection is skipped and
/// resource exhaustion (EMFILE) backs off briefly instead of spinning.
async fn accept_loop(
    listener: TcpListener,
    shutdown: CancellationToken,
    mut on_conn: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => on_conn(stream, addr),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
