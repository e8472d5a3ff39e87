//! The messages of every link, one enum per direction. New variants go at the end only: bincode
//! encodes the variant index, so reordering would silently change the meaning of old peers' bytes.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A gateway as announced to registers and listed to workers and clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// Advertised internal address (`host:port`; host may be a name or a bracketed IPv6 address).
    pub address: String,
    /// The gateway's node name, for logs.
    pub name: String,
}

/// Gateway, worker or client → register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRegister {
    /// A gateway announces its internal address; it stays listed while this link lives. The
    /// register sends it the gateway list too, now and on every change (as to a subscriber).
    Announce {
        /// Its address and name.
        gateway: GatewayInfo,
    },
    /// A worker or gateway client asks for the gateway list now and on every change.
    Subscribe,
    /// Liveness probe; answered with `Pong`.
    Ping,
    /// Answer to a `Ping`.
    Pong,
}

/// Register → gateway, worker or client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRegister {
    /// The complete current gateway list (not a delta).
    Gateways {
        /// Every gateway now announced to this register.
        list: Vec<GatewayInfo>,
    },
    /// Liveness probe; answered with `Pong`.
    Ping,
    /// Answer to a `Ping`.
    Pong,
}

/// The transport a client came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// WebSocket (RFC 6455), optionally over TLS.
    WebSocket,
    /// Newline-delimited text.
    Text,
    /// 4-byte big-endian length-prefixed frames.
    Frame,
    /// Raw TCP chunks.
    Tcp,
}

/// What GatewayWorker calls `$_SERVER`: where a client connected from and to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client socket address as `ip:port` (`[v6]:port` for IPv6).
    pub client_addr: String,
    /// The gateway's public listener address the client connected to. Shared (serialized as a
    /// string): a gateway's clients of one listener and address hold one copy.
    pub gateway_addr: Arc<str>,
    /// The listener's URL, e.g. `websocket://0.0.0.0:7272`. Shared, as `gateway_addr`.
    pub listener: Arc<str>,
    /// The transport of that listener.
    pub protocol: Protocol,
}

/// A client message's content; `binary` selects the WebSocket frame type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The bytes of the message.
    pub data: Bytes,
    /// Whether it is a binary (not text) message.
    pub binary: bool,
}

impl Payload {
    /// The content as text, if it is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }

    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Self { data: Bytes::from(s.into()), binary: false }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self { data: data.into(), binary: true }
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload::text(s)
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload::text(s)
    }
}

impl From<&String> for Payload {
    fn from(s: &String) -> Self {
        Payload::text(s.clone())
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Payload::binary(b)
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::binary(b)
    }
}

/// What happened to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The TCP (or TLS) connection was accepted.
    Connect,
    /// The WebSocket handshake completed.
    WebSocketConnect {
        /// The request path, e.g. `/chat`.
        path: String,
        /// Raw query string without the `?`.
        query: String,
        /// Request headers in arrival order, names lower-cased.
        headers: Vec<(String, String)>,
    },
    /// A message from the client.
    Message(Payload),
    /// The client is gone; its session and info travel with this event.
    Close,
    /// The client dropped without closing and came back within the recovery window (issue 25,
    /// `docs/recovery.md`): same client id, uid, groups and session; the messages it missed
    /// were replayed. It had no `Close` and gets no `Connect`; `info` carries its new address.
    Resume {
        /// Messages replayed to it on this resume.
        replayed: u64,
    },
}

/// One client event, gateway → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Per-link sequence number, starting at 1; acknowledged cumulatively with `ToGateway::Ack`.
    pub seq: u64,
    /// The client's id local to this gateway instance.
    pub client: u64,
    /// What happened.
    pub kind: EventKind,
    /// Client info; sent with the first event of a client on each link.
    pub info: Option<ClientInfo>,
    /// The client's session as a JSON object, if it has one.
    pub session: Option<Bytes>,
    /// Sequence number of the last worker write-back applied to `session` (see
    /// `Command::WriteBackSession`): a worker re-applies its later write-backs, which had not
    /// reached the gateway when this event left it.
    pub session_writes: u64,
    /// Set when this event may have been delivered to another worker before (that worker died
    /// before acknowledging it).
    pub redelivered: bool,
}

/// Optional close frame for `Command::CloseClient`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseReason {
    /// WebSocket close code (1000 normal, 1001 going away, ...).
    pub code: u16,
    /// Close reason text.
    pub reason: String,
}

