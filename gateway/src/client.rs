//! One client connection, whatever its protocol: handshake (TLS, WebSocket upgrade), then a loop
//! that forwards the client's messages to its worker and writes what workers send back, until
//! either side closes.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use gw_proto::{ClientInfo, CloseReason, EventKind, Payload, Protocol};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Gateway;
use crate::binding::{Binding, ClientCx, Unrouted};
use crate::client_handle::{ClientHandle, KillReason, Stop};
use crate::deflate::Compressed;
use crate::listener::{ConnSlot, ListenerSpec};
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::recovery::frames::{self, Ask};
use crate::recovery::{self, ClientRecovery, Opening, Phase};
use crate::send_queue::{Outbound, SendQueue};
use crate::stream::ClientStream;
use crate::transport::{Incoming, StreamTransport, Transport, TransportError, WsTransport};
use crate::upgrade::{HandshakeRequest, UpgradeError, Upgraded};

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Outgoing frames collected before tungstenite writes them to the socket.
const WRITE_BUFFER: usize = 16 * 1024;

/// The listener's WebSocket settings with the two buffer sizes the benchmarks call for (see
/// BENCHMARKS.md). With a write buffer of 0 every frame is its own `send`, and those sends were
/// most of the gateway's CPU time under load; the write buffer is only a threshold, so memory
/// grows only while frames wait for `flush`.
/// The read buffer is [`WsTransport`]'s own.
pub(crate) fn tuned(config: WebSocketConfig) -> WebSocketConfig {
    config.write_buffer_size(WRITE_BUFFER.min(config.max_write_buffer_size / 2))
}

/// How long a destroyed client's socket may take to take what was queued before the destroy.
const DESTROY_FLUSH: Duration = Duration::from_secs(2);

/// What the client task took from its send queue.
enum Taken {
    Empty,
    /// A frame to write; `true` unless it is a heartbeat.
    Send(OutMessage, bool),
    Close(Option<OutMessage>, Option<CloseReason>),
    Destroy,
}

/// What woke a connection's loop (see [`Connection::run`]).
enum Wake {
    Stop(Stop),
    NoFirstMessage,
    Redeliver,
    /// Items wait in the send queue.
    Ready,
    /// Frames were fed while the client was at rest and wait for a flush; `true` if one was a
    /// heartbeat.
    Fed(bool),
    /// An item taken while the client was at rest that needs more than a write (a close, a destroy).
    Took(Taken),
    Incoming(Result<Incoming, TransportError>),
    /// The connection ended (a write failed).
    Ended(End),
}

/// Why the connection loop ended.
enum End {
    /// The client closed cleanly (close frame, or end of stream on a TCP framing), or broke the
    /// protocol and was told so.
    Client,
    /// The client went away without closing: no close frame, a reset, a failed read or write.
    Vanished,
    /// We closed it (worker command, shutdown, slow consumer, heartbeat).
    Server,
}

/// Serves one accepted socket of `listener` until it closes, on a task of `tasks`.
///
/// Each kind of listener (WebSocket, Pusher, TCP framing) spawns a future type of its own: a task
/// is allocated as large as the largest state of its future, so one kind's connections do not
/// pay for another kind's larger state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    tasks: &TaskTracker,
    span: tracing::Span,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerSpec>,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    slot: ConnSlot,
) {
    let pusher = listener.pusher.clone();
    let stream_listener = listener.framing().is_some();
    let (opening, info, slot) = opening(stream, peer, listener, gw.clone(), slot);
    let never = || std::future::ready(());
    if let Some(p) = pusher {
        // A Pusher listener's connections are served by `pusher::conn`, in the task itself.
        tasks.spawn(
            opening
                .then(move |opened| match opened {
                    Some(Opened::WebSocket(transport, request)) => {
                        Either::Left(crate::pusher::conn::serve(transport, *info, request, gw, slot, p))
                    }
                    _ => Either::Right(never()),
                })
                .instrument(span),
        );
    } else if stream_listener {
        tasks.spawn(
            opening
                .then(move |opened| match opened {
                    Some(Opened::Stream(transport)) => {
                        Either::Left(run(transport, *info, None, None, gw, shutdown, Some(slot)))
                    }
                    _ => Either::Right(never()),
                })
                .instrument(span),
        );
    } else {
        tasks.spawn(
            opening
                .then(move |opened| match opened {
                    Some(Opened::WebSocket(transport, request)) => match crate::relay::home_of(&gw, &request) {
                        // A resume token naming another gateway: that gateway serves the client,
                        // through this one (boxed: a rare path).
                        Some(home) => Either::Left(Either::Left(rare(crate::relay::edge::serve(
                            transport, *info, request, home, gw, shutdown, slot,
                        )))),
                        None => match open(&gw, frames::ask(&request.query), &info) {
                            Opening::Elsewhere => Either::Left(Either::Left(rare(sent_elsewhere(transport, slot)))),
                            opening => Either::Left(Either::Right(run(
                                transport,
                                *info,
                                Some(request),
                                Some(opening),
                                gw,
                                shutdown,
                                Some(slot),
                            ))),
                        },
                    },
                    _ => Either::Right(never()),
                })
                .instrument(span),
        );
    }
}

