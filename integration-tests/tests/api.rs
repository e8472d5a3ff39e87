//! Issue 3: every call of the Gateway API against a real cluster of two gateways and two business
//! workers, with clients spread over both gateways: the multi-gateway cases (a uid bound on one
//! gateway, groups spanning both, counts summing both), the error cases (malformed ids, empty
//! names, ids of a restarted gateway, unreachable and slow gateways), the session concurrency
//! rule, and the worker's handler context (`on_websocket_connect`, `on_close`, server data).
//!
//! Non-delivery is proven without silence windows: after the command under test, a marker goes to
//! the same client over the same gateway link, and the client must see exactly the expected
//! messages and then the marker (a gateway executes one link's commands in order).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gw_business_worker::{Context, Events, HandlerResult, Message, WebSocketRequest, WorkerContext};
use gw_gateway_client::{Answer, ClientError, ClientId, CloseReason, GatewayClient, Payload, Session};
use gw_integration_tests::ws::Received;
use gw_integration_tests::*;
use gw_proto::{FromGateway, Query, Reply, Role, ToGateway};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::{CancellationToken, DropGuard};

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

// ----- the application under test ---------------------------------------------------------------

/// One observation: what happened (`ws`, `message`, `close`), to which client, with what data.
type Note = (&'static str, ClientId, Value);

/// What handlers observed, for the test to check (on_close cannot answer its client).
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<Note>>>);

impl Log {
    fn push(&self, kind: &'static str, client_id: &ClientId, data: Value) {
        self.0.lock().unwrap().push((kind, client_id.clone(), data));
    }

    fn all(&self, kind: &str, client_id: &ClientId) -> Vec<Value> {
        let log = self.0.lock().unwrap();
        log.iter().filter(|(k, c, _)| *k == kind && c == client_id).map(|(_, _, v)| v.clone()).collect()
    }

    /// The first note of `kind` whose data satisfies `pred`, as (client id, data).
    fn find(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Option<(ClientId, Value)> {
        let log = self.0.lock().unwrap();
        log.iter().find(|(k, _, v)| *k == kind && pred(v)).map(|(_, c, v)| (c.clone(), v.clone()))
    }

    async fn wait(&self, kind: &str, client_id: &ClientId) -> Value {
        eventually(WAIT, &format!("{kind} of {client_id}"), || {
            let seen = !self.all(kind, client_id).is_empty();
            async move { seen }
        })
        .await;
        self.all(kind, client_id).remove(0)
    }
}

/// A test application driven by text commands from its clients. Every reply goes through the
/// handler context: `ctx.send` (the current client) or `ctx.gateway()` (the shared Gateway API).
#[derive(Clone)]
struct App {
    worker: String,
    log: Log,
    /// Holds the `race` handler until the test adds a permit.
    gate: Arc<Semaphore>,
    /// Each worker's Gateway API, so the test can wait until it is linked to every gateway.
    apis: Arc<Mutex<Vec<GatewayClient>>>,
}

fn server_json(ctx: &Context) -> Value {
    json!({
        "client": ctx.server.client_addr.map(|a| a.to_string()),
        "gateway": ctx.server.gateway_addr.map(|a| a.to_string()),
    })
}

impl Events for App {
    async fn on_worker_start(&self, worker: &WorkerContext) {
        self.apis.lock().unwrap().push(worker.gateway.clone());
    }

    async fn on_websocket_connect(&self, ctx: &mut Context, req: &WebSocketRequest) -> HandlerResult {
        let note = json!({
            "path": req.path,
            "query": req.query_params(),
            "cookies": req.cookies(),
            "token": req.header("X-Token"),
        });
        self.log.push("ws", &ctx.client_id, note);
        if let Some(code) = req.query_param("reject") {
            ctx.close_with(None, Some(CloseReason { code: code.parse()?, reason: "rejected".into() })).await?;
        }
        Ok(())
    }

    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        self.log.push("message", &ctx.client_id, json!(msg.as_text()));
        if msg.binary {
            // Echo as is: the frame type travels with the payload.
            ctx.send(msg).await?;
            return Ok(());
        }
        let text = msg.as_text().unwrap_or_default().to_string();
        let (cmd, arg) = text.split_once(' ').unwrap_or((&text, ""));
        let g = ctx.gateway().clone();
        match cmd {
            "id" => ctx.send(ctx.client_id.to_string()).await?,
            "who" => ctx.send(self.worker.clone()).await?,
            "echo" => ctx.send(arg.to_string()).await?,
            "session" => ctx.send(Value::Object(ctx.session.clone()).to_string()).await?,
            "server" => ctx.send(server_json(ctx).to_string()).await?,
            "set" => {
                let (key, value) = arg.split_once(' ').ok_or("set <key> <json>")?;
                ctx.session.insert(key.into(), serde_json::from_str(value)?);
                ctx.send("ok").await?;
            }
            "del" => {
                ctx.session.remove(arg);
                ctx.send("ok").await?;
            }
            "race" => {
                // Change two keys and remove one, then wait while the test writes from outside.
                ctx.session.insert("handler".into(), json!(arg));
                ctx.session.insert("shared".into(), json!(format!("handler-{arg}")));
                ctx.session.remove("gone");
                ctx.send("in-handler").await?;
                self.gate.acquire().await?.forget();
            }
            "close" => ctx.close().await?,
            "close_with" => {
                ctx.close_with(Some("last words".into()), Some(CloseReason { code: 4001, reason: "bye".into() }))
                    .await?;
            }
            "bind" => {
                g.bind_uid(&ctx.client_id, arg).await?;
                ctx.send("bound").await?;
            }
            "join" => {
                g.join_group(&ctx.client_id, arg).await?;
                ctx.send("joined").await?;
            }
            "to_uid" | "to_group" => {
                let (target, body) = arg.split_once(' ').unwrap_or((arg, ""));
                if cmd == "to_uid" {
                    g.send_to_uid(target, body.to_string()).await?;
                } else {
                    g.send_to_group(target, body.to_string()).await?;
                }
                // Same worker, same links, so "end" follows the message on every gateway.
                g.send_to_all("end").await?;
            }
            "uid_online" => {
                let a = g.is_uid_online(arg).await?;
                ctx.send(json!({"online": a.value, "missing": a.missing}).to_string()).await?;
            }
            "me_online" => ctx.send(g.is_online(&ctx.client_id).await?.to_string()).await?,
            "count" => {
                ctx.send("querying").await?;
                let a = g.client_count().await?;
                ctx.send(json!({"count": a.value, "missing": a.missing}).to_string()).await?;
            }
            "ids" => {
                ctx.send("querying").await?;
                let a = g.client_ids().await?;
                ctx.send(json!({"ids": a.value, "missing": a.missing}).to_string()).await?;
            }
            _ => ctx.send(format!("unknown command: {text}")).await?,
        }
        Ok(())
    }

    async fn on_close(&self, ctx: &mut Context) -> HandlerResult {
        let mut note = server_json(ctx);
        note["session"] = Value::Object(ctx.session.clone());
        self.log.push("close", &ctx.client_id, note);
        Ok(())
    }
}

// ----- the cluster ----------------------------------------------------------------------------

/// A register, two gateways, two workers running [`App`], and a gateway client (`api`).
struct Cluster {
    reg: RegisterHandle,
    a: GatewayHandle,
    b: GatewayHandle,
    _workers: [WorkerHandle; 2],
    api: GatewayClient,
    log: Log,
    gate: Arc<Semaphore>,
}

/// A WebSocket client and its client id.
struct Peer {
    ws: WsClient,
    id: ClientId,
}

impl Cluster {
    async fn start() -> Self {
        let reg = RegisterHandle::start(SECRET).await;
        let a = GatewayHandle::start(&[reg.addr], SECRET).await;
        let b = GatewayHandle::start(&[reg.addr], SECRET).await;
        let log = Log::default();
        let gate = Arc::new(Semaphore::new(0));
        let apis = Arc::new(Mutex::new(Vec::new()));
        let workers = ["w1", "w2"].map(|name| {
            let app = App { worker: name.into(), log: log.clone(), gate: gate.clone(), apis: apis.clone() };
            WorkerHandle::start(name, &[reg.addr], SECRET, app)
        });
        wait_for_workers(&a, 2).await;
        wait_for_workers(&b, 2).await;
        // Handlers reach the other gateway through their worker's own links: wait for those too.
        eventually(WAIT, "both workers started", || {
            let n = apis.lock().unwrap().len();
            async move { n == 2 }
        })
        .await;
        let worker_apis: Vec<GatewayClient> = apis.lock().unwrap().clone();
        for w in &worker_apis {
            assert!(w.wait_for_gateways(2, WAIT).await, "a worker did not link to both gateways");
        }
        let api = gateway_client(&[reg.addr], SECRET, 2).await;
        Self { reg, a, b, _workers: workers, api, log, gate }
    }

