//! Issue 26 item 8: a message sent to a client and a `destroy_client` right after it, over the
//! same link, deliver the message first, as PHP GatewayWorker does (its gateway writes the
//! message to the socket before it drops it). Destroying still sends no close frame, and a
//! destroy behind a message the client does not read does not wait for it.

use std::time::Duration;

use gw_integration_tests::ws::Received;
use gw_integration_tests::*;

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// An echo worker answers `id` with the client id, so the test can address the client.
#[derive(Clone)]
struct Ids;

impl gw_business_worker::Events for Ids {
    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        _msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        ctx.send(ctx.client_id.to_string()).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_message_sent_just_before_destroy_client_is_delivered_before_the_drop() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _worker = WorkerHandle::start("w", &[reg.addr], SECRET, Ids);
    wait_for_workers(&gw, 1).await;
    let api = gateway_client(&[reg.addr], SECRET, 1).await;
    // PHP delivered it in 4 of 4 runs; ours lost it. Twenty rounds leave no room for luck.
    for round in 0..20 {
        let mut ws = gw.client().await;
        ws.send("id").await;
        let id = ws.recv_id().await;
        let text = format!("last words {round}");
        api.send_to_client(&id, text.as_str()).await.unwrap();
        api.destroy_client(&id).await.unwrap();
        assert_eq!(ws.next(WAIT).await, Some(Received::Text(text)), "round {round}");
        // Then the socket ends without a close frame, as destroy means.
        assert_eq!(ws.next(WAIT).await, Some(Received::Closed(None)), "round {round}");
    }
    let written = gw.metric("messages_out");
    assert!(written >= 40, "20 ids and 20 last messages written, got {written}");
}

#[tokio::test]
async fn destroy_client_behind_messages_a_client_does_not_read_still_drops_it_soon() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let _worker = WorkerHandle::start("w", &[reg.addr], SECRET, Ids);
    wait_for_workers(&gw, 1).await;
    let api = gateway_client(&[reg.addr], SECRET, 1).await;
    let mut ws = gw.client().await;
    ws.send("id").await;
    let id = ws.recv_id().await;
    // About 3 MB the client never reads: more than the socket buffers hold, less than its queue.
    let big = "x".repeat(100_000);
    for _ in 0..30 {
        api.send_to_client(&id, big.as_str()).await.unwrap();
    }
    api.destroy_client(&id).await.unwrap();
    let gateway = gw.gw.clone();
    eventually(WAIT, "the destroyed client to be gone", || {
        let gone = gateway.state.client_count() == 0;
        async move { gone }
    })
    .await;
    // Whatever did not reach the socket is counted, none of it lost silently.
    let sent = 31; // the id and the 30 big messages
    eventually(WAIT, "every message written or dropped", || {
        let (out, dropped) = (gw.metric("messages_out"), gw.gw.state.metrics.dropped_total());
        async move { out + dropped == sent }
    })
    .await;
    drop(ws);
}
