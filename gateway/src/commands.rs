//! Executing the commands workers and gateway clients send: deliveries to clients (one, several,
//! by uid, by group, all), uid and group changes, sessions, and closing clients.
//!
//! A command never waits: a message goes into each target's bounded send queue with `try_send`,
//! and every message that cannot be queued is counted as dropped, with its reason.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use gw_proto::{CloseReason, Command, Payload};
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client_handle::{ClientHandle, KillReason};
use crate::clients::Clients;
use crate::metrics::Metrics;
use crate::outgoing::OutMessage;
use crate::send_queue::Outbound;
use crate::session;

impl Clients {
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
                for h in self.handles().into_iter().filter(|h| !exclude.contains(&h.id)) {
                    self.deliver(&h, &msg);
                }
            }
            Command::SendToUids { uids, msg } => {
                let Some(msg) = self.to_ws(msg) else { return };
                let targets: HashSet<u64> = {
                    let ix = self.index();
                    uids.iter().flat_map(|u| ix.uid_clients(u)).collect()
                };
                self.deliver_each(targets, &msg);
            }
            Command::SendToGroups { groups, msg, exclude } => {
                let Some(msg) = self.to_ws(msg) else { return };
                let targets: HashSet<u64> = self.index().members(&groups).filter(|c| !exclude.contains(c)).collect();
                self.deliver_each(targets, &msg);
            }
            Command::BindUid { client, uid } => {
                if uid.is_empty() || !self.contains(client) {
                    return self.reject("bind_uid", client);
                }
                self.index_mut().bind_uid(client, uid);
            }
            Command::UnbindUid { client, uid } => self.index_mut().unbind_uid(client, &uid),
            Command::JoinGroup { client, group } => {
                if group.is_empty() || !self.contains(client) {
                    return self.reject("join_group", client);
                }
                self.index_mut().join(client, group);
            }
            Command::LeaveGroup { client, group } => self.index_mut().leave(client, &group),
            Command::Ungroup { group } => self.index_mut().ungroup(&group),
            Command::CloseClient { client, last, close } => {
                let last = match last {
                    Some(p) => match self.to_ws(p) {
                        Some(m) => Some(m),
                        None => return,
                    },
                    None => None,
                };
                match self.get(client) {
                    Some(h) => Self::close(&h, last, close),
                    None => Metrics::inc(&self.metrics.dropped_client_gone),
                }
            }
            Command::DestroyClient { client } => {
                if let Some(h) = self.get(client) {
                    h.kill(KillReason::Destroy);
                }
            }
            Command::CloseUid { uid } => {
                let ids: Vec<u64> = self.index().uid_clients(&uid).collect();
                for h in ids.into_iter().filter_map(|id| self.get(id)) {
                    Self::close(&h, None, None);
                }
            }
            Command::SetSession { client, session } => match (self.get(client), session::parse_object(&session)) {
                (Some(h), Ok(_)) => h.session.lock().expect("session lock").data = Some(session),
                (None, _) => self.reject("set_session", client),
                (_, Err(e)) => self.refuse_session("set_session", client, &e),
            },
            Command::WriteBackSession { client, seq, changed, removed } => {
                let Some(h) = self.get(client) else { return self.reject("session write-back", client) };
                let mut slot = h.session.lock().expect("session lock");
                // Counted as applied even when refused, or the worker would keep re-applying it.
                slot.writes = slot.writes.max(seq);
                match session::write_back(slot.data.as_deref(), &changed, &removed) {
                    Ok(merged) => slot.data = Some(merged),
                    Err(e) => self.refuse_session("session write-back", client, &e),
                }
            }
            Command::UpdateSession { client, patch } => {
                let Some(h) = self.get(client) else { return self.reject("update_session", client) };
                let mut slot = h.session.lock().expect("session lock");
                match session::merge(slot.data.as_deref(), &patch) {
                    Ok(merged) => slot.data = Some(merged),
                    Err(e) => self.refuse_session("update_session", client, &e),
                }
            }
        }
    }

    /// Queues a message for a client without waiting. A full queue marks a slow consumer: the
    /// message is dropped, counted, and the client disconnected (close code 1008).
    fn deliver(&self, handle: &ClientHandle, msg: &OutMessage) {
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

    fn deliver_each(&self, ids: impl IntoIterator<Item = u64>, msg: &OutMessage) {
        for id in ids {
            match self.get(id) {
                Some(h) => self.deliver(&h, msg),
                None => Metrics::inc(&self.metrics.dropped_client_gone),
            }
        }
    }

    fn close(handle: &ClientHandle, last: Option<OutMessage>, close: Option<CloseReason>) {
        if handle.tx.try_send(Outbound::Close { last, close }).is_err() {
            // Queue full or task gone: closing is what was asked, so do it the hard way.
            handle.kill(KillReason::Destroy);
        }
    }

    fn reject(&self, what: &str, client: u64) {
        Metrics::inc(&self.metrics.rejected_commands);
        tracing::debug!(client, "{what}: unknown client or empty name; ignored");
    }

    fn refuse_session(&self, what: &str, client: u64, error: &session::SessionError) {
        Metrics::inc(&self.metrics.rejected_commands);
        tracing::warn!(client, error = %error, "{what}: not a JSON object");
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
