//! Sending: to one client, to several, to every client, to the connections of uids and to the
//! members of groups.
//!
//! Text (`&str`, `String`) goes as a WebSocket text frame, bytes (`Vec<u8>`, `Bytes`) as binary;
//! see [`Payload`]. A send reports no per-connection outcome (as in GatewayWorker): a uid or group
//! with no connection is not an error.

use std::borrow::Borrow;

use gw_gateway_links::IndexKind;
use gw_proto::{ClientId, Command, Payload};

use crate::plumbing::names;
use crate::{ClientError, GatewayClient};

impl GatewayClient {
    /// Sends a message to one client.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_client(&id, "hello").await?;
    /// g.send_to_client(&id, vec![0u8, 1, 2]).await?; // binary frame
    /// # Ok(()) }
    /// ```
    #[doc(alias = "sendToClient")]
    pub async fn send_to_client(&self, client: &ClientId, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.command_to_client(client, |local| Command::SendToClients { clients: vec![local], msg: msg.into() }).await
    }

    /// Sends a message to each listed client (GatewayWorker's `sendToAll` with a client id list).
    /// Duplicate ids receive it once; gone clients are skipped. The list holds ids or references
    /// to them.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, a: gw_gateway_client::ClientId, b: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_clients(&[a, b], "hi, both").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_clients<C: Borrow<ClientId>>(
        &self,
        clients: &[C],
        msg: impl Into<Payload>,
    ) -> Result<(), ClientError> {
        let msg = msg.into();
        let _switch = self.links.switch_guard().await;
        for (link, clients) in self.resolve_many(clients)? {
            link.command(Command::SendToClients { clients, msg: msg.clone() }).await?;
        }
        Ok(())
    }

    /// Sends a message to every connected client of the cluster.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_all(r#"{"type":"notice","text":"maintenance at 22:00"}"#).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "sendToAll")]
    pub async fn send_to_all(&self, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_all_except::<ClientId>(msg, &[]).await
    }

    /// Sends a message to every connected client except the listed ones.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, me: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_all_except(r#"{"type":"joined"}"#, &[me]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_all_except<C: Borrow<ClientId>>(
        &self,
        msg: impl Into<Payload>,
        exclude: &[C],
    ) -> Result<(), ClientError> {
        let msg = msg.into();
        let mut excluded = self.exclusions(exclude)?;
        self.fan_out_with(self.linked()?, |link| {
            let exclude = excluded.remove(&link.link_id()).unwrap_or_default();
            Command::SendToAll { msg: msg.clone(), exclude }
        })
        .await
    }

    /// Sends a message to every connection bound to `uid`, on every gateway that has one.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_uid("user-42", "you have mail").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "sendToUid")]
    pub async fn send_to_uid(&self, uid: &str, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_uids(&[uid], msg).await
    }

    /// Sends a message to every connection of any of these uids (once per connection).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_uids(&["user-1", "user-2"], "meeting in 5 minutes").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_uids<S: AsRef<str>>(&self, uids: &[S], msg: impl Into<Payload>) -> Result<(), ClientError> {
        let uids = names(uids, "uid")?;
        let links = self.holders(IndexKind::Uid, &uids)?;
        self.fan_out(links, Command::SendToUids { uids, msg: msg.into() }).await
    }

    /// Sends a message to every member of `group`, on every gateway.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_group("room-1", "hello, room").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "sendToGroup")]
    pub async fn send_to_group(&self, group: &str, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_groups_except::<_, ClientId>(&[group], msg, &[]).await
    }

    /// Sends a message to the members of several groups; a client in two of them receives it once.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_groups(&["room-1", "room-2"], "once per client").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
        msg: impl Into<Payload>,
    ) -> Result<(), ClientError> {
        self.send_to_groups_except::<_, ClientId>(groups, msg, &[]).await
    }

    /// [`send_to_groups`](Self::send_to_groups) except the listed clients (GatewayWorker's
    /// `sendToGroup` with `$exclude_client_id`).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, me: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_groups_except(&["room-1"], "someone said hi", &[me]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_groups_except<S: AsRef<str>, C: Borrow<ClientId>>(
        &self,
        groups: &[S],
        msg: impl Into<Payload>,
        exclude: &[C],
    ) -> Result<(), ClientError> {
        let groups = names(groups, "group")?;
        let msg = msg.into();
        let mut excluded = self.exclusions(exclude)?;
        self.fan_out_with(self.holders(IndexKind::Group, &groups)?, |link| {
            let exclude = excluded.remove(&link.link_id()).unwrap_or_default();
            Command::SendToGroups { groups: groups.clone(), msg: msg.clone(), exclude }
        })
        .await
    }
}
