//! A link from a business worker or gateway client on the internal listener: handshake, welcome,
//! then commands, queries, acknowledgements and heartbeats in; events and replies out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gw_link::{FrameReader, LinkError, WriterStats};
use gw_proto::{FromGateway, Role, ToGateway};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Gateway;
use crate::metrics::Metrics;
use crate::router::WorkerLink;

/// Serves one internal link until the peer leaves, the link fails, or `links_down` is cancelled
/// (after every client has been closed and its close event queued), then flushes what is queued.
pub(crate) async fn serve(
    stream: TcpStream,
    peer_addr: SocketAddr,
    gw: Arc<Gateway>,
    links_down: CancellationToken,
    pending: crate::listener::ConnSlot,
) {
    // Every connection gets the challenge, so garbage from a shared address never keeps out a
    // peer that proves the secret; an address with too many recent failures is served lean
    // (short deadline, failures counted but logged once per window by the limiter).
    let permit = gw.limiter.admit(peer_addr.ip());
    let timeout = permit.timeout(gw.handshake.timeout);
    let link = gw_link::accept_within(stream, &gw.handshake, &[Role::Worker, Role::Client], timeout).await;
    drop(pending);
    let link = match link {
        Ok(link) => {
            permit.succeeded();
            link
        }
        // Over budget: counted, and logged by the limiter once per window, not here.
        Err(_) if permit.over_budget() => {
            permit.failed();
            Metrics::inc(&gw.state.metrics.handshakes_rate_limited);
            return;
        }
        Err(e) => {
            permit.failed();
            Metrics::inc(&gw.state.metrics.handshake_failures);
            tracing::warn!(peer = %peer_addr, error = %e, "refused internal peer: handshake failed");
            return;
        }
    };
    let role = link.peer.role;
    let node = link.peer.node.clone();
    let span = tracing::info_span!("link", role = %role, node = %node, peer = %peer_addr);
    async move {
        let (tx, mut rx) = mpsc::channel(gw.config.link.queue);
        let _ = tx.try_send(FromGateway::Welcome { instance: gw.instance, address: gw.address.clone() });
        let worker = (role == Role::Worker).then(|| gw.router.add(node.clone(), tx.clone()));
        tracing::info!("{role} connected");
        let stats = WriterStats::default();
        let finish = CancellationToken::new();
        let result = {
            let writer = gw_link::write_loop(link.writer, &mut rx, gw.config.link.max_frame, &stats, &finish, |_| {});
            tokio::pin!(writer);
            let reader = read_loop(link.reader, tx.clone(), &gw, worker.as_deref());
            tokio::select! {
                r = reader => Some(r),
                r = &mut writer => Some(r),
                _ = links_down.cancelled() => {
                    // Gateway stopping: every client is closed and its close event queued. Stop
                    // routing here and let the writer flush what is queued.
                    if let Some(w) = &worker {
                        gw.router.remove(w);
                    }
                    finish.cancel();
                    let flushed = tokio::time::timeout(std::time::Duration::from_secs(2), &mut writer).await;
                    tracing::debug!(flushed = flushed.is_ok(), "link closed by shutdown");
                    None
                }
            }
        };
        let Some(result) = result else { return };
        if let Some(w) = &worker {
            gw.router.remove(w);
            crate::redeliver::hand_back(&gw, w);
        }
        match result {
            Ok(()) => tracing::info!("{role} disconnected"),
            Err(e) if e.is_disconnect() => tracing::info!(error = %e, "{role} disconnected"),
            Err(e) => {
                Metrics::inc(&gw.state.metrics.link_errors);
                tracing::warn!(error = %e, "{role} link dropped");
            }
        }
    }
    .instrument(span)
    .await
}

async fn read_loop(
    mut reader: FrameReader<OwnedReadHalf>,
    tx: mpsc::Sender<FromGateway>,
    gw: &Gateway,
    worker: Option<&WorkerLink>,
) -> Result<(), LinkError> {
    let mut ping = tokio::time::interval(gw.config.link.heartbeat_interval);
    let timeout = gw.config.link.heartbeat_timeout;
    let last_heard = AtomicU64::new(0);
    let start = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                let heard = start + std::time::Duration::from_millis(last_heard.load(Ordering::Relaxed));
                if heard.elapsed() > timeout {
                    return Err(LinkError::HeartbeatTimeout(timeout));
                }
                // A full queue already proves the link is busy; never wait here.
                let _ = tx.try_send(FromGateway::Ping);
            }
            msg = reader.read::<ToGateway>() => {
                let Some(msg) = msg? else { return Ok(()) };
                last_heard.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                match msg {
                    ToGateway::Command(cmd) => gw.state.execute(cmd),
                    ToGateway::Request { id, query } => {
                        let reply = gw.state.answer(query);
                        if tx.send(FromGateway::Reply { id, reply }).await.is_err() {
                            return Ok(());
                        }
                    }
                    ToGateway::Ack { seq } => {
                        if let Some(w) = worker {
                            w.ack(seq);
                        }
                    }
                    ToGateway::Drain => match worker {
                        Some(w) => {
                            w.draining.store(true, Ordering::Release);
                            gw.router.refresh();
                            tracing::info!("worker draining: its clients move to other workers");
                        }
                        None => return Err(LinkError::Unexpected("drain from a non-worker".into())),
                    },
                    ToGateway::Ping => {
                        let _ = tx.try_send(FromGateway::Pong);
                    }
                    ToGateway::Pong => {}
                }
            }
        }
    }
}
