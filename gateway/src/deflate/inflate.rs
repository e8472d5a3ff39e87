//! A compressed client's incoming bytes, rewritten for tungstenite (which refuses frames with RSV1
//! set): the frames of a compressed message are inflated and handed on as plain frames, and every
//! other frame is handed on byte for byte. What the rewriting cannot judge, it hands on unchanged
//! for the codec to refuse (RSV1 on a control or continuation frame, RSV2/RSV3, an unmasked
//! frame), so one set of rules decides what is a protocol violation.
//!
//! The client agreed to `client_no_context_takeover`, so each message is inflated on its own: the
//! inflater is borrowed from the thread for one message and given back at its end, and between
//! messages nothing here holds memory but the struct itself.

use std::cell::RefCell;
use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};

use super::compress::TAIL;

/// Plain frames held for the codec at most before more input is inflated: a message that
/// inflates to far more than it took (a "zip bomb") is inflated piece by piece as the codec
/// reads, and fails at the size limit.
const OUT_LIMIT: usize = 16 * 1024;
/// Largest frame a compressed message is rewritten into; a longer message becomes several.
const CHUNK: usize = 16 * 1024;
/// Bytes read from the socket at once: the codec's own read size (a client at work keeps this
/// buffer until its next heartbeat, as it keeps the codec's; 8 KiB here cost an active client
/// 8 KiB more, see BENCHMARKS.md).
const READ_SIZE: usize = 1024;
/// Capacity the output buffer may keep once handed over; a larger one (left by a large message)
/// is freed.
const KEEP_OUT: usize = 4 * 1024;
/// Compressed bytes unmasked and inflated per step.
const STEP: usize = 2 * 1024;
/// Inflaters kept per thread between messages (each about 40 KiB with its window).
const KEEP_INFLATERS: usize = 4;

thread_local! {
    static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
}

/// Why a compressed client's stream cannot go on, with the close code to tell it.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct InflateError {
    pub code: u16,
    pub reason: String,
}

impl InflateError {
    fn io(code: u16, reason: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Self { code, reason: reason.into() })
    }

    /// The violation inside an error returned by [`Inflate::read`], if it is one.
    pub fn from_io(e: &io::Error) -> Option<&Self> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Self>())
    }
}

/// Where the rewriting stands in the stream.
#[derive(Debug)]
enum State {
    /// Between frames: reading a header.
    Header,
    /// Handing a frame's payload on unchanged.
    Pass { left: u64 },
    /// Inflating the payload of a frame of a compressed message.
    Inflate { left: u64, mask: [u8; 4], offset: u64, fin: bool },
    /// The compressed message's last frame is in: inflating the tail the sender stripped.
    Finish { tail_fed: usize },
}

/// A compressed message being inflated.
struct Inflating {
    z: Decompress,
    /// Opcode of the next frame handed on: text or binary for the first, continuation after.
    opcode: u8,
    /// Inflated bytes not yet handed on as a frame.
    chunk: Vec<u8>,
    /// Inflated bytes of the message so far.
    size: usize,
    /// The last inflate call filled `chunk`: the inflater may hold more output.
    more: bool,
    /// The sender ended the deflate stream (a final block); what follows is ignored.
    ended: bool,
}

/// The rewriting of one client's stream (see the module documentation).
pub(crate) struct Inflate {
    /// Bytes read from the socket; those before `raw_pos` are done.
    raw: Vec<u8>,
    raw_pos: usize,
    /// Plain frames for the codec; those before `out_pos` were handed over.
    out: Vec<u8>,
    out_pos: usize,
    head: [u8; 14],
    head_len: usize,
    state: State,
    msg: Option<Box<Inflating>>,
    /// Largest frame and message accepted (the listener's `max_message_size`).
    max_message: usize,
    /// Compressed messages inflated whole since the owner last took this count.
    pub finished: u64,
}

impl std::fmt::Debug for Inflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflate").field("state", &self.state).field("in_message", &self.msg.is_some()).finish()
    }
}

