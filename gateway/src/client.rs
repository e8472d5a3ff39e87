//! One WebSocket client: handshake, then a loop that forwards the client's messages to its worker
//! and writes what workers send back, until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gw_proto::{ClientInfo, CloseReason, Event, EventKind, Payload, Protocol};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::metrics::Metrics;
use crate::router::{LinkGone, WorkerLink};
use crate::state::{ClientHandle, KillReason, Outbound};

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a close handshake may take before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of outgoing frames collected before tungstenite writes them to the socket.
const WRITE_BUFFER: usize = 16 * 1024;

/// Lets `feed` collect frames and `flush` write them with one syscall. With a write buffer of 0,
/// every frame is its own `send`, and those sends were most of the gateway's CPU time under load
/// (see BENCHMARKS.md). The buffer is only a threshold: memory grows only while frames wait.
fn write_batching(config: WebSocketConfig) -> WebSocketConfig {
    let size = WRITE_BUFFER.min(config.max_write_buffer_size / 2);
    config.write_buffer_size(size)
}

/// What the WebSocket handshake request carried, for `on_websocket_connect`.
#[derive(Debug, Default)]
struct HandshakeRequest {
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

/// Why the connection loop ended.
enum End {
    /// The client closed or the socket failed.
    Client,
    /// We closed it (worker command, shutdown, slow consumer).
    Server,
}

pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, gw: Arc<Gateway>, shutdown: CancellationToken) {
    stream.set_nodelay(true).ok();
    let mut request: Option<HandshakeRequest> = None;
    // The callback's signature (and its large error type) is tokio-tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        request = Some(HandshakeRequest {
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            headers,
        });
        Ok(resp)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(write_batching(gw.ws_config)));
    let ws = match tokio::time::timeout(gw.config.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            Metrics::inc(&gw.state.metrics.handshake_failures);
            tracing::debug!(error = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            Metrics::inc(&gw.state.metrics.handshake_failures);
            tracing::debug!("websocket handshake timed out");
            return;
        }
    };
    let HandshakeRequest { path, query, headers } = request.unwrap_or_default();
    let id = gw.next_client.fetch_add(1, Ordering::Relaxed);
    let client_id = gw.client_id(id);
    let span = tracing::debug_span!("client", client_id = %client_id);
    let _g = span.enter();
    tracing::debug!(peer = %peer, path = %path, "client connected");
    drop(_g);

    let (tx, rx) = mpsc::channel(gw.config.send_queue);
    let info = ClientInfo {
        client_addr: peer.to_string(),
        gateway_addr: gw.public_addr.to_string(),
        listener: format!("websocket://{}", gw.public_addr),
        protocol: Protocol::WebSocket,
    };
    let handle = Arc::new(ClientHandle::new(id, tx, info));
    gw.state.insert(handle.clone());
    let mut conn = Connection {
        gw: gw.clone(),
        handle,
        ws,
        rx,
        bound: None,
        info_sent: false,
        last_seq: 0,
        shutdown: shutdown.clone(),
    };
    let opening = async {
        conn.dispatch(EventKind::Connect).await?;
        conn.dispatch(EventKind::WebSocketConnect { path, query, headers }).await
    };
    let end = match opening.await {
        Ok(()) => conn.run(&shutdown).await,
        Err(()) => End::Server,
    };
    tracing::debug!(client_id = %client_id, by_client = matches!(end, End::Client), "client disconnected");
    // The close event carries the final session; deliver it even though the socket is gone.
    let _ = conn.dispatch(EventKind::Close).await;
    conn.unbind();
    gw.state.remove(id);
    // A worker that died from now on hands this client's events to no task: deliver what is
    // already waiting here, and let later hand-backs go the orphan way.
    let leftovers = conn.handle.close_redelivery();
    if !leftovers.is_empty() {
        tokio::spawn(crate::redeliver::deliver_orphans(gw.clone(), leftovers));
    }
}

