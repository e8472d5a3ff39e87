//! Runs an [`Events`] implementation: one task per client so a client's events are handled in
//! order while different clients proceed concurrently; handler errors and panics are contained.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use gw_config::WorkerConfig;
use gw_daemon::histogram::Histogram;
use gw_gateway_client::{ClientId, GatewayClient, GatewayLink, LinkEvent, Session};
use gw_proto::{ClientInfo, Command, Event, EventKind};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::events::{Context, Events, HandlerResult, ServerData, WebSocketRequest, WorkerContext};
use crate::session_writes::PendingWrites;

/// Counters of a running worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub events: AtomicU64,
    pub handler_errors: AtomicU64,
    pub handler_panics: AtomicU64,
    /// Events received again after another worker died before acknowledging them.
    pub redelivered: AtomicU64,
    /// Gateways linked now.
    pub gateway_links: AtomicU64,
    /// Set once the worker started draining for a stop or reload.
    pub draining: AtomicBool,
    /// Time spent in handlers.
    pub latency: Histogram,
}

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {}

type ClientQueue = mpsc::Sender<(Arc<GatewayLink>, Event)>;

/// Runs the worker until `shutdown`, then stops gracefully: asks every gateway to route no new
/// events here, finishes the events already received (within the grace period), runs
/// `on_worker_stop`, and closes its links.
pub async fn run<E: Events>(config: WorkerConfig, events: E, shutdown: CancellationToken) -> Result<(), WorkerError> {
    run_with_stats(config, events, shutdown, Arc::new(WorkerStats::default())).await
}

/// [`run`] with counters owned by the caller.
pub async fn run_with_stats<E: Events>(
    config: WorkerConfig,
    events: E,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) -> Result<(), WorkerError> {
    run_with(config, events, shutdown, stats, |_| {}).await
}

/// [`run_with_stats`], calling `on_ready` once a register has answered and every gateway it lists
/// is linked (or after 10 s), with the worker's Gateway API handle.
pub async fn run_with<E: Events>(
    config: WorkerConfig,
    events: E,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
    on_ready: impl FnOnce(&GatewayClient) + Send + 'static,
) -> Result<(), WorkerError> {
    let events = Arc::new(events);
    let (tx, mut rx) = mpsc::channel(config.link.queue);
    let gateway = GatewayClient::start_worker(&config, tx);
    let worker_ctx = WorkerContext { name: config.name.clone(), gateway: gateway.clone() };
    tracing::info!(name = %config.name, registers = ?config.registers, "business worker starting");
    events.on_worker_start(&worker_ctx).await;
    // Handle nothing until linked to every gateway the registers list: a handler's send to a
    // group or uid goes to every gateway, and one still connecting would miss it. Events wait
    // meanwhile (gateways keep them until acknowledged), so nothing is lost by waiting.
    tokio::select! {
        ready = gateway.wait_ready(Duration::from_secs(10)) => {
            if !ready {
                tracing::warn!("not every listed gateway is linked after 10 s; starting anyway");
            }
        }
        _ = shutdown.cancelled() => {}
    }
    on_ready(&gateway);

    let tracker = TaskTracker::new();
    let mut router = Router {
        clients: HashMap::new(),
        events: events.clone(),
        gateway: gateway.clone(),
        tracker: tracker.clone(),
        queue: config.client_queue,
        stats: stats.clone(),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => router.route(ev).await,
                None => break,
            },
        }
    }

    tracing::info!("business worker stopping: draining");
    stats.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + config.grace_period;
    gateway.drain().await;
    // Events the gateways sent before they saw the drain are still arriving: take them until the
    // links are quiet.
    loop {
        let quiet = tokio::time::sleep(Duration::from_millis(300));
        tokio::select! {
            _ = quiet => break,
            _ = tokio::time::sleep_until(deadline) => break,
            ev = rx.recv() => match ev {
                Some(ev) => router.route(ev).await,
                None => break,
            },
        }
    }
    router.clients.clear();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over with handlers still running");
    }
    events.on_worker_stop(&worker_ctx).await;
    gateway.shutdown().await;
    tracing::info!("business worker stopped");
    Ok(())
}

struct Router<E> {
    clients: HashMap<(u64, u64), ClientQueue>,
    events: Arc<E>,
    gateway: GatewayClient,
    tracker: TaskTracker,
    queue: usize,
    stats: Arc<WorkerStats>,
}

