//! Issue 26 items 1 and 6: one client's state at a gateway is bounded, and nothing a caller does
//! to it can hold back the events of anyone.
//!
//! The hostile run grew one session to 9 MB with `update_session` calls each under the HTTP body
//! limit; from then on every event of that client was too large for an internal frame, dropped
//! uncounted by the link's writer, and the worker's acknowledgements stalled for good. Here:
//! every API that grows a session (`set_session`, `update_session`, a handler's write-back) is
//! refused past `max_session_bytes`, counted, and answered with the reason to a caller that asks;
//! an event that cannot be framed anyway is dropped and counted before it is numbered; an answer
//! too large for a frame is an error, not a timeout; uid and group names and the groups of one
//! client are bounded too.

use std::time::{Duration, Instant};

use gw_business_worker::{Context, Events, HandlerResult, Message};
use gw_config::GatewayConfig;
use gw_gateway_client::ClientError;
use gw_integration_tests::*;
use gw_proto::{ClientId, FromGateway, Query, Refusal, Reply, Role, ToGateway};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// `id` answers the client id; `grow <n>` makes the handler add `n` bytes to the session;
/// `keys` answers the session's keys; anything else is echoed.
#[derive(Clone)]
struct App;

impl Events for App {
    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let text = msg.as_text().unwrap_or_default().to_string();
        match text.split_once(' ') {
            _ if text == "id" => ctx.send(ctx.client_id.to_string()).await?,
            _ if text == "keys" => {
                let keys: Vec<&String> = ctx.session.keys().collect();
                ctx.send(json!(keys).to_string()).await?;
            }
            Some(("grow", n)) => {
                let key = format!("grown-{}", ctx.session.len());
                ctx.session.insert(key, Value::String("g".repeat(n.parse()?)));
                ctx.send("grown").await?;
            }
            _ => ctx.send(text).await?,
        }
        Ok(())
    }
}

struct Cluster {
    _reg: RegisterHandle,
    gw: GatewayHandle,
    _worker: WorkerHandle,
    api: gw_gateway_client::GatewayClient,
}

impl Cluster {
    async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let reg = RegisterHandle::start(SECRET).await;
        let gw = GatewayHandle::start_with(&[reg.addr], SECRET, tweak).await;
        let worker = WorkerHandle::start("w", &[reg.addr], SECRET, App);
        wait_for_workers(&gw, 1).await;
        let api = gateway_client(&[reg.addr], SECRET, 1).await;
        Self { _reg: reg, gw, _worker: worker, api }
    }

    /// A connected client and its id.
    async fn client(&self) -> (WsClient, ClientId) {
        let mut ws = self.gw.client().await;
        ws.send("id").await;
        let id = ws.recv_id().await;
        (ws, id)
    }

    /// Waits until the worker has acknowledged every event the gateway sent it.
    async fn all_acknowledged(&self) {
        let gw = self.gw.gw.clone();
        eventually(WAIT, "every event acknowledged", || {
            let n = gw.unacknowledged();
            async move { n == 0 }
        })
        .await;
    }
}

fn obj(v: Value) -> gw_gateway_client::Session {
    v.as_object().unwrap().clone()
}

/// Every client message gets its echo, in order.
async fn echoes(ws: &mut WsClient, n: usize) {
    for i in 0..n {
        ws.send(&format!("m{i}")).await;
    }
    for i in 0..n {
        assert_eq!(ws.recv().await, format!("m{i}"));
    }
}

