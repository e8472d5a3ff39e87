//! The worker master's `/metrics`: the counters of each `process="…"` series only grow, across a
//! reload (a new process behind the series) and a crash (kill -9, restarted by the master), as
//! Prometheus counters must.

use std::time::Duration;

use gw_integration_tests::process::{
    bin_path, cli, echo_worker_config, http_get, signal_pid, temp_dir, wait_for_file_line,
};
use gw_integration_tests::*;

const SECRET: &str = "totals-secret-0123456789";
const T: Duration = Duration::from_secs(30);

/// The value of the sample `name{process="mt-0"}` (or `…,le="+Inf"}` for a histogram bucket).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

fn scrape(admin: &str) -> String {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

const EVENTS: &str = "gw_worker_events_total{process=\"mt-0\"}";
const HANDLED: &str = "gw_worker_handler_seconds_count{process=\"mt-0\"}";

/// Sends `n` messages through a fresh client and waits for every echo.
async fn traffic(gw: &GatewayHandle, n: usize) {
    let mut ws = gw.client().await;
    for i in 0..n {
        ws.send(&format!("m{i}")).await;
        assert_eq!(ws.recv().await, format!("m{i}"));
    }
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_masters_counters_only_grow_across_a_reload_and_a_crash() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let dir = temp_dir("master-totals");
    let cfg = echo_worker_config(&dir, "mt", 1, SECRET, reg.addr, "127.0.0.1:0");
    let bin = bin_path("business-worker");
    let out = cli(&bin, &["--config", &cfg, "start", "-d"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let _stop = StopOnDrop(cfg.clone());
    let line = wait_for_file_line(&dir.join("mt.log"), "serving /metrics", T);
    let admin =
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["fields"]["admin"].as_str().unwrap().to_string();
    wait_for_workers(&gw, 1).await;

    traffic(&gw, 40).await;
    let first = eventually_at_least(&admin, 40.0).await;
    let handled = sample(&scrape(&admin), HANDLED);

    // Reload: a new process now stands behind `process="mt-0"`.
    let out = cli(&bin, &["--config", &cfg, "reload"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let body = scrape(&admin);
    let (events, after_handled) = (sample(&body, EVENTS), sample(&body, HANDLED));
    eprintln!("before reload: {first} events, {handled} handled; after: {events} events, {after_handled} handled");
    assert!(events >= first, "events went from {first} to {events} across a reload");
    assert!(after_handled >= handled, "handler count went from {handled} to {after_handled} across a reload");
    wait_for_workers(&gw, 1).await;
    traffic(&gw, 10).await;
    let second = eventually_at_least(&admin, first + 10.0).await;

    // Crash: kill -9 the worker process; the master starts another.
    let pid = cli(&bin, &["--config", &cfg, "status"])
        .stdout
        .lines()
        .find(|l| l.contains(" mt-0"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .expect("the worker process in status");
    signal_pid(pid, "KILL");
    eventually(T, "the master restarted the worker", || {
        let body = scrape(&admin);
        async move { body.contains("gw_worker_restarts_total 1") }
    })
    .await;
    let after_crash = sample(&scrape(&admin), EVENTS);
    eprintln!("before the crash: {second} events; after: {after_crash}");
    assert!(after_crash >= second, "events went from {second} to {after_crash} across a crash");
    wait_for_workers(&gw, 1).await;
    traffic(&gw, 10).await;
    eventually_at_least(&admin, second + 10.0).await;

    assert_eq!(cli(&bin, &["--config", &cfg, "stop"]).code, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops the daemonized master even when an assertion fails first.
struct StopOnDrop(String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = cli(&bin_path("business-worker"), &["--config", &self.0, "stop"]);
    }
}

/// Waits until the master reports at least `n` events for `mt-0`; returns what it reports.
async fn eventually_at_least(admin: &str, n: f64) -> f64 {
    let mut seen = 0.0;
    eventually(T, &format!("at least {n} events in /metrics"), || {
        seen = sample(&scrape(admin), EVENTS);
        let enough = seen >= n;
        async move { enough }
    })
    .await;
    seen
}
