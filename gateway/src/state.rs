//! The gateway's clients, their uid and group indexes, sessions, and the execution of commands and
//! queries from workers and gateway clients.
//!
//! Client handles live in a sharded map (lookups on every send); uid and group indexes live under
//! one `RwLock` so a bind or join updates both directions atomically. No lock is held across an
//! `.await`; delivery to a client is a non-blocking `try_send` into its bounded queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use gw_proto::{ClientInfo, CloseReason, Command, ConnectionInfo, Event, Payload, Query, Reply};
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::session;

/// What the client task is asked to do next.
#[derive(Debug)]
pub(crate) enum Outbound {
    Msg(Message),
    /// A heartbeat ping: not counted as a message and not held against the byte budget.
    Control(Message),
    Close {
        last: Option<Message>,
        close: Option<CloseReason>,
    },
}

/// A client's outgoing queue, bounded in messages. It holds no memory while empty: an idle client
/// costs nothing here, where a tokio channel allocates its first 32-slot block up front (about
/// 2.8 KiB per client, plus 512 bytes of channel state; see BENCHMARKS.md). Producers never wait;
/// the client task waits for [`ready`](Self::ready), then takes items one by one and writes what
/// it finds with one flush.
#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    limit: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// The client task has finished: nothing will be taken any more.
    closed: bool,
}

/// Capacity a drained queue may keep; a larger one (left by a burst) is freed.
const QUEUE_KEEP: usize = 16;

impl SendQueue {
    pub fn new(limit: usize) -> Self {
        Self { state: Mutex::new(QueueState::default()), ready: Notify::new(), limit: limit.max(1) }
    }

    /// Queues without waiting; refuses when `limit` items wait or the client task has finished.
    pub fn try_send(&self, item: Outbound) -> Result<(), TrySendError<Outbound>> {
        let mut s = self.state.lock().expect("send queue lock");
        if s.closed {
            return Err(TrySendError::Closed(item));
        }
        if s.items.len() >= self.limit {
            return Err(TrySendError::Full(item));
        }
        let was_empty = s.items.is_empty();
        s.items.push_back(item);
        drop(s);
        // While items wait, a wake-up is already pending: the task takes all it finds before it
        // waits again.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next item without waiting.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut s = self.state.lock().expect("send queue lock");
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > QUEUE_KEEP {
            s.items = VecDeque::new();
        }
        item
    }

    /// Resolves once an item waits (never after the queue was closed). Takes nothing, so it can
    /// be dropped at any time.
    pub async fn ready(&self) {
        loop {
            {
                let s = self.state.lock().expect("send queue lock");
                if !s.items.is_empty() && !s.closed {
                    return;
                }
            }
            // A push after the check above leaves a permit, so this cannot miss it.
            self.ready.notified().await;
        }
    }

    /// Refuses further items and drops what waits; returns how many messages (not heartbeats or
    /// close requests) were dropped, for the caller to count.
    pub fn close(&self) -> u64 {
        let mut s = self.state.lock().expect("send queue lock");
        s.closed = true;
        let items = std::mem::take(&mut s.items);
        drop(s);
        self.ready.notify_one();
        items.iter().filter(|i| matches!(i, Outbound::Msg(_) | Outbound::Close { last: Some(_), .. })).count() as u64
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("send queue lock").items.len()
    }
}

/// Why a client was killed out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KillReason {
    None = 0,
    SlowConsumer = 1,
    Destroy = 2,
    /// Silent for `ping_not_response_limit` intervals.
    Heartbeat = 3,
}

/// A connected client as the rest of the gateway sees it.
#[derive(Debug)]
pub(crate) struct ClientHandle {
    pub id: u64,
    pub tx: SendQueue,
    pub kill: CancellationToken,
    kill_reason: AtomicU8,
    pub info: Arc<ClientInfo>,
    pub session: Mutex<SessionSlot>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Bytes of messages queued and not yet written.
    pub queued_bytes: AtomicUsize,
    /// When the client last sent something, in ms of the gateway clock.
    pub last_active: AtomicU64,
    /// Events a dead worker link handed back, to be sent to another worker before anything new.
    redelivery: Mutex<Redelivery>,
    /// Set while `redelivery` holds events; checked on every dispatch without taking the lock.
    pub redelivery_pending: AtomicBool,
    /// Wakes the client task when events were handed back.
    pub redeliver: Notify,
}

