//! The application's side: the `Events` trait and what each handler gets.

use std::future::Future;
use std::net::SocketAddr;

use gw_daemon::MetricFamily;
use gw_gateway_client::{ClientError, ClientId, CloseReason, GatewayClient, Payload, Session};
use gw_gateway_links::GatewayLink;
use gw_proto::{Command, Protocol};
use std::sync::Arc;

/// A message from a client: its bytes and whether it came as a binary frame.
pub type Message = Payload;

/// What a handler returns. An error is logged with the client id; the worker goes on serving.
pub type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The application: GatewayWorker's `Events` class as an async trait. Every method has a default
/// that does nothing, except `on_message`.
///
/// Events of one client run one at a time, in order (connect → websocket connect → messages →
/// close); events of different clients run concurrently.
///
/// # Examples
///
/// ```
/// use gw_business_worker::{Context, Events, HandlerResult, Message};
///
/// struct Echo;
///
/// impl Events for Echo {
///     async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
///         ctx.send(msg).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait Events: Send + Sync + 'static {
    /// Once per worker process, before any client event.
    fn on_worker_start(&self, worker: &WorkerContext) -> impl Future<Output = ()> + Send {
        let _ = worker;
        async {}
    }

    /// A client connected (TCP accepted).
    fn on_connect(&self, ctx: &mut Context) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// The WebSocket handshake completed. Closing the client here (for example with
    /// [`Context::close_with`]) rejects it: no `on_message` runs for it afterwards.
    fn on_websocket_connect(
        &self,
        ctx: &mut Context,
        request: &WebSocketRequest,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, request);
        async { Ok(()) }
    }

    /// A message from the client.
    fn on_message(&self, ctx: &mut Context, msg: Message) -> impl Future<Output = HandlerResult> + Send;

    /// The client dropped without closing and came back within its gateway's recovery window
    /// (`docs/recovery.md`): same client id, uid, groups and session, and the `replayed`
    /// messages it missed were sent again. It got no `on_close` and gets no `on_connect`; its
    /// server data is its new address. Recovery is opt-in per gateway and per client, so an
    /// application that does not use it never sees this.
    fn on_resume(&self, ctx: &mut Context, replayed: u64) -> impl Future<Output = HandlerResult> + Send {
        let _ = (ctx, replayed);
        async { Ok(()) }
    }

    /// The client is gone. Its session and server data are still readable. With recovery, a
    /// client that dropped without closing gets this once, when its recovery window ends
    /// without a resume (or its held state was lost), not when the socket dropped.
    fn on_close(&self, ctx: &mut Context) -> impl Future<Output = HandlerResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Once when the worker process stops.
    fn on_worker_stop(&self, worker: &WorkerContext) -> impl Future<Output = ()> + Send {
        let _ = worker;
        async {}
    }

    /// The application's own metrics, shown in the worker's `/metrics` next to the worker's
    /// (asked about once a second; counters carry over reloads and restarts like the worker's
    /// own). Name them `<app>_...` so they do not collide with the worker's `gw_worker_...`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use gw_business_worker::{Context, Events, HandlerResult, Message, MetricFamily};
    ///
    /// #[derive(Default)]
    /// struct Counting {
    ///     messages: AtomicU64,
    /// }
    ///
    /// impl Events for Counting {
    ///     async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
    ///         self.messages.fetch_add(1, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    ///
    ///     fn metrics(&self) -> Vec<MetricFamily> {
    ///         let n = self.messages.load(Ordering::Relaxed);
    ///         vec![MetricFamily::counter("myapp_messages_total", "Messages counted.", n)]
    ///     }
    /// }
    /// ```
    fn metrics(&self) -> Vec<MetricFamily> {
        Vec::new()
    }
}

/// Given to `on_worker_start` / `on_worker_stop`.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// This worker's name from its config.
    pub name: String,
    /// The Gateway API.
    pub gateway: GatewayClient,
}

/// What GatewayWorker calls `$_SERVER`: where the client connected from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerData {
    /// Client address and port (IPv4 or IPv6).
    pub client_addr: Option<SocketAddr>,
    /// The gateway's public listener address and port.
    pub gateway_addr: Option<SocketAddr>,
    /// Listener URL, e.g. `websocket://0.0.0.0:7272`.
    pub listener: String,
    /// The transport the client came through.
    pub protocol: Option<Protocol>,
}

/// The WebSocket handshake request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketRequest {
    /// Request path, e.g. `/chat`.
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
}

impl WebSocketRequest {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters, in order.
    pub fn query_params(&self) -> Vec<(String, String)> {
        gw_proto::urlencoded::query_pairs(&self.query)
    }

    /// One decoded query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Cookies from every `Cookie` header.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            })
            .collect()
    }

    /// One cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Everything a handler gets for one event.
#[derive(Debug)]
pub struct Context {
    /// The client's id.
    pub client_id: ClientId,
    /// The client's session. Changes are written back to the gateway after the handler returns:
    /// only the top-level keys the handler changed or removed, so keys written meanwhile by
    /// someone else (a web backend's `update_session`) survive.
    pub session: Session,
    /// Client and gateway addresses.
    pub server: ServerData,
    /// True when this event may have been handled before by a worker that died.
    pub redelivered: bool,
    pub(crate) gateway: GatewayClient,
    pub(crate) link: Arc<GatewayLink>,
    pub(crate) local: u64,
    pub(crate) closed: bool,
}

impl Context {
    /// The client's Pusher socket id, `{instance}.{local}` (a connection of a `workers = true`
    /// Pusher app; the same as in its `pusher:connection_established`).
    pub fn pusher_socket_id(&self) -> String {
        format!("{}.{}", self.client_id.instance, self.client_id.local)
    }

    /// The full Gateway API (send to uids, groups, queries, …).
    pub fn gateway(&self) -> &GatewayClient {
        &self.gateway
    }

    /// Sends a message to the current client (GatewayWorker's `sendToCurrentClient`).
    #[doc(alias = "sendToCurrentClient")]
    pub async fn send(&self, msg: impl Into<Payload>) -> Result<(), ClientError> {
        Ok(self.link.command(Command::SendToClients { clients: vec![self.local], msg: msg.into() }).await?)
    }

    /// Closes the current client (GatewayWorker's `closeCurrentClient`).
    #[doc(alias = "closeCurrentClient")]
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.close_with(None, None).await
    }

    /// Closes the current client, optionally after a last message, with a close code and reason.
    pub async fn close_with(&mut self, last: Option<Payload>, close: Option<CloseReason>) -> Result<(), ClientError> {
        self.closed = true;
        Ok(self.link.command(Command::CloseClient { client: self.local, last, close }).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_and_cookies_are_decoded() {
        let r = WebSocketRequest {
            path: "/chat".into(),
            query: "name=J%C3%BCrgen+M&room=a%26b&flag".into(),
            headers: vec![("Cookie".into(), "sid=abc; theme=\"dark\"".into()), ("x-a".into(), "1".into())],
        };
        assert_eq!(r.query_param("name").as_deref(), Some("Jürgen M"));
        assert_eq!(r.query_param("room").as_deref(), Some("a&b"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.cookie("sid").as_deref(), Some("abc"));
        assert_eq!(r.cookie("theme").as_deref(), Some("dark"));
        assert_eq!(r.header("X-A"), Some("1"));
    }
}
