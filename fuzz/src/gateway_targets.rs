//! What the gateway's client-framing fuzz target runs, and what it checks: the sans-IO decoders
//! of the `text` (newline-delimited), `frame` (4-byte big-endian length prefix) and `tcp` (raw
//! chunks) listeners in `gateway/src/framing.rs`, fed a byte stream in reads of a chosen size the
//! way `StreamTransport::recv` feeds them.
//!
//! Shared word for word with the stable replay test `gateway/tests/fuzz_corpus.rs` (included
//! with `#[path]`). Depends only on `gw-gateway` and `bytes`. Returns the heap budget of the input
//! like the proto targets.

use bytes::BytesMut;
use gw_gateway::framing::{Framing, FramingError, StreamProtocol};

/// Heap the scaffolding itself may use.
const SLACK: usize = 64 * 1024;

/// Names of the targets in this file, which are also the corpus directories they own.
pub const TARGETS: [&str; 1] = ["client_framing"];

/// Runs the target `name` on `data`; `None` if the name is not one of [`TARGETS`].
pub fn run(name: &str, data: &[u8]) -> Option<usize> {
    Some(match name {
        "client_framing" => client_framing(data),
        _ => return None,
    })
}

/// `client_framing`: the first byte picks the protocol (bits 0-1), the message limit (bits 2-3)
/// and the read size (bits 4-7); the rest is what the client sends.
pub fn client_framing(data: &[u8]) -> usize {
    let Some((&ctl, stream)) = data.split_first() else { return SLACK };
    let protocol = match ctl & 3 {
        0 | 3 => StreamProtocol::Text,
        1 => StreamProtocol::Frame,
        _ => StreamProtocol::Raw,
    };
    let max = [1, 4, 64, 1 << 20][usize::from((ctl >> 2) & 3)];
    let read = [1, 2, 3, 7, 16, 64, 100, 512, 1000, 4096, 1, 1, 5, 13, 8192, 65536][usize::from(ctl >> 4)];
    let mut framing = Framing::new(protocol, max);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    'stream: for piece in stream.chunks(read) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.clone();
            match framing.decode(&mut buf) {
                Ok(Some(msg)) => {
                    let consumed = before.len() - buf.len();
                    assert_eq!(&before[consumed..], &buf[..], "the decoder changed bytes it did not consume");
                    let taken = &before[..consumed];
                    match protocol {
                        StreamProtocol::Text => {
                            // One line: the message, an optional '\r', then the first '\n'.
                            assert_eq!(taken.last(), Some(&b'\n'));
                            assert!(!msg.contains(&b'\n'), "a line holds a newline");
                            let line = &taken[..consumed - 1];
                            let expected = line.strip_suffix(b"\r").unwrap_or(line);
                            assert_eq!(&msg[..], expected);
                        }
                        StreamProtocol::Frame => {
                            assert_eq!(&taken[..4], &(msg.len() as u32).to_be_bytes());
                            assert_eq!(&taken[4..], &msg[..]);
                        }
                        StreamProtocol::Raw => {
                            assert!(!msg.is_empty());
                            assert_eq!(taken, &msg[..]);
                            assert_eq!(msg.len(), before.len().min(max));
                        }
                    }
                    assert!(msg.len() <= max, "{protocol:?} message of {} bytes, limit {max}", msg.len());
                    // Encoding it again gives back the same message (text lines must not end
                    // in '\r': the protocol drops one on the way in).
                    if protocol != StreamProtocol::Text || !msg.ends_with(b"\r") {
                        let mut out = BytesMut::new();
                        framing.encode(&msg, &mut out);
                        let again = Framing::new(protocol, max).decode(&mut out).expect("own encoding decodes");
                        assert_eq!(again.as_deref(), Some(&msg[..]), "encode/decode round trip");
                        assert!(out.is_empty(), "own encoding left bytes over");
                    }
                }
                Ok(None) => {
                    assert_eq!(buf, before, "an incomplete message consumed bytes");
                    match protocol {
                        StreamProtocol::Text => {
                            assert!(!buf.contains(&b'\n'));
                            assert!(
                                buf.len() <= max + 1,
                                "{} bytes buffered without a line end, limit {max}",
                                buf.len()
                            );
                        }
                        StreamProtocol::Frame => {
                            if buf.len() >= 4 {
                                let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                                assert!(announced <= max && buf.len() < 4 + announced);
                            }
                        }
                        StreamProtocol::Raw => assert!(buf.is_empty()),
                    }
                    break;
                }
                Err(e) => {
                    match (protocol, e) {
                        (StreamProtocol::Text, FramingError::LineTooLong { max: m }) => {
                            assert_eq!(m, max);
                            let end = before.iter().position(|b| *b == b'\n').unwrap_or(before.len());
                            let line = &before[..end];
                            let line = if end < before.len() { line.strip_suffix(b"\r").unwrap_or(line) } else { line };
                            assert!(line.len() > max, "a line of {} bytes refused, limit {max}", line.len());
                        }
                        (StreamProtocol::Frame, FramingError::FrameTooLarge { len, max: m }) => {
                            assert_eq!(m, max);
                            assert_eq!(&before[..4], &(len as u32).to_be_bytes());
                            assert!(len > max);
                        }
                        (p, e) => panic!("{p:?} decoder failed with {e:?}"),
                    }
                    break 'stream;
                }
            }
        }
        // Nothing beyond one message's worth (and one read) is ever buffered.
        assert!(buf.len() <= max + 4 + read, "{} bytes buffered, limit {max}", buf.len());
    }
    8 * (fed + read) + SLACK
}

/// Seed inputs: a few messages in each protocol, an endless line, a huge frame announcement.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name: &str, ctl: u8, body: &[u8]| {
        out.push(("client_framing", format!("seed-{name}"), [&[ctl][..], body].concat()));
    };
    // ctl: protocol | limit << 2 | read << 4 (protocol 0 = text, 1 = frame, 2 = raw; limit 2 = 64
    // bytes, 3 = 1 MiB; read 4 = 16 bytes).
    let text = 0;
    add("text", text | 3 << 2 | 4 << 4, b"hello\r\nworld\n\n{\"type\":\"say\",\"text\":\"hi\"}\npartial");
    add("text-long-line", text | 2 << 2 | 9 << 4, &[b'x'; 200]);
    let mut frames = Vec::new();
    for m in [&b"abc"[..], b"", &[0xff; 40]] {
        frames.extend_from_slice(&(m.len() as u32).to_be_bytes());
        frames.extend_from_slice(m);
    }
    frames.extend_from_slice(&[0, 0, 0, 9, 1]);
    add("frame", 1 | 2 << 2 | 3 << 4, &frames);
    add("frame-huge", 1 | 3 << 2, &[0xff, 0xff, 0xff, 0xff, 0]);
    add("raw", 2 | 1 << 2 | 2 << 4, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    out
}
