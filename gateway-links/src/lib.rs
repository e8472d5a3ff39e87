//! `gw-gateway-links`: the cluster under the Gateway API, shared by a web backend's
//! `GatewayClient` and a business worker.
//!
//! [`GatewayLinks`] learns the gateways from every register and keeps one authenticated link to
//! each ([`GatewayLink`]), on `gw_link`'s engine; the [routing index](RoutingStats) says which
//! gateways hold which uids and groups; an [`Inbound`] takes what gateways send besides replies
//! (a business worker's client events).
//!
//! This is machinery, not the API applications write against: that is `gw-gateway-client`
//! (the calls) and `gw-business-worker` (the handlers), which are built on it.

mod adoptions;
mod error;
mod link;
mod links;
mod routing;

pub use error::SendError;
pub use link::GatewayLink;
pub use links::{GatewayLinks, Inbound, LinkInbound, LinksOptions, NoEvents, Refusal, RegisterState};
pub use routing::{Kind as IndexKind, RoutingStats};
