//! What a running register shows to `status` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use gw_daemon::report::own_rss;
use gw_daemon::{BoxFuture, MetricFamily, Node, ProcessStatus};

use crate::{Listeners, Registries};

/// The register as a [`Node`].
#[derive(Debug)]
pub struct RegisterNode {
    /// The gateway lists (ours and the GatewayWorker-protocol one).
    pub registries: Registries,
    /// Node name.
    pub name: String,
    /// The addresses it listens on.
    pub listen: Vec<String>,
}

impl RegisterNode {
    /// The node of a register configured by `config`, serving `listeners` with `registries`.
    pub fn new(config: &gw_config::RegisterConfig, listeners: &Listeners, registries: Registries) -> Self {
        Self { registries, name: config.name.clone(), listen: listeners.addresses() }
    }

    /// A counter summed over both listeners.
    fn sum(&self, counter: impl Fn(&crate::RegistryStats) -> &AtomicU64) -> u64 {
        let g = |s| counter(s).load(Ordering::Relaxed);
        g(&self.registries.native.stats) + g(&self.registries.gatewayworker.stats)
    }
}

impl Node for RegisterNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        let s = &self.registries.native.stats;
        let row = ProcessStatus {
            pid: std::process::id(),
            role: "register".into(),
            name: self.name.clone(),
            memory: own_rss(),
            listen: self.listen.clone(),
            connections: s.gateways.load(Ordering::Relaxed) + s.subscribers.load(Ordering::Relaxed),
            messages_in: self.sum(|s| &s.messages),
            messages_out: 0,
            dropped: 0,
            requests_per_sec: 0.0,
            admin: None,
            state: format!("running, {} gateway(s)", s.gateways.load(Ordering::Relaxed)),
        };
        Box::pin(async move { vec![row] })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let s = &self.registries.native.stats;
        let php = &self.registries.gatewayworker.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let families = vec![
            MetricFamily::gauge("gw_register_gateways", "Gateways currently announced.", g(&s.gateways) as f64),
            MetricFamily::gauge(
                "gw_register_subscribers",
                "Workers and clients subscribed to the list.",
                g(&s.subscribers) as f64,
            ),
            MetricFamily::gauge(
                "gw_register_gatewayworker_gateways",
                "Gateways announced on the [gatewayworker] listener (GatewayWorker-protocol addresses).",
                g(&php.gateways) as f64,
            ),
            MetricFamily::counter(
                "gw_register_messages_total",
                "Messages received from peers (both listeners).",
                self.sum(|s| &s.messages),
            ),
            MetricFamily::counter(
                "gw_handshake_failures_total",
                "Peers refused during the handshake (both listeners).",
                self.sum(|s| &s.handshake_failures),
            ),
            MetricFamily::counter(
                "gw_handshakes_rate_limited_total",
                "Failed handshakes from an address over its failed-handshake budget (served with a short deadline, not logged one by one).",
                self.sum(|s| &s.rate_limited),
            ),
            MetricFamily::counter(
                "gw_links_rejected_busy_total",
                "Connections closed at accept because too many handshakes were pending.",
                self.sum(|s| &s.rejected_busy),
            ),
            MetricFamily::counter(
                "gw_link_errors_total",
                "Links dropped for protocol errors (both listeners).",
                self.sum(|s| &s.protocol_errors),
            ),
        ];
        Box::pin(async move { families })
    }

    fn requests_total(&self) -> u64 {
        self.sum(|s| &s.messages)
    }
}
