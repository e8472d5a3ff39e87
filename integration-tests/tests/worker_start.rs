//! A query made in `on_worker_start` is answered even when client events reach the new worker
//! before it is ready: the worker holds those events in their clients' queues, and its links
//! keep reading, so the reply is not stuck behind them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message, WorkerContext};
use gw_integration_tests::*;

const SECRET: &str = "worker-start-secret-0123456789";

/// What `on_worker_start` learnt from its query, and whether the waiting client was greeted.
#[derive(Clone, Default)]
struct CountAtStart {
    count: Arc<Mutex<Option<Result<u64, String>>>>,
}

impl Events for CountAtStart {
    async fn on_worker_start(&self, worker: &WorkerContext) {
        // Ask until a linked gateway answers (the first tries may find no link yet). Each try is
        // bounded by the query timeout; the whole wait by the test's deadline below.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let result = loop {
            let last = match worker.gateway.client_count().await.map(|a| a.complete()) {
                Ok(Ok(n)) if n >= 1 => break Ok(n),
                Ok(Ok(n)) => format!("complete answer, but {n} clients"),
                Ok(Err(e)) | Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() > deadline {
                break Err(format!("no complete answer within 20 s; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        *self.count.lock().unwrap() = Some(result);
    }

    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        ctx.send("welcome").await?;
        Ok(())
    }

    async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_in_on_worker_start_is_answered_while_client_events_wait() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    // A client connects while there is no worker: the gateway holds its events, and hands them
    // to the worker as soon as it links, before the worker is ready.
    let mut client = gw.client().await;
    eventually(Duration::from_secs(10), "the gateway holds the client", || {
        let n = gw.metric("connections");
        async move { n >= 1 }
    })
    .await;

    let app = CountAtStart::default();
    let mut config = gw_business_worker::WorkerConfig {
        name: "starting".into(),
        registers: vec![reg.addr.to_string()],
        secret: SECRET.into(),
        link: fast_link(),
        ..Default::default()
    };
    config.query_timeout = Duration::from_millis(500);
    let worker = WorkerHandle::start_config(config, app.clone());

    eventually(Duration::from_secs(30), "on_worker_start finished its query", || {
        let done = app.count.lock().unwrap().is_some();
        async move { done }
    })
    .await;
    let count = app.count.lock().unwrap().clone();
    assert_eq!(count, Some(Ok(1)), "the query in on_worker_start got the gateway's answer");
    // And the held client's events were handled once the worker was ready.
    assert_eq!(client.recv().await, "welcome");
    worker.stop().await;
}