#[tokio::test]
async fn update_session_cannot_grow_a_session_past_the_cap_and_the_clients_events_keep_flowing() {
    // The hostile run at a smaller scale: internal frames of 1 MiB, sessions of at most 256 KiB
    // (the defaults are 8 MiB and 1 MiB).
    let c = Cluster::start(|g| {
        g.link.max_frame = 1 << 20;
        g.max_session_bytes = 256 * 1024;
        g.max_message_size = 64 * 1024;
    })
    .await;
    let (mut ws, id) = c.client().await;
    let (mut other, _) = c.client().await;
    // 100 KB patches, each well under the HTTP body limit, 15 times: 1.5 MB, more than one
    // internal frame holds.
    let chunk = "x".repeat(100_000);
    for i in 0..15 {
        let written = c.api.update_session(&id, &obj(json!({ format!("k{i:02}"): chunk }))).await;
        if i < 2 {
            written.unwrap();
        } else {
            // The caller is told, with the gateway's reason.
            match written {
                Err(ClientError::WriteRefused { refusal: Refusal::SessionTooLarge { size, limit }, .. }) => {
                    assert_eq!(limit, 256 * 1024);
                    assert!(size > limit, "{size}");
                }
                other => panic!("patch {i}: expected a refusal, got {other:?}"),
            }
        }
    }
    // Two chunks fit in 256 KiB, the third is refused, and so is every one after it.
    let session = c.api.session(&id).await.unwrap().expect("the client is connected");
    let size = serde_json::to_vec(&session).unwrap().len();
    assert!(size <= 256 * 1024, "the session grew to {size} bytes");
    let mut keys: Vec<&String> = session.keys().collect();
    keys.sort();
    assert_eq!(keys, ["k00", "k01"]);
    assert_eq!(c.gw.metric("refused_session_too_large"), 13);
    // The client's events still reach the worker (each carries the 200 KB session), and are
    // acknowledged: nothing held back, for this client or the next.
    echoes(&mut ws, 20).await;
    echoes(&mut other, 20).await;
    c.all_acknowledged().await;
    assert_eq!(c.gw.metric("dropped_event_too_large"), 0);
    assert_eq!(c.gw.gw.state.metrics.dropped_total(), 0);
    // Shrinking it is always allowed.
    c.api.update_session(&id, &obj(json!({"k00": null}))).await.unwrap();
    c.api.update_session(&id, &obj(json!({"small": 1}))).await.unwrap();
    let session = c.api.session(&id).await.unwrap().unwrap();
    let mut keys: Vec<&String> = session.keys().collect();
    keys.sort();
    assert_eq!(keys, ["k01", "small"]);
}

