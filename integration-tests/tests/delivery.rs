//! Client → worker delivery is at least once: a worker that dies keeps nothing the gateway gave
//! it; its unacknowledged events go to another worker in the client's order, flagged as
//! redelivered. A worker that stops gracefully finishes and acknowledges what it received, so it
//! causes neither loss nor duplicates.

use std::sync::Arc;
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_integration_tests::*;

const SECRET: &str = "delivery-secret-0123456789";

/// Replies `<worker>:<message>:<redelivered>`; on worker "w1" a message starting with "hang"
/// never finishes (so it and everything after it stay unacknowledged).
#[derive(Clone)]
struct Recorder(String);

impl Events for Recorder {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = msg.as_text().unwrap_or_default().to_string();
        if self.0 == "w1" && text.starts_with("hang") {
            std::future::pending::<()>().await;
        }
        ctx.send(format!("{}:{}:{}", self.0, text, ctx.redelivered)).await?;
        Ok(())
    }
}

#[tokio::test]
async fn events_a_crashed_worker_did_not_acknowledge_are_redelivered_in_order_and_flagged() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let w1 = WorkerHandle::start("w1", &[reg.addr], SECRET, Recorder("w1".into()));
    wait_for_workers(&gw, 1).await;
    let mut c = gw.client().await;
    c.send("first").await;
    assert_eq!(c.recv().await, "w1:first:false");
    for m in ["hang-1", "m2", "m3"] {
        c.send(m).await;
    }
    // w1 is stuck in hang-1 with m2 and m3 queued behind it: all three unacknowledged.
    // (6 events: connect, websocket connect, first, hang-1, m2, m3.)
    let stats = w1.stats.clone();
    eventually(Duration::from_secs(5), "w1 started hang-1 and the gateway sent m2, m3", || {
        let s = stats.clone();
        let sent = gw.metric("events_sent");
        async move { s.events() >= 4 && sent >= 6 }
    })
    .await;
    let _w2 = WorkerHandle::start("w2", &[reg.addr], SECRET, Recorder("w2".into()));
    wait_for_workers(&gw, 2).await;
    w1.kill();
    for m in ["hang-1", "m2", "m3"] {
        assert_eq!(c.recv().await, format!("w2:{m}:true"));
    }
    c.send("m4").await;
    assert_eq!(c.recv().await, "w2:m4:false", "new events are not flagged");
    assert!(gw.metric("redelivered") >= 3);
    assert_eq!(gw.metric("connections"), 1, "the client never noticed");
}

#[tokio::test]
async fn the_close_event_of_a_client_that_left_is_redelivered_too() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let closes = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let w1 = WorkerHandle::start("w1", &[reg.addr], SECRET, CloseWatcher { name: "w1".into(), closes: closes.clone() });
    wait_for_workers(&gw, 1).await;
    let mut c = gw.client().await;
    c.send("hang").await; // w1 blocks on this client
    let stats = w1.stats.clone();
    eventually(Duration::from_secs(5), "w1 is stuck", || {
        let s = stats.clone();
        async move { s.events() >= 3 }
    })
    .await;
    c.close().await; // its close event queues behind the stuck message
    eventually(Duration::from_secs(5), "client gone at the gateway", || {
        let n = gw.metric("connections");
        async move { n == 0 }
    })
    .await;
    let _w2 =
        WorkerHandle::start("w2", &[reg.addr], SECRET, CloseWatcher { name: "w2".into(), closes: closes.clone() });
    wait_for_workers(&gw, 2).await;
    w1.kill();
    eventually(Duration::from_secs(10), "on_close ran on w2", || {
        let closes = closes.clone();
        async move { closes.lock().unwrap().iter().any(|c| c == "w2:close:true") }
    })
    .await;
}

#[derive(Clone)]
struct CloseWatcher {
    name: String,
    closes: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Events for CloseWatcher {
    async fn on_message(&self, _ctx: &mut Context, msg: Message) -> HandlerResult {
        if self.name == "w1" && msg.as_text() == Some("hang") {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn on_close(&self, ctx: &mut Context) -> HandlerResult {
        self.closes.lock().unwrap().push(format!("{}:close:{}", self.name, ctx.redelivered));
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_stopped_gracefully_under_load_loses_and_repeats_nothing() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let w1 = WorkerHandle::start("w1", &[reg.addr], SECRET, gw_stock_apps::Echo);
    let _w2 = WorkerHandle::start("w2", &[reg.addr], SECRET, gw_stock_apps::Echo);
    wait_for_workers(&gw, 2).await;
    let mut tasks = Vec::new();
    for n in 0..10 {
        let url = gw.ws_url.clone();
        tasks.push(tokio::spawn(async move { numbered_traffic(&url, n, 400).await }));
    }
    // Stop w1 while the traffic is flowing.
    let stats = w1.stats.clone();
    eventually(Duration::from_secs(10), "traffic reached w1", || {
        let s = stats.clone();
        async move { s.events() > 200 }
    })
    .await;
    w1.stop().await;
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    assert_eq!(gw.metric("redelivered"), 0, "a graceful stop must not cause redelivery");
    assert_eq!(gw.metric("connections"), 10, "no client was disconnected");
    assert_eq!(gw.metric("dropped_no_worker"), 0);
}

/// Sends `count` numbered messages (up to 8 in flight) and checks every reply arrives once, in
/// order. Returns the still-open connection.
async fn numbered_traffic(url: &str, client: usize, count: usize) -> WsClient {
    let mut ws = WsClient::connect(url).await;
    let mut sent = 0;
    let mut received = 0;
    while received < count {
        while sent < count && sent - received < 8 {
            ws.send(&format!("c{client}-{sent}")).await;
            sent += 1;
        }
        let reply = ws.recv().await;
        assert_eq!(reply, format!("c{client}-{received}"), "client {client}: lost, repeated or reordered");
        received += 1;
    }
    ws.expect_silence(Duration::from_millis(100)).await;
    ws
}
