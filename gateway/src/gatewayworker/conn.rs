//! One connection on the GatewayWorker listener: a PHP BusinessWorker's persistent link (events
//! out, commands in), or a `Lib\Gateway` / `GatewayClient` connection (commands and synchronous
//! queries in, `pack('N', len) . serialize(answer)` out). Bad framing, an unknown command or a
//! failed authentication closes it with a log line; a command whose parameters we cannot take is
//! refused, logged and counted (`rejected_commands`), and the connection stays up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gw_gatewayworker_protocol::packet::encode_reply;
use gw_gatewayworker_protocol::php::{self, Key, Limits, PhpError, Value};
use gw_gatewayworker_protocol::{Cmd, Packet};
use gw_link::gatewayworker::Packets;
use gw_link::{FrameReader, Handler, LinkEngine, LinkError, LinkOptions, Pending};
use gw_proto::{Command, FromGateway, Payload, Query, Reply};
use serde_json::Value as Json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PhpSide;
use super::events::session_bytes;
use super::wire::{PhpWire, ToPhp};
use crate::metrics::Metrics;
use crate::router::WorkerLink;

/// Largest packet read before a peer has authenticated, when there is a `secret_key` to prove:
/// the hello is a small JSON object, so an unauthenticated peer cannot make the gateway buffer
/// `max_packet` (10 MiB by default).
const UNAUTHENTICATED_MAX_PACKET: usize = 16 * 1024;

/// Without a `secret_key` a first packet is already a command and may be up to `max_packet`; those
/// larger than [`UNAUTHENTICATED_MAX_PACKET`] still arriving may hold this much at most, all
/// connections together (more are refused), so unauthenticated peers cannot fill the memory.
const UNAUTHENTICATED_BYTES: usize = 32 * 1024 * 1024;

/// Serves one connection: its unauthenticated phase through the gateway's admission (the first
/// packet within the handshake timeout: the hello with the right `secret_key`, or with an empty
/// key any packet), then a link on the engine until the peer leaves, it fails, or `links_down`
/// is cancelled (after the gateway closed its clients; the events still queued are flushed).
pub(super) async fn serve(
    stream: TcpStream,
    pending: Pending,
    peer: SocketAddr,
    side: Arc<PhpSide>,
    links_down: CancellationToken,
) {
    stream.set_nodelay(true).ok();
    let (r, w) = stream.into_split();
    let gw = side.gw.clone();
    let handshake = |deadline| authenticate(r, &side, deadline);
    let Some((mut reader, hello)) =
        gw.admission.admit(pending, "GatewayWorker peer", gw.state.metrics.admission(), handshake).await
    else {
        return;
    };
    reader.framing_mut().set_max(side.config.max_packet);
    let options = LinkOptions {
        // PHP peers send no heartbeat (a BusinessWorker pings only its register).
        heartbeat_timeout: Duration::MAX,
        ..LinkOptions::from(&gw.config.link)
    };
    let engine = LinkEngine::with_wire(PhpWire::new(side.clone()), options, gw.config.link.queue);
    let mut conn = Conn { side: side.clone(), peer, tx: engine.sender(), worker: None };
    let result = match hello {
        Hello::Worker { key } => {
            conn.become_worker(&key);
            Ok(())
        }
        Hello::Client => Ok(()),
        Hello::Command(packet) => conn.on_message(packet).await,
    };
    let result = match result {
        Ok(()) => engine.run(reader, w, &mut conn, &links_down).await,
        Err(e) => Err(e),
    };
    if let Some((w, _)) = &conn.worker {
        side.gw.router.remove(w);
        crate::redeliver::hand_back(&side.gw, w);
        tracing::info!(worker = %w.name, "PHP business worker disconnected");
    }
    match result {
        Ok(_) => {}
        Err(e) if e.is_disconnect() => tracing::debug!(error = %e, "GatewayWorker connection closed"),
        Err(reason) => {
            Metrics::inc(&side.gw.state.metrics.link_errors);
            tracing::warn!(peer = %peer, "closed GatewayWorker connection: {reason}");
        }
    }
}

