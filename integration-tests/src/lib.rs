//! Test harness: start real registers, gateways and business workers on `127.0.0.1:0`, talk to
//! them with a real WebSocket client, and wait for conditions instead of sleeping.

pub mod cut_proxy;
pub mod deflate_ws;
mod eventually;
pub mod fake_gateway;
pub mod logs;
pub mod numbered;
pub mod php;
pub mod process;
pub mod pusher;
pub mod recovering;
pub mod sockets;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::{GatewayConfig, LinkConfig, RegisterConfig, WorkerConfig};
use gw_gateway::Gateway;
use gw_gateway_client::GatewayClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use eventually::eventually;

/// Every Rust snippet of the README, compiled by `cargo test` as a doctest of this crate (whose
/// dependencies include every crate the snippets use; `tests/readme.rs` checks that each snippet
/// shows the dependency lines a reader must add).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub use tls::{self_signed, tls_connect};
pub use ws::WsClient;

/// Fast link timings so tests notice failures in well under a second.
pub fn fast_link() -> LinkConfig {
    LinkConfig {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..LinkConfig::default()
    }
}

/// A register running in this process.
pub struct RegisterHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its gateway list.
    pub registry: Arc<gw_register::Registry>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    secret: String,
}

impl RegisterHandle {
    /// A register on `127.0.0.1:0` with this secret.
    pub async fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, secret)
    }

    fn start_on(listener: TcpListener, secret: &str) -> Self {
        let addr = listener.local_addr().unwrap();
        let registry = Arc::new(gw_register::Registry::default());
        let stop = CancellationToken::new();
        let config = RegisterConfig {
            name: format!("register-{}", addr.port()),
            secret: secret.into(),
            link: fast_link(),
            ..RegisterConfig::default()
        };
        let task = tokio::spawn({
            let (registry, stop) = (registry.clone(), stop.clone());
            async move {
                let registries = gw_register::Registries { native: registry, ..Default::default() };
                gw_register::run_with(config, listener, stop, registries).await.unwrap();
            }
        });
        Self { addr, registry, stop, task, secret: secret.into() }
    }

    /// Stops it; returns its address and secret, to start another on the same port.
    pub async fn stop(self) -> (SocketAddr, String) {
        self.stop.cancel();
        self.task.await.unwrap();
        (self.addr, self.secret)
    }

    /// Stops the register and starts a fresh one (empty state) on the same address.
    pub async fn restart(self) -> Self {
        let (addr, secret) = self.stop().await;
        let listener = bind_again(addr).await;
        Self::start_on(listener, &secret)
    }
}

/// Binds an address just released (retrying briefly while the old socket goes away).
pub async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr} again");
}

/// A gateway running in this process.
pub struct GatewayHandle {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// `ws://` URL of its public listener.
    pub ws_url: String,
    /// Its internal listener.
    pub internal: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    /// A gateway on `127.0.0.1:0` announcing to `registers`.
    pub async fn start(registers: &[SocketAddr], secret: &str) -> Self {
        Self::start_with(registers, secret, |_| {}).await
    }

    /// Like `start`, with `tweak` applied to the config first.
    pub async fn start_with(registers: &[SocketAddr], secret: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(internal, registers, secret, tweak).await
    }

    /// Starts a gateway whose internal listener is `internal` (to restart on the same address).
    /// Public listeners (and a `[gatewayworker]` one) are bound as configured (after `tweak`),
    /// on their configured ports (use port 0).
    pub async fn start_on(
        internal: TcpListener,
        registers: &[SocketAddr],
        secret: &str,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let internal_addr = internal.local_addr().unwrap();
        let mut config = GatewayConfig {
            name: format!("gateway-{}", internal_addr.port()),
            listen: "127.0.0.1:0".into(),
            registers: registers.iter().map(|a| a.to_string()).collect(),
            secret: secret.into(),
            link: fast_link(),
            grace_period: Duration::from_secs(3),
            ..GatewayConfig::default()
        };
        tweak(&mut config);
        let mut public = Vec::new();
        for l in config.effective_listeners() {
            let url = gw_config::parse_listener_url(&l.url).unwrap();
            public.push(TcpListener::bind(url.addr).await.unwrap());
        }
        let mut listeners = gw_gateway::Listeners::new(public, internal);
        if let Some(php) = &config.gatewayworker {
            listeners.gatewayworker = Some(TcpListener::bind(&php.listen).await.unwrap());
        }
        let gw = gw_gateway::build(config, &listeners).unwrap();
        let ws_url = gw
            .listener_urls()
            .into_iter()
            .find_map(|u| u.strip_prefix("websocket://").map(|a| format!("ws://{a}/")))
            .unwrap_or_default();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (gw, stop) = (gw.clone(), stop.clone());
            async move {
                gw_gateway::serve(gw, listeners, stop).await.unwrap();
            }
        });
        Self { gw, ws_url, internal: internal_addr, stop, task }
    }

    /// Connects a WebSocket client.
    pub async fn client(&self) -> WsClient {
        WsClient::connect(&self.ws_url).await
    }

    /// Starts a graceful stop without waiting for it (`stop` waits).
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Graceful stop.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// The value of one of its counters, by metric name.
    pub fn metric(&self, name: &str) -> u64 {
        self.gw.state.metrics.get(name).unwrap()
    }

    /// Waits until this gateway has received `more` client messages beyond those it had now.
    pub async fn wait_for_more_messages(&self, more: u64, what: &str) {
        let mark = self.metric("messages_in");
        eventually(Duration::from_secs(30), what, || {
            let n = self.metric("messages_in");
            async move { n > mark + more }
        })
        .await;
    }
}

