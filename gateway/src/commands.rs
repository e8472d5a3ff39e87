//! Executing the commands workers and gateway clients send: deliveries to clients (one, several,
//! by uid, by group, all), uid and group changes, sessions, and closing clients.
//!
//! A command never waits: a message goes into each target's bounded send queue with `try_send`,
//! and every message that cannot be queued is counted as dropped, with its reason. A write that
//! would break a limit (a session past `max_session_bytes`, a bad uid or group name, a client in
//! `max_groups_per_client` groups) is refused whole: counted by reason, logged (at most once a
//! second), and, for a session write asked as a query, answered with the [`Refusal`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use gw_proto::limits::check_name;
use gw_proto::{CloseReason, Command, Payload, Refusal, Reply};
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client_handle::{ClientHandle, KillReason};
use crate::clients::Clients;
use crate::handover::Scope;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::recovery::Recorded;
use crate::send_queue::Outbound;
use crate::session;

/// Refused writes are logged at most once per this window (each is counted).
static REFUSALS_LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// A session write, as a command or asked as a query.
pub(crate) enum SessionWrite {
    /// Replace the session.
    Set(Bytes),
    /// Deep-merge a patch into it.
    Update(Bytes),
}

impl Clients {
    /// Executes one command from a worker or gateway client. A refused write is counted and
    /// logged; the sender does not wait for an answer (see [`Self::write_session`] for one that
    /// does).
    pub(crate) fn execute(&self, cmd: Command) {
        self.execute_scoped(cmd, &Scope::All);
    }

    /// [`execute`](Self::execute), for the clients `scope` admits only (a hand-over:
    /// `crate::handover`).
    pub(crate) fn execute_scoped(&self, cmd: Command, scope: &Scope) {
        Metrics::inc(&self.metrics.commands);
        let what = command_name(&cmd);
        let client = command_client(&cmd);
        if let Some(c) = client
            && !scope.admits(c)
        {
            return;
        }
        if let Err(refusal) = self.apply(cmd, scope) {
            self.count_refusal(&refusal);
            match refusal {
                // A client that left meanwhile is routine: a worker races its clients' closing.
                Refusal::ClientGone => tracing::debug!(client = ?client, "{what}: unknown client; ignored"),
                refusal => {
                    if let Some(unlogged) = REFUSALS_LOGGED.admit() {
                        tracing::warn!(client = ?client, unlogged, "{what} refused: {refusal}");
                    }
                }
            }
        }
    }

    /// A session write asked as a query: applied, or refused with the reason.
    pub(crate) fn write_session(&self, client: u64, write: SessionWrite) -> Reply {
        match self.change_session(client, write) {
            Ok(()) => Reply::Done,
            Err(refusal) => {
                self.count_refusal(&refusal);
                tracing::debug!(client, "session write refused: {refusal}");
                Reply::Refused(refusal)
            }
        }
    }