/// What a connection said first.
enum Hello {
    /// `CMD_WORKER_CONNECT`: a PHP BusinessWorker's link, with its `worker_key`.
    Worker { key: String },
    /// `CMD_GATEWAY_CLIENT_CONNECT`: a `GatewayClient` or `Lib\Gateway` connection.
    Client,
    /// Without a `secret_key` to prove, a first packet that is already a command.
    Command(Packet),
}

/// The unauthenticated phase: the first packet, within `deadline`. With a `secret_key` it must be
/// a hello carrying it, and may be no larger than [`UNAUTHENTICATED_MAX_PACKET`]; without one it
/// may already be a command up to `max_packet`, and the larger ones of all connections together
/// hold at most [`UNAUTHENTICATED_BYTES`].
async fn authenticate(
    r: OwnedReadHalf,
    side: &PhpSide,
    deadline: Duration,
) -> Result<(FrameReader<OwnedReadHalf, Packets>, Hello), ConnError> {
    let keyed = !side.config.secret_key.is_empty();
    let max = if keyed { UNAUTHENTICATED_MAX_PACKET } else { side.config.max_packet };
    let first = async {
        let mut r = r;
        let mut len = [0u8; 4];
        if let Err(e) = r.read_exact(&mut len).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ConnError::ClosedFirst
            } else {
                ConnError::Link(e.into())
            });
        }
        let announced = u32::from_be_bytes(len) as usize;
        let _held = match announced {
            n if n > UNAUTHENTICATED_MAX_PACKET && n <= max => Some(Held::take(side, n)?),
            _ => None,
        };
        let mut reader = FrameReader::with_framing(r, Packets::new(max), BytesMut::from(&len[..]));
        let first = reader.next().await.map_err(ConnError::Link)?.ok_or(ConnError::ClosedFirst)?;
        Ok((reader, first))
    };
    let (reader, first) = tokio::time::timeout(deadline, first).await.map_err(|_| ConnError::Silent(deadline))??;
    let hello = match first.cmd() {
        None => return Err(ConnError::UnknownCommand(first.header.cmd)),
        Some(cmd @ (Cmd::WorkerConnect | Cmd::GatewayClientConnect)) => {
            let key = check_hello(cmd, &first, &side.config.secret_key)?;
            if cmd == Cmd::WorkerConnect { Hello::Worker { key } } else { Hello::Client }
        }
        Some(cmd) if keyed => return Err(ConnError::Unauthenticated(cmd)),
        Some(_) => Hello::Command(first),
    };
    Ok((reader, hello))
}

/// Bytes of first packets larger than [`UNAUTHENTICATED_MAX_PACKET`] that connections not in yet
/// hold, counted against [`UNAUTHENTICATED_BYTES`] until the packet has arrived.
struct Held<'a> {
    side: &'a PhpSide,
    bytes: usize,
}

impl<'a> Held<'a> {
    fn take(side: &'a PhpSide, bytes: usize) -> Result<Self, ConnError> {
        side.unauthenticated_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + bytes <= UNAUTHENTICATED_BYTES).then_some(held + bytes)
            })
            .map_err(|_| ConnError::Busy(bytes))?;
        Ok(Self { side, bytes })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.side.unauthenticated_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Checks a hello's `secret_key`; its `worker_key` (`?` if none).
fn check_hello(cmd: Cmd, p: &Packet, secret_key: &str) -> Result<String, ConnError> {
    let hello: Json = serde_json::from_slice(&p.body).map_err(|_| ConnError::HelloNotJson(cmd))?;
    if hello.get("secret_key").and_then(Json::as_str).unwrap_or_default() != secret_key {
        return Err(ConnError::WrongSecret(cmd));
    }
    Ok(hello.get("worker_key").and_then(Json::as_str).unwrap_or("?").to_string())
}

