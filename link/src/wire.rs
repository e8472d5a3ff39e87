//! The four ends of our internal links, as the engine sees them: which message type is read,
//! which is written, and which of them are the heartbeat.
//!
//! A new kind of link is a new [`Wire`] here (and its handshake role); the loop is the engine's.

use gw_proto::{FromGateway, FromRegister, ToGateway, ToRegister};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A heartbeat message, recognised by the engine so handlers never see one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The peer asks for a sign of life: the engine answers with [`Wire::pong`].
    Ping,
    /// The answer to our ping; hearing it is all it is for.
    Pong,
}

/// One end of a link: the message types of both directions and their ping and pong.
pub trait Wire: Send + 'static {
    /// What this end reads.
    type In: DeserializeOwned + Send + 'static;
    /// What this end writes.
    type Out: Serialize + Send + 'static;
    /// The ping this end sends every heartbeat interval.
    fn ping() -> Self::Out;
    /// The answer this end sends to the peer's ping.
    fn pong() -> Self::Out;
    /// Whether an incoming message is heartbeat traffic.
    fn beat(msg: &Self::In) -> Option<Beat>;
}

/// The gateway's end of a link to a business worker or gateway client.
#[derive(Debug)]
pub struct GatewaySide;

/// A business worker's or gateway client's end of a link to a gateway.
#[derive(Debug)]
pub struct GatewayPeerSide;

/// The register's end of a link to a gateway, worker or client.
#[derive(Debug)]
pub struct RegisterSide;

/// A gateway's, worker's or client's end of a link to a register.
#[derive(Debug)]
pub struct RegisterPeerSide;

/// Every link direction names its heartbeat `Ping` and `Pong`.
macro_rules! wire {
    ($side:ty, $in:ident, $out:ident) => {
        impl Wire for $side {
            type In = $in;
            type Out = $out;
            fn ping() -> $out {
                $out::Ping
            }
            fn pong() -> $out {
                $out::Pong
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
