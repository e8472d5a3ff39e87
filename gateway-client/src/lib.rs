//! `gw-gateway-client`: push to WebSocket clients from anywhere — a web backend, a cron job, or a
//! business worker's handler (whose Gateway API is this same type).
//!
//! The client learns the gateway list from every register, keeps an authenticated link to every
//! gateway, and offers GatewayWorker's `Gateway` / GatewayClient calls under Rust names
//! (GatewayWorker's own names find them in the documentation's search). Commands aimed at one
//! client go straight to the gateway named in its [`ClientId`]; uid and group calls go only to
//! the gateways that hold those uids and groups (the routing index: each gateway reports what it
//! holds; see [`RoutingStats`] and the README's "Routing index" for the rules), broadcasts to
//! every gateway. Queries are asynchronous, multiplexed over the same links, bounded by a
//! deadline, and report which gateways did not answer ([`Answer`]).
//!
//! A client id is parsed once, where it enters your program (`"…".parse::<ClientId>()?`); the
//! calls take the parsed id and the queries hand back parsed ids.
//!
//! The calls, one file each: sending (`send.rs`), uids (`uid.rs`), groups (`group.rs`),
//! sessions (`session.rs`), closing (`close.rs`) and the cluster's clients (`queries.rs`), over
//! `plumbing.rs`.
//!
//! # Examples
//!
//! ```no_run
//! use gw_gateway_client::{ClientId, GatewayClient};
//!
//! # async fn demo() -> Result<(), gw_gateway_client::ClientError> {
//! let gateway = GatewayClient::builder(["127.0.0.1:1236"])
//!     .secret("the cluster secret")
//!     .connect()
//!     .await?;
//! // A client id a page sent to this backend.
//! let client: ClientId = "MTI3LjAuMC4xOjI5MDA.1f.1".parse()?;
//! gateway.bind_uid(&client, "user-42").await?;
//! gateway.join_group(&client, "room-1").await?;
//! gateway.send_to_uid("user-42", "you have mail").await?;
//! gateway.send_to_group("room-1", r#"{"type":"say","content":"hi"}"#).await?;
//! let online = gateway.is_uid_online("user-42").await?.complete()?;
//! # let _ = online;
//! # Ok(())
//! # }
//! ```

mod answer;
mod builder;
mod client;
mod close;
mod error;
mod group;
mod plumbing;
mod queries;
mod send;
mod session;
mod uid;

pub use answer::Answer;
pub use builder::GatewayClientBuilder;
pub use client::GatewayClient;
pub use error::ClientError;
pub use gw_gateway_links::RoutingStats;
pub use gw_proto::{ClientId, ClientIdError, CloseReason, Payload, Refusal};
pub use session::Session;
