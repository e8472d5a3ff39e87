//! Answering the queries workers and gateway clients send about this gateway's clients (online
//! flags, uid and group listings and counts, sessions, connection rows), and the session writes
//! asked as queries. Listings are sorted, so answers from several gateways merge the same way
//! every time. An answer too large for one internal frame is replaced by an error saying so,
//! rather than left for the link's writer to drop (the asker would wait out its deadline).

use std::sync::atomic::Ordering;
use std::time::Duration;

use gw_proto::{ConnectionInfo, Query, Reply, codec};

use crate::clients::Clients;
use crate::commands::SessionWrite;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// Oversize answers are logged at most once per this window (each is counted).
static OVERSIZE_LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// What a `FromGateway::Reply` frame adds around its answer (variant tag, request id), with room
/// to spare.
const REPLY_OVERHEAD: usize = 32;

impl Clients {
    /// Answers one query for a link whose frames hold at most `max_frame` bytes: the answer, or
    /// an error naming its size and the limit if it would not fit in one frame.
    pub(crate) fn answer_within(&self, query: Query, max_frame: usize) -> Reply {
        let reply = self.answer(query);
        self.fit(reply, max_frame)
    }

    /// `reply`, or an error naming its size and the limit if it would not fit in one frame.
    pub(crate) fn fit(&self, reply: Reply, max_frame: usize) -> Reply {
        let limit = max_frame.saturating_sub(REPLY_OVERHEAD);
        match codec::encoded_len(&reply) {
            Ok(len) if len <= limit => reply,
            Ok(len) => {
                Metrics::inc(&self.metrics.replies_too_large);
                if let Some(unlogged) = OVERSIZE_LOGGED.admit() {
                    tracing::warn!(
                        len,
                        max_frame,
                        unlogged,
                        "answer too large for one internal frame; answered with an error"
                    );
                }
                Reply::Error(format!(
                    "the answer is {len} bytes, more than one internal frame holds (link.max_frame {max_frame} bytes); ask about fewer clients (a group, a list)"
                ))
            }
            Err(e) => Reply::Error(format!("the answer cannot be encoded: {e}")),
        }
    }

    /// Answers one query about this gateway's clients.
    pub(crate) fn answer(&self, query: Query) -> Reply {
        Metrics::inc(&self.metrics.queries);
        match query {
            Query::IsOnline { clients } => Reply::Flags(clients.iter().map(|c| self.contains(*c)).collect()),
            Query::ClientsByUids { uids } => {
                let ix = self.index();
                Reply::ClientLists(uids.iter().map(|u| sorted(ix.uid_clients(u))).collect())
            }
            Query::UidOf { client } => Reply::Text(self.index().uid_of(client).map(str::to_string)),
            Query::ClientsByGroups { groups } => {
                let ix = self.index();
                Reply::ClientLists(groups.iter().map(|g| sorted(ix.group_clients(g))).collect())
            }
            Query::ClientCountByGroups { groups } => {
                let ix = self.index();
                Reply::Counts(groups.iter().map(|g| ix.group_size(g) as u64).collect())
            }
            Query::UidsByGroup { group } => Reply::Strings(self.index().distinct_uids(&group)),
            Query::GroupIds => Reply::Strings(sorted_strings(self.index().groups())),
            Query::GroupClients => {
                let ix = self.index();
                let mut all: Vec<(String, Vec<u64>)> =
                    ix.groups().map(|g| (g.to_string(), sorted(ix.group_clients(g)))).collect();
                all.sort();
                Reply::NamedClients(all)
            }
            Query::GroupUids => {
                let ix = self.index();
                let mut all: Vec<(String, Vec<String>)> =
                    ix.groups().map(|g| (g.to_string(), ix.distinct_uids(g))).collect();
                all.sort();
                Reply::NamedStrings(all)
            }
            Query::ClientIds => Reply::Clients(sorted(self.ids())),
            Query::ClientCount => Reply::Counts(vec![self.client_count() as u64]),
            Query::Uids => Reply::Strings(sorted_strings(self.index().uids())),
            Query::Sessions { clients, group } => {
                let ids: Vec<u64> = match (clients, group) {
                    (Some(list), _) => list,
                    (None, Some(g)) => sorted(self.index().group_clients(&g)),
                    (None, None) => sorted(self.ids()),
                };
                Reply::Sessions(ids.into_iter().filter_map(|id| self.get(id).map(|h| (id, h.session()))).collect())
            }
            Query::Connections => {
                let handles = self.handles();
                let ix = self.index();
                let mut rows: Vec<ConnectionInfo> = handles
                    .iter()
                    .map(|h| ConnectionInfo {
                        client: h.id,
                        client_addr: h.info.client_addr.clone(),
                        uid: ix.uid_of(h.id).map(str::to_string),
                        groups: sorted_strings(ix.groups_of(h.id)),
                        bytes_in: h.bytes_in.load(Ordering::Relaxed),
                        bytes_out: h.bytes_out.load(Ordering::Relaxed),
                        queue_len: h.tx.len() as u64,
                    })
                    .collect();
                rows.sort_by_key(|r| r.client);
                Reply::Connections(rows)
            }
            Query::SetSession { client, session } => self.write_session(client, SessionWrite::Set(session)),
            Query::UpdateSession { client, patch } => self.write_session(client, SessionWrite::Update(patch)),
            // Answered by the Pusher homes (`peer.rs`); nothing here without them.
            Query::PusherMembers { .. } => Reply::NamedStrings(Vec::new()),
        }
    }
}

fn sorted(it: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = it.collect();
    v.sort_unstable();
    v
}

fn sorted_strings<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = it.map(str::to_string).collect();
    v.sort();
    v
}
