//! Software nobody here wrote: the official Pusher server SDK (PyPI `pusher`) drives the HTTP
//! API daemon and pysher clients (PyPI `pysher`) on two gateways receive its events exactly once,
//! and share one presence member list (`users_info`, `user_count`, member events once per user)
//! (`tests/pusher_sdk.py`). Skips, saying so, when Python or its modules are missing, unless
//! `GW_REQUIRE_PYTHON=1` (after `scripts/install-python-deps.sh`).

use std::process::Command;
use std::time::Duration;

use gw_config::HttpApiConfig;
use gw_integration_tests::pusher::{APP_ID, APP_KEY, APP_SECRET, pusher_config, pusher_gateway};
use gw_integration_tests::{RegisterHandle, fast_link};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "pusher-sdk-cluster-secret";

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
async fn the_pusher_sdk_publishes_and_pysher_clients_on_two_gateways_receive_once() {
    if let Err(why) = python_with(&["pusher", "pysher", "websocket"]) {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!(
            "SKIP the_pusher_sdk_publishes_and_pysher_clients_on_two_gateways_receive_once: {why} (run scripts/install-python-deps.sh)"
        );
        return;
    }
    let reg = RegisterHandle::start(SECRET).await;
    let gw1 = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    let gw2 = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    // Each gateway knows the other, so both find the same home for a presence channel.
    gw_integration_tests::pusher::wait_for_peers(&[&gw1, &gw2]).await;

    let config = HttpApiConfig {
        registers: vec![reg.addr.to_string()],
        secret: SECRET.into(),
        link: fast_link(),
        grace_period: Duration::from_secs(3),
        pusher: Some(pusher_config(|_| {})),
        ..HttpApiConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let api = gw_http_api::Api::start(&config).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (api, stop) = (api.clone(), stop.clone());
        async move { gw_http_api::serve(api, listener, stop).await.unwrap() }
    });
    assert!(api.gateway.wait_for_gateways(2, Duration::from_secs(10)).await, "the API did not link both gateways");

    let host_port = |url: &str| url.trim_start_matches("ws://").trim_end_matches('/').to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pusher_sdk.py");
    let args = [
        script.to_string(),
        "--api".into(),
        api_addr.to_string(),
        "--ws1".into(),
        host_port(&gw1.ws_url),
        "--ws2".into(),
        host_port(&gw2.ws_url),
        "--app-id".into(),
        APP_ID.into(),
        "--key".into(),
        APP_KEY.into(),
        "--secret".into(),
        APP_SECRET.into(),
    ];
    let run = tokio::process::Command::new("python3").args(&args).output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("pusher_sdk.py timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pusher_sdk.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("OK:"), "{stdout}");
    eprintln!("{}\n{}", stdout.trim(), stderr.trim());
    stop.cancel();
    task.await.unwrap();
}
