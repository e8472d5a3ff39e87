//! PHP GatewayWorker's wire formats on the link engine: the framings of its two protocols
//! (`GatewayProtocol.php`'s packets, `Register.php`'s JSON lines) and the two ends of the
//! register protocol. The gateway's end of a PHP worker link is the gateway's own (it encodes
//! client events with gateway state); it uses [`Packets`].
//!
//! The formats themselves are sans-IO in `gw-gatewayworker-protocol`.

use bytes::BytesMut;
use gw_gatewayworker_protocol::register::{self, MAX_LINE, ToRegister};
use gw_gatewayworker_protocol::{Packet, PacketDecoder};

use crate::LinkError;
use crate::framed::Framing;
use crate::wire::{Beat, Wire};

/// `GatewayProtocol.php`'s framing: the 28-byte header announces the packet's length.
#[derive(Debug, Clone, Copy)]
pub struct Packets(PacketDecoder);

impl Packets {
    /// Packets of at most `max` bytes, header included.
    pub fn new(max: usize) -> Self {
        Self(PacketDecoder::new(max))
    }

    /// From now on packets of at most `max` bytes (a connection's limit grows once it has
    /// authenticated).
    pub fn set_max(&mut self, max: usize) {
        self.0 = PacketDecoder::new(max);
    }
}

impl Framing for Packets {
    type Frame = Packet;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, LinkError> {
        Ok(self.0.decode(buf)?)
    }
}

/// Workerman's `Text` framing: one line per message, ended by `\n`. Blank lines are skipped.
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    max: usize,
}

impl Lines {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl Default for Lines {
    /// Lines of at most [`MAX_LINE`] bytes, the register protocol's limit.
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl Framing for Lines {
    type Frame = BytesMut;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LinkError> {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            if end > self.max {
                return Err(LinkError::LineTooLong(self.max));
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if !line.trim_ascii().is_empty() {
                return Ok(Some(line));
            }
        }
        if buf.len() > self.max {
            return Err(LinkError::LineTooLong(self.max));
        }
        Ok(None)
    }
}

/// A register's end of a link to a PHP BusinessWorker, GatewayClient or gateway: their
/// messages in, `broadcast_addresses` out (the addresses listed). PHP peers ping every 25 s;
/// the register answers nothing, as `Register.php` does.
#[derive(Debug, Default)]
pub struct PhpRegisterSide;

impl Wire for PhpRegisterSide {
    type In = ToRegister;
    type Out = Vec<String>;
    type Framing = Lines;

    fn decode(line: BytesMut) -> Result<ToRegister, LinkError> {
        Ok(register::parse(&line)?)
    }

    fn encode(&mut self, addresses: Vec<String>, out: &mut Vec<u8>, _max_frame: usize) -> Result<(), LinkError> {
        out.extend_from_slice(&register::broadcast_addresses(&addresses));
        Ok(())
    }

    fn ping() -> Option<Vec<String>> {
        None
    }

    fn pong() -> Option<Vec<String>> {
        None
    }

    fn beat(msg: &ToRegister) -> Option<Beat> {
        matches!(msg, ToRegister::Ping).then_some(Beat::Pong)
    }
}

/// A gateway's end of its link to a GatewayWorker-protocol register: `gateway_connect`, then a
/// ping every heartbeat interval (25 s, as `Gateway.php`); what the register says is read and
/// ignored.
#[derive(Debug, Default)]
pub struct PhpAnnounceSide;

impl Wire for PhpAnnounceSide {
    type In = ();
    type Out = ToRegister;
    type Framing = Lines;

    fn decode(_line: BytesMut) -> Result<(), LinkError> {
        Ok(())
    }

    fn encode(&mut self, msg: ToRegister, out: &mut Vec<u8>, _max_frame: usize) -> Result<(), LinkError> {
        out.extend_from_slice(&register::encode(&msg));
        Ok(())
    }

    fn ping() -> Option<ToRegister> {
        Some(ToRegister::Ping)
    }

    fn pong() -> Option<ToRegister> {
        None
    }

    fn beat(_msg: &()) -> Option<Beat> {
        Some(Beat::Pong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newlines_skip_blank_ones_and_refuse_long_ones() {
        let mut lines = Lines::new(8);
        let mut buf = BytesMut::from(&b"ab\r\n\n  \ncd\nef"[..]);
        assert_eq!(lines.decode(&mut buf).unwrap().as_deref(), Some(&b"ab\r"[..]));
        assert_eq!(lines.decode(&mut buf).unwrap().as_deref(), Some(&b"cd"[..]));
        assert_eq!(lines.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"ef");
        let mut long = BytesMut::from(&b"123456789"[..]);
        assert!(matches!(lines.decode(&mut long), Err(LinkError::LineTooLong(8))));
        let mut long_ended = BytesMut::from(&b"123456789\n"[..]);
        assert!(matches!(lines.decode(&mut long_ended), Err(LinkError::LineTooLong(8))));
    }

    #[test]
    fn packets_limit_can_grow_after_authentication() {
        let mut p = Packet::new(gw_gatewayworker_protocol::Cmd::SendToAll);
        p.body = bytes::Bytes::from(vec![b'x'; 100]);
        let mut bytes = Vec::new();
        p.encode(&mut bytes).unwrap();
        let mut framing = Packets::new(64);
        assert!(matches!(framing.decode(&mut BytesMut::from(&bytes[..])), Err(LinkError::Packet(_))));
        framing.set_max(1024);
        assert_eq!(framing.decode(&mut BytesMut::from(&bytes[..])).unwrap(), Some(p));
    }

    /// The register's end on the engine: sends the list once.
    struct Register(bool);
    impl crate::Handler<PhpRegisterSide> for Register {
        async fn on_message(&mut self, _msg: ToRegister) -> Result<(), LinkError> {
            Ok(())
        }
        async fn outgoing(&mut self) -> Option<Vec<String>> {
            if std::mem::replace(&mut self.0, true) {
                return std::future::pending().await;
            }
            Some(vec!["127.0.0.1:2900".into()])
        }
    }

    #[tokio::test]
    async fn the_register_protocol_runs_on_the_engine_in_lines() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (near, far) = tokio::io::duplex(1 << 16);
        let (near_r, near_w) = tokio::io::split(near);
        let (far_r, mut far_w) = tokio::io::split(far);
        let options = crate::LinkOptions {
            max_frame: 1 << 16,
            heartbeat_interval: std::time::Duration::from_secs(1),
            heartbeat_timeout: std::time::Duration::MAX,
            flush_timeout: std::time::Duration::from_secs(1),
            write_delay: std::time::Duration::ZERO,
        };
        let engine = crate::LinkEngine::<PhpRegisterSide>::new(options, 4);
        let reader = crate::FrameReader::with_framing(near_r, Lines::default(), BytesMut::new());
        let close = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(async move { engine.run(reader, near_w, &mut Register(false), &close).await });
        far_w.write_all(b"{\"event\":\"ping\"}\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(far_r).lines();
        let line = lines.next_line().await.unwrap().unwrap();
        assert_eq!(line, r#"{"event":"broadcast_addresses","addresses":["127.0.0.1:2900"]}"#);
        far_w.write_all(b"garbage\n").await.unwrap();
        assert!(matches!(run.await.unwrap(), Err(LinkError::RegisterLine(_))));
    }
}
