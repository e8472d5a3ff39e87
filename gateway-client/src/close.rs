//! Closing connections: one client (with a close frame, or dropped at once) or every connection
//! of a uid.

use gw_gateway_links::IndexKind;
use gw_proto::{ClientId, CloseReason, Command, Payload};

use crate::plumbing::name;
use crate::{ClientError, GatewayClient};

impl GatewayClient {
    /// Closes a client with a normal close frame.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.close_client(&id).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "closeClient")]
    pub async fn close_client(&self, client: &ClientId) -> Result<(), ClientError> {
        self.close_client_with(client, None, None).await
    }

    /// Closes a client, optionally sending a last message first and with a close code and reason.
    /// A reason over 123 bytes (what a WebSocket close frame carries) is cut at a char boundary.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// use gw_gateway_client::CloseReason;
    /// let kicked = CloseReason { code: 4000, reason: "kicked".into() };
    /// g.close_client_with(&id, Some("bye".into()), Some(kicked)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_client_with(
        &self,
        client: &ClientId,
        last: Option<Payload>,
        close: Option<CloseReason>,
    ) -> Result<(), ClientError> {
        self.command_to_client(client, |client| Command::CloseClient { client, last, close }).await
    }

    /// Drops a client's connection at once, without a close frame.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.destroy_client(&id).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "destoryClient")]
    pub async fn destroy_client(&self, client: &ClientId) -> Result<(), ClientError> {
        self.command_to_client(client, |client| Command::DestroyClient { client }).await
    }

    /// Closes every connection of `uid` (with a close frame), on every gateway.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.close_uid("user-42").await?; // logged out on every device
    /// # Ok(()) }
    /// ```
    pub async fn close_uid(&self, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        let links = self.holders(IndexKind::Uid, std::slice::from_ref(&uid))?;
        self.fan_out(links, Command::CloseUid { uid }).await
    }
}
