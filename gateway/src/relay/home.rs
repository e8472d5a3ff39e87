//! The home's side of a relayed client: the client is resumed here as any client coming back
//! is, and its connection loop runs over a [`RelayTransport`], whose frames travel over the
//! link the relaying gateway opened.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gw_proto::{FromGateway, Payload, RelayFrame, RelayOpen};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::RELAY_QUEUE;
use crate::gateway::Gateway;
use crate::outgoing::OutMessage;
use crate::recovery::Opening;
use crate::recovery::frames::{self, Ask, Reason};
use crate::transport::{Incoming, Transport, TransportError};
use crate::upgrade::HandshakeRequest;

/// How long a relayed client's close frame may wait for room on the link.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A relayed client's connection as its home sees it: frames from the relaying gateway in,
/// frames to it out, over the link that gateway opened.
pub(crate) struct RelayTransport {
    conn: u64,
    rx: mpsc::Receiver<RelayFrame>,
    tx: mpsc::Sender<FromGateway>,
    /// Fed and not yet on the link (the link's queue was full).
    pending: VecDeque<RelayFrame>,
    /// The relaying gateway knows the connection is over (it said so, or we closed it).
    ended: bool,
}

impl RelayTransport {
    async fn send_pending(&mut self) -> Result<(), TransportError> {
        while !self.pending.is_empty() {
            // Reserve first: cancelled while waiting, nothing is lost.
            let permit = self.tx.reserve().await.map_err(|_| link_gone())?;
            let frame = self.pending.pop_front().expect("not empty");
            permit.send(FromGateway::Relay { conn: self.conn, frame });
        }
        Ok(())
    }
}

fn link_gone() -> TransportError {
    TransportError::Vanished(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the link to the relaying gateway is gone",
    ))
}

impl Transport for RelayTransport {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            match self.rx.recv().await {
                Some(RelayFrame::Message(p)) => return Ok(Incoming::Message(p)),
                Some(RelayFrame::Activity) => return Ok(Incoming::Activity),
                Some(RelayFrame::Ended { clean: true }) => {
                    self.ended = true;
                    return Err(TransportError::Closed);
                }
                Some(RelayFrame::Ended { clean: false }) | None => {
                    self.ended = true;
                    return Err(TransportError::Vanished(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "the relayed socket is gone",
                    )));
                }
                // Frames for the client's side only; a relaying gateway sends none.
                Some(RelayFrame::Ping(_) | RelayFrame::Close { .. }) => {}
            }
        }
    }

    async fn ready(&mut self) -> Result<(), TransportError> {
        self.send_pending().await
    }

    fn feed(&mut self, msg: OutMessage) -> Result<usize, TransportError> {
        let frame = match msg.message() {
            Message::Text(t) => RelayFrame::Message(Payload { data: Bytes::from(t.clone()), binary: false }),
            Message::Binary(b) => RelayFrame::Message(Payload { data: b.clone(), binary: true }),
            Message::Ping(p) => RelayFrame::Ping(p.clone()),
            _ => return Ok(0),
        };
        self.pending.push_back(frame);
        Ok(msg.len())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.send_pending().await
    }

    fn release_idle(&mut self) {}

    fn written(&self) -> bool {
        self.pending.is_empty()
    }

    fn at_rest(&self) -> bool {
        // The link's frames wait in `pending`, which keeps its capacity once used.
        self.pending.capacity() == 0
    }

    async fn close(&mut self, code: u16, reason: &str) {
        self.pending.push_back(RelayFrame::Close { code, reason: reason.to_string() });
        let _ = tokio::time::timeout(CLOSE_WAIT, self.send_pending()).await;
        self.ended = true;
    }
}

impl Drop for RelayTransport {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Ended here without a close frame (destroyed, superseded): the relaying gateway drops
        // the socket.
        let msg = FromGateway::Relay { conn: self.conn, frame: RelayFrame::Ended { clean: false } };
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(msg) {
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(msg).await });
        }
    }
}

/// Opens relayed client `open` here and answers on `tx`: resumed, `RelayOpened`, then its
/// connection loop starts (so the answer is ahead of its frames) and the sender its incoming
/// frames go to is returned; otherwise `RelayRefused` with the `not_recovered` frame (counted
/// by reason, as for a client that came back here).
pub(crate) async fn open(
    gw: &Arc<Gateway>,
    open: RelayOpen,
    tx: &mpsc::Sender<FromGateway>,
) -> Option<mpsc::Sender<RelayFrame>> {
    let RelayOpen { conn, info, path, query, headers } = open;
    let ask = frames::ask(&query);
    let refused = |control| async move {
        let _ = tx.send(FromGateway::RelayRefused { conn, control }).await;
        None
    };
    if gw.clients_down.is_cancelled() {
        return refused(frames::not_recovered(Reason::Unknown, frames::STOPPING)).await;
    }
    // A client of a gateway that handed its clients to this one: once they are installed.
    if let Ask::Resume { token, .. } = &ask
        && let Ok(client) = gw_proto::ResumeToken::names(token)
        && (client.gateway != gw.address || client.instance != gw.instance)
    {
        crate::handover::adopt::adopted_client(gw, &client).await;
    }
    if !matches!(ask, Ask::Resume { .. }) {
        return refused(frames::not_recovered(Reason::Malformed, "a relayed connection must present a resume token"))
            .await;
    }
    match crate::client::open(gw, ask, &info) {
        // Frozen meanwhile: the relaying gateway finds the successor.
        Opening::Elsewhere => refused(frames::not_recovered(Reason::Unknown, frames::STOPPING)).await,
        Opening::Fresh { refusal, .. } => {
            refused(refusal.unwrap_or_else(|| frames::not_recovered(Reason::Unknown, "not resumed"))).await
        }
        resumed @ Opening::Resumed(_) => {
            let (frames_tx, rx) = mpsc::channel(RELAY_QUEUE);
            let transport = RelayTransport { conn, rx, tx: tx.clone(), pending: VecDeque::new(), ended: false };
            let request = Box::new(HandshakeRequest { path, query, headers });
            let client = crate::client::run(
                transport,
                info,
                Some(request),
                Some(resumed),
                gw.clone(),
                gw.clients_down.clone(),
                None,
            );
            let _ = tx.send(FromGateway::RelayOpened { conn }).await;
            gw.client_tasks.spawn(client);
            crate::metrics::Metrics::inc(&gw.state.metrics.relay_homed_total);
            Some(frames_tx)
        }
    }
}
