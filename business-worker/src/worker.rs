//! Running a worker inside a process of your own (tests, a one-process launcher): [`Worker`].
//! It links to every gateway the registers list (their events go straight to per-client tasks,
//! see `dispatch`), runs `on_worker_start`, serves until shutdown, then drains and runs
//! `on_worker_stop`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use gw_config::WorkerConfig;
use gw_daemon::histogram::Histogram;
use gw_gateway_client::GatewayClient;
use gw_gateway_links::{GatewayLinks, LinksOptions};
use gw_proto::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::Dispatch;
use crate::events::{Events, WorkerContext};
use crate::node::WorkerNode;

/// How often a worker that a peer refused says so again in its log.
const REFUSAL_REMINDER: Duration = Duration::from_secs(30);

/// A business worker to run in this process: the entry point of tests and of launchers that
/// run several parts of the system in one process. An application binary uses [`App`](crate::App)
/// instead, which runs workers as processes under a master.
///
/// ```no_run
/// # async fn f(config: gw_business_worker::WorkerConfig) {
/// use gw_business_worker::{Context, Events, HandlerResult, Message, Worker};
///
/// struct Echo;
///
/// impl Events for Echo {
///     async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
///         ctx.send(msg).await?;
///         Ok(())
///     }
/// }
///
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let worker = Worker::new(config, Echo);
/// let stats = worker.stats();
/// tokio::spawn(worker.run(shutdown.clone()));
/// // ... later
/// println!("{} events handled", stats.events());
/// shutdown.cancel();
/// # }
/// ```
pub struct Worker<E> {
    config: WorkerConfig,
    events: Arc<E>,
    stats: Arc<WorkerStats>,
    on_ready: Option<Box<dyn FnOnce() + Send>>,
}

impl<E> std::fmt::Debug for Worker<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.config.name).finish_non_exhaustive()
    }
}

impl<E: Events> Worker<E> {
    /// A worker serving `events` with `config` (its registers, secret, name, ...).
    pub fn new(config: WorkerConfig, events: E) -> Self {
        Self { config, events: Arc::new(events), stats: Arc::default(), on_ready: None }
    }

    /// The worker's counters, readable while it runs.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Calls `f` once the worker is ready: a register has answered and every gateway it lists is
    /// linked (or 10 s passed).
    pub(crate) fn on_ready(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_ready = Some(Box::new(f));
        self
    }

    /// What this worker shows to `status` and `/metrics` when it is a process of its own.
    pub(crate) fn node(&self) -> WorkerNode {
        let events = self.events.clone();
        WorkerNode::new(self.config.name.clone(), self.stats.clone(), Box::new(move || events.metrics()))
    }

    /// Runs the worker until `shutdown`, then stops gracefully: asks every gateway to route no
    /// new events here and waits for each one's answer, finishes the events already received
    /// (within the grace period), runs `on_worker_stop`, and closes its links.
    ///
    /// There is no error to stop with: links are retried, handler failures contained.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { config, events, stats, on_ready } = self;
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
        // Ends with the shutdown, or with this future if it is dropped.
        let reminder = shutdown.child_token();
        let _stop_reminder = reminder.clone().drop_guard();
        tokio::spawn(remind_of_refusals(links.clone(), reminder));
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
        if let Some(f) = on_ready {
            f();
        }
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
}

/// While a register or gateway refuses this worker's handshake (a wrong secret, almost always)
/// and nothing is linked, says so every [`REFUSAL_REMINDER`]: the refusal itself is logged once,
/// and clients get no answer meanwhile.
async fn remind_of_refusals(links: Arc<GatewayLinks>, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + REFUSAL_REMINDER, REFUSAL_REMINDER);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Some(refusal) = links.refusal() {
            tracing::warn!(peer = %refusal.peer, reason = %refusal.reason, "{}", crate::node::not_linked(&refusal));
        }
    }
}

/// Counters of a running worker (see [`Worker::stats`]).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(crate) events: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) gateway_links: AtomicU64,
    pub(crate) clients: AtomicU64,
    pub(crate) client_tasks: AtomicU64,
    pub(crate) draining: AtomicBool,
    /// Time spent in handlers.
    pub(crate) latency: Histogram,
    /// The worker's gateway links, for their routing index counters and refusals (weak: the
    /// links own what owns these stats).
    pub(crate) links: OnceLock<Weak<GatewayLinks>>,
}

impl WorkerStats {
    /// Client events handled.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Handlers that returned an error.
    pub fn handler_errors(&self) -> u64 {
        self.handler_errors.load(Ordering::Relaxed)
    }

    /// Handlers that panicked.
    pub fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Ordering::Relaxed)
    }

    /// Events received again after another worker died before acknowledging them.
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }

    /// Gateways linked now.
    pub fn gateway_links(&self) -> u64 {
        self.gateway_links.load(Ordering::Relaxed)
    }

    /// Clients whose events come here now, over all links (a slot each: their waiting events
    /// and their handlers' state).
    pub fn clients(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Clients whose events are being handled now (a task each); a quiet client has none.
    pub fn client_tasks(&self) -> u64 {
        self.client_tasks.load(Ordering::Relaxed)
    }

    /// True once the worker started draining for a stop or reload.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn links(&self) -> Option<Arc<GatewayLinks>> {
        self.links.get().and_then(Weak::upgrade)
    }
}
