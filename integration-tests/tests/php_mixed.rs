//! A mixed cluster: a PHP `BusinessWorker` (running `tests/php/mixed_events.php`) and a Rust
//! business worker on the same gateway, clients routed to both; a PHP `GatewayClient` and our
//! Rust gateway-client pushing to the same clients by uid, group and to everyone; sessions
//! written by either side read by the other; `onWebSocketConnect` with `$_GET` and cookies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_integration_tests::php::{Php, PhpGateway, PhpRegister};
use gw_integration_tests::ws::Received;
use gw_integration_tests::{RegisterHandle, WorkerHandle, WsClient, eventually, gateway_client};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The Rust counterpart of `mixed_events.php`.
struct RustLogin;

impl Events for RustLogin {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let name = msg.as_text().unwrap_or_default().to_string();
        if name == "whoami" {
            ctx.send(format!("rust-session:{}", serde_json::Value::Object(ctx.session.clone()))).await?;
            return Ok(());
        }
        ctx.gateway().bind_uid(&ctx.client_id, &name).await?;
        ctx.gateway().join_group(&ctx.client_id, "all").await?;
        ctx.session.insert("name".into(), name.clone().into());
        ctx.send(format!("rust:{name}:{}", ctx.client_id)).await?;
        Ok(())
    }
}

