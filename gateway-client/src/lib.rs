//! `gw-gateway-client`: push to WebSocket clients from anywhere — a web backend, a cron job, or a
//! business worker's handler (whose Gateway API is this same type).
//!
//! Under the API sits [`GatewayLinks`], the building block that learns gateways from the
//! registers and keeps a link to each; a business worker runs its own over the same block, with an
//! [`Inbound`] that takes the client events, and hands its handlers [`GatewayClient::over`] it.
//!
//! The client learns the gateway list from every register, keeps an authenticated link to every
//! gateway, and offers GatewayWorker's `Gateway` / GatewayClient calls under Rust names. Commands
//! aimed at one client go straight to the gateway named in its client id; uid and group calls go
//! only to the gateways that hold those uids and groups (the routing index: each gateway reports
//! what it holds; see [`RoutingStats`] and the README's "Routing index" for the rules), broadcasts
//! to every gateway. Queries are asynchronous, multiplexed over the same links, bounded by a
//! deadline, and report which gateways did not answer ([`Answer`]).
//!
//! # Examples
//!
//! ```no_run
//! use gw_gateway_client::GatewayClient;
//!
//! # async fn demo() -> Result<(), gw_gateway_client::ClientError> {
//! let gateway = GatewayClient::builder(["127.0.0.1:1236"])
//!     .secret("the cluster secret")
//!     .connect()
//!     .await?;
//! gateway.bind_uid("MTI3LjAuMC4xOjI5MDA.1f.1", "user-42").await?;
//! gateway.join_group("MTI3LjAuMC4xOjI5MDA.1f.1", "room-1").await?;
//! gateway.send_to_uid("user-42", "you have mail").await?;
//! gateway.send_to_group("room-1", r#"{"type":"say","content":"hi"}"#).await?;
//! let online = gateway.is_uid_online("user-42").await?.complete()?;
//! # let _ = online;
//! # Ok(())
//! # }
//! ```

mod answer;
mod api;
mod error;
mod link;
mod links;
mod routing;

pub use answer::Answer;
pub use api::{GatewayClient, GatewayClientBuilder, Session};
pub use error::ClientError;
pub use gw_proto::{ClientId, CloseReason, Payload};
pub use link::GatewayLink;
pub use links::{GatewayLinks, Inbound, LinkInbound, LinksOptions, NoEvents};
pub use routing::RoutingStats;