/// Worker or gateway client → gateway: act on this gateway's clients. Client ids are local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Send to each listed client.
    SendToClients {
        /// Local ids of the recipients.
        clients: Vec<u64>,
        /// The message.
        msg: Payload,
    },
    /// Send to every client of this gateway except the excluded ones.
    SendToAll {
        /// The message.
        msg: Payload,
        /// Local ids of clients that do not get it.
        exclude: Vec<u64>,
    },
    /// Send to every client bound to any of these uids (once per client).
    SendToUids {
        /// The uids.
        uids: Vec<String>,
        /// The message.
        msg: Payload,
    },
    /// Send to every member of any of these groups (once per client), except the excluded.
    SendToGroups {
        /// The groups.
        groups: Vec<String>,
        /// The message.
        msg: Payload,
        /// Local ids of clients that do not get it.
        exclude: Vec<u64>,
    },
    /// Bind a client to a uid, replacing any previous binding of that client.
    BindUid {
        /// Local id of the client.
        client: u64,
        /// The uid to bind it to.
        uid: String,
    },
    /// Remove a client's binding if it is bound to exactly this uid.
    UnbindUid {
        /// Local id of the client.
        client: u64,
        /// The uid it must be bound to for the binding to go.
        uid: String,
    },
    /// Add a client to a group (created on first join).
    JoinGroup {
        /// Local id of the client.
        client: u64,
        /// The group.
        group: String,
    },
    /// Remove a client from a group (gone when empty).
    LeaveGroup {
        /// Local id of the client.
        client: u64,
        /// The group.
        group: String,
    },
    /// Dissolve a group; its members stay connected.
    Ungroup {
        /// The group.
        group: String,
    },
    /// Close a client gracefully, optionally after a last message and with a close code.
    CloseClient {
        /// Local id of the client.
        client: u64,
        /// Sent before the close frame, if given.
        last: Option<Payload>,
        /// Close code and reason; 1000 without one.
        close: Option<CloseReason>,
    },
    /// Drop a client's connection without a close frame, once what was sent to it before is
    /// written (at most 2 s; at once if its send queue is full).
    DestroyClient {
        /// Local id of the client.
        client: u64,
    },
    /// Close every client bound to this uid.
    CloseUid {
        /// The uid.
        uid: String,
    },
    /// Replace a client's session (a JSON object).
    SetSession {
        /// Local id of the client.
        client: u64,
        /// The new session, a JSON object.
        session: Bytes,
    },
    /// Deep-merge a JSON object into a client's session; `null` values delete keys.
    UpdateSession {
        /// Local id of the client.
        client: u64,
        /// A JSON object to merge in.
        patch: Bytes,
    },
    /// A handler's write-back: replace the top-level keys in `changed` (a JSON object) and delete
    /// the `removed` keys, leaving keys the handler did not touch as they are now.
    WriteBackSession {
        /// Local id of the client.
        client: u64,
        /// Per client, above every `session_writes` the writing worker has seen and above its
        /// own earlier write-backs.
        seq: u64,
        /// A JSON object of the keys the handler set.
        changed: Bytes,
        /// Keys the handler deleted.
        removed: Vec<String>,
    },
}

impl Command {
    /// Whether this command can change which uids and groups a gateway holds: bind, unbind,
    /// join, leave and ungroup. Gateways count these per link and report the count in
    /// [`IndexUpdate::applied`], so a sender can tell when its own writes are in the index.
    pub fn is_index_write(&self) -> bool {
        matches!(
            self,
            Command::BindUid { .. }
                | Command::UnbindUid { .. }
                | Command::JoinGroup { .. }
                | Command::LeaveGroup { .. }
                | Command::Ungroup { .. }
        )
    }
}

