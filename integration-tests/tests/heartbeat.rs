//! The heartbeat over real sockets (the timing rules themselves are unit-tested with paused time
//! in `gateway/src/heartbeat.rs`): a silent client is closed with 1008 and its `on_close`
//! delivered; a client answering `ping_data` stays; WebSocket pongs count as activity unless
//! configured otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_integration_tests::ws::Received;
use gw_integration_tests::*;

const SECRET: &str = "heartbeat-secret-0123456789";
const INTERVAL: Duration = Duration::from_millis(150);

#[derive(Clone, Default)]
struct Closes(Arc<AtomicUsize>);

impl Events for Closes {
    async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
        Ok(())
    }

    async fn on_close(&self, _ctx: &mut Context) -> HandlerResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn cluster(
    tweak: impl FnOnce(&mut gw_config::GatewayConfig),
) -> (RegisterHandle, GatewayHandle, WorkerHandle, Closes) {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.ping_interval = INTERVAL;
        c.ping_not_response_limit = 2;
        tweak(c);
    })
    .await;
    let closes = Closes::default();
    let worker = WorkerHandle::start("w", &[reg.addr], SECRET, closes.clone());
    wait_for_workers(&gw, 1).await;
    (reg, gw, worker, closes)
}

#[tokio::test]
async fn a_silent_client_is_closed_and_one_answering_ping_data_stays() {
    let (_reg, gw, _w, closes) = cluster(|c| c.ping_data = r#"{"type":"ping"}"#.into()).await;
    let mut silent = gw.client().await;
    let mut talker = gw.client().await;
    let answering = tokio::spawn(async move {
        // Answer every ping, like the chat page, for 20 intervals.
        for _ in 0..20 {
            assert_eq!(talker.recv().await, r#"{"type":"ping"}"#);
            talker.send(r#"{"type":"pong"}"#).await;
        }
        talker
    });
    let close = silent.expect_close().await;
    assert_eq!(close.map(|c| c.0), Some(1008), "closed for silence");
    let c = closes.clone();
    eventually(Duration::from_secs(10), "on_close delivered for the silent client", || {
        let n = c.0.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    let _talker = answering.await.unwrap();
    assert_eq!(gw.metric("connections"), 1, "the answering client is still connected");
    assert_eq!(closes.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn websocket_pongs_keep_a_reading_client_unless_pongs_do_not_count() {
    let (_reg, gw, _w, _closes) = cluster(|_| {}).await;
    let mut c = gw.client().await;
    // Reading makes the client library answer the ping frames: 20 intervals, still connected.
    assert_eq!(c.next(INTERVAL * 20).await, None, "no message and no close");
    assert_eq!(gw.metric("connections"), 1);

    let (_reg2, gw2, _w2, closes) = cluster(|c| c.pong_is_activity = false).await;
    let mut c = gw2.client().await;
    match c.next(Duration::from_secs(10)).await {
        Some(Received::Closed(code)) => assert_eq!(code.map(|c| c.0), Some(1008)),
        other => panic!("expected a close, got {other:?}"),
    }
    eventually(Duration::from_secs(10), "on_close delivered", || {
        let n = closes.0.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
}
