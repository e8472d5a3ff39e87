//! The network layer every daemon and the client library share.
//!
//! - **Listening** ([`listener`]): one accept loop for every listener (descriptor shedding,
//!   backoff), caps on connections ([`ConnLimits`]) and a log line that cannot flood
//!   ([`Throttle`]).
//! - **Admission** ([`Admission`]): one path from accepted to authenticated for every listener
//!   whose peers must prove a secret: a cap on pending connections, a deadline, and a
//!   per-address budget of failed handshakes ([`HandshakeLimiter`]).
//! - **Links**: the one link engine ([`LinkEngine`]: framed reader, coalescing writer,
//!   heartbeat, graceful flush) for every wire format ([`wire`]: ours, and PHP GatewayWorker's in
//!   `gatewayworker`, with the feature of that name), the dialing side's reconnect loop
//!   ([`keep_dialing`]), the handshake over TCP, and the link gateways, clients and workers keep
//!   to each register.
//!
//! The protocols themselves (frames, messages, handshake logic) are sans-IO in `gw-proto` and
//! `gw-gatewayworker-protocol`; this crate is the thin layer that moves their bytes over tokio
//! sockets.

mod admission;
mod backoff;
mod dial;
mod engine;
pub mod fds;
mod framed;
#[cfg(feature = "gatewayworker")]
pub mod gatewayworker;
mod handshake;
mod limiter;
mod limits;
pub mod listener;
mod register_link;
mod throttle;
mod tls;
pub mod wire;
mod writer;

pub use admission::{Admission, AdmissionConfig, Counters, Pending};
pub use backoff::Backoff;
pub use dial::{Attempt, keep_dialing};
pub use engine::{Ended, FLUSH_TIMEOUT, Handler, LinkEngine, LinkOptions};
pub use framed::{FrameReader, Framing, LengthPrefixed};
pub use handshake::{HandshakeOptions, Link, accept, accept_within, connect};
pub use limiter::{HandshakeLimiter, LEAN_TIMEOUT, LimiterConfig, Permit};
pub use limits::{ConnLimits, ConnSlot, Refusal};
pub use register_link::{RegisterEvent, RegisterLink, keep_register_link};
pub use throttle::Throttle;
pub use tls::{TlsError, tls_acceptor};
pub use writer::{WriterStats, unframeable_dropped};

use gw_proto::{CodecError, FrameError, HandshakeError};

/// Errors of an internal link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame header was invalid (too large).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame did not decode as the expected message (or could not be encoded).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The handshake failed: wrong secret, version or role, or a malformed handshake frame.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// The peer closed the connection before the handshake finished.
    #[error("connection closed during the handshake")]
    ClosedDuringHandshake,
    /// The handshake took longer than allowed.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer was silent for longer than the heartbeat timeout.
    #[error("no data from the peer for {0:?} (heartbeat timeout)")]
    HeartbeatTimeout(std::time::Duration),
    /// The peer sent a message this end does not accept at this point.
    #[error("unexpected message: {0}")]
    Unexpected(String),
    /// A GatewayWorker-protocol packet had impossible lengths.
    #[cfg(feature = "gatewayworker")]
    #[error(transparent)]
    Packet(#[from] gw_gatewayworker_protocol::PacketError),
    /// A GatewayWorker-protocol register line was not a register message.
    #[cfg(feature = "gatewayworker")]
    #[error(transparent)]
    RegisterLine(#[from] gw_gatewayworker_protocol::register::RegisterLineError),
    /// A line (of a line-based protocol) ran past the limit without ending.
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    /// The peer broke its protocol in a way the link's handler names.
    #[error("{0}")]
    Protocol(String),
}

impl LinkError {
    /// True for the ordinary ways a peer goes away; logged at debug, not as an error.
    pub fn is_disconnect(&self) -> bool {
        match self {
            LinkError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Fresh randomness for a handshake nonce or an instance id.
pub fn random_nonce() -> [u8; 32] {
    rand::random()
}
