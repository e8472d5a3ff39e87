//! One peer link: handshake, then either a gateway's announcement or a subscriber's list feed,
//! with heartbeats both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_config::RegisterConfig;
use gw_link::{FrameReader, HandshakeLimiter, HandshakeOptions, LinkError, WriterStats};
use gw_proto::{FromRegister, Role, ToRegister};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Registry;

pub(crate) async fn serve(
    stream: TcpStream,
    peer_addr: SocketAddr,
    opts: Arc<HandshakeOptions>,
    config: Arc<RegisterConfig>,
    registry: Arc<Registry>,
    limiter: Arc<HandshakeLimiter>,
    shutdown: CancellationToken,
) {
    // Every connection gets the challenge, so garbage from a shared address never keeps out a
    // peer that proves the secret; an address with too many recent failures is served lean
    // (short deadline, failures counted but logged once per window by the limiter).
    let permit = limiter.admit(peer_addr.ip());
    let timeout = permit.timeout(opts.timeout);
    let roles = [Role::Gateway, Role::Worker, Role::Client];
    let link = match gw_link::accept_within(stream, &opts, &roles, timeout).await {
        Ok(link) => {
            permit.succeeded();
            link
        }
        // Over budget: counted, and logged by the limiter once per window, not here.
        Err(_) if permit.over_budget() => {
            permit.failed();
            registry.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => {
            permit.failed();
            registry.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer_addr, error = %e, "refused peer: handshake failed");
            return;
        }
    };
    let role = link.peer.role;
    let span = tracing::info_span!("link", role = %role, node = %link.peer.node);
    let _enter = span.enter();
    tracing::debug!("peer authenticated");
    drop(_enter);

    let (tx, mut rx) = mpsc::channel::<FromRegister>(64);
    let stats = WriterStats::default();
    let finish = CancellationToken::new();
    let writer = gw_link::write_loop(link.writer, &mut rx, config.link.max_frame, &stats, &finish, |_| {});
    let mut state = PeerState { role, registry: &registry, announced: None, subscription: None };
    let reader = state.read_loop(link.reader, &tx, &config, &shutdown);
    let result = tokio::select! {
        r = reader => r,
        r = writer => r,
    };
    if let Some(key) = state.announced {
        registry.remove(key);
        tracing::info!(role = %role, node = %link.peer.node, "gateway left");
    }
    if state.subscription.is_some() {
        registry.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
    match result {
        Ok(()) => tracing::debug!(node = %link.peer.node, "link closed"),
        Err(e) if e.is_disconnect() => tracing::debug!(node = %link.peer.node, error = %e, "link closed"),
        Err(e) => {
            registry.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %link.peer.node, error = %e, "link dropped")
        }
    }
}

struct PeerState<'a> {
    role: Role,
    registry: &'a Registry,
    announced: Option<u64>,
    subscription: Option<tokio::sync::watch::Receiver<Arc<Vec<gw_proto::GatewayInfo>>>>,
}

impl PeerState<'_> {
    async fn read_loop(
        &mut self,
        mut reader: FrameReader<OwnedReadHalf>,
        tx: &mpsc::Sender<FromRegister>,
        config: &RegisterConfig,
        shutdown: &CancellationToken,
    ) -> Result<(), LinkError> {
        let mut ping = tokio::time::interval(config.link.heartbeat_interval);
        let timeout = config.link.heartbeat_timeout;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ping.tick() => {
                    if last_heard.elapsed() > timeout {
                        return Err(LinkError::HeartbeatTimeout(timeout));
                    }
                    if tx.send(FromRegister::Ping).await.is_err() {
                        return Ok(());
                    }
                }
                changed = async {
                    match self.subscription.as_mut() {
                        Some(rx) => rx.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(()) = changed else { return Ok(()) };
                    let list = self.subscription.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                    if tx.send(FromRegister::Gateways { list: list.to_vec() }).await.is_err() {
                        return Ok(());
                    }
                }
                msg = reader.read::<ToRegister>() => {
                    let Some(msg) = msg? else { return Ok(()) };
                    last_heard = tokio::time::Instant::now();
                    self.registry.stats.messages.fetch_add(1, Ordering::Relaxed);
                    self.handle(msg, tx).await?;
                }
            }
        }
    }

    async fn handle(&mut self, msg: ToRegister, tx: &mpsc::Sender<FromRegister>) -> Result<(), LinkError> {
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
            }
            ToRegister::Subscribe => {
                if self.subscription.is_none() {
                    self.registry.stats.subscribers.fetch_add(1, Ordering::Relaxed);
                }
                let mut rx = self.registry.subscribe();
                let list = rx.borrow_and_update().clone();
                self.subscription = Some(rx);
                tx.send(FromRegister::Gateways { list: list.to_vec() }).await.ok();
            }
            ToRegister::Ping => {
                tx.send(FromRegister::Pong).await.ok();
            }
            ToRegister::Pong => {}
        }
        Ok(())
    }
}
