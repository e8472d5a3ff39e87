//! Wall-clock jumps do not touch heartbeats and timeouts: a gateway and a worker run as processes
//! under libfaketime, whose wall clock is moved a day forward and then two days back while their
//! monotonic clock runs on. A chatty client stays connected and answered throughout, the
//! gateway↔worker link survives, and a silent client is still closed by the heartbeat on time.
//!
//! Needs Debian's `libfaketime` (`.ci/run` installs it and sets `GW_REQUIRE_FAKETIME=1`; without
//! it and without that variable the test says it skips).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gw_integration_tests::process::{Daemon, temp_dir, write_config};
use gw_integration_tests::ws::Received;
use gw_integration_tests::{NamedEcho, RegisterHandle, WorkerHandle, WsClient};

const SECRET: &str = "clock-jump-secret-0123456789";
const T: Duration = Duration::from_secs(20);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Moves the fake wall clock of every process reading `file` to `offset` (libfaketime syntax:
/// `+1d`, `-2d`, `+0`).
fn set_offset(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

/// The UTC date `days` from today, as `date` prints it (`2026-11-22`).
fn date_in(days: i32) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("{days} days"), "+%F"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_do_not_affect_heartbeats_or_timeouts() {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("GW_REQUIRE_FAKETIME").is_err(),
            "GW_REQUIRE_FAKETIME is set but {LIBFAKETIME} is missing (apt-get install libfaketime)"
        );
        eprintln!("skipping: {LIBFAKETIME} not installed (apt-get install libfaketime)");
        return;
    }
    let register = RegisterHandle::start(SECRET).await;
    let dir = temp_dir("clockjump");
    let offset_file = dir.join("faketime-offset");
    set_offset(&offset_file, "+0");
    let faketime = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        // The point: only the wall clock jumps, as when an operator or NTP steps it.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let link = "[link]\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"2s\"\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n";
    let gateway_cfg = write_config(
        &dir,
        "gateway.toml",
        &format!(
            "name = \"gw-clock\"\nlisten = \"127.0.0.1:0\"\ninternal_listen = \"127.0.0.1:0\"\nregisters = [\"{}\"]\n\
             secret = \"{SECRET}\"\nping_interval = \"300ms\"\nping_not_response_limit = 2\npong_is_activity = false\n{link}\
             [log]\nformat = \"json\"\n[process]\nrun_dir = \"{}\"\nadmin = \"\"\n",
            register.addr,
            dir.display()
        ),
    );
    let mut gateway = Daemon::spawn("gateway", &["--config", gateway_cfg.to_str().unwrap()], &faketime);
    let public = gateway.wait_for_log("gateway listening", T)["public"].as_str().unwrap().to_string();
    let ws_url = format!("ws://{public}/");
    let worker_cfg = write_config(
        &dir,
        "business-worker.toml",
        &format!(
            "name = \"w-clock\"\napp = \"echo\"\ncount = 1\nsecret = \"{SECRET}\"\nregisters = [\"{}\"]\n{link}\
             [log]\nformat = \"json\"\n[process]\nrun_dir = \"{}\"\nadmin = \"\"\n",
            register.addr,
            dir.display()
        ),
    );
    let mut worker = Daemon::spawn("business-worker", &["--config", worker_cfg.to_str().unwrap()], &faketime);
    gateway.wait_for_log("worker connected", T);

    // A chatty client: numbered messages every 50 ms, each answered in order, never closed.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let chatty = tokio::spawn({
        let (stop, answered, ws_url) = (stop.clone(), answered.clone(), ws_url.clone());
        async move {
            let mut client = WsClient::connect(&ws_url).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client.send(&n.to_string()).await;
                match client.next(Duration::from_secs(5)).await {
                    Some(Received::Text(t)) if t == n.to_string() => {}
                    other => return Err(format!("message {n}: expected its echo, got {other:?}")),
                }
                answered.fetch_add(1, Ordering::Relaxed);
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client.close().await;
            Ok(n)
        }
    });

    // A day forward. A wall-clock timer would now see a day of silence everywhere.
    set_offset(&offset_file, "+1d");
    let seen_before = answered.load(Ordering::Relaxed);
    // Proof the gateway runs on the fake clock: a worker that links now is logged tomorrow.
    let late = WorkerHandle::start("w-late", &[register.addr], SECRET, NamedEcho("late".into()));
    let line =
        gateway.wait_for_line(T, "the late worker's link", |l| l.contains("worker connected") && l.contains("w-late"));
    let logged: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        logged["timestamp"].as_str().unwrap().starts_with(&date_in(1)),
        "libfaketime did not move the gateway's wall clock: {line}"
    );

    // Two days back: a wall-clock timer would now wait two days.
    set_offset(&offset_file, "-1d");
    let mut silent = WsClient::connect(&ws_url).await;
    let connected = Instant::now();
    let close = silent.expect_close().await;
    let after = connected.elapsed();
    assert_eq!(close.map(|c| c.0), Some(1008), "a silent client is closed by the heartbeat");
    // 2 intervals of 300 ms, plus one interval of phase, plus a loaded machine.
    assert!(after < Duration::from_secs(5), "the silent client was closed only after {after:?}");

    // The chatty client kept being answered across both jumps.
    let target = answered.load(Ordering::Relaxed) + 10;
    while answered.load(Ordering::Relaxed) < target && !chatty.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = chatty.await.unwrap().unwrap_or_else(|e| panic!("{e}\ngateway:\n{}", gateway.output()));
    assert!(sent > seen_before + 10, "the chatty client stalled: {sent} answered, {seen_before} before the jumps");

    let out = gateway.output();
    // Exactly one client was closed for silence, once; no link was dropped.
    assert_eq!(out.matches("closed clients that stopped sending heartbeats").count(), 1, "{out}");
    for sign in ["link dropped", "heartbeat timeout", "worker disconnected", "disconnected", "panicked"] {
        assert!(!out.contains(sign), "gateway log contains {sign:?}:\n{out}");
    }
    let out = worker.output();
    for sign in ["link dropped", "heartbeat timeout", "disconnected", "panicked"] {
        assert!(!out.contains(sign), "worker log contains {sign:?}:\n{out}");
    }

    late.stop().await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(T), Some(0), "{}", worker.output());
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(T), Some(0), "{}", gateway.output());
    let _ = std::fs::remove_dir_all(dir);
}