/// The handshake of one accepted socket (TLS, WebSocket upgrade), with the client's info and
/// its connection slot. Boxed: the handshake's state (its deadline's timer, the upgrade) would
/// otherwise keep its room in the task for the whole connection. The task is as large as its
/// largest state, and an `async` block keeps what it captures for its whole life: so the
/// handshake is one future and the connection another, chained with `then`, and nothing of the
/// handshake stays in the task while the connection lives.
#[allow(clippy::type_complexity)]
fn opening(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerSpec>,
    gw: Arc<Gateway>,
    slot: ConnSlot,
) -> (Pin<Box<dyn Future<Output = Option<Opened>> + Send>>, Box<ClientInfo>, ConnSlot) {
    stream.set_nodelay(true).ok();
    let info = Box::new(ClientInfo {
        client_addr: peer.to_string(),
        // The address this client actually reached (not 0.0.0.0 for a wildcard listener).
        gateway_addr: stream.local_addr().map(|a| listener.local_addr(a)).unwrap_or_else(|_| "".into()),
        listener: listener.url.clone(),
        protocol: listener.protocol,
    });
    let opening = async move {
        // The handshake (TLS and WebSocket) must finish in time: slow or silent handshakes are dropped.
        let deadline = tokio::time::Instant::now() + gw.config.handshake_timeout;
        let tls = listener.tls.clone();
        let handshake = async move {
            match tls {
                // Boxed: a plain client's handshake does not carry TLS's state.
                Some(acceptor) => Ok(ClientStream::Tls(Box::new(
                    Box::pin(acceptor.accept(stream)).await.map_err(HandshakeError::Tls)?,
                ))),
                None => Ok::<_, HandshakeError>(ClientStream::Plain(stream)),
            }
        };
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return handshake_failed(&gw, &e),
            Err(_) => return handshake_failed(&gw, &HandshakeError::TimedOut),
        };
        let Some(framing) = listener.framing() else {
            let upgrade = crate::upgrade::accept(stream, &listener.policy);
            let Upgraded { stream, leftover, request, deflate } = match tokio::time::timeout_at(deadline, upgrade).await
            {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(e)) => return handshake_failed(&gw, &HandshakeError::Upgrade(e)),
                Err(_) => return handshake_failed(&gw, &HandshakeError::TimedOut),
            };
            let config = listener.ws_config.clone();
            let compressed =
                deflate.map(|d| Box::new(Compressed::new(d, gw.state.metrics.clone(), listener.max_message)));
            let transport = WsTransport::new(stream, leftover, config, gw.config.pong_is_activity, compressed);
            return Some(Opened::WebSocket(transport, Box::new(request)));
        };
        Some(Opened::Stream(StreamTransport::new(stream, framing)))
    };
    (Box::pin(opening), info, slot)
}

/// A client that came back to this gateway while it hands its clients over (see
/// [`Opening::Elsewhere`]): closed with 1012 (service restart) before anything is opened, as
/// its connected clients were, so it comes back to another gateway with its token unused.
async fn sent_elsewhere<T: Transport>(mut transport: T, slot: ConnSlot) {
    transport.close(1012, "service restart").await;
    drop(slot);
}

/// Opens and runs a client whose resume this gateway answers itself after a wait (one it
/// adopted, found by a relaying path); sent elsewhere if this gateway froze meanwhile.
pub(crate) async fn serve_resume(
    transport: WsTransport,
    info: ClientInfo,
    request: Box<HandshakeRequest>,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    slot: ConnSlot,
) {
    match open(&gw, frames::ask(&request.query), &info) {
        Opening::Elsewhere => sent_elsewhere(transport, slot).await,
        opening => Box::pin(run(transport, info, Some(request), Some(opening), gw, shutdown, Some(slot))).await,
    }
}

/// A connection of a rare kind (relayed), boxed so that its future does not enlarge
/// every connection's task.
fn rare(f: impl Future<Output = ()> + Send + 'static) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(f)
}

