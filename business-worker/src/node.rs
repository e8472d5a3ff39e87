//! What a worker process shows to `status`, `/health` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_daemon::report::own_rss;
use gw_daemon::supervisor::NOT_LINKED;
use gw_daemon::{BoxFuture, MetricFamily, Node, ProcessStatus};
use gw_gateway_links::Refusal;

use crate::WorkerStats;

/// The application's own metric families ([`Events::metrics`](crate::Events::metrics)).
pub(crate) type AppMetrics = Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// One worker process as a [`Node`].
pub(crate) struct WorkerNode {
    /// The worker process's name (`<name>-<index>` under a master).
    name: String,
    stats: Arc<WorkerStats>,
    app_metrics: AppMetrics,
}

/// The state a worker that a peer refuses is in, for `status`, `/health` and its log.
pub(crate) fn not_linked(refusal: &Refusal) -> String {
    if refusal.is_authentication() {
        format!("{NOT_LINKED}: authentication failed (check secret)")
    } else {
        format!("{NOT_LINKED}: {} refused this worker: {}", refusal.peer, refusal.reason)
    }
}

impl WorkerNode {
    pub(crate) fn new(name: String, stats: Arc<WorkerStats>, app_metrics: AppMetrics) -> Self {
        Self { name, stats, app_metrics }
    }

    /// Why the worker cannot serve: linked to no gateway because a register or gateway refuses it.
    fn problem(&self) -> Option<String> {
        self.stats.links()?.refusal().map(|r| not_linked(&r))
    }

    pub(crate) fn families(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let routing = s.links().map(|l| l.routing_stats()).unwrap_or_default();
        let mut families = vec![
            MetricFamily::counter(
                "gw_link_unframeable_dropped_total",
                "Internal messages this process's link writers dropped as too large for a frame (stays 0: every path checks first).",
                gw_link::unframeable_dropped(),
            ),
            MetricFamily::counter(
                "gw_worker_routed_calls_total",
                "Uid and group calls routed by the routing index.",
                routing.routed,
            ),
            MetricFamily::counter(
                "gw_worker_routing_skipped_total",
                "Gateway messages the routing index saved (gateways a routed call skipped).",
                routing.skipped,
            ),
            MetricFamily::counter(
                "gw_worker_routing_misses_total",
                "Routed calls that went to no gateway: no gateway holds their uids or groups.",
                routing.misses,
            ),
            MetricFamily::counter("gw_worker_events_total", "Client events handled.", g(&s.events)),
            MetricFamily::counter(
                "gw_worker_redelivered_total",
                "Events received again after a worker died.",
                g(&s.redelivered),
            ),
            MetricFamily::counter(
                "gw_worker_handler_errors_total",
                "Handlers that returned an error.",
                g(&s.handler_errors),
            ),
            MetricFamily::counter("gw_worker_handler_panics_total", "Handlers that panicked.", g(&s.handler_panics)),
            MetricFamily::gauge("gw_worker_gateway_links", "Gateways linked.", g(&s.gateway_links) as f64),
            MetricFamily::gauge("gw_worker_clients", "Clients whose events come to this worker.", g(&s.clients) as f64),
            MetricFamily::gauge(
                "gw_worker_client_tasks",
                "Clients whose events are being handled (a task each; a quiet client has none).",
                g(&s.client_tasks) as f64,
            ),
            s.latency.family("gw_worker_handler_seconds", "Time spent in event handlers."),
        ];
        families.extend((self.app_metrics)());
        families
    }
}

impl Node for WorkerNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        let s = &self.stats;
        let state = match self.problem() {
            Some(problem) => problem,
            None if s.draining.load(Ordering::Relaxed) => "draining".into(),
            None => "running".into(),
        };
        let row = ProcessStatus {
            pid: std::process::id(),
            role: "worker".into(),
            name: self.name.clone(),
            memory: own_rss(),
            listen: vec![],
            connections: s.gateway_links.load(Ordering::Relaxed),
            messages_in: s.events.load(Ordering::Relaxed),
            messages_out: 0,
            dropped: 0,
            requests_per_sec: 0.0,
            admin: None,
            state,
        };
        Box::pin(async move { vec![row] })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let families = self.families();
        Box::pin(async move { families })
    }

    fn requests_total(&self) -> u64 {
        self.stats.events.load(Ordering::Relaxed)
    }

    fn healthy(&self) -> bool {
        self.problem().is_none()
    }

    fn health(&self) -> Result<(), String> {
        self.problem().map_or(Ok(()), Err)
    }
}
