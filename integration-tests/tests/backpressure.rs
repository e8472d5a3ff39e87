//! A worker whose handlers are slower than its clients is busy, not dead: while its queues are
//! full it stops reading events (backpressure all the way to the clients) but keeps its links'
//! heartbeat going, so the gateway neither drops it nor redelivers its events elsewhere — no
//! duplicates without a crash.

use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::{LinkConfig, WorkerConfig};
use gw_integration_tests::{GatewayHandle, RegisterHandle, WorkerHandle, fast_link, wait_for_workers};

const SECRET: &str = "backpressure-secret-0123456789";

/// Echo that takes longer per message than the link's heartbeat timeout.
struct SlowEcho;

const HANDLER_TIME: Duration = Duration::from_millis(700);

impl Events for SlowEcho {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        tokio::time::sleep(HANDLER_TIME).await;
        let text = msg.as_text().unwrap_or("<binary>").to_string();
        ctx.send(text).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_slower_than_its_clients_is_not_taken_for_dead() {
    let register = RegisterHandle::start(SECRET).await;
    // Heartbeat timeout 500 ms, shorter than one handler call: while the worker's queues are
    // full nothing it does would otherwise reach the gateway for 700 ms at a time.
    let link = LinkConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(500),
        ..fast_link()
    };
    let gw = GatewayHandle::start_with(&[register.addr], SECRET, |c| c.link = link.clone()).await;
    let worker = WorkerHandle::start_config(
        WorkerConfig {
            name: "slow".into(),
            registers: vec![register.addr.to_string()],
            secret: SECRET.into(),
            // The smallest queues: the link reader waits for room after a few messages.
            link: LinkConfig { queue: 1, ..link.clone() },
            client_queue: 1,
            grace_period: Duration::from_secs(3),
            ..WorkerConfig::default()
        },
        SlowEcho,
    );
    wait_for_workers(&gw, 1).await;

    let mut client = gw.client().await;
    const N: usize = 6;
    for i in 0..N {
        client.send(&format!("m{i}")).await;
    }
    for i in 0..N {
        assert_eq!(client.recv().await, format!("m{i}"), "every message once, in order");
    }
    client.expect_silence(HANDLER_TIME * 2).await;
    assert_eq!(gw.metric("link_errors"), 0, "the gateway dropped a busy worker's link");
    assert_eq!(gw.metric("redelivered"), 0, "a busy worker's events were redelivered");
    assert_eq!(worker.stats.redelivered(), 0);
    assert_eq!(gw.gw.worker_count(), 1);
    worker.stop().await;
    gw.stop().await;
}
