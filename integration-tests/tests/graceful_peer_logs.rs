//! A peer that stops gracefully is not reported as a failure: after a gateway closes its links
//! cleanly, the worker's first failed redial is logged at info, while a gateway that was never
//! reached is still a warning (`binaries.rs` checks that one for registers).

use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_integration_tests::logs::CapturedLogs;
use gw_integration_tests::*;

const SECRET: &str = "graceful-peer-secret-0123456789";

#[derive(Clone, Default)]
struct Quiet;

impl Events for Quiet {
    async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stopped_gracefully_is_not_a_warning() {
    let logs = CapturedLogs::install("info");
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let worker = WorkerHandle::start("w", &[reg.addr], SECRET, Quiet);
    wait_for_workers(&gw, 1).await;

    // The register goes first: otherwise it may tell the worker the gateway left before the
    // worker's first redial, and the worker rightly stops dialing without one (a race that a
    // loaded machine loses). Without a register the worker keeps the gateway listed.
    let _ = reg.stop().await;
    gw.stop().await;
    eventually(Duration::from_secs(10), "the worker's first redial after the gateway stopped", || {
        let seen = logs.text().contains("gateway stopped after closing the link; retrying with backoff");
        async move { seen }
    })
    .await;
    let text = logs.text();
    assert!(!text.contains("gateway link failed"), "a graceful stop was logged as a failure:\n{text}");
    worker.stop().await;
}
