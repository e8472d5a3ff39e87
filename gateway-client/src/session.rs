//! Sessions: a JSON object per client, kept by its gateway and handed to the worker's handlers
//! with every event. [`set_session`](GatewayClient::set_session) replaces it,
//! [`update_session`](GatewayClient::update_session) merges into it.

use std::collections::BTreeMap;

use gw_gateway_links::IndexKind;
use gw_proto::{ClientId, Query, Refusal, Reply};
use serde_json::{Map, Value};

use crate::plumbing::{name, parse_session, session_bytes, unexpected};
use crate::{Answer, ClientError, GatewayClient};

/// A client's session: a JSON object.
pub type Session = Map<String, Value>;

impl GatewayClient {
    /// Replaces a client's session. The gateway answers: a session over its
    /// `max_session_bytes` is [`ClientError::WriteRefused`] and the session stays as it was.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// let mut session = gw_gateway_client::Session::new();
    /// session.insert("name".into(), "alice".into());
    /// g.set_session(&id, &session).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "setSession")]
    pub async fn set_session(&self, client: &ClientId, session: &Session) -> Result<(), ClientError> {
        let session = session_bytes(session);
        self.write_session(client, |client| Query::SetSession { client, session }).await
    }

    /// Deep-merges `patch` into a client's session (`null` values delete keys). The gateway
    /// answers: a merge that would grow the session past its `max_session_bytes` is
    /// [`ClientError::WriteRefused`] and the session stays as it was.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// let serde_json::Value::Object(patch) = serde_json::json!({"cart": {"items": 3}, "coupon": null}) else {
    ///     unreachable!()
    /// };
    /// g.update_session(&id, &patch).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "updateSession")]
    pub async fn update_session(&self, client: &ClientId, patch: &Session) -> Result<(), ClientError> {
        let patch = session_bytes(patch);
        self.write_session(client, |client| Query::UpdateSession { client, patch }).await
    }

    /// A session write asked as a question: `Done`, or the gateway's refusal as a typed error.
    async fn write_session(&self, client: &ClientId, make: impl FnOnce(u64) -> Query) -> Result<(), ClientError> {
        let (link, local) = self.resolve(client)?;
        match self.ask(&link, make(local)).await? {
            Reply::Done => Ok(()),
            // Like every write, one to a client that has just left does nothing (documented).
            Reply::Refused(Refusal::ClientGone) => Ok(()),
            Reply::Refused(refusal) => Err(ClientError::WriteRefused { gateway: link.address.clone(), refusal }),
            _ => Err(unexpected(&link)),
        }
    }

    /// A client's session; `None` if the client is not connected.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: gw_gateway_client::ClientId) -> Result<(), gw_gateway_client::ClientError> {
    /// let name = g.session(&id).await?.and_then(|s| s.get("name").cloned());
    /// # let _ = name;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getSession", "get_session"))]
    pub async fn session(&self, client: &ClientId) -> Result<Option<Session>, ClientError> {
        let Some((link, client)) = self.resolve_present(client)? else {
            return Ok(None);
        };
        match self.ask(&link, Query::Sessions { clients: Some(vec![client]), group: None }).await? {
            Reply::Sessions(rows) => Ok(rows.into_iter().next().map(|(_, b)| parse_session(b.as_deref()))),
            _ => Err(unexpected(&link)),
        }
    }

    /// Every connected client with its session (an empty object if it has none).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// for (id, session) in g.sessions().await?.complete()? {
    ///     println!("{id}: {}", serde_json::Value::Object(session));
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias("getAllClientSessions", "getAllClientInfo", "get_all_client_sessions"))]
    pub async fn sessions(&self) -> Result<Answer<BTreeMap<ClientId, Session>>, ClientError> {
        self.live()?;
        self.gather_sessions(self.linked()?, Query::Sessions { clients: None, group: None }).await
    }

    /// The sessions of a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// let sessions = g.sessions_by_group("room-1").await?.complete()?;
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    #[doc(alias("getClientSessionsByGroup", "getClientInfoByGroup", "get_client_sessions_by_group"))]
    pub async fn sessions_by_group(&self, group: &str) -> Result<Answer<BTreeMap<ClientId, Session>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(IndexKind::Group, std::slice::from_ref(&group))?;
        self.gather_sessions(links, Query::Sessions { clients: None, group: Some(group) }).await
    }
}
