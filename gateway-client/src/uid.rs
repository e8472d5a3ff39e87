//! Uids: binding a client to a user id, and the questions about uids. A uid may have many
//! connections (devices, tabs); a client has at most one uid.
//!
//! Unlike GatewayWorker, [`unbind_uid`](GatewayClient::unbind_uid) honours its uid, and uid
//! listings are complete across gateways.

use std::collections::BTreeMap;

use gw_gateway_links::IndexKind;
use gw_proto::{ClientId, Command, Query, Reply};

use crate::plumbing::{full_id, name, names, unexpected};
use crate::{Answer, ClientError, GatewayClient};

impl GatewayClient {
    /// Binds a client to a uid. Binding again replaces the previous uid.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.bind_uid(&id, "user-42").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "bindUid")]
    pub async fn bind_uid(&self, client: &ClientId, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        self.command_to_client(client, |client| Command::BindUid { client, uid }).await
    }

    /// Unbinds a client from `uid`. If the client is bound to another uid, nothing changes.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.unbind_uid(&id, "user-42").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "unbindUid")]
    pub async fn unbind_uid(&self, client: &ClientId, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        self.command_to_client(client, |client| Command::UnbindUid { client, uid }).await
    }

    /// The uid a client is bound to, if any; `None` for a client that is not connected.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// if let Some(uid) = g.uid_of(&id).await? {
    ///     println!("{id} is {uid}");
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias("getUidByClientId", "get_uid_by_client_id"))]
    pub async fn uid_of(&self, client: &ClientId) -> Result<Option<String>, ClientError> {
        let Some((link, client)) = self.resolve_present(client)? else {
            return Ok(None);
        };
        match self.ask(&link, Query::UidOf { client }).await? {
            Reply::Text(uid) => Ok(uid),
            _ => Err(unexpected(&link)),
        }
    }

    /// Whether any connection is bound to `uid`. `true` is definitive even if some gateway did
    /// not answer; `false` with [`Answer::missing`] non-empty may be wrong.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let online = g.is_uid_online("user-42").await?.complete()?;
    /// # let _ = online;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "isUidOnline")]
    pub async fn is_uid_online(&self, uid: &str) -> Result<Answer<bool>, ClientError> {
        let a = self.client_ids_by_uids(&[uid]).await?;
        let online = a.value.get(uid).is_some_and(|v| !v.is_empty());
        Ok(Answer { value: online, missing: if online { vec![] } else { a.missing } })
    }

    /// For each uid, whether it has a connection.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// for (uid, online) in g.are_uids_online(&["user-1", "user-2"]).await?.complete()? {
    ///     println!("{uid}: {online}");
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "isUidsOnline")]
    pub async fn are_uids_online<S: AsRef<str>>(
        &self,
        uids: &[S],
    ) -> Result<Answer<BTreeMap<String, bool>>, ClientError> {
        Ok(self.client_ids_by_uids(uids).await?.map(|m| m.into_iter().map(|(u, ids)| (u, !ids.is_empty())).collect()))
    }

    /// Every client bound to `uid`, across the cluster.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let ids = g.client_ids_by_uid("user-42").await?.complete()?;
    /// # let _ = ids;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getClientIdByUid", "get_client_ids_by_uid"))]
    pub async fn client_ids_by_uid(&self, uid: &str) -> Result<Answer<Vec<ClientId>>, ClientError> {
        let a = self.client_ids_by_uids(&[uid]).await?;
        Ok(a.map(|mut m| m.remove(uid).unwrap_or_default()))
    }

    /// For each uid, its clients.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let by_uid = g.client_ids_by_uids(&["user-1", "user-2"]).await?.complete()?;
    /// # let _ = by_uid;
    /// # Ok(()) }
    /// ```
    #[doc(alias("batchGetClientIdByUid", "get_client_ids_by_uids"))]
    pub async fn client_ids_by_uids<S: AsRef<str>>(
        &self,
        uids: &[S],
    ) -> Result<Answer<BTreeMap<String, Vec<ClientId>>>, ClientError> {
        let uids = names(uids, "uid")?;
        let links = self.holders(IndexKind::Uid, &uids)?;
        let (replies, missing) = self.gather_from(links, Query::ClientsByUids { uids: uids.clone() }).await?;
        let mut out: BTreeMap<String, Vec<ClientId>> = uids.iter().map(|u| (u.clone(), Vec::new())).collect();
        for (link, reply) in replies {
            let Reply::ClientLists(lists) = reply else { return Err(unexpected(&link)) };
            for (uid, locals) in uids.iter().zip(lists) {
                out.get_mut(uid).expect("seeded").extend(locals.into_iter().map(|c| full_id(&link, c)));
            }
        }
        out.values_mut().for_each(|v| v.sort());
        Ok(Answer { value: out, missing })
    }

    /// Every uid bound to at least one connection.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.uids().await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllUidList", "get_all_uids"))]
    pub async fn uids(&self) -> Result<Answer<Vec<String>>, ClientError> {
        self.gather_strings(Query::Uids).await
    }

    /// Number of distinct uids online (a uid on two gateways counts once).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let users = g.uid_count().await?.complete()?;
    /// # let _ = users;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllUidCount", "get_all_uid_count"))]
    pub async fn uid_count(&self) -> Result<Answer<u64>, ClientError> {
        Ok(self.uids().await?.map(|v| v.len() as u64))
    }
}