async fn text(c: &mut WsClient) -> String {
    match c.next(Duration::from_secs(10)).await {
        Some(Received::Text(t)) => t,
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// One PHP worker process running `mixed_events.php` (copied into `dir` as `Events.php`).
fn start_php_worker(
    php: &Php,
    dir: &Path,
    php_register: std::net::SocketAddr,
) -> gw_integration_tests::php::PhpProcess {
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/mixed_events.php"), dir.join("Events.php"))
        .unwrap();
    gw_integration_tests::process::write_config(
        dir,
        "start.php",
        &format!(
            r#"<?php
use Workerman\Worker;
require_once __DIR__ . '/vendor/autoload.php';
require_once __DIR__ . '/Events.php';
Worker::$pidFile = __DIR__ . '/workerman.pid';
Worker::$logFile = __DIR__ . '/workerman.log';
$worker = new GatewayWorker\BusinessWorker();
$worker->name = 'MixedWorker';
$worker->count = 1;
$worker->registerAddress = '{php_register}';
$worker->onWorkerStart = function () {{
    \Workerman\Timer::add(1, function () {{ if (posix_getppid() === 1) {{ exit(0); }} }});
}};
Worker::runAll();
"#
        ),
    );
    php.run(dir, &["start.php", "start"])
}

/// A register, a GatewayWorker register, a gateway with a `[gatewayworker]` listener and one PHP
/// worker running `mixed_events.php` in the app directory `app`, the worker linked.
struct PhpCluster {
    gw: PhpGateway,
    dir: PathBuf,
    worker: gw_integration_tests::php::PhpProcess,
    _register: RegisterHandle,
    _php_register: PhpRegister,
}

impl PhpCluster {
    async fn start(php: &Php, app: &str) -> Self {
        let register = RegisterHandle::start("s").await;
        let php_register = PhpRegister::start("").await;
        let gw = PhpGateway::start(&[register.addr], "s", php_register.addr, "").await;
        php_register.wait_for_gateways(1).await;
        let dir = php.app_dir(app);
        let worker = start_php_worker(php, &dir, php_register.addr);
        gw_integration_tests::wait_for_workers(&gw.gateway, 1).await;
        Self { gw, dir, worker, _register: register, _php_register: php_register }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_and_rust_workers_and_backends_serve_the_same_clients() {
    let Some(php) = Php::find("php_and_rust_workers_and_backends_serve_the_same_clients") else { return };
    let register = RegisterHandle::start("s").await;
    let php_register = PhpRegister::start("").await;
    let gw = PhpGateway::start(&[register.addr], "s", php_register.addr, "").await;
    php_register.wait_for_gateways(1).await;

    let dir = php.app_dir("php-mixed");
    let php_worker = start_php_worker(&php, &dir, php_register.addr);
    let _rust_worker = WorkerHandle::start("rust-worker", &[register.addr], "s", RustLogin);
    gw_integration_tests::wait_for_workers(&gw.gateway, 2).await;

    // Clients are routed to both workers (least-loaded first), each by its own kind of id.
    let mut clients = Vec::new();
    let (mut by_php, mut by_rust) = (0, 0);
    for i in 0..6 {
        let url = format!("{}?room=r{i}&x=a+b", gw.gateway.ws_url);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Cookie", format!("sid=s{i}").parse().unwrap());
        let mut c = WsClient::connect_request(req).await;
        let name = format!("user-{i}");
        c.send(&name).await;
        let mut reply = text(&mut c).await;
        if reply.starts_with('{') {
            // onWebSocketConnect of the PHP worker: $_GET, cookies and $_SERVER as PHP builds them.
            let ws: serde_json::Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(ws["ws"], serde_json::json!({"room": format!("r{i}"), "x": "a b"}));
            assert_eq!(ws["cookie"], serde_json::json!({"sid": format!("s{i}")}));
            assert_eq!(ws["uri"], format!("/?room=r{i}&x=a+b"));
            assert_eq!(ws["remote"], "127.0.0.1");
            reply = text(&mut c).await;
        }
        let parts: Vec<&str> = reply.splitn(3, ':').collect();
        assert_eq!(parts[1], name, "{reply}");
        match parts[0] {
            "php" => {
                by_php += 1;
                assert!(parts[2].parse::<gw_gatewayworker_protocol::PhpClientId>().is_ok(), "{reply}");
            }
            "rust" => {
                by_rust += 1;
                assert!(parts[2].parse::<gw_proto::ClientId>().is_ok(), "{reply}");
            }
            other => panic!("unexpected reply {other}"),
        }
        clients.push(c);
    }
    assert!(by_php > 0 && by_rust > 0, "clients were not routed to both workers: php {by_php}, rust {by_rust}");

    // Sessions written by each kind of worker are visible to the other kind of backend.
    let rust = gateway_client(&[register.addr], "s", 1).await;
    let sessions = rust.sessions().await.unwrap().value;
    let mut names: Vec<String> = sessions.values().filter_map(|s| s["name"].as_str().map(String::from)).collect();
    names.sort();
    assert_eq!(names, (0..6).map(|i| format!("user-{i}")).collect::<Vec<_>>());

    // Both backends push to every client, whichever worker serves it.
    for i in 0..6 {
        rust.send_to_uid(&format!("user-{i}"), format!("rust-push-{i}")).await.unwrap();
    }
    let script = format!(
        r#"require '{}/gateway-client/Gateway.php';
GatewayClient\Gateway::$registerAddress = '{}';
for ($i = 0; $i < 6; $i++) {{ GatewayClient\Gateway::sendToUid("user-$i", "php-push-$i"); }}
GatewayClient\Gateway::sendToGroup('all', 'php-group');
echo count(GatewayClient\Gateway::getAllClientSessions());"#,
        php.peers.display(),
        php_register.addr
    );
    let out = std::process::Command::new(&php.php).arg("-r").arg(&script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "6", "{}", String::from_utf8_lossy(&out.stderr));
    rust.send_to_group("all", "rust-group").await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(text(c).await);
        }
        got.sort();
        let mut want = vec![format!("php-push-{i}"), format!("rust-push-{i}"), "php-group".into(), "rust-group".into()];
        want.sort();
        assert_eq!(got, want, "client {i}");
        c.expect_silence(Duration::from_millis(100)).await;
    }
    php_worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_workers_get_close_events_when_a_gateway_stops() {
    let Some(php) = Php::find("php_workers_get_close_events_when_a_gateway_stops") else { return };
    let cluster = PhpCluster::start(&php, "php-close").await;

    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = cluster.gw.gateway.client().await;
        c.send(&format!("user-{i}")).await;
        let reply = loop {
            let t = text(&mut c).await;
            if t.starts_with("php:") {
                break t;
            }
        };
        ids.push(reply.rsplit(':').next().unwrap().to_string());
        clients.push(c);
    }
    // The gateway stops: every client is closed and the PHP worker hears of each, with its session.
    cluster.gw.stop().await;
    let log = cluster.dir.join("closes.log");
    eventually(Duration::from_secs(10), "PHP onClose for every client", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all = ids.iter().enumerate().all(|(i, id)| text.contains(&format!("close {id} user-{i}")));
        async move { all }
    })
    .await;
    cluster.worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_workers_send_then_destroy_delivers_the_message_first() {
    let Some(php) = Php::find("a_php_workers_send_then_destroy_delivers_the_message_first") else { return };
    let cluster = PhpCluster::start(&php, "php-destroy").await;
    // sendToCurrentClient then destoryCurrentClient: PHP's own gateway delivered the message in
    // 4 of 4 runs, ours lost it (the destroy overtook it). Ten rounds leave no room for luck.
    for round in 0..10 {
        let mut c = cluster.gw.gateway.client().await;
        assert!(text(&mut c).await.starts_with('{'), "onWebSocketConnect's echo first");
        c.send("bye").await;
        assert_eq!(c.next(Duration::from_secs(10)).await, Some(Received::Text("bye".into())), "round {round}");
        assert_eq!(c.next(Duration::from_secs(10)).await, Some(Received::Closed(None)), "round {round}");
    }
    cluster.worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_workers_session_past_the_cap_is_refused_and_counted() {
    let Some(php) = Php::find("a_php_workers_session_past_the_cap_is_refused_and_counted") else { return };
    let cluster = PhpCluster::start(&php, "php-big-session").await;
    let mut c = cluster.gw.gateway.client().await;
    assert!(text(&mut c).await.starts_with('{'), "onWebSocketConnect's echo first");
    c.send("ann").await;
    assert!(text(&mut c).await.starts_with("php:ann:"));
    // The worker writes back a session of 1.1 MB: over the 1 MiB default, so the gateway keeps
    // the one it had, and counts the refusal.
    c.send("big").await;
    assert_eq!(text(&mut c).await, "big");
    c.send("whoami").await;
    let session = text(&mut c).await;
    let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
        session.strip_prefix("php-session:").expect("the session"),
    )
    .unwrap()
    .keys()
    .cloned()
    .collect();
    assert_eq!(keys, ["name"], "the refused write-back left the session as it was");
    assert_eq!(cluster.gw.gateway.metric("refused_session_too_large"), 1);
    cluster.worker.stop();
}

/// PHP arrays keep their keys in the order written; a session written by a PHP worker and read
/// back on the next event must too (a reordered one also differs from the worker's own
/// serialization, so PHP fetches it again with `getSession` after every change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_session_keeps_the_order_of_its_keys() {
    let Some(php) = Php::find("a_php_session_keeps_the_order_of_its_keys") else { return };
    let cluster = PhpCluster::start(&php, "php-session-order").await;
    let mut c = cluster.gw.gateway.client().await;
    assert!(text(&mut c).await.starts_with('{'), "onWebSocketConnect's echo first");
    c.send("ann").await;
    assert!(text(&mut c).await.starts_with("php:ann:"));
    c.send("order").await;
    assert_eq!(text(&mut c).await, "order");
    c.send("whoami").await;
    assert_eq!(
        text(&mut c).await,
        r#"php-session:{"name":"ann","zeta":1,"alpha":{"y":1,"x":2},"mid":"m"}"#,
        "the session PHP reads back, keys in the order PHP wrote them"
    );
    cluster.worker.stop();
}