#[tokio::test]
async fn set_session_and_a_handlers_write_back_are_capped_too() {
    let c = Cluster::start(|g| g.max_session_bytes = 64 * 1024).await;
    let (mut ws, id) = c.client().await;
    let refused = c.api.set_session(&id, &obj(json!({"big": "x".repeat(70_000)}))).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::WriteRefused { refusal: Refusal::SessionTooLarge { .. }, .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("max_session_bytes"), "{refused}");
    c.api.set_session(&id, &obj(json!({"fits": "x".repeat(60_000)}))).await.unwrap();
    // The handler adds 10 KB: refused at the gateway, and the next event shows the session
    // without it (the write-back counts as applied, so the worker does not lay it on again).
    ws.send("grow 10000").await;
    assert_eq!(ws.recv().await, "grown");
    ws.send("keys").await;
    assert_eq!(ws.recv().await, r#"["fits"]"#);
    assert_eq!(c.gw.metric("refused_session_too_large"), 2, "set_session and the write-back");
    // A handler that stays within the cap is written back as before.
    ws.send("grow 10").await;
    assert_eq!(ws.recv().await, "grown");
    ws.send("keys").await;
    let keys: Vec<String> = serde_json::from_str(&ws.recv().await).unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    c.all_acknowledged().await;
}

/// A raw link to a gateway's internal listener, speaking as a gateway client.
struct RawLink {
    reader: gw_link::FrameReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    next_id: u64,
}

impl RawLink {
    async fn connect(gw: &GatewayHandle) -> Self {
        let opts = gw_link::HandshakeOptions {
            secret: SECRET.as_bytes().to_vec(),
            role: Role::Client,
            node: "raw".into(),
            max_frame: 8 << 20,
            timeout: WAIT,
        };
        let link = gw_link::connect(&gw.internal.to_string(), &opts).await.unwrap();
        let mut raw = Self { reader: link.reader, writer: link.writer, next_id: 1 };
        assert!(matches!(raw.reader.read::<FromGateway>().await.unwrap(), Some(FromGateway::Welcome { .. })));
        raw
    }

    async fn ask(&mut self, query: Query) -> Reply {
        use tokio::io::AsyncWriteExt;
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = Vec::new();
        gw_proto::encode_frame(&ToGateway::Request { id, query }, &mut buf, 8 << 20).unwrap();
        self.writer.write_all(&buf).await.unwrap();
        loop {
            match tokio::time::timeout(WAIT, self.reader.read::<FromGateway>()).await.unwrap().unwrap() {
                Some(FromGateway::Reply { id: got, reply }) if got == id => return reply,
                Some(_) => {}
                None => panic!("the gateway closed the link"),
            }
        }
    }
}

#[tokio::test]
async fn a_session_write_asked_as_a_query_is_answered_with_the_reason_it_was_refused() {
    let c = Cluster::start(|g| g.max_session_bytes = 1000).await;
    let (_ws, id) = c.client().await;
    let local = id.local;
    let mut raw = RawLink::connect(&c.gw).await;
    let bytes = |v: Value| bytes::Bytes::from(serde_json::to_vec(&v).unwrap());
    let set = |session| Query::SetSession { client: local, session };
    let update = |patch| Query::UpdateSession { client: local, patch };
    assert_eq!(raw.ask(set(bytes(json!({"a": "x".repeat(900)})))).await, Reply::Done);
    assert_eq!(
        raw.ask(update(bytes(json!({"b": "x".repeat(200)})))).await,
        Reply::Refused(Refusal::SessionTooLarge { size: 1115, limit: 1000 })
    );
    assert_eq!(
        raw.ask(set(bytes(json!({"a": "x".repeat(1000)})))).await,
        Reply::Refused(Refusal::SessionTooLarge { size: 1008, limit: 1000 })
    );
    assert_eq!(raw.ask(update(bytes(json!({"a": null, "b": 1})))).await, Reply::Done);
    assert!(matches!(raw.ask(update(bytes(json!([1])))).await, Reply::Refused(Refusal::NotAnObject(_))));
    let gone = Query::SetSession { client: local + 1000, session: bytes(json!({})) };
    assert_eq!(raw.ask(gone).await, Reply::Refused(Refusal::ClientGone));
    assert_eq!(c.api.session(&id).await.unwrap(), Some(obj(json!({"b": 1}))));
    assert_eq!(c.gw.metric("refused_session_too_large"), 2);
}

#[tokio::test]
async fn a_client_event_too_large_for_a_frame_is_dropped_counted_and_holds_back_no_acknowledgement() {
    // A configuration the start-up check refuses (a 1 MiB message cannot travel in a 256 KiB
    // frame), run anyway: the guard behind that check.
    let c = Cluster::start(|g| g.link.max_frame = 256 * 1024).await;
    let (mut ws, _id) = c.client().await;
    ws.send(&"y".repeat(300_000)).await;
    echoes(&mut ws, 5).await;
    c.all_acknowledged().await;
    assert_eq!(c.gw.metric("dropped_event_too_large"), 1);
    assert_eq!(c.gw.gw.state.metrics.dropped_total(), 1, "counted with the other drops");
}

#[tokio::test]
async fn an_answer_too_large_for_a_frame_is_an_error_at_once_not_a_timeout() {
    let c = Cluster::start(|g| {
        g.link.max_frame = 1 << 20;
        g.max_session_bytes = 200 * 1024;
        g.max_message_size = 64 * 1024;
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (ws, id) = c.client().await;
        c.api.set_session(&id, &obj(json!({"s": "z".repeat(180_000)}))).await.unwrap();
        clients.push((ws, id));
    }
    // 8 × 180 KB of sessions do not fit in one 1 MiB frame: the gateway says so at once (the
    // client library reports it as a gateway that did not answer) instead of the writer
    // dropping the answer and the asker waiting out its 5 s deadline.
    let started = Instant::now();
    let answer = c.api.sessions().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(answer.missing, [c.gw.gw.address().to_string()]);
    assert_eq!(c.gw.metric("replies_too_large"), 1);
    // One client's session still comes, and so does everything else.
    assert_eq!(c.api.session(&clients[0].1).await.unwrap().unwrap()["s"].as_str().unwrap().len(), 180_000);
    assert_eq!(c.api.client_count().await.unwrap().value, 8);
}

#[tokio::test]
async fn uid_and_group_names_that_break_the_rule_are_refused_at_the_gateway() {
    let c = Cluster::start(|g| g.max_groups_per_client = 3).await;
    let (_ws, id) = c.client().await;
    let long = "n".repeat(1025);
    for bad in ["   ", "a\0b", "line\nbreak", long.as_str()] {
        c.api.bind_uid(&id, bad).await.unwrap();
        c.api.join_group(&id, bad).await.unwrap();
    }
    c.api.bind_uid(&id, "fine").await.unwrap();
    for g in ["g1", "g2", "g3", "g4", "g5", "g1"] {
        c.api.join_group(&id, g).await.unwrap();
    }
    let mut groups = c.api.groups().await.unwrap().value;
    groups.sort();
    assert_eq!(groups, ["g1", "g2", "g3"], "three groups at most, rejoining one is fine");
    assert_eq!(c.api.uids().await.unwrap().value, ["fine"]);
    assert_eq!(c.gw.metric("refused_bad_name"), 8);
    assert_eq!(c.gw.metric("refused_too_many_groups"), 2);
}
