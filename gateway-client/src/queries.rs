//! Questions about the clients of the whole cluster: is one connected, which are, how many.
//! (Questions about uids, groups and sessions are with their families.)
//!
//! Cluster-wide questions answer an [`Answer`] that names the gateways that did not answer in
//! time, so a partial answer is never presented as complete.

use gw_proto::{ClientId, Query, Reply};

use crate::plumbing::{full_id, unexpected};
use crate::{Answer, ClientError, GatewayClient};

impl GatewayClient {
    /// Whether a client is connected. A client of an earlier run of its gateway, or of a
    /// gateway that left the cluster, is not.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// if g.is_online(&id).await? {
    ///     g.send_to_client(&id, "still there?").await?;
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "isOnline")]
    pub async fn is_online(&self, client: &ClientId) -> Result<bool, ClientError> {
        let Some((link, client)) = self.resolve_present(client)? else {
            return Ok(false);
        };
        match self.ask(&link, Query::IsOnline { clients: vec![client] }).await? {
            Reply::Flags(f) => Ok(f.first().copied().unwrap_or(false)),
            _ => Err(unexpected(&link)),
        }
    }

    /// Every connected client.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let answer = g.client_ids().await?;
    /// if !answer.is_complete() {
    ///     eprintln!("no answer from {:?}: the list may be short", answer.missing);
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllClientIdList", "get_all_client_ids"))]
    pub async fn client_ids(&self) -> Result<Answer<Vec<ClientId>>, ClientError> {
        let (replies, missing) = self.gather(Query::ClientIds).await?;
        let mut ids = Vec::new();
        for (link, reply) in replies {
            let Reply::Clients(locals) = reply else { return Err(unexpected(&link)) };
            ids.extend(locals.into_iter().map(|c| full_id(&link, c)));
        }
        ids.sort();
        Ok(Answer { value: ids, missing })
    }

    /// Number of connected clients.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let online = g.client_count().await?.complete()?;
    /// # let _ = online;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllClientCount", "getAllClientIdCount", "get_all_client_count"))]
    pub async fn client_count(&self) -> Result<Answer<u64>, ClientError> {
        let (replies, missing) = self.gather(Query::ClientCount).await?;
        let mut n = 0;
        for (link, reply) in replies {
            let Reply::Counts(c) = reply else { return Err(unexpected(&link)) };
            n += c.first().copied().unwrap_or(0);
        }
        Ok(Answer { value: n, missing })
    }
}
