//! Zero-loss reload: clients send numbered messages continuously through the echo application
//! while `business-worker reload` replaces the worker processes twice with the binary on disk.
//! Every message must be answered exactly once, in order, and no socket may close.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gw_integration_tests::process::{cli, install_binary, start_reloadable_workers};
use gw_integration_tests::*;

const SECRET: &str = "reload-test-secret-0123456789";
const CLIENTS: usize = 20;
const IN_FLIGHT: usize = 4;

fn worker_pids(bin: &Path, cfg: &str) -> Vec<u32> {
    let out = cli(bin, &["--config", cfg, "status"]);
    out.stdout
        .lines()
        .filter(|l| l.contains(" rw-"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

async fn traffic(url: String, client: usize, stop: Arc<AtomicBool>) -> (usize, WsClient) {
    let mut ws = WsClient::connect(&url).await;
    let (mut sent, mut received) = (0usize, 0usize);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while !stopping && sent - received < IN_FLIGHT {
            ws.send(&format!("c{client}-{sent}")).await;
            sent += 1;
        }
        if stopping && received == sent {
            return (sent, ws);
        }
        let reply = ws.recv().await;
        assert_eq!(
            reply,
            format!("c{client}-{received}"),
            "client {client}: a message was lost, repeated or reordered"
        );
        received += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_workers_twice_under_load_loses_repeats_and_reorders_nothing() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let (dir, bin, cfg) = start_reloadable_workers("reload", "echo", &reg.addr.to_string(), SECRET, "");
    wait_for_workers(&gw, 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS).map(|c| tokio::spawn(traffic(gw.ws_url.clone(), c, stop.clone()))).collect();
    gw.wait_for_traffic(500, "traffic flowing").await;

    let mut durations = Vec::new();
    for round in 1..=2 {
        let old = worker_pids(&bin, &cfg);
        assert_eq!(old.len(), 2, "two worker processes before reload {round}");
        install_binary(&bin); // the binary on disk is now a different file
        let (bin2, cfg2) = (bin.clone(), cfg.clone());
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || cli(&bin2, &["--config", &cfg2, "reload"])).await.unwrap();
        durations.push(started.elapsed());
        assert_eq!(out.code, Some(0), "reload {round}: {}", out.text());
        assert!(out.stdout.contains("reload complete"), "{}", out.stdout);
        let new = worker_pids(&bin, &cfg);
        assert_eq!(new.len(), 2);
        assert!(new.iter().all(|p| !old.contains(p)), "reload {round} replaced every process: {old:?} -> {new:?}");
        for pid in &new {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
            assert!(!exe.to_string_lossy().contains("(deleted)"), "process {pid} runs the new binary, not {exe:?}");
        }
        // Keep the load on between and after reloads.
        gw.wait_for_traffic(300, "traffic after reload").await;
    }
    stop.store(true, Ordering::Relaxed);
    let (total, _clients) = join_traffic(tasks).await;
    assert_eq!(gw.metric("connections"), CLIENTS as u64, "no client was disconnected");
    assert_eq!(gw.metric("redelivered"), 0, "nothing was delivered twice");
    assert_eq!(gw.metric("dropped_no_worker"), 0);
    assert_eq!(gw.metric("dropped_client_gone"), 0);
    println!(
        "RELOAD: {total} messages from {CLIENTS} clients, all answered once and in order; reload durations: {:?}",
        durations.iter().map(|d| format!("{:.2}s", d.as_secs_f64())).collect::<Vec<_>>()
    );
    let out = cli(&bin, &["--config", &cfg, "stop"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let _ = std::fs::remove_dir_all(dir);
}
