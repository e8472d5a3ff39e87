//! Errors of the Gateway API.

use gw_proto::{ClientId, ClientIdError, Refusal};

/// Why a call did not fully succeed. Variants that mean "partly done" say which gateways missed
/// out, so nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A string given as a client id is not one (from `str::parse::<ClientId>()`, so `?` works
    /// on it in a function that returns this error).
    #[error(transparent)]
    InvalidClientId(#[from] ClientIdError),
    /// A uid or group name was empty.
    #[error("{0} must not be empty")]
    EmptyName(&'static str),
    /// No link to the gateway that holds this client: a register lists it, but it is down or
    /// not linked yet. Its address.
    #[error("gateway {0} is not connected")]
    GatewayUnavailable(String),
    /// The client is gone with its gateway: the id belongs to an earlier run of that gateway, or
    /// to a gateway that no register lists.
    #[error("client {0} is not connected (its gateway restarted or left the cluster)")]
    ClientGone(ClientId),
    /// A fan-out command reached every connected gateway except these, which did not get it.
    #[error("not delivered to gateways {gateways:?} (not connected)")]
    Unreachable {
        /// Advertised addresses of the gateways that did not get it.
        gateways: Vec<String>,
    },
    /// No gateway is known yet: the registers have not answered or list none.
    #[error("no gateway is known (registers unreachable or no gateway announced)")]
    NoGateways,
    /// A query to one gateway got no answer in time.
    #[error("gateway {0} did not answer in time")]
    Timeout(String),
    /// The gateway answered with an error.
    #[error("gateway {gateway} refused the query: {reason}")]
    Refused {
        /// The gateway's advertised address.
        gateway: String,
        /// What it said.
        reason: String,
    },
    /// The client's gateway refused a write to its state (a session over the gateway's
    /// `max_session_bytes`, a session that is not a JSON object, ...); nothing was changed.
    #[error("gateway {gateway} refused the write: {refusal}")]
    WriteRefused {
        /// The gateway's advertised address.
        gateway: String,
        /// Why.
        refusal: Refusal,
    },
    /// The gateway's answer did not match the query (a protocol bug).
    #[error("gateway {0} sent an unexpected reply")]
    UnexpectedReply(String),
    /// The client library was shut down.
    #[error("the gateway client is shut down")]
    Shutdown,
    /// A session value was not a JSON object.
    #[error("session must be a JSON object: {0}")]
    InvalidSession(String),
    /// Every register refused this client's handshake: almost always a secret that differs from
    /// the cluster's (or a peer of another protocol version).
    #[error(
        "authentication failed: register {register} refused this client ({reason}); check that the secret is the cluster's (`secret`, GW_SECRET)"
    )]
    AuthenticationFailed {
        /// The register's address.
        register: String,
        /// Why it refused.
        reason: String,
    },
}