/// Worker or gateway client → gateway: ask about this gateway's clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// → `Flags`: which of these clients are connected here.
    IsOnline {
        /// Local ids.
        clients: Vec<u64>,
    },
    /// → `ClientLists`: clients bound to each uid, in order.
    ClientsByUids {
        /// The uids.
        uids: Vec<String>,
    },
    /// → `Text`: the uid a client is bound to.
    UidOf {
        /// Local id.
        client: u64,
    },
    /// → `ClientLists`: members of each group, in order.
    ClientsByGroups {
        /// The groups.
        groups: Vec<String>,
    },
    /// → `Counts`: member count of each group, in order.
    ClientCountByGroups {
        /// The groups.
        groups: Vec<String>,
    },
    /// → `Strings`: distinct uids of a group's members.
    UidsByGroup {
        /// The group.
        group: String,
    },
    /// → `Strings`: every non-empty group.
    GroupIds,
    /// → `NamedClients`: every group with its members.
    GroupClients,
    /// → `NamedStrings`: every group with its members' distinct uids.
    GroupUids,
    /// → `Clients`: every client connected here.
    ClientIds,
    /// → `Counts` with one element.
    ClientCount,
    /// → `Strings`: every bound uid.
    Uids,
    /// → `Sessions`: sessions of the listed clients, of a group's members, or of everyone.
    Sessions {
        /// These clients only, if given.
        clients: Option<Vec<u64>>,
        /// Members of this group only, if given.
        group: Option<String>,
    },
    /// → `Connections`: per-connection details for operators.
    Connections,
    /// → `Done` or `Refused`: `Command::SetSession` asked as a question, so the asker learns
    /// whether the gateway took it (a session over the gateway's `max_session_bytes` is refused).
    SetSession {
        /// Local id of the client.
        client: u64,
        /// The new session, a JSON object.
        session: Bytes,
    },
    /// → `Done` or `Refused`: `Command::UpdateSession` asked as a question (a merge that would
    /// grow the session past the gateway's `max_session_bytes` is refused, the session kept).
    UpdateSession {
        /// Local id of the client.
        client: u64,
        /// A JSON object to merge in.
        patch: Bytes,
    },
    /// → `NamedStrings`: the presence channels of Pusher app `app` this gateway is the home of
    /// (only `channel`, if given), each with its users' ids in joining order (`docs/pusher.md`
    /// §5); every channel has one home, so the answers of all gateways merge by union. Empty on
    /// a gateway without Pusher.
    PusherMembers {
        /// The app id.
        app: String,
        /// This channel only, if given.
        channel: Option<String>,
    },
}

/// A gateway's answer to one `Query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `IsOnline`, one flag per asked client.
    Flags(Vec<bool>),
    /// Answer to `ClientsByUids` and `ClientsByGroups`, one list per asked name.
    ClientLists(Vec<Vec<u64>>),
    /// Answer to `UidOf`.
    Text(Option<String>),
    /// Answer to `ClientCountByGroups` and `ClientCount`.
    Counts(Vec<u64>),
    /// Answer to `UidsByGroup`, `GroupIds` and `Uids`.
    Strings(Vec<String>),
    /// Answer to `GroupClients`: `(group, members)`.
    NamedClients(Vec<(String, Vec<u64>)>),
    /// Answer to `GroupUids`: `(group, uids)`.
    NamedStrings(Vec<(String, Vec<String>)>),
    /// Answer to `ClientIds`.
    Clients(Vec<u64>),
    /// `(client, session JSON)`; clients without a session are listed with `None`.
    Sessions(Vec<(u64, Option<Bytes>)>),
    /// Answer to `Connections`.
    Connections(Vec<ConnectionInfo>),
    /// The query could not be answered (for example: unknown client).
    Error(String),
    /// Answer to a write asked as a question (`SetSession`, `UpdateSession`): it was applied.
    Done,
    /// Answer to a write asked as a question: it was not applied, for this reason.
    Refused(Refusal),
}

/// Why a gateway refused a write: the answer to a write asked as a [`Query`], and what it counts
/// and logs for the same write sent as a fire-and-forget [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// No such client on this gateway (any more).
    ClientGone,
    /// The session would have `size` bytes (as JSON), over the gateway's `max_session_bytes`
    /// (`limit`); the session stays as it was.
    SessionTooLarge {
        /// The size it would have had.
        size: u64,
        /// The gateway's `max_session_bytes`.
        limit: u64,
    },
    /// The session or patch is not a JSON object: what it is instead.
    NotAnObject(String),
    /// A uid or group name that breaks [`crate::limits::check_name`]: why.
    BadName(String),
    /// The client is a member of `limit` groups already (the gateway's `max_groups_per_client`).
    TooManyGroups {
        /// The gateway's `max_groups_per_client`.
        limit: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ClientGone => f.write_str("the client is not connected"),
            Refusal::SessionTooLarge { size, limit } => write!(
                f,
                "the session would be {size} bytes, over the gateway's limit of {limit} bytes (max_session_bytes)"
            ),
            Refusal::NotAnObject(what) => write!(f, "a session is a JSON object: {what}"),
            Refusal::BadName(why) => write!(f, "bad uid or group name: {why}"),
            Refusal::TooManyGroups { limit } => {
                write!(f, "the client is in {limit} groups already, the gateway's limit (max_groups_per_client)")
            }
        }
    }
}

