//! One connection on the GatewayWorker listener: a PHP BusinessWorker's persistent link (events
//! out, commands in), or a `Lib\Gateway` / `GatewayClient` connection (commands and synchronous
//! queries in, `pack('N', len) . serialize(answer)` out). Bad framing, an unknown command or a
//! failed authentication closes it with a log line; a command whose parameters we cannot take is
//! refused, logged and counted (`rejected_commands`), and the connection stays up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gw_gatewayworker_protocol::packet::encode_reply;
use gw_gatewayworker_protocol::php::{self, Key, Limits, PhpError, Value};
use gw_gatewayworker_protocol::{Cmd, Packet, PacketDecoder, PacketError};
use gw_proto::{Command, FromGateway, Payload, Query, Reply};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::PhpSide;
use super::events::{EventEncoder, session_bytes};
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::router::WorkerLink;

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, side: Arc<PhpSide>, shutdown: CancellationToken) {
    stream.set_nodelay(true).ok();
    let (mut r, w) = stream.into_split();
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<u8>>(64);
    let (feed_tx, feed_rx) = oneshot::channel::<WorkerFeed>();
    let finish = CancellationToken::new();
    // The writer runs in the connection's span (the caller's, which names the PHP peer).
    let writer =
        tokio::spawn(write_loop(w, raw_rx, feed_rx, side.clone(), finish.clone()).instrument(tracing::Span::current()));
    let mut conn = Conn {
        side: side.clone(),
        authorized: side.config.secret_key.is_empty(),
        worker: None,
        feed: Some(feed_tx),
        raw: raw_tx,
    };
    let decoder = PacketDecoder::new(side.config.max_packet);
    let mut buf = BytesMut::with_capacity(4096);
    // A peer must send one whole packet within the handshake timeout, so a stalled or silent
    // connection cannot hold a socket forever (PHP's gateway has no such limit).
    let timeout = side.gw.config.link.handshake_timeout;
    let first_deadline = tokio::time::Instant::now() + timeout;
    let mut heard = false;
    let result: Result<(), ConnError> = async {
        loop {
            while let Some(packet) = decoder.decode(&mut buf)? {
                heard = true;
                conn.handle(packet, peer).await?;
            }
            let n = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(first_deadline), if !heard => {
                    return Err(ConnError::Silent(timeout));
                }
                n = r.read_buf(&mut buf) => n.map_err(ConnError::Read)?,
            };
            if n == 0 {
                return Ok(());
            }
        }
    }
    .await;
    if let Some(w) = &conn.worker {
        side.gw.router.remove(w);
        crate::redeliver::hand_back(&side.gw, w);
        tracing::info!(worker = %w.name, "PHP business worker disconnected");
    }
    if let Err(reason) = result {
        Metrics::inc(&side.gw.state.metrics.link_errors);
        tracing::warn!(peer = %peer, "closed GatewayWorker connection: {reason}");
    }
    drop(conn);
    // Let the writer flush what is queued (at a gateway stop: the clients' close events).
    finish.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

/// Why a GatewayWorker connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("no complete packet within {0:?}")]
    Silent(Duration),
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    #[error("{0:?} body is not JSON")]
    HelloNotJson(Cmd),
    #[error("{0:?}: secret_key does not match")]
    WrongSecret(Cmd),
    #[error("{0:?} before authentication")]
    Unauthenticated(Cmd),
    #[error("{0:?} is not a command a gateway accepts")]
    NotForAGateway(Cmd),
    /// A query whose parameters cannot be taken: closing tells PHP's caller ("connection
    /// close") instead of handing it an empty answer it would take for a true one.
    #[error(transparent)]
    Query(#[from] ParamError),
    #[error("writer gone")]
    WriterGone,
}

