//! The task of one Pusher connection after its WebSocket upgrade: the connect checks (a refusal
//! is a `pusher:error` with the code, then a close with the same code), then a loop that decodes
//! the client's frames, hands them to its [`Session`] and carries out the actions, and writes
//! what the cluster queued for the client (channel events, member events, closes). The client is
//! registered like any other, so commands, queries and the routing index see it. The
//! connections of a `workers = true` app are also routed to business workers, as a plain client
//! is (its `on_connect`, `on_websocket_connect`, `on_message` for what the gateway hands on, see
//! [`Action::ToWorker`], and `on_close`); the others never touch a worker link.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use gw_proto::{ClientInfo, Command, EventKind, Payload, PusherPeer};
use gw_pusher_protocol::connect::ConnectError;
use gw_pusher_protocol::{ClientFrame, ErrorCode, FrameError, ServerFrame, SocketId};
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::session::{Action, Refusal, Session};
use super::{AppSlot, Pusher, channel_group, user_uid};
use crate::Gateway;
use crate::binding::{Binding, ClientCx, Unrouted};
use crate::client_handle::{ClientHandle, KillReason, Stop};
use crate::listener::ConnSlot;
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::send_queue::{Outbound, SendQueue};
use crate::transport::{Incoming, Transport, TransportError, WsTransport};
use crate::upgrade::HandshakeRequest;

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

/// How long a destroyed client's socket may take to take what was queued before the destroy.
const DESTROY_FLUSH: Duration = Duration::from_secs(2);

/// What woke a connection's loop (see [`Conn::run`]).
enum Wake {
    Stop(Stop),
    SigninTimeout,
    /// Items wait in the send queue.
    Ready,
    /// Frames were fed while the connection was at rest and wait for a flush; `true` if one
    /// was a heartbeat.
    Fed(bool),
    /// A close or destroy taken while the connection was at rest.
    Took(Outbound),
    Redeliver,
    Incoming(Result<Incoming, TransportError>),
    /// The connection ended (a write failed).
    Ended(End),
}

/// Why the connection ended.
enum End {
    Client,
    Vanished,
    Server,
}

/// Serves one upgraded Pusher connection until it closes. Not an `async fn`, whose arguments
/// would be kept twice in the task (as arguments and as the locals they are moved into): the
/// connect checks are made here, a refusal is its own (boxed) future, and what an admitted
/// connection's task holds is its [`Conn`] and the loop's state, small enough that the client
/// task of `client.rs` carries it without a box of its own (see `pusher_memory.rs`).
pub(crate) fn serve(
    transport: WsTransport,
    info: ClientInfo,
    request: Box<HandshakeRequest>,
    gw: Arc<Gateway>,
    slot: ConnSlot,
    pusher: Arc<Pusher>,
) -> impl Future<Output = ()> + Send {
    let origin = request.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("origin")).map(|(_, v)| v.as_str());
    let app = match pusher.admit(&request.path, &request.query, origin) {
        Ok(app) => app,
        Err(refused) => {
            pusher.count_connect_refused();
            tracing::debug!(peer = %info.client_addr, code = refused.code.code(), reason = %refused.reason, "pusher connection refused");
            return Either::Left(Box::pin(refuse(transport, refused, slot)));
        }
    };
    // The worker of a `workers = true` app hears of the request (`on_websocket_connect`).
    let request = app.app().workers.then_some(request);
    let id = gw.next_client.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("pusher", client_id = %gw.client_id(id), app = %app.app().id);
    span.in_scope(|| tracing::debug!(peer = %info.client_addr, "pusher client connected"));
    let handle = Arc::new(ClientHandle::new(id, SendQueue::new(gw.config.send_queue), info, gw.clock_ms()));
    gw.state.insert(handle.clone());
    let session = Session::new(SocketId::new(gw.instance, id));
    let workers = request.is_some().then(|| Box::new(Binding::new(handle.info.clone())));
    let mut conn = Conn { gw, app, handle, transport, session, unsettled: 0, workers };
    let body = async move {
        let opened = match request {
            Some(request) => Box::pin(conn.worker_connect(*request)).await,
            None => Ok(()),
        };
        let end = match opened {
            Ok(()) => conn.run().await,
            Err(end) => end,
        };
        let gw = conn.gw.clone();
        let unwritten = conn.handle.tx.close() + std::mem::take(&mut conn.unsettled);
        let m = &gw.state.metrics;
        m.dropped_client_gone.fetch_add(unwritten, Ordering::Relaxed);
        Metrics::inc(match end {
            End::Client => &m.disconnects_closed,
            End::Vanished => &m.disconnects_vanished,
            End::Server => &m.disconnects_server,
        });
        for action in conn.session.closing() {
            conn.apply_silent(action);
        }
        if conn.workers.is_some() {
            Box::pin(conn.worker_close()).await;
        }
        gw.state.remove(conn.handle.id);
        conn.handle.kill.forget_waker();
        tracing::debug!(by_client = !matches!(end, End::Server), unwritten, "pusher client disconnected");
        drop(slot);
    };
    Either::Right(body.instrument(span))
}

