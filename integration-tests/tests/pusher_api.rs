//! Pusher's HTTP API in the `http-api` daemon, called over a real socket with requests signed as
//! the SDKs sign them (`pusher-protocol`'s `sign_request`), against a real gateway with raw
//! Pusher clients: publishes (with `socket_id`), channel queries, `terminate_connections`, and
//! every refusal with its status. (`pusher_sdk.rs` does the same with the official SDK.)

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gw_config::HttpApiConfig;
use gw_integration_tests::pusher::{
    APP_ID, APP_KEY, APP_SECRET, PusherClient, app_url, pusher_config, pusher_gateway, wait_for_peers,
};
use gw_integration_tests::{GatewayHandle, RegisterHandle, eventually, fast_link};
use gw_pusher_protocol::api::signature::{query_string, sign_request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "pusher-api-cluster-secret";

struct Cluster {
    _reg: RegisterHandle,
    gw: GatewayHandle,
    api: SocketAddr,
    stop: CancellationToken,
}

async fn cluster() -> Cluster {
    let reg = RegisterHandle::start(SECRET).await;
    let gw = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    let (api, stop) = start_api(&reg, 1).await;
    Cluster { _reg: reg, gw, api, stop }
}

/// The HTTP API daemon on 127.0.0.1:0 with the test app and a disabled one, once it is linked
/// to `gateways` gateways.
async fn start_api(reg: &RegisterHandle, gateways: usize) -> (SocketAddr, CancellationToken) {
    let mut off = gw_config::PusherApp::new("2002", "off-key", "another-secret-0123456789");
    off.enabled = false;
    let mut pusher = pusher_config(|_| {});
    pusher.apps.push(off);
    let config = HttpApiConfig {
        registers: vec![reg.addr.to_string()],
        secret: SECRET.into(),
        link: fast_link(),
        grace_period: Duration::from_secs(3),
        pusher: Some(pusher),
        ..HttpApiConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let handle = gw_http_api::Api::start(&config).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        let handle = handle.clone();
        async move { gw_http_api::serve(handle, listener, stop).await.unwrap() }
    });
    assert!(
        handle.gateway.wait_for_gateways(gateways, Duration::from_secs(10)).await,
        "the API linked too few gateways"
    );
    (api, stop)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One HTTP/1.1 request over a fresh connection; the status and the body as JSON (or text).
async fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text[9..12].parse().unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

/// A request signed with `secret`, at `ts`.
async fn signed_with(
    addr: SocketAddr,
    secret: &str,
    ts: u64,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let all = sign_request(APP_KEY, secret, method, path, &params, body, ts);
    http(addr, method, &format!("{path}?{}", query_string(&all)), body).await
}

async fn signed(addr: SocketAddr, method: &str, path: &str, params: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    signed_with(addr, APP_SECRET, now(), method, path, params, body).await
}

/// Waits until the API counts `n` subscriptions of `channel`.
async fn counted(addr: SocketAddr, channel: &str, n: u64) {
    let path = format!("/apps/{APP_ID}/channels/{channel}");
    eventually(Duration::from_secs(10), "the API counts the subscriptions", || {
        let path = path.clone();
        async move {
            let (status, body) = signed(addr, "GET", &path, &[("info", "subscription_count")], b"").await;
            status == 200 && body["subscription_count"] == n
        }
    })
    .await;
}

#[tokio::test]
async fn events_reach_the_subscribers_except_the_socket_given() {
    let c = cluster().await;
    let mut a = PusherClient::connect(&app_url(&c.gw)).await;
    let mut b = PusherClient::connect(&app_url(&c.gw)).await;
    for p in [&mut a, &mut b] {
        p.subscribe("news", None, None).await;
        p.expect("pusher_internal:subscription_succeeded").await;
    }
    counted(c.api, "news", 2).await;
    let events = format!("/apps/{APP_ID}/events");

    let body = json!({"name": "ev", "channels": ["news", "nobody"], "data": "hello"}).to_string();
    let (status, answer) = signed(c.api, "POST", &events, &[], body.as_bytes()).await;
    assert_eq!((status, &answer), (200, &json!({})));
    for p in [&mut a, &mut b] {
        assert_eq!(p.recv().await, json!({"event": "ev", "channel": "news", "data": "hello"}));
    }

    let body =
        json!({"name": "ev2", "channel": "news", "data": "x", "socket_id": a.socket_id, "info": "subscription_count"})
            .to_string();
    let (status, answer) = signed(c.api, "POST", &events, &[], body.as_bytes()).await;
    assert_eq!((status, answer), (200, json!({"channels": {"news": {"subscription_count": 2}}})));
    assert_eq!(b.expect("ev2").await["data"], "x");
    a.expect_alive().await; // the pong comes first: ev2 never came to `a`

    let batch = json!({"batch": [
        {"name": "b1", "channel": "news", "data": "1"},
        {"name": "b2", "channel": "news", "data": "2"},
    ]})
    .to_string();
    let (status, _) = signed(c.api, "POST", &format!("/apps/{APP_ID}/batch_events"), &[], batch.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(a.expect("b1").await["data"], "1");
    assert_eq!(a.expect("b2").await["data"], "2");

    let (status, list) = signed(c.api, "GET", &format!("/apps/{APP_ID}/channels"), &[], b"").await;
    assert_eq!((status, list), (200, json!({"channels": {"news": {}}})));
    let (status, list) =
        signed(c.api, "GET", &format!("/apps/{APP_ID}/channels"), &[("filter_by_prefix", "private-")], b"").await;
    assert_eq!((status, list), (200, json!({"channels": {}})));
    c.stop.cancel();
}

#[tokio::test]
async fn terminate_connections_closes_a_signed_in_users_connections_with_4009() {
    let c = cluster().await;
    let mut ann = PusherClient::connect(&app_url(&c.gw)).await;
    let user_data = r#"{"id":"ann"}"#;
    let auth = gw_pusher_protocol::auth::user_auth(APP_KEY, APP_SECRET, &ann.socket_id, user_data);
    ann.send(&gw_pusher_protocol::ClientFrame::Signin { auth, user_data: user_data.into() }).await;
    ann.expect("pusher:signin_success").await;
    let mut other = PusherClient::connect(&app_url(&c.gw)).await;
    // The uid reaches the API's routing index shortly after the sign-in: ask until it acts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let close = loop {
        let (status, body) = signed(c.api, "POST", "/users/ann/terminate_connections", &[], b"{}").await;
        assert_eq!((status, body), (200, json!({})));
        match ann.ws.next(Duration::from_millis(100)).await {
            Some(gw_integration_tests::ws::Received::Closed(close)) => break close,
            None => assert!(tokio::time::Instant::now() < deadline, "ann was never disconnected"),
            Some(other) => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.map(|c| c.0), Some(4009));
    other.expect_alive().await;
    // The same through the documented route, for a user with no connection: nothing to do.
    let (status, body) =
        signed(c.api, "POST", &format!("/apps/{APP_ID}/users/bob/terminate_connections"), &[], b"{}").await;
    assert_eq!((status, body), (200, json!({})));
    c.stop.cancel();
}

#[tokio::test]
async fn refusals_have_pushers_statuses() {
    let c = cluster().await;
    let events = format!("/apps/{APP_ID}/events");
    let body = json!({"name": "ev", "channel": "news", "data": "x"}).to_string();
    let b = body.as_bytes();

    let (status, e) = signed_with(c.api, "wrong-secret-0123456789", now(), "POST", &events, &[], b).await;
    assert_eq!(status, 401, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("Invalid signature"), "{e}");
    let (status, e) = signed_with(c.api, APP_SECRET, now() - 3600, "POST", &events, &[], b).await;
    assert_eq!(status, 401, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("Timestamp expired"), "{e}");
    let (status, _) = http(c.api, "POST", &events, b).await;
    assert_eq!(status, 401, "unsigned");
    let (status, _) = signed(c.api, "POST", "/apps/9999/events", &[], b).await;
    assert_eq!(status, 404, "unknown app");
    let big = json!({"name": "ev", "channel": "news", "data": "x".repeat(10 * 1024 + 1)}).to_string();
    let (status, _) = signed(c.api, "POST", &events, &[], big.as_bytes()).await;
    assert_eq!(status, 413);
    let (status, e) = signed(c.api, "POST", &events, &[], b"{\"name\": 1}").await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = signed(c.api, "GET", &format!("/apps/{APP_ID}/channels/private-room/users"), &[], b"").await;
    assert_eq!(status, 400, "users of a channel that is not presence: {e}");
    let (status, _) =
        signed(c.api, "GET", &format!("/apps/{APP_ID}/channels/news"), &[("info", "user_count")], b"").await;
    assert_eq!(status, 400, "user_count of a channel that is not presence");
    // A disabled app: 403, after its own signature checked.
    let all = sign_request("off-key", "another-secret-0123456789", "POST", "/apps/2002/events", &[], b, now());
    let (status, _) = http(c.api, "POST", &format!("/apps/2002/events?{}", query_string(&all)), b).await;
    assert_eq!(status, 403);
    c.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_users_and_user_counts_come_from_the_channels_homes_across_gateways() {
    let reg = RegisterHandle::start(SECRET).await;
    let one = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    let two = pusher_gateway(&[reg.addr], SECRET, |_| {}, |_| {}).await;
    wait_for_peers(&[&one, &two]).await;
    let (api, stop) = start_api(&reg, 2).await;
    let users_path = format!("/apps/{APP_ID}/channels/presence-room/users");
    let (status, empty) = signed(api, "GET", &users_path, &[], b"").await;
    assert_eq!((status, empty), (200, json!({"users": []})), "nobody yet");

    // ann on one gateway, bob on both: two users, three subscriptions.
    let mut clients = Vec::new();
    for (gw, user) in [(&one, "ann"), (&two, "bob"), (&one, "bob")] {
        let mut c = PusherClient::connect(&app_url(gw)).await;
        c.subscribe_signed("presence-room", Some(&format!(r#"{{"user_id":"{user}"}}"#))).await;
        c.expect("pusher_internal:subscription_succeeded").await;
        clients.push(c);
    }
    eventually(Duration::from_secs(5), "the routing index counts three subscriptions", || async {
        let q = [("info", "subscription_count")];
        signed(api, "GET", &format!("/apps/{APP_ID}/channels/presence-room"), &q, b"").await.1["subscription_count"]
            == 3
    })
    .await;
    let (status, users) = signed(api, "GET", &users_path, &[], b"").await;
    assert_eq!(status, 200, "{users}");
    let mut ids: Vec<&str> = users["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["ann", "bob"], "each user once, whatever its gateways");
    let info = [("info", "user_count,subscription_count")];
    let (status, ch) = signed(api, "GET", &format!("/apps/{APP_ID}/channels/presence-room"), &info, b"").await;
    assert_eq!((status, ch), (200, json!({"occupied": true, "user_count": 2, "subscription_count": 3})));
    let q = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let (status, all) = signed(api, "GET", &format!("/apps/{APP_ID}/channels"), &q, b"").await;
    assert_eq!((status, all), (200, json!({"channels": {"presence-room": {"user_count": 2}}})));
    stop.cancel();
}
