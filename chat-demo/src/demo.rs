//! The chat demo in one process: a register, a gateway, a business worker running the chat
//! handler, and the web backend serving the page — the same library entry points the three
//! daemons use, started side by side.

use std::net::SocketAddr;

use crate::app::Chat;
use anyhow::Context;
use gw_business_worker::Worker;
use gw_config::{GatewayConfig, RegisterConfig, WorkerConfig};
use gw_gateway_client::GatewayClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The sockets of an all-in-one demo, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct DemoListeners {
    /// The register's listener (internal).
    pub register: TcpListener,
    /// The gateway's WebSocket listener.
    pub gateway_public: TcpListener,
    /// The gateway's internal listener, for workers.
    pub gateway_internal: TcpListener,
    /// The chat page and `/api/*`.
    pub web: TcpListener,
}

impl DemoListeners {
    /// Binds the chat page and the WebSocket listener on `host`, and the register and the
    /// gateway's internal listener on [`internal_host`]`(host)`, with the given ports (0 for any).
    pub async fn bind(host: &str, register: u16, ws: u16, internal: u16, web: u16) -> anyhow::Result<Self> {
        let bind = |host: &str, port: u16, what: &'static str| {
            let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            async move { TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr} ({what})")) }
        };
        let inside = internal_host(host);
        Ok(Self {
            register: bind(inside, register, "register").await?,
            gateway_public: bind(host, ws, "websocket").await?,
            gateway_internal: bind(inside, internal, "gateway internal").await?,
            web: bind(host, web, "web page").await?,
        })
    }
}

/// Where the demo's register and gateway-internal listener bind for a `--host`: the host itself
/// if it is a loopback address, else `127.0.0.1`. The demo runs without a secret, and the daemons
/// refuse to listen for internal peers on any other address without one; everything internal to
/// the demo is in its own process anyway.
pub fn internal_host(host: &str) -> &str {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { host } else { "127.0.0.1" }
}

/// Where the running demo can be reached.
#[derive(Debug, Clone)]
pub struct DemoAddrs {
    /// The register.
    pub register: SocketAddr,
    /// The gateway's WebSocket listener.
    pub websocket: SocketAddr,
    /// The chat page.
    pub web: SocketAddr,
}

impl DemoAddrs {
    /// What the launcher prints once the demo runs: where to connect and how to try it. `host` is
    /// the `--host` the public listeners were bound on.
    pub fn banner(&self, host: &str) -> String {
        let mut out = String::new();
        out.push('\n');
        out.push_str(&format!("  chat page:  http://{}/\n", self.web));
        out.push_str(&format!("  websocket:  ws://{}/\n", self.websocket));
        out.push_str(&format!("  register:   {}\n", self.register));
        let inside = internal_host(host);
        if inside != host {
            out.push('\n');
            out.push_str(&format!(
                "  note: the register and the gateway's internal listeners stay on {inside}: the demo has no\n"
            ));
            out.push_str(&format!(
                "  secret, so only the page and the WebSocket listen on {host}. For a cluster across\n"
            ));
            out.push_str(
                "  machines, run the daemons with a `secret` (see README, \"Running the daemons separately\").\n",
            );
        }
        out.push('\n');
        out.push_str(&format!("  open the page in two browser tabs, or: websocat ws://{}/\n", self.websocket));
        out.push_str(&format!(
            "  push from the web backend: curl -X POST http://{}/api/announce -H 'content-type: application/json' -d '{{\"content\":\"hello\"}}'\n",
            self.web
        ));
        out.push_str("  Ctrl-C stops everything gracefully.\n\n");
        out
    }
}

/// Descriptors left for what the process opens between sizing the demo's gateway and the
/// gateway's own count (a handful: the demo has bound its sockets already).
const FD_MARGIN: usize = 64;

/// The demo gateway's `max_connections`: the default, or what the open-files limit leaves room
/// for when that is less. The demo asks for no particular capacity, so a limit below the default
/// is no reason for the warning a daemon configured with `max_connections` gets on its first
/// screen.
fn client_capacity(config: &GatewayConfig) -> usize {
    match gw_gateway::FdBudget::compute(config.max_connections, config.fd_reserve) {
        Ok(budget) if budget.client_capacity < config.max_connections => {
            budget.client_capacity.saturating_sub(FD_MARGIN).max(1)
        }
        // Room enough, or none at all (which the gateway itself then reports).
        _ => config.max_connections,
    }
}

/// Starts everything and returns once the worker is connected to the gateway; the components run
/// until `shutdown` is cancelled. Joining the returned handle waits for their graceful stop.
pub async fn start(
    listeners: DemoListeners,
    shutdown: CancellationToken,
) -> anyhow::Result<(DemoAddrs, tokio::task::JoinHandle<()>)> {
    let addrs = DemoAddrs {
        register: listeners.register.local_addr()?,
        websocket: listeners.gateway_public.local_addr()?,
        web: listeners.web.local_addr()?,
    };
    let register_addr = addrs.register.to_string();
    let mut gateway_config =
        GatewayConfig { name: "gateway-1".into(), registers: vec![register_addr.clone()], ..GatewayConfig::default() };
    gateway_config.max_connections = client_capacity(&gateway_config);
    // The page reconnects through gatewayrs.js: a dropped connection comes back under the same
    // client id with nothing lost (docs/recovery.md).
    gateway_config.recovery.enabled = true;
    let worker_config =
        WorkerConfig { name: "worker-1".into(), registers: vec![register_addr.clone()], ..WorkerConfig::default() };
    let register_stop = CancellationToken::new();
    let register = tokio::spawn(gw_register::run(
        RegisterConfig { name: "register".into(), ..RegisterConfig::default() },
        listeners.register,
        register_stop.clone(),
    ));
    let gateway_listeners = gw_gateway::Listeners::new(vec![listeners.gateway_public], listeners.gateway_internal);
    let gateway_stop = CancellationToken::new();
    let gateway = gw_gateway::build(gateway_config, &gateway_listeners)?;
    let gateway_task = tokio::spawn(gw_gateway::serve(gateway.clone(), gateway_listeners, gateway_stop.clone()));
    let worker_stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(worker_config, Chat::default()).run(worker_stop.clone()));

    let client = GatewayClient::builder([register_addr])
        .name("chat-web-backend")
        .connect()
        .await
        .context("the web backend could not reach the register")?;
    let ws_url = format!("ws://{}/", addrs.websocket);
    let app = crate::web::router(client, ws_url);
    let web_stop = shutdown.clone();
    let web = tokio::spawn(async move {
        let serve = axum::serve(listeners.web, app).with_graceful_shutdown(async move { web_stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "web backend failed");
        }
    });

    // Ready when the worker is linked to the gateway.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while gateway.worker_count() == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the worker did not connect to the gateway within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let all = tokio::spawn(async move {
        shutdown.cancelled().await;
        // Gateway first, so clients get their close frames and the worker their on_close events;
        // then the worker, then the register.
        gateway_stop.cancel();
        let _ = gateway_task.await;
        worker_stop.cancel();
        let _ = worker.await;
        register_stop.cancel();
        let _ = register.await;
        let _ = web.await;
    });
    Ok((addrs, all))
}