/// Parameters of a command or query that this gateway cannot take.
#[derive(Debug, thiserror::Error)]
enum ParamError {
    #[error("ext_data is not JSON: {0}")]
    ExtNotJson(#[source] serde_json::Error),
    #[error("session: {0}")]
    Session(#[from] PhpError),
}

/// A worker link's events, handed to the writer when the connection says `CMD_WORKER_CONNECT`.
struct WorkerFeed {
    events: mpsc::Receiver<FromGateway>,
    link: Arc<WorkerLink>,
}

struct Conn {
    side: Arc<PhpSide>,
    authorized: bool,
    worker: Option<Arc<WorkerLink>>,
    feed: Option<oneshot::Sender<WorkerFeed>>,
    /// Replies, written in order by the writer task.
    raw: mpsc::Sender<Vec<u8>>,
}

impl Conn {
    /// Handles one packet; `Err` closes the connection with that log reason.
    async fn handle(&mut self, p: Packet, peer: SocketAddr) -> Result<(), ConnError> {
        let Some(cmd) = p.cmd() else { return Err(ConnError::UnknownCommand(p.header.cmd)) };
        match cmd {
            Cmd::WorkerConnect | Cmd::GatewayClientConnect => {
                let hello: Json = serde_json::from_slice(&p.body).map_err(|_| ConnError::HelloNotJson(cmd))?;
                if hello.get("secret_key").and_then(Json::as_str).unwrap_or_default() != self.side.config.secret_key {
                    Metrics::inc(&self.side.gw.state.metrics.handshake_failures);
                    return Err(ConnError::WrongSecret(cmd));
                }
                self.authorized = true;
                if cmd == Cmd::WorkerConnect
                    && let Some(feed) = self.feed.take()
                {
                    let key = hello.get("worker_key").and_then(Json::as_str).unwrap_or("?");
                    let name = format!("php:{}:{key}", peer.ip());
                    let (tx, events) = mpsc::channel::<FromGateway>(self.side.gw.config.link.queue);
                    let link = self.side.gw.router.add(name.clone(), tx);
                    tracing::info!(worker = %name, "PHP business worker connected");
                    self.worker = Some(link.clone());
                    let _ = feed.send(WorkerFeed { events, link });
                }
                return Ok(());
            }
            _ if !self.authorized => return Err(ConnError::Unauthenticated(cmd)),
            Cmd::Ping => return Ok(()),
            _ => {}
        }
        let local = self.side.local(p.header.connection_id);
        match self.command(cmd, &p, local) {
            Ok(Some(command)) => {
                self.side.gw.state.execute(command);
                return Ok(());
            }
            Ok(None) => {}
            Err(reason) => {
                // A command PHP sent with parameters we cannot take (a session JSON cannot hold,
                // ext data that is not JSON): refused and counted, the connection stays up, as a
                // worker link carries every other client's traffic.
                Metrics::inc(&self.side.gw.state.metrics.rejected_commands);
                tracing::warn!(peer = %peer, command = ?cmd, "refused GatewayWorker command: {reason}");
                return Ok(());
            }
        }
        // A query that cannot be answered closes the connection: PHP's caller then fails with
        // "connection close" instead of taking an empty answer for a true one.
        let reply = self.answer(cmd, &p, local)?;
        if self.raw.send(encode_reply(&reply)).await.is_err() {
            return Err(ConnError::WriterGone);
        }
        Ok(())
    }

    /// The internal command a PHP command packet stands for; `None` for queries.
    fn command(&self, cmd: Cmd, p: &Packet, local: u64) -> Result<Option<Command>, ParamError> {
        let ext = || String::from_utf8_lossy(&p.ext_data).into_owned();
        Ok(match cmd {
            Cmd::SendToOne => Some(Command::SendToClients { clients: vec![local], msg: payload(&p.body) }),
            Cmd::SendToAll => {
                let ext: Json = if p.ext_data.is_empty() { Json::Null } else { json(&p.ext_data)? };
                Some(match ext.get("connections") {
                    Some(c) => Command::SendToClients { clients: self.ids(c), msg: payload(&p.body) },
                    None => Command::SendToAll {
                        msg: payload(&p.body),
                        exclude: self.ids(ext.get("exclude").unwrap_or(&Json::Null)),
                    },
                })
            }
            Cmd::Kick => Some(Command::CloseClient {
                client: local,
                last: (!p.body.is_empty()).then(|| payload(&p.body)),
                close: None,
            }),
            Cmd::Destroy => Some(Command::DestroyClient { client: local }),
            Cmd::SetSession => Some(Command::SetSession { client: local, session: session_json(&p.ext_data)? }),
            Cmd::UpdateSession => Some(Command::UpdateSession { client: local, patch: session_json(&p.ext_data)? }),
            Cmd::BindUid if !p.ext_data.is_empty() => Some(Command::BindUid { client: local, uid: ext() }),
            Cmd::UnbindUid => Some(Command::UnbindUid { client: local, uid: ext() }),
            Cmd::JoinGroup if !p.ext_data.is_empty() => Some(Command::JoinGroup { client: local, group: ext() }),
            Cmd::LeaveGroup if !p.ext_data.is_empty() => Some(Command::LeaveGroup { client: local, group: ext() }),
            Cmd::Ungroup if !p.ext_data.is_empty() => Some(Command::Ungroup { group: ext() }),
            Cmd::SendToUid => Some(Command::SendToUids { uids: strings(&json(&p.ext_data)?), msg: payload(&p.body) }),
            Cmd::SendToGroup => {
                let ext = json(&p.ext_data)?;
                Some(Command::SendToGroups {
                    groups: strings(ext.get("group").unwrap_or(&Json::Null)),
                    msg: payload(&p.body),
                    exclude: self.ids(ext.get("exclude").unwrap_or(&Json::Null)),
                })
            }
            // PHP ignores empty uids and groups (with a notice); so do we.
            Cmd::BindUid | Cmd::JoinGroup | Cmd::LeaveGroup | Cmd::Ungroup => {
                tracing::debug!(command = ?cmd, "empty uid or group ignored");
                None
            }
            _ => None,
        })
    }

    /// PHP connection ids (a JSON list, or an object whose keys or values are ids) as local ids.
    fn ids(&self, v: &Json) -> Vec<u64> {
        let one = |x: &Json| match x {
            Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Json::String(s) => s.parse::<u32>().ok(),
            _ => None,
        };
        let found: Vec<u32> = match v {
            Json::Array(a) => a.iter().filter_map(one).collect(),
            Json::Object(o) => o.keys().filter_map(|k| k.parse().ok()).collect(),
            _ => Vec::new(),
        };
        found.into_iter().map(|c| self.side.local(c)).collect()
    }

    fn conn_key(&self, local: u64) -> Key {
        Key::Int(self.side.connection_id(local).into())
    }

    /// A synchronous query's answer, serialized as PHP's gateway does.
    fn answer(&self, cmd: Cmd, p: &Packet, local: u64) -> Result<Vec<u8>, ConnError> {
        let state = &self.side.gw.state;
        let ext = String::from_utf8_lossy(&p.ext_data).into_owned();
        let sessions = |query| match state.answer(query) {
            Reply::Sessions(list) => list,
            _ => Vec::new(),
        };
        let session_value =
            |s: &Option<Bytes>| Value::Str(s.as_deref().map(session_bytes).unwrap_or_default().to_vec());
        let value = match cmd {
            Cmd::IsOnline => match state.answer(Query::IsOnline { clients: vec![local] }) {
                Reply::Flags(f) => Value::Int(f.first().copied().unwrap_or(false) as i64),
                _ => Value::Int(0),
            },
            Cmd::GetAllClientSessions => Value::Array(
                sessions(Query::Sessions { clients: None, group: None })
                    .iter()
                    .map(|(c, s)| (self.conn_key(*c), session_value(s)))
                    .collect(),
            ),
            Cmd::GetClientSessionsByGroup => Value::Array(
                sessions(Query::Sessions { clients: None, group: Some(ext) })
                    .iter()
                    .map(|(c, s)| (self.conn_key(*c), session_value(s)))
                    .collect(),
            ),
            Cmd::GetSessionByClientId => {
                // The stored session string itself, not serialized again.
                let list = sessions(Query::Sessions { clients: Some(vec![local]), group: None });
                return Ok(match list.first() {
                    None => b"N;".to_vec(),
                    Some((_, None)) => b"a:0:{}".to_vec(),
                    Some((_, Some(s))) => {
                        let b = session_bytes(s);
                        if b.is_empty() { b"a:0:{}".to_vec() } else { b.to_vec() }
                    }
                });
            }
            Cmd::GetClientCountByGroup => {
                let q =
                    if ext.is_empty() { Query::ClientCount } else { Query::ClientCountByGroups { groups: vec![ext] } };
                match state.answer(q) {
                    Reply::Counts(c) => Value::Int(c.first().copied().unwrap_or(0) as i64),
                    _ => Value::Int(0),
                }
            }
            Cmd::GetClientIdByUid => match state.answer(Query::ClientsByUids { uids: vec![ext] }) {
                Reply::ClientLists(l) => self.id_list(l.first().map(Vec::as_slice).unwrap_or_default()),
                _ => Value::list([]),
            },
            Cmd::BatchGetClientIdByUid => {
                let uids = strings(&json(&p.ext_data)?);
                match state.answer(Query::ClientsByUids { uids: uids.clone() }) {
                    Reply::ClientLists(l) => {
                        Value::map(uids.iter().map(String::as_str).zip(l.iter().map(|ids| self.id_list(ids))))
                    }
                    _ => Value::list([]),
                }
            }
            Cmd::GetGroupIdList => match state.answer(Query::GroupIds) {
                Reply::Strings(g) => Value::list(g.into_iter().map(Value::from)),
                _ => Value::list([]),
            },
            Cmd::BatchGetClientCountByGroup => {
                let groups = strings(&json(&p.ext_data)?);
                match state.answer(Query::ClientCountByGroups { groups: groups.clone() }) {
                    Reply::Counts(c) => {
                        Value::map(groups.iter().map(String::as_str).zip(c.iter().map(|n| Value::Int(*n as i64))))
                    }
                    _ => Value::list([]),
                }
            }
            Cmd::Select => self.select(&p.ext_data)?,
            other => return Err(ConnError::NotForAGateway(other)),
        };
        Ok(value.serialize())
    }

    fn id_list(&self, ids: &[u64]) -> Value {
        Value::list(ids.iter().map(|c| Value::Int(self.side.connection_id(*c).into())))
    }

    /// `CMD_SELECT`: `{fields: [...], where: {groups|uid|connection_id: [...]}}` → per matching
    /// connection id the requested fields (`uid`, `groups`, `session`), as PHP's gateway answers.
    fn select(&self, ext: &[u8]) -> Result<Value, ParamError> {
        let state = &self.side.gw.state;
        let Ok(q) = serde_json::from_slice::<Json>(ext) else { return Ok(Value::list([])) };
        let fields = strings(q.get("fields").unwrap_or(&Json::Null));
        let rows = match state.answer(Query::Connections) {
            Reply::Connections(rows) => rows,
            _ => Vec::new(),
        };
        let wanted: Option<Vec<u64>> = match q.get("where") {
            Some(Json::Object(w)) if !w.is_empty() => {
                let mut ids = Vec::new();
                for (key, items) in w {
                    let items = strings(items);
                    for row in &rows {
                        let hit = match key.as_str() {
                            "groups" => row.groups.iter().any(|g| items.contains(g)),
                            "uid" => row.uid.as_ref().is_some_and(|u| items.contains(u)),
                            "connection_id" => items
                                .iter()
                                .any(|c| c.parse::<u32>().ok().map(|c| self.side.local(c)) == Some(row.client)),
                            _ => false,
                        };
                        if hit && !ids.contains(&row.client) {
                            ids.push(row.client);
                        }
                    }
                }
                Some(ids)
            }
            _ => None,
        };
        let sessions: BTreeMap<u64, Option<Bytes>> = if fields.iter().any(|f| f == "session") {
            match state.answer(Query::Sessions { clients: wanted.clone(), group: None }) {
                Reply::Sessions(s) => s.into_iter().collect(),
                _ => BTreeMap::new(),
            }
        } else {
            BTreeMap::new()
        };
        let mut out = Vec::new();
        for row in rows.iter().filter(|r| wanted.as_ref().is_none_or(|w| w.contains(&r.client))) {
            let mut info = Vec::new();
            for f in &fields {
                let v = match f.as_str() {
                    "uid" => row.uid.clone().map_or(Value::Null, Value::from),
                    "groups" if row.groups.is_empty() => Value::Null,
                    "groups" => Value::map(row.groups.iter().map(|g| (g.as_str(), Value::from(g.as_str())))),
                    "session" => Value::Str(
                        sessions
                            .get(&row.client)
                            .cloned()
                            .flatten()
                            .as_deref()
                            .map(session_bytes)
                            .unwrap_or_default()
                            .to_vec(),
                    ),
                    _ => Value::Null,
                };
                info.push((f.as_str(), v));
            }
            out.push((self.conn_key(row.client), Value::map(info)));
        }
        Ok(Value::Array(out))
    }
}

/// A message body as a client payload: text when it is UTF-8 (a WebSocket text frame, as
/// Workerman's default `BINARY_TYPE_BLOB` sends), else binary.
fn payload(body: &Bytes) -> Payload {
    Payload { data: body.clone(), binary: std::str::from_utf8(body).is_err() }
}

fn json(bytes: &[u8]) -> Result<Json, ParamError> {
    serde_json::from_slice(bytes).map_err(ParamError::ExtNotJson)
}

/// Strings (or numbers, as PHP's `json_encode` writes int uids and groups) of a JSON list, object
/// values, or a single scalar.
fn strings(v: &Json) -> Vec<String> {
    let one = |x: &Json| match x {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        Json::Array(a) => a.iter().filter_map(one).collect(),
        Json::Object(o) => o.values().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// A serialized `$_SESSION` as our JSON session (`{}` for none).
fn session_json(ext: &[u8]) -> Result<Bytes, ParamError> {
    let map = php::session_to_json(ext, Limits::default())?.unwrap_or_default();
    Ok(Bytes::from(serde_json::to_vec(&map).expect("a JSON map serializes")))
}

/// Writes replies, and once the connection is a worker link its events, coalescing what is
/// queued into one write. PHP cannot acknowledge, so each event counts as handled once written.
async fn write_loop(
    mut w: OwnedWriteHalf,
    mut raw: mpsc::Receiver<Vec<u8>>,
    feed_rx: oneshot::Receiver<WorkerFeed>,
    side: Arc<PhpSide>,
    finish: CancellationToken,
) {
    let mut feed_rx = Some(feed_rx);
    let mut feed: Option<WorkerFeed> = None;
    let mut encoder = EventEncoder::new(side);
    let mut out = Vec::with_capacity(4096);
    let mut raw_closed = false;
    loop {
        tokio::select! {
            f = async { feed_rx.as_mut().expect("guarded").await }, if feed_rx.is_some() => {
                feed_rx = None;
                feed = f.ok();
            }
            _ = finish.cancelled() => {
                while let Ok(bytes) = raw.try_recv() {
                    if w.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let Some(f) = feed.as_mut() else { return };
                out.clear();
                let mut last = None;
                while let Ok(msg) = f.events.try_recv() {
                    if let FromGateway::Event(e) = msg {
                        encoder.encode(&e, &mut out);
                        last = Some(e.seq);
                    }
                }
                if w.write_all(&out).await.is_ok()
                    && let Some(seq) = last
                {
                    f.link.ack(seq);
                }
                return;
            }
            bytes = raw.recv(), if !raw_closed => match bytes {
                Some(bytes) => if w.write_all(&bytes).await.is_err() { return },
                // The connection is ending: `finish` follows, and drains the events.
                None => raw_closed = true,
            },
            first = async { feed.as_mut().expect("guarded").events.recv().await }, if feed.is_some() => {
                let Some(f) = feed.as_mut() else { return };
                let Some(first) = first else { return };
                out.clear();
                let mut last = None;
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    if let FromGateway::Event(e) = msg {
                        encoder.encode(&e, &mut out);
                        last = Some(e.seq);
                    }
                    if out.len() < 256 * 1024 {
                        next = f.events.try_recv().ok();
                    }
                }
                if w.write_all(&out).await.is_err() {
                    return;
                }
                if let Some(seq) = last {
                    f.link.ack(seq);
                }
            }
        }
    }
}