    /// A client of `gw` that has been through a full event round trip (so the gateway has
    /// registered it), with its client id.
    async fn peer(&self, gw: &GatewayHandle) -> Peer {
        let p = peer_at(&gw.ws_url).await;
        assert_eq!(p.id.gateway, gw.gw.address());
        p
    }
}

async fn peer_at(url: &str) -> Peer {
    let mut ws = WsClient::connect(url).await;
    ws.send("id").await;
    let id = ws.recv_id().await;
    Peer { ws, id }
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

/// Asserts that `peer` got exactly `expected` since the last check and nothing else: a marker sent
/// by `api` after the commands under test (same gateway link, executed in order) must come next.
async fn expect_exactly(api: &GatewayClient, peer: &mut Peer, expected: &[&str]) {
    let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
    api.send_to_client(&peer.id, marker.as_str()).await.unwrap();
    for e in expected {
        assert_eq!(peer.ws.recv().await, *e, "client {}", peer.id);
    }
    assert_eq!(peer.ws.recv().await, marker, "client {} got more than {expected:?}", peer.id);
}

fn obj(v: Value) -> Session {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn sorted(ids: &[&ClientId]) -> Vec<ClientId> {
    let mut v: Vec<ClientId> = ids.iter().map(|&id| id.clone()).collect();
    v.sort();
    v
}

/// A well-formed id on `like`'s gateway instance that no client has.
fn ghost(like: &ClientId) -> ClientId {
    ClientId { local: 0xdead, ..like.clone() }
}

/// What `complete()` and fan-out commands say when `missing` gateways did not take part.
fn unreachable<T>(missing: &[String]) -> Result<T, ClientError> {
    Err(ClientError::Unreachable { gateways: missing.to_vec() })
}

fn public_addr(gw: &GatewayHandle) -> String {
    gw.ws_url.trim_start_matches("ws://").trim_end_matches('/').to_string()
}

async fn wait_session(api: &GatewayClient, id: &ClientId, expected: Value) {
    let expected = Some(obj(expected));
    eventually(WAIT, &format!("session of {id} to be {expected:?}"), || {
        let expected = expected.clone();
        async move { api.session(id).await.unwrap() == expected }
    })
    .await;
}

// ----- sending ----------------------------------------------------------------------------------

#[tokio::test]
async fn send_to_client_reaches_a_client_on_either_gateway() {
    let c = Cluster::start().await;
    let mut pa = c.peer(&c.a).await;
    let mut pb = c.peer(&c.b).await;
    c.api.send_to_client(&pa.id, "to a").await.unwrap();
    c.api.send_to_client(&pb.id, String::from("to b")).await.unwrap();
    expect_exactly(&c.api, &mut pa, &["to a"]).await;
    expect_exactly(&c.api, &mut pb, &["to b"]).await;

    // A well-formed id nobody has on a live gateway: a documented no-op.
    c.api.send_to_client(&ghost(&pa.id), "nobody").await.unwrap();
    expect_exactly(&c.api, &mut pa, &[]).await;
    // An id on a gateway that no register lists: that client is not connected; said so, not
    // silently dropped.
    let elsewhere = ClientId::new("127.0.0.1:9", 1, 1);
    assert_eq!(c.api.send_to_client(&elsewhere, "x").await, Err(ClientError::ClientGone(elsewhere.clone())));
    assert_eq!(c.api.is_online(&elsewhere).await, Ok(false));
}

#[tokio::test]
async fn send_to_clients_delivers_once_to_each_listed_client_on_both_gateways() {
    let c = Cluster::start().await;
    let (mut a1, mut a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (mut b1, mut b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    c.api.send_to_clients(&[&a1.id, &b1.id, &b1.id, &b2.id], "listed").await.unwrap();
    expect_exactly(&c.api, &mut a1, &["listed"]).await;
    expect_exactly(&c.api, &mut a2, &[]).await;
    expect_exactly(&c.api, &mut b1, &["listed"]).await;
    expect_exactly(&c.api, &mut b2, &["listed"]).await;

    // An empty list is a no-op.
    c.api.send_to_clients::<ClientId>(&[], "none").await.unwrap();
    expect_exactly(&c.api, &mut a1, &[]).await;
}

#[tokio::test]
async fn send_to_all_and_send_to_all_except_cover_both_gateways() {
    let c = Cluster::start().await;
    let mut peers = [c.peer(&c.a).await, c.peer(&c.a).await, c.peer(&c.b).await, c.peer(&c.b).await];
    c.api.send_to_all("everyone").await.unwrap();
    for p in peers.iter_mut() {
        expect_exactly(&c.api, p, &["everyone"]).await;
    }

    // Exclude one client on each gateway.
    let exclude = [peers[0].id.clone(), peers[3].id.clone()];
    c.api.send_to_all_except("most", &exclude).await.unwrap();
    for (i, p) in peers.iter_mut().enumerate() {
        let expected: &[&str] = if i == 0 || i == 3 { &[] } else { &["most"] };
        expect_exactly(&c.api, p, expected).await;
    }
}

#[tokio::test]
async fn send_to_uid_and_send_to_uids_reach_every_connection_once() {
    let c = Cluster::start().await;
    let (mut a1, mut a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (mut b1, mut b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.bind_uid(&b1.id, "u").await.unwrap();
    c.api.bind_uid(&b2.id, "v").await.unwrap();

    c.api.send_to_uid("u", "to u").await.unwrap();
    c.api.send_to_uids(&["u", "v", "u", "nobody"], "to u and v").await.unwrap();
    c.api.send_to_uid("nobody", "lost").await.unwrap();
    expect_exactly(&c.api, &mut a1, &["to u", "to u and v"]).await;
    expect_exactly(&c.api, &mut a2, &[]).await;
    expect_exactly(&c.api, &mut b1, &["to u", "to u and v"]).await;
    expect_exactly(&c.api, &mut b2, &["to u and v"]).await;
}

#[tokio::test]
async fn send_to_groups_delivers_once_to_a_client_in_two_targeted_groups() {
    let c = Cluster::start().await;
    let (mut a1, mut a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (mut b1, mut b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    for (p, groups) in [(&a1, &["g1", "g2"][..]), (&b1, &["g1", "g2"]), (&b2, &["g2"])] {
        for g in groups {
            c.api.join_group(&p.id, g).await.unwrap();
        }
    }

    c.api.send_to_group("g1", "g1 only").await.unwrap();
    c.api.send_to_groups(&["g1", "g2"], "both groups").await.unwrap();
    c.api.send_to_groups_except(&["g1", "g2"], "but b1", &[&b1.id]).await.unwrap();
    expect_exactly(&c.api, &mut a1, &["g1 only", "both groups", "but b1"]).await;
    expect_exactly(&c.api, &mut a2, &[]).await;
    expect_exactly(&c.api, &mut b1, &["g1 only", "both groups"]).await;
    expect_exactly(&c.api, &mut b2, &["both groups", "but b1"]).await;
}

#[tokio::test]
async fn binary_and_text_payloads_keep_their_websocket_frame_type() {
    let c = Cluster::start().await;
    let mut pa = c.peer(&c.a).await;
    let mut pb = c.peer(&c.b).await;

    // Through a handler: a binary frame comes back binary, text comes back text.
    let bytes = [0u8, 159, 146, 150, 255];
    pa.ws.send_binary(&bytes).await;
    assert_eq!(pa.ws.next(WAIT).await, Some(Received::Binary(bytes.to_vec())));
    pa.ws.send("echo plain").await;
    assert_eq!(pa.ws.next(WAIT).await, Some(Received::Text("plain".into())));

    // Through the API, for each kind of target.
    c.api.bind_uid(&pb.id, "u").await.unwrap();
    c.api.join_group(&pb.id, "g").await.unwrap();
    c.api.send_to_client(&pb.id, vec![1u8, 2, 3]).await.unwrap();
    c.api.send_to_client(&pb.id, Bytes::from_static(b"bytes")).await.unwrap();
    c.api.send_to_client(&pb.id, "text").await.unwrap();
    c.api.send_to_uid("u", Payload::binary(vec![4u8])).await.unwrap();
    c.api.send_to_group("g", Payload::binary(vec![5u8])).await.unwrap();
    c.api.send_to_all(Payload::binary(vec![6u8])).await.unwrap();
    c.api.send_to_all(Payload::text("all text")).await.unwrap();
    for expected in [
        Received::Binary(vec![1, 2, 3]),
        Received::Binary(b"bytes".to_vec()),
        Received::Text("text".into()),
        Received::Binary(vec![4]),
        Received::Binary(vec![5]),
        Received::Binary(vec![6]),
        Received::Text("all text".into()),
    ] {
        assert_eq!(pb.ws.next(WAIT).await, Some(expected));
    }
    assert_eq!(pa.ws.next(WAIT).await, Some(Received::Binary(vec![6])));
    assert_eq!(pa.ws.next(WAIT).await, Some(Received::Text("all text".into())));

    // Text that is not UTF-8 cannot be a text frame: refused at the gateway, counted.
    let rejected = c.b.metric("rejected_commands");
    c.api.send_to_client(&pb.id, Payload { data: Bytes::from_static(&[0xff, 0xfe]), binary: false }).await.unwrap();
    expect_exactly(&c.api, &mut pb, &[]).await;
    assert_eq!(c.b.metric("rejected_commands"), rejected + 1);
}

// ----- uids -------------------------------------------------------------------------------------

#[tokio::test]
async fn bind_uid_gives_a_uid_many_clients_and_rebinding_replaces() {
    let c = Cluster::start().await;
    let mut a1 = c.peer(&c.a).await;
    let mut b1 = c.peer(&c.b).await;
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.bind_uid(&b1.id, "u").await.unwrap();
    assert_eq!(c.api.uid_of(&a1.id).await, Ok(Some("u".into())));
    assert_eq!(c.api.uid_of(&b1.id).await, Ok(Some("u".into())));
    assert_eq!(c.api.client_ids_by_uid("u").await.unwrap().complete(), Ok(sorted(&[&a1.id, &b1.id])));

    // A client has at most one uid: binding again moves it.
    c.api.bind_uid(&a1.id, "w").await.unwrap();
    assert_eq!(c.api.uid_of(&a1.id).await, Ok(Some("w".into())));
    assert_eq!(c.api.client_ids_by_uid("u").await.unwrap().complete(), Ok(vec![b1.id.clone()]));
    assert_eq!(c.api.client_ids_by_uid("w").await.unwrap().complete(), Ok(vec![a1.id.clone()]));
    c.api.send_to_uid("u", "to u").await.unwrap();
    expect_exactly(&c.api, &mut a1, &[]).await;
    expect_exactly(&c.api, &mut b1, &["to u"]).await;

    // Unknown client on a live gateway: documented no-op; an unbound client has no uid.
    let g = ghost(&a1.id);
    c.api.bind_uid(&g, "u").await.unwrap();
    assert_eq!(c.api.uid_of(&g).await, Ok(None));
    assert_eq!(c.api.client_ids_by_uid("u").await.unwrap().complete(), Ok(vec![b1.id.clone()]));
    let unbound = c.peer(&c.a).await;
    assert_eq!(c.api.uid_of(&unbound.id).await, Ok(None));
}

#[tokio::test]
async fn unbind_uid_honours_its_uid_argument() {
    let c = Cluster::start().await;
    let mut b1 = c.peer(&c.b).await;
    c.api.bind_uid(&b1.id, "u").await.unwrap();
    // PHP ignores the uid and unbinds anyway; here a different uid changes nothing.
    c.api.unbind_uid(&b1.id, "other").await.unwrap();
    assert_eq!(c.api.uid_of(&b1.id).await, Ok(Some("u".into())));
    c.api.send_to_uid("u", "still bound").await.unwrap();
    expect_exactly(&c.api, &mut b1, &["still bound"]).await;

    c.api.unbind_uid(&b1.id, "u").await.unwrap();
    assert_eq!(c.api.uid_of(&b1.id).await, Ok(None));
    assert_eq!(c.api.is_uid_online("u").await.unwrap(), Answer { value: false, missing: vec![] });
    c.api.send_to_uid("u", "gone").await.unwrap();
    expect_exactly(&c.api, &mut b1, &[]).await;
    // Unbinding again, or a client that never existed: no-ops.
    c.api.unbind_uid(&b1.id, "u").await.unwrap();
    c.api.unbind_uid(&ghost(&b1.id), "u").await.unwrap();
}

#[tokio::test]
async fn is_uid_online_and_are_uids_online_look_at_both_gateways() {
    let c = Cluster::start().await;
    let a1 = c.peer(&c.a).await;
    let b1 = c.peer(&c.b).await;
    c.api.bind_uid(&a1.id, "ay").await.unwrap();
    c.api.bind_uid(&b1.id, "bee").await.unwrap();
    assert_eq!(c.api.is_uid_online("bee").await.unwrap(), Answer { value: true, missing: vec![] });
    assert_eq!(c.api.is_uid_online("ay").await.unwrap(), Answer { value: true, missing: vec![] });
    assert_eq!(c.api.is_uid_online("nobody").await.unwrap(), Answer { value: false, missing: vec![] });
    let online = c.api.are_uids_online(&["bee", "ay", "nobody"]).await.unwrap().complete().unwrap();
    assert_eq!(
        online.into_iter().collect::<Vec<_>>(),
        [("ay".into(), true), ("bee".into(), true), ("nobody".into(), false)]
    );

    // A uid goes offline with its last connection.
    b1.ws.close().await;
    let api = &c.api;
    eventually(WAIT, "bee offline", || async move { !api.is_uid_online("bee").await.unwrap().value }).await;
}

#[tokio::test]
async fn client_ids_by_uid_and_by_uids_span_both_gateways() {
    let c = Cluster::start().await;
    let (a1, b1, b2) = (c.peer(&c.a).await, c.peer(&c.b).await, c.peer(&c.b).await);
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.bind_uid(&b1.id, "u").await.unwrap();
    c.api.bind_uid(&b2.id, "v").await.unwrap();
    assert_eq!(c.api.client_ids_by_uid("u").await.unwrap().complete(), Ok(sorted(&[&a1.id, &b1.id])));
    assert_eq!(c.api.client_ids_by_uid("nobody").await.unwrap().complete(), Ok(vec![]));
    let by = c.api.client_ids_by_uids(&["u", "v", "w"]).await.unwrap().complete().unwrap();
    assert_eq!(by.len(), 3);
    assert_eq!(by["u"], sorted(&[&a1.id, &b1.id]));
    assert_eq!(by["v"], vec![b2.id.clone()]);
    assert_eq!(by["w"], Vec::<ClientId>::new());
}

#[tokio::test]
async fn uids_and_uid_count_count_a_uid_on_two_gateways_once() {
    let c = Cluster::start().await;
    let (a1, a2, b1, b2) = (c.peer(&c.a).await, c.peer(&c.a).await, c.peer(&c.b).await, c.peer(&c.b).await);
    assert_eq!(c.api.uid_count().await.unwrap().complete(), Ok(0));
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.bind_uid(&b1.id, "u").await.unwrap();
    c.api.bind_uid(&b2.id, "v").await.unwrap();
    let _unbound = a2;
    assert_eq!(c.api.uids().await.unwrap().complete(), Ok(vec!["u".to_string(), "v".to_string()]));
    assert_eq!(c.api.uid_count().await.unwrap().complete(), Ok(2));
}

#[tokio::test]
async fn close_uid_closes_every_connection_of_the_uid_on_both_gateways() {
    let c = Cluster::start().await;
    let mut bound = [c.peer(&c.a).await, c.peer(&c.a).await, c.peer(&c.b).await];
    let mut other = c.peer(&c.b).await;
    for p in &bound {
        c.api.bind_uid(&p.id, "u").await.unwrap();
    }
    c.api.bind_uid(&other.id, "v").await.unwrap();
    c.api.close_uid("u").await.unwrap();
    for p in bound.iter_mut() {
        assert_eq!(p.ws.next(WAIT).await, Some(Received::Closed(Some((1000, String::new())))), "{}", p.id);
    }
    expect_exactly(&c.api, &mut other, &[]).await;
    for p in &bound {
        c.log.wait("close", &p.id).await;
    }
    let api = &c.api;
    eventually(WAIT, "u offline", || async move { !api.is_uid_online("u").await.unwrap().value }).await;
    assert_eq!(c.api.client_count().await.unwrap().complete(), Ok(1));
    assert!(c.api.is_uid_online("v").await.unwrap().value);
    // A uid nobody has: no-op.
    c.api.close_uid("nobody").await.unwrap();
}

// ----- groups -----------------------------------------------------------------------------------

#[tokio::test]
async fn join_group_and_leave_group_across_gateways() {
    let c = Cluster::start().await;
    let (mut a1, b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    c.api.join_group(&a1.id, "g").await.unwrap();
    c.api.join_group(&b1.id, "g").await.unwrap();
    c.api.join_group(&b1.id, "g").await.unwrap(); // joining twice is one membership
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(sorted(&[&a1.id, &b1.id])));

    c.api.leave_group(&a1.id, "g").await.unwrap();
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(vec![b1.id.clone()]));
    c.api.send_to_group("g", "members").await.unwrap();
    expect_exactly(&c.api, &mut a1, &[]).await;
    // Leaving again, leaving a group one is not in, joining with an unknown client: no-ops.
    c.api.leave_group(&a1.id, "g").await.unwrap();
    c.api.leave_group(&a1.id, "never-joined").await.unwrap();
    c.api.join_group(&ghost(&a1.id), "g").await.unwrap();
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(vec![b1.id.clone()]));

    // A member that disconnects leaves its groups.
    b1.ws.close().await;
    let api = &c.api;
    eventually(WAIT, "g empty", || async move { api.client_ids_by_group("g").await.unwrap().complete() == Ok(vec![]) })
        .await;
    assert_eq!(c.api.groups().await.unwrap().complete(), Ok(vec![]));
}

#[tokio::test]
async fn ungroup_dissolves_a_group_on_both_gateways_and_members_stay_connected() {
    let c = Cluster::start().await;
    let (mut a1, mut b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    c.api.join_group(&a1.id, "g").await.unwrap();
    c.api.join_group(&b1.id, "g").await.unwrap();
    c.api.join_group(&b1.id, "h").await.unwrap();
    c.api.ungroup("g").await.unwrap();
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(vec![]));
    assert_eq!(c.api.groups().await.unwrap().complete(), Ok(vec!["h".to_string()]));
    c.api.send_to_group("g", "dissolved").await.unwrap();
    c.api.send_to_group("h", "still h").await.unwrap();
    expect_exactly(&c.api, &mut a1, &[]).await;
    expect_exactly(&c.api, &mut b1, &["still h"]).await;
    assert!(c.api.is_online(&a1.id).await.unwrap());
    assert!(c.api.is_online(&b1.id).await.unwrap());
    c.api.ungroup("never-existed").await.unwrap();
}

#[tokio::test]
async fn client_count_by_group_and_its_batch_form_sum_both_gateways() {
    let c = Cluster::start().await;
    let (a1, a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (b1, b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    for p in [&a1, &a2, &b1] {
        c.api.join_group(&p.id, "g").await.unwrap();
    }
    for p in [&b1, &b2] {
        c.api.join_group(&p.id, "h").await.unwrap();
    }
    assert_eq!(c.api.client_count_by_group("g").await.unwrap().complete(), Ok(3));
    assert_eq!(c.api.client_count_by_group("none").await.unwrap().complete(), Ok(0));
    let counts = c.api.client_count_by_groups(&["h", "g", "none"]).await.unwrap().complete().unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("g".into(), 3), ("h".into(), 2), ("none".into(), 0)]);
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(sorted(&[&a1.id, &a2.id, &b1.id])));
}

#[tokio::test]
async fn uids_by_group_and_uid_count_by_group_count_distinct_uids_across_gateways() {
    let c = Cluster::start().await;
    let (a1, a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (b1, b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    for (p, uid) in [(&a1, "u"), (&b1, "u"), (&b2, "v")] {
        c.api.bind_uid(&p.id, uid).await.unwrap();
    }
    for p in [&a1, &a2, &b1, &b2] {
        c.api.join_group(&p.id, "g").await.unwrap();
    }
    // "u" is in the group on both gateways, a2 has no uid.
    assert_eq!(c.api.uids_by_group("g").await.unwrap().complete(), Ok(vec!["u".to_string(), "v".to_string()]));
    assert_eq!(c.api.uid_count_by_group("g").await.unwrap().complete(), Ok(2));
    assert_eq!(c.api.uids_by_group("none").await.unwrap().complete(), Ok(vec![]));
    assert_eq!(c.api.uid_count_by_group("none").await.unwrap().complete(), Ok(0));
}

#[tokio::test]
async fn all_group_listings_are_complete_across_gateways() {
    let c = Cluster::start().await;
    let (a1, a2) = (c.peer(&c.a).await, c.peer(&c.a).await);
    let (b1, b2) = (c.peer(&c.b).await, c.peer(&c.b).await);
    for (p, uid) in [(&a1, "u"), (&b1, "u"), (&b2, "v")] {
        c.api.bind_uid(&p.id, uid).await.unwrap();
    }
    for (p, group) in [(&a1, "g"), (&b1, "g"), (&b2, "h"), (&a2, "k"), (&b2, "k")] {
        c.api.join_group(&p.id, group).await.unwrap();
    }
    let groups: Vec<String> = ["g", "h", "k"].map(String::from).to_vec();
    assert_eq!(c.api.groups().await.unwrap().complete(), Ok(groups));

    let lists = c.api.group_client_ids().await.unwrap().complete().unwrap();
    assert_eq!(lists.keys().collect::<Vec<_>>(), ["g", "h", "k"]);
    assert_eq!(lists["g"], sorted(&[&a1.id, &b1.id]));
    assert_eq!(lists["h"], vec![b2.id.clone()]);
    assert_eq!(lists["k"], sorted(&[&a2.id, &b2.id]));

    let counts = c.api.group_client_counts().await.unwrap().complete().unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("g".into(), 2), ("h".into(), 1), ("k".into(), 2)]);

    let uids = c.api.group_uids().await.unwrap().complete().unwrap();
    let uids: Vec<(String, Vec<String>)> = uids.into_iter().collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(uids, [("g".into(), s(&["u"])), ("h".into(), s(&["v"])), ("k".into(), s(&["v"]))]);

    let uid_counts = c.api.group_uid_counts().await.unwrap().complete().unwrap();
    assert_eq!(uid_counts.into_iter().collect::<Vec<_>>(), [("g".into(), 1), ("h".into(), 1), ("k".into(), 1)]);
}

// ----- whole cluster ----------------------------------------------------------------------------

#[tokio::test]
async fn is_online_client_ids_and_client_count_sum_both_gateways() {
    let c = Cluster::start().await;
    let (a1, a2, b1) = (c.peer(&c.a).await, c.peer(&c.a).await, c.peer(&c.b).await);
    for p in [&a1, &a2, &b1] {
        assert_eq!(c.api.is_online(&p.id).await, Ok(true));
    }
    assert_eq!(c.api.is_online(&ghost(&a1.id)).await, Ok(false));
    assert_eq!(c.api.client_ids().await.unwrap().complete(), Ok(sorted(&[&a1.id, &a2.id, &b1.id])));
    assert_eq!(c.api.client_count().await.unwrap().complete(), Ok(3));

    let gone = b1.id.clone();
    b1.ws.close().await;
    let api = &c.api;
    eventually(WAIT, "b1 offline", || {
        let gone = gone.clone();
        async move { api.is_online(&gone).await == Ok(false) }
    })
    .await;
    assert_eq!(c.api.client_count().await.unwrap().complete(), Ok(2));
    assert_eq!(c.api.client_ids().await.unwrap().complete(), Ok(sorted(&[&a1.id, &a2.id])));
}

#[tokio::test]
async fn sessions_and_sessions_by_group() {
    let c = Cluster::start().await;
    let (a1, a2, b1, b2) = (c.peer(&c.a).await, c.peer(&c.a).await, c.peer(&c.b).await, c.peer(&c.b).await);
    c.api.set_session(&a1.id, &obj(json!({"n": "a1"}))).await.unwrap();
    c.api.set_session(&b1.id, &obj(json!({"n": "b1"}))).await.unwrap();
    c.api.join_group(&a1.id, "g").await.unwrap();
    c.api.join_group(&b2.id, "g").await.unwrap();

    let all = c.api.sessions().await.unwrap().complete().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[&a1.id], obj(json!({"n": "a1"})));
    assert_eq!(all[&a2.id], Session::new(), "a client without a session has an empty one");
    assert_eq!(all[&b1.id], obj(json!({"n": "b1"})));
    assert_eq!(all[&b2.id], Session::new());

    let by_group = c.api.sessions_by_group("g").await.unwrap().complete().unwrap();
    assert_eq!(by_group.len(), 2);
    assert_eq!(by_group[&a1.id], obj(json!({"n": "a1"})));
    assert_eq!(by_group[&b2.id], Session::new());
    assert!(c.api.sessions_by_group("none").await.unwrap().complete().unwrap().is_empty());
}

#[tokio::test]
async fn connected_gateways_and_shutdown() {
    let c = Cluster::start().await;
    let mut expected = vec![c.a.gw.address().to_string(), c.b.gw.address().to_string()];
    expected.sort();
    assert_eq!(c.api.connected_gateways(), expected);
    assert!(c.api.wait_for_gateways(2, Duration::from_millis(1)).await);

    let p = c.peer(&c.a).await;
    let other = gateway_client(&[c.reg.addr], SECRET, 2).await;
    other.shutdown().await;
    assert_eq!(other.send_to_all("x").await, Err(ClientError::Shutdown));
    assert_eq!(other.send_to_client(&p.id, "x").await, Err(ClientError::Shutdown));
    assert_eq!(other.send_to_all_except("x", &[&p.id]).await, Err(ClientError::Shutdown));
    assert_eq!(other.is_online(&p.id).await, Err(ClientError::Shutdown));
    assert_eq!(other.client_count().await, Err(ClientError::Shutdown));
    // The other handles are unaffected.
    assert_eq!(c.api.is_online(&p.id).await, Ok(true));
}

// ----- connections ------------------------------------------------------------------------------

#[tokio::test]
async fn close_client_and_close_client_with_last_message_and_code() {
    let c = Cluster::start().await;
    let (mut a1, mut b1, mut b2) = (c.peer(&c.a).await, c.peer(&c.b).await, c.peer(&c.b).await);

    c.api.close_client(&a1.id).await.unwrap();
    assert_eq!(a1.ws.next(WAIT).await, Some(Received::Closed(Some((1000, String::new())))));

    // The last message is written before the close frame, which carries the given code.
    let reason = CloseReason { code: 4002, reason: "done here".into() };
    c.api.close_client_with(&b1.id, Some("goodbye".into()), Some(reason)).await.unwrap();
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Text("goodbye".into())));
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Closed(Some((4002, "done here".into())))));

    c.api.close_client_with(&b2.id, Some(Payload::binary(vec![9u8])), None).await.unwrap();
    assert_eq!(b2.ws.next(WAIT).await, Some(Received::Binary(vec![9])));
    assert_eq!(b2.ws.next(WAIT).await, Some(Received::Closed(Some((1000, String::new())))));

    for p in [&a1, &b1, &b2] {
        c.log.wait("close", &p.id).await;
    }
    let api = &c.api;
    eventually(WAIT, "all closed", || async move { api.client_count().await.unwrap().value == 0 }).await;
    // Closing a client that is gone: documented no-op.
    c.api.close_client(&a1.id).await.unwrap();
}