/// One row of `gateway connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Local id of the client.
    pub client: u64,
    /// Its socket address.
    pub client_addr: String,
    /// The uid it is bound to, if any.
    pub uid: Option<String>,
    /// Groups it is a member of.
    pub groups: Vec<String>,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Messages waiting in its send queue.
    pub queue_len: u64,
}

/// Worker or gateway client → gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToGateway {
    /// Act on clients of this gateway.
    Command(Command),
    /// Ask about clients of this gateway; answered by a `FromGateway::Reply` with the same id.
    Request {
        /// Chosen by the asker, unique among its open requests on this link.
        id: u64,
        /// The question.
        query: Query,
    },
    /// Worker: every event up to and including `seq` on this link is handled.
    Ack {
        /// The highest handled sequence number.
        seq: u64,
    },
    /// Worker: route no new events to me; re-bind my clients to other workers.
    Drain,
    /// Liveness probe; answered with `Pong`.
    Ping,
    /// Answer to a `Ping`.
    Pong,
    /// Send me which uids and groups you hold: a snapshot now, then every change, as
    /// `FromGateway::Index` (the routing index: senders route uid and group calls only to the
    /// gateways that hold them).
    WatchIndex,
    /// Gateway → gateway: a client presented a resume token naming the receiving gateway on the
    /// sender's listener; the receiver (the client's home) resumes it there and serves it
    /// through the sender, which relays the socket (`docs/recovery.md`, "Any gateway").
    /// Answered by `FromGateway::RelayOpened` or `RelayRefused` with the same `conn`.
    RelayOpen(Box<RelayOpen>),
    /// Gateway → gateway: what the relayed client `conn` sent, or how its socket ended.
    Relay {
        /// The sender's number for the relayed socket.
        conn: u64,
        /// The client's frame.
        frame: RelayFrame,
    },
    /// Gateway → gateway: Pusher presence and occupancy, decided by each channel's home
    /// gateway (`docs/pusher.md` §5).
    Pusher(PusherPeer),
    /// Worker or gateway client, first on every link: this process's random sender id, the
    /// same on all its links (a gateway handing its clients over names the senders that must
    /// switch; `crate::handover`).
    Sender {
        /// Random per process.
        id: u64,
    },
    /// Worker or gateway client: I know the clients of gateway instance `instance` were
    /// adopted. To that stopping gateway it is the last thing sent about them; to the adopter,
    /// the point from which what is sent there is for them too.
    Switched {
        /// The stopping gateway's instance.
        instance: u64,
    },
    /// Stopping gateway → adopter: its held clients (`crate::handover`).
    TakeOver(Box<crate::handover::TakeOver>),
    /// Stopping gateway → adopter: a command sender `sender` sent it after it handed its
    /// clients over; its client numbers are the stopping gateway's.
    Forwarded {
        /// The sender's id (`Sender`).
        sender: u64,
        /// The stopping gateway's instance.
        instance: u64,
        /// The command.
        cmd: Command,
    },
    /// Stopping gateway → adopter: sender `sender` switched (or its link ended); nothing more
    /// of its comes forwarded.
    ForwardedEnd {
        /// The sender's id.
        sender: u64,
        /// The stopping gateway's instance.
        instance: u64,
    },
    /// Adopter → every other gateway: the clients of instance `instance` at `gateway` are at
    /// `adopter` now; a client coming back with a token naming them is relayed there.
    Adoption {
        /// The adopter's advertised address.
        adopter: String,
        /// The stopped gateway's advertised address.
        gateway: String,
        /// Its instance.
        instance: u64,
    },
    /// Stopping gateway → adopter, last on the link: nothing more comes for the hand-over of
    /// instance `instance` (every part and forwarded stream was sent before it). The adopter
    /// answers `FromGateway::HandOverDone` once all of it is applied; the stopping gateway
    /// keeps the link open until then, so its exit cannot cut the tail off. (Last variant:
    /// older gateways' variant numbers stay as they were.)
    HandOverEnd {
        /// The stopping gateway's instance.
        instance: u64,
    },
}

