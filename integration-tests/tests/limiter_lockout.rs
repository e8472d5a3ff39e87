//! A noisy neighbour cannot keep a real worker out: garbage handshakes from 127.0.0.1 (the
//! workers' own address, as in containers, NAT or co-located hosts) push the address over its
//! failed-handshake budget, and a worker restarting on that address still links to the gateway
//! in its normal time, because a peer that proves the secret is never refused the challenge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gw_integration_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "lockout-secret-0123456789";

/// Garbage handshakes from 127.0.0.1 to `to`, one every 10 ms (100/s, far above the budget's
/// refill), until `stop`; counts them.
async fn flood(to: std::net::SocketAddr, stop: CancellationToken, sent: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.is_cancelled() {
        tick.tick().await;
        if let Ok(mut s) = TcpStream::connect(to).await {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarting_under_a_garbage_flood_from_its_own_address_links_in_its_normal_time() {
    let reg = RegisterHandle::start(SECRET).await;
    // A small budget that comes back slowly (one attempt per 7.5 s): before the fix, a worker had
    // to win one of those rare attempts against the flood, and almost never did within 10 s.
    let gw = GatewayHandle::start_with(&[reg.addr], SECRET, |c| {
        c.link.failed_handshakes = 8;
        c.link.failed_handshake_window = Duration::from_secs(60);
    })
    .await;
    assert!(gw.internal.ip().is_loopback());
    let first = WorkerHandle::start("w", &[reg.addr], SECRET, NamedEcho("w".into()));
    wait_for_workers(&gw, 1).await;

    let stop = CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));
    let flooding = tokio::spawn(flood(gw.internal, stop.clone(), sent.clone()));
    // The flood has used up 127.0.0.1's budget.
    let g = gw.gw.clone();
    eventually(Duration::from_secs(20), "127.0.0.1 over its failed-handshake budget", || {
        let n = g.state.metrics.get("handshakes_rate_limited").unwrap();
        async move { n > 0 }
    })
    .await;

    // The worker crashes and comes back on the same address while the garbage goes on.
    first.kill();
    wait_for_workers(&gw, 0).await;
    let started = Instant::now();
    let _second = WorkerHandle::start("w", &[reg.addr], SECRET, NamedEcho("w".into()));
    let g = gw.gw.clone();
    eventually(Duration::from_secs(10), "the restarted worker linked despite the flood", || {
        let n = g.worker_count();
        async move { n == 1 }
    })
    .await;
    let took = started.elapsed();
    let over_budget = gw.metric("handshakes_rate_limited");
    eprintln!(
        "worker linked {took:?} after its restart; {} garbage handshakes so far, {over_budget} over budget",
        sent.load(Ordering::Relaxed)
    );
    // It serves clients, and the flood was still going when it linked.
    let mut ws = gw.client().await;
    ws.send("hello").await;
    assert_eq!(ws.recv().await, "w:hello");
    assert!(!flooding.is_finished());
    stop.cancel();
    flooding.await.unwrap();
}
