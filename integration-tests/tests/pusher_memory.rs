//! What a Pusher connection costs the gateway in heap against a plain WebSocket client (issue 27:
//! at most 10 % more at rest), measured with a counting allocator over many clients of each kind
//! on one real gateway on 127.0.0.1:0 with real WebSocket clients: N plain clients, each joined
//! to one group by its worker (`on_connect`), against N Pusher clients, each subscribed to one
//! public channel (the same for all, as the plain clients share their group). So both kinds hold
//! one membership of a shared group in the routing index, and the figure compares the
//! connections themselves.
//!
//! Only the gateway's runtime threads are counted (`gw_heap_count`), as in `client_memory.rs`.
//! Resident memory per connection is measured by `gw-bench pusher` (BENCHMARKS.md).

use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::ListenerConfig;
use gw_heap_count::{Counting, Heap, PerItem};
use gw_integration_tests::pusher::{APP_KEY, PusherClient, pusher_config};
use gw_integration_tests::ws::WsClient;
use gw_integration_tests::*;

#[global_allocator]
static ALLOC: Counting = Counting;

const SECRET: &str = "pusher-memory-secret-0123";

/// The gateway's heartbeat interval here.
const PING: Duration = Duration::from_millis(200);

/// Clients per kind: enough that the shared structures (the client map's shards, the routing
/// index's maps, the slab of I/O registrations) grow to their per-client share.
const N: usize = 1024;

/// A subscribed Pusher connection, in bytes of malloc chunks, in this (debug) build: 4,281 B
/// before (against 2,242 B for a plain client in one group: its connection future boxed on its
/// own, 1,800 B, besides the task block every client has; a list of four subscription slots,
/// 192 B; a copy of the channel's name), 2,281 B once its future (680 B) lived in the task
/// block, its subscription in one 40-byte slot and the channel's name was the routing index's,
/// and 2,153 B against 2,162 B once a connection's first subscription and a client's first
/// group in the index were held inline (`Few`), for Pusher and plain clients alike.
const PUSHER_BUDGET: f64 = 2400.0;

/// A Pusher connection costs at most this much more than a plain client (issue 27: 10 %).
const PUSHER_OVERHEAD: f64 = 0.10;

/// The group every plain client joins.
const GROUP: &str = "room";

/// Joins every client to [`GROUP`] when it connects, and tells it so.
struct Joiner;

impl Events for Joiner {
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        ctx.gateway().clone().join_group(&ctx.client_id, GROUP).await?;
        ctx.send("joined").await?;
        Ok(())
    }

    async fn on_message(&self, _ctx: &mut Context, _msg: Message) -> HandlerResult {
        Ok(())
    }
}

#[test]
fn a_subscribed_pusher_connection_costs_at_most_a_tenth_more_than_a_plain_client() {
    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(gw_heap_count::count_this_thread)
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let register = gw_rt.block_on(RegisterHandle::start(SECRET));
    let gateway = gw_rt.block_on(GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.listeners = vec![
            ListenerConfig::new("websocket://127.0.0.1:0"),
            ListenerConfig { pusher: true, ..ListenerConfig::new("websocket://127.0.0.1:0") },
        ];
        c.pusher = Some(pusher_config(|_| {}));
        c.max_connections_per_ip = 4 * N;
        // Heartbeats often, and nobody closed for not answering: a client at rest is one that
        // had a heartbeat since its last frame (what it keeps between frames is freed then).
        c.ping_interval = PING;
        c.ping_not_response_limit = 0;
    }));
    let urls = gateway.gw.listener_urls();
    let pusher_url = format!(
        "ws://{}/app/{}?protocol=7&client=rust-test&version=1.0",
        urls[1].strip_prefix("websocket://").unwrap(),
        APP_KEY
    );
    let worker = WorkerHandle::start("w", &[register.addr], SECRET, Joiner);
    let alive_tasks = || gw_rt.metrics().num_alive_tasks();

    let (plain, pusher) = client_rt.block_on(async {
        wait_for_workers(&gateway, 1).await;
        let connections = |n: u64| {
            let gateway = &gateway;
            async move {
                eventually(Duration::from_secs(30), &format!("{n} connections"), || async move {
                    gateway.metric("connections") == n
                })
                .await;
            }
        };
        let plain_client = || async {
            let mut c = WsClient::connect(&gateway.ws_url).await;
            assert_eq!(c.recv().await, "joined");
            c
        };
        let pusher_client = || async {
            let mut c = PusherClient::connect(&pusher_url).await;
            c.subscribe(GROUP, None, None).await;
            c.expect("pusher_internal:subscription_succeeded").await;
            c
        };
        // Warm up what the gateway makes once (links' buffers, the first client's lazies).
        for _ in 0..4 {
            let c = plain_client().await;
            let p = pusher_client().await;
            c.close().await;
            p.ws.close().await;
        }
        connections(0).await;
        let base_tasks = alive_tasks();
        let base = Heap::now();
        let sizes0 = gw_heap_count::blocks_by_size();

        let mut plain = Vec::with_capacity(N);
        for _ in 0..N {
            plain.push(plain_client().await);
        }
        connections(N as u64).await;
        let with_plain = settled(&alive_tasks, base_tasks + N).await;
        let sizes1 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} plain clients in a group: {:?}", gw_heap_count::growth(&sizes0, &sizes1));

        let mut pusher = Vec::with_capacity(N);
        for _ in 0..N {
            pusher.push(pusher_client().await);
        }
        connections(2 * N as u64).await;
        let with_pusher = settled(&alive_tasks, base_tasks + 2 * N).await;
        let sizes2 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} subscribed Pusher connections: {:?}", gw_heap_count::growth(&sizes1, &sizes2));
        drop((plain, pusher));
        (with_plain.per(base, N), with_pusher.per(with_plain, N))
    });
    println!("RESULT heap per plain client in one group: {plain}");
    println!("RESULT heap per Pusher connection subscribed to one public channel: {pusher}");
    println!("RESULT pusher_over_plain_pct={:.1}", (pusher.chunk_bytes / plain.chunk_bytes - 1.0) * 100.0);
    worker.kill();
    gw_rt.block_on(gateway.stop());
    gw_rt.block_on(register.stop());

    check("a subscribed Pusher connection", pusher, PUSHER_BUDGET);
    check("a subscribed Pusher connection", pusher, plain.chunk_bytes * (1.0 + PUSHER_OVERHEAD));
}

fn check(what: &str, per: PerItem, budget: f64) {
    assert!(per.chunk_bytes <= budget, "{what} costs {per}: over its budget of {budget:.0} B");
}

/// The gateway's heap once its tasks are down to `tasks` and it is the same as two heartbeat
/// intervals before (every client had its heartbeat since its last frame).
async fn settled(alive_tasks: &impl Fn() -> usize, tasks: usize) -> Heap {
    eventually(Duration::from_secs(30), &format!("{tasks} gateway tasks"), || async { alive_tasks() <= tasks }).await;
    let mut last = Heap::now();
    loop {
        tokio::time::sleep(2 * PING).await;
        let now = Heap::now();
        if now == last {
            return now;
        }
        last = now;
    }
}