/// A refused connection: `pusher:error` with the code, then a close with the same code.
async fn refuse(mut transport: WsTransport, refused: ConnectError, slot: ConnSlot) {
    let frame = ServerFrame::Error { code: Some(refused.code), message: &refused.reason }.encode();
    if transport.ready().await.is_ok() && transport.feed(OutMessage::new(Message::text(frame))).is_ok() {
        let _ = transport.flush().await;
    }
    // The detail went in the error frame; a close reason must fit in 123 bytes.
    transport.close(refused.code.code(), refused.code.description()).await;
    drop(slot);
}

/// An admitted connection: what its task holds between frames, with the loop's state.
struct Conn {
    gw: Arc<Gateway>,
    /// Its app, and the apps' shared state.
    app: AppSlot,
    handle: Arc<ClientHandle>,
    transport: WsTransport,
    session: Session,
    /// Messages taken from the send queue and not yet flushed.
    unsettled: u64,
    /// A `workers = true` app's connection: its route to business workers (boxed: most
    /// connections have none).
    workers: Option<Box<Binding>>,
}

impl Conn {
    fn pusher(&self) -> &Pusher {
        &self.app.pusher
    }

    async fn run(&mut self) -> End {
        // Once per connection, boxed like every path the idle loop does not wait in: the
        // task is as large as its largest state.
        let activity = u32::try_from(self.pusher().config.activity_timeout.as_secs()).unwrap_or(u32::MAX);
        let established = self.session.established(activity);
        if Box::pin(self.send_now(established)).await.is_err() {
            return End::Vanished;
        }
        // `user_authentication`: one timer until the connection signs in (none otherwise).
        let app = self.app.app();
        let mut signin = app.user_authentication.then(|| Box::pin(tokio::time::sleep(app.signin_timeout)));
        // At rest, the connection waits here in a small state; whatever needs more than the
        // wait runs boxed in `active` until it is at rest again (as `client.rs` does).
        loop {
            let wake = match self.next_wake(&mut signin).await {
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
            if let Some(end) = Box::pin(self.active(wake, &mut signin)).await {
                return end;
            }
        }
    }

    /// What wakes the connection next, in this order: a kill or the gateway's stop, the
    /// sign-in deadline, items to write, events handed back, then what the client sent. Polled
    /// by hand, each wait made anew on every poll (see `client.rs`, `Connection::next_wake`).
    fn next_wake<'a>(
        &'a mut self,
        signin: &'a mut Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> impl Future<Output = Wake> + Send + 'a {
        if signin.is_some() && self.session.signed_in() {
            *signin = None;
        }
        std::future::poll_fn(move |cx| {
            let handle = &self.handle;
            // The gateway's stop is read from its flag, woken through the kill switch (as for
            // every client, see `Gateway::stop_clients`).
            if let Poll::Ready(stop) = pin!(handle.kill.cancelled_or(&self.gw.clients_stopping)).poll(cx) {
                return Poll::Ready(Wake::Stop(stop));
            }
            if let Some(timer) = signin
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wake::SigninTimeout);
            }
            if pin!(handle.tx.ready()).poll(cx).is_ready() {
                return Poll::Ready(Wake::Ready);
            }
            if self.workers.is_some() && pin!(handle.redelivery.notified()).poll(cx).is_ready() {
                return Poll::Ready(Wake::Redeliver);
            }
            pin!(self.transport.recv()).poll(cx).map(Wake::Incoming)
        })
    }

    /// Handles `wake`, then every wake after it, until the connection is at rest again
    /// (`None`) or it ends.
    async fn active(&mut self, mut wake: Wake, signin: &mut Option<Pin<Box<tokio::time::Sleep>>>) -> Option<End> {
        loop {
            if let Some(end) = self.on_wake(wake).await {
                return Some(end);
            }
            if self.transport.at_rest() && self.unsettled == 0 {
                return None;
            }
            wake = self.next_wake(signin).await;
        }
    }

    async fn on_wake(&mut self, wake: Wake) -> Option<End> {
        match wake {
            // Rare paths are boxed.
            Wake::Stop(Stop::Killed) => Some(Box::pin(self.killed()).await),
            Wake::Stop(Stop::Stopping) => {
                let code = ErrorCode::ReconnectImmediately;
                Box::pin(self.transport.close(code.code(), "server shutting down")).await;
                Some(End::Server)
            }
            Wake::SigninTimeout => Some(Box::pin(self.signin_timed_out()).await),
            Wake::Ready => self.write(false).await,
            Wake::Fed(heartbeat) => self.write(heartbeat).await,
            Wake::Took(Outbound::Close { last, close }) => {
                Box::pin(self.close_with(last, close)).await;
                Some(End::Server)
            }
            Wake::Took(Outbound::Destroy) => Some(Box::pin(self.destroyed()).await),
            Wake::Took(Outbound::Msg(_) | Outbound::Control(_)) => unreachable!("written at rest"),
            Wake::Ended(end) => Some(end),
            Wake::Redeliver => {
                // A worker died holding this connection's events: send them on now.
                match Box::pin(self.redeliver()).await {
                    Ok(()) => None,
                    Err(e) => Some(Box::pin(self.unrouted(&e)).await),
                }
            }
            Wake::Incoming(incoming) => {
                self.handle.last_active.store(self.gw.clock_ms(), Ordering::Relaxed);
                match incoming {
                    Ok(Incoming::Message(payload)) => {
                        // Boxed: a client's frames are rare next to what it is sent.
                        if let Some(end) = Box::pin(self.on_message(payload)).await {
                            return Some(end);
                        }
                        // And so its codec (buffers) goes once the input is read, not at the
                        // next heartbeat.
                        self.transport.release_when_drained();
                        None
                    }
                    Ok(Incoming::Activity) => None,
                    Err(TransportError::Closed) => Some(End::Client),
                    Err(TransportError::Vanished(e)) => {
                        tracing::debug!(error = %e, "pusher client vanished");
                        Some(End::Vanished)
                    }
                    Err(TransportError::Violation { code, reason }) => {
                        Metrics::inc(&self.gw.state.metrics.protocol_violations);
                        tracing::debug!(code, reason = %reason, "pusher client broke the WebSocket protocol");
                        Box::pin(self.transport.close(code, &reason)).await;
                        Some(End::Client)
                    }
                }
            }
        }
    }

    /// Writes what waits in the send queue while the connection is at rest, as long as the
    /// transport writes each frame to the socket at once; `None` when all of it went so
    /// (see `client.rs`, `Connection::write_at_rest`).
    fn write_at_rest(&mut self) -> Option<Wake> {
        let mut heartbeat = false;
        for _ in 0..WRITE_BATCH {
            if !self.transport.written() {
                return Some(Wake::Fed(heartbeat));
            }
            let msg = match self.take() {
                None => break,
                Some(Ok(msg)) => msg,
                Some(Err(other)) => return Some(Wake::Took(other)),
            };
            heartbeat |= msg.1;
            if !self.feed(msg.0) {
                return Some(Wake::Ended(End::Vanished));
            }
        }
        if !self.transport.written() {
            return Some(Wake::Fed(heartbeat));
        }
        self.settle();
        if heartbeat {
            self.transport.release_idle();
            self.handle.tx.release_idle();
        }
        None
    }

    /// The next message to write (and whether it is a heartbeat), or the close or destroy
    /// taken instead.
    fn take(&mut self) -> Option<Result<(OutMessage, bool), Outbound>> {
        Some(match self.handle.tx.try_recv()? {
            Outbound::Msg(msg) => {
                self.handle.queued_bytes.fetch_sub(msg.len(), Ordering::Relaxed);
                self.unsettled += 1;
                Ok((msg, false))
            }
            Outbound::Control(msg) => Ok((OutMessage::new(msg), true)),
            other => Err(other),
        })
    }

    /// Feeds one frame; false if the transport failed.
    fn feed(&mut self, msg: OutMessage) -> bool {
        match self.transport.feed(msg) {
            Ok(n) => {
                self.handle.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// A `workers = true` app's connection is introduced to a worker: `on_connect`, then
    /// `on_websocket_connect` with the request (path `/app/{key}`, query, headers), before
    /// `pusher:connection_established`; it is closed (as [`unrouted`](Self::unrouted) says) if no
    /// worker takes it.
    async fn worker_connect(&mut self, request: HandshakeRequest) -> Result<(), End> {
        let HandshakeRequest { path, query, headers } = request;
        for kind in [EventKind::Connect, EventKind::WebSocketConnect { path, query, headers }] {
            if let Err(e) = self.dispatch(kind).await {
                return Err(self.unrouted(&e).await);
            }
        }
        Ok(())
    }

    /// Sends one of this connection's events to its worker (none without `workers = true`).
    async fn dispatch(&mut self, kind: EventKind) -> Result<(), Unrouted> {
        let Some(binding) = self.workers.as_mut() else { return Ok(()) };
        let cx = ClientCx { gw: &self.gw, handle: &self.handle, shutdown: &self.gw.clients_down };
        binding.dispatch(cx, kind).await
    }

    /// Sends on the events a dead worker handed back.
    async fn redeliver(&mut self) -> Result<(), Unrouted> {
        let Some(binding) = self.workers.as_mut() else { return Ok(()) };
        let cx = ClientCx { gw: &self.gw, handle: &self.handle, shutdown: &self.gw.clients_down };
        binding.ensure_bound(&cx, false).await.map(drop)
    }

    /// The connection's worker hears it closed (`on_close`), and the binding goes; events a
    /// dead worker hands back from now on are delivered without this task.
    async fn worker_close(&mut self) {
        let _ = self.dispatch(EventKind::Close).await;
        if let Some(binding) = self.workers.as_mut() {
            binding.unbind();
        }
        let leftovers = self.handle.redelivery.close();
        if !leftovers.is_empty() {
            crate::redeliver::spawn_orphans(&self.gw, self.handle.info.clone(), leftovers);
        }
    }

    /// Closes the connection after one of its events could not be routed to a worker: no
    /// worker within the hold time is 4100 (reconnect after backing off), as Pusher's "over
    /// capacity", with a `pusher:error` saying why.
    async fn unrouted(&mut self, why: &Unrouted) -> End {
        tracing::debug!(reason = %why, "pusher client event not routed");
        match why {
            Unrouted::Closed => return self.killed().await,
            Unrouted::ShuttingDown => {
                self.transport.close(ErrorCode::ReconnectImmediately.code(), "server shutting down").await;
            }
            Unrouted::NoWorker(_) => {
                let (code, message) = (ErrorCode::OverCapacity, "no business worker available");
                let _ = self.send_now(ServerFrame::Error { code: Some(code), message }.encode()).await;
                self.transport.close(code.code(), message).await;
            }
        }
        End::Server
    }

    /// `user_authentication` and no sign-in within the app's `signin_timeout`: 4009.
    async fn signin_timed_out(&mut self) -> End {
        let code = ErrorCode::Unauthorized;
        let reason = "Connection not authorized within timeout";
        self.pusher().count(Refusal::BadSignin);
        let _ = self.send_now(ServerFrame::Error { code: Some(code), message: reason }.encode()).await;
        self.transport.close(code.code(), reason).await;
        End::Server
    }

    async fn on_message(&mut self, payload: Payload) -> Option<End> {
        let m = &self.gw.state.metrics;
        Metrics::inc(&m.messages_in);
        Metrics::inc(if payload.binary { &m.messages_in_binary } else { &m.messages_in_text });
        self.handle.bytes_in.fetch_add(payload.data.len() as u64, Ordering::Relaxed);
        let frame = match (payload.binary, std::str::from_utf8(&payload.data)) {
            (false, Ok(text)) => ClientFrame::decode(text, &self.app.pusher.limits),
            _ => Err(FrameError::Malformed("binary frames are not part of the Pusher protocol".into())),
        };
        let now = tokio::time::Instant::now().into_std();
        let (pusher, state) = (&*self.app.pusher, &self.gw.state);
        // A subscription shares its channel's name with the routing index.
        let intern = |group: &str| state.index().group_name(group).unwrap_or_else(|| Arc::from(group));
        let actions = self.session.handle(frame, self.app.app(), &pusher.limits, now, &intern);
        for action in actions {
            match action {
                Action::Send(text) => {
                    if self.send_now(text).await.is_err() {
                        return Some(End::Vanished);
                    }
                }
                Action::PresenceJoin { channel, member } => {
                    if let Some(refused) = self.presence_join(&channel, member.0)
                        && self.send_now(refused).await.is_err()
                    {
                        return Some(End::Vanished);
                    }
                }
                Action::Close(code, reason) => {
                    let _ = self.transport.flush().await;
                    self.transport.close(code.code(), &reason).await;
                    return Some(End::Server);
                }
                Action::ToWorker => {
                    if let Err(e) = self.dispatch(EventKind::Message(payload.clone())).await {
                        return Some(self.unrouted(&e).await);
                    }
                }
                other => self.apply_silent(other),
            }
        }
        None
    }

    /// Carries out an action that writes nothing to this client.
    fn apply_silent(&self, action: Action) {
        let (pusher, index) = (self.pusher(), self.app.index);
        let app_id = &pusher.app(index).id;
        let id = self.handle.id;
        match action {
            Action::Join(channel) => {
                self.gw.state.index_mut().join_shared(id, channel.group().clone());
                pusher.occupy(&self.gw, index, channel.name(), id);
            }
            Action::Leave(channel) => {
                self.gw.state.index_mut().leave(id, channel.group());
                pusher.vacate(&self.gw, index, channel.name(), id);
            }
            Action::PresenceLeave { channel, user_id } => {
                // The user's last connection here: the channel's home decides whether the user
                // left the cluster's channel (docs/pusher.md §5).
                let channel = channel.name();
                let mut presence = pusher.presence.lock().expect("presence lock");
                pusher.cluster.stop_waiting(id, index, channel, None);
                if presence.leave(index, channel, id, &user_id) {
                    let gateway = self.gw.address.clone();
                    let msg = PusherPeer::Leave { gateway, app: app_id.clone(), channel: channel.into(), user_id };
                    pusher.cluster.to_home(&self.gw, pusher, app_id, channel, msg);
                }
                drop(presence);
            }
            Action::Webhook(event) => pusher.webhooks.send(index, event),
            Action::Publish { channel, frame } => self.publish_everywhere(&channel, frame),
            Action::SignedIn(user) => self.gw.state.index_mut().bind_uid(id, user_uid(app_id, &user)),
            Action::Count(refusal) => pusher.count(refusal),
            Action::Send(_) | Action::PresenceJoin { .. } | Action::Close(..) | Action::ToWorker => {}
        }
    }

    /// Adds this connection to a presence channel here and asks the channel's home for the
    /// member list (docs/pusher.md §5): the home decides whether the user is new to the
    /// cluster's channel (`member_added` to every gateway holding it) and answers with the list,
    /// in order with the member events; the connection joins the channel's group when the list
    /// arrives (`cluster.rs`). Returns the frame for this client when it is refused at once (the
    /// channel's users here are already at the cap).
    fn presence_join(&mut self, channel: &str, member: gw_pusher_protocol::presence::Member) -> Option<String> {
        let pusher = &*self.app.pusher;
        let app = pusher.app(self.app.index);
        let id = self.handle.id;
        let user_id = member.user_id.clone();
        let user_info = member.user_info.as_ref().map(|i| i.get().to_string());
        let mut presence = pusher.presence.lock().expect("presence lock");
        if let Err(full) = presence.join(self.app.index, channel, id, member, app.max_presence_members) {
            drop(presence);
            self.session.refused(channel);
            pusher.count(Refusal::PresenceFull);
            let message =
                format!("Subscription to {channel:?} refused: the channel has {} members, the most allowed", full.max);
            return Some(ServerFrame::Error { code: None, message: &message }.encode());
        }
        pusher.occupy(&self.gw, self.app.index, channel, id);
        let (seq, answer) = pusher.cluster.wait(id, self.app.index, channel);
        let wait =
            super::Wait { client: id, app: self.app.index, channel: channel.to_string(), user_id: user_id.clone() };
        let span = tracing::debug_span!("presence_wait", channel = %channel);
        tokio::spawn(super::watch_wait(self.gw.clone(), self.app.pusher.clone(), wait, seq, answer).instrument(span));
        let msg = PusherPeer::Join {
            gateway: self.gw.address.clone(),
            app: app.id.clone(),
            channel: channel.to_string(),
            user_id,
            user_info,
            waiting: Some(id),
            resync: false,
        };
        pusher.cluster.to_home(&self.gw, pusher, &app.id, channel, msg);
        drop(presence);
        None
    }

    /// A client event: to the channel's subscribers here (the sender excepted) and on every
    /// other gateway of the cluster (in order, over the gateway-to-gateway links).
    fn publish_everywhere(&self, channel: &str, frame: String) {
        let group = channel_group(&self.app.app().id, channel);
        let msg = Payload { data: Bytes::from(frame), binary: false };
        let elsewhere = Command::SendToGroups { groups: vec![group.clone()], msg: msg.clone(), exclude: vec![] };
        self.gw.mesh.to_peers(&self.gw.state.metrics, &elsewhere);
        self.gw.state.execute(Command::SendToGroups { groups: vec![group], msg, exclude: vec![self.handle.id] });
    }

    /// Writes one frame to this client now, ahead of what is queued for it (answers to its own
    /// frames: a subscription's success comes before the channel's events).
    async fn send_now(&mut self, text: String) -> Result<(), TransportError> {
        self.transport.ready().await?;
        let written = self.transport.feed(OutMessage::new(Message::text(text)))?;
        self.handle.bytes_out.fetch_add(written as u64, Ordering::Relaxed);
        self.transport.flush().await?;
        self.settle();
        Ok(())
    }

    /// Counts what was taken from the queue as written, after a flush.
    fn settle(&mut self) {
        let written = std::mem::take(&mut self.unsettled);
        self.gw.state.metrics.messages_out.fetch_add(written, Ordering::Relaxed);
    }

    /// Writes what is queued (up to a batch), then flushes once.
    async fn write(&mut self, mut heartbeat: bool) -> Option<End> {
        for _ in 0..WRITE_BATCH {
            if self.transport.ready().await.is_err() {
                return Some(End::Vanished);
            }
            let msg = match self.take() {
                None => break,
                Some(Ok((msg, beat))) => {
                    heartbeat |= beat;
                    msg
                }
                // Rare paths, boxed (see `run`).
                Some(Err(Outbound::Destroy)) => return Some(Box::pin(self.destroyed()).await),
                Some(Err(Outbound::Close { last, close })) => {
                    Box::pin(self.close_with(last, close)).await;
                    return Some(End::Server);
                }
                Some(Err(Outbound::Msg(_) | Outbound::Control(_))) => unreachable!("taken as messages"),
            };
            if !self.feed(msg) {
                return Some(End::Vanished);
            }
        }
        if self.transport.flush().await.is_err() {
            return Some(End::Vanished);
        }
        self.settle();
        if heartbeat {
            self.transport.release_idle();
            self.handle.tx.release_idle();
        }
        None
    }

    /// Writes what was queued before a destroy (a bounded wait), then ends without a close.
    async fn destroyed(&mut self) -> End {
        if let Ok(Ok(())) = tokio::time::timeout(DESTROY_FLUSH, self.transport.flush()).await {
            self.settle();
        }
        End::Server
    }

    /// Writes what was fed before and a worker's (or the API's) last message, then closes.
    async fn close_with(&mut self, last: Option<OutMessage>, close: Option<gw_proto::CloseReason>) {
        if let Some(msg) = last {
            self.unsettled += 1;
            let _ = self.transport.feed(msg);
        }
        if self.transport.flush().await.is_ok() {
            self.settle();
        }
        let (code, reason) = close.map(|c| (c.code, c.reason)).unwrap_or((1000, String::new()));
        self.transport.close(code, &reason).await;
    }

    async fn killed(&mut self) -> End {
        match self.handle.kill_reason() {
            KillReason::Heartbeat => {
                let code = ErrorCode::PongNotReceived;
                self.transport.close(code.code(), code.description()).await;
            }
            KillReason::SlowConsumer => {
                let code = self.gw.config.slow_consumer_close_code;
                self.transport.close(code, "slow consumer: send queue full").await;
            }
            // Pusher connections do not opt in to recovery, so none is superseded by a resume.
            KillReason::Destroy | KillReason::None | KillReason::Superseded => {}
        }
        End::Server
    }
}
