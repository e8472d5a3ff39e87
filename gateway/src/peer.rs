//! A link from a business worker or gateway client on the internal listener: handshake, welcome,
//! then commands, queries, acknowledgements and drains in; events, replies and drain answers
//! out. The link itself (heartbeat, writer, graceful flush) is `gw_link`'s engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_link::wire::GatewaySide;
use gw_link::{Ended, Handler, LinkEngine, LinkError, LinkOptions};
use gw_proto::{Command, FromGateway, Query, RelayFrame, Reply, Role, ToGateway};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Gateway;
use crate::index_feed::Watcher;
use crate::metrics::Metrics;
use crate::router::WorkerLink;

/// Serves one internal link until the peer leaves, the link fails, or `links_down` is cancelled
/// (after every client has been closed and its close event queued), then flushes what is queued.
pub(crate) async fn serve(
    stream: TcpStream,
    pending: gw_link::Pending,
    peer_addr: SocketAddr,
    gw: Arc<Gateway>,
    links_down: CancellationToken,
) {
    // Other gateways link here to relay their sockets of this gateway's clients.
    let roles = [Role::Worker, Role::Client, Role::Gateway];
    let handshake = |deadline| gw_link::accept_within(stream, &gw.handshake, &roles, deadline);
    let Some(link) = gw.admission.admit(pending, "internal peer", gw.state.metrics.admission(), handshake).await else {
        return;
    };
    let role = link.peer.role;
    let node = link.peer.node.clone();
    let span = tracing::info_span!("link", role = %role, node = %node, peer = %peer_addr);
    async move {
        let engine = LinkEngine::<GatewaySide>::new(LinkOptions::from(&gw.config.link), gw.config.link.queue);
        let tx = engine.sender();
        let _ = tx.try_send(FromGateway::Welcome { instance: gw.instance, address: gw.address.clone() });
        let link_no = gw.handover.link_up(&tx, role);
        let worker = (role == Role::Worker).then(|| gw.router.add(node.clone(), tx.clone()));
        tracing::info!("{role} connected");
        let mut peer = Peer {
            gw: &gw,
            tx,
            worker: worker.as_deref(),
            role,
            index: IndexFeed::default(),
            relays: HashMap::new(),
            sender: None,
            link_no,
        };
        let result = engine.run(link.reader, link.writer, &mut peer, &links_down).await;
        peer.index.stop(&gw);
        gw.handover.sender_gone(peer.sender);
        gw.handover.link_down(link_no);
        if let Ok(Ended::Closed { flushed }) = result {
            // Gateway stopping: every client is closed and its close event was queued.
            tracing::debug!(flushed, "link closed by shutdown");
            return;
        }
        if let Some(w) = &worker {
            gw.router.remove(w);
            crate::redeliver::hand_back(&gw, w);
        }
        match result {
            Ok(_) => tracing::info!("{role} disconnected"),
            Err(e) if e.is_disconnect() => tracing::info!(error = %e, "{role} disconnected"),
            Err(e) => {
                Metrics::inc(&gw.state.metrics.link_errors);
                tracing::warn!(error = %e, "{role} link dropped");
            }
        }
    }
    .instrument(span)
    .await;
}

/// What a worker's or gateway client's messages do here.
struct Peer<'a> {
    gw: &'a Arc<Gateway>,
    tx: mpsc::Sender<FromGateway>,
    /// Set for a business worker: the router's view of it.
    worker: Option<&'a WorkerLink>,
    role: Role,
    index: IndexFeed,
    /// From another gateway: its relayed sockets of our clients, by its number for them, and
    /// where their frames go (dropped with the link: those clients vanish, and are held).
    relays: HashMap<u64, mpsc::Sender<RelayFrame>>,
    /// The sender's id (`ToGateway::Sender`), for hand-overs.
    sender: Option<u64>,
    /// This link's number in the hand-over state.
    link_no: u64,
}

/// This link's routing index feed: its count of applied index writes (kept from the start, so
/// it is right whenever the peer starts watching) and the task writing the feed once it does.
#[derive(Default)]
struct IndexFeed {
    watcher: Arc<Watcher>,
    task: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
}

impl IndexFeed {
    fn start(&mut self, gw: &Arc<Gateway>, tx: &mpsc::Sender<FromGateway>) {
        if self.task.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        let (gw, tx, watcher, until) = (gw.clone(), tx.clone(), self.watcher.clone(), stop.clone());
        // A part of a snapshot stays well under the frame limit.
        let part_bytes = (gw.config.link.max_frame / 4).clamp(1024, 1 << 20);
        let feed = async move {
            tokio::select! {
                () = crate::index_feed::run(watcher, &gw.state, tx, part_bytes) => {}
                () = until.cancelled() => {}
            }
        };
        let task = tokio::spawn(feed.instrument(tracing::debug_span!("index_feed")));
        tracing::debug!("peer watches the routing index");
        self.task = Some((task, stop));
    }

    fn stop(&mut self, gw: &Gateway) {
        if let Some((task, stop)) = self.task.take() {
            stop.cancel();
            task.abort();
            gw.state.index_mut().unwatch(&self.watcher);
        }
    }
}

impl Peer<'_> {
    /// Forwards a command to the gateway this one handed its clients over to.
    fn forward(&self, cmd: Command) -> Reply {
        if let Some(out) = self.gw.handover.forwarding() {
            out.forward(self.sender, cmd);
        }
        Reply::Done
    }
}

