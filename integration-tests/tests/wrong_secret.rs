//! Issue 26, item 13: a business worker whose secret is not the cluster's is refused by the
//! register and links to nothing, so its clients get no answer. It must say so where an operator
//! looks: `status` and `/health` name the cause, not "running" and 200. With the secret fixed
//! (a `restart`), both say it serves again.

use std::time::Duration;

use gw_integration_tests::process::{
    StopOnPanic, bin_path, cli, echo_worker_config, http_get, log_field, temp_dir, wait_for_file_line,
};
use gw_integration_tests::*;

const SECRET: &str = "the-cluster-secret-0123456789";
const T: Duration = Duration::from_secs(30);
const NOT_LINKED: &str = "not linked: authentication failed (check secret)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_wrong_secret_says_so_in_status_and_health() {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let dir = temp_dir("wrong-secret");
    let bin = bin_path("business-worker");
    let cfg = echo_worker_config(&dir, "ws", 1, "not-the-cluster-secret-0123", reg.addr, "127.0.0.1:0");
    let out = cli(&bin, &["--config", &cfg, "start", "-d"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let _stop_on_panic = StopOnPanic::new(&bin, &cfg);
    let admin = log_field(&wait_for_file_line(&dir.join("ws.log"), "serving /metrics", T), "admin");

    let status = || cli(&bin, &["--config", &cfg, "status"]).stdout;
    eventually(T, "status to say the worker is not linked", || {
        let out = status();
        async move { out.contains(NOT_LINKED) }
    })
    .await;
    eventually(T, "/health to say the worker is not linked", || {
        let (code, body) = http_get(&admin, "/health");
        async move { code == 503 && body.contains(NOT_LINKED) }
    })
    .await;
    assert_eq!(gw.gw.worker_count(), 0, "the gateway has no worker");

    // The secret fixed: linked, running and healthy. (Linked means the new master logged its
    // admin address already: it does so before starting its worker processes.)
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("not-the-cluster-secret-0123", SECRET))
        .unwrap();
    let out = cli(&bin, &["--config", &cfg, "restart", "-d"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    wait_for_workers(&gw, 1).await;
    // The log file is the same: the new master's address is the last one in it.
    let log = dir.join("ws.log");
    let lines = std::fs::read_to_string(&log).unwrap();
    let admin = log_field(lines.lines().rfind(|l| l.contains("serving /metrics")).unwrap(), "admin");
    eventually(T, "/health to be ok", || {
        let (code, _) = http_get(&admin, "/health");
        async move { code == 200 }
    })
    .await;
    assert!(!status().contains("not linked"), "{}", status());
    assert_eq!(cli(&bin, &["--config", &cfg, "stop"]).code, Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
