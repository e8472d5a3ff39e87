//! What a running HTTP API shows to `status`, `/metrics` and `/health`.

use std::sync::Arc;

use gw_daemon::report::own_rss;
use gw_daemon::{BoxFuture, MetricFamily, Node, ProcessStatus};

use crate::Api;

/// The HTTP API as a [`Node`].
pub struct HttpApiNode {
    /// The running API.
    pub api: Arc<Api>,
    /// Node name.
    pub name: String,
    /// The address it serves on.
    pub listen: String,
}

impl Node for HttpApiNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        let gateways = self.api.gateway.gateway_count();
        let row = ProcessStatus {
            pid: std::process::id(),
            role: "http-api".into(),
            name: self.name.clone(),
            memory: own_rss(),
            listen: vec![self.listen.clone()],
            connections: gateways as u64,
            messages_in: self.api.stats.total(),
            messages_out: 0,
            dropped: 0,
            requests_per_sec: 0.0,
            admin: None,
            state: format!("running, {gateways} gateway(s)"),
        };
        Box::pin(async move { vec![row] })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let mut families = self.api.stats.families();
        families.push(MetricFamily::gauge(
            "gw_http_gateways",
            "Gateways linked now.",
            self.api.gateway.gateway_count() as f64,
        ));
        let routing = self.api.gateway.routing_stats();
        families.push(MetricFamily::counter(
            "gw_http_routed_calls_total",
            "Uid and group calls routed by the routing index.",
            routing.routed,
        ));
        families.push(MetricFamily::counter(
            "gw_http_routing_skipped_total",
            "Gateway messages the routing index saved (gateways a routed call skipped).",
            routing.skipped,
        ));
        families.push(MetricFamily::counter(
            "gw_http_routing_misses_total",
            "Routed calls that went to no gateway: no gateway holds their uids or groups.",
            routing.misses,
        ));
        Box::pin(async move { families })
    }

    fn requests_total(&self) -> u64 {
        self.api.stats.total()
    }

    /// Unhealthy while no gateway is linked: a load balancer sends requests elsewhere.
    fn healthy(&self) -> bool {
        self.api.gateway.gateway_count() > 0
    }
}
