//! Sans-IO framing of the TCP client protocols: `text` (newline-delimited, a trailing `\r` is
//! dropped), `frame` (4-byte big-endian length prefix) and `tcp` (raw chunks). Every decoder
//! checks its limit before buffering more, so a peer that never ends a line or announces a huge
//! frame is refused instead of growing memory.

use bytes::{Buf, Bytes, BytesMut};

/// Why a client's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A `text` line grew past the limit without its newline.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// A `frame` prefix announced more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The client protocol of a TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// `text`: newline-delimited messages.
    Text,
    /// `frame`: each message after its length as 4 bytes, big-endian.
    Frame,
    /// `tcp`: whatever each read returns is a message.
    Raw,
}

/// Decoder and encoder of one protocol with a message size limit.
///
/// One decoder per byte stream: between calls the caller only appends to the buffer (or lets
/// `decode` take from its front), because the text decoder remembers how far it has already
/// looked for a newline. A line arriving a byte at a time is scanned once in all, not once per
/// read.
#[derive(Debug, Clone)]
pub struct Framing {
    /// The protocol spoken.
    pub protocol: StreamProtocol,
    /// The largest message taken, in bytes.
    pub max: usize,
    /// Bytes at the front of the buffer known to hold no newline.
    scanned: usize,
}

impl Framing {
    /// A fresh decoder of `protocol` refusing messages over `max` bytes.
    pub fn new(protocol: StreamProtocol, max: usize) -> Self {
        Self { protocol, max, scanned: 0 }
    }

    /// Takes the next complete message off the front of `buf`, or `None` if more bytes are
    /// needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.protocol {
            StreamProtocol::Text => {
                let from = self.scanned.min(buf.len());
                let found = buf[from..].iter().position(|b| *b == b'\n').map(|i| from + i);
                self.scanned = if found.is_some() { 0 } else { buf.len() };
                self.line(buf, found)
            }
            StreamProtocol::Frame => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if len > self.max {
                    return Err(FramingError::FrameTooLarge { len, max: self.max });
                }
                if buf.len() < 4 + len {
                    return Ok(None);
                }
                buf.advance(4);
                Ok(Some(buf.split_to(len).freeze()))
            }
            StreamProtocol::Raw => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(self.max);
                Ok(Some(buf.split_to(n).freeze()))
            }
        }
    }

    /// The line ending at the newline at `newline`, if any, within the limit.
    fn line(&self, buf: &mut BytesMut, newline: Option<usize>) -> Result<Option<Bytes>, FramingError> {
        match newline {
            Some(i) => {
                // The message is the line without its '\n' and one '\r' before it; only that
                // counts against the limit (a line of max + 1 bytes without '\r' is too long).
                let len = if i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
                if len > self.max {
                    return Err(FramingError::LineTooLong { max: self.max });
                }
                let mut line = buf.split_to(i + 1);
                line.truncate(len);
                Ok(Some(line.freeze()))
            }
            None if buf.len() > self.max + 1 => Err(FramingError::LineTooLong { max: self.max }),
            None => Ok(None),
        }
    }

    /// Appends one outgoing message to `out`.
    pub fn encode(&self, data: &[u8], out: &mut BytesMut) {
        match self.protocol {
            StreamProtocol::Text => {
                out.extend_from_slice(data);
                out.extend_from_slice(b"\n");
            }
            StreamProtocol::Frame => {
                out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
            }
            StreamProtocol::Raw => out.extend_from_slice(data),
        }
    }
}

/// Where a WebSocket client's byte stream stands, frame by frame: whether the bytes seen so far
/// end exactly after a frame that completes a message. tungstenite's codec does not say whether
/// it holds part of a frame or of a fragmented message; this does, from the bytes the codec read,
/// so the connection knows when the codec can be dropped and made anew without losing anything.
#[derive(Debug, Default)]
pub(crate) struct WsFrameTracker {
    /// Header bytes of the frame being read (at most 14: 2, 8 of extended length, 4 of mask).
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Inside a fragmented message: a data frame without FIN, until the final continuation.
    fragmented: bool,
}