impl Handler<GatewaySide> for Peer<'_> {
    async fn on_message(&mut self, msg: ToGateway) -> Result<(), LinkError> {
        match msg {
            ToGateway::Command(cmd) => {
                let index_write = cmd.is_index_write();
                let (gw, sender) = (self.gw, self.sender);
                // Applied here unless this gateway handed its clients over: then forwarded.
                let frozen = gw.handover.apply_unless_frozen(cmd, |cmd| {
                    let scope = gw.handover.scope(sender, &cmd);
                    gw.state.execute_scoped(cmd, &scope);
                });
                if let Some((out, cmd)) = frozen
                    && self.role != Role::Gateway
                {
                    out.forward(sender, cmd);
                }
                if index_write {
                    self.index.watcher.applied_one();
                }
            }
            ToGateway::Sender { id } => {
                self.sender = Some(id);
                self.gw.handover.set_sender(self.link_no, id);
            }
            ToGateway::Switched { instance } => {
                if let Some(sender) = self.sender {
                    crate::handover::adopt::switched(self.gw, instance, sender);
                }
            }
            ToGateway::TakeOver(_)
            | ToGateway::Forwarded { .. }
            | ToGateway::ForwardedEnd { .. }
            | ToGateway::HandOverEnd { .. }
            | ToGateway::Adoption { .. }
                if self.role != Role::Gateway =>
            {
                return Err(LinkError::Unexpected(format!("a hand-over message from a {}", self.role)));
            }
            ToGateway::TakeOver(t) => crate::handover::adopt::take_over(self.gw, *t).await,
            ToGateway::Forwarded { instance, cmd, .. } => crate::handover::adopt::forwarded(self.gw, instance, cmd),
            ToGateway::Adoption { adopter, gateway, instance } => {
                tracing::debug!(%adopter, stopped = %gateway, "another gateway adopted a stopped one's clients");
                self.gw.handover.alias(gateway, instance, adopter);
            }
            ToGateway::ForwardedEnd { sender, instance } => {
                crate::handover::adopt::forwarded_end(self.gw, instance, sender);
            }
            ToGateway::HandOverEnd { instance } => {
                // Everything before it on this link is applied (in order): say so, so the
                // stopping gateway may close the link and exit.
                crate::handover::adopt::finished(self.gw, instance);
                let _ = self.tx.send(FromGateway::HandOverDone { instance }).await;
            }
            ToGateway::WatchIndex => self.index.start(self.gw, &self.tx),
            ToGateway::Request { id, query } => {
                let max_frame = self.gw.config.link.max_frame;
                let reply = match query {
                    Query::PusherMembers { app, channel } => {
                        let members = crate::pusher::members(self.gw, &app, channel.as_deref());
                        self.gw.state.fit(Reply::NamedStrings(members), max_frame)
                    }
                    // A session write for a client this gateway handed over goes after it.
                    Query::SetSession { client, session } if self.gw.handover.forwarding().is_some() => {
                        self.forward(Command::SetSession { client, session })
                    }
                    Query::UpdateSession { client, patch } if self.gw.handover.forwarding().is_some() => {
                        self.forward(Command::UpdateSession { client, patch })
                    }
                    query => self.gw.state.answer_within(query, max_frame),
                };
                // The link's own writer drains the queue, so this wait ends.
                let _ = self.tx.send(FromGateway::Reply { id, reply }).await;
            }
            ToGateway::Ack { seq } => {
                if let Some(w) = self.worker
                    && w.ack(seq).is_err()
                {
                    Metrics::inc(&self.gw.state.metrics.bad_acks);
                }
            }
            ToGateway::Drain => match self.worker {
                Some(w) => {
                    w.draining.store(true, Ordering::Release);
                    self.gw.router.refresh();
                    tracing::info!("worker draining: its clients move to other workers");
                    // Every event routed here before the drain is queued ahead of this answer
                    // (`seal` waits for one being queued right now), and none is routed after it.
                    w.seal();
                    let _ = self.tx.send(FromGateway::Drained).await;
                }
                None => return Err(LinkError::Unexpected("drain from a non-worker".into())),
            },
            // The engine answers heartbeats.
            ToGateway::Ping | ToGateway::Pong => {}
            ToGateway::RelayOpen(_) | ToGateway::Relay { .. } if self.role != Role::Gateway => {
                return Err(LinkError::Unexpected(format!("a relay frame from a {}", self.role)));
            }
            ToGateway::Pusher(_) if self.role != Role::Gateway => {
                return Err(LinkError::Unexpected(format!("a Pusher peer message from a {}", self.role)));
            }
            ToGateway::Pusher(msg) => crate::pusher::on_peer(self.gw, msg),
            ToGateway::RelayOpen(open) => {
                let conn = open.conn;
                if let Some(frames) = crate::relay::home::open(self.gw, *open, &self.tx).await {
                    self.relays.insert(conn, frames);
                }
            }
            ToGateway::Relay { conn, frame } => {
                let last = matches!(frame, RelayFrame::Ended { .. });
                // Waiting here is backpressure onto the relaying gateway, as a socket's would be.
                if let Some(frames) = self.relays.get(&conn)
                    && (frames.send(frame).await.is_err() || last)
                {
                    self.relays.remove(&conn);
                }
            }
        }
        Ok(())
    }

    fn on_close(&mut self) {
        // Stop routing here; the engine flushes what is queued.
        if let Some(w) = self.worker {
            self.gw.router.remove(w);
        }
    }
}