/// What a client with recovery is told first: control frames, and for a resumed one the
/// messages it missed. Boxed, so a connection without it carries one null pointer.
struct Greeting {
    control: Vec<String>,
    replay: Vec<OutMessage>,
    resumed: bool,
}

/// A client connection after its handshake.
// Lives only between the handshake and the connection, whose future it is moved into at once:
// boxing the WebSocket side would cost every client an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Opened {
    WebSocket(WsTransport, Box<HandshakeRequest>),
    Stream(StreamTransport),
}

/// Why a client's handshake (TLS, then the WebSocket upgrade) failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error("timed out")]
    TimedOut,
}

fn handshake_failed(gw: &Gateway, why: &HandshakeError) -> Option<Opened> {
    Metrics::inc(&gw.state.metrics.handshake_failures);
    tracing::debug!(reason = %why, "client handshake failed");
    None
}

/// What a WebSocket request asking `ask` opens (see [`recovery::open`]): a new client or a
/// held one resumed, whose new handle (for `info`) is already in the client map.
pub(crate) fn open(gw: &Arc<Gateway>, ask: Ask, info: &ClientInfo) -> Opening {
    // Only a client that asks for recovery pays for it here.
    if ask == Ask::Nothing {
        return Opening::Fresh { recover: false, refusal: None };
    }
    let (queue, now, info) = (gw.config.send_queue, gw.clock_ms(), info.clone());
    recovery::open(gw, ask, move |id, cell| {
        ClientHandle::new(id, SendQueue::new(queue), info, now).with_recovery(Some(cell))
    })
}

/// Registers the client and returns its connection loop, which releases `slot` when it ends
/// (a relayed client has none at its home: its socket's slot is at the relaying gateway).
/// `opening` is what [`open`] made of the request, when the caller asked already (a relayed
/// client's home, or a relaying gateway that serves the client itself after all); `None`: ask
/// now. Not an `async fn`: the arguments are moved into the connection here, while an `async fn`
/// would keep their space in the task too (and what the loop captures besides the connection
/// is only what it cannot get from it).
pub(crate) fn run<T: Transport>(
    transport: T,
    info: ClientInfo,
    request: Option<Box<HandshakeRequest>>,
    opening: Option<Opening>,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    slot: Option<ConnSlot>,
) -> impl Future<Output = ()> {
    let opening = opening.unwrap_or_else(|| {
        let ask = request.as_deref().map_or(Ask::Nothing, |r| frames::ask(&r.query));
        open(&gw, ask, &info)
    });
    let (handle, greeting) = match opening {
        // Callers that can close the connection instead do (`sent_elsewhere`); one that cannot
        // is served as a new client, told why it was not resumed.
        Opening::Elsewhere => {
            let asked = request.as_deref().map(|r| frames::ask(&r.query));
            let refusal = matches!(asked, Some(Ask::Resume { .. }))
                .then(|| frames::not_recovered(recovery::Reason::Unknown, frames::STOPPING));
            fresh(&gw, info, gw.state.recovery.is_some(), refusal)
        }
        Opening::Resumed(r) => {
            let client_id = gw.client_id(r.handle.id).to_string();
            let control = vec![
                frames::resumed(&client_id, r.replay.len() as u64, r.accepted),
                frames::recovery(&client_id, &r.token, r.received),
            ];
            (r.handle, Some(Box::new(Greeting { control, replay: r.replay, resumed: true })))
        }
        Opening::Fresh { recover, refusal } => fresh(&gw, info, recover, refusal),
    };
    let client_id = gw.client_id(handle.id);
    let span = tracing::debug_span!("client", client_id = %client_id);
    let mut conn =
        Connection { gw, binding: Binding::new(handle.info.clone()), handle, transport, unsettled: 0, shutdown };
    // The opening (the worker hears of the client, then it gets its control frames) and the
    // ending (the close event) are boxed: they are as large as a dispatch, and the task keeps
    // room for its largest state for the whole connection.
    let body = async move {
        let end = match Box::pin(conn.open(request, greeting)).await {
            Ok(()) => conn.run().await,
            Err(end) => end,
        };
        Box::pin(conn.finish(end)).await;
        drop(slot);
    };
    body.instrument(span)
}

