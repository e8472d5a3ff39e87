//! The Gateway API: every call of GatewayWorker's `Lib\Gateway` and GatewayClient.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use gw_config::LinkConfig;
use gw_proto::{ClientId, CloseReason, Command, Payload, Query, Reply, Role};
use serde_json::{Map, Value};

use crate::link::GatewayLink;
use crate::links::{GatewayLinks, LinksOptions, NoEvents};
use crate::routing::{Kind, RoutingStats};
use crate::{Answer, ClientError};

/// Client ids local to one gateway, with the link to it.
type LocalIds = (Arc<GatewayLink>, Vec<u64>);

/// A client's session: a JSON object.
pub type Session = Map<String, Value>;

/// Stops the links when the last handle of a client that owns them is dropped.
#[derive(Debug)]
struct Guard(Arc<GatewayLinks>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A cheap, cloneable handle to the cluster. See the [crate docs](crate) for an example.
///
/// # Errors and no-ops
///
/// - A string that is not a client id: [`ClientError::InvalidClientId`]; an empty uid or group
///   name: [`ClientError::EmptyName`]. Either fails the whole call before anything is sent.
/// - A client id of an earlier run of its gateway: [`ClientError::ClientGone`] for calls on that
///   client, `false` / `None` from [`is_online`](Self::is_online) and
///   [`get_session`](Self::get_session), skipped in id lists.
/// - A well-formed id of a client that is not connected (any more): commands are no-ops (the
///   gateway counts them), queries answer `false` / `None`.
/// - A gateway that is not connected: [`ClientError::GatewayUnavailable`] for calls on one of its
///   clients; cluster-wide calls still reach the others and name it ([`Answer::missing`],
///   [`ClientError::Unreachable`]).
/// - After [`shutdown`](Self::shutdown): [`ClientError::Shutdown`].
#[derive(Debug, Clone)]
pub struct GatewayClient {
    links: Arc<GatewayLinks>,
    query_timeout: Duration,
    /// Set when this client started its links itself (not for [`GatewayClient::over`]).
    _guard: Option<Arc<Guard>>,
}

/// Options for [`GatewayClient`]; start with [`GatewayClient::builder`].
#[derive(Debug, Clone)]
pub struct GatewayClientBuilder {
    registers: Vec<String>,
    secret: String,
    name: String,
    link: LinkConfig,
    query_timeout: Duration,
    connect_timeout: Duration,
}

impl GatewayClientBuilder {
    /// The shared cluster secret (empty only for a loopback-only development cluster).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// Node name shown in gateway logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Deadline for each query to each gateway (default 5 s).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) waits for the registers and gateways (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Link tuning (frame size, reconnect backoff, heartbeats, the routing index).
    pub fn link_config(mut self, link: LinkConfig) -> Self {
        self.link = link;
        self
    }

    /// Route uid and group calls only to the gateways that hold those uids and groups (default
    /// on; see the crate docs, "Routing index"). Off sends each of them to every gateway.
    pub fn routing_index(mut self, on: bool) -> Self {
        self.link.routing_index = on;
        self
    }

    /// Starts the client without waiting: calls fail with [`ClientError::NoGateways`] until a
    /// register has answered, and reach each gateway once it is linked. For daemons that must
    /// come up while the cluster is still starting (the HTTP API).
    ///
    /// ```no_run
    /// # async fn f() {
    /// let g = gw_gateway_client::GatewayClient::builder(["127.0.0.1:1236"]).start();
    /// let ready = g.wait_ready(std::time::Duration::from_secs(5)).await;
    /// # let _ = ready; }
    /// ```
    pub fn start(self) -> GatewayClient {
        let links = GatewayLinks::start(
            LinksOptions {
                registers: self.registers,
                secret: self.secret,
                name: self.name,
                role: Role::Client,
                link: self.link,
            },
            NoEvents,
        );
        GatewayClient { _guard: Some(Arc::new(Guard(links.clone()))), links, query_timeout: self.query_timeout }
    }

    /// Starts the client and waits until a register has answered and every listed gateway is
    /// connected, or the connect timeout passes. Fails at once with
    /// [`ClientError::AuthenticationFailed`] when every register refuses the handshake (a wrong
    /// secret), and with [`ClientError::NoGateways`] only if no register answered at all; gateways that are still unreachable are retried in the
    /// background and reported by the calls that need them.
    pub async fn connect(self) -> Result<GatewayClient, ClientError> {
        let timeout = self.connect_timeout;
        let client = self.start();
        let mut heard = client.links.heard_register.subscribe();
        let mut refusals = client.links.refusals.subscribe();
        let registers = client.links.options().registers.len();
        // A refusal by every register is final (the secret is wrong): say so at once instead of
        // waiting out the timeout and blaming the network.
        tokio::select! {
            heard = tokio::time::timeout(timeout, heard.wait_for(|h| *h)) => {
                if heard.is_err() {
                    return Err(ClientError::NoGateways);
                }
            }
            Ok(refused) = refusals.wait_for(|r| registers > 0 && r.len() >= registers) => {
                let (register, reason) = refused.values().next().cloned().unwrap_or_default();
                return Err(ClientError::AuthenticationFailed { register, reason });
            }
        }
        client.links.wait_until(timeout, |connected, known| connected >= known).await;
        Ok(client)
    }
}

impl GatewayClient {
    /// Options for a client of the cluster whose registers are at `registers` (`host:port`).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gw_gateway_client::ClientError> {
    /// let g = gw_gateway_client::GatewayClient::builder(["10.0.0.5:1236", "10.0.0.6:1236"])
    ///     .secret("the cluster secret")
    ///     .query_timeout(std::time::Duration::from_secs(2))
    ///     .connect()
    ///     .await?;
    /// # let _ = g;
    /// # Ok(()) }
    /// ```
    pub fn builder<I, S>(registers: I) -> GatewayClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GatewayClientBuilder {
            registers: registers.into_iter().map(Into::into).collect(),
            secret: String::new(),
            name: "gateway-client".into(),
            link: LinkConfig::default(),
            query_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The Gateway API over links the caller keeps itself: a business worker's own links (which
    /// also take client events), so its handlers reach the cluster through the same links.
    /// Dropping this handle does not stop the links; their owner does.
    ///
    /// ```no_run
    /// # fn f(links: std::sync::Arc<gw_gateway_client::GatewayLinks>) {
    /// let gateway = gw_gateway_client::GatewayClient::over(links, std::time::Duration::from_secs(5));
    /// # let _ = gateway; }
    /// ```
    pub fn over(links: Arc<GatewayLinks>, query_timeout: Duration) -> Self {
        Self { links, query_timeout, _guard: None }
    }

    /// Advertised addresses of the gateways connected now.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// println!("linked to {:?}", g.connected_gateways());
    /// # Ok(()) }
    /// ```
    pub fn connected_gateways(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links.links().iter().map(|l| l.address.clone()).collect();
        v.sort();
        v
    }

    /// Waits until a register has answered and every gateway it lists is connected; false on
    /// timeout. A worker reports itself ready after this.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// if !g.wait_ready(std::time::Duration::from_secs(5)).await {
    ///     eprintln!("some listed gateways are not linked yet");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.links.wait_ready(timeout).await
    }

    /// What the routing index holds and did: uid and group calls routed, gateway messages
    /// saved, calls that went nowhere because no gateway holds their uids or groups.
    ///
    /// ```no_run
    /// # fn f(g: gw_gateway_client::GatewayClient) {
    /// let stats = g.routing_stats();
    /// println!("{} routed calls skipped {} gateway messages", stats.routed, stats.skipped);
    /// # }
    /// ```
    pub fn routing_stats(&self) -> RoutingStats {
        self.links.routing_stats()
    }

    /// Number of gateways connected now.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// println!("{} gateways linked", g.gateway_count());
    /// # Ok(()) }
    /// ```
    pub fn gateway_count(&self) -> usize {
        self.links.links().len()
    }

    /// Waits until at least `n` gateways are connected; false on timeout.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let all = g.wait_for_gateways(2, std::time::Duration::from_secs(5)).await;
    /// # let _ = all;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_gateways(&self, n: usize, timeout: Duration) -> bool {
        self.links.wait_until(timeout, |connected, _| connected >= n).await
    }

    /// Stops every link. Other clones stop working too.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.shutdown().await;
    /// assert!(g.send_to_all("x").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) {
        // Graceful first: links stop reading, send their final messages and flush.
        self.links.close().await;
    }

    // ----- plumbing -------------------------------------------------------------------------

    fn resolve(&self, client_id: &str) -> Result<(Arc<GatewayLink>, u64), ClientError> {
        let id: ClientId = client_id.parse()?;
        self.live()?;
        let link = self.links.link(&id.gateway).ok_or_else(|| ClientError::GatewayUnavailable(id.gateway.clone()))?;
        if link.instance != id.instance {
            return Err(ClientError::ClientGone(client_id.to_string()));
        }
        Ok((link, id.local))
    }

    /// Like [`resolve`](Self::resolve), but a client of an earlier gateway run is `None`: for
    /// questions about a client, it is simply gone.
    fn resolve_present(&self, client_id: &str) -> Result<Option<(Arc<GatewayLink>, u64)>, ClientError> {
        match self.resolve(client_id) {
            Ok(x) => Ok(Some(x)),
            Err(ClientError::ClientGone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Groups client ids by gateway link. Ids of gone gateway instances are skipped (their
    /// clients are gone); ids of unreachable gateways are an error.
    fn resolve_many<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<LocalIds>, ClientError> {
        let mut by_link: BTreeMap<u64, (Arc<GatewayLink>, Vec<u64>)> = BTreeMap::new();
        let mut unreachable = BTreeSet::new();
        for id in ids {
            match self.resolve(id.as_ref()) {
                Ok((link, local)) => by_link.entry(link.id).or_insert_with(|| (link, Vec::new())).1.push(local),
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

    /// Local ids to exclude, per gateway link. A malformed id is an error (a mangled id would let
    /// the client it meant receive the message); ids of gone or unreachable gateways need no
    /// exclusion, since those gateways do not get the message.
    fn exclusions<S: AsRef<str>>(&self, exclude: &[S]) -> Result<HashMap<u64, Vec<u64>>, ClientError> {
        self.live()?;
        let mut excluded: HashMap<u64, Vec<u64>> = HashMap::new();
        for id in exclude {
            match self.resolve(id.as_ref()) {
                Ok((link, local)) => excluded.entry(link.id).or_default().push(local),
                Err(e @ ClientError::InvalidClientId(_)) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(excluded)
    }

    /// [`ClientError::Shutdown`] once [`shutdown`](Self::shutdown) was called, so callers are not
    /// told that every gateway is unreachable instead.
    fn live(&self) -> Result<(), ClientError> {
        if self.links.is_stopped() { Err(ClientError::Shutdown) } else { Ok(()) }
    }

    async fn command(&self, link: &GatewayLink, cmd: Command) -> Result<(), ClientError> {
        link.command(cmd).await
    }

    /// Sends the command `make` builds, given the client's local id, to the client's gateway.
    async fn command_to_client(&self, client_id: &str, make: impl FnOnce(u64) -> Command) -> Result<(), ClientError> {
        let (link, client) = self.resolve(client_id)?;
        self.command(&link, make(client)).await
    }

    /// Every linked gateway; [`ClientError::NoGateways`] if there is none and no register has sent
    /// a list yet (so it is too early to tell), [`ClientError::AuthenticationFailed`] if a register
    /// refused us meanwhile.
    fn linked(&self) -> Result<Vec<Arc<GatewayLink>>, ClientError> {
        let links = self.links.links();
        if links.is_empty() && !*self.links.heard_register.borrow() {
            if let Some((register, reason)) = self.links.refusals.borrow().values().next().cloned() {
                return Err(ClientError::AuthenticationFailed { register, reason });
            }
            return Err(ClientError::NoGateways);
        }
        Ok(links)
    }

    /// The linked gateways a call about these uids or groups must reach: by the routing index,
    /// only those that hold one of them (or might: see [`crate::RoutingStats`]).
    fn holders(&self, kind: Kind, names: &[String]) -> Result<Vec<Arc<GatewayLink>>, ClientError> {
        self.live()?;
        Ok(self.links.routing.route(self.linked()?, kind, names))
    }

    /// Sends a command to each of `links`; reports the gateways that did not get it.
    async fn fan_out(&self, links: Vec<Arc<GatewayLink>>, cmd: Command) -> Result<(), ClientError> {
        self.fan_out_with(links, |_| cmd.clone()).await
    }

    /// Sends each of `links` the command `make` builds for it; reports the gateways that did not
    /// get theirs, and the gateways listed by registers but not linked (they may hold a target).
    async fn fan_out_with(
        &self,
        links: Vec<Arc<GatewayLink>>,
        mut make: impl FnMut(&GatewayLink) -> Command,
    ) -> Result<(), ClientError> {
        let mut missing: BTreeSet<String> = self.links.unreachable().into_iter().collect();
        for link in links {
            if self.command(&link, make(&link)).await.is_err() {
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
    async fn gather(&self, query: Query) -> Result<(Vec<(Arc<GatewayLink>, Reply)>, Vec<String>), ClientError> {
        self.live()?;
        self.gather_from(self.linked()?, query).await
    }

    /// Asks each of `links` concurrently; returns the replies and the gateways that did not
    /// answer (unlinked ones included).
    async fn gather_from(
        &self,
        links: Vec<Arc<GatewayLink>>,
        query: Query,
    ) -> Result<(Vec<(Arc<GatewayLink>, Reply)>, Vec<String>), ClientError> {
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
    async fn gather_strings(&self, query: Query) -> Result<Answer<Vec<String>>, ClientError> {
        let (replies, missing) = self.gather(query).await?;
        Self::merge_strings(replies, missing)
    }

    /// The distinct strings of every reply, sorted.
    fn merge_strings(
        replies: Vec<(Arc<GatewayLink>, Reply)>,
        missing: Vec<String>,
    ) -> Result<Answer<Vec<String>>, ClientError> {
        let mut all = BTreeSet::new();
        for (link, reply) in replies {
            let Reply::Strings(strings) = reply else { return Err(Self::unexpected(&link)) };
            all.extend(strings);
        }
        Ok(Answer { value: all.into_iter().collect(), missing })
    }

    async fn ask(&self, link: &GatewayLink, query: Query) -> Result<Reply, ClientError> {
        match link.request(query, self.query_timeout).await? {
            Reply::Error(reason) => Err(ClientError::Refused { gateway: link.address.clone(), reason }),
            reply => Ok(reply),
        }
    }

    fn full_id(link: &GatewayLink, local: u64) -> String {
        ClientId::new(link.address.clone(), link.instance, local).to_string()
    }

    fn unexpected(link: &GatewayLink) -> ClientError {
        ClientError::UnexpectedReply(link.address.clone())
    }

    // ----- sending --------------------------------------------------------------------------

    /// Sends a message to one client. Text (`&str`, `String`) goes as a WebSocket text frame,
    /// bytes (`Vec<u8>`, `Bytes`) as binary; see [`Payload`].
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_client(id, "hello").await?;
    /// g.send_to_client(id, vec![0u8, 1, 2]).await?; // binary frame
    /// # Ok(()) }
    /// ```
    pub async fn send_to_client(&self, client_id: &str, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.command_to_client(client_id, |local| Command::SendToClients { clients: vec![local], msg: msg.into() })
            .await
    }

    /// Sends a message to each listed client (GatewayWorker's `sendToAll` with a client id list).
    /// Duplicate ids receive it once; ids whose gateway restarted are skipped (those clients are
    /// gone).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_clients(&[id, "MTI3LjAuMC4xOjI5MDA.1f.2"], "hi, both").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_clients<S: AsRef<str>>(
        &self,
        client_ids: &[S],
        msg: impl Into<Payload>,
    ) -> Result<(), ClientError> {
        let msg = msg.into();
        for (link, clients) in self.resolve_many(client_ids)? {
            self.command(&link, Command::SendToClients { clients, msg: msg.clone() }).await?;
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
    pub async fn send_to_all(&self, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_all_except::<&str>(msg, &[]).await
    }

    /// Sends a message to every connected client except the listed ones.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_all_except(r#"{"type":"joined"}"#, &[id]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_all_except<S: AsRef<str>>(
        &self,
        msg: impl Into<Payload>,
        exclude: &[S],
    ) -> Result<(), ClientError> {
        let msg = msg.into();
        let mut excluded = self.exclusions(exclude)?;
        self.fan_out_with(self.linked()?, |link| {
            let exclude = excluded.remove(&link.id).unwrap_or_default();
            Command::SendToAll { msg: msg.clone(), exclude }
        })
        .await
    }

    /// Sends a message to every connection bound to `uid`, on every gateway that has one.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_uid("user-42", "you have mail").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_uid(&self, uid: &str, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_uids(&[uid], msg).await
    }

    /// Sends a message to every connection of any of these uids (once per connection).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_uids(&["user-1", "user-2"], "meeting in 5 minutes").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_uids<S: AsRef<str>>(&self, uids: &[S], msg: impl Into<Payload>) -> Result<(), ClientError> {
        let uids = names(uids, "uid")?;
        let links = self.holders(Kind::Uid, &uids)?;
        self.fan_out(links, Command::SendToUids { uids, msg: msg.into() }).await
    }

    /// Sends a message to every member of `group`, on every gateway.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_group("room-1", "hello, room").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_group(&self, group: &str, msg: impl Into<Payload>) -> Result<(), ClientError> {
        self.send_to_groups_except::<_, &str>(&[group], msg, &[]).await
    }

    /// Sends a message to the members of several groups; a client in two of them receives it once.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_groups(&["room-1", "room-2"], "once per client").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
        msg: impl Into<Payload>,
    ) -> Result<(), ClientError> {
        self.send_to_groups_except::<_, &str>(groups, msg, &[]).await
    }

    /// [`send_to_groups`](Self::send_to_groups) except the listed clients.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.send_to_groups_except(&["room-1"], "someone said hi", &[id]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_groups_except<S: AsRef<str>, E: AsRef<str>>(
        &self,
        groups: &[S],
        msg: impl Into<Payload>,
        exclude: &[E],
    ) -> Result<(), ClientError> {
        let groups = names(groups, "group")?;
        let msg = msg.into();
        let mut excluded = self.exclusions(exclude)?;
        self.fan_out_with(self.holders(Kind::Group, &groups)?, |link| {
            let exclude = excluded.remove(&link.id).unwrap_or_default();
            Command::SendToGroups { groups: groups.clone(), msg: msg.clone(), exclude }
        })
        .await
    }

    // ----- uids -----------------------------------------------------------------------------

    /// Binds a client to a uid. A uid may have many clients; a client has at most one uid, so
    /// binding again replaces the previous uid.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.bind_uid(id, "user-42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind_uid(&self, client_id: &str, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        self.command_to_client(client_id, |client| Command::BindUid { client, uid }).await
    }

    /// Unbinds a client from `uid`. Unlike GatewayWorker, the uid is honoured: if the client is
    /// bound to another uid, nothing changes.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.unbind_uid(id, "user-42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unbind_uid(&self, client_id: &str, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        self.command_to_client(client_id, |client| Command::UnbindUid { client, uid }).await
    }

    /// Whether any connection is bound to `uid`. `true` is definitive even if some gateway did
    /// not answer; `false` with [`Answer::missing`] non-empty may be wrong.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let online = g.is_uid_online("user-42").await?.complete()?;
    /// # let _ = online;
    /// # Ok(()) }
    /// ```
    pub async fn is_uid_online(&self, uid: &str) -> Result<Answer<bool>, ClientError> {
        let a = self.get_client_ids_by_uids(&[uid]).await?;
        let online = a.value.get(uid).is_some_and(|v| !v.is_empty());
        Ok(Answer { value: online, missing: if online { vec![] } else { a.missing } })
    }

    /// For each uid, whether it has a connection.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// for (uid, online) in g.are_uids_online(&["user-1", "user-2"]).await?.complete()? {
    ///     println!("{uid}: {online}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn are_uids_online<S: AsRef<str>>(
        &self,
        uids: &[S],
    ) -> Result<Answer<BTreeMap<String, bool>>, ClientError> {
        Ok(self
            .get_client_ids_by_uids(uids)
            .await?
            .map(|m| m.into_iter().map(|(u, ids)| (u, !ids.is_empty())).collect()))
    }

    /// Every client id bound to `uid`, across the cluster.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let ids = g.get_client_ids_by_uid("user-42").await?.complete()?;
    /// # let _ = ids;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_ids_by_uid(&self, uid: &str) -> Result<Answer<Vec<String>>, ClientError> {
        let a = self.get_client_ids_by_uids(&[uid]).await?;
        Ok(a.map(|mut m| m.remove(uid).unwrap_or_default()))
    }

    /// For each uid, its client ids.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let by_uid = g.get_client_ids_by_uids(&["user-1", "user-2"]).await?.complete()?;
    /// # let _ = by_uid;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_ids_by_uids<S: AsRef<str>>(
        &self,
        uids: &[S],
    ) -> Result<Answer<BTreeMap<String, Vec<String>>>, ClientError> {
        let uids = names(uids, "uid")?;
        let links = self.holders(Kind::Uid, &uids)?;
        let (replies, missing) = self.gather_from(links, Query::ClientsByUids { uids: uids.clone() }).await?;
        let mut out: BTreeMap<String, Vec<String>> = uids.iter().map(|u| (u.clone(), Vec::new())).collect();
        for (link, reply) in replies {
            let Reply::ClientLists(lists) = reply else { return Err(Self::unexpected(&link)) };
            for (uid, locals) in uids.iter().zip(lists) {
                out.get_mut(uid).expect("seeded").extend(locals.into_iter().map(|c| Self::full_id(&link, c)));
            }
        }
        out.values_mut().for_each(|v| v.sort());
        Ok(Answer { value: out, missing })
    }

    /// The uid a client is bound to, if any.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// if let Some(uid) = g.get_uid_by_client_id(id).await? {
    ///     println!("{id} is {uid}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_uid_by_client_id(&self, client_id: &str) -> Result<Option<String>, ClientError> {
        // Like `is_online` and `get_session`: a client of an earlier gateway run is simply gone.
        let Some((link, client)) = self.resolve_present(client_id)? else {
            return Ok(None);
        };
        match self.ask(&link, Query::UidOf { client }).await? {
            Reply::Text(uid) => Ok(uid),
            _ => Err(Self::unexpected(&link)),
        }
    }

    /// Closes every connection of `uid` (with a close frame), on every gateway.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.close_uid("user-42").await?; // logged out on every device
    /// # Ok(()) }
    /// ```
    pub async fn close_uid(&self, uid: &str) -> Result<(), ClientError> {
        let uid = name(uid, "uid")?;
        let links = self.holders(Kind::Uid, std::slice::from_ref(&uid))?;
        self.fan_out(links, Command::CloseUid { uid }).await
    }

    /// Every uid bound to at least one connection.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.get_all_uids().await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_uids(&self) -> Result<Answer<Vec<String>>, ClientError> {
        self.gather_strings(Query::Uids).await
    }

    /// Number of distinct uids online (a uid on two gateways counts once).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let users = g.get_all_uid_count().await?.complete()?;
    /// # let _ = users;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_uid_count(&self) -> Result<Answer<u64>, ClientError> {
        Ok(self.get_all_uids().await?.map(|v| v.len() as u64))
    }

    // ----- groups ---------------------------------------------------------------------------

    /// Adds a client to a group (created on first join).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.join_group(id, "room-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn join_group(&self, client_id: &str, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        self.command_to_client(client_id, |client| Command::JoinGroup { client, group }).await
    }

    /// Removes a client from a group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.leave_group(id, "room-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn leave_group(&self, client_id: &str, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        self.command_to_client(client_id, |client| Command::LeaveGroup { client, group }).await
    }

    /// Dissolves a group on every gateway; its members stay connected.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.ungroup("room-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn ungroup(&self, group: &str) -> Result<(), ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(Kind::Group, std::slice::from_ref(&group))?;
        self.fan_out(links, Command::Ungroup { group }).await
    }

    /// Every member of a group, across the cluster.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let members = g.get_client_ids_by_group("room-1").await?.complete()?;
    /// # let _ = members;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_ids_by_group(&self, group: &str) -> Result<Answer<Vec<String>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(Kind::Group, std::slice::from_ref(&group))?;
        let (replies, missing) = self.gather_from(links, Query::ClientsByGroups { groups: vec![group] }).await?;
        let mut ids = Vec::new();
        for (link, reply) in replies {
            let Reply::ClientLists(mut lists) = reply else { return Err(Self::unexpected(&link)) };
            ids.extend(lists.pop().unwrap_or_default().into_iter().map(|c| Self::full_id(&link, c)));
        }
        ids.sort();
        Ok(Answer { value: ids, missing })
    }

    /// Number of members of a group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let n = g.get_client_count_by_group("room-1").await?.complete()?;
    /// # let _ = n;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_count_by_group(&self, group: &str) -> Result<Answer<u64>, ClientError> {
        let a = self.get_client_count_by_groups(&[group]).await?;
        Ok(a.map(|m| m.into_values().next().unwrap_or(0)))
    }

    /// Number of members of each group.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.get_client_count_by_groups(&["room-1", "room-2"]).await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_count_by_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        let groups = names(groups, "group")?;
        let links = self.holders(Kind::Group, &groups)?;
        let (replies, missing) = self.gather_from(links, Query::ClientCountByGroups { groups: groups.clone() }).await?;
        let mut out: BTreeMap<String, u64> = groups.iter().map(|g| (g.clone(), 0)).collect();
        for (link, reply) in replies {
            let Reply::Counts(counts) = reply else { return Err(Self::unexpected(&link)) };
            for (g, n) in groups.iter().zip(counts) {
                *out.get_mut(g).expect("seeded") += n;
            }
        }
        Ok(Answer { value: out, missing })
    }

    /// Distinct uids among a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.get_uids_by_group("room-1").await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    pub async fn get_uids_by_group(&self, group: &str) -> Result<Answer<Vec<String>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(Kind::Group, std::slice::from_ref(&group))?;
        let (replies, missing) = self.gather_from(links, Query::UidsByGroup { group }).await?;
        Self::merge_strings(replies, missing)
    }

    /// Number of distinct uids among a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let users = g.get_uid_count_by_group("room-1").await?.complete()?;
    /// # let _ = users;
    /// # Ok(()) }
    /// ```
    pub async fn get_uid_count_by_group(&self, group: &str) -> Result<Answer<u64>, ClientError> {
        Ok(self.get_uids_by_group(group).await?.map(|v| v.len() as u64))
    }

    /// Every group with at least one member.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let groups = g.get_all_group_ids().await?.complete()?;
    /// # let _ = groups;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_group_ids(&self) -> Result<Answer<Vec<String>>, ClientError> {
        self.gather_strings(Query::GroupIds).await
    }

    /// Every group with its members' client ids (complete, unlike GatewayWorker's).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// for (group, ids) in g.get_all_group_client_id_lists().await?.complete()? {
    ///     println!("{group}: {ids:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_all_group_client_id_lists(&self) -> Result<Answer<BTreeMap<String, Vec<String>>>, ClientError> {
        let (replies, missing) = self.gather(Query::GroupClients).await?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::NamedClients(groups) = reply else { return Err(Self::unexpected(&link)) };
            for (g, locals) in groups {
                out.entry(g).or_default().extend(locals.into_iter().map(|c| Self::full_id(&link, c)));
            }
        }
        out.values_mut().for_each(|v| v.sort());
        Ok(Answer { value: out, missing })
    }

    /// Every group with its member count.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.get_all_group_client_id_counts().await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_group_client_id_counts(&self) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        Ok(self
            .get_all_group_client_id_lists()
            .await?
            .map(|m| m.into_iter().map(|(g, v)| (g, v.len() as u64)).collect()))
    }

    /// Every group with the distinct uids of its members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let uids = g.get_all_group_uid_lists().await?.complete()?;
    /// # let _ = uids;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_group_uid_lists(&self) -> Result<Answer<BTreeMap<String, Vec<String>>>, ClientError> {
        let (replies, missing) = self.gather(Query::GroupUids).await?;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::NamedStrings(groups) = reply else { return Err(Self::unexpected(&link)) };
            for (g, uids) in groups {
                out.entry(g).or_default().extend(uids);
            }
        }
        Ok(Answer { value: out.into_iter().map(|(g, s)| (g, s.into_iter().collect())).collect(), missing })
    }

    /// Every group with its distinct uid count.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let counts = g.get_all_group_uid_counts().await?.complete()?;
    /// # let _ = counts;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_group_uid_counts(&self) -> Result<Answer<BTreeMap<String, u64>>, ClientError> {
        Ok(self.get_all_group_uid_lists().await?.map(|m| m.into_iter().map(|(g, v)| (g, v.len() as u64)).collect()))
    }

    // ----- whole cluster --------------------------------------------------------------------

    /// Whether a client is connected. An id from an earlier run of its gateway is offline.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// if g.is_online(id).await? {
    ///     g.send_to_client(id, "still there?").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn is_online(&self, client_id: &str) -> Result<bool, ClientError> {
        let Some((link, client)) = self.resolve_present(client_id)? else {
            return Ok(false);
        };
        match self.ask(&link, Query::IsOnline { clients: vec![client] }).await? {
            Reply::Flags(f) => Ok(f.first().copied().unwrap_or(false)),
            _ => Err(Self::unexpected(&link)),
        }
    }

    /// Every connected client id.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let answer = g.get_all_client_ids().await?;
    /// if !answer.is_complete() {
    ///     eprintln!("no answer from {:?}: the list may be short", answer.missing);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_all_client_ids(&self) -> Result<Answer<Vec<String>>, ClientError> {
        let (replies, missing) = self.gather(Query::ClientIds).await?;
        let mut ids = Vec::new();
        for (link, reply) in replies {
            let Reply::Clients(locals) = reply else { return Err(Self::unexpected(&link)) };
            ids.extend(locals.into_iter().map(|c| Self::full_id(&link, c)));
        }
        ids.sort();
        Ok(Answer { value: ids, missing })
    }

    /// Number of connected clients.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let online = g.get_all_client_count().await?.complete()?;
    /// # let _ = online;
    /// # Ok(()) }
    /// ```
    pub async fn get_all_client_count(&self) -> Result<Answer<u64>, ClientError> {
        let (replies, missing) = self.gather(Query::ClientCount).await?;
        let mut n = 0;
        for (link, reply) in replies {
            let Reply::Counts(c) = reply else { return Err(Self::unexpected(&link)) };
            n += c.first().copied().unwrap_or(0);
        }
        Ok(Answer { value: n, missing })
    }

    /// Every connected client with its session (an empty object if it has none).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// for (id, session) in g.get_all_client_sessions().await?.complete()? {
    ///     println!("{id}: {}", serde_json::Value::Object(session));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_all_client_sessions(&self) -> Result<Answer<BTreeMap<String, Session>>, ClientError> {
        self.live()?;
        self.sessions(self.linked()?, Query::Sessions { clients: None, group: None }).await
    }

    /// The sessions of a group's members.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let sessions = g.get_client_sessions_by_group("room-1").await?.complete()?;
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    pub async fn get_client_sessions_by_group(
        &self,
        group: &str,
    ) -> Result<Answer<BTreeMap<String, Session>>, ClientError> {
        let group = name(group, "group")?;
        let links = self.holders(Kind::Group, std::slice::from_ref(&group))?;
        self.sessions(links, Query::Sessions { clients: None, group: Some(group) }).await
    }

    async fn sessions(
        &self,
        links: Vec<Arc<GatewayLink>>,
        query: Query,
    ) -> Result<Answer<BTreeMap<String, Session>>, ClientError> {
        let (replies, missing) = self.gather_from(links, query).await?;
        let mut out = BTreeMap::new();
        for (link, reply) in replies {
            let Reply::Sessions(rows) = reply else { return Err(Self::unexpected(&link)) };
            for (local, bytes) in rows {
                out.insert(Self::full_id(&link, local), parse_session(bytes.as_deref()));
            }
        }
        Ok(Answer { value: out, missing })
    }

    // ----- connections ----------------------------------------------------------------------

    /// Closes a client with a normal close frame.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.close_client(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_client(&self, client_id: &str) -> Result<(), ClientError> {
        self.close_client_with(client_id, None, None).await
    }

    /// Closes a client, optionally sending a last message first and with a close code and reason.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// use gw_gateway_client::CloseReason;
    /// let kicked = CloseReason { code: 4000, reason: "kicked".into() };
    /// g.close_client_with(id, Some("bye".into()), Some(kicked)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_client_with(
        &self,
        client_id: &str,
        last: Option<Payload>,
        close: Option<CloseReason>,
    ) -> Result<(), ClientError> {
        self.command_to_client(client_id, |client| Command::CloseClient { client, last, close }).await
    }

    /// Drops a client's connection at once, without a close frame.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// g.destroy_client(id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn destroy_client(&self, client_id: &str) -> Result<(), ClientError> {
        self.command_to_client(client_id, |client| Command::DestroyClient { client }).await
    }

    // ----- sessions -------------------------------------------------------------------------

    /// Replaces a client's session.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let mut session = gw_gateway_client::Session::new();
    /// session.insert("name".into(), "alice".into());
    /// g.set_session(id, &session).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_session(&self, client_id: &str, session: &Session) -> Result<(), ClientError> {
        let session = Bytes::from(serde_json::to_vec(session).expect("a JSON map serializes"));
        self.command_to_client(client_id, |client| Command::SetSession { client, session }).await
    }

    /// Deep-merges `patch` into a client's session (`null` values delete keys).
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let serde_json::Value::Object(patch) = serde_json::json!({"cart": {"items": 3}, "coupon": null}) else {
    ///     unreachable!()
    /// };
    /// g.update_session(id, &patch).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_session(&self, client_id: &str, patch: &Session) -> Result<(), ClientError> {
        let patch = Bytes::from(serde_json::to_vec(patch).expect("a JSON map serializes"));
        self.command_to_client(client_id, |client| Command::UpdateSession { client, patch }).await
    }

    /// A client's session; `None` if the client is not connected.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient, id: &str) -> Result<(), gw_gateway_client::ClientError> {
    /// let name = g.get_session(id).await?.and_then(|s| s.get("name").cloned());
    /// # let _ = name;
    /// # Ok(()) }
    /// ```
    pub async fn get_session(&self, client_id: &str) -> Result<Option<Session>, ClientError> {
        let Some((link, client)) = self.resolve_present(client_id)? else {
            return Ok(None);
        };
        match self.ask(&link, Query::Sessions { clients: Some(vec![client]), group: None }).await? {
            Reply::Sessions(rows) => Ok(rows.into_iter().next().map(|(_, b)| parse_session(b.as_deref()))),
            _ => Err(Self::unexpected(&link)),
        }
    }
}

fn parse_session(bytes: Option<&[u8]>) -> Session {
    bytes
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

fn name(s: &str, what: &'static str) -> Result<String, ClientError> {
    if s.is_empty() { Err(ClientError::EmptyName(what)) } else { Ok(s.to_string()) }
}

fn names<S: AsRef<str>>(list: &[S], what: &'static str) -> Result<Vec<String>, ClientError> {
    let mut out: Vec<String> = list.iter().map(|s| name(s.as_ref(), what)).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}
