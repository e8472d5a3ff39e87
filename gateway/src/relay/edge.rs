//! The relaying gateway's side: a client came back here with a token of another gateway (its
//! home). Its socket stays here; the client is opened at the home, and frames are moved both
//! ways until either side ends. If the home cannot take it (unreachable, or the resume fails
//! there), the client is served here as a new client, told first why it was not recovered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gw_proto::{ClientId, ClientInfo, Payload, RelayFrame, RelayOpen, ToGateway};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::mesh::{FromHome, HomeLink};
use crate::gateway::Gateway;
use crate::handover::adopt;
use crate::listener::ConnSlot;
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::recovery::Opening;
use crate::recovery::frames::{self, Ask, Reason};
use crate::transport::{Incoming, Transport, TransportError, WsTransport};
use crate::upgrade::HandshakeRequest;

/// Most frames from the home written before one flush.
const WRITE_BATCH: usize = 64;

/// How long a client whose home is not listed waits for this gateway to hear a first list of
/// its peers (a gateway just started; see [`serve`]) and to link to them.
const LIST_WAIT: Duration = Duration::from_secs(3);

/// Hand-overs a relaying gateway follows for one client before it gives up.
const MOVES: usize = 3;

/// The gateway a relay for `home` goes to now: the adopter of its clients if one is known,
/// else the home itself.
fn target_of(gw: &Gateway, home: &ClientId) -> String {
    gw.handover.alias_of(&home.gateway, home.instance).unwrap_or_else(|| home.gateway.clone())
}

/// How long it then waits for a peer to say it adopted the home's clients.
const ADOPTED_WAIT: Duration = Duration::from_millis(500);

