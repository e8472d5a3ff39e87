//! The Pusher Channels protocol (version 7), sans-IO: no sockets, no clocks.
//!
//! What Laravel Echo, pusher-js, pysher and every other Pusher client library speak over a
//! WebSocket, and what the official server SDKs send to the HTTP API, so the gateway and the
//! HTTP API daemon can serve them (the integration is designed in `docs/pusher.md`):
//! - [`client_frame`]: every client → server frame (`pusher:ping`, `pusher:subscribe`,
//!   `pusher:signin`, `client-*` events, ...), decoded from untrusted text within [`Limits`];
//! - [`server_frame`]: every server → client frame (`pusher:connection_established`,
//!   `pusher_internal:subscription_succeeded` with the presence list, `pusher:error`, ...);
//! - [`code`]: the documented error and close codes (4000–4302) and what each asks a client to do;
//! - [`channel`]: channel names (characters, length, the `private-`, `private-encrypted-`,
//!   `presence-`, `cache-` and `#server-to-user-` forms);
//! - [`socket_id`]: the `NNN.NNN` socket id, which here names the gateway instance and its
//!   connection, so an HTTP publish that excludes a socket needs no lookup;
//! - [`auth`]: subscription and sign-in signatures (HMAC-SHA256 with the app secret);
//! - [`presence`]: presence `channel_data` and sign-in `user_data`;
//! - [`connect`]: the `/app/{key}?protocol=7&client=..&version=..` of the WebSocket request;
//! - [`rate`]: the token bucket behind the client-event rate limit (time is an argument);
//! - [`api`]: the server HTTP API: request signing (`auth_key`, `auth_timestamp`,
//!   `auth_version`, `body_md5`, `auth_signature`) and the bodies and answers of every route;
//! - [`webhook`]: webhook bodies and their `X-Pusher-Signature`.
//!
//! Everything that parses takes text from the network and returns a typed error naming what is
//! wrong; nothing panics or allocates beyond what [`Limits`] allows for the input
//! (`fuzz/fuzz_targets/pusher.rs` checks both).

pub mod api;
pub mod auth;
pub mod channel;
pub mod client_frame;
pub mod code;
pub mod connect;
mod hex;
pub mod limits;
pub mod presence;
pub mod rate;
pub mod server_frame;
pub mod socket_id;
pub mod webhook;

pub use channel::{ChannelError, ChannelKind, ChannelName};
pub use client_frame::{ClientFrame, FrameError};
pub use code::{CodeRange, ErrorCode};
pub use limits::Limits;
pub use server_frame::ServerFrame;
pub use socket_id::SocketId;