/// Why a GatewayWorker connection was refused or closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Link(LinkError),
    #[error("no complete packet within {0:?}")]
    Silent(Duration),
    #[error("closed before its first packet")]
    ClosedFirst,
    #[error("a first packet of {0} bytes while others still arriving hold the 32 MiB allowed before authentication")]
    Busy(usize),
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
}

impl From<ConnError> for LinkError {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Link(e) => e,
            other => LinkError::Protocol(other.to_string()),
        }
    }
}

/// Parameters of a command or query that this gateway cannot take.
#[derive(Debug, thiserror::Error)]
enum ParamError {
    #[error("ext_data is not JSON: {0}")]
    ExtNotJson(#[source] serde_json::Error),
    #[error("session: {0}")]
    Session(#[from] PhpError),
    #[error("the message is a serialized {0}, not a string")]
    BodyNotAString(&'static str),
}

/// One PHP connection's state: a GatewayClient's, or a BusinessWorker's link with its place in
/// the router and the events the router queues for it.
struct Conn {
    side: Arc<PhpSide>,
    peer: SocketAddr,
    /// The link's outbox: replies and events, written in order by the engine.
    tx: mpsc::Sender<ToPhp>,
    worker: Option<(Arc<WorkerLink>, mpsc::Receiver<FromGateway>)>,
}

impl Handler<PhpWire> for Conn {
    async fn on_message(&mut self, p: Packet) -> Result<(), LinkError> {
        Ok(self.handle(p).await?)
    }

    /// The events the router queued for this worker, on to the socket.
    async fn outgoing(&mut self) -> Option<ToPhp> {
        let Some((link, events)) = self.worker.as_mut() else { return std::future::pending().await };
        loop {
            if let FromGateway::Event(event) = events.recv().await? {
                return Some(ToPhp::Event { event, link: link.clone() });
            }
        }
    }

    fn on_close(&mut self) {
        // Stop routing here; the events already queued are flushed.
        if let Some((w, _)) = &self.worker {
            self.side.gw.router.remove(w);
        }
    }

    fn closing_outgoing(&mut self) -> Option<ToPhp> {
        let (link, events) = self.worker.as_mut()?;
        while let Ok(msg) = events.try_recv() {
            if let FromGateway::Event(event) = msg {
                return Some(ToPhp::Event { event, link: link.clone() });
            }
        }
        None
    }
}

impl Conn {
    /// The connection is a PHP BusinessWorker's link from now on: the router gives it clients.
    fn become_worker(&mut self, key: &str) {
        if self.worker.is_some() {
            return;
        }
        let name = format!("php:{}:{key}", self.peer.ip());
        let (tx, events) = mpsc::channel::<FromGateway>(self.side.gw.config.link.queue);
        let link = self.side.gw.router.add(name.clone(), tx);
        tracing::info!(worker = %name, "PHP business worker connected");
        self.worker = Some((link, events));
    }

    /// Handles one packet after the first; `Err` closes the connection with that log reason.
    async fn handle(&mut self, p: Packet) -> Result<(), ConnError> {
        let Some(cmd) = p.cmd() else { return Err(ConnError::UnknownCommand(p.header.cmd)) };
        match cmd {
            // A hello again (PHP's gateway takes one at any time): checked like the first.
            Cmd::WorkerConnect | Cmd::GatewayClientConnect => {
                let key = check_hello(cmd, &p, &self.side.config.secret_key).inspect_err(|_| {
                    Metrics::inc(&self.side.gw.state.metrics.handshake_failures);
                })?;
                if cmd == Cmd::WorkerConnect {
                    self.become_worker(&key);
                }
                return Ok(());
            }
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
                tracing::warn!(peer = %self.peer, command = ?cmd, "refused GatewayWorker command: {reason}");
                return Ok(());
            }
        }
        // A query that cannot be answered closes the connection: PHP's caller then fails with
        // "connection close" instead of taking an empty answer for a true one.
        let reply = self.answer(cmd, &p, local)?;
        // The link's own writer drains the outbox, so this wait ends.
        let _ = self.tx.send(ToPhp::Reply(encode_reply(&reply))).await;
        Ok(())
    }

    /// The internal command a PHP command packet stands for; `None` for queries.
    fn command(&self, cmd: Cmd, p: &Packet, local: u64) -> Result<Option<Command>, ParamError> {
        let ext = || String::from_utf8_lossy(&p.ext_data).into_owned();
        Ok(match cmd {
            Cmd::SendToOne => Some(Command::SendToClients { clients: vec![local], msg: sent(p)? }),
            Cmd::SendToAll => {
                let ext: Json = if p.ext_data.is_empty() { Json::Null } else { json(&p.ext_data)? };
                Some(match ext.get("connections") {
                    Some(c) => Command::SendToClients { clients: self.ids(c), msg: sent(p)? },
                    None => Command::SendToAll {
                        msg: sent(p)?,
                        exclude: self.ids(ext.get("exclude").unwrap_or(&Json::Null)),
                    },
                })
            }
            // `closeClient($id, '')` sends an empty message first, as PHP does; without a message
            // PHP sends `null`, and nothing is sent.
            Cmd::Kick => Some(Command::CloseClient { client: local, last: message(p)?, close: None }),
            Cmd::Destroy => Some(Command::DestroyClient { client: local }),
            Cmd::SetSession => Some(Command::SetSession { client: local, session: session_json(&p.ext_data)? }),
            Cmd::UpdateSession => Some(Command::UpdateSession { client: local, patch: session_json(&p.ext_data)? }),
            Cmd::BindUid if !p.ext_data.is_empty() => Some(Command::BindUid { client: local, uid: ext() }),
            Cmd::UnbindUid => Some(Command::UnbindUid { client: local, uid: ext() }),
            Cmd::JoinGroup if !p.ext_data.is_empty() => Some(Command::JoinGroup { client: local, group: ext() }),
            Cmd::LeaveGroup if !p.ext_data.is_empty() => Some(Command::LeaveGroup { client: local, group: ext() }),
            Cmd::Ungroup if !p.ext_data.is_empty() => Some(Command::Ungroup { group: ext() }),
            Cmd::SendToUid => Some(Command::SendToUids { uids: strings(&json(&p.ext_data)?), msg: sent(p)? }),
            Cmd::SendToGroup => {
                let ext = json(&p.ext_data)?;
                Some(Command::SendToGroups {
                    groups: strings(ext.get("group").unwrap_or(&Json::Null)),
                    msg: sent(p)?,
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

/// A packet's message as a client payload; `None` for PHP's `null`. The body is the message
/// itself when the header says it is a scalar; otherwise it is `serialize($message)`, which PHP
/// sends for `null` (`closeClient($id)` without a message): a serialized string is taken as that
/// string, anything else is refused.
fn message(p: &Packet) -> Result<Option<Payload>, ParamError> {
    if p.body_is_scalar() {
        return Ok(Some(payload(p.body.clone())));
    }
    match php::unserialize(&p.body, Limits::default())? {
        Value::Null => Ok(None),
        Value::Str(s) => Ok(Some(payload(Bytes::from(s)))),
        Value::Array(_) => Err(ParamError::BodyNotAString("array")),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
            Err(ParamError::BodyNotAString("scalar without the scalar flag"))
        }
    }
}

/// A packet's message to send: PHP sends `null` as an empty message.
fn sent(p: &Packet) -> Result<Payload, ParamError> {
    Ok(message(p)?.unwrap_or_else(|| payload(Bytes::new())))
}

/// A message as a client payload: text when it is UTF-8 (a WebSocket text frame, as Workerman's
/// default `BINARY_TYPE_BLOB` sends), else binary.
fn payload(data: Bytes) -> Payload {
    let binary = std::str::from_utf8(&data).is_err();
    Payload { data, binary }
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