/// Waits for traffic tasks that return (messages sent, client); the total and the clients (kept
/// open so the caller can check that none was disconnected).
pub async fn join_traffic(tasks: Vec<tokio::task::JoinHandle<(usize, WsClient)>>) -> (usize, Vec<WsClient>) {
    let mut total = 0;
    let mut clients = Vec::new();
    for t in tasks {
        let (sent, ws) = t.await.unwrap();
        total += sent;
        clients.push(ws);
    }
    (total, clients)
}

/// A business worker on its own runtime and thread, so [`kill`](WorkerHandle::kill) can drop it
/// abruptly like `kill -9` (every socket closed, nothing flushed), while
/// [`stop`](WorkerHandle::stop) is the graceful path.
pub struct WorkerHandle {
    /// Its node name.
    pub name: String,
    /// Its counters.
    pub stats: Arc<gw_business_worker::WorkerStats>,
    stop: CancellationToken,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// A worker running `events`, linked to `registers`.
    pub fn start<E: Events>(name: &str, registers: &[SocketAddr], secret: &str, events: E) -> Self {
        let config = WorkerConfig {
            name: name.into(),
            registers: registers.iter().map(|a| a.to_string()).collect(),
            secret: secret.into(),
            link: fast_link(),
            grace_period: Duration::from_secs(3),
            ..WorkerConfig::default()
        };
        Self::start_config(config, events)
    }

    /// A worker with a config of the test's own.
    pub fn start_config<E: Events>(config: WorkerConfig, events: E) -> Self {
        let name = config.name.clone();
        let worker = gw_business_worker::Worker::new(config, events);
        let stats = worker.stats();
        let stop = CancellationToken::new();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                rt.block_on(async move {
                    tokio::select! {
                        _ = worker.run(stop) => {}
                        _ = kill_rx => {}
                    }
                });
                // Dropping the runtime drops every task and closes every socket at once.
                rt.shutdown_background();
            }
        });
        Self { name, stats, stop, kill: Some(kill_tx), thread: Some(thread) }
    }

    /// Crash: no drain, no goodbye.
    pub fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Graceful stop (drain, finish, close).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let t = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Echo that says which worker answered: `<worker>:<message>`.
#[derive(Debug, Clone)]
pub struct NamedEcho(pub String);

impl Events for NamedEcho {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = msg.as_text().unwrap_or("<binary>");
        ctx.send(format!("{}:{}", self.0, text)).await?;
        Ok(())
    }
}

/// A gateway client connected to `registers`, waiting until `gateways` gateways are linked.
pub async fn gateway_client(registers: &[SocketAddr], secret: &str, gateways: usize) -> GatewayClient {
    let client = GatewayClient::builder(registers.iter().map(|a| a.to_string()))
        .secret(secret)
        .link_config(fast_link())
        .connect()
        .await
        .unwrap();
    assert!(
        client.wait_for_gateways(gateways, Duration::from_secs(10)).await,
        "gateway client did not link to {gateways} gateways"
    );
    client
}

/// Waits until `gateway` has `n` usable workers.
pub async fn wait_for_workers(gateway: &GatewayHandle, n: usize) {
    let gw = gateway.gw.clone();
    eventually(Duration::from_secs(10), &format!("{n} workers on {}", gateway.ws_url), || {
        let gw = gw.clone();
        async move { gw.worker_count() == n }
    })
    .await;
}