/// Pusher presence and occupancy between gateways (`docs/pusher.md` §5): a gateway tells a
/// channel's home its transitions; the home answers with the member list and sends member
/// events to every gateway holding the channel, in order on its link to each. Apps are named by
/// id; `user_info` is the member's JSON, as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PusherPeer {
    /// To the home: the channel's first subscriber on `gateway`.
    Occupied {
        /// The sending gateway (its advertised address).
        gateway: String,
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// Re-sent after a change of the gateway list: already announced, added silently.
        resync: bool,
    },
    /// To the home: the channel's last subscriber on `gateway` left.
    Vacant {
        /// The sending gateway (its advertised address).
        gateway: String,
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
    },
    /// To the home: a connection of `user_id` on `gateway` joined the presence channel.
    Join {
        /// The sending gateway (its advertised address).
        gateway: String,
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
        /// The user's info (JSON), from its first connection.
        user_info: Option<String>,
        /// The connection waiting for the member list (none for a `resync`).
        waiting: Option<u64>,
        /// Re-sent after a change of the gateway list: already announced, added silently.
        resync: bool,
    },
    /// To the home: the user's last connection on `gateway` left the presence channel.
    Leave {
        /// The sending gateway (its advertised address).
        gateway: String,
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// From the home: a user joined the channel (their first connection anywhere).
    MemberAdded {
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
        /// The user's info (JSON), from its first connection.
        user_info: Option<String>,
    },
    /// From the home: a user left the channel (their last connection anywhere).
    MemberRemoved {
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// From the home: the member list for connection `client`, consistent with the member events
    /// before and after it on this link.
    Members {
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The connection it is for (its local number on the receiving gateway).
        client: u64,
        /// Every member, in joining order: user id and info (JSON).
        members: Vec<(String, Option<String>)>,
    },
    /// From the home: connection `client`'s user is not admitted, the channel has `max` users.
    Full {
        /// The app id.
        app: String,
        /// The channel.
        channel: String,
        /// The connection it is for (its local number on the receiving gateway).
        client: u64,
        /// The channel's most users.
        max: u32,
    },
}

/// A relayed client's opening: its address, and the WebSocket request it made on the relaying
/// gateway (whose query holds its resume token and count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOpen {
    /// The relaying gateway's number for this socket, unique on its link.
    pub conn: u64,
    /// The client as the relaying gateway sees it (address, listener, protocol).
    pub info: ClientInfo,
    /// The request path.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// The request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

/// One frame of a relayed client socket, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayFrame {
    /// A data message (client → home, or home → client).
    Message(Payload),
    /// Client → home: a ping, or a pong counted as activity: the client is alive.
    Activity,
    /// Home → client: a WebSocket ping with this payload (the home's heartbeat).
    Ping(Bytes),
    /// Home → client: close the socket with this code and reason.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The socket is gone: `clean` when the client closed it properly (client → home), or the
    /// home ended the connection without a close frame (home → client: drop the socket).
    Ended {
        /// Closed cleanly (a close frame or the home's own ending), not vanished.
        clean: bool,
    },
}

/// Gateway → worker or gateway client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromGateway {
    /// First message after the handshake: identifies this gateway instance, which client ids
    /// embed so ids are never reused across restarts.
    Welcome {
        /// This run of the gateway, new at every start.
        instance: u64,
        /// The gateway's advertised internal address, which client ids embed.
        address: String,
    },
    /// A client event (workers only).
    Event(Event),
    /// The answer to a `ToGateway::Request`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// Liveness probe; answered with `Pong`.
    Ping,
    /// Answer to a `Ping`.
    Pong,
    /// Answer to a worker's `Drain`: this gateway routes no new events to that worker, and every
    /// event it routed there before is already on the link, ahead of this message. A worker that
    /// has this from every gateway has received all it will get.
    Drained,
    /// Which uids and groups this gateway holds (after a `ToGateway::WatchIndex`).
    Index(IndexUpdate),
    /// Gateway → gateway: the relayed client `conn` was resumed here; frames follow.
    RelayOpened {
        /// The relaying gateway's number for the socket.
        conn: u64,
    },
    /// Gateway → gateway: the relayed client `conn` could not be resumed here; `control` is the
    /// `not_recovered` frame the relaying gateway sends it before serving it as a new client.
    RelayRefused {
        /// The relaying gateway's number for the socket.
        conn: u64,
        /// The `not_recovered` control frame, as the client gets it.
        control: String,
    },
    /// Gateway → gateway: a frame for the relayed client `conn`.
    Relay {
        /// The relaying gateway's number for the socket.
        conn: u64,
        /// The frame.
        frame: RelayFrame,
    },
    /// This gateway took over the held clients of the stopped gateway instance `instance` at
    /// `gateway`: their ids stay theirs, and adopted locals of adoption `adoption` on this link
    /// are theirs (`crate::handover`). Sent on every link before any adopted local.
    Adopted {
        /// The adoption's number here.
        adoption: u32,
        /// The stopped gateway's advertised address.
        gateway: String,
        /// Its instance.
        instance: u64,
    },
    /// Adopter → stopping gateway: everything it sent for the hand-over of its instance
    /// `instance`, up to its `ToGateway::HandOverEnd`, is applied here; it may close the link.
    /// (Last variant: older gateways' variant numbers stay as they were.)
    HandOverDone {
        /// The stopping gateway's instance.
        instance: u64,
    },
}

