//! One client's task: its events, one at a time and in order, through the application's
//! handlers; the session written back, the event acknowledged. Handler errors and panics are
//! logged with the client id and contained.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::FutureExt;
use gw_gateway_client::{GatewayClient, GatewayLink, Session};
use gw_proto::{ClientInfo, Command, Event, EventKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::WorkerStats;
use crate::acks::Acks;
use crate::events::{Context, Events, HandlerResult, ServerData, WebSocketRequest};
use crate::session_writes::PendingWrites;

/// Where one client's task runs: the handlers, the Gateway API, and the link its events came on.
pub(crate) struct ClientTask<E> {
    pub events: Arc<E>,
    /// The handlers' Gateway API, `Some` once the worker is ready; events wait until then.
    pub ready: watch::Receiver<Option<GatewayClient>>,
    pub link: Arc<GatewayLink>,
    pub acks: Arc<Acks>,
    pub stats: Arc<WorkerStats>,
    pub client_id: String,
}

/// Handles the client's events until its queue is closed (it closed, or its link went down).
pub(crate) async fn client_task<E: Events>(task: ClientTask<E>, mut rx: mpsc::Receiver<Event>) {
    let ClientTask { events, mut ready, link, acks, stats, client_id } = task;
    // Handle nothing before the worker is ready: the events wait in this task's queue (the
    // gateway keeps them until acknowledged). A worker stopped before it was ready handles none.
    let Some(gateway) = ready.wait_for(Option::is_some).await.ok().and_then(|g| g.clone()) else {
        return;
    };
    drop(ready);
    // The client's addresses, parsed once (they come with the first event on each link).
    let mut server = server_data(None);
    // Set when on_websocket_connect closed the client: later messages are not handled.
    let mut rejected = false;
    let mut writes = PendingWrites::default();
    while let Some(event) = rx.recv().await {
        if let Some(info) = &event.info {
            server = server_data(Some(info));
        }
        stats.events.fetch_add(1, Ordering::Relaxed);
        if event.redelivered {
            stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let original = writes.catch_up(event.session_writes, parse_session(event.session.as_ref()));
        let mut ctx = Context {
            client_id: client_id.clone(),
            session: original.clone(),
            server: server.clone(),
            redelivered: event.redelivered,
            gateway: gateway.clone(),
            link: link.clone(),
            local: event.client,
            closed: rejected,
        };
        let closing = matches!(event.kind, EventKind::Close);
        match event.kind {
            EventKind::Connect => guarded("on_connect", &stats, events.on_connect(&mut ctx)).await,
            EventKind::WebSocketConnect { path, query, headers } => {
                let request = WebSocketRequest { path, query, headers };
                guarded("on_websocket_connect", &stats, events.on_websocket_connect(&mut ctx, &request)).await;
            }
            EventKind::Message(msg) if !ctx.closed => {
                guarded("on_message", &stats, events.on_message(&mut ctx, msg)).await;
            }
            EventKind::Message(_) => tracing::debug!("message after the client was closed by a handler; skipped"),
            EventKind::Close => guarded("on_close", &stats, events.on_close(&mut ctx)).await,
        }
        rejected = ctx.closed;
        if !closing && ctx.session != original {
            let (changed, removed) = session_diff(&original, &ctx.session);
            let seq = writes.record(event.session_writes, changed.clone(), removed.clone());
            write_back(&link, event.client, seq, &changed, removed).await;
        }
        acks.handled(event.seq);
    }
}

async fn guarded(what: &str, stats: &WorkerStats, handler: impl Future<Output = HandlerResult>) {
    let started = std::time::Instant::now();
    let outcome = AssertUnwindSafe(handler).catch_unwind().await;
    stats.latency.observe(started.elapsed());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "{what} handler failed");
        }
        Err(panic) => {
            stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            tracing::error!(panic = %msg, "{what} handler panicked; the worker goes on");
        }
    }
}

/// The top-level keys a handler changed (with their new values) or removed.
fn session_diff(before: &Session, after: &Session) -> (Session, Vec<String>) {
    let changed =
        after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    (changed, removed)
}

/// Sends only the top-level keys the handler changed or removed.
async fn write_back(link: &GatewayLink, client: u64, seq: u64, changed: &Session, removed: Vec<String>) {
    let changed = Bytes::from(serde_json::to_vec(changed).expect("a JSON map serializes"));
    if let Err(e) = link.command(Command::WriteBackSession { client, seq, changed, removed }).await {
        tracing::warn!(error = %e, "session write-back failed");
    }
}

fn parse_session(bytes: Option<&Bytes>) -> Session {
    match bytes.map(|b| serde_json::from_slice::<Value>(b)) {
        Some(Ok(Value::Object(m))) => m,
        _ => Session::new(),
    }
}

fn server_data(info: Option<&ClientInfo>) -> ServerData {
    ServerData {
        client_addr: info.and_then(|i| i.client_addr.parse().ok()),
        gateway_addr: info.and_then(|i| i.gateway_addr.parse().ok()),
        listener: info.map(|i| i.listener.clone()).unwrap_or_default(),
        protocol: info.map(|i| i.protocol),
    }
}
