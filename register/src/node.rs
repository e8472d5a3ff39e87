//! What a running register shows to `status` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_daemon::report::own_rss;
use gw_daemon::{BoxFuture, MetricFamily, Node, ProcessStatus};

use crate::Registry;

/// The register as a [`Node`].
#[derive(Debug)]
pub struct RegisterNode {
    /// The gateway list.
    pub registry: Arc<Registry>,
    /// Node name.
    pub name: String,
    /// The address it listens on.
    pub listen: String,
}

impl Node for RegisterNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        let s = &self.registry.stats;
        let row = ProcessStatus {
            pid: std::process::id(),
            role: "register".into(),
            name: self.name.clone(),
            memory: own_rss(),
            listen: vec![self.listen.clone()],
            connections: s.gateways.load(Ordering::Relaxed) + s.subscribers.load(Ordering::Relaxed),
            messages_in: s.messages.load(Ordering::Relaxed),
            messages_out: 0,
            dropped: 0,
            requests_per_sec: 0.0,
            admin: None,
            state: format!("running, {} gateway(s)", s.gateways.load(Ordering::Relaxed)),
        };
        Box::pin(async move { vec![row] })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let s = &self.registry.stats;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let families = vec![
            MetricFamily::gauge("gw_register_gateways", "Gateways currently announced.", g(&s.gateways) as f64),
            MetricFamily::gauge(
                "gw_register_subscribers",
                "Workers and clients subscribed to the list.",
                g(&s.subscribers) as f64,
            ),
            MetricFamily::counter("gw_register_messages_total", "Messages received from peers.", g(&s.messages)),
            MetricFamily::counter(
                "gw_handshake_failures_total",
                "Peers refused during the handshake.",
                g(&s.handshake_failures),
            ),
            MetricFamily::counter(
                "gw_handshakes_rate_limited_total",
                "Failed handshakes from an address over its failed-handshake budget (served with a short deadline, not logged one by one).",
                g(&s.rate_limited),
            ),
            MetricFamily::counter("gw_link_errors_total", "Links dropped for protocol errors.", g(&s.protocol_errors)),
        ];
        Box::pin(async move { families })
    }

    fn requests_total(&self) -> u64 {
        self.registry.stats.messages.load(Ordering::Relaxed)
    }
}