/// Serves a client whose resume token names `home`, another gateway.
pub(crate) async fn serve(
    transport: WsTransport,
    info: ClientInfo,
    request: Box<HandshakeRequest>,
    home: ClientId,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    slot: ConnSlot,
) {
    let span = tracing::debug_span!("relay", client_id = %home, peer = %info.client_addr);
    // The opening and the fallback are boxed: the relay task keeps neither while it pumps.
    async move {
        // A client of a gateway that handed its clients to this one resumes here.
        if gw.handover.adoption_of(&home.gateway, home.instance).is_some() {
            adopt::adopted_client(&gw, &home).await;
            return Box::pin(crate::client::serve_resume(transport, info, request, gw, shutdown, slot)).await;
        }
        // A home no register lists (stopped, or not yet known here: this gateway may have just
        // started): link to the peers first, which say what they adopted, so a client whose
        // gateway stopped before this one joined is relayed to its adopter.
        if gw.handover.alias_of(&home.gateway, home.instance).is_none()
            && !gw.mesh.peer_addresses().contains(&home.gateway)
        {
            // Bounded as a whole: a peer that accepts and never answers (frozen) must not keep
            // the client waiting past its own patience.
            let _ = tokio::time::timeout(LIST_WAIT, Box::pin(gw.mesh.link_all(&gw, LIST_WAIT))).await;
            // What a new link says comes right after its welcome.
            if let Some(adopt::Adopter::Here) = adopt::await_adoption(&gw, &home, ADOPTED_WAIT, None).await {
                adopt::adopted_client(&gw, &home).await;
                let run = crate::client::serve_resume(transport, info, request, gw, shutdown, slot);
                return Box::pin(run).await;
            }
        }
        let mut tried = target_of(&gw, &home);
        let mut opened = Box::pin(open(&gw, &home, &info, &request)).await;
        // The gateway that holds it is stopping or gone: it may be handing its clients over (to
        // this gateway or another), which takes a moment to be known here. A client moved on by
        // gateways restarted one after the other may need this more than once.
        for _ in 0..MOVES {
            let Err(control) = &opened else { break };
            let wait = if control.contains(frames::STOPPING) {
                Duration::from_secs(5)
            } else if control.contains(frames::UNREACHABLE) {
                Duration::from_secs(1)
            } else {
                break;
            };
            // Another adopter than the one just tried: what this gateway knew may be stale.
            match adopt::await_adoption(&gw, &home, wait, Some(&tried)).await {
                Some(adopt::Adopter::Here) => {
                    adopt::adopted_client(&gw, &home).await;
                    let run = crate::client::serve_resume(transport, info, request, gw, shutdown, slot);
                    return Box::pin(run).await;
                }
                Some(adopt::Adopter::There(next)) => {
                    tried = next;
                    opened = Box::pin(open(&gw, &home, &info, &request)).await;
                }
                None => break,
            }
        }
        match opened {
            Ok((link, conn, rx)) => {
                let m = &gw.state.metrics;
                m.relay_clients.fetch_add(1, Ordering::Relaxed);
                Metrics::inc(&m.relay_opened_total);
                tracing::debug!("client relayed to its home gateway");
                pump(transport, &link, conn, rx, &shutdown).await;
                link.forget(conn);
                m.relay_clients.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            }
            Err(control) => {
                // Served here as a new client, with recovery, after the `not_recovered` frame.
                let opening = Opening::Fresh { recover: true, refusal: Some(control) };
                Box::pin(crate::client::run(transport, info, Some(request), Some(opening), gw, shutdown, Some(slot)))
                    .await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Opens the client at its home: the link, the socket's number on it and where the home's
/// frames arrive; or the `not_recovered` frame to serve it here with.
async fn open(
    gw: &Arc<Gateway>,
    home: &ClientId,
    info: &ClientInfo,
    request: &HandshakeRequest,
) -> Result<(Arc<HomeLink>, u64, mpsc::Receiver<FromHome>), String> {
    let hub = gw.state.recovery.as_ref().expect("relaying needs recovery");
    let refuse = |reason: Reason, detail: String| {
        Metrics::inc(&gw.state.metrics.recovery_failed[Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)]);
        tracing::debug!(reason = reason.as_str(), %detail, "client not recovered");
        frames::not_recovered(reason, &detail)
    };
    let Ask::Resume { token, .. } = frames::ask(&request.query) else {
        return Err(refuse(Reason::Malformed, "no resume token".into()));
    };
    // Checked here before anything is dialled: a forged token cannot make this gateway connect
    // anywhere. The home checks it again, with the generation.
    if gw.config.secret.is_empty() {
        return Err(refuse(
            Reason::Unknown,
            "the token names another gateway, and this gateway has no cluster secret to check it with \
             (set `secret` on every gateway to recover on any of them)"
                .into(),
        ));
    }
    if let Err(e) = hub.verify(&token) {
        let reason = if matches!(e, gw_proto::TokenError::Forged) { Reason::Forged } else { Reason::Malformed };
        return Err(refuse(reason, e.to_string()));
    }
    let deadline = gw.config.handshake_timeout;
    // Its gateway stopped and handed its clients to another one: they are there now.
    let adopter = gw.handover.alias_of(&home.gateway, home.instance);
    if adopter.is_none() && home.gateway == gw.address {
        return Err(refuse(
            Reason::Unknown,
            "the client's gateway restarted since (it had this gateway's address), and no other gateway \
             says it took its clients over"
                .into(),
        ));
    }
    let target = adopter.as_deref().unwrap_or(&home.gateway);
    let link = match tokio::time::timeout(deadline, gw.mesh.link(gw, target)).await {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            return Err(refuse(
                Reason::Unknown,
                format!("the client's gateway {} cannot be reached: {e}", home.gateway),
            ));
        }
        Err(_) => {
            return Err(refuse(
                Reason::Unknown,
                format!("the client's gateway {} did not answer in time", home.gateway),
            ));
        }
    };
    if adopter.is_none() && link.instance != home.instance {
        return Err(refuse(
            Reason::Unknown,
            format!("the client's gateway {} restarted since, and its state with it", home.gateway),
        ));
    }
    let (conn, mut rx) = link.register(&gw.mesh, super::edge_queue(gw));
    let opening = RelayOpen {
        conn,
        info: info.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
    };
    let answer = async {
        if !link.send(ToGateway::RelayOpen(Box::new(opening))).await {
            return None;
        }
        rx.recv().await
    };
    let why = match tokio::time::timeout(deadline, answer).await {
        Ok(Some(FromHome::Opened)) => return Ok((link, conn, rx)),
        // Refused at the home, and counted there.
        Ok(Some(FromHome::Refused(control))) => {
            link.forget(conn);
            return Err(control);
        }
        Ok(Some(FromHome::Frame(_))) => "it sent a frame before opening the client",
        Ok(None) => "the link to it was lost",
        Err(_) => "it did not answer in time",
    };
    link.forget(conn);
    Err(refuse(Reason::Unknown, format!("the client's gateway {}: {why}", home.gateway)))
}

/// Moves frames between the socket and the home until either ends.
async fn pump(
    mut socket: WsTransport,
    link: &HomeLink,
    conn: u64,
    mut rx: mpsc::Receiver<FromHome>,
    shutdown: &CancellationToken,
) {
    let to_home = |frame| ToGateway::Relay { conn, frame };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // The home holds the client for its window: it can come back anywhere.
                Box::pin(socket.close(1001, "server shutting down")).await;
                link.send(to_home(RelayFrame::Ended { clean: false })).await;
                return;
            }
            from = rx.recv() => {
                let Some(first) = from else {
                    // The home is gone, or this client did not keep up: drop the socket, so the
                    // client comes back (to a gateway that can tell it what became of it).
                    tracing::debug!("relay ended by the home's side");
                    return;
                };
                if !write(&mut socket, first, &mut rx).await {
                    return;
                }
            }
            incoming = socket.recv() => {
                let (frame, last) = match incoming {
                    Ok(Incoming::Message(p)) => (RelayFrame::Message(p), false),
                    Ok(Incoming::Activity) => (RelayFrame::Activity, false),
                    Err(TransportError::Closed) => (RelayFrame::Ended { clean: true }, true),
                    Err(TransportError::Vanished(e)) => {
                        tracing::debug!(error = %e, "relayed client vanished");
                        (RelayFrame::Ended { clean: false }, true)
                    }
                    Err(TransportError::Violation { code, reason }) => {
                        tracing::debug!(code, reason = %reason, "relayed client broke the protocol");
                        Box::pin(socket.close(code, &reason)).await;
                        (RelayFrame::Ended { clean: true }, true)
                    }
                };
                if !link.send(to_home(frame)).await || last {
                    return;
                }
            }
        }
    }
}

