//! Pusher test helpers: a gateway with a `pusher = true` listener and one app, and a raw Pusher
//! client over a real WebSocket that speaks [`ClientFrame`]s.

use std::net::SocketAddr;
use std::time::Duration;

use gw_config::{ListenerConfig, PusherApp, PusherConfig};
use gw_pusher_protocol::client_frame::{ClientEvent, Subscribe};
use gw_pusher_protocol::{ChannelName, ClientFrame, Limits};
use serde_json::Value;

use crate::GatewayHandle;
use crate::ws::{Received, WsClient};

/// The test app's id.
pub const APP_ID: &str = "1001";
/// The test app's key.
pub const APP_KEY: &str = "app-key";
/// The test app's secret.
pub const APP_SECRET: &str = "pusher-app-secret-0123456789";

/// The test app, as `tweak` leaves it.
pub fn pusher_config(tweak: impl FnOnce(&mut PusherApp)) -> PusherConfig {
    let mut app = PusherApp::new(APP_ID, APP_KEY, APP_SECRET);
    tweak(&mut app);
    PusherConfig { apps: vec![app], ..PusherConfig::default() }
}

/// A gateway whose only public listener speaks Pusher, with the test app; `tweak` may change
/// the gateway's config further.
pub async fn pusher_gateway(
    registers: &[SocketAddr],
    secret: &str,
    app: impl FnOnce(&mut PusherApp),
    tweak: impl FnOnce(&mut gw_config::GatewayConfig),
) -> GatewayHandle {
    let pusher = pusher_config(app);
    GatewayHandle::start_with(registers, secret, move |c| {
        c.listeners = vec![ListenerConfig { pusher: true, ..ListenerConfig::new("websocket://127.0.0.1:0") }];
        c.pusher = Some(pusher);
        tweak(c);
    })
    .await
}

/// Waits until every gateway of `gws` knows all the others (from the register's list), so they
/// agree on each channel's home.
pub async fn wait_for_peers(gws: &[&GatewayHandle]) {
    let peers = gws.len() as u64 - 1;
    crate::eventually(Duration::from_secs(10), "each gateway knows every other", || async {
        gws.iter().all(|g| g.metric("peer_gateways") == peers)
    })
    .await;
}

/// The URL a Pusher client of the test app connects to (`ws://host:port/app/{key}?protocol=7`).
pub fn app_url(gw: &GatewayHandle) -> String {
    format!("{}app/{APP_KEY}?protocol=7&client=rust-test&version=1.0", gw.ws_url)
}

/// A raw Pusher client.
pub struct PusherClient {
    /// The WebSocket.
    pub ws: WsClient,
    /// Its socket id, from `pusher:connection_established`.
    pub socket_id: String,
}

/// A frame's `data` as JSON (it is a JSON-encoded string for `pusher_internal:` events).
pub fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

impl PusherClient {
    /// Connects and reads `pusher:connection_established`.
    pub async fn connect(url: &str) -> Self {
        let mut ws = WsClient::connect(url).await;
        let first = ws.recv_json().await;
        assert_eq!(first["event"], "pusher:connection_established", "{first}");
        let socket_id = data_of(&first)["socket_id"].as_str().unwrap().to_string();
        Self { ws, socket_id }
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.ws.send(&frame.encode()).await;
    }

    /// Sends `pusher:subscribe`.
    pub async fn subscribe(&mut self, channel: &str, auth: Option<String>, channel_data: Option<&str>) {
        let channel = ChannelName::parse(channel, &Limits::default()).unwrap();
        let frame = ClientFrame::Subscribe(Subscribe { channel, auth, channel_data: channel_data.map(str::to_string) });
        self.send(&frame).await;
    }

    /// Subscribes to a private or presence channel with a correct signature for this socket.
    pub async fn subscribe_signed(&mut self, channel: &str, channel_data: Option<&str>) {
        let auth = gw_pusher_protocol::auth::channel_auth(APP_KEY, APP_SECRET, &self.socket_id, channel, channel_data);
        self.subscribe(channel, Some(auth), channel_data).await;
    }

    /// Sends a client event.
    pub async fn client_event(&mut self, channel: &str, event: &str, data: &str) {
        let frame = ClientFrame::ClientEvent(ClientEvent {
            event: event.into(),
            channel: ChannelName::parse(channel, &Limits::default()).unwrap(),
            data: Some(serde_json::value::RawValue::from_string(data.into()).unwrap()),
        });
        self.send(&frame).await;
    }

    /// The next frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        self.ws.recv_json().await
    }

    /// The next frame, which must be this event.
    pub async fn expect(&mut self, event: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["event"], event, "{frame}");
        frame
    }

    /// Asserts that the connection is open and answers: `pusher:ping` → `pusher:pong`.
    pub async fn expect_alive(&mut self) {
        self.send(&ClientFrame::Ping).await;
        self.expect("pusher:pong").await;
    }

    /// Asserts that no frame arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        self.ws.expect_silence(quiet).await;
    }

    /// Waits for the close; its code and reason.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        self.ws.expect_close().await
    }
}

/// Connects to `url` and expects a refusal: a `pusher:error` with `code`, then a close with it.
pub async fn expect_refused(url: &str, code: u16) {
    let mut ws = WsClient::connect(url).await;
    let error = ws.recv_json().await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], code, "{error}");
    match ws.next(Duration::from_secs(10)).await {
        Some(Received::Closed(Some((c, _)))) => assert_eq!(c, code, "close code"),
        other => panic!("expected a close with {code}, got {other:?}"),
    }
}