struct Connection {
    gw: Arc<Gateway>,
    handle: Arc<ClientHandle>,
    ws: WebSocketStream<TcpStream>,
    rx: mpsc::Receiver<Outbound>,
    bound: Option<Arc<WorkerLink>>,
    /// Whether the bound worker already has this client's info.
    info_sent: bool,
    /// Sequence number of the last event queued on the bound link.
    last_seq: u64,
    /// The gateway is stopping.
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(&mut self, shutdown: &CancellationToken) -> End {
        let kill = self.handle.kill.clone();
        loop {
            tokio::select! {
                biased;
                _ = kill.cancelled() => return self.killed().await,
                _ = shutdown.cancelled() => {
                    self.close(Some(CloseReason { code: 1001, reason: "server shutting down".into() })).await;
                    return End::Server;
                }
                _ = self.handle.redeliver.notified() => {
                    // A worker died holding our events: send them on now, even if the client is idle.
                    if self.ensure_bound(false).await.is_err() {
                        return End::Server;
                    }
                }
                out = self.rx.recv() => {
                    let Some(out) = out else { return End::Server };
                    let write = self.write(out);
                    let done = tokio::select! {
                        r = write => r,
                        _ = kill.cancelled() => return self.killed().await,
                    };
                    if let Some(end) = done {
                        return end;
                    }
                }
                msg = self.ws.next() => {
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            let data = bytes::Bytes::from(t);
                            if self.on_message(Payload { data, binary: false }).await.is_err() {
                                return End::Server;
                            }
                        }
                        Some(Ok(Message::Binary(b))) => {
                            if self.on_message(Payload { data: b, binary: true }).await.is_err() {
                                return End::Server;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return End::Client,
                        Some(Ok(_)) => {} // ping/pong: tungstenite answers pings on the next read
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "client read failed");
                            return End::Client;
                        }
                    }
                }
            }
        }
    }

    async fn on_message(&mut self, payload: Payload) -> Result<(), ()> {
        let m = &self.gw.state.metrics;
        Metrics::inc(&m.messages_in);
        Metrics::inc(if payload.binary { &m.messages_in_binary } else { &m.messages_in_text });
        self.handle.bytes_in.fetch_add(payload.data.len() as u64, Ordering::Relaxed);
        self.dispatch(EventKind::Message(payload)).await
    }

    /// Writes one outbound item and whatever else is already queued, then flushes once.
    async fn write(&mut self, first: Outbound) -> Option<End> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            match out {
                Outbound::Msg(msg) => {
                    if let Err(e) = self.feed(msg).await {
                        tracing::debug!(error = %e, "client write failed");
                        return Some(End::Client);
                    }
                }
                Outbound::Close { last, close } => {
                    if let Some(msg) = last {
                        let _ = self.feed(msg).await;
                    }
                    self.close(close).await;
                    return Some(End::Server);
                }
            }
            n += 1;
            if n < WRITE_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        if let Err(e) = self.ws.flush().await {
            tracing::debug!(error = %e, "client flush failed");
            return Some(End::Client);
        }
        None
    }

    async fn feed(&mut self, msg: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let len = msg.len() as u64;
        self.ws.feed(msg).await?;
        self.handle.bytes_out.fetch_add(len, Ordering::Relaxed);
        Metrics::inc(&self.gw.state.metrics.messages_out);
        Ok(())
    }

    async fn killed(&mut self) -> End {
        match self.handle.kill_reason() {
            KillReason::SlowConsumer => {
                // The client is not reading, so the close frame may never get out: bounded wait.
                self.close(Some(CloseReason { code: 1008, reason: "slow consumer: send queue full".into() })).await;
            }
            KillReason::Destroy | KillReason::None => {}
        }
        End::Server
    }

    /// Sends a close frame (1000 unless a code is given) and waits briefly for the client's answer.
    async fn close(&mut self, reason: Option<CloseReason>) {
        let frame = Some(match reason {
            Some(r) => CloseFrame { code: CloseCode::from(r.code), reason: r.reason.into() },
            None => CloseFrame { code: CloseCode::Normal, reason: "".into() },
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            self.ws.close(frame).await?;
            while let Some(msg) = self.ws.next().await {
                msg?;
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
    }

    /// Sends one event to this client's worker, binding or re-binding as needed. Waits (without
    /// reading more from the client) while no worker is connected, up to the configured hold time;
    /// past it the client is told with close code 1013 and the event is counted as dropped.
    async fn dispatch(&mut self, kind: EventKind) -> Result<(), ()> {
        let closing = matches!(kind, EventKind::Close);
        let mut kind = kind;
        loop {
            let link = self.ensure_bound(closing).await?;
            let event = Event {
                seq: 0, // numbered when queued on the link
                client: self.handle.id,
                kind,
                info: (!self.info_sent).then(|| (*self.handle.info).clone()),
                session: self.handle.session(),
                redelivered: false,
            };
            match link.send_event(event, &self.handle.info).await {
                Ok(seq) => {
                    self.last_seq = seq;
                    self.info_sent = true;
                    Metrics::inc(&self.gw.state.metrics.events_sent);
                    return Ok(());
                }
                Err(LinkGone(event)) => kind = event.kind,
            }
        }
    }

    /// The link to send on: the bound one while it is usable and nothing awaits redelivery;
    /// otherwise switch workers. A switch keeps this client's events in order: first wait until
    /// the old worker acknowledged what it was given (a draining worker finishes its events) or
    /// its link is gone and has handed the rest back; then send the handed-back events, then new
    /// ones.
    async fn ensure_bound(&mut self, closing: bool) -> Result<Arc<WorkerLink>, ()> {
        loop {
            let pending = self.handle.redelivery_pending.load(std::sync::atomic::Ordering::Acquire);
            if let Some(l) = self.bound.as_ref().filter(|l| l.usable())
                && !pending
            {
                return Ok(l.clone());
            }
            if let Some(old) = self.bound.clone() {
                if !old.usable() {
                    self.wait_for_previous(&old).await;
                    self.unbind();
                }
            }
            let link = match self.bound.clone() {
                Some(l) => l,
                None => self.pick_worker(closing).await?,
            };
            let events = self.handle.take_redelivery();
            let mut events = events.into_iter();
            let mut moved_on = false;
            while let Some(mut event) = events.next() {
                if !self.info_sent {
                    event.info = Some((*self.handle.info).clone());
                }
                match link.send_event(event, &self.handle.info).await {
                    Ok(seq) => {
                        self.last_seq = seq;
                        self.info_sent = true;
                        Metrics::inc(&self.gw.state.metrics.events_sent);
                    }
                    Err(LinkGone(event)) => {
                        // The new worker went away too: keep the rest for the next one.
                        let mut rest = vec![event];
                        rest.extend(events);
                        self.handle.requeue_front(rest);
                        moved_on = true;
                        break;
                    }
                }
            }
            if !moved_on {
                return Ok(link);
            }
        }
    }

    /// Waits until the previous worker acknowledged this client's last event, or its link is gone
    /// and has handed unacknowledged events back.
    async fn wait_for_previous(&self, old: &WorkerLink) {
        let mut acked = old.acked();
        let limit = tokio::time::Instant::now() + self.gw.config.grace_period + Duration::from_secs(10);
        loop {
            if old.gone.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(5), old.handed_off.cancelled()).await;
                return;
            }
            if *acked.borrow_and_update() >= self.last_seq {
                return;
            }
            tokio::select! {
                _ = acked.changed() => {}
                _ = old.gone.cancelled() => {}
                _ = tokio::time::sleep_until(limit) => {
                    tracing::warn!(worker = %old.name, "previous worker never acknowledged; moving on");
                    return;
                }
            }
        }
    }

    async fn pick_worker(&mut self, closing: bool) -> Result<Arc<WorkerLink>, ()> {
        loop {
            if let Some(l) = self.gw.router.pick() {
                self.bind(l.clone());
                return Ok(l);
            }
            let wait = if closing { Duration::from_millis(500) } else { self.gw.config_worker_wait() };
            let waited = tokio::select! {
                r = tokio::time::timeout(wait, self.gw.router.wait_for_worker()) => r.is_ok(),
                _ = self.shutdown.cancelled(), if !closing => {
                    self.close(Some(CloseReason { code: 1001, reason: "server shutting down".into() })).await;
                    return Err(());
                }
                _ = self.handle.kill.cancelled(), if !closing => {
                    self.killed().await;
                    return Err(());
                }
            };
            if !waited {
                Metrics::inc(&self.gw.state.metrics.dropped_no_worker);
                tracing::warn!("no business worker available; event dropped");
                if !closing {
                    self.close(Some(CloseReason { code: 1013, reason: "no business worker available".into() })).await;
                }
                return Err(());
            }
        }
    }

    fn bind(&mut self, link: Arc<WorkerLink>) {
        self.unbind();
        link.load.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(worker = %link.name, "client bound to worker");
        self.bound = Some(link);
        self.info_sent = false;
        self.last_seq = 0;
    }

    fn unbind(&mut self) {
        if let Some(old) = self.bound.take() {
            old.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
