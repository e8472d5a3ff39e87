//! A WebSocket test client that speaks permessage-deflate, which tokio-tungstenite does not: its
//! own handshake and frames over a real socket, deflate from flate2, so a test can send
//! compressed, fragmented or broken messages and see how each message came back (compressed or
//! not, and in how many bytes).

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::RECV_TIMEOUT;

/// What Chromium offers.
pub const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The empty stored block that ends a sync flush; senders strip it, receivers add it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One frame as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1 bit: the first frame of a compressed message.
    pub rsv1: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload as sent (compressed where it was).
    pub payload: Vec<u8>,
}

/// What the server sent, message by message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A text or binary message.
    Message {
        /// 1 (text) or 2 (binary).
        opcode: u8,
        /// It came compressed (RSV1 set).
        compressed: bool,
        /// Its payload, inflated if it came compressed.
        data: Vec<u8>,
        /// Its payload's size on the wire.
        wire: usize,
    },
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame (code and reason), or the end of the stream (`None`).
    Close(Option<(u16, String)>),
}

impl Got {
    /// The text of a text message, and whether it came compressed; panics otherwise.
    pub fn text(&self) -> (&str, bool) {
        match self {
            Got::Message { opcode: 1, compressed, data, .. } => (std::str::from_utf8(data).unwrap(), *compressed),
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A client connection that may have negotiated permessage-deflate.
pub struct DeflateClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
}

/// `data` deflated as one message with no context takeover (sync flush, tail stripped), as a
/// browser sends it.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates one message's payload (with a fresh inflater: no context takeover).
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut z = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let before = z.total_in();
        z.decompress_vec(&input[(before as usize)..], &mut out, FlushDecompress::Sync).expect("valid deflate data");
        if z.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

impl DeflateClient {
    /// Connects to `ws://host:port/` offering `offer` as `Sec-WebSocket-Extensions` (none when
    /// `None`); panics unless the server answers 101.
    pub async fn connect(url: &str, offer: Option<&str>) -> Self {
        let addr = url.trim_start_matches("ws://").trim_end_matches('/');
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        let ext = offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n =
                tokio::time::timeout(RECV_TIMEOUT, stream.read(&mut chunk)).await.expect("handshake answer").unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_string())
        });
        Self { stream, buf: buf.split_off(head_end), extensions }
    }

    /// Sends one masked frame: `first` is its first byte (FIN, RSV bits, opcode).
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).await.unwrap();
    }

    /// Sends a text message compressed in one frame.
    pub async fn send_compressed(&mut self, text: &str) {
        self.send_frame(0xc1, &deflate(text.as_bytes())).await;
    }

    /// Sends a text message uncompressed.
    pub async fn send_plain(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes()).await;
    }

    /// The next frame; `None` at the end of the stream or after `RECV_TIMEOUT`.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(RECV_TIMEOUT, self.stream.read(&mut chunk)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next message or control frame, fragments put together and inflated.
    pub async fn recv(&mut self) -> Got {
        let Some(first) = self.read_frame().await else { return Got::Close(None) };
        match first.opcode {
            8 => {
                let code = (first.payload.len() >= 2).then(|| u16::from_be_bytes([first.payload[0], first.payload[1]]));
                return Got::Close(code.map(|c| (c, String::from_utf8_lossy(&first.payload[2..]).into_owned())));
            }
            9 => return Got::Ping(first.payload),
            10 => return Got::Pong(first.payload),
            _ => {}
        }
        let (opcode, compressed) = (first.opcode, first.rsv1);
        let mut payload = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.read_frame().await.expect("the rest of a fragmented message");
            assert_eq!(next.opcode, 0, "a continuation frame");
            payload.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        let wire = payload.len();
        let data = if compressed { inflate(&payload) } else { payload };
        Got::Message { opcode, compressed, data, wire }
    }

    /// The next message, skipping pings and pongs.
    pub async fn recv_message(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Ping(_) | Got::Pong(_) => {}
                other => return other,
            }
        }
    }

    /// Asserts that nothing arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(got) = tokio::time::timeout(quiet, self.recv()).await {
            panic!("expected nothing, got {got:?}");
        }
    }
}

/// One whole frame at the start of `buf`, and its length in bytes.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (mut at, len) = match buf[1] & 0x7f {
        126 => (4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize),
        127 => (10, u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize),
        n => (2, n as usize),
    };
    assert_eq!(buf[1] & 0x80, 0, "a server frame is never masked");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((Frame { fin: buf[0] & 0x80 != 0, rsv1: buf[0] & 0x40 != 0, opcode: buf[0] & 0x0f, payload }, at))
}