/// A uid or group that appeared on or disappeared from a gateway (its first client bound or
/// joined, its last one left).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexChange {
    /// The gateway now has a client bound to this uid.
    UidOn(String),
    /// The gateway no longer has a client bound to this uid.
    UidOff(String),
    /// The gateway now has a member of this group.
    GroupOn(String),
    /// The gateway no longer has a member of this group.
    GroupOff(String),
}

impl IndexChange {
    /// Bytes this change adds to a frame, roughly (for splitting large updates).
    pub fn weight(&self) -> usize {
        match self {
            IndexChange::UidOn(s) | IndexChange::UidOff(s) | IndexChange::GroupOn(s) | IndexChange::GroupOff(s) => {
                s.len() + 10
            }
        }
    }
}

/// Part of a gateway's routing index, for one link: a snapshot (split over several updates when
/// large) or the changes since the last update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexUpdate {
    /// Index writes (see [`Command::is_index_write`]) received on this link that the gateway had
    /// applied when it sent this: a sender's own bind or join numbered up to here is in this
    /// update or an earlier one.
    pub applied: u64,
    /// Forget everything this gateway said before: a snapshot starts here.
    pub reset: bool,
    /// After applying this, the receiver knows every uid and group of this gateway (false on
    /// every part of a snapshot but the last).
    pub complete: bool,
    /// `On` entries of a snapshot, or the changes in the order they happened.
    pub changes: Vec<IndexChange>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode_frame};
    use crate::frame::{FrameDecoder, HEADER_LEN};
    use bytes::BytesMut;

    fn round_trip<T>(msg: T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut out = Vec::new();
        encode_frame(&msg, &mut out, 1 << 20).unwrap();
        let mut buf = BytesMut::from(&out[..]);
        let payload = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
        let back: T = decode(&payload).unwrap();
        assert_eq!(back, msg);
        assert_eq!(out.len(), HEADER_LEN + payload.len());
    }

    fn gw() -> GatewayInfo {
        GatewayInfo { address: "[::1]:2900".into(), name: "gw-1".into() }
    }

    fn info() -> ClientInfo {
        ClientInfo {
            client_addr: "[2001:db8::1]:50000".into(),
            gateway_addr: "0.0.0.0:7272".into(),
            listener: "websocket://0.0.0.0:7272".into(),
            protocol: Protocol::WebSocket,
        }
    }

    fn all_commands() -> Vec<Command> {
        let p = Payload::text("hi");
        vec![
            Command::SendToClients { clients: vec![1, 2], msg: p.clone() },
            Command::SendToAll { msg: Payload::binary(vec![0u8, 255]), exclude: vec![3] },
            Command::SendToUids { uids: vec!["u".into()], msg: p.clone() },
            Command::SendToGroups { groups: vec!["g".into(), "h".into()], msg: p.clone(), exclude: vec![] },
            Command::BindUid { client: 1, uid: "u".into() },
            Command::UnbindUid { client: 1, uid: "u".into() },
            Command::JoinGroup { client: 1, group: "g".into() },
            Command::LeaveGroup { client: 1, group: "g".into() },
            Command::Ungroup { group: "g".into() },
            Command::CloseClient {
                client: 1,
                last: Some(p),
                close: Some(CloseReason { code: 4000, reason: "bye".into() }),
            },
            Command::DestroyClient { client: 1 },
            Command::CloseUid { uid: "u".into() },
            Command::SetSession { client: 1, session: Bytes::from_static(b"{\"a\":1}") },
            Command::UpdateSession { client: 1, patch: Bytes::from_static(b"{\"b\":null}") },
            Command::WriteBackSession {
                client: 1,
                seq: 2,
                changed: Bytes::from_static(b"{\"c\":[1]}"),
                removed: vec!["d".into()],
            },
        ]
    }

    fn all_queries() -> Vec<Query> {
        vec![
            Query::IsOnline { clients: vec![1] },
            Query::ClientsByUids { uids: vec!["u".into()] },
            Query::UidOf { client: 7 },
            Query::ClientsByGroups { groups: vec!["g".into()] },
            Query::ClientCountByGroups { groups: vec!["g".into()] },
            Query::UidsByGroup { group: "g".into() },
            Query::GroupIds,
            Query::GroupClients,
            Query::GroupUids,
            Query::ClientIds,
            Query::ClientCount,
            Query::Uids,
            Query::Sessions { clients: Some(vec![1]), group: None },
            Query::Connections,
            Query::SetSession { client: 1, session: Bytes::from_static(b"{}") },
            Query::UpdateSession { client: 2, patch: Bytes::from_static(b"{\"a\":null}") },
            Query::PusherMembers { app: "1".into(), channel: Some("presence-a".into()) },
        ]
    }

    fn all_replies() -> Vec<Reply> {
        vec![
            Reply::Flags(vec![true, false]),
            Reply::ClientLists(vec![vec![1], vec![]]),
            Reply::Text(Some("u".into())),
            Reply::Counts(vec![3]),
            Reply::Strings(vec!["a".into()]),
            Reply::NamedClients(vec![("g".into(), vec![1, 2])]),
            Reply::NamedStrings(vec![("g".into(), vec!["u".into()])]),
            Reply::Clients(vec![9]),
            Reply::Sessions(vec![(1, Some(Bytes::from_static(b"{}"))), (2, None)]),
            Reply::Connections(vec![ConnectionInfo {
                client: 1,
                client_addr: "127.0.0.1:1".into(),
                uid: None,
                groups: vec!["g".into()],
                bytes_in: 1,
                bytes_out: 2,
                queue_len: 0,
            }]),
            Reply::Error("unknown client".into()),
            Reply::Done,
            Reply::Refused(Refusal::ClientGone),
            Reply::Refused(Refusal::SessionTooLarge { size: 9_000_000, limit: 1 << 20 }),
            Reply::Refused(Refusal::NotAnObject("expected a JSON object, got an array".into())),
            Reply::Refused(Refusal::BadName("must not be empty".into())),
            Reply::Refused(Refusal::TooManyGroups { limit: 1000 }),
        ]
    }

    #[test]
    fn every_register_message_round_trips() {
        round_trip(ToRegister::Announce { gateway: gw() });
        round_trip(ToRegister::Subscribe);
        round_trip(ToRegister::Ping);
        round_trip(ToRegister::Pong);
        round_trip(FromRegister::Gateways { list: vec![gw(), gw()] });
        round_trip(FromRegister::Gateways { list: vec![] });
        round_trip(FromRegister::Ping);
        round_trip(FromRegister::Pong);
    }

    #[test]
    fn every_gateway_link_message_round_trips() {
        for c in all_commands() {
            round_trip(ToGateway::Command(c));
        }
        for (id, q) in all_queries().into_iter().enumerate() {
            round_trip(ToGateway::Request { id: id as u64, query: q });
        }
        round_trip(ToGateway::Ack { seq: u64::MAX });
        round_trip(ToGateway::Drain);
        round_trip(ToGateway::WatchIndex);
        round_trip(ToGateway::Ping);
        round_trip(ToGateway::Pong);
        round_trip(ToGateway::Pusher(PusherPeer::Join {
            gateway: "127.0.0.1:1".into(),
            app: "1".into(),
            channel: "presence-a".into(),
            user_id: "u".into(),
            user_info: Some("{}".into()),
            waiting: Some(7),
            resync: false,
        }));
        round_trip(ToGateway::Pusher(PusherPeer::Members {
            app: "1".into(),
            channel: "presence-a".into(),
            client: 7,
            members: vec![("u".into(), None)],
        }));
        round_trip(FromGateway::Welcome { instance: 42, address: "gw:2900".into() });
        let kinds = vec![
            EventKind::Connect,
            EventKind::WebSocketConnect {
                path: "/chat".into(),
                query: "a=1".into(),
                headers: vec![("cookie".into(), "x=y".into())],
            },
            EventKind::Message(Payload::text("héllo")),
            EventKind::Message(Payload::binary(vec![0u8; 300])),
            EventKind::Close,
            EventKind::Resume { replayed: 12 },
        ];
        for kind in kinds {
            round_trip(FromGateway::Event(Event {
                seq: 1,
                client: 2,
                kind,
                info: Some(info()),
                session: Some(Bytes::from_static(b"{\"k\":1}")),
                session_writes: 9,
                redelivered: true,
            }));
        }
        for (id, r) in all_replies().into_iter().enumerate() {
            round_trip(FromGateway::Reply { id: id as u64, reply: r });
        }
        round_trip(FromGateway::Ping);
        round_trip(FromGateway::Pong);
    }

    #[test]
    fn the_drained_answer_round_trips_and_keeps_the_older_variants_tags() {
        round_trip(FromGateway::Drained);
        // New variants go at the end: the ones before keep their bincode tag.
        let mut out = Vec::new();
        encode_frame(&FromGateway::Pong, &mut out, 1 << 16).unwrap();
        let mut drained = Vec::new();
        encode_frame(&FromGateway::Drained, &mut drained, 1 << 16).unwrap();
        assert_eq!(out[4..], [4], "Pong keeps tag 4 (Welcome, Event, Reply, Ping come first)");
        assert_eq!(drained[4..], [5], "Drained comes after it");
    }

    #[test]
    fn index_updates_round_trip_after_the_older_variants() {
        round_trip(FromGateway::Index(IndexUpdate {
            applied: 7,
            reset: true,
            complete: false,
            changes: vec![
                IndexChange::UidOn("u".into()),
                IndexChange::UidOff("ü".into()),
                IndexChange::GroupOn("g".into()),
                IndexChange::GroupOff(String::new()),
            ],
        }));
        let mut out = Vec::new();
        encode_frame(&FromGateway::Index(IndexUpdate::default_for_test()), &mut out, 1 << 16).unwrap();
        assert_eq!(out[4], 6, "Index comes after Drained (5)");
        let mut watch = Vec::new();
        encode_frame(&ToGateway::WatchIndex, &mut watch, 1 << 16).unwrap();
        assert_eq!(watch[4..], [6], "WatchIndex comes after Pong (5)");
        assert!(Command::BindUid { client: 1, uid: "u".into() }.is_index_write());
        assert!(Command::Ungroup { group: "g".into() }.is_index_write());
        assert!(!Command::CloseUid { uid: "u".into() }.is_index_write());
        assert!(!Command::SendToUids { uids: vec![], msg: Payload::text("") }.is_index_write());
    }

    impl IndexUpdate {
        fn default_for_test() -> Self {
            IndexUpdate { applied: 0, reset: false, complete: true, changes: vec![] }
        }
    }

    #[test]
    fn session_writes_asked_as_queries_come_after_the_older_variants() {
        let bytes = |msg: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            msg(&mut out);
            out[4..].to_vec()
        };
        let ask = |query| ToGateway::Request { id: 0, query };
        // Request is tag 1, then the request id (0), then the query's tag: Connections is 13.
        let connections = bytes(&|o| encode_frame(&ask(Query::Connections), o, 1 << 16).unwrap());
        assert_eq!(connections, [1, 0, 13]);
        let set =
            bytes(&|o| encode_frame(&ask(Query::SetSession { client: 0, session: Bytes::new() }), o, 1 << 16).unwrap());
        assert_eq!(set[..3], [1, 0, 14], "SetSession comes after Connections");
        let done = bytes(&|o| encode_frame(&FromGateway::Reply { id: 0, reply: Reply::Done }, o, 1 << 16).unwrap());
        assert_eq!(done, [2, 0, 11], "Done comes after Error (10)");
        assert!(Refusal::SessionTooLarge { size: 9, limit: 8 }.to_string().contains("max_session_bytes"));
    }

    #[test]
    fn unknown_variant_tag_is_a_clean_error() {
        // Variant index 200 does not exist in any enum.
        for payload in [&[200u8][..], &[0xfb, 0xff, 0xff][..]] {
            assert!(decode::<ToGateway>(payload).is_err());
            assert!(decode::<FromGateway>(payload).is_err());
            assert!(decode::<ToRegister>(payload).is_err());
            assert!(decode::<FromRegister>(payload).is_err());
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let dec = FrameDecoder::new(4096);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let _ = decode::<ToGateway>(&bytes);
            let _ = decode::<FromGateway>(&bytes);
            let _ = decode::<ToRegister>(&bytes);
            let _ = decode::<FromRegister>(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
            assert!(buf.capacity() <= 4096 + 64 + 4, "decoder reserved beyond its limit");
        }
    }
}
