//! What every call is built from: a client id resolved to the link of its gateway, a command
//! sent to one gateway or fanned out to several, a query gathered from several gateways into one
//! [`Answer`] that names the gateways that did not answer.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use gw_gateway_links::{GatewayLink, IndexKind, RegisterState, SendError};
use gw_proto::{ClientId, Command, Query, Reply};
use serde_json::Value;

use crate::{Answer, ClientError, GatewayClient, Session};

/// Client ids local to one gateway, with the link to it.
pub(crate) type LocalIds = (Arc<GatewayLink>, Vec<u64>);

/// The replies of the gateways that answered, and the gateways that did not.
pub(crate) type Gathered = (Vec<(Arc<GatewayLink>, Reply)>, Vec<String>);

// Hidden: `SendError` is the machinery's; users only ever see the `ClientError` it becomes.
#[doc(hidden)]
impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Down(gateway) => ClientError::GatewayUnavailable(gateway),
            SendError::Timeout(gateway) => ClientError::Timeout(gateway),
            other => ClientError::GatewayUnavailable(other.to_string()),
        }
    }
}

impl GatewayClient {
    /// The link to a client's gateway and the client's number there.
    ///
    /// A gateway that is not linked is [`ClientError::GatewayUnavailable`] while a register
    /// lists it (it may come back with the client still connected) and [`ClientError::ClientGone`]
    /// once no register does (it left the cluster, and its clients with it).
    ///
    /// A client whose gateway stopped and handed it over (issue 25) resolves to the gateway
    /// that adopted it.
    pub(crate) fn resolve(&self, id: &ClientId) -> Result<(Arc<GatewayLink>, u64), ClientError> {
        self.live()?;
        if let Some(adopted) = self.links.adopted(id) {
            return Ok(adopted);
        }
        if self.links.is_adopted(&id.gateway, id.instance) {
            // Adopted by a gateway not linked right now.
            return Err(ClientError::GatewayUnavailable(id.gateway.clone()));
        }
        let Some(link) = self.links.link(&id.gateway) else {
            let heard = self.links.register_state() == RegisterState::Heard;
            if heard && !self.links.known().contains(&id.gateway) {
                return Err(ClientError::ClientGone(id.clone()));
            }
            return Err(ClientError::GatewayUnavailable(id.gateway.clone()));
        };
        if link.instance != id.instance {
            return Err(ClientError::ClientGone(id.clone()));
        }
        Ok((link, id.local))
    }