#[tokio::test]
async fn a_close_reason_too_long_for_a_close_frame_is_cut_to_fit() {
    let c = Cluster::start().await;
    let mut b1 = c.peer(&c.b).await;
    // 300 bytes of two-byte chars: a close frame carries 123 bytes of reason, so 61 chars (122
    // bytes) arrive, with the code. Sent whole, the frame would be refused by the client.
    let reason = CloseReason { code: 4003, reason: "é".repeat(150) };
    c.api.close_client_with(&b1.id, None, Some(reason)).await.unwrap();
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Closed(Some((4003, "é".repeat(61))))));
    c.log.wait("close", &b1.id).await;
}

#[tokio::test]
async fn a_handler_closes_its_current_client_with_and_without_a_last_message() {
    let c = Cluster::start().await;
    let (mut a1, mut b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    a1.ws.send("close").await;
    assert_eq!(a1.ws.next(WAIT).await, Some(Received::Closed(Some((1000, String::new())))));
    b1.ws.send("close_with").await;
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Text("last words".into())));
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Closed(Some((4001, "bye".into())))));
    c.log.wait("close", &a1.id).await;
    c.log.wait("close", &b1.id).await;
}

#[tokio::test]
async fn destroy_client_drops_the_connection_without_a_close_frame() {
    let c = Cluster::start().await;
    let (mut a1, mut b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    c.api.set_session(&b1.id, &obj(json!({"k": "v"}))).await.unwrap();
    c.api.destroy_client(&b1.id).await.unwrap();
    // `Closed(None)`: the socket ended without a close frame.
    assert_eq!(b1.ws.next(WAIT).await, Some(Received::Closed(None)));
    // on_close still runs, with the session.
    assert_eq!(c.log.wait("close", &b1.id).await["session"], json!({"k": "v"}));
    let (api, id) = (&c.api, &b1.id);
    eventually(WAIT, "destroyed client offline", || async move { api.is_online(id).await == Ok(false) }).await;
    c.api.destroy_client(&b1.id).await.unwrap(); // gone already: no-op
    expect_exactly(&c.api, &mut a1, &[]).await;
}

// ----- sessions ---------------------------------------------------------------------------------

#[tokio::test]
async fn set_session_replaces_update_session_deep_merges_and_session_reads() {
    let c = Cluster::start().await;
    for gw in [&c.a, &c.b] {
        let mut p = c.peer(gw).await;
        assert_eq!(c.api.session(&p.id).await, Ok(Some(Session::new())));
        c.api.set_session(&p.id, &obj(json!({"a": 1, "nested": {"x": 1, "y": 2}, "c": 3}))).await.unwrap();
        assert_eq!(c.api.session(&p.id).await, Ok(Some(obj(json!({"a": 1, "nested": {"x": 1, "y": 2}, "c": 3})))));

        // Objects merge key by key, null deletes, anything else replaces.
        let patch = json!({"b": 2, "nested": {"y": 3, "z": 4}, "a": null, "c": {"d": 1}});
        c.api.update_session(&p.id, &obj(patch)).await.unwrap();
        let merged = json!({"b": 2, "nested": {"x": 1, "y": 3, "z": 4}, "c": {"d": 1}});
        assert_eq!(c.api.session(&p.id).await, Ok(Some(obj(merged.clone()))));
        // The handler sees what the gateway holds.
        p.ws.send("session").await;
        assert_eq!(p.ws.recv_json().await, merged);

        c.api.set_session(&p.id, &obj(json!({"only": true}))).await.unwrap();
        assert_eq!(c.api.session(&p.id).await, Ok(Some(obj(json!({"only": true})))));
        c.api.set_session(&p.id, &Session::new()).await.unwrap();
        assert_eq!(c.api.session(&p.id).await, Ok(Some(Session::new())));

        // Unknown client: no session; writing to it is a documented no-op.
        let g = ghost(&p.id);
        assert_eq!(c.api.session(&g).await, Ok(None));
        c.api.set_session(&g, &obj(json!({"x": 1}))).await.unwrap();
        c.api.update_session(&g, &obj(json!({"x": 1}))).await.unwrap();
        assert_eq!(c.api.session(&g).await, Ok(None));
    }
}

#[tokio::test]
async fn a_handler_session_change_is_written_back_and_seen_by_the_next_event() {
    let c = Cluster::start().await;
    for gw in [&c.a, &c.b] {
        let mut p = c.peer(gw).await;
        p.ws.send(r#"set name "alice""#).await;
        assert_eq!(p.ws.recv().await, "ok");
        p.ws.send(r#"set profile {"age": 7}"#).await;
        assert_eq!(p.ws.recv().await, "ok");
        wait_session(&c.api, &p.id, json!({"name": "alice", "profile": {"age": 7}})).await;
        p.ws.send("session").await;
        assert_eq!(p.ws.recv_json().await, json!({"name": "alice", "profile": {"age": 7}}));

        p.ws.send("del name").await;
        assert_eq!(p.ws.recv().await, "ok");
        wait_session(&c.api, &p.id, json!({"profile": {"age": 7}})).await;
    }
}

/// Events already on their way to the worker when a handler's write-back lands still see its
/// change: a client that sends "log in" and "say" back to back is logged in for the second one.
#[tokio::test]
async fn pipelined_events_see_the_session_the_previous_handler_left() {
    let c = Cluster::start().await;
    let mut p = c.peer(&c.a).await;
    for i in 0..50 {
        p.ws.send(&format!("set n {i}")).await;
        p.ws.send("session").await;
        if i % 10 == 9 {
            p.ws.send("del n").await;
            p.ws.send("session").await;
        }
    }
    for i in 0..50 {
        assert_eq!(p.ws.recv().await, "ok");
        assert_eq!(p.ws.recv_json().await, json!({"n": i}), "event after `set n {i}`");
        if i % 10 == 9 {
            assert_eq!(p.ws.recv().await, "ok");
            assert_eq!(p.ws.recv_json().await, json!({}), "event after `del n`");
        }
    }
    wait_session(&c.api, &p.id, json!({})).await;
}

/// The documented rule: after a handler, only the top-level keys it changed or removed are
/// written back. Keys a web backend wrote meanwhile survive; for a key both wrote, the handler's
/// write-back (which lands later) wins.
#[tokio::test]
async fn a_handler_write_back_keeps_what_a_web_backend_wrote_meanwhile() {
    let c = Cluster::start().await;
    let mut p = c.peer(&c.b).await;
    c.api.set_session(&p.id, &obj(json!({"keep": 1, "shared": "web-0", "gone": true}))).await.unwrap();
    wait_session(&c.api, &p.id, json!({"keep": 1, "shared": "web-0", "gone": true})).await;

    // update_session while the handler runs.
    p.ws.send("race 1").await;
    assert_eq!(p.ws.recv().await, "in-handler");
    c.api.update_session(&p.id, &obj(json!({"keep": 2, "web": 1, "shared": "web-1"}))).await.unwrap();
    // Same link, so the update has been applied when this answer comes.
    let during = json!({"keep": 2, "web": 1, "shared": "web-1", "gone": true});
    assert_eq!(c.api.session(&p.id).await, Ok(Some(obj(during))));
    c.gate.add_permits(1);
    wait_session(&c.api, &p.id, json!({"keep": 2, "web": 1, "shared": "handler-1", "handler": "1"})).await;

    // set_session (a full replace) while the handler runs: the handler's keys are put back on top
    // of the new session, the keys the web backend dropped stay dropped.
    p.ws.send("race 2").await;
    assert_eq!(p.ws.recv().await, "in-handler");
    c.api.set_session(&p.id, &obj(json!({"web2": true}))).await.unwrap();
    assert_eq!(c.api.session(&p.id).await, Ok(Some(obj(json!({"web2": true})))));
    c.gate.add_permits(1);
    wait_session(&c.api, &p.id, json!({"web2": true, "shared": "handler-2", "handler": "2"})).await;
    p.ws.send("session").await;
    assert_eq!(p.ws.recv_json().await, json!({"web2": true, "shared": "handler-2", "handler": "2"}));
}

// ----- server data, on_close, on_websocket_connect ----------------------------------------------

#[tokio::test]
async fn session_and_server_data_are_available_in_on_message_and_on_close() {
    let c = Cluster::start().await;
    for gw in [&c.a, &c.b] {
        let mut p = c.peer(gw).await;
        let local = p.ws.local_addr().to_string();
        p.ws.send("server").await;
        assert_eq!(p.ws.recv_json().await, json!({"client": local, "gateway": public_addr(gw)}));

        // A session written by the handler and one key from a web backend.
        p.ws.send(r#"set name "alice""#).await;
        assert_eq!(p.ws.recv().await, "ok");
        c.api.update_session(&p.id, &obj(json!({"from_web": 1}))).await.unwrap();
        wait_session(&c.api, &p.id, json!({"name": "alice", "from_web": 1})).await;

        // The client goes away: on_close still has everything.
        let id = p.id.clone();
        p.ws.close().await;
        let note = c.log.wait("close", &id).await;
        assert_eq!(
            note,
            json!({"client": local, "gateway": public_addr(gw), "session": {"name": "alice", "from_web": 1}})
        );
    }

    // Closed by the server: same.
    let mut p = c.peer(&c.b).await;
    let local = p.ws.local_addr().to_string();
    c.api.set_session(&p.id, &obj(json!({"k": "v"}))).await.unwrap();
    c.api.close_client(&p.id).await.unwrap();
    p.ws.expect_close().await;
    let note = c.log.wait("close", &p.id).await;
    assert_eq!(note, json!({"client": local, "gateway": public_addr(&c.b), "session": {"k": "v"}}));
}

#[tokio::test]
async fn on_websocket_connect_gets_path_query_headers_and_cookies() {
    let c = Cluster::start().await;
    for gw in [&c.a, &c.b] {
        let url = format!("{}chat/room?name=J%C3%BCrgen+M&lang=de", gw.ws_url);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("cookie", HeaderValue::from_static("sid=abc123; theme=\"dark\""));
        req.headers_mut().insert("x-token", HeaderValue::from_static("t0k3n"));
        let mut ws = WsClient::connect_request(req).await;
        ws.send("id").await;
        let id = ws.recv_id().await;
        let note = c.log.wait("ws", &id).await;
        assert_eq!(
            note,
            json!({
                "path": "/chat/room",
                "query": [["name", "Jürgen M"], ["lang", "de"]],
                "cookies": [["sid", "abc123"], ["theme", "dark"]],
                "token": "t0k3n",
            })
        );
    }
}

#[tokio::test]
async fn on_websocket_connect_can_reject_a_client_before_any_on_message() {
    let c = Cluster::start().await;
    for (gw, tag) in [(&c.a, "ra"), (&c.b, "rb")] {
        let mut ws = WsClient::connect(&format!("{}?reject=4003&tag={tag}", gw.ws_url)).await;
        // Sent at once, racing the rejection: it must never reach on_message.
        ws.send("id").await;
        assert_eq!(ws.next(WAIT).await, Some(Received::Closed(Some((4003, "rejected".into())))));
        let tagged = |v: &Value| v["query"].as_array().is_some_and(|q| q.contains(&json!(["tag", tag])));
        let (id, _) = c.log.find("ws", tagged).expect("on_websocket_connect ran");
        // on_close is the client's last event; by then any message would have been handled.
        c.log.wait("close", &id).await;
        assert!(c.log.all("message", &id).is_empty(), "on_message ran for a rejected client");
    }
    // Other clients are unaffected.
    let mut p = c.peer(&c.a).await;
    expect_exactly(&c.api, &mut p, &[]).await;
}

/// A third gateway listening on IPv6 loopback only: client ids carry the bracketed address and
/// server data the IPv6 socket addresses. Skipped where the host has no IPv6 loopback.
#[tokio::test]
async fn ipv6_clients_and_gateways_work_and_their_addresses_reach_handlers() {
    let c = Cluster::start().await;
    let (Ok(public), Ok(internal)) = (TcpListener::bind("[::1]:0").await, TcpListener::bind("[::1]:0").await) else {
        eprintln!("no IPv6 loopback on this host: skipping the IPv6 test");
        return;
    };
    let ws_url = format!("ws://{}/", public.local_addr().unwrap());
    let config = gw_config::GatewayConfig {
        name: "gateway-v6".into(),
        registers: vec![c.reg.addr.to_string()],
        secret: SECRET.into(),
        link: fast_link(),
        ..gw_config::GatewayConfig::default()
    };
    let listeners = gw_gateway::Listeners::new(vec![public], internal);
    let gw = gw_gateway::build(config, &listeners).unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(gw_gateway::serve(gw.clone(), listeners, stop));
    assert!(gw.address().starts_with("[::1]:"), "{}", gw.address());
    let g = gw.clone();
    eventually(WAIT, "both workers on the IPv6 gateway", || {
        let n = g.worker_count();
        async move { n == 2 }
    })
    .await;
    assert!(c.api.wait_for_gateways(3, WAIT).await);

    let mut p = peer_at(&ws_url).await;
    assert_eq!(p.id.gateway, gw.address());
    let local = p.ws.local_addr();
    assert!(local.is_ipv6());
    p.ws.send("server").await;
    let gateway = ws_url.trim_start_matches("ws://").trim_end_matches('/');
    assert_eq!(p.ws.recv_json().await, json!({"client": local.to_string(), "gateway": gateway}));
    c.api.bind_uid(&p.id, "six").await.unwrap();
    c.api.send_to_uid("six", "over v6").await.unwrap();
    expect_exactly(&c.api, &mut p, &["over v6"]).await;
    assert_eq!(c.api.client_count().await.unwrap().complete(), Ok(1));
    let id = p.id.clone();
    p.ws.close().await;
    assert_eq!(c.log.wait("close", &id).await["client"], json!(local.to_string()));
}

// ----- the worker's context ---------------------------------------------------------------------

#[tokio::test]
async fn a_handler_uses_the_gateway_api_across_gateways() {
    let c = Cluster::start().await;
    let (mut a1, mut b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    a1.ws.send("bind alice").await;
    assert_eq!(a1.ws.recv().await, "bound");
    b1.ws.send("join room").await;
    assert_eq!(b1.ws.recv().await, "joined");

    // From a handler for a client on B to a uid bound on A, and the other way round for a group.
    b1.ws.send("to_uid alice hi from b").await;
    assert_eq!(a1.ws.recv().await, "hi from b");
    assert_eq!(a1.ws.recv().await, "end");
    assert_eq!(b1.ws.recv().await, "end");
    a1.ws.send("to_group room hello room").await;
    assert_eq!(b1.ws.recv().await, "hello room");
    assert_eq!(b1.ws.recv().await, "end");
    assert_eq!(a1.ws.recv().await, "end");

    b1.ws.send("uid_online alice").await;
    assert_eq!(b1.ws.recv_json().await, json!({"online": true, "missing": []}));
    a1.ws.send("me_online").await;
    assert_eq!(a1.ws.recv().await, "true");
    // The web backend sees what the handler did.
    assert_eq!(c.api.uid_of(&a1.id).await, Ok(Some("alice".into())));
    assert_eq!(c.api.client_ids_by_group("room").await.unwrap().complete(), Ok(vec![b1.id.clone()]));
}

// ----- error cases ------------------------------------------------------------------------------

macro_rules! assert_err {
    ($pat:pat, $($call:tt)+) => {{
        let r = $($call)+.await;
        assert!(matches!(r, Err($pat)), "{}: {:?}", stringify!($($call)+), r);
    }};
}

/// The calls take parsed ids: a malformed one is refused where it is parsed, and `?` turns that
/// into the Gateway API's own error.
#[test]
fn malformed_client_ids_are_refused_where_they_are_parsed() {
    fn parse(text: &str) -> Result<ClientId, ClientError> {
        Ok(text.parse::<ClientId>()?)
    }
    for bad in ["", "garbage", "a.b", "Zm9v.xyz.1", "Zm9v.1.2.3", "!!!.1.1", ".1.1"] {
        assert!(matches!(parse(bad), Err(ClientError::InvalidClientId(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn empty_uids_and_group_names_are_a_typed_error_for_every_call() {
    use ClientError::EmptyName;
    let c = Cluster::start().await;
    let mut a1 = c.peer(&c.a).await;
    let mut b1 = c.peer(&c.b).await;
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.join_group(&b1.id, "g").await.unwrap();
    let api = &c.api;
    let id = &a1.id;
    assert_err!(EmptyName("uid"), api.bind_uid(id, ""));
    assert_err!(EmptyName("uid"), api.unbind_uid(id, ""));
    assert_err!(EmptyName("uid"), api.send_to_uid("", "x"));
    assert_err!(EmptyName("uid"), api.send_to_uids(&["u", ""], "x"));
    assert_err!(EmptyName("uid"), api.is_uid_online(""));
    assert_err!(EmptyName("uid"), api.are_uids_online(&["u", ""]));
    assert_err!(EmptyName("uid"), api.client_ids_by_uid(""));
    assert_err!(EmptyName("uid"), api.client_ids_by_uids(&[""]));
    assert_err!(EmptyName("uid"), api.close_uid(""));
    assert_err!(EmptyName("group"), api.join_group(id, ""));
    assert_err!(EmptyName("group"), api.leave_group(id, ""));
    assert_err!(EmptyName("group"), api.ungroup(""));
    assert_err!(EmptyName("group"), api.send_to_group("", "x"));
    assert_err!(EmptyName("group"), api.send_to_groups(&["g", ""], "x"));
    assert_err!(EmptyName("group"), api.send_to_groups_except(&[""], "x", &[id]));
    assert_err!(EmptyName("group"), api.client_ids_by_group(""));
    assert_err!(EmptyName("group"), api.client_count_by_group(""));
    assert_err!(EmptyName("group"), api.client_count_by_groups(&["g", ""]));
    assert_err!(EmptyName("group"), api.uids_by_group(""));
    assert_err!(EmptyName("group"), api.uid_count_by_group(""));
    assert_err!(EmptyName("group"), api.sessions_by_group(""));
    // Nothing changed and nothing was sent.
    assert_eq!(c.api.uid_of(&a1.id).await, Ok(Some("u".into())));
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), Ok(vec![b1.id.clone()]));
    expect_exactly(&c.api, &mut a1, &[]).await;
    expect_exactly(&c.api, &mut b1, &[]).await;
    // Empty lists are no-ops with empty answers.
    c.api.send_to_uids(&[""; 0], "x").await.unwrap();
    c.api.send_to_groups(&[""; 0], "x").await.unwrap();
    assert!(c.api.client_ids_by_uids(&[""; 0]).await.unwrap().complete().unwrap().is_empty());
}

#[tokio::test]
async fn ids_of_a_restarted_gateway_are_offline_and_commands_to_them_say_client_gone() {
    let Cluster { reg, a, b, api, _workers, .. } = Cluster::start().await;
    let mut on_a = peer_at(&a.ws_url).await;
    let mut old = peer_at(&b.ws_url).await;
    api.bind_uid(&old.id, "u").await.unwrap();
    api.join_group(&old.id, "g").await.unwrap();

    let internal = b.internal;
    b.stop().await;
    assert_eq!(old.ws.expect_close().await.map(|c| c.0), Some(1001));
    let b2 = GatewayHandle::start_on(bind_again(internal).await, &[reg.addr], SECRET, |_| {}).await;
    wait_for_workers(&b2, 2).await;
    let old_id = old.id.clone();
    let (api_ref, id) = (&api, &old_id);
    eventually(WAIT, "linked to the restarted gateway", || async move { api_ref.is_online(id).await == Ok(false) })
        .await;

    let mut new = peer_at(&b2.ws_url).await;
    assert_eq!(old_id.gateway, new.id.gateway, "same advertised address");
    assert_ne!(old_id, new.id, "ids are never reused across restarts");

    let gone = || Err(ClientError::ClientGone(old_id.clone()));
    let session = obj(json!({"x": 1}));
    assert_eq!(api.send_to_client(&old_id, "x").await, gone());
    assert_eq!(api.bind_uid(&old_id, "u").await, gone());
    assert_eq!(api.unbind_uid(&old_id, "u").await, gone());
    assert_eq!(api.join_group(&old_id, "g").await, gone());
    assert_eq!(api.leave_group(&old_id, "g").await, gone());
    assert_eq!(api.close_client(&old_id).await, gone());
    assert_eq!(api.close_client_with(&old_id, None, None).await, gone());
    assert_eq!(api.destroy_client(&old_id).await, gone());
    assert_eq!(api.set_session(&old_id, &session).await, gone());
    assert_eq!(api.update_session(&old_id, &session).await, gone());
    assert_eq!(api.uid_of(&old_id).await, Ok(None), "queries treat a gone client as offline");
    assert_eq!(api.session(&old_id).await, Ok(None));
    // In lists, ids of a gone instance are skipped (documented): the others still get it.
    api.send_to_clients(&[&old_id, &new.id, &on_a.id], "to the living").await.unwrap();
    api.send_to_all_except("all but the old one", &[&old_id]).await.unwrap();
    expect_exactly(&api, &mut new, &["to the living", "all but the old one"]).await;
    expect_exactly(&api, &mut on_a, &["to the living", "all but the old one"]).await;
    // The old instance's uid and group went with it.
    assert_eq!(api.is_uid_online("u").await.unwrap(), Answer { value: false, missing: vec![] });
    assert_eq!(api.client_ids_by_group("g").await.unwrap().complete(), Ok(vec![]));
}

#[tokio::test]
async fn an_unreachable_gateway_is_reported_by_every_cluster_wide_call() {
    let c = Cluster::start().await;
    let (mut a1, mut b1) = (c.peer(&c.a).await, c.peer(&c.b).await);
    c.api.bind_uid(&a1.id, "u").await.unwrap();
    c.api.join_group(&b1.id, "g").await.unwrap();

    // Listed by the register, but nobody can link to it.
    let hole = FakeGateway::black_hole(c.reg.addr).await;
    let missing = vec![hole.address.clone()];
    let (api, m) = (&c.api, &missing);
    eventually(WAIT, "the unreachable gateway is reported", || async move {
        api.client_count().await.unwrap().missing == *m
    })
    .await;

    // The reachable gateways' part is there, and it is never passed off as complete.
    let count = c.api.client_count().await.unwrap();
    assert_eq!(count, Answer { value: 2, missing: missing.clone() });
    assert_eq!(count.complete(), unreachable(&missing));
    let ids = c.api.client_ids().await.unwrap();
    assert_eq!(ids.value, sorted(&[&a1.id, &b1.id]));
    assert_eq!(ids.complete(), unreachable(&missing));
    assert_eq!(c.api.uids().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.uid_count().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.client_ids_by_uid("u").await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.client_ids_by_uids(&["u"]).await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.are_uids_online(&["u"]).await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.client_ids_by_group("g").await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.client_count_by_group("g").await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.client_count_by_groups(&["g"]).await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.uids_by_group("g").await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.uid_count_by_group("g").await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.groups().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.group_client_ids().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.group_client_counts().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.group_uids().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.group_uid_counts().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.sessions().await.unwrap().complete(), unreachable(&missing));
    assert_eq!(c.api.sessions_by_group("g").await.unwrap().complete(), unreachable(&missing));
    // "Online" is definitive even with a gateway missing; "offline" is not.
    assert_eq!(c.api.is_uid_online("u").await.unwrap(), Answer { value: true, missing: vec![] });
    assert_eq!(c.api.is_uid_online("nobody").await.unwrap(), Answer { value: false, missing: missing.clone() });

    // Fan-out commands reach every reachable gateway and name the one that missed out.
    assert_eq!(c.api.send_to_all("to all").await, unreachable(&missing));
    assert_eq!(c.api.send_to_uid("u", "to u").await, unreachable(&missing));
    assert_eq!(c.api.send_to_group("g", "to g").await, unreachable(&missing));
    expect_exactly(&c.api, &mut a1, &["to all", "to u"]).await;
    expect_exactly(&c.api, &mut b1, &["to all", "to g"]).await;
    // A client of the unreachable gateway.
    let there = ClientId::new(hole.address.clone(), 1, 1);
    assert_eq!(c.api.send_to_client(&there, "x").await, Err(ClientError::GatewayUnavailable(hole.address.clone())));
    assert_eq!(c.api.is_online(&there).await, Err(ClientError::GatewayUnavailable(hole.address.clone())));
}

#[tokio::test]
async fn a_gateway_that_does_not_answer_in_time_is_reported_missing() {
    let c = Cluster::start().await;
    let silent = FakeGateway::held(c.reg.addr).await;
    let api = GatewayClient::builder([c.reg.addr.to_string()])
        .secret(SECRET)
        .link_config(fast_link())
        .query_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    assert!(api.wait_for_gateways(3, WAIT).await);
    let (a1, b1) = (c.peer(&c.a).await, c.peer(&c.b).await);

    let count = api.client_count().await.unwrap();
    assert_eq!(count, Answer { value: 2, missing: vec![silent.address.clone()] });
    assert!(matches!(count.complete(), Err(ClientError::Unreachable { .. })));
    assert_eq!(api.client_ids().await.unwrap().value, sorted(&[&a1.id, &b1.id]));
    // Calls aimed at one live gateway do not wait for the silent one.
    assert_eq!(api.is_online(&b1.id).await, Ok(true));
    let there = ClientId::new(silent.address.clone(), FAKE_INSTANCE, 1);
    assert_eq!(api.is_online(&there).await, Err(ClientError::Timeout(silent.address.clone())));
}

/// A handler awaiting a query that one gateway is slow to answer holds up only its own client:
/// other clients of the same worker (on both gateways) keep getting their echoes, other queries
/// keep getting answered, and a second query on the same slow link is multiplexed, not queued.
/// The slow gateway answers only after the echoes, so the replies carrying its answer (no gateway
/// missing) prove the echoes flowed while both queries were pending. If a pending query held up
/// event processing, the echoes would wait until the queries time out (5 s) and the replies would
/// name the slow gateway as missing.
#[tokio::test]
async fn a_slow_query_to_one_gateway_does_not_delay_events_for_other_clients() {
    let c = Cluster::start().await;
    let slow = FakeGateway::held(c.reg.addr).await;
    let s = &slow;
    eventually(WAIT, "both workers linked to the slow gateway", || async move { s.workers() == 2 }).await;

    // Eight clients, four per gateway; find out which worker serves each.
    let mut peers = Vec::new();
    for gw in [&c.a, &c.b, &c.a, &c.b, &c.a, &c.b, &c.a, &c.b] {
        let mut p = c.peer(gw).await;
        p.ws.send("who").await;
        let worker = p.ws.recv().await;
        peers.push((p, worker));
    }
    let all_ids: Vec<ClientId> = {
        let mut v: Vec<ClientId> = peers.iter().map(|(p, _)| p.id.clone()).collect();
        v.sort();
        v
    };
    // The busiest worker has at least four of them.
    let busiest = ["w1", "w2"].into_iter().max_by_key(|w| peers.iter().filter(|(_, pw)| pw == w).count()).unwrap();
    let (mut mine, others): (Vec<_>, Vec<_>) = peers.into_iter().partition(|(_, w)| w == busiest);
    assert!(mine.len() >= 4);
    let (mut counting, _) = mine.remove(0);
    let (mut listing, _) = mine.remove(0);
    let mut echoing: Vec<Peer> = mine.into_iter().chain(others).map(|(p, _)| p).collect();

    counting.ws.send("count").await;
    assert_eq!(counting.ws.recv().await, "querying");
    eventually(WAIT, "the first query waits at the slow gateway", || async move { s.held_queries() == 1 }).await;
    listing.ws.send("ids").await;
    assert_eq!(listing.ws.recv().await, "querying");
    eventually(WAIT, "the second query waits too", || async move { s.held_queries() == 2 }).await;

    // Meanwhile: echoes for everyone else, including clients of the same worker on both gateways,
    // and queries that only need the live gateways.
    for round in 0..3 {
        for p in echoing.iter_mut() {
            p.ws.send(&format!("echo {round}")).await;
            assert_eq!(p.ws.recv().await, round.to_string());
        }
    }
    for p in echoing.iter_mut() {
        p.ws.send("me_online").await;
        assert_eq!(p.ws.recv().await, "true");
    }
    assert_eq!(s.held_queries(), 2, "the slow queries are still pending");

    // The slow gateway answers, last request first: each handler gets its own reply.
    slow.release().await;
    assert_eq!(listing.ws.recv_json().await, json!({"ids": all_ids, "missing": []}));
    assert_eq!(counting.ws.recv_json().await, json!({"count": 8, "missing": []}));
}

// ----- a misbehaving gateway ------------------------------------------------------------------

use gw_integration_tests::fake_gateway::{self, FAKE_INSTANCE};

/// A "gateway" announced to the register that misbehaves on purpose: [`held`](Self::held) accepts
/// links but answers queries only after [`release`](Self::release) (in reverse order), and
/// [`black_hole`](Self::black_hole) never completes a link.
struct FakeGateway {
    address: String,
    inner: Arc<FakeInner>,
    _listener: Option<TcpListener>,
    _stop: DropGuard,
}

#[derive(Default)]
struct FakeInner {
    workers: AtomicUsize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    released: bool,
    waiting: Vec<(mpsc::Sender<FromGateway>, u64, Query)>,
}

impl FakeGateway {
    async fn held(register: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let inner = Arc::new(FakeInner::default());
        tokio::spawn(fake_gateway::announce(register, address.clone(), fake_gateway::handshake(SECRET), stop.clone()));
        tokio::spawn({
            let (inner, address, stop) = (inner.clone(), address.clone(), stop.clone());
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = listener.accept() => a,
                    };
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(fake_link(stream, inner.clone(), address.clone(), stop.clone()));
                    }
                }
            }
        });
        Self { address, inner, _listener: None, _stop: stop.drop_guard() }
    }

    /// Listens (so connecting does not fail fast) but never accepts: no link ever completes.
    async fn black_hole(register: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        tokio::spawn(fake_gateway::announce(register, address.clone(), fake_gateway::handshake(SECRET), stop.clone()));
        Self { address, inner: Arc::default(), _listener: Some(listener), _stop: stop.drop_guard() }
    }

    fn workers(&self) -> usize {
        self.inner.workers.load(Ordering::SeqCst)
    }

    fn held_queries(&self) -> usize {
        self.inner.held.lock().unwrap().waiting.len()
    }

    /// Answers every held query, newest first, and every later one at once.
    async fn release(&self) {
        let waiting = {
            let mut held = self.inner.held.lock().unwrap();
            held.released = true;
            std::mem::take(&mut held.waiting)
        };
        for (tx, id, query) in waiting.into_iter().rev() {
            let _ = tx.send(FromGateway::Reply { id, reply: fake_answer(query) }).await;
        }
    }
}

/// An empty gateway's answers.
fn fake_answer(query: Query) -> Reply {
    match query {
        Query::ClientCount => Reply::Counts(vec![0]),
        Query::ClientIds => Reply::Clients(vec![]),
        Query::IsOnline { clients } => Reply::Flags(vec![false; clients.len()]),
        _ => Reply::Error("fake gateway".into()),
    }
}

async fn fake_link(stream: TcpStream, inner: Arc<FakeInner>, address: String, stop: CancellationToken) {
    let Ok(link) = gw_link::accept(stream, &fake_gateway::handshake(SECRET), &[Role::Worker, Role::Client]).await
    else {
        return;
    };
    if link.peer.role == Role::Worker {
        inner.workers.fetch_add(1, Ordering::SeqCst);
    }
    let (tx, rx) = mpsc::channel::<FromGateway>(64);
    fake_gateway::spawn_writer(link.writer, rx, stop.clone());
    let _ = tx.send(FromGateway::Welcome { instance: FAKE_INSTANCE, address }).await;
    let mut reader = link.reader;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = reader.read::<ToGateway>() => m,
        };
        match msg {
            Ok(Some(ToGateway::Ping)) => {
                let _ = tx.send(FromGateway::Pong).await;
            }
            Ok(Some(ToGateway::Request { id, query })) => {
                let now = {
                    let mut held = inner.held.lock().unwrap();
                    if held.released {
                        Some(query)
                    } else {
                        held.waiting.push((tx.clone(), id, query));
                        None
                    }
                };
                if let Some(query) = now {
                    let _ = tx.send(FromGateway::Reply { id, reply: fake_answer(query) }).await;
                }
            }
            Ok(Some(_)) => {}
            _ => return,
        }
    }
}