impl WsFrameTracker {
    /// Takes note of `bytes`, the next ones in the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = bytes.len().min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            // A whole header in `bytes` (the usual case) is taken at once, a split one byte by
            // byte.
            let take =
                if self.head_len == 0 && bytes.len() >= 2 { Self::len_of_header(bytes[1]).min(bytes.len()) } else { 1 };
            let at = usize::from(self.head_len);
            self.head[at..at + take].copy_from_slice(&bytes[..take]);
            self.head_len += take as u8;
            bytes = &bytes[take..];
            if self.head_len >= 2 && usize::from(self.head_len) == Self::len_of_header(self.head[1]) {
                self.end_header();
            }
        }
    }

    /// The whole header's length, from its second byte (mask bit and length code).
    fn len_of_header(second: u8) -> usize {
        let ext = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if second & 0x80 != 0 { 4 } else { 0 }
    }

    fn end_header(&mut self) {
        let (fin, opcode) = (self.head[0] & 0x80 != 0, self.head[0] & 0x0f);
        self.payload_left = match self.head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        // Data and continuation frames (opcodes below 8) make up messages; control frames may
        // come between the fragments of one and do not end it.
        if opcode < 8 {
            self.fragmented = !fin;
        }
        self.head_len = 0;
    }

    /// True when the bytes seen end a frame that is not followed by the rest of a message.
    pub fn at_rest(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0 && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &Framing, bytes: &[u8]) -> Result<Vec<Bytes>, FramingError> {
        let mut f = f.clone();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = f.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn text_splits_lines_and_drops_carriage_returns() {
        let f = Framing::new(StreamProtocol::Text, 16);
        assert_eq!(all(&f, b"a\r\nbc\n\npartial").unwrap(), vec!["a", "bc", ""]);
        let mut out = BytesMut::new();
        f.encode(b"hi", &mut out);
        assert_eq!(&out[..], b"hi\n");
    }

    #[test]
    fn text_refuses_an_endless_line_before_buffering_past_the_limit() {
        let f = Framing::new(StreamProtocol::Text, 4);
        assert_eq!(all(&f, b"abcdefg"), Err(FramingError::LineTooLong { max: 4 }));
        assert_eq!(all(&f, b"abcdefg\n"), Err(FramingError::LineTooLong { max: 4 }));
        assert_eq!(all(&f, b"abcd\r\n").unwrap(), vec!["abcd"]);
        // Found by fuzzing: a line one byte over the limit without '\r' used to pass.
        assert_eq!(all(&f, b"abcde\n"), Err(FramingError::LineTooLong { max: 4 }));
        assert_eq!(all(&f, b"abcd\r\r\n"), Err(FramingError::LineTooLong { max: 4 }));
        assert_eq!(all(&f, b"abc\r\r\n").unwrap(), vec!["abc\r"]);
    }

    #[test]
    fn frames_are_length_prefixed_and_limited() {
        let f = Framing::new(StreamProtocol::Frame, 8);
        let mut out = BytesMut::new();
        f.encode(b"abc", &mut out);
        f.encode(b"", &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0]);
        assert_eq!(all(&f, &out).unwrap(), vec![&b"abc"[..], &b""[..]]);
        assert_eq!(
            all(&f, &[0xff, 0xff, 0xff, 0xff]),
            Err(FramingError::FrameTooLarge { len: u32::MAX as usize, max: 8 })
        );
        assert!(all(&f, &[0, 0, 0, 5, 1, 2]).unwrap().is_empty(), "waits for the rest");
    }

    #[test]
    fn a_line_trickling_in_is_scanned_once_and_split_correctly() {
        let mut f = Framing::new(StreamProtocol::Text, 1 << 20);
        let mut buf = BytesMut::new();
        for b in b"hello" {
            buf.extend_from_slice(&[*b]);
            assert_eq!(f.decode(&mut buf).unwrap(), None);
            assert_eq!(f.scanned, buf.len(), "what was looked at is not looked at again");
        }
        buf.extend_from_slice(b" world\nnext\r\nrest");
        assert_eq!(f.decode(&mut buf).unwrap().as_deref(), Some(&b"hello world"[..]));
        assert_eq!(f.decode(&mut buf).unwrap().as_deref(), Some(&b"next"[..]));
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(f.decode(&mut buf).unwrap().as_deref(), Some(&b"rest"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn ws_tracker_knows_frame_and_message_boundaries() {
        let mut t = WsFrameTracker::default();
        assert!(t.at_rest());
        // Masked text "hi" in two pieces.
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        t.feed(&frame[..3]);
        assert!(!t.at_rest(), "inside a header");
        t.feed(&frame[3..7]);
        assert!(!t.at_rest(), "inside a payload");
        t.feed(&frame[7..]);
        assert!(t.at_rest());
        // A fragmented message with a ping between its fragments, then a 16-bit and a 64-bit length.
        t.feed(&[0x01, 0x81, 0, 0, 0, 0, b'a']);
        assert!(!t.at_rest(), "first fragment without FIN");
        t.feed(&[0x89, 0x80, 0, 0, 0, 0]);
        assert!(!t.at_rest(), "a ping does not end the message");
        t.feed(&[0x80, 0x81, 0, 0, 0, 0, b'b']);
        assert!(t.at_rest(), "the final continuation ends it");
        let mut long = vec![0x82, 0xfe, 0x01, 0x00, 0, 0, 0, 0];
        long.extend(std::iter::repeat_n(7u8, 256));
        t.feed(&long[..100]);
        assert!(!t.at_rest());
        t.feed(&long[100..]);
        assert!(t.at_rest());
        let mut huge = vec![0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        huge.extend(std::iter::repeat_n(1u8, 65_536));
        t.feed(&huge);
        assert!(t.at_rest());
    }

    #[test]
    fn raw_chunks_are_cut_at_the_limit() {
        let f = Framing::new(StreamProtocol::Raw, 3);
        assert_eq!(all(&f, b"abcdefg").unwrap(), vec!["abc", "def", "g"]);
    }
}
