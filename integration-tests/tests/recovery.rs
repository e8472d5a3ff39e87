//! Connection state recovery on the same gateway (issue 25, R1; `docs/recovery.md`): a client
//! dropped abruptly (reset) or by heartbeat loss resumes with its token and gets every message
//! sent meanwhile exactly once, in order, under the same client id with its uid, groups and
//! session; the worker sees `on_resume`, not close and connect. And every way it can fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_config::RecoveryConfig;
use gw_gateway_client::{ClientId, GatewayClient};
use gw_integration_tests::cut_proxy::CutProxy;
use gw_integration_tests::recovering::{
    EventLog, Outcome, RecoveringClient, ScriptedClient, node_websocket, numbers, python_websocket_client,
};
use gw_integration_tests::ws::Received;
use gw_integration_tests::*;

const SECRET: &str = "recovery-secret-0123456789";

/// What the worker saw.
type Log = EventLog;

struct Cluster {
    _register: RegisterHandle,
    gateway: GatewayHandle,
    _worker: WorkerHandle,
    backend: GatewayClient,
    log: Log,
}

async fn cluster(tweak: impl FnOnce(&mut gw_config::GatewayConfig)) -> Cluster {
    let register = RegisterHandle::start(SECRET).await;
    let gateway = GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.recovery = RecoveryConfig { enabled: true, window: Duration::from_secs(30), ..RecoveryConfig::default() };
        tweak(c);
    })
    .await;
    let log = Log::default();
    let worker = WorkerHandle::start("w", &[register.addr], SECRET, log.clone());
    wait_for_workers(&gateway, 1).await;
    let backend = gateway_client(&[register.addr], SECRET, 1).await;
    Cluster { _register: register, gateway, _worker: worker, backend, log }
}

impl Cluster {
    async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn held(&self, n: u64) {
        self.until(&format!("{n} held clients"), |c| c.gateway.metric("recovery_held_clients") == n).await;
    }

    async fn saw(&self, client: &str, event: &str) {
        self.until(&format!("{event} of {client}"), |c| c.log.of(client).iter().any(|e| e == event)).await;
    }
}

fn id(text: &str) -> ClientId {
    text.parse().unwrap()
}

/// Sends message `n` by the n-th way: to the client, its uid, its group, everyone.
async fn send_numbered(backend: &GatewayClient, client: &ClientId, n: u64) {
    let text = format!("n{n}");
    match n % 4 {
        0 => backend.send_to_client(client, text).await.unwrap(),
        1 => backend.send_to_uid("alice", text).await.unwrap(),
        2 => backend.send_to_group("room", text).await.unwrap(),
        _ => backend.send_to_all(text).await.unwrap(),
    }
}