/// A new client in the client map, and what it is told first (its recovery token; why it was
/// not resumed, when it asked to be).
fn fresh(
    gw: &Gateway,
    info: ClientInfo,
    recover: bool,
    refusal: Option<String>,
) -> (Arc<ClientHandle>, Option<Box<Greeting>>) {
    let id = gw.next_client.fetch_add(1, Ordering::Relaxed);
    let cell = recover.then(ClientRecovery::new_cell);
    let handle =
        Arc::new(ClientHandle::new(id, SendQueue::new(gw.config.send_queue), info, gw.clock_ms()).with_recovery(cell));
    gw.state.insert(handle.clone());
    let mut control: Vec<String> = refusal.into_iter().collect();
    if let Some(hub) = gw.state.recovery.as_ref().filter(|_| recover) {
        let client_id = gw.client_id(id);
        control.push(frames::recovery(&client_id.to_string(), &hub.token(&client_id, 0), 0));
    }
    let greeting = (!control.is_empty()).then(|| Box::new(Greeting { control, replay: Vec::new(), resumed: false }));
    (handle, greeting)
}

struct Connection<T> {
    gw: Arc<Gateway>,
    handle: Arc<ClientHandle>,
    transport: T,
    /// Which worker this client's events go to.
    binding: Binding,
    /// Messages taken from the send queue and not yet flushed to the socket. A flush counts them
    /// as written (`messages_out`); if the connection ends first they are dropped (`client_gone`).
    unsettled: u64,
    /// The gateway is stopping.
    shutdown: CancellationToken,
}

impl<T: Transport> Connection<T> {
    /// The connection's loop. A client at rest (its transport holds no buffers, nothing is
    /// being written) waits here in a small state: the task's memory is as large as its largest
    /// state for the whole connection, so everything that awaits more than the wait itself (a
    /// message to dispatch, a write to flush, a close) runs in [`active`](Self::active), boxed,
    /// until the client is at rest again (as a codec is kept until the next heartbeat, see
    /// [`Transport::at_rest`]). What needs no waiting is done here: a heartbeat answered, and
    /// frames the transport writes to the socket at once (a heartbeat ping, a broadcast to an
    /// idle client).
    async fn run(&mut self) -> End {
        // Only until the first message, so a per-connection timer is cheap here.
        let first_message = self.gw.config.first_message_timeout;
        // One timer for the whole wait, boxed: none at all when the timeout is off (the default).
        let mut first_timer = (!first_message.is_zero())
            .then(|| Box::pin(tokio::time::sleep_until(tokio::time::Instant::now() + first_message)));
        loop {
            let wake = match self.next_wake(&mut first_timer).await {
                Wake::Incoming(Ok(Incoming::Activity)) => {
                    self.handle.last_active.store(self.gw.clock_ms(), Ordering::Relaxed);
                    continue;
                }
                Wake::Ready => match self.write_at_rest() {
                    Some(wake) => wake,
                    None => continue,
                },
                wake => wake,
            };
            if let Some(end) = Box::pin(self.active(wake, &mut first_timer)).await {
                return end;
            }
        }
    }

