//! What one client costs the gateway in heap (issues 25 and 29): an idle WebSocket client, the
//! same with recovery on, and a held client (recovery on, gone without closing), each measured
//! with a counting allocator over many clients on a real gateway on 127.0.0.1:0 with real
//! WebSocket clients.
//!
//! Only the gateway's runtime threads are counted (`gw_heap_count`): the register shares them
//! (it keeps nothing per client), while the worker, the clients and the test run on threads of
//! their own. Heap bytes are deterministic, unlike time or resident memory, so they are
//! asserted; resident memory per client is measured by `gw-bench idle` (BENCHMARKS.md), and is
//! the heap here plus what the allocator leaves unused.

use std::time::Duration;

use gw_config::RecoveryConfig;
use gw_heap_count::{Counting, Heap, PerItem};
use gw_integration_tests::recovering::{EventLog, RecoveringClient};
use gw_integration_tests::ws::WsClient;
use gw_integration_tests::*;

#[global_allocator]
static ALLOC: Counting = Counting;

const SECRET: &str = "memory-secret-0123456789";

/// The gateway's heartbeat interval here.
const PING: Duration = Duration::from_millis(200);

/// Clients per kind: enough that the shared structures (the client map's shards, the slab of
/// I/O registrations) grow to their per-client share, as they do at scale.
const N: usize = 1024;

/// An idle WebSocket client, in bytes of malloc chunks, in this (debug) build: 2,304 B before
/// its codec was boxed while parked (task 1,280 B, handle 336, I/O registration 272, client
/// info and its strings 224, connection slot 48, map ~36), 2,080 B after (task 1,152 B), 1,406 B
/// once a client at rest waited in a small state (task 512 B: everything that awaits more than
/// the wait runs boxed while the client is at work) and its connection slot lived in the task,
/// 1,297 B once its info shared the listener's address and URL (`Arc<str>`, one copy per
/// listener) instead of two strings of its own. Issue 29 asks for 1.5 KiB of resident memory
/// (BENCHMARKS.md, "Memory per client").
const IDLE_BUDGET: f64 = 1344.0;

/// A held client, one buffered (shared) message included (issue 25: 1 KiB plus its messages):
/// 887 B before, 849 B after the recovery state shrank.
const HELD_BUDGET: f64 = 1024.0;

/// Recovery on costs a live idle client at most 10 % more than an idle client cost when issue 25
/// set that target (2,080 B of chunks, the figure above before the idle client shrank): what
/// recovery adds (its state and a one-slot replay buffer, 128 B of chunks, `gateway/src/
/// recovery/`) did not shrink with the idle client, and this measurement adds the client map's
/// growth from 1,024 to 2,048 clients (its shards' tables double: about 34 B per client), so
/// against the new idle client it measures 146–148 B, 10.5 % of it.
const RECOVERY_BUDGET: f64 = 2080.0 * 0.10;

/// A client in its WebSocket handshake (its request head not complete yet): every connecting
/// client holds this at once during a connection storm, and what it leaves behind in the
/// allocator shows in the resident memory of the clients that stay. 5.6 KiB of chunks before the
/// handshake's future lost its read chunk and header table (1 KiB and 2 KiB, now a plain
/// function's) and TLS's state (boxed); about 2.6 KiB after.
const HANDSHAKE_BUDGET: f64 = 3072.0;