impl<E: Events> Router<E> {
    async fn route(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up(link) => {
                self.stats.gateway_links.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(gateway = %link.address, "gateway link up")
            }
            LinkEvent::Down(link) => {
                self.stats.gateway_links.fetch_sub(1, Ordering::Relaxed);
                // The gateway re-routes these clients; their tasks finish what they hold.
                let id = link.link_id();
                self.clients.retain(|(l, _), _| *l != id);
            }
            LinkEvent::Event(link, event) => {
                let key = (link.link_id(), event.client);
                let closing = matches!(event.kind, EventKind::Close);
                let queue = self.clients.entry(key).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(self.queue);
                    let client_id = ClientId::new(link.address.clone(), link.instance, event.client).to_string();
                    let span = tracing::info_span!("client", client_id = %client_id);
                    self.tracker.spawn(
                        client_task(self.events.clone(), self.gateway.clone(), client_id, rx, self.stats.clone())
                            .instrument(span),
                    );
                    tx
                });
                // Waits if this client's queue is full: backpressure onto the gateway link.
                let _ = queue.send((link, event)).await;
                if closing {
                    self.clients.remove(&key);
                }
            }
        }
    }
}

async fn client_task<E: Events>(
    events: Arc<E>,
    gateway: GatewayClient,
    client_id: String,
    mut rx: mpsc::Receiver<(Arc<GatewayLink>, Event)>,
    stats: Arc<WorkerStats>,
) {
    // The client's addresses, parsed once (they come with the first event on each link).
    let mut server = server_data(None);
    // Set when on_websocket_connect closed the client: later messages are not handled.
    let mut rejected = false;
    let mut writes = PendingWrites::default();
    while let Some((link, event)) = rx.recv().await {
        if let Some(info) = &event.info {
            server = server_data(Some(info));
        }
        stats.events.fetch_add(1, Ordering::Relaxed);
        if event.redelivered {
            stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let original = writes.catch_up(event.session_writes, parse_session(event.session.as_ref()));
        let mut ctx = Context {
            client_id: client_id.clone(),
            session: original.clone(),
            server: server.clone(),
            redelivered: event.redelivered,
            gateway: gateway.clone(),
            link: link.clone(),
            local: event.client,
            closed: rejected,
        };
        let closing = matches!(event.kind, EventKind::Close);
        match event.kind {
            EventKind::Connect => guarded("on_connect", &stats, events.on_connect(&mut ctx)).await,
            EventKind::WebSocketConnect { path, query, headers } => {
                let request = WebSocketRequest { path, query, headers };
                guarded("on_websocket_connect", &stats, events.on_websocket_connect(&mut ctx, &request)).await;
            }
            EventKind::Message(msg) if !ctx.closed => {
                guarded("on_message", &stats, events.on_message(&mut ctx, msg)).await
            }
            EventKind::Message(_) => tracing::debug!("message after the client was closed by a handler; skipped"),
            EventKind::Close => guarded("on_close", &stats, events.on_close(&mut ctx)).await,
        }
        rejected = ctx.closed;
        if !closing && ctx.session != original {
            let (changed, removed) = session_diff(&original, &ctx.session);
            let seq = writes.record(event.session_writes, changed.clone(), removed.clone());
            write_back(&gateway, &link, event.client, seq, &changed, removed).await;
        }
        link.handled(event.seq);
    }
}

async fn guarded(what: &str, stats: &WorkerStats, handler: impl std::future::Future<Output = HandlerResult>) {
    let started = std::time::Instant::now();
    let outcome = AssertUnwindSafe(handler).catch_unwind().await;
    stats.latency.observe(started.elapsed());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "{what} handler failed");
        }
        Err(panic) => {
            stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            tracing::error!(panic = %msg, "{what} handler panicked; the worker goes on");
        }
    }
}

/// The top-level keys a handler changed (with their new values) or removed.
fn session_diff(before: &Session, after: &Session) -> (Session, Vec<String>) {
    let changed =
        after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    (changed, removed)
}

/// Sends only the top-level keys the handler changed or removed.
async fn write_back(
    gateway: &GatewayClient,
    link: &GatewayLink,
    client: u64,
    seq: u64,
    changed: &Session,
    removed: Vec<String>,
) {
    let changed = Bytes::from(serde_json::to_vec(changed).expect("a JSON map serializes"));
    if let Err(e) = gateway.command_on(link, Command::WriteBackSession { client, seq, changed, removed }).await {
        tracing::warn!(error = %e, "session write-back failed");
    }
}

fn parse_session(bytes: Option<&Bytes>) -> Session {
    match bytes.map(|b| serde_json::from_slice::<Value>(b)) {
        Some(Ok(Value::Object(m))) => m,
        _ => Session::new(),
    }
}

fn server_data(info: Option<&ClientInfo>) -> ServerData {
    ServerData {
        client_addr: info.and_then(|i| i.client_addr.parse().ok()),
        gateway_addr: info.and_then(|i| i.gateway_addr.parse().ok()),
        listener: info.map(|i| i.listener.clone()).unwrap_or_default(),
        protocol: info.map(|i| i.protocol),
    }
}
