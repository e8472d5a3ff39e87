//! The register's second listener, speaking PHP GatewayWorker's register protocol
//! (`Register.php`): newline-delimited JSON with a plain-text `secret_key`. PHP BusinessWorkers and
//! GatewayClients send `worker_connect` and get `broadcast_addresses` now and on every change;
//! gateways (ours with a `[gatewayworker]` listener, or PHP ones) send `gateway_connect` and stay
//! listed while their connection lives. These are GatewayWorker-protocol addresses, kept in a
//! [`Registry`] of their own: Rust peers never see them, PHP peers never see ours.
//!
//! A connection is admitted like our own peers (the register's [`Admission`]): it must send
//! `gateway_connect` or `worker_connect` with the right key within the handshake timeout (a
//! `ping` before that does not count, where `Register.php` takes any message), then it is a
//! link on `gw_link`'s engine with the register protocol's wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use gw_config::{LinkConfig, RegisterGatewayWorker};
use gw_gatewayworker_protocol::register::ToRegister;
use gw_link::gatewayworker::{Lines, PhpRegisterSide};
use gw_link::listener::accept_loop;
use gw_link::wire::Wire;
use gw_link::{Admission, FrameReader, Handler, LinkEngine, LinkError, LinkOptions, Pending};
use gw_proto::GatewayInfo;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Registry;

/// Why a GatewayWorker peer of the register was refused or closed (logged with its address).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("secret_key does not match")]
    WrongSecret,
    #[error("no gateway_connect or worker_connect within {0:?}")]
    Silent(Duration),
    #[error("closed before it said who it is")]
    Closed,
}

/// Serves the GatewayWorker register protocol on `listener` until `shutdown`.
pub(crate) async fn serve(
    config: RegisterGatewayWorker,
    listener: TcpListener,
    admission: Arc<Admission>,
    link: LinkConfig,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %local, "register listening for GatewayWorker (PHP) peers");
    let key: Arc<str> = config.secret_key.into();
    let options = LinkOptions {
        // PHP peers ping every 25 s but nothing checks; neither does Register.php.
        heartbeat_timeout: Duration::MAX,
        ..LinkOptions::from(&link)
    };
    let tracker = TaskTracker::new();
    accept_loop(listener, "gatewayworker", shutdown.clone(), None, |stream, peer| {
        let Some(pending) = admission.enter(peer, &registry.stats.rejected_busy) else { return };
        let span = tracing::info_span!("php_peer", peer = %peer);
        let peer = Peer { key: key.clone(), registry: registry.clone(), options };
        tracker.spawn(peer.serve(stream, pending, admission.clone(), shutdown.clone()).instrument(span));
    })
    .await;
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

/// What one connection needs.
struct Peer {
    key: Arc<str>,
    registry: Arc<Registry>,
    options: LinkOptions,
}

impl Peer {
    async fn serve(self, stream: TcpStream, pending: Pending, admission: Arc<Admission>, shutdown: CancellationToken) {
        let peer: Option<SocketAddr> = stream.peer_addr().ok();
        let (r, w) = stream.into_split();
        let handshake = |deadline| authenticate(r, &self.key, deadline);
        let counters = self.registry.stats.admission();
        let Some((reader, hello)) = admission.admit(pending, "GatewayWorker peer", counters, handshake).await else {
            return;
        };
        let engine = LinkEngine::<PhpRegisterSide>::new(self.options, 16);
        let mut conn =
            Conn { key: &self.key, registry: &self.registry, tx: engine.sender(), announced: None, subscription: None };
        let result = match conn.on_message(hello).await {
            Ok(()) => engine.run(reader, w, &mut conn, &shutdown).await.map(drop),
            Err(e) => Err(e),
        };
        if let Some(k) = conn.announced {
            self.registry.remove(k);
            tracing::info!("GatewayWorker gateway left");
        }
        match result {
            Ok(()) => {}
            Err(e) if e.is_disconnect() => tracing::debug!(error = %e, "GatewayWorker register connection closed"),
            Err(reason) => {
                self.registry.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?peer, "closed GatewayWorker register connection: {reason}");
            }
        }
    }
}

/// The unauthenticated phase: lines until `gateway_connect` or `worker_connect` with the right
/// key, within `deadline`. Pings meanwhile are read and ignored.
async fn authenticate(
    r: OwnedReadHalf,
    key: &str,
    deadline: Duration,
) -> Result<(FrameReader<OwnedReadHalf, Lines>, ToRegister), Refused> {
    let mut reader = FrameReader::with_framing(r, Lines::default(), BytesMut::with_capacity(512));
    let said = async {
        loop {
            let line = reader.next().await?.ok_or(Refused::Closed)?;
            match PhpRegisterSide::decode(line)? {
                ToRegister::Ping => {}
                ToRegister::GatewayConnect { secret_key, .. } | ToRegister::WorkerConnect { secret_key }
                    if secret_key != key =>
                {
                    return Err(Refused::WrongSecret);
                }
                hello => return Ok(hello),
            }
        }
    };
    let hello = tokio::time::timeout(deadline, said).await.map_err(|_| Refused::Silent(deadline))??;
    Ok((reader, hello))
}

/// One authenticated PHP peer: the gateway it announced, or its subscription to the list.
struct Conn<'a> {
    key: &'a str,
    registry: &'a Registry,
    tx: mpsc::Sender<Vec<String>>,
    announced: Option<u64>,
    subscription: Option<watch::Receiver<Arc<Vec<GatewayInfo>>>>,
}

impl Handler<PhpRegisterSide> for Conn<'_> {
    fn on_received(&mut self) {
        self.registry.stats.messages.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_message(&mut self, msg: ToRegister) -> Result<(), LinkError> {
        match msg {
            ToRegister::GatewayConnect { secret_key, .. } | ToRegister::WorkerConnect { secret_key }
                if secret_key != self.key =>
            {
                return Err(LinkError::Protocol(Refused::WrongSecret.to_string()));
            }
            ToRegister::GatewayConnect { address, .. } => {
                if let Some(old) = self.announced.take() {
                    self.registry.remove(old);
                }
                tracing::info!(address = %address, "GatewayWorker gateway announced");
                let name = "gatewayworker".to_string();
                self.announced = Some(self.registry.announce(GatewayInfo { address, name }));
            }
            ToRegister::WorkerConnect { .. } => {
                let mut rx = self.registry.subscribe();
                let list = rx.borrow_and_update().clone();
                self.subscription = Some(rx);
                // The engine's writer drains the outbox, so this wait ends.
                let _ = self.tx.send(addresses(&list)).await;
            }
            // The engine hears pings.
            ToRegister::Ping => {}
        }
        Ok(())
    }

    /// The list again on every change, for a subscriber.
    async fn outgoing(&mut self) -> Option<Vec<String>> {
        let Some(rx) = self.subscription.as_mut() else { return std::future::pending().await };
        rx.changed().await.ok()?;
        let list = rx.borrow_and_update().clone();
        Some(addresses(&list))
    }
}

fn addresses(list: &[GatewayInfo]) -> Vec<String> {
    list.iter().map(|g| g.address.clone()).collect()
}
