//! The gateway's end of a GatewayWorker-protocol link, as the link engine sees it: PHP packets
//! in; replies to synchronous queries and client events out. A PHP worker cannot acknowledge,
//! so an event counts as handled once the write that carried it succeeded.

use std::sync::Arc;

use gw_gatewayworker_protocol::{Cmd, Packet};
use gw_link::LinkError;
use gw_link::gatewayworker::Packets;
use gw_link::wire::{Beat, Wire};
use gw_proto::Event;

use super::PhpSide;
use super::events::EventEncoder;
use crate::router::WorkerLink;

/// What the gateway writes to a PHP peer.
pub(super) enum ToPhp {
    /// A synchronous query's answer, already framed (`pack('N', len) . serialize(answer)`).
    Reply(Vec<u8>),
    /// A client event for a PHP BusinessWorker, from `link`'s queue.
    Event { event: Event, link: Arc<WorkerLink> },
}

/// Encodes what goes to one PHP peer and acknowledges events once written.
pub(super) struct PhpWire {
    encoder: EventEncoder,
    /// The last event encoded since the last write, with its link.
    unwritten: Option<(Arc<WorkerLink>, u64)>,
}

impl PhpWire {
    pub fn new(side: Arc<PhpSide>) -> Self {
        Self { encoder: EventEncoder::new(side), unwritten: None }
    }
}

impl Wire for PhpWire {
    type In = Packet;
    type Out = ToPhp;
    type Framing = Packets;

    fn decode(packet: Packet) -> Result<Packet, LinkError> {
        Ok(packet)
    }

    fn encode(&mut self, msg: ToPhp, out: &mut Vec<u8>, _max_frame: usize) -> Result<(), LinkError> {
        match msg {
            ToPhp::Reply(bytes) => out.extend_from_slice(&bytes),
            ToPhp::Event { event, link } => {
                self.encoder.encode(&event, out);
                self.unwritten = Some((link, event.seq));
            }
        }
        Ok(())
    }

    fn written(&mut self) {
        if let Some((link, seq)) = self.unwritten.take() {
            // The gateway acknowledges what it wrote itself, in order: never ahead.
            let _ = link.ack(seq);
        }
    }

    /// PHP's gateway pings its workers every 25 s to keep the connection open, but nobody
    /// answers or checks; a `GatewayClient` connection would take a ping for its answer. None.
    fn ping() -> Option<ToPhp> {
        None
    }

    fn pong() -> Option<ToPhp> {
        None
    }

    fn beat(packet: &Packet) -> Option<Beat> {
        (packet.cmd() == Some(Cmd::Ping)).then_some(Beat::Pong)
    }
}
