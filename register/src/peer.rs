//! One peer link: handshake, then either a gateway's announcement or a subscriber's list feed.
//! The link itself (heartbeat, writer, graceful close) is `gw_link`'s engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_config::RegisterConfig;
use gw_link::wire::RegisterSide;
use gw_link::{Admission, HandshakeOptions, LinkEngine, LinkError, LinkOptions, Pending};
use gw_proto::{FromRegister, GatewayInfo, Role, ToRegister};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use tracing::Instrument;

use crate::Registry;

/// Serves one peer: its handshake through the register's admission, then its link until it
/// leaves or `shutdown`.
pub(crate) async fn serve(
    stream: TcpStream,
    pending: Pending,
    opts: Arc<HandshakeOptions>,
    config: Arc<RegisterConfig>,
    registry: Arc<Registry>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    let roles = [Role::Gateway, Role::Worker, Role::Client];
    let handshake = |deadline| gw_link::accept_within(stream, &opts, &roles, deadline);
    let Some(link) = admission.admit(pending, "peer", registry.stats.admission(), handshake).await else {
        return;
    };
    let role = link.peer.role;
    let span = tracing::info_span!("link", role = %role, node = %link.peer.node);
    span.in_scope(|| tracing::debug!("peer authenticated"));

    let engine = LinkEngine::<RegisterSide>::new(LinkOptions::from(&config.link), 64);
    let mut peer = Peer { role, registry: &registry, tx: engine.sender(), announced: None, subscription: None };
    let result = engine.run(link.reader, link.writer, &mut peer, &shutdown).instrument(span).await;
    if let Some(key) = peer.announced {
        if shutdown.is_cancelled() {
            // The register is stopping, not the gateway: its subscribers are told nothing (a
            // worker told the gateway left would not redial it if its link dropped while no
            // register is up), and the list ends with the process.
            tracing::debug!(role = %role, node = %link.peer.node, "register stopping; gateway left listed");
        } else {
            registry.remove(key);
            tracing::info!(role = %role, node = %link.peer.node, "gateway left");
        }
    }
    if peer.subscription.is_some() && role != Role::Gateway {
        registry.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
    match result {
        Ok(_) => tracing::debug!(node = %link.peer.node, "link closed"),
        Err(e) if e.is_disconnect() => tracing::debug!(node = %link.peer.node, error = %e, "link closed"),
        Err(e) => {
            registry.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %link.peer.node, error = %e, "link dropped");
        }
    }
}

/// What one peer is to the registry: the gateway it announced, or a subscription to the list.
struct Peer<'a> {
    role: Role,
    registry: &'a Registry,
    tx: mpsc::Sender<FromRegister>,
    announced: Option<u64>,
    subscription: Option<watch::Receiver<Arc<Vec<GatewayInfo>>>>,
}

impl Peer<'_> {
    /// The gateway list now, and again on every change (see `outgoing`).
    async fn subscribe(&mut self) {
        let mut rx = self.registry.subscribe();
        let list = rx.borrow_and_update().clone();
        self.subscription = Some(rx);
        self.tx.send(FromRegister::Gateways { list: list.to_vec() }).await.ok();
    }
}

impl gw_link::Handler<RegisterSide> for Peer<'_> {
    fn on_received(&mut self) {
        self.registry.stats.messages.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_message(&mut self, msg: ToRegister) -> Result<(), LinkError> {
        match msg {
            ToRegister::Announce { .. } if self.role != Role::Gateway => {
                return Err(LinkError::Unexpected(format!("a {} may not announce a gateway", self.role)));
            }
            ToRegister::Subscribe if self.role == Role::Gateway => {
                return Err(LinkError::Unexpected("a gateway may not subscribe".into()));
            }
            ToRegister::Announce { gateway } => {
                if let Some(old) = self.announced.take() {
                    self.registry.remove(old);
                }
                tracing::info!(address = %gateway.address, name = %gateway.name, "gateway announced");
                self.announced = Some(self.registry.announce(gateway));
                // A gateway hears the list too: it links to the other gateways (clients that
                // resume through it, Pusher client events). Not counted as a subscriber.
                self.subscribe().await;
            }
            ToRegister::Subscribe => {
                if self.subscription.is_none() {
                    self.registry.stats.subscribers.fetch_add(1, Ordering::Relaxed);
                }
                self.subscribe().await;
            }
            // The engine answers heartbeats.
            ToRegister::Ping | ToRegister::Pong => {}
        }
        Ok(())
    }

    /// The list again on every change, for a subscriber; nothing for anyone else.
    async fn outgoing(&mut self) -> Option<FromRegister> {
        let Some(rx) = self.subscription.as_mut() else { return std::future::pending().await };
        rx.changed().await.ok()?;
        let list = rx.borrow_and_update().clone();
        Some(FromRegister::Gateways { list: list.to_vec() })
    }
}
