//! Runs the Python client of the HTTP push API (`tests/push_api.py`, `requests` and
//! `websocket-client`) against a real cluster: two gateways, a worker, two API copies.
//! Skips, saying so, when Python or its modules are missing, unless `GW_REQUIRE_PYTHON=1` (set by
//! `.ci/run` after `scripts/install-python-deps.sh`).

mod common;

use std::process::Command;

use common::*;

/// Whether `python3` can import `modules`; `Err` explains what is missing.
fn python_with(modules: &[&str]) -> Result<(), String> {
    let import = format!("import {}", modules.join(", "));
    match Command::new("python3").args(["-c", &import]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("python3 cannot `{import}`: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_every_push_endpoint() {
    if let Err(why) = python_with(&["requests", "websocket"]) {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!("SKIP python_drives_every_push_endpoint: {why} (run scripts/install-python-deps.sh)");
        return;
    }
    let cluster = Cluster::start(2).await;
    let api = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(2).await;
    let api2 = ApiHandle::start(&[cluster.register.addr], |_| {}).await.linked(2).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/push_api.py");
    let args = [
        script.to_string(),
        "--api".into(),
        api.url(),
        "--api2".into(),
        api2.url(),
        "--ws".into(),
        cluster.gateways[0].ws_url.clone(),
        "--ws2".into(),
        cluster.gateways[1].ws_url.clone(),
        "--key".into(),
        KEY_ALL.into(),
        "--read-key".into(),
        KEY_READ.into(),
        "--send-key".into(),
        KEY_SEND.into(),
    ];
    let out = tokio::process::Command::new("python3").args(&args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "push_api.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("PASS"), "{stdout}");
    eprintln!("{}", stdout.trim());
    api.stop().await;
    api2.stop().await;
}
