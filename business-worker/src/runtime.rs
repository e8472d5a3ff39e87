//! Runs an [`Events`] implementation: links to every gateway the registers list (their events go
//! straight to per-client tasks, see `dispatch`), `on_worker_start`, then serving until shutdown,
//! then the drain and `on_worker_stop`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gw_config::WorkerConfig;
use gw_daemon::histogram::Histogram;
use gw_gateway_client::{GatewayClient, GatewayLinks, LinksOptions};
use gw_proto::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::Dispatch;
use crate::events::{Events, WorkerContext};

/// Counters of a running worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Client events handled.
    pub events: AtomicU64,
    /// Handlers that returned an error.
    pub handler_errors: AtomicU64,
    /// Handlers that panicked.
    pub handler_panics: AtomicU64,
    /// Events received again after another worker died before acknowledging them.
    pub redelivered: AtomicU64,
    /// Gateways linked now.
    pub gateway_links: AtomicU64,
    /// Clients whose events come here now, over all links (a slot each: their waiting events
    /// and their handlers' state).
    pub clients: AtomicU64,
    /// Clients whose events are being handled now (a task each); a quiet client has none.
    pub client_tasks: AtomicU64,
    /// Set once the worker started draining for a stop or reload.
    pub draining: AtomicBool,
    /// Time spent in handlers.
    pub latency: Histogram,
    /// The worker's gateway links, for their routing index counters (weak: the links own what
    /// owns these stats).
    pub links: std::sync::OnceLock<std::sync::Weak<GatewayLinks>>,
}

/// Runs the worker until `shutdown`, then stops gracefully: asks every gateway to route no new
/// events here and waits for each one's answer, finishes the events already received (within
/// the grace period), runs `on_worker_stop`, and closes its links.
///
/// There is no error to stop with: links are retried, handler failures contained.
pub async fn run<E: Events>(config: WorkerConfig, events: E, shutdown: CancellationToken) {
    run_with_stats(config, events, shutdown, Arc::new(WorkerStats::default())).await;
}

/// [`run`] with counters owned by the caller.
pub async fn run_with_stats<E: Events>(
    config: WorkerConfig,
    events: E,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) {
    run_with(config, events, shutdown, stats, |_| {}).await;
}

/// [`run_with_stats`], calling `on_ready` once a register has answered and every gateway it lists
/// is linked (or after 10 s), with the worker's Gateway API handle.
pub async fn run_with<E: Events>(
    config: WorkerConfig,
    events: E,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
    on_ready: impl FnOnce(&GatewayClient) + Send + 'static,
) {
    let events = Arc::new(events);
    let tracker = TaskTracker::new();
    let dispatch = Dispatch::new(events.clone(), tracker.clone(), config.client_queue, stats.clone());
    let options = LinksOptions {
        registers: config.registers.clone(),
        secret: config.secret.clone(),
        name: config.name.clone(),
        role: Role::Worker,
        link: config.link.clone(),
    };
    let links = GatewayLinks::start(options, dispatch.clone());
    let _ = stats.links.set(Arc::downgrade(&links));
    // Dropping this future (an aborted task) must not leave the links running.
    let _stop_links = links.stop_on_drop();
    let gateway = GatewayClient::over(links.clone(), config.query_timeout);
    let worker_ctx = WorkerContext { name: config.name.clone(), gateway: gateway.clone() };
    tracing::info!(name = %config.name, registers = ?config.registers, "business worker starting");
    events.on_worker_start(&worker_ctx).await;
    // Handle nothing until linked to every gateway the registers list: a handler's send to a
    // group or uid goes to every gateway, and one still connecting would miss it. Events wait
    // meanwhile (gateways keep them until acknowledged), so nothing is lost by waiting.
    tokio::select! {
        ready = links.wait_ready(Duration::from_secs(10)) => {
            if !ready {
                tracing::warn!("not every listed gateway is linked after 10 s; starting anyway");
            }
        }
        _ = shutdown.cancelled() => {}
    }
    on_ready(&gateway);
    dispatch.open(gateway);
    shutdown.cancelled().await;

    tracing::info!("business worker stopping: draining");
    stats.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + config.grace_period;
    dispatch.drain(&links, deadline).await;
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over with handlers still running");
    }
    events.on_worker_stop(&worker_ctx).await;
    links.close().await;
    dispatch.close();
    tracing::info!("business worker stopped");
}
