//! Options for a [`GatewayClient`]: where the registers are, the secret, deadlines, link tuning.

use std::sync::Arc;
use std::time::Duration;

use gw_config::LinkConfig;
use gw_gateway_links::{GatewayLinks, LinksOptions, NoEvents, RegisterState};
use gw_proto::Role;

use crate::client::Guard;
use crate::{ClientError, GatewayClient};

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
    pub(crate) fn new(registers: Vec<String>) -> Self {
        Self {
            registers,
            secret: String::new(),
            name: "gateway-client".into(),
            link: LinkConfig::default(),
            query_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

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
    /// secret), and with [`ClientError::NoGateways`] only if no register answered at all;
    /// gateways that are still unreachable are retried in the background and reported by the
    /// calls that need them.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gw_gateway_client::ClientError> {
    /// let g = gw_gateway_client::GatewayClient::builder(["127.0.0.1:1236"]).secret("s3cret").connect().await?;
    /// # let _ = g; Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<GatewayClient, ClientError> {
        let timeout = self.connect_timeout;
        let client = self.start();
        // A refusal by every register is final (the secret is wrong): say so at once instead of
        // waiting out the timeout and blaming the network.
        match client.links.wait_for_register(timeout).await {
            RegisterState::Heard => {}
            RegisterState::Refused(r) => {
                return Err(ClientError::AuthenticationFailed { register: r.peer, reason: r.reason });
            }
            RegisterState::Silent => return Err(ClientError::NoGateways),
        }
        client.links.wait_until(timeout, |connected, known| connected >= known).await;
        Ok(client)
    }
}
