//! A minimal WebSocket client for holding very many idle connections in one generator process.
//!
//! tokio-tungstenite keeps a read buffer, a write buffer and a frame state machine per connection;
//! for a million clients the generator would then weigh more than the gateways it measures. This
//! client keeps nothing but the socket: the handshake is one fixed request, frames are parsed from
//! a stack buffer (`decode` is sans-IO), and only an incomplete frame is ever copied to the heap.
//! It speaks just what the scale scenario needs: text frames in, ping/pong both ways, close.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// RFC 6455's sample key and its accept value: every connection may use the same key, the
/// server only proves that it speaks WebSocket.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The longest handshake response accepted.
const MAX_RESPONSE: usize = 4096;
/// The largest frame payload accepted from the server (the scenario's messages are tiny).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Client frames must be masked (RFC 6455 5.3); the key need not be secret for a load generator.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Frame opcodes this client handles.
pub const TEXT: u8 = 0x1;
/// Close.
pub const CLOSE: u8 = 0x8;
/// Ping.
pub const PING: u8 = 0x9;
/// Pong.
pub const PONG: u8 = 0xa;

/// Why a connection could not be opened, by the resource or party that refused it.
#[derive(Debug)]
pub enum ConnectError {
    /// Creating or binding the socket, or connecting, failed with this OS error.
    Io(&'static str, io::Error),
    /// No SYN-ACK or handshake answer in time (a full kernel table drops SYNs silently).
    Timeout,
    /// The server answered the upgrade with something other than `101`.
    Rejected(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(step, e) => write!(f, "{step}: {e}"),
            Self::Timeout => write!(f, "timed out"),
            Self::Rejected(line) => write!(f, "upgrade refused: {line}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens a TCP connection from `source` (port chosen by the kernel) to `addr` and upgrades it to
/// WebSocket on `path`; bytes the server sent right after its response are returned with it.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    timeout: Duration,
) -> Result<(TcpStream, Vec<u8>), ConnectError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| ConnectError::Io("socket", e))?;
    if let Some(src) = source {
        socket.bind(SocketAddr::new(src, 0)).map_err(|e| ConnectError::Io("bind", e))?;
    }
    let opened = async {
        let mut stream = socket.connect(addr).await.map_err(|e| ConnectError::Io("connect", e))?;
        // Torn down by the thousand at the end: a reset leaves no TIME_WAIT socket holding a
        // source port, nor a conntrack entry for two minutes.
        stream.set_zero_linger().map_err(|e| ConnectError::Io("setsockopt", e))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| ConnectError::Io("handshake", e))?;
        let mut buf = Vec::with_capacity(256);
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() >= MAX_RESPONSE {
                return Err(ConnectError::Rejected("response header too long".into()));
            }
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.map_err(|e| ConnectError::Io("handshake", e))?;
            if n == 0 {
                return Err(ConnectError::Io("handshake", io::ErrorKind::UnexpectedEof.into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        check_response(&buf[..end])?;
        let rest = buf[end..].to_vec();
        Ok((stream, rest))
    };
    tokio::time::timeout(timeout, opened).await.map_err(|_| ConnectError::Timeout)?
}

/// Accepts a `101` response carrying the accept value of [`KEY`].
fn check_response(head: &[u8]) -> Result<(), ConnectError> {
    let text = String::from_utf8_lossy(head);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(ConnectError::Rejected(status.to_string()));
    }
    let accepted = text.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT)
    });
    if accepted { Ok(()) } else { Err(ConnectError::Rejected("wrong Sec-WebSocket-Accept".into())) }
}

/// One frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The opcode (continuation frames keep 0: the scenario never sees fragmented messages,
    /// and they are counted as unexpected rather than reassembled).
    pub opcode: u8,
    /// The unmasked payload.
    pub payload: &'a [u8],
}

/// A server frame that breaks the protocol (or this client's limits).
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Server frames must not be masked (RFC 6455 5.1).
    Masked,
    /// Longer than [`MAX_PAYLOAD`].
    TooLong(u64),
}

/// Decodes the frame at the start of `buf`: the frame and the bytes it took, or `None` when `buf`
/// holds only part of it.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, head) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD as u64 {
        return Err(FrameError::TooLong(len));
    }
    let end = head + len as usize;
    Ok(buf.get(head..end).map(|payload| (Frame { opcode: b0 & 0x0f, payload }, end)))
}

/// A masked client frame (FIN set) with a payload of at most 125 bytes (control frame size).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut out = Vec::with_capacity(6 + payload.len());
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_medium_and_partial_frames() {
        assert_eq!(decode(&[0x81, 0x02, b'h', b'i', 0xff]).unwrap(), Some((Frame { opcode: TEXT, payload: b"hi" }, 4)));
        assert_eq!(decode(&[0x81, 0x02, b'h']).unwrap(), None);
        assert_eq!(decode(&[0x89]).unwrap(), None);
        let mut medium = vec![0x81, 126, 0x01, 0x00];
        medium.extend(std::iter::repeat_n(b'x', 256));
        let (f, used) = decode(&medium).unwrap().unwrap();
        assert_eq!((f.payload.len(), used), (256, 260));
        assert_eq!(decode(&medium[..3]).unwrap(), None);
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(decode(&long), Err(FrameError::TooLong(70_000)));
        assert_eq!(decode(&[0x81, 0x81, 0, 0, 0, 0, b'a']), Err(FrameError::Masked));
    }

    #[test]
    fn control_frames_are_masked() {
        assert_eq!(control_frame(PING, b""), vec![0x89, 0x80, 0x37, 0xfa, 0x21, 0x3d]);
        let pong = control_frame(PONG, b"ab");
        assert_eq!(pong[..2], [0x8a, 0x82]);
        assert_eq!([pong[6] ^ MASK[0], pong[7] ^ MASK[1]], *b"ab");
    }

    #[test]
    fn handshake_answer_is_checked() {
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n");
        assert!(check_response(ok.as_bytes()).is_ok());
        assert!(matches!(check_response(b"HTTP/1.1 503 Busy\r\n\r\n"), Err(ConnectError::Rejected(_))));
        let wrong = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(check_response(wrong.as_bytes()), Err(ConnectError::Rejected(_))));
    }
}
