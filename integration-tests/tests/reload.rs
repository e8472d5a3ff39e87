//! Zero-loss reload: clients send numbered messages continuously through the echo application
//! while `business-worker reload` replaces the worker processes twice with the binary on disk.
//! Every message must be answered exactly once, in order, and no socket may close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gw_integration_tests::numbered::numbered_traffic;
use gw_integration_tests::process::{
    StopOnPanic, cli, install_binary, reload_every_process, start_worker_master, temp_dir, worker_pids,
};
use gw_integration_tests::*;

const SECRET: &str = "reload-test-secret-0123456789";
const CLIENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_workers_twice_under_load_loses_repeats_and_reorders_nothing() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let dir = temp_dir("reload");
    let bin = dir.join("business-worker");
    install_binary(&bin);
    let cfg = start_worker_master(&bin, &dir, "name = \"rw\"\napp = \"echo\"", reg.addr, SECRET, "", "");
    let _stop_on_panic = StopOnPanic::new(&bin, &cfg);
    wait_for_workers(&gw, 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, stop) = (gw.ws_url.clone(), stop.clone());
            tokio::spawn(async move { numbered_traffic(WsClient::connect(&url).await, c, stop, String::new()).await })
        })
        .collect();
    gw.wait_for_more_messages(500, "traffic flowing").await;

    let mut durations = Vec::new();
    for round in 1..=2 {
        let old = worker_pids(&bin, &cfg, "rw");
        assert_eq!(old.len(), 2, "two worker processes before reload {round}");
        install_binary(&bin); // the binary on disk is now a different file
        let (bin2, cfg2) = (bin.clone(), cfg.clone());
        let started = Instant::now();
        let new = tokio::task::spawn_blocking(move || reload_every_process(&bin2, &cfg2, "rw")).await.unwrap();
        durations.push(started.elapsed());
        for pid in &new {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
            assert!(!exe.to_string_lossy().contains("(deleted)"), "process {pid} runs the new binary, not {exe:?}");
        }
        // Keep the load on between and after reloads.
        gw.wait_for_more_messages(300, "traffic after reload").await;
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
