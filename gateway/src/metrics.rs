//! Counters of what the gateway did and, above all, what it dropped and why.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter is monotonic except `connections` and the `recovery_held_*` gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Client connections accepted (handshake done and registered).
    pub connections_total: AtomicU64,
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Of `messages_in`, WebSocket text frames and `text` listener lines.
    pub messages_in_text: AtomicU64,
    /// Of `messages_in`, WebSocket binary frames and `frame`/`tcp` listener messages.
    pub messages_in_binary: AtomicU64,
    /// Messages flushed to a client's socket. With the drops below it accounts for every message
    /// a worker or gateway client sent to a client: each ends as exactly one of them.
    pub messages_out: AtomicU64,
    /// Client events queued on worker links (redeliveries included).
    pub events_sent: AtomicU64,
    /// Commands executed for workers and gateway clients.
    pub commands: AtomicU64,
    /// Queries answered for workers and gateway clients.
    pub queries: AtomicU64,
    /// A client's send queue was full: the message was dropped and the client disconnected.
    pub dropped_slow_consumer: AtomicU64,
    /// The target client had already gone (or never existed here), or its connection ended
    /// (closed by either side, reset, failed write) before the message was flushed to it.
    pub dropped_client_gone: AtomicU64,
    /// A client event could not reach any worker within the hold time.
    pub dropped_no_worker: AtomicU64,
    /// A command aimed at a client id of another gateway instance, or malformed, or a write
    /// refused for a limit (each of those also counted by its reason below).
    pub rejected_commands: AtomicU64,
    /// Session writes refused because the session would exceed `max_session_bytes`.
    pub refused_session_too_large: AtomicU64,
    /// Binds and joins refused for a uid or group name that breaks the naming rule.
    pub refused_bad_name: AtomicU64,
    /// Joins refused because the client is in `max_groups_per_client` groups already.
    pub refused_too_many_groups: AtomicU64,
    /// Client events that could not be framed for their worker link (too large): counted and
    /// dropped before they were numbered, so they hold back no acknowledgement. The limits
    /// checked at start make this impossible; a non-zero value is a bug to report.
    pub dropped_event_too_large: AtomicU64,
    /// Answers to queries too large for one internal frame, answered with an error instead.
    pub replies_too_large: AtomicU64,
    /// Events re-sent to another worker because theirs died before acknowledging them.
    pub redelivered: AtomicU64,
    /// Client (TLS, WebSocket) and internal handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Internal links dropped for an error (not a clean disconnect).
    pub link_errors: AtomicU64,
    /// Clients closed for breaking their protocol (bad frames, invalid UTF-8, oversize).
    pub protocol_violations: AtomicU64,
    /// Clients that closed cleanly: a close frame (WebSocket) or end of stream (TCP framings).
    /// Protocol violations end here too, after the gateway's close frame.
    pub disconnects_closed: AtomicU64,
    /// Clients that went away without closing: end of stream without a close frame, reset, or a
    /// failed read or write (a phone that lost signal).
    pub disconnects_vanished: AtomicU64,
    /// Clients the gateway closed (worker command, slow consumer, heartbeat, no worker, shutdown).
    pub disconnects_server: AtomicU64,
    /// Sockets refused at accept because `max_connections` was reached.
    pub rejected_total_limit: AtomicU64,
    /// Sockets refused at accept because `max_connections_per_ip` was reached.
    pub rejected_ip_limit: AtomicU64,
    /// Failed internal handshakes from an address over its failed-handshake budget: served with
    /// a short deadline and not logged one by one (see `gw_link::HandshakeLimiter`).
    pub handshakes_rate_limited: AtomicU64,
    /// Client sockets accepted and closed at once because the process was out of file
    /// descriptors (see `fd_reserve`).
    pub rejected_fd_exhausted: AtomicU64,
    /// Internal connections closed at once because too many handshakes were already pending.
    pub rejected_links_busy: AtomicU64,
    /// Routing index updates (snapshots and batches of changes) sent to watching links.
    pub index_updates: AtomicU64,
    /// A watching link fell so far behind that its backlog of index changes was replaced by a
    /// fresh snapshot.
    pub index_resyncs: AtomicU64,
    /// WebSocket clients that negotiated permessage-deflate.
    pub deflate_connections: AtomicU64,
    /// Compressed messages received (and inflated) from clients.
    pub deflate_messages_in: AtomicU64,
    /// Messages written to clients compressed (the others went uncompressed: below the
    /// threshold, not smaller when deflated, or to clients that do not compress).
    pub deflate_messages_out: AtomicU64,
    /// Messages deflated: once per message and window size, however many clients it goes to.
    pub deflate_compressions: AtomicU64,
    /// Clients held for recovery now (gone without closing, within their window).
    pub recovery_held_clients: AtomicU64,
    /// Bytes of messages kept for the held clients now.
    pub recovery_held_bytes: AtomicU64,
    /// Clients that resumed.
    pub recovery_resumed: AtomicU64,
    /// Messages replayed to resuming clients.
    pub recovery_replayed_messages: AtomicU64,
    /// Clients that asked to resume and were not, by reason (in `recovery::Reason::ALL` order).
    pub recovery_failed: [AtomicU64; 7],
    /// Control frames from clients that the gateway did not understand or whose count was
    /// wrong (an ack above what was written): counted and ignored.
    pub recovery_bad_control: AtomicU64,
    /// Acknowledgements from workers of a sequence number never sent on their link (the
    /// worker's bug): logged, counted and ignored.
    pub bad_acks: AtomicU64,
    /// Sockets this gateway relays now to their clients' home gateways (resumed there).
    pub relay_clients: AtomicU64,
    /// Sockets relayed to a home gateway since start.
    pub relay_opened_total: AtomicU64,
    /// Clients of this gateway resumed through another gateway's relay since start.
    pub relay_homed_total: AtomicU64,
    /// Commands for other gateways (Pusher client events) dropped: a peer's outbox was full or
    /// the peer could not be reached.
    pub mesh_dropped: AtomicU64,
    /// Other gateways the registers list now (this gateway's peers).
    pub peer_gateways: AtomicU64,
    /// Stopping gateways whose held clients this one adopted (issue 25 §5).
    pub handover_adoptions: AtomicU64,
    /// Held clients installed here from stopping gateways.
    pub handover_adopted_clients: AtomicU64,
    /// Handed-over clients that could not be installed here (logged with the reason).
    pub handover_refused_clients: AtomicU64,
    /// Forwarded commands for an adoption this gateway does not know (dropped).
    pub handover_unplaced_commands: AtomicU64,
    /// Held clients this gateway shipped to its successor when it stopped.
    pub handover_shipped_clients: AtomicU64,
    /// Held clients taken out of this gateway by a hand-over (no `on_close` here).
    pub handover_moved_out: AtomicU64,
    /// Hand-overs received here whose stopping gateway said all of it was sent
    /// (`HandOverEnd`), every part and forwarded command applied.
    pub handover_finished: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// What the admission on the internal listeners counts here.
    pub(crate) fn admission(&self) -> gw_link::Counters<'_> {
        gw_link::Counters {
            busy: &self.rejected_links_busy,
            failed: &self.handshake_failures,
            rate_limited: &self.handshakes_rate_limited,
        }
    }

    /// A snapshot as `(name, value)` pairs, for status output and tests.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("connections", g(&self.connections)),
            ("connections_total", g(&self.connections_total)),
            ("messages_in", g(&self.messages_in)),
            ("messages_out", g(&self.messages_out)),
            ("events_sent", g(&self.events_sent)),
            ("commands", g(&self.commands)),
            ("queries", g(&self.queries)),
            ("dropped_slow_consumer", g(&self.dropped_slow_consumer)),
            ("dropped_client_gone", g(&self.dropped_client_gone)),
            ("dropped_no_worker", g(&self.dropped_no_worker)),
            ("rejected_commands", g(&self.rejected_commands)),
            ("refused_session_too_large", g(&self.refused_session_too_large)),
            ("refused_bad_name", g(&self.refused_bad_name)),
            ("refused_too_many_groups", g(&self.refused_too_many_groups)),
            ("dropped_event_too_large", g(&self.dropped_event_too_large)),
            ("replies_too_large", g(&self.replies_too_large)),
            ("redelivered", g(&self.redelivered)),
            ("handshake_failures", g(&self.handshake_failures)),
            ("link_errors", g(&self.link_errors)),
            ("protocol_violations", g(&self.protocol_violations)),
            ("disconnects_closed", g(&self.disconnects_closed)),
            ("disconnects_vanished", g(&self.disconnects_vanished)),
            ("disconnects_server", g(&self.disconnects_server)),
            ("rejected_total_limit", g(&self.rejected_total_limit)),
            ("rejected_ip_limit", g(&self.rejected_ip_limit)),
            ("handshakes_rate_limited", g(&self.handshakes_rate_limited)),
            ("rejected_fd_exhausted", g(&self.rejected_fd_exhausted)),
            ("rejected_links_busy", g(&self.rejected_links_busy)),
            ("index_updates", g(&self.index_updates)),
            ("index_resyncs", g(&self.index_resyncs)),
            ("deflate_connections", g(&self.deflate_connections)),
            ("deflate_messages_in", g(&self.deflate_messages_in)),
            ("deflate_messages_out", g(&self.deflate_messages_out)),
            ("deflate_compressions", g(&self.deflate_compressions)),
            ("recovery_held_clients", g(&self.recovery_held_clients)),
            ("recovery_held_bytes", g(&self.recovery_held_bytes)),
            ("recovery_resumed", g(&self.recovery_resumed)),
            ("recovery_replayed_messages", g(&self.recovery_replayed_messages)),
            ("recovery_failed_forged", g(&self.recovery_failed[0])),
            ("recovery_failed_expired", g(&self.recovery_failed[1])),
            ("recovery_failed_replayed", g(&self.recovery_failed[2])),
            ("recovery_failed_gap", g(&self.recovery_failed[3])),
            ("recovery_failed_unknown", g(&self.recovery_failed[4])),
            ("recovery_failed_disabled", g(&self.recovery_failed[5])),
            ("recovery_failed_malformed", g(&self.recovery_failed[6])),
            ("recovery_bad_control", g(&self.recovery_bad_control)),
            ("bad_acks", g(&self.bad_acks)),
            ("relay_clients", g(&self.relay_clients)),
            ("relay_opened_total", g(&self.relay_opened_total)),
            ("relay_homed_total", g(&self.relay_homed_total)),
            ("mesh_dropped", g(&self.mesh_dropped)),
            ("peer_gateways", g(&self.peer_gateways)),
            ("handover_adoptions", g(&self.handover_adoptions)),
            ("handover_adopted_clients", g(&self.handover_adopted_clients)),
            ("handover_refused_clients", g(&self.handover_refused_clients)),
            ("handover_unplaced_commands", g(&self.handover_unplaced_commands)),
            ("handover_shipped_clients", g(&self.handover_shipped_clients)),
            ("handover_moved_out", g(&self.handover_moved_out)),
            ("handover_finished", g(&self.handover_finished)),
        ]
    }

    /// Every message dropped, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_slow_consumer.load(Ordering::Relaxed)
            + self.dropped_client_gone.load(Ordering::Relaxed)
            + self.dropped_no_worker.load(Ordering::Relaxed)
            + self.dropped_event_too_large.load(Ordering::Relaxed)
    }

    /// One counter by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.snapshot().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}
