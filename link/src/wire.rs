//! The ends of the links the engine runs, as it sees them: which message type is read and which
//! is written, how they are framed and encoded, and which of them are the heartbeat.
//!
//! A new kind of link is a new [`Wire`] (with its handshake); the loop is the engine's. Our own
//! four ends are here; PHP GatewayWorker's are in `gatewayworker` (feature `gatewayworker`) and the
//! gateway.

use gw_proto::{FromGateway, FromRegister, ToGateway, ToRegister, codec};

use crate::LinkError;
use crate::framed::{Framing, LengthPrefixed};

/// A heartbeat message, recognised by the engine so handlers never see one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The peer asks for a sign of life: the engine answers with [`Wire::pong`].
    Ping,
    /// The answer to our ping; hearing it is all it is for.
    Pong,
}

/// One end of a link: the messages of both directions, their framing and encoding, and the
/// heartbeat. The value is the writing side's encoder state (most ends have none).
pub trait Wire: Send + 'static {
    /// What this end reads.
    type In: Send + 'static;
    /// What this end writes.
    type Out: Send + 'static;
    /// How the bytes this end reads split into frames.
    type Framing: Framing;

    /// One frame read as a message.
    fn decode(frame: <Self::Framing as Framing>::Frame) -> Result<Self::In, LinkError>;

    /// Appends `msg` to `out` as one frame of at most `max_frame` bytes. On an error nothing may
    /// have been appended; the writer logs it and skips the message.
    fn encode(&mut self, msg: Self::Out, out: &mut Vec<u8>, max_frame: usize) -> Result<(), LinkError>;

    /// Everything encoded since the last call reached the socket (for an end that counts a
    /// message as delivered once written).
    fn written(&mut self) {}

    /// The ping this end sends every heartbeat interval; `None` if it sends none.
    fn ping() -> Option<Self::Out>;

    /// The answer this end sends to the peer's ping; `None` if it answers none.
    fn pong() -> Option<Self::Out>;

    /// Whether an incoming message is heartbeat traffic.
    fn beat(msg: &Self::In) -> Option<Beat>;
}

/// The gateway's end of a link to a business worker or gateway client.
#[derive(Debug, Default)]
pub struct GatewaySide;

/// A business worker's or gateway client's end of a link to a gateway.
#[derive(Debug, Default)]
pub struct GatewayPeerSide;

/// The register's end of a link to a gateway, worker or client.
#[derive(Debug, Default)]
pub struct RegisterSide;

/// A gateway's, worker's or client's end of a link to a register.
#[derive(Debug, Default)]
pub struct RegisterPeerSide;

/// Our link directions: length-prefixed bincode frames, heartbeat `Ping` and `Pong`.
macro_rules! wire {
    ($side:ty, $in:ident, $out:ident) => {
        impl Wire for $side {
            type In = $in;
            type Out = $out;
            type Framing = LengthPrefixed;
            fn decode(frame: bytes::BytesMut) -> Result<$in, LinkError> {
                Ok(codec::decode(&frame)?)
            }
            fn encode(&mut self, msg: $out, out: &mut Vec<u8>, max_frame: usize) -> Result<(), LinkError> {
                Ok(codec::encode_frame(&msg, out, max_frame)?)
            }
            fn ping() -> Option<$out> {
                Some($out::Ping)
            }
            fn pong() -> Option<$out> {
                Some($out::Pong)
            }
            fn beat(msg: &$in) -> Option<Beat> {
                match msg {
                    $in::Ping => Some(Beat::Ping),
                    $in::Pong => Some(Beat::Pong),
                    _ => None,
                }
            }
        }
    };
}

wire!(GatewaySide, ToGateway, FromGateway);
wire!(GatewayPeerSide, FromGateway, ToGateway);
wire!(RegisterSide, ToRegister, FromRegister);
wire!(RegisterPeerSide, FromRegister, ToRegister);
