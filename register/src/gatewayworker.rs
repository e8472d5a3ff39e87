//! The register's second listener, speaking PHP GatewayWorker's register protocol
//! (`Register.php`): newline-delimited JSON with a plain-text `secret_key`. PHP BusinessWorkers and
//! GatewayClients send `worker_connect` and get `broadcast_addresses` now and on every change;
//! gateways (ours with a `[gatewayworker]` listener, or PHP ones) send `gateway_connect` and stay
//! listed while their connection lives. These are GatewayWorker-protocol addresses, a list of its
//! own: Rust peers never see them, PHP peers never see ours.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_config::RegisterGatewayWorker;
use gw_gatewayworker_protocol::register::{self, MAX_LINE, ToRegister};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A peer that sends nothing this long after connecting is closed, as `Register.php` does.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// GatewayWorker-protocol gateway addresses, keyed by the connection that announced them.
#[derive(Debug)]
pub struct PhpRegistry {
    links: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
    list: watch::Sender<Arc<Vec<String>>>,
    /// Connections closed for a wrong `secret_key`, bad JSON or an unknown event.
    pub refused: AtomicU64,
}

impl Default for PhpRegistry {
    fn default() -> Self {
        Self {
            links: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            list: watch::channel(Arc::new(Vec::new())).0,
            refused: AtomicU64::new(0),
        }
    }
}

impl PhpRegistry {
    fn announce(&self, address: String) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut links = self.links.lock().expect("registry lock");
        links.insert(key, address);
        self.publish(&links);
        key
    }

    fn remove(&self, key: u64) {
        let mut links = self.links.lock().expect("registry lock");
        if links.remove(&key).is_some() {
            self.publish(&links);
        }
    }

    fn publish(&self, links: &BTreeMap<u64, String>) {
        let mut list: Vec<String> = links.values().cloned().collect();
        list.sort();
        list.dedup();
        self.list.send_replace(Arc::new(list));
    }

    /// The GatewayWorker-protocol addresses now listed.
    pub fn addresses(&self) -> Arc<Vec<String>> {
        self.list.borrow().clone()
    }
}

/// Serves the GatewayWorker register protocol on `listener` until `shutdown`.
pub async fn serve(
    config: RegisterGatewayWorker,
    listener: TcpListener,
    shutdown: CancellationToken,
    registry: Arc<PhpRegistry>,
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
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
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
    registry: Arc<PhpRegistry>,
    shutdown: CancellationToken,
) {
    let mut conn = Conn { registry: &registry, announced: None };
    let result = conn.run(stream, &key, &shutdown).await;
    if let Some(k) = conn.announced {
        registry.remove(k);
        tracing::info!("GatewayWorker gateway left");
    }
    if let Err(reason) = result {
        registry.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer, "closed GatewayWorker register connection: {reason}");
    }
}

struct Conn<'a> {
    registry: &'a PhpRegistry,
    announced: Option<u64>,
}

impl Conn<'_> {
    /// `Err` carries the log reason for a refused peer; a plain disconnect is `Ok`.
    async fn run(&mut self, stream: TcpStream, key: &str, shutdown: &CancellationToken) -> Result<(), String> {
        let (mut r, mut w) = stream.into_split();
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut subscription: Option<watch::Receiver<Arc<Vec<String>>>> = None;
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
                match register::parse(line).map_err(|e| e.to_string())? {
                    ToRegister::GatewayConnect { address, secret_key } => {
                        if secret_key != key {
                            return Err("secret_key does not match".into());
                        }
                        if let Some(old) = self.announced.take() {
                            self.registry.remove(old);
                        }
                        tracing::info!(address = %address, "GatewayWorker gateway announced");
                        self.announced = Some(self.registry.announce(address));
                    }
                    ToRegister::WorkerConnect { secret_key } => {
                        if secret_key != key {
                            return Err("secret_key does not match".into());
                        }
                        let mut rx = self.registry.list.subscribe();
                        let list = rx.borrow_and_update().clone();
                        if w.write_all(&register::broadcast_addresses(&list)).await.is_err() {
                            return Ok(());
                        }
                        subscription = Some(rx);
                    }
                    ToRegister::Ping => {}
                }
            }
            if buf.len() > MAX_LINE {
                return Err(format!("line longer than {MAX_LINE} bytes"));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(first_deadline), if !heard => {
                    return Err(format!("nothing received within {FIRST_MESSAGE:?}"));
                }
                changed = async {
                    match subscription.as_mut() {
                        Some(rx) => rx.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(()) = changed else { return Ok(()) };
                    let list = subscription.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                    if w.write_all(&register::broadcast_addresses(&list)).await.is_err() {
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
