//! A quiet client costs the worker no task: a client's task ends a little after its last event
//! (`gw_worker_client_tasks` falls to zero while `gw_worker_clients` stays), and the next event
//! starts a new one that carries on where the last left off: the client's addresses (which the
//! gateway sends only with a client's first event on a link) and its session.

use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_integration_tests::{GatewayHandle, RegisterHandle, WorkerHandle, eventually, wait_for_workers};

const SECRET: &str = "quiet-clients-secret-0123456789";
const CLIENTS: usize = 20;

/// Answers `<messages so far, from the session>:<client address>`.
struct Counter;

impl Events for Counter {
    async fn on_message(&self, ctx: &mut Context, _msg: Message) -> HandlerResult {
        let n = ctx.session.get("n").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        ctx.session.insert("n".into(), n.into());
        let addr = ctx.server.client_addr.map(|a| a.to_string()).unwrap_or_else(|| "none".into());
        ctx.send(format!("{n}:{addr}")).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_quiet_client_holds_no_task_and_its_next_event_carries_on() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let worker = WorkerHandle::start("w-quiet", &[reg.addr], SECRET, Counter);
    wait_for_workers(&gw, 1).await;
    let stats = worker.stats.clone();

    let mut clients = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = gw.client().await;
        c.send("hello").await;
        let reply = c.recv().await;
        let addr = reply.strip_prefix("1:").unwrap_or_else(|| panic!("first reply {reply:?}")).to_string();
        assert!(addr.starts_with("127.0.0.1:"), "the handler saw the client's address: {reply:?}");
        addrs.push(addr);
        clients.push(c);
    }
    assert_eq!(stats.clients(), CLIENTS as u64);

    // Quiet: every task ends, every client stays known.
    eventually(Duration::from_secs(10), "every client task ended", || {
        let stats = stats.clone();
        async move { stats.client_tasks() == 0 }
    })
    .await;
    assert_eq!(stats.clients(), CLIENTS as u64);

    // The next message starts a new task that still knows the client's address and session.
    for (c, addr) in clients.iter_mut().zip(&addrs) {
        c.send("again").await;
        assert_eq!(c.recv().await, format!("2:{addr}"));
    }

    // A client that leaves is forgotten.
    let c = clients.pop().unwrap();
    drop(c);
    eventually(Duration::from_secs(10), "the closed client forgotten", || {
        let stats = stats.clone();
        async move { stats.clients() == CLIENTS as u64 - 1 }
    })
    .await;
    worker.stop().await;
}

/// Changes whatever the handlers may change in their `Context` besides the session, then
/// answers with what it found: `<client id>|<listener>|<client address>`.
struct Scribbler;

impl Events for Scribbler {
    async fn on_message(&self, ctx: &mut Context, _msg: Message) -> HandlerResult {
        let found = format!(
            "{}|{}|{}",
            ctx.client_id,
            ctx.server.listener,
            ctx.server.client_addr.map(|a| a.to_string()).unwrap_or_default()
        );
        ctx.send(found).await?;
        ctx.client_id.local += 1000;
        ctx.client_id.gateway.push_str("-scribbled");
        ctx.server.listener = "scribbled".into();
        ctx.server.client_addr = None;
        ctx.redelivered = true;
        Ok(())
    }
}

/// A client's task keeps one `Context` for its events (issue 29: not cloned per event); what a
/// handler scribbled in it must not reach the client's next event, whether the same task
/// handles it (messages in quick succession) or a new one (after the task ended).
#[tokio::test]
async fn what_a_handler_changes_in_its_context_does_not_reach_the_next_event() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let worker = WorkerHandle::start("w-scribble", &[reg.addr], SECRET, Scribbler);
    wait_for_workers(&gw, 1).await;
    let stats = worker.stats.clone();

    let mut c = gw.client().await;
    c.send("1").await;
    let first = c.recv().await;
    let parts: Vec<&str> = first.split('|').collect();
    assert_eq!(parts.len(), 3, "{first:?}");
    assert!(!parts[0].contains("scribbled") && parts[1] != "scribbled", "{first:?}");
    assert!(parts[2].starts_with("127.0.0.1:"), "{first:?}");
    // Several in flight: the same task handles them one after another.
    for i in 0..5 {
        c.send(&i.to_string()).await;
    }
    for _ in 0..5 {
        assert_eq!(c.recv().await, first, "a later event saw what an earlier handler scribbled");
    }
    eventually(Duration::from_secs(10), "the client's task ended", || {
        let stats = stats.clone();
        async move { stats.client_tasks() == 0 }
    })
    .await;
    c.send("again").await;
    assert_eq!(c.recv().await, first, "the next task saw what the last handler scribbled");
    worker.stop().await;
}
