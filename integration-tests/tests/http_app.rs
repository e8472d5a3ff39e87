//! The `http` application with a real endpoint: a Python (standard library) chat endpoint
//! (`tests/chat_endpoint.py`) runs login/say/logout through real gateways and workers, keeps
//! working through an endpoint that fails mid-run (500s, garbage, dropped connections, a refusal,
//! a dead spell longer than the event timeout), and a `business-worker reload` under numbered
//! traffic loses nothing. Skips, saying so, without python3 unless `GW_REQUIRE_PYTHON=1`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gw_config::{HttpAppConfig, WorkerConfig};
use gw_integration_tests::process::{
    StopOnPanic, cli, http_get, install_binary, log_field, start_reloadable_workers, wait_for_file_line,
};
use gw_integration_tests::*;
use gw_stock_apps::HttpApp;
use serde_json::{Value, json};

const SECRET: &str = "http-app-test-secret-0123456789";

/// The Python endpoint, killed on drop.
struct Endpoint {
    child: Child,
    port: u16,
}

impl Endpoint {
    /// Starts it, or says why not (no python3).
    fn start() -> Option<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chat_endpoint.py");
        let child = Command::new("python3").arg(script).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but python3: {e}");
                eprintln!("SKIP: python3 not found ({e})");
                return None;
            }
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port =
            line.trim().strip_prefix("LISTENING ").unwrap_or_else(|| panic!("endpoint said {line:?}")).parse().unwrap();
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    fn control(&self, body: Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.to_string();
        write!(
            s,
            "POST /control HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    fn counters(&self) -> Value {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.port), "/control");
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn app_config(endpoint: &Endpoint) -> HttpAppConfig {
    HttpAppConfig {
        url: endpoint.url(),
        timeout: Duration::from_secs(3),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..HttpAppConfig::default()
    }
}

async fn login(gw: &GatewayHandle, name: &str) -> (WsClient, String) {
    let mut ws = WsClient::connect(&format!("{}chat?name={name}", gw.ws_url)).await;
    let welcome = ws.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(
        (welcome["path"].as_str(), welcome["protocol"].as_str()),
        (Some("/chat"), Some("websocket")),
        "{welcome}"
    );
    assert_eq!(welcome["query"], format!("name={name}"));
    assert_eq!(welcome["redelivered"], false);
    let id = welcome["client_id"].as_str().unwrap().to_string();
    ws.send(&json!({"type": "login", "name": name, "room": "lobby"}).to_string()).await;
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_endpoint_runs_the_chat_and_survives_its_own_failures() {
    let Some(endpoint) = Endpoint::start() else { return };
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let app = HttpApp::new(app_config(&endpoint)).unwrap();
    let stats = app.stats.clone();
    let config = WorkerConfig {
        name: "http-worker".into(),
        app: "http".into(),
        registers: vec![reg.addr.to_string()],
        secret: SECRET.into(),
        link: fast_link(),
        ..WorkerConfig::default()
    };
    let worker = WorkerHandle::start_config(config, app);
    wait_for_workers(&gw, 1).await;

    let (mut ann, ann_id) = login(&gw, "Ann").await;
    assert_eq!(ann.recv_json().await, json!({"type": "login", "name": "Ann"}));
    let (mut bob, _) = login(&gw, "Bob").await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(ws.recv_json().await, json!({"type": "login", "name": "Bob"}));
    }
    // The session the endpoint set on login comes back with the next event.
    ann.send(r#"{"type":"say","content":"hello"}"#).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(ws.recv_json().await, json!({"type": "say", "from": "Ann", "content": "hello"}));
    }
    let session = gateway_client(&[reg.addr], SECRET, 1).await.session(&ann_id.parse().unwrap()).await.unwrap();
    assert_eq!(session.unwrap().get("room"), Some(&json!("lobby")));

    // Mid-run failures: 500s, garbage and dropped connections are retried until they pass.
    for mode in ["500", "garbage", "close"] {
        endpoint.control(json!({"fail": 3, "mode": mode}));
        bob.send(&json!({"type": "say", "content": format!("through {mode}")}).to_string()).await;
        for ws in [&mut ann, &mut bob] {
            assert_eq!(ws.recv_json().await["content"], format!("through {mode}"));
        }
    }
    assert!(stats.retries.load(Ordering::Relaxed) >= 9, "retries: {stats:?}");
    // The endpoint may have acted on an attempt that failed (it answered 500 or garbage, or
    // dropped the connection after reading the event): every retry says so.
    let c = endpoint.counters();
    assert_eq!(c["failed"], 9, "{c}");
    assert_eq!(c["redelivered"], 9, "each failed attempt's retry is flagged redelivered: {c}");
    // A refusal (400) is not retried; the event is given up and the client goes on.
    ann.send("poison").await;
    ann.send(r#"{"type":"say","content":"after poison"}"#).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(ws.recv_json().await["content"], "after poison");
    }
    // Dead for longer than the event's timeout: that event is given up, counted, and the worker
    // is not stalled: the next event goes through once the endpoint is back.
    endpoint.control(json!({"fail": 1_000_000, "mode": "500"}));
    let failures_before = stats.failures.load(Ordering::Relaxed);
    bob.send(r#"{"type":"say","content":"lost to a dead endpoint"}"#).await;
    let s = stats.clone();
    eventually(Duration::from_secs(15), "the event is given up", || {
        let n = s.failures.load(Ordering::Relaxed);
        async move { n > failures_before }
    })
    .await;
    endpoint.control(json!({"fail": 0}));
    bob.send(r#"{"type":"say","content":"back"}"#).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(ws.recv_json().await["content"], "back", "the given-up message was not delivered later either");
    }
    assert_eq!(stats.failures.load(Ordering::Relaxed), 2, "the refusal and the dead spell: {stats:?}");
    // Counted where every handler error is (gw_worker_handler_errors_total).
    assert_eq!(worker.stats.handler_errors(), 2);

    // Every failed attempt but the last of the given-up event was retried, flagged.
    let c = endpoint.counters();
    assert_eq!(c["redelivered"].as_u64().unwrap() + 1, c["failed"].as_u64().unwrap(), "{c}");

    // Logout: close event, the endpoint tells the room.
    ann.close().await;
    assert_eq!(bob.recv_json().await, json!({"type": "logout", "name": "Ann"}));
    worker.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_http_workers_under_numbered_traffic_loses_nothing() {
    const CLIENTS: usize = 10;
    let Some(endpoint) = Endpoint::start() else { return };
    let reg = RegisterHandle::start(SECRET).await;
    let gw = GatewayHandle::start(&[reg.addr], SECRET).await;
    let (dir, bin, cfg) = start_reloadable_workers(
        "http-reload",
        "http",
        reg.addr,
        SECRET,
        &format!("[http_app]\nurl = \"{}\"", endpoint.url()),
    );
    let _stop_on_panic = StopOnPanic::new(&bin, &cfg);
    wait_for_workers(&gw, 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, stop) = (gw.ws_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ws = WsClient::connect(&url).await;
                assert_eq!(ws.recv_json().await["type"], "welcome");
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    ws.send(&format!("c{c}-{n}")).await;
                    assert_eq!(ws.recv().await, format!("c{c}-{n}"), "client {c}: lost, repeated or reordered");
                    n += 1;
                }
                (n, ws)
            })
        })
        .collect();
    gw.wait_for_more_messages(200, "traffic flowing").await;
    install_binary(&bin);
    let (bin2, cfg2) = (bin.clone(), cfg.clone());
    let out = tokio::task::spawn_blocking(move || cli(&bin2, &["--config", &cfg2, "reload"])).await.unwrap();
    assert_eq!(out.code, Some(0), "reload: {}", out.text());
    gw.wait_for_more_messages(200, "traffic after the reload").await;
    stop.store(true, Ordering::Relaxed);
    let (total, _clients) = join_traffic(tasks).await;
    assert_eq!(gw.metric("connections"), CLIENTS as u64, "no client was disconnected");
    assert_eq!(gw.metric("redelivered"), 0);
    assert_eq!(gw.metric("dropped_no_worker"), 0);
    assert_eq!(endpoint.counters()["redelivered"], 0);
    // The application's own counters are in the master's /metrics, and survive the reload: every
    // numbered message was one request (connects and closes are more).
    let line = wait_for_file_line(&dir.join("rw.log"), "serving /metrics", Duration::from_secs(10));
    let (code, body) = http_get(&log_field(&line, "admin"), "/metrics");
    assert_eq!(code, 200, "{body}");
    let sum = |name: &str| -> f64 {
        let series: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{process=\"rw-")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        assert_eq!(series.len(), 2, "{name} of both processes in:\n{body}");
        series.iter().sum()
    };
    assert!(sum("gw_worker_http_requests_total") >= total as f64, "{total} messages:\n{body}");
    assert_eq!(sum("gw_worker_http_retries_total"), 0.0);
    assert_eq!(sum("gw_worker_http_failures_total"), 0.0);
    println!(
        "HTTP RELOAD: {total} numbered messages from {CLIENTS} clients through the endpoint, all answered once and in order"
    );
    let out = cli(&bin, &["--config", &cfg, "stop"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let _ = std::fs::remove_dir_all(dir);
}