/// A client's session, and the sequence number of the last worker write-back applied to it: an
/// event carries both, read together, so a worker can tell which of its own write-backs the
/// event's session does not show yet.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot {
    pub data: Option<Bytes>,
    pub writes: u64,
}

#[derive(Debug, Default)]
struct Redelivery {
    events: Vec<Event>,
    /// The client task has finished: hand-backs must be delivered without it.
    closed: bool,
}

impl ClientHandle {
    pub fn new(id: u64, tx: SendQueue, info: ClientInfo, now_ms: u64) -> Self {
        Self {
            id,
            tx,
            kill: CancellationToken::new(),
            kill_reason: AtomicU8::new(KillReason::None as u8),
            info: Arc::new(info),
            session: Mutex::new(SessionSlot::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            last_active: AtomicU64::new(now_ms),
            redelivery: Mutex::new(Redelivery::default()),
            redelivery_pending: AtomicBool::new(false),
            redeliver: Notify::new(),
        }
    }

    /// Queues handed-back events for the client task; gives them back if the task has finished.
    pub fn hand_back(&self, events: Vec<Event>) -> Result<(), Vec<Event>> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        if r.closed {
            return Err(events);
        }
        r.events.extend(events);
        self.redelivery_pending.store(true, Ordering::Release);
        drop(r);
        self.redeliver.notify_one();
        Ok(())
    }

    /// Takes the handed-back events, in order.
    pub fn take_redelivery(&self) -> Vec<Event> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        self.redelivery_pending.store(false, Ordering::Release);
        std::mem::take(&mut r.events)
    }

    /// Marks the client task finished and returns what is still waiting.
    pub fn close_redelivery(&self) -> Vec<Event> {
        let mut r = self.redelivery.lock().expect("redelivery lock");
        r.closed = true;
        self.redelivery_pending.store(false, Ordering::Release);
        std::mem::take(&mut r.events)
    }

    pub fn kill(&self, reason: KillReason) {
        let _ = self.kill_reason.compare_exchange(
            KillReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.kill.cancel();
    }

    pub fn kill_reason(&self) -> KillReason {
        match self.kill_reason.load(Ordering::Acquire) {
            1 => KillReason::SlowConsumer,
            2 => KillReason::Destroy,
            3 => KillReason::Heartbeat,
            _ => KillReason::None,
        }
    }

    pub fn session(&self) -> Option<Bytes> {
        self.session.lock().expect("session lock").data.clone()
    }

    /// The session and the last write-back applied to it, as one snapshot.
    pub fn session_snapshot(&self) -> (Option<Bytes>, u64) {
        let slot = self.session.lock().expect("session lock");
        (slot.data.clone(), slot.writes)
    }
}

#[derive(Debug, Default)]
struct Indexes {
    uid_of: HashMap<u64, String>,
    uids: HashMap<String, HashSet<u64>>,
    groups_of: HashMap<u64, HashSet<String>>,
    groups: HashMap<String, HashSet<u64>>,
}

impl Indexes {
    fn unbind(&mut self, client: u64) {
        if let Some(uid) = self.uid_of.remove(&client)
            && let Some(set) = self.uids.get_mut(&uid)
        {
            set.remove(&client);
            if set.is_empty() {
                self.uids.remove(&uid);
            }
        }
    }

    fn leave(&mut self, client: u64, group: &str) {
        if let Some(set) = self.groups.get_mut(group) {
            set.remove(&client);
            if set.is_empty() {
                self.groups.remove(group);
            }
        }
        if let Some(gs) = self.groups_of.get_mut(&client) {
            gs.remove(group);
            if gs.is_empty() {
                self.groups_of.remove(&client);
            }
        }
    }

    fn members<'a>(&'a self, groups: &'a [String]) -> impl Iterator<Item = u64> + 'a {
        groups.iter().filter_map(|g| self.groups.get(g)).flatten().copied()
    }

    fn distinct_uids(&self, group: &str) -> Vec<String> {
        let mut uids: Vec<String> = self
            .groups
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|c| self.uid_of.get(c).cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        uids.sort();
        uids
    }
}

/// All client state of one gateway.
#[derive(Debug)]
pub struct State {
    clients: DashMap<u64, Arc<ClientHandle>>,
    index: RwLock<Indexes>,
    pub metrics: Metrics,
    queue_bytes: usize,
    drop_slow: bool,
}