    /// Like [`resolve`](Self::resolve), but a gone client is `None`: for questions about a
    /// client, it is simply not connected.
    pub(crate) fn resolve_present(&self, id: &ClientId) -> Result<Option<(Arc<GatewayLink>, u64)>, ClientError> {
        match self.resolve(id) {
            Ok(x) => Ok(Some(x)),
            Err(ClientError::ClientGone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Groups client ids by gateway link. Gone clients are skipped; ids of unreachable gateways
    /// are an error.
    pub(crate) fn resolve_many<C: Borrow<ClientId>>(&self, ids: &[C]) -> Result<Vec<LocalIds>, ClientError> {
        let mut by_link: BTreeMap<u64, LocalIds> = BTreeMap::new();
        let mut unreachable = BTreeSet::new();
        for id in ids {
            match self.resolve(id.borrow()) {
                Ok((link, local)) => by_link.entry(link.link_id()).or_insert_with(|| (link, Vec::new())).1.push(local),
                Err(ClientError::ClientGone(_)) => {}
                Err(ClientError::GatewayUnavailable(g)) => {
                    unreachable.insert(g);
                }
                Err(e) => return Err(e),
            }
        }
        if !unreachable.is_empty() {
            return Err(ClientError::Unreachable { gateways: unreachable.into_iter().collect() });
        }
        Ok(by_link
            .into_values()
            .map(|(l, mut v)| {
                v.sort_unstable();
                v.dedup();
                (l, v)
            })
            .collect())
    }

    /// Local ids to exclude, per gateway link. Ids of gone or unreachable gateways need no
    /// exclusion, since those gateways do not get the message.
    pub(crate) fn exclusions<C: Borrow<ClientId>>(&self, exclude: &[C]) -> Result<HashMap<u64, Vec<u64>>, ClientError> {
        self.live()?;
        let mut excluded: HashMap<u64, Vec<u64>> = HashMap::new();
        for id in exclude {
            if let Ok((link, local)) = self.resolve(id.borrow()) {
                excluded.entry(link.link_id()).or_default().push(local);
            }
        }
        Ok(excluded)
    }

    /// [`ClientError::Shutdown`] once [`shutdown`](Self::shutdown) was called, so callers are not
    /// told that every gateway is unreachable instead.
    pub(crate) fn live(&self) -> Result<(), ClientError> {
        if self.links.is_stopped() { Err(ClientError::Shutdown) } else { Ok(()) }
    }

    /// Sends the command `make` builds, given the client's local id, to the client's gateway.
    pub(crate) async fn command_to_client(
        &self,
        client: &ClientId,
        make: impl FnOnce(u64) -> Command,
    ) -> Result<(), ClientError> {
        let _switch = self.links.switch_guard().await;
        let (link, local) = self.resolve(client)?;
        Ok(link.command(make(local)).await?)
    }

    /// Every linked gateway; [`ClientError::NoGateways`] if there is none and no register has
    /// sent a list yet (so it is too early to tell), [`ClientError::AuthenticationFailed`] if a
    /// register refused us meanwhile.
    pub(crate) fn linked(&self) -> Result<Vec<Arc<GatewayLink>>, ClientError> {
        let links = self.links.links();
        if links.is_empty() {
            match self.links.register_state() {
                RegisterState::Heard => {}
                RegisterState::Refused(r) => {
                    return Err(ClientError::AuthenticationFailed { register: r.peer, reason: r.reason });
                }
                RegisterState::Silent => return Err(ClientError::NoGateways),
            }
        }
        Ok(links)
    }

    /// The linked gateways a call about these uids or groups must reach: by the routing index,
    /// only those that hold one of them (or might: see [`crate::RoutingStats`]).
    pub(crate) fn holders(&self, kind: IndexKind, names: &[String]) -> Result<Vec<Arc<GatewayLink>>, ClientError> {
        self.live()?;
        Ok(self.links.route(self.linked()?, kind, names))
    }

    /// Sends a command to each of `links`; reports the gateways that did not get it.
    pub(crate) async fn fan_out(&self, links: Vec<Arc<GatewayLink>>, cmd: Command) -> Result<(), ClientError> {
        self.fan_out_with(links, |_| cmd.clone()).await
    }

    /// Sends each of `links` the command `make` builds for it; reports the gateways that did not
    /// get theirs, and the gateways listed by registers but not linked (they may hold a target).
    pub(crate) async fn fan_out_with(
        &self,
        links: Vec<Arc<GatewayLink>>,
        mut make: impl FnMut(&GatewayLink) -> Command,
    ) -> Result<(), ClientError> {
        let mut missing: BTreeSet<String> = self.links.unreachable().into_iter().collect();
        let _switch = self.links.switch_guard().await;
        // A gateway that handed its clients over since `links` were picked gets nothing more.
        for link in links.into_iter().filter(|l| !l.is_moved()) {
            if link.command(make(&link)).await.is_err() {
                missing.insert(link.address.clone());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ClientError::Unreachable { gateways: missing.into_iter().collect() })
        }
    }

    /// Asks every gateway concurrently; returns the replies and the gateways that did not answer.
    pub(crate) async fn gather(&self, query: Query) -> Result<Gathered, ClientError> {
        self.live()?;
        self.gather_from(self.linked()?, query).await
    }

    /// Asks each of `links` concurrently; returns the replies and the gateways that did not
    /// answer (unlinked ones included).
    pub(crate) async fn gather_from(
        &self,
        links: Vec<Arc<GatewayLink>>,
        query: Query,
    ) -> Result<Gathered, ClientError> {
        let deadline = self.query_timeout;
        let results = join_all(links.iter().map(|l| l.request(query.clone(), deadline))).await;
        let mut replies = Vec::new();
        let mut missing: BTreeSet<String> = self.links.unreachable().into_iter().collect();
        for (link, result) in links.into_iter().zip(results) {
            match result {
                Ok(Reply::Error(reason)) => {
                    tracing::warn!(gateway = %link.address, reason = %reason, "query refused");
                    missing.insert(link.address.clone());
                }
                Ok(reply) => replies.push((link, reply)),
                Err(_) => {
                    missing.insert(link.address.clone());
                }
            }
        }
        Ok((replies, missing.into_iter().collect()))
    }

    /// Asks every gateway for a list of strings; answers the distinct strings of all, sorted.
    pub(crate) async fn gather_strings(&self, query: Query) -> Result<Answer<Vec<String>>, ClientError> {
        let (replies, missing) = self.gather(query).await?;
        merge_strings(replies, missing)
    }

    /// Asks one gateway; its refusal is an error.
    pub(crate) async fn ask(&self, link: &GatewayLink, query: Query) -> Result<Reply, ClientError> {
        match link.request(query, self.query_timeout).await? {
            Reply::Error(reason) => Err(ClientError::Refused { gateway: link.address.clone(), reason }),
            reply => Ok(reply),
        }
    }

    /// Asks the given gateways for sessions; answers them by client id.
    pub(crate) async fn gather_sessions(
        &self,
        links: Vec<Arc<GatewayLink>>,
        query: Query,
    ) -> Result<Answer<BTreeMap<ClientId, Session>>, ClientError> {
        let (replies, missing) = self.gather_from(links, query).await?;
        let mut out = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::Sessions(rows) = reply else { return Err(unexpected(&link)) };
            for (local, bytes) in rows {
                out.insert(full_id(&link, local), parse_session(bytes.as_deref()));
            }
        }
        Ok(Answer { value: out, missing })
    }
}

/// The distinct strings of every reply, sorted.
pub(crate) fn merge_strings(
    replies: Vec<(Arc<GatewayLink>, Reply)>,
    missing: Vec<String>,
) -> Result<Answer<Vec<String>>, ClientError> {
    let mut all = BTreeSet::new();
    for (link, reply) in replies {
        let Reply::Strings(strings) = reply else { return Err(unexpected(&link)) };
        all.extend(strings);
    }
    Ok(Answer { value: all.into_iter().collect(), missing })
}

/// The id of client `local` of the gateway at the other end of `link`.
pub(crate) fn full_id(link: &GatewayLink, local: u64) -> ClientId {
    link.client_id(local)
}

/// A reply that does not fit its query (a protocol bug).
pub(crate) fn unexpected(link: &GatewayLink) -> ClientError {
    ClientError::UnexpectedReply(link.address.clone())
}

/// A session as a gateway keeps it: JSON bytes, absent when the client has none.
pub(crate) fn parse_session(bytes: Option<&[u8]>) -> Session {
    bytes
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

/// A session as JSON bytes for a command.
pub(crate) fn session_bytes(session: &Session) -> Bytes {
    Bytes::from(serde_json::to_vec(session).expect("a JSON map serializes"))
}

/// A uid or group name; empty ones are refused before anything is sent.
pub(crate) fn name(s: &str, what: &'static str) -> Result<String, ClientError> {
    if s.is_empty() { Err(ClientError::EmptyName(what)) } else { Ok(s.to_string()) }
}

/// Several uids or group names, sorted and without duplicates.
pub(crate) fn names<S: AsRef<str>>(list: &[S], what: &'static str) -> Result<Vec<String>, ClientError> {
    let mut out: Vec<String> = list.iter().map(|s| name(s.as_ref(), what)).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}
