//! The gateway: holds client sockets and never runs business logic.
//!
//! It gives every client a routable, never-reused client id, keeps each client's session, uid
//! binding and groups, forwards client events to one business worker per client (sticky,
//! least-loaded first, re-bound when that worker goes away), and executes the commands and queries
//! that workers and gateway clients send over the internal listener. It announces its internal
//! address to every register.
//!
//! Where to start reading: [`serve`] (what runs and the order it stops in), `client.rs` (one
//! client connection), `binding.rs` (which worker a client's events go to), `peer.rs` (one worker
//! or gateway-client link), then `commands.rs` and `queries.rs` (what those links ask for).

mod announce;
mod binding;
mod client;
mod client_handle;
mod clients;
mod clock;
mod commands;
mod deflate;
mod error;
mod few;
pub mod framing;
mod gateway;
mod gatewayworker;
mod handover;
mod heartbeat;
mod index;
mod index_feed;
mod listener;
mod log_limit;
pub mod metrics;
mod node;
mod outgoing;
mod peer;
mod pusher;
mod queries;
mod recovery;
mod redeliver;
mod relay;
mod router;
mod send_queue;
mod serve;
mod session;
mod stream;
#[cfg(test)]
mod test_frames;
mod transport;
mod upgrade;

pub use clients::Clients;
pub use error::GatewayError;
pub use gateway::{Gateway, build};
pub use gw_link::fds::{FdBudget, FdBudgetError};
pub use metrics::Metrics;
pub use node::GatewayNode;
pub use serve::{Listeners, run, serve};