impl State {
    pub(crate) fn new(queue_bytes: usize, drop_slow: bool) -> Self {
        Self {
            clients: DashMap::new(),
            index: RwLock::new(Indexes::default()),
            metrics: Metrics::default(),
            queue_bytes,
            drop_slow,
        }
    }

    /// Every client handle (for the heartbeat walk).
    pub(crate) fn handles(&self) -> Vec<Arc<ClientHandle>> {
        self.clients.iter().map(|e| e.value().clone()).collect()
    }

    pub(crate) fn insert(&self, handle: Arc<ClientHandle>) {
        self.clients.insert(handle.id, handle);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&self.metrics.connections_total);
    }

    /// Removes a closed client from the map and every index.
    pub(crate) fn remove(&self, id: u64) {
        if self.clients.remove(&id).is_some() {
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        }
        let mut ix = self.index.write().expect("index lock");
        ix.unbind(id);
        if let Some(groups) = ix.groups_of.remove(&id) {
            for g in groups {
                if let Some(set) = ix.groups.get_mut(&g) {
                    set.remove(&id);
                    if set.is_empty() {
                        ix.groups.remove(&g);
                    }
                }
            }
        }
    }

    /// Messages waiting in every client's send queue.
    pub fn queued_total(&self) -> usize {
        self.clients.iter().map(|e| e.value().tx.len()).sum()
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    /// Queues a message for a client without waiting. A full queue marks a slow consumer: the
    /// message is dropped, counted, and the client disconnected (close code 1008).
    fn deliver(&self, handle: &ClientHandle, msg: &Message) {
        let len = msg.len();
        let over_bytes = handle.queued_bytes.load(Ordering::Relaxed) + len > self.queue_bytes;
        let result = if over_bytes {
            Err(TrySendError::Full(Outbound::Msg(msg.clone())))
        } else {
            handle.tx.try_send(Outbound::Msg(msg.clone()))
        };
        match result {
            Ok(()) => {
                handle.queued_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                Metrics::inc(&self.metrics.dropped_slow_consumer);
                if !self.drop_slow && !handle.kill.is_cancelled() {
                    tracing::warn!(client = handle.id, "send queue full: slow consumer disconnected");
                    handle.kill(KillReason::SlowConsumer);
                }
            }
            Err(TrySendError::Closed(_)) => Metrics::inc(&self.metrics.dropped_client_gone),
        }
    }

    fn deliver_to(&self, id: u64, msg: &Message) {
        match self.get(id) {
            Some(h) => self.deliver(&h, msg),
            None => Metrics::inc(&self.metrics.dropped_client_gone),
        }
    }

    fn deliver_each(&self, ids: impl IntoIterator<Item = u64>, msg: &Message) {
        for id in ids {
            self.deliver_to(id, msg);
        }
    }

    fn close(&self, handle: &ClientHandle, last: Option<Message>, close: Option<CloseReason>) {
        if handle.tx.try_send(Outbound::Close { last, close }).is_err() {
            // Queue full or task gone: closing is what was asked, so do it the hard way.
            handle.kill(KillReason::Destroy);
        }
    }

    /// Executes one command from a worker or gateway client.
    pub(crate) fn execute(&self, cmd: Command) {
        Metrics::inc(&self.metrics.commands);
        match cmd {
            Command::SendToClients { clients, msg } => {
                let Some(msg) = self.to_ws(msg) else { return };
                self.deliver_each(clients, &msg);
            }
            Command::SendToAll { msg, exclude } => {
                let Some(msg) = self.to_ws(msg) else { return };
                let exclude: HashSet<u64> = exclude.into_iter().collect();
                let targets: Vec<Arc<ClientHandle>> =
                    self.clients.iter().filter(|e| !exclude.contains(e.key())).map(|e| e.value().clone()).collect();
                for h in targets {
                    self.deliver(&h, &msg);
                }
            }
            Command::SendToUids { uids, msg } => {
                let Some(msg) = self.to_ws(msg) else { return };
                let targets: HashSet<u64> = {
                    let ix = self.index.read().expect("index lock");
                    uids.iter().filter_map(|u| ix.uids.get(u)).flatten().copied().collect()
                };
                self.deliver_each(targets, &msg);
            }
            Command::SendToGroups { groups, msg, exclude } => {
                let Some(msg) = self.to_ws(msg) else { return };
                let targets: HashSet<u64> = {
                    let ix = self.index.read().expect("index lock");
                    ix.members(&groups).filter(|c| !exclude.contains(c)).collect()
                };
                self.deliver_each(targets, &msg);
            }
            Command::BindUid { client, uid } => {
                if uid.is_empty() || self.get(client).is_none() {
                    return self.reject("bind_uid", client);
                }
                let mut ix = self.index.write().expect("index lock");
                ix.unbind(client);
                ix.uids.entry(uid.clone()).or_default().insert(client);
                ix.uid_of.insert(client, uid);
            }
            Command::UnbindUid { client, uid } => {
                let mut ix = self.index.write().expect("index lock");
                if ix.uid_of.get(&client) == Some(&uid) {
                    ix.unbind(client);
                }
            }
            Command::JoinGroup { client, group } => {
                if group.is_empty() || self.get(client).is_none() {
                    return self.reject("join_group", client);
                }
                let mut ix = self.index.write().expect("index lock");
                ix.groups.entry(group.clone()).or_default().insert(client);
                ix.groups_of.entry(client).or_default().insert(group);
            }
            Command::LeaveGroup { client, group } => {
                self.index.write().expect("index lock").leave(client, &group);
            }
            Command::Ungroup { group } => {
                let mut ix = self.index.write().expect("index lock");
                if let Some(members) = ix.groups.remove(&group) {
                    for c in members {
                        if let Some(gs) = ix.groups_of.get_mut(&c) {
                            gs.remove(&group);
                            if gs.is_empty() {
                                ix.groups_of.remove(&c);
                            }
                        }
                    }
                }
            }
            Command::CloseClient { client, last, close } => {
                let last = match last {
                    Some(p) => match self.to_ws(p) {
                        Some(m) => Some(m),
                        None => return,
                    },
                    None => None,
                };
                match self.get(client) {
                    Some(h) => self.close(&h, last, close),
                    None => Metrics::inc(&self.metrics.dropped_client_gone),
                }
            }
            Command::DestroyClient { client } => {
                if let Some(h) = self.get(client) {
                    h.kill(KillReason::Destroy);
                }
            }
            Command::CloseUid { uid } => {
                let ids: Vec<u64> = {
                    let ix = self.index.read().expect("index lock");
                    ix.uids.get(&uid).into_iter().flatten().copied().collect()
                };
                for id in ids {
                    if let Some(h) = self.get(id) {
                        self.close(&h, None, None);
                    }
                }
            }
            Command::SetSession { client, session } => match (self.get(client), session::parse_object(&session)) {
                (Some(h), Ok(_)) => h.session.lock().expect("session lock").data = Some(session),
                (None, _) => self.reject("set_session", client),
                (_, Err(e)) => {
                    Metrics::inc(&self.metrics.rejected_commands);
                    tracing::warn!(client, error = %e, "set_session: not a JSON object");
                }
            },
            Command::WriteBackSession { client, seq, changed, removed } => {
                let Some(h) = self.get(client) else { return self.reject("session write-back", client) };
                let mut slot = h.session.lock().expect("session lock");
                // Counted as applied even when refused, or the worker would keep re-applying it.
                slot.writes = slot.writes.max(seq);
                match session::write_back(slot.data.as_deref(), &changed, &removed) {
                    Ok(merged) => slot.data = Some(merged),
                    Err(e) => {
                        Metrics::inc(&self.metrics.rejected_commands);
                        tracing::warn!(client, error = %e, "session write-back: not a JSON object");
                    }
                }
            }
            Command::UpdateSession { client, patch } => {
                let Some(h) = self.get(client) else { return self.reject("update_session", client) };
                let mut slot = h.session.lock().expect("session lock");
                match session::merge(slot.data.as_deref(), &patch) {
                    Ok(merged) => slot.data = Some(merged),
                    Err(e) => {
                        Metrics::inc(&self.metrics.rejected_commands);
                        tracing::warn!(client, error = %e, "update_session: not a JSON object");
                    }
                }
            }
        }
    }

    fn reject(&self, what: &str, client: u64) {
        Metrics::inc(&self.metrics.rejected_commands);
        tracing::debug!(client, "{what}: unknown client or empty name; ignored");
    }

    /// Converts a payload to a WebSocket message once, so a broadcast shares one buffer. Text must
    /// be UTF-8: a worker sending invalid text is refused here rather than breaking every client.
    fn to_ws(&self, p: Payload) -> Option<Message> {
        if p.binary {
            return Some(Message::Binary(p.data));
        }
        match Utf8Bytes::try_from(p.data) {
            Ok(text) => Some(Message::Text(text)),
            Err(_) => {
                Metrics::inc(&self.metrics.rejected_commands);
                tracing::warn!("a text message that is not UTF-8 was refused; send it as binary");
                None
            }
        }
    }

    /// Answers one query about this gateway's clients.
    pub(crate) fn answer(&self, query: Query) -> Reply {
        Metrics::inc(&self.metrics.queries);
        let ix = || self.index.read().expect("index lock");
        match query {
            Query::IsOnline { clients } => Reply::Flags(clients.iter().map(|c| self.clients.contains_key(c)).collect()),
            Query::ClientsByUids { uids } => {
                let ix = ix();
                Reply::ClientLists(uids.iter().map(|u| sorted(ix.uids.get(u).into_iter().flatten().copied())).collect())
            }
            Query::UidOf { client } => Reply::Text(ix().uid_of.get(&client).cloned()),
            Query::ClientsByGroups { groups } => {
                let ix = ix();
                Reply::ClientLists(
                    groups.iter().map(|g| sorted(ix.groups.get(g).into_iter().flatten().copied())).collect(),
                )
            }
            Query::ClientCountByGroups { groups } => {
                let ix = ix();
                Reply::Counts(groups.iter().map(|g| ix.groups.get(g).map_or(0, |s| s.len() as u64)).collect())
            }
            Query::UidsByGroup { group } => Reply::Strings(ix().distinct_uids(&group)),
            Query::GroupIds => {
                let mut ids: Vec<String> = ix().groups.keys().cloned().collect();
                ids.sort();
                Reply::Strings(ids)
            }
            Query::GroupClients => {
                let ix = ix();
                let mut all: Vec<(String, Vec<u64>)> =
                    ix.groups.iter().map(|(g, m)| (g.clone(), sorted(m.iter().copied()))).collect();
                all.sort();
                Reply::NamedClients(all)
            }
            Query::GroupUids => {
                let ix = ix();
                let mut all: Vec<(String, Vec<String>)> =
                    ix.groups.keys().map(|g| (g.clone(), ix.distinct_uids(g))).collect();
                all.sort();
                Reply::NamedStrings(all)
            }
            Query::ClientIds => Reply::Clients(sorted(self.clients.iter().map(|e| *e.key()))),
            Query::ClientCount => Reply::Counts(vec![self.clients.len() as u64]),
            Query::Uids => {
                let mut uids: Vec<String> = ix().uids.keys().cloned().collect();
                uids.sort();
                Reply::Strings(uids)
            }
            Query::Sessions { clients, group } => {
                let ids: Vec<u64> = match (clients, group) {
                    (Some(list), _) => list,
                    (None, Some(g)) => sorted(ix().groups.get(&g).into_iter().flatten().copied()),
                    (None, None) => sorted(self.clients.iter().map(|e| *e.key())),
                };
                Reply::Sessions(ids.into_iter().filter_map(|id| self.get(id).map(|h| (id, h.session()))).collect())
            }
            Query::Connections => {
                let ix = ix();
                let mut rows: Vec<ConnectionInfo> = self
                    .clients
                    .iter()
                    .map(|e| {
                        let h = e.value();
                        let mut groups: Vec<String> = ix.groups_of.get(&h.id).into_iter().flatten().cloned().collect();
                        groups.sort();
                        ConnectionInfo {
                            client: h.id,
                            client_addr: h.info.client_addr.clone(),
                            uid: ix.uid_of.get(&h.id).cloned(),
                            groups,
                            bytes_in: h.bytes_in.load(Ordering::Relaxed),
                            bytes_out: h.bytes_out.load(Ordering::Relaxed),
                            queue_len: h.tx.len() as u64,
                        }
                    })
                    .collect();
                rows.sort_by_key(|r| r.client);
                Reply::Connections(rows)
            }
        }
    }
}

fn sorted(it: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = it.collect();
    v.sort_unstable();
    v
}
