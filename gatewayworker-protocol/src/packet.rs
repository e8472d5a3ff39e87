//! The packets of `GatewayProtocol.php`: a 28-byte big-endian header (`NCNnNnNCnN`), then
//! `ext_len` bytes of ext data, then the body up to `pack_len`. Replies to synchronous queries are
//! framed differently: a 4-byte big-endian length, then a PHP-serialized value ([`encode_reply`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Header length, `GatewayProtocol::HEAD_LEN`.
pub const HEAD_LEN: usize = 28;

/// `FLAG_BODY_IS_SCALAR`: the body is the raw string, not a serialized value.
pub const FLAG_BODY_IS_SCALAR: u8 = 0x01;
/// `FLAG_NOT_CALL_ENCODE`: send the body to the client as is (PHP pre-encoded it).
pub const FLAG_NOT_CALL_ENCODE: u8 = 0x02;

/// The command numbers of `GatewayProtocol.php`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Cmd {
    OnConnect = 1,
    OnMessage = 3,
    OnClose = 4,
    SendToOne = 5,
    SendToAll = 6,
    Kick = 7,
    Destroy = 8,
    UpdateSession = 9,
    GetAllClientSessions = 10,
    IsOnline = 11,
    BindUid = 12,
    UnbindUid = 13,
    SendToUid = 14,
    GetClientIdByUid = 15,
    BatchGetClientIdByUid = 16,
    JoinGroup = 20,
    LeaveGroup = 21,
    SendToGroup = 22,
    GetClientSessionsByGroup = 23,
    GetClientCountByGroup = 24,
    Select = 25,
    GetGroupIdList = 26,
    Ungroup = 27,
    BatchGetClientCountByGroup = 28,
    WorkerConnect = 200,
    Ping = 201,
    GatewayClientConnect = 202,
    GetSessionByClientId = 203,
    SetSession = 204,
    OnWebSocketConnect = 205,
}

impl Cmd {
    /// Every command, for tests and fuzzing.
    pub const ALL: [Cmd; 30] = [
        Cmd::OnConnect,
        Cmd::OnMessage,
        Cmd::OnClose,
        Cmd::SendToOne,
        Cmd::SendToAll,
        Cmd::Kick,
        Cmd::Destroy,
        Cmd::UpdateSession,
        Cmd::GetAllClientSessions,
        Cmd::IsOnline,
        Cmd::BindUid,
        Cmd::UnbindUid,
        Cmd::SendToUid,
        Cmd::GetClientIdByUid,
        Cmd::BatchGetClientIdByUid,
        Cmd::JoinGroup,
        Cmd::LeaveGroup,
        Cmd::SendToGroup,
        Cmd::GetClientSessionsByGroup,
        Cmd::GetClientCountByGroup,
        Cmd::Select,
        Cmd::GetGroupIdList,
        Cmd::Ungroup,
        Cmd::BatchGetClientCountByGroup,
        Cmd::WorkerConnect,
        Cmd::Ping,
        Cmd::GatewayClientConnect,
        Cmd::GetSessionByClientId,
        Cmd::SetSession,
        Cmd::OnWebSocketConnect,
    ];

    /// The command with this number, if it is one.
    pub fn from_u8(n: u8) -> Option<Cmd> {
        Cmd::ALL.into_iter().find(|c| *c as u8 == n)
    }
}

/// The fixed fields of a packet (everything but the lengths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Command number; see [`Cmd::from_u8`].
    pub cmd: u8,
    /// The gateway's advertised IPv4 address as a big-endian integer (`ip2long`).
    pub local_ip: u32,
    /// The gateway's advertised internal port.
    pub local_port: u16,
    /// The client's IPv4 address as a big-endian integer (`ip2long`).
    pub client_ip: u32,
    /// The client's port.
    pub client_port: u16,
    /// The client's number on its gateway.
    pub connection_id: u32,
    /// Bit flags of the payload (`FLAG_BODY_IS_SCALAR`, `FLAG_NOT_CALL_ENCODE`).
    pub flag: u8,
    /// The public port the client connected to.
    pub gateway_port: u16,
}

/// One packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    /// The 28-byte header.
    pub header: Header,
    /// Session, uid, group or JSON parameters, depending on the command.
    pub ext_data: Bytes,
    /// The message, raw when `flag & FLAG_BODY_IS_SCALAR`, else a PHP-serialized value.
    pub body: Bytes,
}

impl Packet {
    /// A packet with this command and nothing else, like `GatewayProtocol::$empty`.
    pub fn new(cmd: Cmd) -> Self {
        Self { header: Header { cmd: cmd as u8, ..Header::default() }, ..Self::default() }
    }

    /// The command, if known.
    pub fn cmd(&self) -> Option<Cmd> {
        Cmd::from_u8(self.header.cmd)
    }

    /// The body is a raw string rather than a serialized value.
    pub fn body_is_scalar(&self) -> bool {
        self.header.flag & FLAG_BODY_IS_SCALAR != 0
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), PacketError> {
        let len = HEAD_LEN + self.ext_data.len() + self.body.len();
        let pack_len =
            u32::try_from(len).map_err(|_| PacketError::TooLarge { len: len as u64, max: u32::MAX as usize })?;
        let h = &self.header;
        out.reserve(len);
        out.put_u32(pack_len);
        out.put_u8(h.cmd);
        out.put_u32(h.local_ip);
        out.put_u16(h.local_port);
        out.put_u32(h.client_ip);
        out.put_u16(h.client_port);
        out.put_u32(h.connection_id);
        out.put_u8(h.flag);
        out.put_u16(h.gateway_port);
        out.put_u32(self.ext_data.len() as u32);
        out.extend_from_slice(&self.ext_data);
        out.extend_from_slice(&self.body);
        Ok(())
    }
}

