//! The register's second listener, speaking PHP GatewayWorker's register protocol
//! (`Register.php`): newline-delimited JSON with a plain-text `secret_key`. PHP BusinessWorkers and
//! GatewayClients send `worker_connect` and get `broadcast_addresses` now and on every change;
//! gateways (ours with a `[gatewayworker]` listener, or PHP ones) send `gateway_connect` and stay
//! listed while their connection lives. These are GatewayWorker-protocol addresses, kept in a
//! [`Registry`] of their own: Rust peers never see them, PHP peers never see ours.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gw_config::RegisterGatewayWorker;
use gw_gatewayworker_protocol::register::{self, MAX_LINE, ToRegister};
use gw_proto::GatewayInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Registry;

/// A peer that sends nothing this long after connecting is closed, as `Register.php` does.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// Why a GatewayWorker peer of the register was refused (logged with its address).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Line(#[from] register::RegisterLineError),
    #[error("secret_key does not match")]
    WrongSecret,
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("nothing received within {FIRST_MESSAGE:?}")]
    Silent,
}

/// Serves the GatewayWorker register protocol on `listener` until `shutdown`.
pub async fn serve(
    config: RegisterGatewayWorker,
    listener: TcpListener,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %local, "register listening for GatewayWorker (PHP) peers");
    let key: Arc<str> = config.secret_key.into();
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                crate::gw_link_accept_backoff(&e).await;
                continue;
            }
        };
        let span = tracing::info_span!("php_peer", peer = %peer);
        tracker.spawn(serve_one(stream, peer, key.clone(), registry.clone(), shutdown.clone()).instrument(span));
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    key: Arc<str>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut conn = Conn { registry: &registry, announced: None };
    let result = conn.run(stream, &key, &shutdown).await;
    if let Some(k) = conn.announced {
        registry.remove(k);
        tracing::info!("GatewayWorker gateway left");
    }
    if let Err(reason) = result {
        registry.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer, "closed GatewayWorker register connection: {reason}");
    }
}

struct Conn<'a> {
    registry: &'a Registry,
    announced: Option<u64>,
}

impl Conn<'_> {
    /// `Err` carries the log reason for a refused peer; a plain disconnect is `Ok`.
    async fn run(&mut self, stream: TcpStream, key: &str, shutdown: &CancellationToken) -> Result<(), Refused> {
        let (mut r, mut w) = stream.into_split();
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut subscription: Option<watch::Receiver<Arc<Vec<GatewayInfo>>>> = None;
        let first_deadline = tokio::time::Instant::now() + FIRST_MESSAGE;
        let mut heard = false;
        loop {
            // Complete lines first, then wait for more bytes or a list change.
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                heard = true;
                let line = &line[..line.len() - 1];
                if line.trim_ascii().is_empty() {
                    continue;
                }
                match register::parse(line)? {
                    ToRegister::GatewayConnect { address, secret_key } => {
                        if secret_key != key {
                            return Err(Refused::WrongSecret);
                        }
                        if let Some(old) = self.announced.take() {
                            self.registry.remove(old);
                        }
                        tracing::info!(address = %address, "GatewayWorker gateway announced");
                        let name = "gatewayworker".to_string();
                        self.announced = Some(self.registry.announce(GatewayInfo { address, name }));
                    }
                    ToRegister::WorkerConnect { secret_key } => {
                        if secret_key != key {
                            return Err(Refused::WrongSecret);
                        }
                        let mut rx = self.registry.subscribe();
                        let list = rx.borrow_and_update().clone();
                        if w.write_all(&broadcast(&list)).await.is_err() {
                            return Ok(());
                        }
                        subscription = Some(rx);
                    }
                    ToRegister::Ping => {}
                }
            }
            if buf.len() > MAX_LINE {
                return Err(Refused::LineTooLong);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(first_deadline), if !heard => {
                    return Err(Refused::Silent);
                }
                changed = async {
                    match subscription.as_mut() {
                        Some(rx) => rx.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(()) = changed else { return Ok(()) };
                    let list = subscription.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                    if w.write_all(&broadcast(&list)).await.is_err() {
                        return Ok(());
                    }
                }
                n = r.read(&mut chunk) => match n {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        }
    }
}

/// The `broadcast_addresses` line for the listed gateways.
fn broadcast(list: &[GatewayInfo]) -> Vec<u8> {
    register::broadcast_addresses(&list.iter().map(|g| g.address.clone()).collect::<Vec<_>>())
}
