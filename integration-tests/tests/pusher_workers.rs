//! A `workers = true` Pusher app: its connections reach a real Rust business worker as clients
//! (`on_connect` with the socket id derivable from the client id, `on_websocket_connect` with the
//! request, `on_message` for the client events the gateway delivered and the app's own events,
//! `on_close`), and what the worker sends the client (`ctx.send`, i.e. `send_to_client`) is
//! written to the Pusher socket as a frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message, WebSocketRequest};
use gw_integration_tests::pusher::{PusherClient, app_url, pusher_gateway};
use gw_integration_tests::{RegisterHandle, WorkerHandle, eventually, wait_for_workers};

const SECRET: &str = "pusher-workers-secret";

/// One thing the worker saw: the event, the client's Pusher socket id, a detail.
type Sighting = (&'static str, String, String);

/// What the worker saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

impl Seen {
    fn push(&self, what: &'static str, ctx: &Context, detail: String) {
        self.0.lock().unwrap().push((what, ctx.pusher_socket_id(), detail));
    }

    fn of(&self, what: &str, socket: &str) -> Vec<String> {
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|(w, s, _)| *w == what && s == socket).map(|(_, _, d)| d.clone()).collect()
    }

    async fn wait(&self, what: &str, socket: &str, n: usize) -> Vec<String> {
        eventually(Duration::from_secs(10), &format!("{n} {what} of {socket}"), || async {
            self.of(what, socket).len() >= n
        })
        .await;
        self.of(what, socket)
    }
}

/// Logs every event; answers an `order-placed` event with an `order-accepted` frame.
struct App(Seen);

impl Events for App {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        self.0.push("connect", ctx, String::new());
        Ok(())
    }

    async fn on_websocket_connect(&self, ctx: &mut Context, request: &WebSocketRequest) -> HandlerResult {
        self.0.push("websocket", ctx, request.path.clone());
        Ok(())
    }

    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = msg.as_text().unwrap_or_default().to_string();
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        if frame["event"] == "order-placed" {
            let data = serde_json::json!({"id": frame["data"]["id"], "by": ctx.pusher_socket_id()}).to_string();
            ctx.send(serde_json::json!({"event": "order-accepted", "data": data}).to_string()).await?;
        }
        self.0.push("message", ctx, text);
        Ok(())
    }

    async fn on_close(&self, ctx: &mut Context) -> HandlerResult {
        self.0.push("close", ctx, String::new());
        Ok(())
    }
}

#[tokio::test]
async fn a_workers_app_s_connections_reach_a_business_worker_which_writes_frames_to_them() {
    let register = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(&[register.addr], SECRET, |app| app.workers = true, |_| {}).await;
    let seen = Seen::default();
    let worker = WorkerHandle::start("pusher-app", &[register.addr], SECRET, App(seen.clone()));
    wait_for_workers(&gw, 1).await;

    // The worker meets the connection (its events are queued for the worker before
    // `connection_established` is written), with the socket id the client was given.
    let mut a = PusherClient::connect(&app_url(&gw)).await;
    let mut b = PusherClient::connect(&app_url(&gw)).await;
    assert_eq!(seen.wait("connect", &a.socket_id, 1).await.len(), 1);
    assert_eq!(seen.wait("websocket", &a.socket_id, 1).await, ["/app/app-key"]);

    // A client event reaches the channel's other subscriber (the gateway's work) and the worker.
    for c in [&mut a, &mut b] {
        c.subscribe_signed("private-room", None).await;
        c.expect("pusher_internal:subscription_succeeded").await;
    }
    a.client_event("private-room", "client-typing", r#"{"who":"a"}"#).await;
    assert_eq!(b.expect("client-typing").await["channel"], "private-room");
    let messages = seen.wait("message", &a.socket_id, 1).await;
    let frame: serde_json::Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!((frame["event"].as_str(), frame["channel"].as_str()), (Some("client-typing"), Some("private-room")));

    // The app's own event is the worker's (no error from the gateway), and the worker's answer
    // arrives as a frame.
    a.ws.send(r#"{"event":"order-placed","data":{"id":7}}"#).await;
    let reply = a.expect("order-accepted").await;
    let data: serde_json::Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"id": 7, "by": a.socket_id}));

    // What the gateway answers itself stays with it: pings, subscriptions.
    a.expect_alive().await;
    let messages = seen.wait("message", &a.socket_id, 2).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().all(|m| !m.contains("pusher:")), "{messages:?}");
    assert!(seen.of("message", &b.socket_id).is_empty());

    // Its close reaches the worker; the other connection stays.
    let a_socket = a.socket_id.clone();
    a.ws.close().await;
    seen.wait("close", &a_socket, 1).await;
    b.expect_alive().await;
    assert!(seen.of("close", &b.socket_id).is_empty());
    worker.kill();
}