    /// What wakes the connection next, in this order: a kill or the gateway's stop, the first
    /// message's deadline, events handed back for redelivery, items to write, then what the
    /// client sent. The gateway's stop is read from its flag, woken through the kill switch's
    /// waker (see `Gateway::stop_clients`), not waited for on the shared `shutdown` token.
    ///
    /// Polled by hand, each wait made anew on every poll (each is cancel-safe, and holds
    /// nothing between polls): this future holds two references, where a `select!` keeps every
    /// wait's state, and it is in every connection's task while the client is at rest.
    fn next_wake<'a>(
        &'a mut self,
        first_timer: &'a mut Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> impl Future<Output = Wake> + Send + 'a {
        std::future::poll_fn(move |cx| {
            let handle = &self.handle;
            if let Poll::Ready(stop) = pin!(handle.kill.cancelled_or(&self.gw.clients_stopping)).poll(cx) {
                return Poll::Ready(Wake::Stop(stop));
            }
            if let Some(timer) = first_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wake::NoFirstMessage);
            }
            if pin!(handle.redelivery.notified()).poll(cx).is_ready() {
                return Poll::Ready(Wake::Redeliver);
            }
            if pin!(handle.tx.ready()).poll(cx).is_ready() {
                return Poll::Ready(Wake::Ready);
            }
            pin!(self.transport.recv()).poll(cx).map(Wake::Incoming)
        })
    }

    /// Handles `wake`, then every wake after it, until the client is at rest again (`None`) or
    /// the connection ends.
    async fn active(&mut self, mut wake: Wake, first_timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) -> Option<End> {
        loop {
            if let Some(end) = self.on_wake(wake, first_timer).await {
                return Some(end);
            }
            if self.transport.at_rest() && self.unsettled == 0 {
                return None;
            }
            wake = self.next_wake(first_timer).await;
        }
    }

    async fn on_wake(&mut self, wake: Wake, first_timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) -> Option<End> {
        match wake {
            // Rare paths are boxed so their futures do not enlarge the active state.
            Wake::Stop(Stop::Killed) => Some(Box::pin(self.killed()).await),
            Wake::Stop(Stop::Stopping) => Some(Box::pin(self.stopping()).await),
            Wake::NoFirstMessage => {
                Box::pin(self.transport.close(1008, "no message in time")).await;
                Some(End::Server)
            }
            // A worker died holding our events: send them on now, even if the client is idle.
            Wake::Redeliver => self.redeliver().await.err().map(|_| End::Server),
            Wake::Ready => self.write_unless_killed(false).await,
            Wake::Fed(heartbeat) => self.write_unless_killed(heartbeat).await,
            Wake::Took(Taken::Close(last, close)) => {
                Box::pin(self.close_with(last, close)).await;
                Some(End::Server)
            }
            Wake::Took(Taken::Destroy) => Some(Box::pin(self.destroyed()).await),
            Wake::Took(Taken::Empty | Taken::Send(..)) => unreachable!("written at rest"),
            Wake::Ended(end) => Some(end),
            Wake::Incoming(incoming) => {
                self.handle.last_active.store(self.gw.clock_ms(), Ordering::Relaxed);
                match incoming {
                    Ok(Incoming::Message(payload)) => {
                        *first_timer = None;
                        self.on_message(payload).await.err().map(|_| End::Server)
                    }
                    Ok(Incoming::Activity) => None,
                    Err(TransportError::Closed) => Some(End::Client),
                    Err(TransportError::Vanished(e)) => {
                        tracing::debug!(error = %e, "client vanished");
                        Some(End::Vanished)
                    }
                    Err(TransportError::Violation { code, reason }) => {
                        Metrics::inc(&self.gw.state.metrics.protocol_violations);
                        tracing::debug!(code, reason = %reason, "client broke the protocol");
                        // Replies to what the client sent before the bad frame are still
                        // owed: let the worker finish those, write them, then close.
                        Box::pin(self.settle()).await;
                        Box::pin(self.transport.close(code, &reason)).await;
                        Some(End::Client)
                    }
                }
            }
        }
    }

    /// [`write`](Self::write), given up if the client is killed meanwhile.
    async fn write_unless_killed(&mut self, heartbeat: bool) -> Option<End> {
        let handle = self.handle.clone();
        tokio::select! {
            r = self.write(heartbeat) => r,
            _ = handle.kill.cancelled() => Some(Box::pin(self.killed()).await),
        }
    }

    /// Writes what waits in the send queue while the client is at rest, as long as the
    /// transport writes each frame to the socket at once (nothing to flush: a parked WebSocket
    /// client's heartbeat ping or message on a plain socket); `None` when all of it went so.
    /// Otherwise returns what the active loop is to go on with: frames fed and waiting for a
    /// flush, an item that needs more than a write, or the end.
    fn write_at_rest(&mut self) -> Option<Wake> {
        let mut heartbeat = false;
        for _ in 0..WRITE_BATCH {
            if !self.transport.written() {
                return Some(Wake::Fed(heartbeat));
            }
            let (msg, counted) = match self.take() {
                Taken::Empty => break,
                Taken::Send(msg, counted) => (msg, counted),
                other => return Some(Wake::Took(other)),
            };
            heartbeat |= !counted;
            if let Err(e) = self.feed(msg, counted) {
                tracing::debug!(error = ?e, "client write failed");
                return Some(Wake::Ended(End::Vanished));
            }
        }
        if !self.transport.written() {
            return Some(Wake::Fed(heartbeat));
        }
        // All of it is on the socket: written, as a flush counts them.
        let written = std::mem::take(&mut self.unsettled);
        self.gw.state.metrics.messages_out.fetch_add(written, Ordering::Relaxed);
        if heartbeat {
            self.transport.release_idle();
            self.handle.tx.release_idle();
        }
        None
    }

    /// The gateway is stopping: the client is closed, with 1012 when it is handed over to
    /// another gateway (it comes back there with its token).
    async fn stopping(&mut self) -> End {
        let (code, reason) = if self.handle.recovery.is_some() && self.gw.handover.is_handing_over() {
            (1012, "service restart")
        } else {
            (1001, "server shutting down")
        };
        self.transport.close(code, reason).await;
        End::Server
    }

    /// The client's first events to its worker, then its control frames and what it missed:
    /// so a client cannot come back with its new token before its worker heard of this
    /// connection.
    async fn open(
        &mut self,
        request: Option<Box<HandshakeRequest>>,
        greeting: Option<Box<Greeting>>,
    ) -> Result<(), End> {
        tracing::debug!(peer = %self.handle.info.client_addr, listener = %self.handle.info.listener, "client connected");
        let resumed = greeting.as_ref().filter(|g| g.resumed).map(|g| g.replay.len() as u64);
        let mut opened = match resumed {
            Some(replayed) => {
                // The gateway stopping meanwhile ends the wait: the client gets its new token
                // and is closed before its worker hears of the resume (then it is held and
                // handed over with the others, or released).
                let earlier = tokio::select! {
                    earlier = crate::redeliver::earlier_events(&self.gw, self.handle.id) => Some(earlier),
                    () = self.shutdown.cancelled() => None,
                };
                let Some(earlier) = earlier else {
                    if let Some(g) = greeting {
                        let Greeting { control, replay, .. } = *g;
                        if Box::pin(self.write_first(control, replay)).await.is_err() {
                            return Err(End::Vanished);
                        }
                    }
                    return Err(Box::pin(self.stopping()).await);
                };
                if let Some((link, seq)) = earlier {
                    self.binding.bind_after(link, seq);
                }
                let sent = self.dispatch(EventKind::Resume { replayed }).await;
                self.routed(sent).await.map_err(|_| End::Server)
            }
            None => {
                let sent = self.dispatch(EventKind::Connect).await;
                let mut o = self.routed(sent).await;
                if o.is_ok() && self.handle.info.protocol == Protocol::WebSocket {
                    let HandshakeRequest { path, query, headers } = request.map(|r| *r).unwrap_or_default();
                    let sent = self.dispatch(EventKind::WebSocketConnect { path, query, headers }).await;
                    o = self.routed(sent).await;
                }
                o.map_err(|_| End::Server)
            }
        };
        if let (Ok(()), Some(g)) = (&opened, greeting) {
            let Greeting { control, replay, .. } = *g;
            if Box::pin(self.write_first(control, replay)).await.is_err() {
                opened = Err(End::Vanished);
            }
        }
        opened
    }

    /// Ends the connection: counts what was not written, holds a client with recovery or
    /// sends its close event, and leaves the client map and its worker.
    async fn finish(&mut self, end: End) {
        // Every message a worker sent this client ends as written or dropped: what waits in the
        // queue and what was taken but not flushed is dropped here, as `client_gone` (for a
        // client with recovery they stay in its replay buffer, for its resume).
        let unwritten = self.handle.tx.close() + std::mem::take(&mut self.unsettled);
        let gw = self.gw.clone();
        let m = &gw.state.metrics;
        m.dropped_client_gone.fetch_add(unwritten, Ordering::Relaxed);
        Metrics::inc(match end {
            End::Client => &m.disconnects_closed,
            End::Vanished => &m.disconnects_vanished,
            End::Server => &m.disconnects_server,
        });
        tracing::debug!(
            by_client = !matches!(end, End::Server),
            vanished = matches!(end, End::Vanished),
            unwritten,
            "client disconnected"
        );
        let stays = match self.handle.recovery.clone() {
            Some(cell) => self.end_recovery(&cell, &end),
            None => false,
        };
        if !stays {
            // The close event carries the final session; deliver it even though the socket is
            // gone (a closing client waits briefly for a worker and is not interrupted, so there
            // is nothing to close when it cannot be routed).
            let _ = self.dispatch(EventKind::Close).await;
            match self.handle.recovery {
                Some(_) => gw.state.remove_closed(&self.handle),
                None => gw.state.remove(self.handle.id),
            }
        }
        self.binding.unbind();
        if stays {
            // Held: what a worker hands back meanwhile waits for the resume (or the release).
            self.handle.redelivery.park();
        } else {
            // A worker that dies from now on hands this client's events to no task: deliver what
            // is already waiting here, and let later hand-backs go the orphan way.
            let leftovers = self.handle.redelivery.close();
            if !leftovers.is_empty() {
                crate::redeliver::spawn_orphans(&gw, self.handle.info.clone(), leftovers);
            }
        }
        self.handle.kill.forget_waker();
    }

    /// Waits (briefly) until the worker acknowledged this client's events, then writes what is
    /// queued for the client. Handlers acknowledge after their sends, so the replies are queued.
    async fn settle(&mut self) {
        self.binding.acknowledged(Duration::from_secs(1)).await;
        loop {
            if self.transport.ready().await.is_err() {
                return;
            }
            let (msg, counted) = match self.take() {
                Taken::Send(msg, counted) => (msg, counted),
                Taken::Empty | Taken::Close(..) | Taken::Destroy => break,
            };
            if self.feed(msg, counted).is_err() {
                return;
            }
        }
        let _ = self.flush().await;
    }

    async fn on_message(&mut self, mut payload: Payload) -> Result<(), Unrouted> {
        if let Some(cell) = &self.handle.recovery
            && !payload.binary
            && payload.data.first() == Some(&0)
        {
            // A control frame (an ack), or data escaped with one more NUL.
            if !recovery::from_client(&self.gw.state.metrics, self.handle.id, cell, &payload.data) {
                return Ok(());
            }
            payload.data = payload.data.slice(1..);
        }
        if let Some(cell) = &self.handle.recovery
            && !recovery::accept(cell, &self.handle)
        {
            return Ok(());
        }
        let m = &self.gw.state.metrics;
        Metrics::inc(&m.messages_in);
        Metrics::inc(if payload.binary { &m.messages_in_binary } else { &m.messages_in_text });
        self.handle.bytes_in.fetch_add(payload.data.len() as u64, Ordering::Relaxed);
        let sent = self.dispatch(EventKind::Message(payload)).await;
        self.routed(sent).await
    }

    /// Writes what is queued (up to a batch), then flushes once. Items are taken from the queue
    /// here rather than handed in, and only once the transport takes them without waiting, which
    /// keeps them out of the waiting futures.
    async fn write(&mut self, mut heartbeat: bool) -> Option<End> {
        for _ in 0..WRITE_BATCH {
            if let Err(e) = self.transport.ready().await {
                tracing::debug!(error = ?e, "client write failed");
                return Some(End::Vanished);
            }
            let (msg, counted) = match self.take() {
                Taken::Empty => break,
                Taken::Send(msg, counted) => {
                    heartbeat |= !counted;
                    (msg, counted)
                }
                Taken::Close(last, close) => {
                    Box::pin(self.close_with(last, close)).await;
                    return Some(End::Server);
                }
                Taken::Destroy => return Some(Box::pin(self.destroyed()).await),
            };
            if let Err(e) = self.feed(msg, counted) {
                tracing::debug!(error = ?e, "client write failed");
                return Some(End::Vanished);
            }
        }
        if let Err(e) = self.flush().await {
            tracing::debug!(error = ?e, "client flush failed");
            return Some(End::Vanished);
        }
        if heartbeat {
            self.transport.release_idle();
            self.handle.tx.release_idle();
        }
        None
    }

    /// What was queued before a destroy goes out first (a bounded wait: the client may not be
    /// reading); then the socket is dropped without a close frame. Frames not flushed by then
    /// are counted as dropped when the connection ends.
    async fn destroyed(&mut self) -> End {
        if tokio::time::timeout(DESTROY_FLUSH, self.flush()).await.is_err() {
            tracing::debug!("destroyed client did not take its last messages in time");
        }
        End::Server
    }

    /// Flushes what was fed; on success the messages taken so far were written to the socket.
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.transport.flush().await?;
        let written = std::mem::take(&mut self.unsettled);
        self.gw.state.metrics.messages_out.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// The next queued item, its bytes taken off the queue's byte count; a message is unsettled
    /// from here until it is flushed or the connection ends.
    fn take(&mut self) -> Taken {
        match self.handle.tx.try_recv() {
            None => Taken::Empty,
            Some(Outbound::Msg(msg)) => {
                self.handle.queued_bytes.fetch_sub(msg.len(), Ordering::Relaxed);
                self.unsettled += 1;
                Taken::Send(msg, true)
            }
            Some(Outbound::Control(msg)) => Taken::Send(OutMessage::new(msg), false),
            Some(Outbound::Close { last, close }) => {
                self.unsettled += u64::from(last.is_some());
                Taken::Close(last, close)
            }
            Some(Outbound::Destroy) => Taken::Destroy,
        }
    }

    /// Feeds one frame (after [`Transport::ready`]); `counted` ones (not heartbeats) go into the
    /// client's byte counter (the gateway counts messages when they are flushed).
    fn feed(&mut self, msg: OutMessage, counted: bool) -> Result<(), TransportError> {
        let written = self.transport.feed(msg)?;
        if counted {
            self.handle.bytes_out.fetch_add(written as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes what was fed before and a worker's last message, then closes.
    async fn close_with(&mut self, last: Option<OutMessage>, close: Option<CloseReason>) {
        if let Some(msg) = last
            && self.transport.ready().await.is_ok()
        {
            let _ = self.feed(msg, true);
        }
        if self.flush().await.is_err() {
            return;
        }
        let (code, reason) = close.map(|c| (c.code, c.reason)).unwrap_or((1000, String::new()));
        self.transport.close(code, &reason).await;
    }

    async fn killed(&mut self) -> End {
        match self.handle.kill_reason() {
            KillReason::SlowConsumer => {
                // The client is not reading, so the close frame may never get out: bounded wait.
                let code = self.gw.config.slow_consumer_close_code;
                self.transport.close(code, "slow consumer: send queue full").await;
            }
            KillReason::Heartbeat => self.transport.close(1008, "no heartbeat").await,
            KillReason::Superseded => self.transport.close(4001, "resumed on another connection").await,
            KillReason::Destroy | KillReason::None => {}
        }
        End::Server
    }

    /// Writes the recovery control frames and the messages a resumed client missed, before
    /// anything else.
    async fn write_first(&mut self, control: Vec<String>, replay: Vec<OutMessage>) -> Result<(), TransportError> {
        for frame in control {
            self.transport.ready().await?;
            self.feed(OutMessage::new(Message::text(frame)), false)?;
        }
        for msg in replay {
            self.transport.ready().await?;
            self.unsettled += 1;
            self.feed(msg, true)?;
        }
        self.flush().await?;
        // A codec made to write these goes now, not at the first heartbeat.
        self.transport.release_idle();
        Ok(())
    }

    /// Where a client with recovery goes when its connection ends: held (true: it stays, with
    /// no close event) when it went away without a clean close and recovery is on; nowhere
    /// (true) when a resume took it over on another connection; otherwise it ends as any
    /// client does (false).
    fn end_recovery(&mut self, cell: &recovery::Cell, end: &End) -> bool {
        let gw = &self.gw;
        let holdable = matches!(end, End::Vanished)
            || (matches!(end, End::Server) && self.handle.kill_reason() == KillReason::Heartbeat)
            || (matches!(end, End::Server) && gw.handover.is_handing_over());
        let mut rec = cell.lock().expect("recovery lock");
        if !gw.state.is_current(&self.handle) {
            drop(rec);
            tracing::debug!("connection ended after a resume took its client over");
            gw.state.detach();
            return true;
        }
        if let Some(hub) = gw.state.recovery.as_ref().filter(|_| holdable && rec.phase == Phase::Live) {
            hub.hold(&gw.state.metrics, self.handle.id, &mut rec);
            let (kept, written) = (rec.buffer.len(), rec.buffer.written());
            drop(rec);
            tracing::debug!(kept, written, window = ?hub.window, "client held for recovery");
            gw.state.detach();
            return true;
        }
        rec.phase = Phase::Released;
        rec.buffer = Default::default();
        drop(rec);
        if let Some(hub) = &gw.state.recovery {
            hub.tombstone(
                self.handle.id,
                recovery::Reason::Expired,
                "the client's connection was closed cleanly".into(),
            );
        }
        false
    }

    async fn close(&mut self, reason: Option<CloseReason>) {
        let (code, reason) = reason.map(|c| (c.code, c.reason)).unwrap_or((1000, String::new()));
        self.transport.close(code, &reason).await;
    }

    /// Sends one event of this client's to its worker (see [`Binding::dispatch`]). A plain
    /// function handing out the binding's future: another `async` layer would keep `kind` again
    /// in every connection's task. Callers pass the result to [`routed`](Self::routed).
    fn dispatch(&mut self, kind: EventKind) -> impl Future<Output = Result<(), Unrouted>> + '_ {
        let cx = ClientCx { gw: &self.gw, handle: &self.handle, shutdown: &self.shutdown };
        self.binding.dispatch(cx, kind)
    }

    /// Closes the client, the way the reason calls for, if its event could not be routed.
    async fn routed(&mut self, sent: Result<(), Unrouted>) -> Result<(), Unrouted> {
        if let Err(e) = &sent {
            Box::pin(self.unrouted(e)).await;
        }
        sent
    }

    /// Sends on the events a dead worker handed back, even while the client is idle.
    async fn redeliver(&mut self) -> Result<(), Unrouted> {
        let cx = ClientCx { gw: &self.gw, handle: &self.handle, shutdown: &self.shutdown };
        let bound = self.binding.ensure_bound(&cx, false).await.map(drop);
        self.routed(bound).await
    }

    /// Closes the client after its event could not be routed.
    async fn unrouted(&mut self, why: &Unrouted) {
        tracing::debug!(reason = %why, "client event not routed");
        let (code, reason) = match why {
            Unrouted::ShuttingDown => (1001, "server shutting down"),
            Unrouted::NoWorker(_) => (1013, "no business worker available"),
            Unrouted::Closed => {
                self.killed().await;
                return;
            }
        };
        self.close(Some(CloseReason { code, reason: reason.into() })).await;
    }
}
