//! The handle: [`GatewayClient`], what it is made of, and the calls about the client itself
//! (which gateways it is linked to, waiting for them, shutting down).

use std::sync::Arc;
use std::time::Duration;

use gw_gateway_links::GatewayLinks;

use crate::{ClientId, GatewayClientBuilder, RoutingStats};

/// Stops the links when the last handle of a client that owns them is dropped.
#[derive(Debug)]
pub(crate) struct Guard(pub(crate) Arc<GatewayLinks>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A cheap, cloneable handle to the cluster. See the [crate docs](crate) for an example.
///
/// The calls come in families, each documented with its examples: sending
/// ([`send_to_client`](Self::send_to_client), [`send_to_uid`](Self::send_to_uid),
/// [`send_to_group`](Self::send_to_group), ...), uids ([`bind_uid`](Self::bind_uid), ...), groups
/// ([`join_group`](Self::join_group), ...), sessions ([`set_session`](Self::set_session), ...),
/// closing ([`close_client`](Self::close_client), ...) and questions about the clients
/// ([`is_online`](Self::is_online), [`client_count`](Self::client_count), ...). GatewayWorker's
/// names (`getAllClientCount`, ...) find them in the documentation's search.
///
/// # Errors and no-ops
///
/// - An empty uid or group name: [`ClientError::EmptyName`](crate::ClientError::EmptyName),
///   before anything is sent.
/// - A client of an earlier run of its gateway, or of a gateway no register lists any more:
///   [`ClientError::ClientGone`](crate::ClientError::ClientGone) for calls on that client,
///   `false` / `None` from [`is_online`](Self::is_online), [`session`](Self::session) and
///   [`uid_of`](Self::uid_of), skipped in id lists.
/// - A client that is not connected (any more) on a live gateway: commands are no-ops (the
///   gateway counts them), questions answer `false` / `None`.
/// - A gateway that a register lists but that is not linked:
///   [`ClientError::GatewayUnavailable`](crate::ClientError::GatewayUnavailable) for calls on one
///   of its clients; cluster-wide calls still reach the others and name it
///   ([`Answer::missing`](crate::Answer::missing),
///   [`ClientError::Unreachable`](crate::ClientError::Unreachable)).
/// - After [`shutdown`](Self::shutdown): [`ClientError::Shutdown`](crate::ClientError::Shutdown).
#[derive(Debug, Clone)]
pub struct GatewayClient {
    pub(crate) links: Arc<GatewayLinks>,
    pub(crate) query_timeout: Duration,
    /// Set when this client started its links itself (not for [`GatewayClient::over`]).
    pub(crate) _guard: Option<Arc<Guard>>,
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
        GatewayClientBuilder::new(registers.into_iter().map(Into::into).collect())
    }

    /// The Gateway API over links their owner keeps: a business worker's, which also take its
    /// client events, so its handlers reach the cluster through the same links. Dropping this
    /// handle does not stop the links; their owner does.
    ///
    /// Hidden from the documentation: it is the business worker's way in, not an application's.
    #[doc(hidden)]
    pub fn over(links: Arc<GatewayLinks>, query_timeout: Duration) -> Self {
        Self { links, query_timeout, _guard: None }
    }

    /// Advertised addresses of the gateways connected now.
    ///
    /// ```no_run
    /// # fn f(g: gw_gateway_client::GatewayClient) {
    /// println!("linked to {:?}", g.connected_gateways());
    /// # }
    /// ```
    pub fn connected_gateways(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links.links().iter().map(|l| l.address.clone()).collect();
        v.sort();
        v
    }

    /// The id of connection `local` of the linked gateway whose instance is `instance`, if one
    /// is linked: what a Pusher socket id (`{instance}.{local}`) names.
    ///
    /// ```no_run
    /// # fn f(g: gw_gateway_client::GatewayClient) {
    /// if let Some(id) = g.client_id_in_instance(1234, 5) {
    ///     println!("socket 1234.5 is {id}");
    /// }
    /// # }
    /// ```
    pub fn client_id_in_instance(&self, instance: u64, local: u64) -> Option<ClientId> {
        self.links
            .links()
            .iter()
            .find(|l| l.instance == instance)
            .map(|l| ClientId::new(l.address.clone(), instance, local))
    }

    /// Number of gateways connected now.
    ///
    /// ```no_run
    /// # fn f(g: gw_gateway_client::GatewayClient) {
    /// println!("{} gateways linked", g.gateway_count());
    /// # }
    /// ```
    pub fn gateway_count(&self) -> usize {
        self.links.links().len()
    }

    /// Waits until a register has answered and every gateway it lists is connected; false on
    /// timeout. A worker reports itself ready after this.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) {
    /// if !g.wait_ready(std::time::Duration::from_secs(5)).await {
    ///     eprintln!("some listed gateways are not linked yet");
    /// }
    /// # }
    /// ```
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.links.wait_ready(timeout).await
    }

    /// Waits until at least `n` gateways are connected; false on timeout.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) {
    /// let all = g.wait_for_gateways(2, std::time::Duration::from_secs(5)).await;
    /// # let _ = all; }
    /// ```
    pub async fn wait_for_gateways(&self, n: usize, timeout: Duration) -> bool {
        self.links.wait_until(timeout, |connected, _| connected >= n).await
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

    /// Stops every link, gracefully: each sends what was queued on it first. Other clones stop
    /// working too.
    ///
    /// ```no_run
    /// # async fn f(g: gw_gateway_client::GatewayClient) {
    /// g.shutdown().await;
    /// assert!(g.send_to_all("x").await.is_err());
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.links.close().await;
    }
}
