//! The internal wire protocol between registers, gateways, business workers and gateway clients.
//!
//! Sans-IO: plain types plus encode/decode, no sockets and no clocks, so every byte can be unit
//! tested, fuzzed and benchmarked. A link carries length-prefixed frames ([`frame`]) whose payloads
//! are bincode-encoded serde enums ([`codec`]), one enum per link direction ([`message`]). The first
//! frames of every link are the [`handshake`].

pub mod client_id;
pub mod codec;
pub mod frame;
pub mod handover;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod resume_token;
pub mod urlencoded;

pub use client_id::{ClientId, ClientIdError};
pub use codec::{CodecError, decode, encode_frame};
pub use frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HARD_MAX_FRAME};
pub use handshake::{Acceptor, Connector, HandshakeError, PROTOCOL_VERSION, Role};
pub use message::*;
pub use resume_token::{ResumeToken, TokenError};