/// Why bytes are not a packet. The connection cannot be resynchronised after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// `pack_len` is below the header size.
    #[error("pack_len {0} is shorter than the 28-byte header")]
    TooShort(u32),
    /// `pack_len` is above the limit.
    #[error("pack_len {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// `ext_len` does not fit in the packet.
    #[error("ext_len {ext_len} exceeds the {room} bytes after the header")]
    ExtTooLong {
        /// Announced length.
        ext_len: u32,
        /// Bytes there are.
        room: usize,
    },
}

/// Splits a byte stream into packets, refusing any longer than `max` before buffering it.
#[derive(Debug, Clone, Copy)]
pub struct PacketDecoder {
    max: usize,
}

impl PacketDecoder {
    /// A decoder for packets of at most `max` bytes, header included.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(HEAD_LEN) }
    }

    /// The next complete packet in `buf`, taken out of it; `None` until one has fully arrived.
    /// Checks the lengths as soon as the header is in, so a bad length never waits for its body.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, PacketError> {
        if buf.len() < HEAD_LEN {
            return Ok(None);
        }
        let pack_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if (pack_len as usize) < HEAD_LEN {
            return Err(PacketError::TooShort(pack_len));
        }
        if pack_len as usize > self.max {
            return Err(PacketError::TooLarge { len: pack_len as u64, max: self.max });
        }
        let ext_len = u32::from_be_bytes([buf[24], buf[25], buf[26], buf[27]]);
        let room = pack_len as usize - HEAD_LEN;
        if ext_len as usize > room {
            return Err(PacketError::ExtTooLong { ext_len, room });
        }
        if buf.len() < pack_len as usize {
            buf.reserve(pack_len as usize - buf.len());
            return Ok(None);
        }
        let mut p = buf.split_to(pack_len as usize);
        p.advance(4);
        let header = Header {
            cmd: p.get_u8(),
            local_ip: p.get_u32(),
            local_port: p.get_u16(),
            client_ip: p.get_u32(),
            client_port: p.get_u16(),
            connection_id: p.get_u32(),
            flag: p.get_u8(),
            gateway_port: p.get_u16(),
        };
        p.advance(4);
        let ext_data = p.split_to(ext_len as usize).freeze();
        Ok(Some(Packet { header, ext_data, body: p.freeze() }))
    }
}

/// A synchronous query's reply as the gateway sends it: `pack('N', strlen($s)) . $s`.
pub fn encode_reply(serialized: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + serialized.len());
    out.put_u32(serialized.len() as u32);
    out.extend_from_slice(serialized);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GatewayProtocol::encode` of CMD_SEND_TO_ONE to connection 7 with body "hi" and ext "x",
    /// made with PHP 8.2: `bin2hex(GatewayProtocol::encode([... 'connection_id'=>7,
    /// 'ext_data'=>'x', 'body'=>'hi']))` (the scalar flag is set by `encode`).
    const PHP_SEND_TO_ONE: &str = "0000001f050000000000000000000000000000000701000000000001786869";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn decodes_what_php_encodes_and_encodes_it_back() {
        let bytes = hex(PHP_SEND_TO_ONE);
        let mut buf = BytesMut::from(&bytes[..]);
        let p = PacketDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(p.cmd(), Some(Cmd::SendToOne));
        assert_eq!(p.header.connection_id, 7);
        assert!(p.body_is_scalar());
        assert_eq!(&p.ext_data[..], b"x");
        assert_eq!(&p.body[..], b"hi");
        let mut out = Vec::new();
        p.encode(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn waits_for_a_whole_packet_and_keeps_the_rest() {
        let mut two = hex(PHP_SEND_TO_ONE);
        two.extend(hex(PHP_SEND_TO_ONE));
        let d = PacketDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&two[..10]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&two[10..40]);
        assert!(d.decode(&mut buf).unwrap().is_some());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&two[40..]);
        assert!(d.decode(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_lengths_are_errors_before_any_body_arrives() {
        let d = PacketDecoder::new(1024);
        let mut header = hex(PHP_SEND_TO_ONE)[..28].to_vec();
        header[..4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(d.decode(&mut BytesMut::from(&header[..])), Err(PacketError::TooShort(0)));
        header[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.decode(&mut BytesMut::from(&header[..])),
            Err(PacketError::TooLarge { len: u32::MAX as u64, max: 1024 })
        );
        header[..4].copy_from_slice(&40u32.to_be_bytes());
        header[24..28].copy_from_slice(&13u32.to_be_bytes());
        assert_eq!(d.decode(&mut BytesMut::from(&header[..])), Err(PacketError::ExtTooLong { ext_len: 13, room: 12 }));
    }

    #[test]
    fn every_command_number_round_trips() {
        for c in Cmd::ALL {
            assert_eq!(Cmd::from_u8(c as u8), Some(c));
        }
        assert_eq!(Cmd::from_u8(2), None);
        assert_eq!(Cmd::from_u8(255), None);
    }

    #[test]
    fn replies_are_length_prefixed() {
        assert_eq!(encode_reply(b"i:1;"), b"\0\0\0\x04i:1;");
    }
}