/// Writes `first` and what else the home sent meanwhile (up to a batch), then flushes;
/// `false` when the relay is over (closed by the home, or the socket failed).
async fn write(socket: &mut WsTransport, first: FromHome, rx: &mut mpsc::Receiver<FromHome>) -> bool {
    let mut msg = first;
    let mut pinged = false;
    let mut written = 0;
    loop {
        let out = match msg {
            FromHome::Frame(RelayFrame::Message(p)) => to_message(p),
            FromHome::Frame(RelayFrame::Ping(p)) => {
                pinged = true;
                Some(Message::Ping(p))
            }
            FromHome::Frame(RelayFrame::Close { code, reason }) => {
                let _ = socket.flush().await;
                socket.close(code, &reason).await;
                return false;
            }
            FromHome::Frame(RelayFrame::Ended { .. }) => {
                let _ = socket.flush().await;
                return false;
            }
            FromHome::Frame(RelayFrame::Activity) | FromHome::Opened | FromHome::Refused(_) => None,
        };
        if let Some(out) = out {
            if socket.ready().await.is_err() || socket.feed(OutMessage::new(out)).is_err() {
                return false;
            }
            written += 1;
        }
        // A message is taken from the channel only when there is room for it in this batch:
        // one taken and not written would be lost.
        if written == WRITE_BATCH {
            break;
        }
        match rx.try_recv() {
            Ok(next) => msg = next,
            Err(_) => break,
        }
    }
    if socket.flush().await.is_err() {
        return false;
    }
    // As for a client served here: after the home's heartbeat, an idle socket keeps no buffers.
    if pinged {
        socket.release_idle();
    }
    true
}

fn to_message(p: Payload) -> Option<Message> {
    if p.binary {
        return Some(Message::Binary(p.data));
    }
    Utf8Bytes::try_from(p.data).ok().map(Message::Text)
}
