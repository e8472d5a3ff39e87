//! The register: service discovery.
//!
//! Gateways announce their advertised internal address and stay listed while their link lives.
//! Workers and gateway clients subscribe and receive the complete gateway list at once and again
//! on every change. The register holds no client data; a restarted register is repopulated by the
//! gateways' re-announcements within their reconnect backoff.
//!
//! With a `[gatewayworker]` section it also speaks PHP GatewayWorker's register protocol on a
//! second listener (`gatewayworker.rs`), with a gateway list of its own. Both listeners run
//! `gw_link`'s accept loop and admit peers through one [`Admission`].

mod gatewayworker;
mod node;
mod peer;
mod registry;

use std::sync::Arc;

use gw_config::RegisterConfig;
use gw_link::listener::{accept_loop, listen};
use gw_link::{Admission, AdmissionConfig, HandshakeOptions};
use gw_proto::Role;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use node::RegisterNode;
pub use registry::{Registry, RegistryStats};

/// Connections of one register in their handshake at most (both listeners together): a
/// cluster's peers reconnecting at once after a restart fit, a flood of silent connections
/// cannot take every descriptor.
const MAX_PENDING: usize = 1024;
/// Of those, from one address.
const MAX_PENDING_PER_IP: usize = 256;

/// Errors that stop the register.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A listener failed.
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
    /// A listener could not be bound (the message names the setting).
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The configuration key it comes from.
        setting: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The sockets a register serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Our own peers' listener (`listen`).
    pub native: TcpListener,
    /// PHP GatewayWorker peers' listener (`[gatewayworker] listen`), if configured.
    pub gatewayworker: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the configuration names.
    pub async fn bind(config: &RegisterConfig) -> Result<Self, RegisterError> {
        let bind = |addr: String, setting: &'static str| async move {
            listen(&addr).await.map_err(|source| RegisterError::Bind { addr, setting, source })
        };
        let native = bind(config.listen.clone(), "listen").await?;
        let gatewayworker = match &config.gatewayworker {
            Some(php) => Some(bind(php.listen.clone(), "gatewayworker.listen").await?),
            None => None,
        };
        Ok(Self { native, gatewayworker })
    }

    /// Every address listened on, as `status` shows them.
    pub fn addresses(&self) -> Vec<String> {
        let mut all: Vec<String> = self.native.local_addr().map(|a| a.to_string()).into_iter().collect();
        all.extend(
            self.gatewayworker.as_ref().and_then(|l| l.local_addr().ok()).map(|a| format!("gatewayworker://{a}")),
        );
        all
    }
}

impl From<TcpListener> for Listeners {
    /// Our own listener only.
    fn from(native: TcpListener) -> Self {
        Self { native, gatewayworker: None }
    }
}

/// What a running register knows, shared with whoever observes it (tests, the node).
#[derive(Debug, Clone, Default)]
pub struct Registries {
    /// Our gateways, for our workers and clients.
    pub native: Arc<Registry>,
    /// GatewayWorker-protocol gateways, for PHP workers and clients.
    pub gatewayworker: Arc<Registry>,
}

/// Runs a register on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: RegisterConfig,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
) -> Result<(), RegisterError> {
    run_with(config, listeners, shutdown, Registries::default()).await
}

/// [`run`] with registries owned by the caller, so it can observe them while the register runs.
pub async fn run_with(
    config: RegisterConfig,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
    registries: Registries,
) -> Result<(), RegisterError> {
    let Listeners { native, gatewayworker } = listeners.into();
    let local = native.local_addr().map_err(RegisterError::Listener)?;
    tracing::info!(name = %config.name, listen = %local, "register listening");
    let opts = Arc::new(HandshakeOptions::new(&config.secret, Role::Register, &config.name, &config.link));
    let admission = Arc::new(Admission::new(AdmissionConfig::from_link(&config.link, MAX_PENDING, MAX_PENDING_PER_IP)));
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let php = match (gatewayworker, config.gatewayworker.clone()) {
        (Some(socket), Some(php)) => Some(tokio::spawn(gatewayworker::serve(
            php,
            socket,
            admission.clone(),
            config.link.clone(),
            shutdown.clone(),
            registries.gatewayworker.clone(),
        ))),
        _ => None,
    };
    let registry = registries.native;
    accept_loop(native, "register", shutdown.clone(), None, |stream, peer_addr| {
        let Some(pending) = admission.enter(peer_addr, &registry.stats.rejected_busy) else { return };
        let span = tracing::info_span!("peer", peer = %peer_addr);
        let served = peer::serve(
            stream,
            pending,
            opts.clone(),
            config.clone(),
            registry.clone(),
            admission.clone(),
            shutdown.child_token(),
        );
        tracker.spawn(served.instrument(span));
    })
    .await;
    tracker.close();
    // Links only need to be closed; nothing is in flight that a peer would miss.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tracker.wait()).await;
    if let Some(php) = php {
        let _ = php.await;
    }
    tracing::info!("register stopped");
    Ok(())
}