    /// Applies a command to the clients `scope` admits (a command about one client is checked
    /// by the caller).
    fn apply(&self, cmd: Command, scope: &Scope) -> Result<(), Refusal> {
        match cmd {
            Command::SendToClients { clients, msg } => {
                let Some(msg) = self.to_ws(msg) else { return Ok(()) };
                self.deliver_each(clients.into_iter().filter(|c| scope.admits(*c)), &msg);
            }
            Command::SendToAll { msg, exclude } => {
                let Some(msg) = self.to_ws(msg) else { return Ok(()) };
                let exclude: HashSet<u64> = exclude.into_iter().collect();
                for h in self.handles().into_iter().filter(|h| !exclude.contains(&h.id) && scope.admits(h.id)) {
                    self.deliver(&h, &msg);
                }
            }
            Command::SendToUids { uids, msg } => {
                let Some(msg) = self.to_ws(msg) else { return Ok(()) };
                let targets: HashSet<u64> = {
                    let ix = self.index();
                    uids.iter().flat_map(|u| ix.uid_clients(u)).filter(|c| scope.admits(*c)).collect()
                };
                self.deliver_each(targets, &msg);
            }
            Command::SendToGroups { groups, msg, exclude } => {
                let Some(msg) = self.to_ws(msg) else { return Ok(()) };
                let targets: HashSet<u64> =
                    self.index().members(&groups).filter(|c| !exclude.contains(c) && scope.admits(*c)).collect();
                self.deliver_each(targets, &msg);
            }
            // A name that breaks the rule cannot be held here, so unbinding, leaving, ungrouping
            // and sending to one are no-ops that need no check.
            Command::BindUid { client, uid } => {
                check_name(&uid).map_err(|e| Refusal::BadName(format!("uid {e}")))?;
                if !self.contains(client) {
                    return Err(Refusal::ClientGone);
                }
                self.index_mut().bind_uid(client, uid);
            }
            Command::UnbindUid { client, uid } => self.index_mut().unbind_uid(client, &uid),
            Command::JoinGroup { client, group } => {
                check_name(&group).map_err(|e| Refusal::BadName(format!("group {e}")))?;
                if !self.contains(client) {
                    return Err(Refusal::ClientGone);
                }
                let mut ix = self.index_mut();
                let limit = self.limits.max_groups_per_client;
                if ix.group_count(client) >= limit && !ix.is_member(client, &group) {
                    return Err(Refusal::TooManyGroups { limit: limit as u64 });
                }
                ix.join(client, group);
            }
            Command::LeaveGroup { client, group } => self.index_mut().leave(client, &group),
            Command::Ungroup { group } if *scope == Scope::All => self.index_mut().ungroup(&group),
            Command::Ungroup { group } => {
                let mut ix = self.index_mut();
                let members: Vec<u64> = ix.group_clients(&group).filter(|c| scope.admits(*c)).collect();
                for c in members {
                    ix.leave(c, &group);
                }
            }
            Command::CloseClient { client, last, close } => {
                let last = match last {
                    Some(p) => match self.to_ws(p) {
                        Some(m) => Some(m),
                        None => return Ok(()),
                    },
                    None => None,
                };
                match self.get(client) {
                    Some(h) if self.close_held(&h) => {}
                    Some(h) => Self::close(&h, last, close),
                    None => Metrics::inc(&self.metrics.dropped_client_gone),
                }
            }
            Command::DestroyClient { client } => {
                if let Some(h) = self.get(client)
                    && !self.close_held(&h)
                {
                    Self::destroy(&h);
                }
            }
            Command::CloseUid { uid } => {
                let ids: Vec<u64> = self.index().uid_clients(&uid).filter(|c| scope.admits(*c)).collect();
                for h in ids.into_iter().filter_map(|id| self.get(id)) {
                    if !self.close_held(&h) {
                        Self::close(&h, None, None);
                    }
                }
            }
            Command::SetSession { client, session } => self.change_session(client, SessionWrite::Set(session))?,
            Command::UpdateSession { client, patch } => self.change_session(client, SessionWrite::Update(patch))?,
            Command::WriteBackSession { client, seq, changed, removed } => self.with_session(client, |slot| {
                // Counted as applied even when refused, or the worker would keep re-applying it.
                slot.writes = slot.writes.max(seq);
                let merged = session::write_back(slot.data.as_deref(), &changed, &removed).map_err(not_an_object)?;
                slot.data = Some(self.within_cap(merged)?);
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Replaces or merges into a client's session, unless the result would be over the cap (the
    /// session then stays as it was).
    fn change_session(&self, client: u64, write: SessionWrite) -> Result<(), Refusal> {
        match write {
            SessionWrite::Set(session) => {
                // Measured before it is parsed: an oversize one costs no parsing.
                let session = self.within_cap(session)?;
                session::parse_object(&session).map_err(not_an_object)?;
                self.with_session(client, |slot| {
                    slot.data = Some(session);
                    Ok(())
                })
            }
            SessionWrite::Update(patch) => self.with_session(client, |slot| {
                let merged = session::merge(slot.data.as_deref(), &patch).map_err(not_an_object)?;
                slot.data = Some(self.within_cap(merged)?);
                Ok(())
            }),
        }
    }

    /// Runs `write` on client `client`'s session, under its lock. A client with recovery may
    /// have been taken over by a resume between the lookup and the lock (the resume copies the
    /// session under the old connection's lock): then the write goes to the new connection's.
    fn with_session(
        &self,
        client: u64,
        write: impl FnOnce(&mut crate::client_handle::SessionSlot) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        loop {
            let h = self.get(client).ok_or(Refusal::ClientGone)?;
            let mut slot = h.session.lock().expect("session lock");
            if h.recovery.is_some() && !self.is_current(&h) {
                continue;
            }
            return write(&mut slot);
        }
    }

    /// The session, if it is within `max_session_bytes`.
    fn within_cap(&self, session: Bytes) -> Result<Bytes, Refusal> {
        let limit = self.limits.max_session_bytes;
        if session.len() > limit {
            return Err(Refusal::SessionTooLarge { size: session.len() as u64, limit: limit as u64 });
        }
        Ok(session)
    }

    fn count_refusal(&self, refusal: &Refusal) {
        let m = &self.metrics;
        Metrics::inc(&m.rejected_commands);
        match refusal {
            Refusal::SessionTooLarge { .. } => Metrics::inc(&m.refused_session_too_large),
            Refusal::BadName(_) => Metrics::inc(&m.refused_bad_name),
            Refusal::TooManyGroups { .. } => Metrics::inc(&m.refused_too_many_groups),
            _ => {}
        }
    }

    /// Delivers a message to a client: queued, or, for a client with recovery, recorded in its
    /// replay buffer first and queued to its current connection (recorded only, while it is
    /// held). Both under the client's recovery lock, so the numbering is the queue's order.
    fn deliver(&self, handle: &ClientHandle, msg: &OutMessage) {
        let (Some(cell), Some(hub)) = (&handle.recovery, &self.recovery) else {
            return self.queue(handle, msg.clone());
        };
        let mut rec = cell.lock().expect("recovery lock");
        match hub.record(&self.metrics, handle.id, &mut rec, msg.for_recovery()) {
            Recorded::Queue(msg) => match self.get(handle.id) {
                // A resume may have put a new connection in place since `handle` was looked up.
                Some(current) if current.recovery.as_ref().is_some_and(|c| Arc::ptr_eq(c, cell)) => {
                    self.queue(&current, msg);
                }
                _ => self.queue(handle, msg),
            },
            Recorded::Kept => {}
            Recorded::Gone => Metrics::inc(&self.metrics.dropped_client_gone),
        }
    }

    /// Queues a message for a client without waiting. A full queue marks a slow consumer: the
    /// message is dropped, counted, and the client disconnected (close code 1008).
    fn queue(&self, handle: &ClientHandle, msg: OutMessage) {
        let len = msg.len();
        let over_bytes = handle.queued_bytes.load(Ordering::Relaxed) + len > self.queue_bytes;
        let result = if over_bytes {
            Err(TrySendError::Full(Outbound::Msg(msg)))
        } else {
            handle.tx.try_send(Outbound::Msg(msg))
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

    fn deliver_each(&self, ids: impl IntoIterator<Item = u64>, msg: &OutMessage) {
        for id in ids {
            match self.get(id) {
                Some(h) => self.deliver(&h, msg),
                None => Metrics::inc(&self.metrics.dropped_client_gone),
            }
        }
    }

    /// Closing a held client (recovery) ends its held state now, with its `on_close`; true if
    /// it was held.
    fn close_held(&self, handle: &ClientHandle) -> bool {
        match (&handle.recovery, &self.recovery) {
            (Some(cell), Some(hub)) => hub.close_held(handle.id, cell),
            _ => false,
        }
    }

    fn close(handle: &ClientHandle, last: Option<OutMessage>, close: Option<CloseReason>) {
        if handle.tx.try_send(Outbound::Close { last, close }).is_err() {
            // Queue full or task gone: closing is what was asked, so do it the hard way.
            handle.kill(KillReason::Destroy);
        }
    }

    /// Drops a client's connection without a close frame, after what was queued for it before
    /// (PHP's gateway has written that to the socket by then, so it arrives): in queue order,
    /// like a close. With its queue full the client is not reading anyway: dropped at once.
    fn destroy(handle: &ClientHandle) {
        if handle.tx.try_send(Outbound::Destroy).is_err() {
            handle.kill(KillReason::Destroy);
        }
    }

    /// Converts a payload to a WebSocket message once, so a broadcast shares one buffer (and one
    /// compression). Text must be UTF-8: a worker sending invalid text is refused here rather
    /// than breaking every client.
    fn to_ws(&self, p: Payload) -> Option<OutMessage> {
        if p.binary {
            return Some(OutMessage::new(Message::Binary(p.data)));
        }
        match Utf8Bytes::try_from(p.data) {
            Ok(text) => Some(OutMessage::new(Message::Text(text))),
            Err(_) => {
                Metrics::inc(&self.metrics.rejected_commands);
                tracing::warn!("a text message that is not UTF-8 was refused; send it as binary");
                None
            }
        }
    }
}

fn not_an_object(e: session::SessionError) -> Refusal {
    Refusal::NotAnObject(e.to_string())
}

/// The command's name, for log lines.
fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::SendToClients { .. } => "send_to_clients",
        Command::SendToAll { .. } => "send_to_all",
        Command::SendToUids { .. } => "send_to_uids",
        Command::SendToGroups { .. } => "send_to_groups",
        Command::BindUid { .. } => "bind_uid",
        Command::UnbindUid { .. } => "unbind_uid",
        Command::JoinGroup { .. } => "join_group",
        Command::LeaveGroup { .. } => "leave_group",
        Command::Ungroup { .. } => "ungroup",
        Command::CloseClient { .. } => "close_client",
        Command::DestroyClient { .. } => "destroy_client",
        Command::CloseUid { .. } => "close_uid",
        Command::SetSession { .. } => "set_session",
        Command::UpdateSession { .. } => "update_session",
        Command::WriteBackSession { .. } => "session write-back",
    }
}

/// The client a command is about, if one, for log lines.
fn command_client(cmd: &Command) -> Option<u64> {
    match cmd {
        Command::BindUid { client, .. }
        | Command::UnbindUid { client, .. }
        | Command::JoinGroup { client, .. }
        | Command::LeaveGroup { client, .. }
        | Command::CloseClient { client, .. }
        | Command::DestroyClient { client }
        | Command::SetSession { client, .. }
        | Command::UpdateSession { client, .. }
        | Command::WriteBackSession { client, .. } => Some(*client),
        _ => None,
    }
}
