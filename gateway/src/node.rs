//! What a running gateway shows to `status`, `connections` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_daemon::report::own_rss;
use gw_daemon::{BoxFuture, ConnectionRow, MetricFamily, Node, ProcessStatus};
use gw_proto::{Query, Reply};

use crate::Gateway;

/// The gateway as a [`Node`].
#[derive(Debug)]
pub struct GatewayNode {
    /// The gateway reported on.
    pub gateway: Arc<Gateway>,
    /// Every listener address (public, internal, `[gatewayworker]`), as `status` shows them.
    pub listen: Vec<String>,
}

impl GatewayNode {
    /// The node of a running gateway, listing every address it listens on
    /// ([`Gateway::listen_addresses`]).
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let listen = gateway.listen_addresses();
        Self { gateway, listen }
    }
}

/// Descriptors open now; -1 where the platform does not tell.
fn open_files() -> f64 {
    gw_link::fds::open_descriptors().map_or(-1.0, |n| n as f64)
}

impl Node for GatewayNode {
    fn status(&self) -> BoxFuture<'_, Vec<ProcessStatus>> {
        let m = &self.gateway.state.metrics;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let row = ProcessStatus {
            pid: std::process::id(),
            role: "gateway".into(),
            name: self.gateway.config.name.clone(),
            memory: own_rss(),
            listen: self.listen.clone(),
            connections: g(&m.connections),
            messages_in: g(&m.messages_in),
            messages_out: g(&m.messages_out),
            dropped: m.dropped_total(),
            requests_per_sec: 0.0,
            admin: None,
            state: format!("running, {} worker(s)", self.gateway.worker_count()),
        };
        Box::pin(async move { vec![row] })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        let m = &self.gateway.state.metrics;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut families = vec![
            MetricFamily::gauge("gw_connections", "Client connections open now.", g(&m.connections) as f64),
            MetricFamily::counter("gw_connections_total", "Client connections accepted.", g(&m.connections_total)),
            MetricFamily::new("gw_messages_in_total", "counter", "Messages received from clients, by frame type.")
                .sample("kind=\"text\"", g(&m.messages_in_text) as f64)
                .sample("kind=\"binary\"", g(&m.messages_in_binary) as f64),
            MetricFamily::counter(
                "gw_messages_out_total",
                "Messages flushed to client sockets (with gw_dropped_total, every message sent to a client).",
                g(&m.messages_out),
            ),
            MetricFamily::counter("gw_events_sent_total", "Client events sent to business workers.", g(&m.events_sent)),
            MetricFamily::counter(
                "gw_commands_total",
                "Commands executed for workers and gateway clients.",
                g(&m.commands),
            ),
            MetricFamily::counter(
                "gw_queries_total",
                "Queries answered for workers and gateway clients.",
                g(&m.queries),
            ),
            MetricFamily::new("gw_dropped_total", "counter", "Messages dropped, by reason.")
                .sample("reason=\"slow_consumer\"", g(&m.dropped_slow_consumer) as f64)
                .sample("reason=\"client_gone\"", g(&m.dropped_client_gone) as f64)
                .sample("reason=\"no_worker\"", g(&m.dropped_no_worker) as f64)
                .sample("reason=\"event_too_large\"", g(&m.dropped_event_too_large) as f64),
            MetricFamily::counter(
                "gw_link_unframeable_dropped_total",
                "Internal messages this process's link writers dropped as too large for a frame (stays 0: every path checks first).",
                gw_link::unframeable_dropped(),
            ),
            MetricFamily::counter(
                "gw_rejected_commands_total",
                "Commands refused (unknown client, bad session JSON, a limit, …).",
                g(&m.rejected_commands),
            ),
            MetricFamily::new(
                "gw_writes_refused_total",
                "counter",
                "Writes refused for a limit on a client's state, by limit.",
            )
            .sample("reason=\"session_too_large\"", g(&m.refused_session_too_large) as f64)
            .sample("reason=\"bad_name\"", g(&m.refused_bad_name) as f64)
            .sample("reason=\"too_many_groups\"", g(&m.refused_too_many_groups) as f64),
            MetricFamily::counter(
                "gw_replies_too_large_total",
                "Query answers too large for one internal frame (link.max_frame), answered with an error instead.",
                g(&m.replies_too_large),
            ),
            MetricFamily::gauge(
                "gw_worker_links",
                "Business workers accepting events.",
                self.gateway.worker_count() as f64,
            ),
            MetricFamily::gauge(
                "gw_events_unacknowledged",
                "Client events sent to workers and kept until they acknowledge them.",
                self.gateway.unacknowledged() as f64,
            ),
            MetricFamily::counter(
                "gw_events_redelivered_total",
                "Events re-sent because their worker died first.",
                g(&m.redelivered),
            ),
            MetricFamily::gauge(
                "gw_send_queue_messages",
                "Messages queued toward clients, all clients together.",
                self.gateway.state.queued_total() as f64,
            ),
            MetricFamily::counter(
                "gw_handshake_failures_total",
                "WebSocket and internal handshakes that failed.",
                g(&m.handshake_failures),
            ),
            MetricFamily::counter("gw_link_errors_total", "Internal links dropped for errors.", g(&m.link_errors)),
            MetricFamily::counter(
                "gw_handshakes_rate_limited_total",
                "Failed internal handshakes from an address over its failed-handshake budget (served with a short deadline, not logged one by one).",
                g(&m.handshakes_rate_limited),
            ),
            MetricFamily::new(
                "gw_connections_rejected_total",
                "counter",
                "Client sockets refused at accept, by reason.",
            )
            .sample("reason=\"capacity\"", g(&m.rejected_total_limit) as f64)
            .sample("reason=\"per_ip\"", g(&m.rejected_ip_limit) as f64)
            .sample("reason=\"fd_exhausted\"", g(&m.rejected_fd_exhausted) as f64),
            MetricFamily::gauge(
                "gw_client_capacity",
                "Client sockets the gateway takes: max_connections, or less when the open-files limit minus fd_reserve allows less.",
                self.gateway.fd_budget().client_capacity as f64,
            ),
            MetricFamily::gauge("gw_open_files", "File descriptors the gateway process has open.", open_files()),
            MetricFamily::counter(
                "gw_protocol_violations_total",
                "Clients closed for breaking their protocol.",
                g(&m.protocol_violations),
            ),
            MetricFamily::new("gw_disconnects_total", "counter", "Client disconnects, by who ended them and how.")
                .sample("reason=\"client_closed\"", g(&m.disconnects_closed) as f64)
                .sample("reason=\"client_vanished\"", g(&m.disconnects_vanished) as f64)
                .sample("reason=\"server\"", g(&m.disconnects_server) as f64),
            MetricFamily::counter(
                "gw_links_rejected_busy_total",
                "Internal connections closed because too many handshakes were pending.",
                g(&m.rejected_links_busy),
            ),
            MetricFamily::counter(
                "gw_index_updates_total",
                "Routing index updates (snapshots and batches of uid/group changes) sent to watching workers and gateway clients.",
                g(&m.index_updates),
            ),
            MetricFamily::counter(
                "gw_deflate_connections_total",
                "WebSocket clients that negotiated permessage-deflate.",
                g(&m.deflate_connections),
            ),
            MetricFamily::new(
                "gw_deflate_messages_total",
                "counter",
                "Messages that crossed a WebSocket compressed, by direction.",
            )
            .sample("direction=\"in\"", g(&m.deflate_messages_in) as f64)
            .sample("direction=\"out\"", g(&m.deflate_messages_out) as f64),
            MetricFamily::counter(
                "gw_deflate_compressions_total",
                "Messages deflated: once per message and window size, however many clients it goes to.",
                g(&m.deflate_compressions),
            ),
            MetricFamily::gauge(
                "gw_recovery_held_clients",
                "Clients gone without closing and held for recovery, within their window.",
                g(&m.recovery_held_clients) as f64,
            ),
            MetricFamily::gauge(
                "gw_recovery_held_bytes",
                "Bytes of messages kept for the held clients.",
                g(&m.recovery_held_bytes) as f64,
            ),
            MetricFamily::counter("gw_recovery_resumed_total", "Clients that resumed.", g(&m.recovery_resumed)),
            MetricFamily::gauge(
                "gw_relay_clients",
                "Sockets relayed now to their clients' home gateways (clients that came back here with another gateway's token).",
                g(&m.relay_clients) as f64,
            ),
            MetricFamily::counter(
                "gw_relay_opened_total",
                "Sockets relayed to a home gateway since start.",
                g(&m.relay_opened_total),
            ),
            MetricFamily::gauge(
                "gw_peer_gateways",
                "Other gateways the registers list now (this gateway's peers).",
                g(&m.peer_gateways) as f64,
            ),
            MetricFamily::counter(
                "gw_mesh_dropped_total",
                "Commands for other gateways (Pusher client events) dropped: a peer's outbox was full or the peer could not be reached.",
                g(&m.mesh_dropped),
            ),
            MetricFamily::counter(
                "gw_handover_shipped_clients_total",
                "Held clients this gateway handed to its successor when it stopped.",
                g(&m.handover_shipped_clients),
            ),
            MetricFamily::counter(
                "gw_handover_adopted_clients_total",
                "Held clients of stopping gateways installed here.",
                g(&m.handover_adopted_clients),
            ),
            MetricFamily::counter(
                "gw_handover_refused_clients_total",
                "Handed-over clients that could not be installed here.",
                g(&m.handover_refused_clients),
            ),
            MetricFamily::counter(
                "gw_handover_unplaced_commands_total",
                "Forwarded commands for a hand-over this gateway does not know (dropped).",
                g(&m.handover_unplaced_commands),
            ),
            MetricFamily::counter(
                "gw_handover_finished_total",
                "Hand-overs received here whose stopping gateway sent their end, answered once all of it was applied.",
                g(&m.handover_finished),
            ),
            MetricFamily::counter(
                "gw_relay_homed_total",
                "Clients of this gateway resumed through another gateway's relay since start.",
                g(&m.relay_homed_total),
            ),
            MetricFamily::counter(
                "gw_recovery_replayed_messages_total",
                "Messages replayed to resuming clients.",
                g(&m.recovery_replayed_messages),
            ),
            crate::recovery::frames::Reason::ALL.iter().zip(&m.recovery_failed).fold(
                MetricFamily::new(
                    "gw_recovery_failed_total",
                    "counter",
                    "Clients that asked to resume and got a new connection instead, by reason.",
                ),
                |f, (r, c)| f.sample(&format!("reason=\"{}\"", r.as_str()), g(c) as f64),
            ),
            MetricFamily::counter(
                "gw_recovery_bad_control_total",
                "Control frames from clients that were not understood, or acknowledged more than was written; ignored.",
                g(&m.recovery_bad_control),
            ),
            MetricFamily::counter(
                "gw_bad_acks_total",
                "Acknowledgements from workers of events never sent to them; logged and ignored.",
                g(&m.bad_acks),
            ),
            MetricFamily::counter(
                "gw_index_resyncs_total",
                "Watching links that fell behind on routing index changes and got a fresh snapshot instead.",
                g(&m.index_resyncs),
            ),
        ];
        families.extend(crate::pusher::metric_families(&self.gateway));
        Box::pin(async move { families })
    }

    fn connections(&self) -> BoxFuture<'_, Option<Vec<ConnectionRow>>> {
        let Reply::Connections(rows) = self.gateway.state.answer(Query::Connections) else {
            return Box::pin(async { Some(Vec::new()) });
        };
        let rows = rows
            .into_iter()
            .map(|r| ConnectionRow {
                client_id: self.gateway.client_id(r.client).to_string(),
                peer: r.client_addr,
                uid: r.uid,
                groups: r.groups,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                queue_len: r.queue_len,
            })
            .collect();
        Box::pin(async move { Some(rows) })
    }

    fn requests_total(&self) -> u64 {
        self.gateway.state.metrics.messages_in.load(Ordering::Relaxed)
    }
}