#[test]
fn idle_and_held_clients_stay_within_their_heap_budgets() {
    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(gw_heap_count::count_this_thread)
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let register = gw_rt.block_on(RegisterHandle::start(SECRET));
    let gateway = gw_rt.block_on(GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.recovery = RecoveryConfig { enabled: true, window: Duration::from_secs(600), ..RecoveryConfig::default() };
        c.max_connections_per_ip = 4 * N;
        // Heartbeats often, and nobody closed for not answering: an idle client is one that
        // had a heartbeat since its last message (what it keeps between messages is freed then).
        c.ping_interval = PING;
        c.ping_not_response_limit = 0;
        // The clients left in their handshake are measured, not timed out.
        c.handshake_timeout = Duration::from_secs(120);
    }));
    let worker = WorkerHandle::start("w", &[register.addr], SECRET, EventLog::default());
    let alive_tasks = || gw_rt.metrics().num_alive_tasks();

    let (plain, recovering, held, handshaking) = client_rt.block_on(async {
        wait_for_workers(&gateway, 1).await;
        let backend = gateway_client(&[register.addr], SECRET, 1).await;
        let connections = |n: u64| {
            let gateway = &gateway;
            async move {
                eventually(Duration::from_secs(30), &format!("{n} connections"), || async move {
                    gateway.metric("connections") == n
                })
                .await;
            }
        };
        // Warm up what the gateway makes once (links' buffers, the first client's lazies).
        for _ in 0..4 {
            let mut c = WsClient::connect(&gateway.ws_url).await;
            let mut r = RecoveringClient::connect(&gateway.ws_url).await;
            backend.send_to_all("warm").await.unwrap();
            c.recv().await;
            r.recv().await;
            c.close().await;
            r.ws.close().await;
        }
        connections(0).await;
        let base_tasks = alive_tasks();
        let base = Heap::now();
        let sizes0 = gw_heap_count::blocks_by_size();

        // N plain clients, each sent one message (written, and not kept).
        let mut plain = Vec::with_capacity(N);
        for _ in 0..N {
            plain.push(WsClient::connect(&gateway.ws_url).await);
        }
        connections(N as u64).await;
        backend.send_to_all("one").await.unwrap();
        for c in &mut plain {
            assert_eq!(c.recv().await, "one");
        }
        let with_plain = settled(&alive_tasks, base_tasks + N).await;
        let sizes1 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} idle clients: {:?}", gw_heap_count::growth(&sizes0, &sizes1));

        // N clients with recovery, each sent one message it does not acknowledge (kept in its
        // replay buffer, shared with the others).
        let mut recovering = Vec::with_capacity(N);
        for _ in 0..N {
            recovering.push(RecoveringClient::connect(&gateway.ws_url).await);
        }
        connections(2 * N as u64).await;
        backend.send_to_all("two").await.unwrap();
        for c in &mut plain {
            assert_eq!(c.recv().await, "two");
        }
        for c in &mut recovering {
            assert_eq!(c.recv().await, "two");
        }
        let with_recovering = settled(&alive_tasks, base_tasks + 2 * N).await;
        let sizes2 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} clients with recovery: {:?}", gw_heap_count::growth(&sizes1, &sizes2));

        // The clients with recovery vanish (reset): held, each with its one message.
        for c in recovering {
            c.ws.reset();
        }
        eventually(Duration::from_secs(30), "every client with recovery held", || async {
            gateway.metric("recovery_held_clients") == N as u64
        })
        .await;
        connections(N as u64).await;
        let with_held = settled(&alive_tasks, base_tasks + N).await;
        let sizes3 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} held clients: {:?}", gw_heap_count::growth(&sizes1, &sizes3));

        // N clients that sent the start of their upgrade request and wait: each in its handshake.
        let mut handshaking = Vec::with_capacity(N);
        for _ in 0..N {
            let addr = gateway.ws_url.trim_start_matches("ws://").trim_end_matches('/').to_string();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                .await
                .unwrap();
            handshaking.push(s);
        }
        eventually(Duration::from_secs(30), "every handshake accepted", || async {
            alive_tasks() >= base_tasks + 2 * N
        })
        .await;
        let with_handshaking = settled(&alive_tasks, base_tasks + 2 * N).await;
        let sizes4 = gw_heap_count::blocks_by_size();
        println!("blocks by size per {N} clients in their handshake: {:?}", gw_heap_count::growth(&sizes3, &sizes4));
        drop(handshaking);
        drop(plain);
        (
            with_plain.per(base, N),
            with_recovering.per(with_plain, N),
            with_held.per(with_plain, N),
            with_handshaking.per(with_held, N),
        )
    });
    println!("RESULT heap per idle client: {plain}");
    println!("RESULT heap per idle client with recovery: {recovering}");
    println!("RESULT heap per held client: {held}");
    println!("RESULT heap per client in its handshake: {handshaking}");
    worker.kill();
    gw_rt.block_on(gateway.stop());
    gw_rt.block_on(register.stop());

    check("an idle client", plain, IDLE_BUDGET);
    check("a held client", held, HELD_BUDGET);
    check("a client in its handshake", handshaking, HANDSHAKE_BUDGET);
    check("an idle client with recovery", recovering, plain.chunk_bytes + RECOVERY_BUDGET);
}

fn check(what: &str, per: PerItem, budget: f64) {
    assert!(per.chunk_bytes <= budget, "{what} costs {per}: over its budget of {budget:.0} B");
}

/// The gateway's heap once its tasks are down to `tasks` (every connection that ended has
/// finished) and it is the same as two heartbeat intervals before (every client had its
/// heartbeat since the last message, and freed what it keeps between messages).
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