async fn expect_numbered(client: &mut RecoveringClient, from: u64, to: u64) {
    for n in from..=to {
        assert_eq!(client.recv().await, format!("n{n}"), "message {n} of {to}, in order, once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_client_resumes_and_gets_every_message_once_in_order() {
    let c = cluster(|_| {}).await;
    let mut client = RecoveringClient::connect(&c.gateway.ws_url).await;
    assert_eq!(client.outcome, Outcome::Fresh);
    let cid = id(&client.client_id);
    c.backend.bind_uid(&cid, "alice").await.unwrap();
    c.backend.join_group(&cid, "room").await.unwrap();
    let session: gw_gateway_client::Session = serde_json::from_str(r#"{"name":"alice","n":7}"#).unwrap();
    c.backend.set_session(&cid, &session).await.unwrap();
    c.saw(&client.client_id, "connect").await;

    // Some arrive; some are written to the socket but never read; the rest are sent while the
    // client is away.
    let total = 400;
    for n in 1..=100 {
        send_numbered(&c.backend, &cid, n).await;
    }
    expect_numbered(&mut client, 1, 60).await;
    client.ack().await;
    let (token, received) = (client.token.clone(), client.received);
    assert_eq!(received, 60);
    client.ws.reset();
    c.held(1).await;
    assert!(c.gateway.metric("recovery_held_bytes") > 0);
    for n in 101..=300 {
        send_numbered(&c.backend, &cid, n).await;
    }
    // Still a member of its uid and group while held. (The queries also make sure the sends
    // before them were executed: one link, in order.)
    assert_eq!(c.backend.client_ids_by_uid("alice").await.unwrap().value, vec![cid.clone()]);
    assert_eq!(c.backend.client_ids_by_group("room").await.unwrap().value, vec![cid.clone()]);

    let mut client = RecoveringClient::resume_with(&c.gateway.ws_url, &token, received).await;
    assert_eq!(client.outcome, Outcome::Resumed { replayed: 240 });
    assert_eq!(client.client_id, cid.to_string(), "same client id");
    assert_ne!(client.token, token, "a fresh token");
    for n in 301..=total {
        send_numbered(&c.backend, &cid, n).await;
    }
    expect_numbered(&mut client, 61, total).await;
    assert_eq!(client.received, total);

    assert_eq!(c.backend.session(&cid).await.unwrap(), Some(session), "session intact");
    assert_eq!(c.backend.client_ids_by_uid("alice").await.unwrap().value, vec![cid.clone()]);
    assert_eq!(c.backend.client_ids_by_group("room").await.unwrap().value, vec![cid.clone()]);
    c.saw(&client.client_id, "resume:240").await;
    assert_eq!(c.log.of(&client.client_id), ["connect", "resume:240"], "no close/connect pair");
    assert_eq!(c.gateway.metric("recovery_held_clients"), 0);
    assert_eq!(c.gateway.metric("recovery_held_bytes"), 0);
    assert_eq!(c.gateway.metric("recovery_resumed"), 1);
    assert_eq!(c.gateway.metric("recovery_replayed_messages"), 240);

    // Messages from the client still reach the worker, and an escaped one arrives unescaped.
    client.ws.send("\0\0raw").await;
    client.ws.send("hello").await;
    c.saw(&client.client_id, "message:hello").await;
    assert!(c.log.of(&client.client_id).contains(&"message:\0raw".to_string()));
    // A clean close ends it for good: on_close once, no hold.
    client.ws.close().await;
    c.saw(&cid.to_string(), "close").await;
    assert_eq!(c.gateway.metric("recovery_held_clients"), 0);
    assert_eq!(c.log.of(&cid.to_string()).iter().filter(|e| *e == "close").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_past_the_heartbeat_is_held_and_resumes() {
    let c = cluster(|g| {
        g.ping_interval = Duration::from_millis(100);
        g.ping_not_response_limit = 1;
    })
    .await;
    let mut client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let cid = id(&client.client_id);
    c.backend.send_to_client(&cid, "before").await.unwrap();
    assert_eq!(client.recv().await, "before");
    let (token, received) = (client.token.clone(), client.received);
    // It stops reading (so it answers no ping) and sends nothing: the gateway closes it.
    let stalled = client.ws;
    c.held(1).await;
    c.backend.send_to_client(&cid, "while away").await.unwrap();
    // Recorded for the held client ("before" was never acknowledged, so it is kept too).
    c.until("the message recorded", |c| c.gateway.metric("recovery_held_bytes") == 16).await;
    drop(stalled);
    let mut client = RecoveringClient::resume_with(&c.gateway.ws_url, &token, received).await;
    assert_eq!(client.outcome, Outcome::Resumed { replayed: 1 });
    assert_eq!(client.recv().await, "while away");
    assert_eq!(client.client_id, cid.to_string());
    c.saw(&client.client_id, "resume:1").await;
    assert!(!c.log.of(&client.client_id).contains(&"close".to_string()));
}

/// The old client's `on_close` ran exactly once, and a new client id came instead.
async fn not_recovered(c: &Cluster, token: &str, received: u64, reason: &str, old: &str) -> RecoveringClient {
    let before = c.gateway.metric(&format!("recovery_failed_{reason}"));
    let client = RecoveringClient::resume_with(&c.gateway.ws_url, token, received).await;
    match &client.outcome {
        Outcome::NotRecovered { reason: r, .. } => assert_eq!(r, reason, "{:?}", client.outcome),
        other => panic!("expected not_recovered {reason}, got {other:?}"),
    }
    assert_ne!(client.client_id, old, "a new connection");
    assert_eq!(c.gateway.metric(&format!("recovery_failed_{reason}")), before + 1);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_gap_are_told_counted_and_closed_once() {
    let c = cluster(|g| {
        g.recovery.window = Duration::from_millis(300);
        g.recovery.max_messages = 5;
    })
    .await;

    // Forged: a token for this client with another signature (the held client stays held).
    let client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let (token, old) = (client.token.clone(), client.client_id.clone());
    client.ws.reset();
    c.held(1).await;
    let forged = format!("{}.AAAA", token.rsplit_once('.').unwrap().0);
    not_recovered(&c, &forged, 0, "forged", &old).await.ws.close().await;
    // Expired: the window ends, on_close runs once, then the token is stale.
    c.saw(&old, "close").await;
    c.held(0).await;
    not_recovered(&c, &token, 0, "expired", &old).await.ws.close().await;
    assert_eq!(c.log.of(&old).iter().filter(|e| *e == "close").count(), 1);

    // Replayed: an old token after a resume.
    let client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let (token, old) = (client.token.clone(), client.client_id.clone());
    client.ws.reset();
    c.held(1).await;
    let resumed = RecoveringClient::resume_with(&c.gateway.ws_url, &token, 0).await;
    assert_eq!(resumed.outcome, Outcome::Resumed { replayed: 0 });
    not_recovered(&c, &token, 0, "replayed", &old).await.ws.close().await;
    resumed.ws.close().await;
    c.saw(&old, "close").await;

    // Gap: more messages while away than the cap keeps: released at once, told `gap`.
    let client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let (token, old) = (client.token.clone(), client.client_id.clone());
    client.ws.reset();
    c.held(1).await;
    for n in 1..=6 {
        c.backend.send_to_client(&id(&old), format!("n{n}")).await.unwrap();
    }
    c.saw(&old, "close").await;
    c.held(0).await;
    let fresh = not_recovered(&c, &token, 0, "gap", &old).await;
    assert_eq!(c.log.of(&old).iter().filter(|e| *e == "close").count(), 1);
    assert_eq!(c.gateway.metric("recovery_held_bytes"), 0);

    // As /metrics shows them.
    use gw_daemon::Node;
    let node = gw_gateway::GatewayNode::new(c.gateway.gw.clone());
    let text = gw_daemon::report::render_prometheus(node.metrics().await);
    for line in [
        "gw_recovery_failed_total{reason=\"forged\"} 1",
        "gw_recovery_failed_total{reason=\"expired\"} 1",
        "gw_recovery_failed_total{reason=\"replayed\"} 1",
        "gw_recovery_failed_total{reason=\"gap\"} 1",
        "gw_recovery_failed_total{reason=\"unknown\"} 0",
        "gw_recovery_resumed_total 1",
        "gw_recovery_held_clients 0",
        "gw_recovery_held_bytes 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    // Malformed parameters and a wrong count are told too.
    let mut ws = WsClient::connect(&format!("{}?gw_resume=x", c.gateway.ws_url)).await;
    let frame = ws.recv().await;
    assert!(frame.starts_with("\0{") && frame.contains("\"malformed\""), "{frame:?}");
    let frame = ws.recv().await;
    assert!(frame.contains("\"recovery\""), "a fresh connection with recovery: {frame:?}");
    fresh.ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resumes_racing_with_one_token_resume_exactly_once() {
    let c = cluster(|_| {}).await;
    for _ in 0..5 {
        let client = RecoveringClient::connect(&c.gateway.ws_url).await;
        let (token, old) = (client.token.clone(), client.client_id.clone());
        client.ws.reset();
        c.held(1).await;
        let url = c.gateway.ws_url.clone();
        let (a, b) = tokio::join!(
            RecoveringClient::resume_with(&url, &token, 0),
            RecoveringClient::resume_with(&url, &token, 0)
        );
        let resumed: Vec<_> = [&a, &b].into_iter().filter(|x| matches!(x.outcome, Outcome::Resumed { .. })).collect();
        assert_eq!(resumed.len(), 1, "{:?} / {:?}", a.outcome, b.outcome);
        assert_eq!(resumed[0].client_id, old);
        let loser = if matches!(a.outcome, Outcome::Resumed { .. }) { &b } else { &a };
        assert!(matches!(&loser.outcome, Outcome::NotRecovered { reason, .. } if reason == "replayed"));
        a.ws.close().await;
        b.ws.close().await;
        c.held(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_still_connected_client_takes_it_over() {
    let c = cluster(|_| {}).await;
    let mut old = RecoveringClient::connect(&c.gateway.ws_url).await;
    let cid = id(&old.client_id);
    c.backend.send_to_client(&cid, "one").await.unwrap();
    assert_eq!(old.recv().await, "one");
    // Half-open: the client thinks the socket died; the gateway still holds it as connected.
    let mut new = RecoveringClient::resume_with(&c.gateway.ws_url, &old.token, old.received).await;
    assert_eq!(new.outcome, Outcome::Resumed { replayed: 0 });
    assert_eq!(new.client_id, cid.to_string());
    match old.ws.next(Duration::from_secs(10)).await {
        Some(Received::Closed(Some((code, _)))) => assert_eq!(code, 4001),
        other => panic!("the old socket is closed with 4001, got {other:?}"),
    }
    c.backend.send_to_client(&cid, "two").await.unwrap();
    assert_eq!(new.recv().await, "two");
    c.saw(&new.client_id, "resume:0").await;
    assert_eq!(c.log.of(&new.client_id), ["connect", "resume:0"]);
    c.until("one connection", |c| c.gateway.metric("connections") == 1).await;
    assert_eq!(c.gateway.metric("recovery_held_clients"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_ask_sees_no_recovery_at_all() {
    let c = cluster(|_| {}).await;
    let mut plain = c.gateway.client().await;
    plain.send("hi").await;
    // The worker learns its id from the message event.
    c.until("a message", |c| c.log.0.lock().unwrap().iter().any(|(e, _)| e == "message:hi")).await;
    let cid = c.log.0.lock().unwrap().iter().find(|(e, _)| e == "message:hi").unwrap().1.clone();
    c.backend.send_to_client(&id(&cid), "\0raw").await.unwrap();
    c.backend.send_to_client(&id(&cid), "plain").await.unwrap();
    assert_eq!(plain.recv().await, "\0raw", "byte for byte, no escape, no control frame");
    assert_eq!(plain.recv().await, "plain");
    // Dropped abruptly it is not held: on_close at once.
    plain.reset();
    c.saw(&cid, "close").await;
    assert_eq!(c.gateway.metric("recovery_held_clients"), 0);
    // A recovering client gets the escape, and strips it.
    let mut rc = RecoveringClient::connect(&c.gateway.ws_url).await;
    c.backend.send_to_client(&id(&rc.client_id), "\0raw").await.unwrap();
    assert_eq!(rc.recv().await, "\0raw");
    assert_eq!(rc.received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_recovery_off_a_resume_is_told_disabled() {
    let c = cluster(|g| g.recovery.enabled = false).await;
    let mut ws = WsClient::connect(&format!("{}?gw_recover=1&gw_resume=a.b.c&gw_received=0", c.gateway.ws_url)).await;
    let frame = ws.recv().await;
    assert!(frame.starts_with('\0') && frame.contains("\"disabled\""), "{frame:?}");
    // No recovery frame follows: a plain connection.
    c.backend.send_to_all("x").await.unwrap();
    assert_eq!(ws.recv().await, "x");
    assert_eq!(c.gateway.metric("recovery_failed_disabled"), 1);
    // gw_recover alone is ignored. (The upgrade's answer can reach the client before the
    // gateway has it in its map: the broadcast waits until it does.)
    let mut ws = WsClient::connect(&format!("{}?gw_recover=1", c.gateway.ws_url)).await;
    c.until("both connected", |c| c.gateway.metric("connections") == 2).await;
    c.backend.send_to_all("y").await.unwrap();
    assert_eq!(ws.recv().await, "y");
}

/// A minimal HTTP endpoint for the `http` application: records every event's JSON, answers 200
/// with no body (nothing to do).
async fn endpoint() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; length];
                    socket.read_exact(&mut body).await.unwrap();
                    seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    socket.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (url, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_app_posts_a_resume_event_and_no_close_connect_pair() {
    let (url, events) = endpoint().await;
    let register = RegisterHandle::start(SECRET).await;
    let gateway = GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.recovery = RecoveryConfig { enabled: true, ..RecoveryConfig::default() };
    })
    .await;
    let app = gw_stock_apps::HttpApp::new(gw_config::HttpAppConfig { url, ..Default::default() }).unwrap();
    let _worker = WorkerHandle::start("http", &[register.addr], SECRET, app);
    wait_for_workers(&gateway, 1).await;
    let client = RecoveringClient::connect(&gateway.ws_url).await;
    let cid = client.client_id.clone();
    let kinds = |cid: &str| -> Vec<String> {
        let events = events.lock().unwrap();
        events.iter().filter(|e| e["client_id"] == cid).map(|e| e["event"].as_str().unwrap().to_owned()).collect()
    };
    eventually(Duration::from_secs(10), "connect posted", || {
        let n = kinds(&cid).len();
        async move { n == 1 }
    })
    .await;
    let client = client.reconnect(&gateway.ws_url).await;
    assert_eq!(client.outcome, Outcome::Resumed { replayed: 0 });
    eventually(Duration::from_secs(10), "resume posted", || {
        let n = kinds(&cid).len();
        async move { n == 2 }
    })
    .await;
    assert_eq!(kinds(&cid), ["connect", "resume"]);
    let resume = events.lock().unwrap().iter().find(|e| e["event"] == "resume").cloned().unwrap();
    assert_eq!(resume["replayed"], 0);
    assert_eq!(resume["server"]["client_addr"], client.ws.local_addr().to_string(), "its new address");
}

/// The Python helper (`clients/python/gatewayrs_recovery.py`) through a reset: every message
/// once, in order, same client id. Skips, saying so, without Python's websocket-client unless
/// `GW_REQUIRE_PYTHON=1` (`scripts/install-python-deps.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_helper_resumes_after_a_reset() {
    if let Err(why) = python_websocket_client() {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!("SKIP the_python_helper_resumes_after_a_reset: {why} (run scripts/install-python-deps.sh)");
        return;
    }
    let c = cluster(|_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recovery_client.py");
    let mut helper = ScriptedClient::spawn("python3", &[script, &c.gateway.ws_url]);
    let line = helper.said().await;
    let cid = line.strip_prefix("ID ").unwrap_or_else(|| panic!("{line}")).to_owned();
    for n in 1..=50 {
        c.backend.send_to_client(&id(&cid), format!("n{n}")).await.unwrap();
    }
    helper.tell("READ 20").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(1, 20)));
    helper.tell("DROP").await;
    assert_eq!(helper.said().await, "DROPPED");
    c.held(1).await;
    for n in 51..=80 {
        c.backend.send_to_client(&id(&cid), format!("n{n}")).await.unwrap();
    }
    let _ = c.backend.client_count().await; // the sends before it were executed
    helper.tell("RESUME").await;
    assert_eq!(helper.said().await, format!("RESUMED {cid} 60"));
    helper.tell("READ 60").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(21, 80)));
    helper.quit().await;
    c.saw(&cid, "close").await;
    assert_eq!(c.log.of(&cid), ["connect", "resume:60", "close"]);
}

/// What a client sent that the gateway never read (in flight when its network died) is sent
/// again after the resume, from the count the gateway gives (`accepted`): the worker gets every
/// message once, in order. Sent by the Rust test client, then by the Python helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_gateway_never_read_is_sent_again_after_the_resume_and_reaches_the_worker_once() {
    let c = cluster(|_| {}).await;
    let proxy = CutProxy::start(&c.gateway.ws_url).await;
    let mut client = RecoveringClient::connect(&proxy.url).await;
    let cid = client.client_id.clone();
    for n in 1..=3 {
        client.send_counted(&format!("up{n}")).await;
    }
    c.saw(&cid, "message:up3").await;
    // The network dies with three messages on their way: the gateway never reads them.
    proxy.swallow();
    for n in 4..=6 {
        client.send_counted(&format!("up{n}")).await;
    }
    proxy.cut();
    c.held(1).await;
    let mut client = client.reconnect(&c.gateway.ws_url).await;
    assert!(matches!(client.outcome, Outcome::Resumed { replayed: 0 }), "{:?}", client.outcome);
    assert_eq!((client.accepted, client.resent), (Some(3), 3), "the gateway took three; the other three go again");
    client.send_counted("up7").await;
    c.saw(&cid, "message:up7").await;
    // A second drop with nothing in flight: nothing is sent twice.
    client.ws.reset();
    c.held(1).await;
    let client = RecoveringClient::resume_with(&c.gateway.ws_url, &client.token, client.received).await;
    assert_eq!(client.accepted, Some(7));
    let messages: Vec<String> =
        c.log.of(&cid).into_iter().filter_map(|e| e.strip_prefix("message:").map(str::to_string)).collect();
    assert_eq!(messages, (1..=7).map(|n| format!("up{n}")).collect::<Vec<_>>(), "each once, in order");
    client.ws.close().await;

    // The Python helper keeps what it sent and does the same by itself.
    if let Err(why) = python_websocket_client() {
        assert!(std::env::var_os("GW_REQUIRE_PYTHON").is_none(), "GW_REQUIRE_PYTHON is set but {why}");
        eprintln!("SKIP the Python part of what_the_gateway_never_read_is_sent_again: {why}");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recovery_client.py");
    let mut helper = ScriptedClient::spawn("python3", &[script, &proxy.url]);
    let line = helper.said().await;
    let cid = line.strip_prefix("ID ").unwrap_or_else(|| panic!("{line}")).to_owned();
    helper.tell("SEND p1 p2").await;
    assert_eq!(helper.said().await, "SENT");
    c.saw(&cid, "message:p2").await;
    proxy.swallow();
    helper.tell("SEND p3 p4").await;
    assert_eq!(helper.said().await, "SENT");
    proxy.cut();
    c.held(1).await;
    helper.tell(&format!("RESUME {}", c.gateway.ws_url)).await;
    assert_eq!(helper.said().await, format!("RESUMED {cid} 0"));
    helper.tell("RESENT").await;
    assert_eq!(helper.said().await, "RESENT 2 LOST 0");
    c.saw(&cid, "message:p4").await;
    helper.quit().await;
    c.saw(&cid, "close").await;
    let messages: Vec<String> =
        c.log.of(&cid).into_iter().filter_map(|e| e.strip_prefix("message:").map(str::to_string)).collect();
    assert_eq!(messages, ["p1", "p2", "p3", "p4"]);
}

/// A worker that logs each message when its handler starts, and takes `slow` ones slowly (so
/// they are unacknowledged for a while).
#[derive(Clone, Default)]
struct SlowLog(EventLog);

impl gw_business_worker::Events for SlowLog {
    async fn on_message(
        &self,
        ctx: &mut gw_business_worker::Context,
        msg: gw_business_worker::Message,
    ) -> gw_business_worker::HandlerResult {
        let slow = msg.as_text() == Some("slow") && !ctx.redelivered;
        let redelivered = if ctx.redelivered { " (redelivered)" } else { "" };
        let what = format!("{}{redelivered}", msg.as_text().unwrap_or_default());
        self.0.push(&format!("message:{what}"), ctx);
        if slow {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok(())
    }

    async fn on_resume(
        &self,
        ctx: &mut gw_business_worker::Context,
        replayed: u64,
    ) -> gw_business_worker::HandlerResult {
        gw_business_worker::Events::on_resume(&self.0, ctx, replayed).await
    }
}

/// A worker dies holding an event of a client that is away (held): the event waits for the
/// client's resume and reaches the next worker before the resume and before anything the
/// client sends after it, instead of racing them on a task of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_dead_worker_hands_back_while_the_client_is_away_go_before_its_resume() {
    let register = RegisterHandle::start(SECRET).await;
    let gateway = GatewayHandle::start_with(&[register.addr], SECRET, |c| {
        c.recovery = RecoveryConfig { enabled: true, window: Duration::from_secs(30), ..RecoveryConfig::default() };
    })
    .await;
    let log = SlowLog::default();
    let first = WorkerHandle::start("w1", &[register.addr], SECRET, log.clone());
    wait_for_workers(&gateway, 1).await;
    let mut client = RecoveringClient::connect(&gateway.ws_url).await;
    let cid = client.client_id.clone();
    client.ws.send("slow").await;
    let seen = |what: &str| log.0.of(&cid).iter().any(|e| e == what);
    eventually(Duration::from_secs(10), "the slow message at the first worker", || async { seen("message:slow") })
        .await;
    // The client drops (held), then its worker dies with the event unacknowledged.
    let (token, received) = (client.token.clone(), client.received);
    client.ws.reset();
    eventually(Duration::from_secs(10), "the client held", || async { gateway.metric("recovery_held_clients") == 1 })
        .await;
    first.kill();
    eventually(Duration::from_secs(10), "the dead worker's event handed back", || async {
        gateway.metric("redelivered") >= 1
    })
    .await;
    // Back before any worker is: its resume waits for one, as does the handed-back event.
    let url = gateway.ws_url.clone();
    let resuming = tokio::spawn(async move { RecoveringClient::resume_with(&url, &token, received).await });
    eventually(Duration::from_secs(10), "the resume at the gateway", || async {
        gateway.metric("recovery_resumed") == 1
    })
    .await;
    let _second = WorkerHandle::start("w2", &[register.addr], SECRET, log.clone());
    let mut client = resuming.await.unwrap();
    assert!(matches!(client.outcome, Outcome::Resumed { .. }), "{:?}", client.outcome);
    client.ws.send("after").await;
    eventually(Duration::from_secs(20), "the message after the resume at the second worker", || async {
        seen("message:after")
    })
    .await;
    assert_eq!(
        log.0.of(&cid),
        ["message:slow", "message:slow (redelivered)", "resume:0", "message:after"],
        "the handed-back event first, then the resume, then what came after"
    );
}

/// The browser helper (`clients/js/gatewayrs.js`) under Node's WebSocket, through a network cut:
/// it reconnects by itself and resumes, every message once, in order, same client id. Skips,
/// saying so, without Node 20+ unless `GW_REQUIRE_NODE=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_helper_reconnects_by_itself_and_resumes() {
    if let Err(why) = node_websocket() {
        assert!(std::env::var_os("GW_REQUIRE_NODE").is_none(), "GW_REQUIRE_NODE is set but {why}");
        eprintln!("SKIP the_js_helper_reconnects_by_itself_and_resumes: {why}");
        return;
    }
    let c = cluster(|_| {}).await;
    let proxy = CutProxy::start(&c.gateway.ws_url).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recovery_client.js");
    let mut helper = ScriptedClient::spawn("node", &["--experimental-websocket", "--no-warnings", script, &proxy.url]);
    let line = helper.said().await;
    let cid = line.strip_prefix("ID ").unwrap_or_else(|| panic!("{line}")).to_owned();
    c.backend.bind_uid(&id(&cid), "alice").await.unwrap();
    c.backend.join_group(&id(&cid), "room").await.unwrap();
    for n in 1..=40 {
        send_numbered(&c.backend, &id(&cid), n).await;
    }
    helper.tell("READ 40").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(1, 40)));
    // Two of its messages reach the worker, two are in flight when the network dies: it sends
    // those again after the resume (the gateway says it took two).
    helper.tell("SEND j1 j2").await;
    assert_eq!(helper.said().await, "SENT");
    c.saw(&cid, "message:j2").await;
    proxy.swallow();
    helper.tell("SEND j3 j4").await;
    assert_eq!(helper.said().await, "SENT");
    proxy.cut();
    c.held(1).await;
    for n in 41..=90 {
        send_numbered(&c.backend, &id(&cid), n).await;
    }
    // It comes back by itself; what it missed since its last ack is replayed.
    let line = helper.said().await;
    let replayed: u64 = line
        .strip_prefix(&format!("RESUMED {cid} "))
        .unwrap_or_else(|| panic!("expected a resume, got {line}"))
        .parse()
        .unwrap();
    assert!(replayed >= 50, "at least the 50 sent while away: {replayed}");
    helper.tell("RESENT").await;
    assert_eq!(helper.said().await, "RESENT 2 LOST 0");
    for n in 91..=100 {
        send_numbered(&c.backend, &id(&cid), n).await;
    }
    helper.tell("READ 60").await;
    assert_eq!(helper.said().await, format!("GOT {}", numbers(41, 100)));
    helper.quit().await;
    c.saw(&cid, "close").await;
    let events =
        ["connect", "message:j1", "message:j2", &format!("resume:{replayed}"), "message:j3", "message:j4", "close"];
    assert_eq!(c.log.of(&cid), events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_trim_and_bad_control_frames_are_counted_never_forwarded() {
    let c = cluster(|_| {}).await;
    let mut client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let cid = id(&client.client_id);
    for n in 1..=3 {
        c.backend.send_to_client(&cid, format!("n{n}")).await.unwrap();
    }
    expect_numbered(&mut client, 1, 3).await;
    client.ack().await;
    for bad in ["\0{\"type\":\"ack\",\"received\":99}", "\0garbage", "\0{\"type\":\"hello\"}"] {
        client.ws.send(bad).await;
    }
    // In order after them: once the worker has this, the gateway has handled those.
    client.ws.send("sync").await;
    c.saw(&client.client_id, "message:sync").await;
    assert_eq!(c.gateway.metric("recovery_bad_control"), 3);
    assert_eq!(c.log.of(&client.client_id), ["connect", "message:sync"], "control frames never reach the worker");
    // Everything was acknowledged: held, it keeps nothing.
    let (token, old) = (client.token.clone(), client.client_id.clone());
    client.ws.reset();
    c.held(1).await;
    assert_eq!(c.gateway.metric("recovery_held_bytes"), 0);
    // A count below its own ack cannot be served: told `malformed`, and released at once.
    not_recovered(&c, &token, 1, "malformed", &old).await.ws.close().await;
    c.saw(&old, "close").await;
    c.held(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_gateway_wide_cap_the_client_that_grows_is_released() {
    let c = cluster(|g| {
        g.recovery.max_bytes = 100;
        g.recovery.max_held_bytes = 100;
    })
    .await;
    let a = RecoveringClient::connect(&c.gateway.ws_url).await;
    let b = RecoveringClient::connect(&c.gateway.ws_url).await;
    let (a_token, a_id, b_token, b_id) = (a.token.clone(), a.client_id.clone(), b.token.clone(), b.client_id.clone());
    a.ws.reset();
    b.ws.reset();
    c.held(2).await;
    c.backend.send_to_client(&id(&a_id), "a".repeat(60)).await.unwrap();
    c.until("60 bytes held", |c| c.gateway.metric("recovery_held_bytes") == 60).await;
    c.backend.send_to_client(&id(&b_id), "b".repeat(60)).await.unwrap();
    c.saw(&b_id, "close").await;
    c.held(1).await;
    assert_eq!(c.gateway.metric("recovery_held_bytes"), 60);
    not_recovered(&c, &b_token, 0, "gap", &b_id).await;
    let mut a = RecoveringClient::resume_with(&c.gateway.ws_url, &a_token, 0).await;
    assert_eq!(a.outcome, Outcome::Resumed { replayed: 1 });
    assert_eq!(a.recv().await, "a".repeat(60));
    assert!(!c.log.of(&a_id).contains(&"close".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_resets_under_a_running_stream_lose_and_repeat_nothing() {
    let c = cluster(|_| {}).await;
    let mut client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let cid = id(&client.client_id);
    c.backend.bind_uid(&cid, "alice").await.unwrap();
    c.backend.join_group(&cid, "room").await.unwrap();
    let total = 1000u64;
    // The backend sends all the while, resumes and resets included.
    let sender = tokio::spawn({
        let (backend, cid) = (c.backend.clone(), cid.clone());
        async move {
            for n in 1..=total {
                send_numbered(&backend, &cid, n).await;
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let mut next = 1;
    for round in 0..10 {
        for _ in 0..(37 + round * 7) {
            assert_eq!(client.recv().await, format!("n{next}"), "round {round}");
            next += 1;
        }
        if round % 3 == 0 {
            client.ack().await;
        }
        client = client.reconnect(&c.gateway.ws_url).await;
        assert!(matches!(client.outcome, Outcome::Resumed { .. }), "round {round}: {:?}", client.outcome);
        assert_eq!(client.client_id, cid.to_string());
    }
    while next <= total {
        assert_eq!(client.recv().await, format!("n{next}"));
        next += 1;
    }
    sender.await.unwrap();
    client.expect_no_more().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.log.of(&cid.to_string()).len() != 11 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ten resumes seen by the worker: {:?}",
            c.log.of(&cid.to_string())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.log.of(&cid.to_string()).iter().skip(1).all(|e| e.starts_with("resume:")));
    assert_eq!(c.gateway.metric("recovery_resumed"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_writes_racing_resumes_are_all_kept() {
    let c = cluster(|_| {}).await;
    let mut client = RecoveringClient::connect(&c.gateway.ws_url).await;
    let cid = id(&client.client_id);
    let keys = 300;
    let writer = tokio::spawn({
        let (backend, cid) = (c.backend.clone(), cid.clone());
        async move {
            for k in 0..keys {
                let patch: gw_gateway_client::Session = serde_json::from_str(&format!(r#"{{"k{k}":{k}}}"#)).unwrap();
                backend.update_session(&cid, &patch).await.unwrap();
            }
        }
    });
    for _ in 0..10 {
        client = client.reconnect(&c.gateway.ws_url).await;
        assert!(matches!(client.outcome, Outcome::Resumed { .. }), "{:?}", client.outcome);
    }
    writer.await.unwrap();
    let session = c.backend.session(&cid).await.unwrap().expect("a session");
    assert_eq!(session.len(), keys, "every write kept: {session:?}");
}