/// Length of a frame header, from its second byte.
fn header_len(second: u8) -> usize {
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if second & 0x80 != 0 { 4 } else { 0 }
}

impl Inflate {
    pub fn new(max_message: usize) -> Self {
        Self {
            raw: Vec::new(),
            raw_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            head: [0; 14],
            head_len: 0,
            state: State::Header,
            msg: None,
            max_message,
            finished: 0,
        }
    }

    /// True between frames of no message in progress, with nothing read and not handed on.
    pub fn at_rest(&self) -> bool {
        matches!(self.state, State::Header)
            && self.head_len == 0
            && self.msg.is_none()
            && self.raw_pos == self.raw.len()
            && self.out_pos == self.out.len()
    }

    /// Takes bytes the client sent (read elsewhere), without reading the socket.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.raw.extend_from_slice(data);
    }

    /// Plain bytes for the codec: what is ready, else what `src` gives once rewritten. Returns
    /// `Ok(0)` at the end of `src`; an [`InflateError`] inside an `io::Error` for a compressed
    /// message that cannot be inflated.
    pub fn read(&mut self, src: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = dst.len().min(self.out.len() - self.out_pos);
                dst[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                    if self.out.capacity() > KEEP_OUT {
                        self.out = Vec::new();
                    }
                }
                return Ok(n);
            }
            self.process()?;
            if self.out_pos < self.out.len() {
                continue;
            }
            self.compact();
            self.raw.reserve(READ_SIZE);
            let start = self.raw.len();
            self.raw.resize(start + READ_SIZE, 0);
            let n = src.read(&mut self.raw[start..]);
            self.raw.truncate(start + *n.as_ref().unwrap_or(&0));
            if n? == 0 {
                return Ok(0);
            }
        }
    }

    /// Drops what was taken from the read buffer, and the buffer itself once it is empty.
    fn compact(&mut self) {
        if self.raw_pos == self.raw.len() {
            self.raw.clear();
            self.raw_pos = 0;
            if self.raw.capacity() > 4 * READ_SIZE {
                self.raw = Vec::new();
            }
        } else if self.raw_pos > 0 {
            self.raw.drain(..self.raw_pos);
            self.raw_pos = 0;
        }
    }

    /// Rewrites what was read until it is all taken or enough plain output waits.
    fn process(&mut self) -> io::Result<()> {
        while self.out.len() - self.out_pos < OUT_LIMIT {
            match self.state {
                State::Header => {
                    if self.raw_pos == self.raw.len() {
                        return Ok(());
                    }
                    let want = if self.head_len < 2 { 2 } else { header_len(self.head[1]) };
                    let take = (want - self.head_len).min(self.raw.len() - self.raw_pos);
                    self.head[self.head_len..self.head_len + take]
                        .copy_from_slice(&self.raw[self.raw_pos..self.raw_pos + take]);
                    self.head_len += take;
                    self.raw_pos += take;
                    if self.head_len >= 2 && self.head_len == header_len(self.head[1]) {
                        self.end_header()?;
                    }
                }
                State::Pass { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.raw.len() - self.raw_pos);
                    if n == 0 && left > 0 {
                        return Ok(());
                    }
                    self.out.extend_from_slice(&self.raw[self.raw_pos..self.raw_pos + n]);
                    self.raw_pos += n;
                    self.state = if left == n as u64 { State::Header } else { State::Pass { left: left - n as u64 } };
                }
                State::Inflate { left, mask, offset, fin } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.raw.len() - self.raw_pos).min(STEP);
                    if n == 0 {
                        return Ok(());
                    }
                    let mut buf = [0u8; STEP];
                    for (i, (b, raw)) in buf.iter_mut().zip(&self.raw[self.raw_pos..self.raw_pos + n]).enumerate() {
                        *b = raw ^ mask[((offset + i as u64) % 4) as usize];
                    }
                    let taken = self.feed(&buf[..n])?;
                    self.raw_pos += taken;
                    let left = left - taken as u64;
                    self.state = match (left, fin) {
                        (0, true) => State::Finish { tail_fed: 0 },
                        (0, false) => State::Header,
                        _ => State::Inflate { left, mask, offset: offset + taken as u64, fin },
                    };
                    if taken < n {
                        return Ok(());
                    }
                }
                State::Finish { tail_fed } => {
                    let tail_fed = tail_fed + self.feed(&TAIL[tail_fed..])?;
                    self.state = State::Finish { tail_fed };
                    if tail_fed < TAIL.len() || self.msg.as_ref().is_some_and(|m| m.more) {
                        // The output waiting is full: the rest when the codec has taken it.
                        return Ok(());
                    }
                    self.end_message();
                }
            }
        }
        Ok(())
    }

    /// A whole header is in `head`: decides whether its frame is inflated or handed on.
    fn end_header(&mut self) -> io::Result<()> {
        let head = self.head;
        let len_of_head = self.head_len;
        self.head_len = 0;
        let (fin, rsv, opcode, masked) = (head[0] & 0x80 != 0, head[0] & 0x70, head[0] & 0x0f, head[1] & 0x80 != 0);
        let len = match head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            127 => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        let data = opcode == 1 || opcode == 2;
        if data && self.msg.is_some() {
            return Err(InflateError::io(
                1002,
                "protocol error: a new message began inside a compressed fragmented one",
            ));
        }
        let starts = data && rsv == 0x40 && masked;
        let continues = opcode == 0 && rsv == 0 && masked && self.msg.is_some();
        if !(starts || continues) {
            self.out.extend_from_slice(&head[..len_of_head]);
            self.state = if len == 0 { State::Header } else { State::Pass { left: len } };
            return Ok(());
        }
        if len > i64::MAX as u64 {
            return Err(InflateError::io(1002, "protocol error: payload length with its top bit set"));
        }
        if len > self.max_message as u64 {
            return Err(InflateError::io(
                1009,
                format!("message too big: a compressed frame of {len} bytes (at most {})", self.max_message),
            ));
        }
        if starts {
            let z = INFLATERS.with_borrow_mut(Vec::pop).unwrap_or_else(|| Decompress::new(false));
            self.msg = Some(Box::new(Inflating {
                z,
                opcode,
                chunk: Vec::with_capacity(CHUNK.min(self.max_message + 1)),
                size: 0,
                more: false,
                ended: false,
            }));
        }
        let mask = head[len_of_head - 4..len_of_head].try_into().expect("4 bytes");
        self.state = match (len, fin) {
            (0, true) => State::Finish { tail_fed: 0 },
            (0, false) => State::Header,
            _ => State::Inflate { left: len, mask, offset: 0, fin },
        };
        Ok(())
    }

    /// Inflates `input` (all of it unless enough output waits, draining what the inflater holds
    /// too); returns how much was taken.
    fn feed(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if self.out.len() - self.out_pos >= OUT_LIMIT {
                return Ok(taken);
            }
            let (n, progressed) = self.inflate(&input[taken..])?;
            taken += n;
            let more = self.msg.as_ref().is_some_and(|m| m.more);
            if taken == input.len() && !more {
                return Ok(taken);
            }
            if !progressed {
                // Input and room for output, and zlib took and gave nothing: not deflate data.
                return Err(InflateError::io(1007, "invalid compressed data: the inflater is stuck"));
            }
        }
    }

    /// One inflate call into the message's chunk; a full chunk is handed on as a frame. Returns
    /// how much input was taken and whether anything happened.
    fn inflate(&mut self, input: &[u8]) -> io::Result<(usize, bool)> {
        let max_message = self.max_message;
        let msg = self.msg.as_mut().expect("a message is being inflated");
        if msg.ended {
            // After a final deflate block nothing more is data (the tail included): skip it.
            msg.more = false;
            return Ok((input.len(), true));
        }
        let (in_before, out_before) = (msg.z.total_in(), msg.chunk.len());
        let status = msg
            .z
            .decompress_vec(input, &mut msg.chunk, FlushDecompress::Sync)
            .map_err(|e| InflateError::io(1007, format!("invalid compressed data: {e}")))?;
        let taken = (msg.z.total_in() - in_before) as usize;
        let produced = msg.chunk.len() - out_before;
        msg.size += produced;
        msg.more = msg.chunk.len() == msg.chunk.capacity();
        msg.ended = matches!(status, Status::StreamEnd);
        if msg.size > max_message {
            return Err(InflateError::io(1009, format!("message too big: inflates to more than {max_message} bytes")));
        }
        if msg.more {
            self.emit(false);
        }
        Ok((taken, taken > 0 || produced > 0))
    }

    /// Hands on what the chunk holds as one frame (the message's last when `fin`).
    fn emit(&mut self, fin: bool) {
        let msg = self.msg.as_mut().expect("a message is being inflated");
        let len = msg.chunk.len();
        self.out.push(if fin { 0x80 } else { 0 } | msg.opcode);
        // Masked with a zero key: the codec requires masked frames from clients and unmasks
        // with the key given, so the bytes stay as they are.
        match len {
            0..=125 => self.out.push(0x80 | len as u8),
            126..=0xffff => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(&msg.chunk);
        msg.chunk.clear();
        msg.opcode = 0;
    }

    /// The message is whole: its last frame is handed on and the inflater given back.
    fn end_message(&mut self) {
        self.emit(true);
        self.finished += 1;
        let mut msg = self.msg.take().expect("a message is being inflated");
        msg.z.reset(false);
        INFLATERS.with_borrow_mut(|pool| {
            if pool.len() < KEEP_INFLATERS {
                pool.push(msg.z);
            }
        });
        self.state = State::Header;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketContext};

    use crate::test_frames::masked as frame;

    /// A stream that gives its bytes `step` at a time, then reports `WouldBlock` once drained.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl io::Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The rewriting between a trickling client and tungstenite, as the transport wires it.
    struct Wired<'a> {
        src: &'a mut Trickle,
        inflate: &'a mut Inflate,
    }

    impl Read for Wired<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.inflate.read(self.src, buf)
        }
    }

    impl io::Write for Wired<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every message tungstenite reads from `bytes` given `step` bytes at a time, until it
    /// would block; or the first error.
    fn read_all(bytes: &[u8], step: usize, max: usize) -> Result<Vec<Message>, String> {
        let mut src = Trickle { data: bytes.to_vec(), pos: 0, step };
        let mut inflate = Inflate::new(max);
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let mut ctx = WebSocketContext::new(Role::Server, Some(config));
        let mut got = Vec::new();
        loop {
            let mut io = Wired { src: &mut src, inflate: &mut inflate };
            match ctx.read(&mut io) {
                Ok(m) => got.push(m),
                Err(tokio_tungstenite::tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(inflate.at_rest() || !got.is_empty() || bytes.is_empty() || src.pos == src.data.len());
                    return Ok(got);
                }
                Err(tokio_tungstenite::tungstenite::Error::Io(e)) => {
                    return Err(match InflateError::from_io(&e) {
                        Some(v) => format!("{} {}", v.code, v.reason),
                        None => e.to_string(),
                    });
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// `data` as a client compresses it (even when that does not make it smaller).
    fn compressed(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    #[test]
    fn compressed_and_plain_messages_arrive_in_order_in_any_split() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(40);
        let bin: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let z = compressed(text.as_bytes());
        let mut bytes = frame(0xc1, &z); // text, FIN, RSV1
        bytes.extend(frame(0x81, b"plain")); // an uncompressed message between compressed ones
        // A compressed binary message in three fragments, with a ping between two of them.
        let zb = compressed(&bin);
        let (a, rest) = zb.split_at(zb.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        bytes.extend(frame(0x42, a));
        bytes.extend(frame(0x00, b));
        bytes.extend(frame(0x89, b"ping!"));
        bytes.extend(frame(0x80, c));
        // A message the sender ended with a final block (BFINAL): allowed, the tail is ignored.
        let mut fin = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut zf = Vec::with_capacity(256);
        fin.compress_vec(b"final block", &mut zf, flate2::FlushCompress::Finish).unwrap();
        bytes.extend(frame(0xc1, &zf));
        // An empty compressed message.
        bytes.extend(frame(0xc1, &[0x00]));
        for step in [1, 3, 7, 100, 4096, usize::MAX] {
            let got = read_all(&bytes, step, 1 << 20).unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(got.len(), 6, "step {step}: {got:?}");
            assert_eq!(got[0], Message::text(text.clone()));
            assert_eq!(got[1], Message::text("plain"));
            assert!(matches!(&got[2], Message::Ping(p) if &p[..] == b"ping!"), "the ping comes first");
            assert_eq!(got[3], Message::binary(bin.clone()));
            assert_eq!(got[4], Message::text("final block"));
            assert_eq!(got[5], Message::text(""));
        }
    }

    #[test]
    fn a_large_message_is_inflated_piece_by_piece() {
        let big: Vec<u8> = (0..200_000u32).map(|i| b"abcdefgh"[(i / 1000 % 8) as usize]).collect();
        let z = compressed(&big);
        assert!(z.len() < 2000, "{}", z.len());
        let got = read_all(&frame(0xc2, &z), 1 << 20, 1 << 20).unwrap();
        assert_eq!(got, vec![Message::binary(big.clone())]);
        // Over the limit: refused while inflating, with 1009, before it is all inflated.
        let err = read_all(&frame(0xc2, &z), 1 << 20, 100_000).unwrap_err();
        assert!(err.starts_with("1009 message too big"), "{err}");
    }

    #[test]
    fn broken_compressed_streams_are_violations_named_by_their_rule() {
        // Not deflate data.
        let err = read_all(&frame(0xc1, &[0xff, 0xff, 0xff, 0xff]), 64, 1 << 20).unwrap_err();
        assert!(err.starts_with("1007 invalid compressed data"), "{err}");
        // RSV1 on a continuation or a control frame, RSV2 with RSV1: the codec's own refusal.
        for bad in [frame(0x01, b"a").into_iter().chain(frame(0xc0, b"b")).collect::<Vec<_>>(), frame(0xc9, b"")] {
            let err = read_all(&bad, 64, 1 << 20).unwrap_err();
            assert!(err.contains("Reserved bits are non-zero"), "{err}");
        }
        let err = read_all(&frame(0xe1, &compressed(b"hello hello hello")), 64, 1 << 20).unwrap_err();
        assert!(err.contains("Reserved bits are non-zero"), "{err}");
        // A new message inside a compressed fragmented one.
        let mut bytes = frame(0x41, &compressed(b"first part")[..3]);
        bytes.extend(frame(0x81, b"intruder"));
        let err = read_all(&bytes, 64, 1 << 20).unwrap_err();
        assert!(err.starts_with("1002 protocol error"), "{err}");
        // An unmasked compressed frame is handed on and refused by the codec.
        let err = read_all(&[0xc1, 0x01, 0x00], 64, 1 << 20).unwrap_err();
        assert!(err.contains("unmasked") || err.contains("Reserved bits"), "{err}");
        // A compressed frame longer than the limit, before any of it is read.
        let mut huge = vec![0xc2, 0xff];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4]);
        let err = read_all(&huge, 64, 1 << 20).unwrap_err();
        assert!(err.starts_with("1009 message too big"), "{err}");
    }

    #[test]
    fn nothing_is_held_between_messages() {
        let z = compressed(b"some text some text some text");
        let mut src = Trickle { data: frame(0xc1, &z), pos: 0, step: 5 };
        let mut inflate = Inflate::new(1 << 20);
        let mut buf = [0u8; 4096];
        let mut plain = Vec::new();
        loop {
            match inflate.read(&mut src, &mut buf) {
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&plain[..6], &[0x81, 0x80 | 29, 0, 0, 0, 0], "one plain final text frame, zero mask");
        assert_eq!(&plain[6..], b"some text some text some text");
        assert!(inflate.at_rest(), "so the transport may drop it");
    }
}
