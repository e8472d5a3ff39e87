//! The register: service discovery.
//!
//! Gateways announce their advertised internal address and stay listed while their link lives.
//! Workers and gateway clients subscribe and receive the complete gateway list at once and again
//! on every change. The register holds no client data; a restarted register is repopulated by the
//! gateways' re-announcements within their reconnect backoff.

pub mod gatewayworker;
mod node;
mod peer;
mod registry;

use std::sync::Arc;

use gw_config::RegisterConfig;
use gw_link::{HandshakeLimiter, HandshakeOptions};
use gw_proto::Role;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use node::RegisterNode;
pub use registry::{Registry, RegistryStats};

/// Errors that stop the register.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The listener failed.
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
}

/// Runs a register on `listener` until `shutdown` is cancelled. Returns the registry so callers
/// (tests, the one-process launcher) can observe it while it runs via [`run_with`].
pub async fn run(
    config: RegisterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RegisterError> {
    run_with(config, listener, shutdown, Arc::new(Registry::default())).await
}

/// [`run`] with a registry owned by the caller.
pub async fn run_with(
    config: RegisterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
) -> Result<(), RegisterError> {
    let local = listener.local_addr().map_err(RegisterError::Listener)?;
    tracing::info!(name = %config.name, listen = %local, "register listening");
    let opts = Arc::new(HandshakeOptions {
        secret: config.secret.clone().into_bytes(),
        role: Role::Register,
        node: config.name.clone(),
        max_frame: config.link.max_frame,
        timeout: config.link.handshake_timeout,
    });
    let config = Arc::new(config);
    // Per listener: an address with too many failed handshakes is refused before any work.
    let limiter = Arc::new(HandshakeLimiter::new(gw_link::LimiterConfig::from(&config.link)));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer_addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                gw_link_accept_backoff(&e).await;
                continue;
            }
        };
        let span = tracing::info_span!("peer", peer = %peer_addr);
        tracker.spawn(
            peer::serve(
                stream,
                peer_addr,
                opts.clone(),
                config.clone(),
                registry.clone(),
                limiter.clone(),
                shutdown.child_token(),
            )
            .instrument(span),
        );
    }
    tracker.close();
    // Links only need to be closed; nothing is in flight that a peer would miss.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tracker.wait()).await;
    tracing::info!("register stopped");
    Ok(())
}

/// Accept errors are per-connection (reset before accept) or resource exhaustion (EMFILE): never
/// fatal. On exhaustion, pause briefly so the loop does not spin.
pub(crate) async fn gw_link_accept_backoff(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
