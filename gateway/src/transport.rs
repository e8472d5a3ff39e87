//! What a client connection reads and writes, whatever its protocol: WebSocket, or one of the
//! TCP framings of [`framing`](crate::framing). The connection loop is written once against
//! [`Transport`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gw_proto::Payload;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::deflate::{Compressed, InflateError};
use crate::framing::{Framing, WsFrameTracker};
use crate::outgoing::OutMessage;
use crate::stream::{ClientStream, SyncIo};

/// How long a close handshake may take before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Something the client sent.
#[derive(Debug)]
pub(crate) enum Incoming {
    Message(Payload),
    /// A ping, or a pong when pongs count as activity: the client is alive.
    Activity,
}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// The client closed cleanly: a close frame (WebSocket) or end of stream (TCP framings,
    /// where that is the normal way to close).
    Closed,
    /// The client went away without closing: a WebSocket ended without a close frame, a reset,
    /// or a failed read or write. A disconnect, not a protocol violation, and nothing to wait for.
    Vanished(std::io::Error),
    /// The client broke the protocol; it is told with this close code (1002 protocol error,
    /// 1007 invalid UTF-8, 1009 too big).
    Violation { code: u16, reason: String },
}

/// A client connection's protocol.
pub(crate) trait Transport: Send + 'static {
    /// The next message. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, TransportError>> + Send;
    /// Resolves once [`feed`](Self::feed) can take a message (a WebSocket first writes out what
    /// a full socket left in its buffer). Cancel-safe. Callers take a message from the queue only
    /// after this, so no message waits inside a future (it would take room in every
    /// connection's task).
    fn ready(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Buffers one outgoing message without waiting; returns the size of its payload as written
    /// (compressed, when it was).
    fn feed(&mut self, msg: OutMessage) -> Result<usize, TransportError>;
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Frees the buffers of a client that is not at work, if they hold nothing. Called after a
    /// heartbeat was written: a client that sends nothing for a heartbeat interval keeps no
    /// buffers.
    fn release_idle(&mut self);
    /// Whether everything fed was written to the socket (nothing waits for a flush).
    fn written(&self) -> bool;
    /// Whether the client is at rest: no buffers held (as after [`release_idle`](Self::release_idle)
    /// on a client that sent nothing since) and nothing waiting to be written. The connection
    /// then waits in its small state (`client.rs`, `Connection::run`).
    fn at_rest(&self) -> bool;
    /// Closes gracefully: a close frame (WebSocket) or a flushed shutdown (TCP), bounded in time.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// Read buffer of an active WebSocket codec (as tungstenite's `read_buffer_size`). Not below
/// 1 KiB: the buffer is shared with each received payload, and `BytesMut` replaces a shared buffer
/// that started below 1 KiB by one just large enough for the next header, so every frame would
/// then take several reads (see BENCHMARKS.md).
const READ_BUFFER: usize = 1024;
/// Stack buffer for the first read of an idle (parked) client.
const SCRATCH: usize = 4 * 1024;

/// The most bytes of pongs a parked client's heartbeat frames are answered with at once.
const HEARTBEAT_REPLY: usize = 512;

/// The gateway's heartbeat ping as it goes on the wire: FIN, opcode 9, no payload.
const EMPTY_PING: [u8; 2] = [0x89, 0x00];

/// The longest payload written to a parked client's socket directly (the codec's write buffer
/// size); a longer message goes through a codec.
const DIRECT_FRAME: usize = 16 * 1024;

/// Writes the header of a final, unmasked server frame of `opcode` with `len` bytes of payload
/// into `out`; returns its length (2, 4 or 10 bytes).
fn frame_head(opcode: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// If `data` is nothing but whole heartbeat frames from a client (masked ping and pong frames,
/// FIN set, no RSV bits, at most 125 bytes of payload each), writes into `reply` the pong owed
/// for each ping and returns its length (0 for pongs alone). `None` when `data` holds anything
/// else, part of a frame, or more pongs than `reply` takes: the codec reads it then, and
/// refuses what it must.
fn heartbeat_frames(mut data: &[u8], reply: &mut [u8]) -> Option<usize> {
    if data.is_empty() {
        return None;
    }
    let mut len = 0;
    while !data.is_empty() {
        let [first, second, ..] = *data else { return None };
        let n = usize::from(second & 0x7f);
        // 0x89 ping, 0x8a pong; unmasked or longer than a control frame may be: the codec's.
        if !matches!(first, 0x89 | 0x8a) || second & 0x80 == 0 || n > 125 {
            return None;
        }
        let frame = data.get(..6 + n)?;
        if first == 0x89 {
            let out = reply.get_mut(len..len + 2 + n)?;
            out[0] = 0x8a;
            out[1] = n as u8;
            let mask = &frame[2..6];
            for (i, (o, b)) in out[2..].iter_mut().zip(&frame[6..]).enumerate() {
                *o = b ^ mask[i % 4];
            }
            len += 2 + n;
        }
        data = &data[6 + n..];
    }
    Some(len)
}

/// A WebSocket client: tungstenite's sans-IO codec over the client socket, polled by the
/// connection task itself (no `tokio_tungstenite::WebSocketStream`, whose two waker proxies cost
/// 128 bytes per client and are not needed when one task does all the reading and writing).
///
/// An idle client holds no codec. A codec that has taken every frame read so far, holds no part
/// of a message and nothing to write can be dropped ("parked": a fresh codec would be only its
/// settings, which the transport keeps); the next bytes the client sends are read into a stack
/// buffer and handed to a new codec with a [`READ_BUFFER`] buffer. A parked client's text and
/// binary messages (up to [`DIRECT_FRAME`], on a plain socket without compression) are written to
/// the socket directly, one frame each, with no codec (see [`write_parked`](Self::write_parked));
/// for anything else it gets a codec for the write, emptied once it is flushed and dropped at
/// the next heartbeat. A codec is parked when it runs out of input after only pings and pongs (a
/// heartbeat answer), and otherwise at the next heartbeat written (see
/// [`Transport::release_idle`]), so a client sending messages keeps its buffers, and reads and
/// allocates as before, between heartbeats. A parked client's heartbeat does not take a codec at
/// all: the gateway's empty ping is written to the socket directly, and bytes that are nothing but
/// whole pings and pongs are read from the stack buffer, each ping answered there (see
/// [`heartbeat_frames`]). A [`WsFrameTracker`] follows the bytes the codec reads, because
/// tungstenite does not say whether it holds part of a frame.
///
/// A client that negotiated permessage-deflate has a [`Compressed`]: its bytes are inflated on
/// their way to the codec (whose rewriting state is dropped with the codec's buffers when the
/// client goes idle), and its messages compressed on their way out.
pub(crate) struct WsTransport {
    stream: ClientStream,
    /// The codec; `None` while parked and nothing was written since (a fresh codec is only its
    /// settings, kept in `config`): an idle client's task does not carry the codec's 248 bytes.
    ctx: Option<Box<WebSocketContext>>,
    /// The codec's settings, its read buffer size excepted; the listener's (shared: 8 bytes
    /// here instead of 64 in every connection's task).
    config: Arc<WebSocketConfig>,
    seen: WsFrameTracker,
    pong_is_activity: bool,
    /// A write found the socket full; the frame is buffered in the codec, and the next write
    /// flushes first (as `tokio_tungstenite`'s `Sink::poll_ready` does).
    blocked: bool,
    /// Frames were handed to the codec since the last complete flush.
    unflushed: bool,
    /// The codec is a fresh one that has read nothing (see the type's documentation).
    parked: bool,
    /// The codec's last read ran out of input: it holds no complete frame.
    drained: bool,
    /// The codec's last read could not write its answer to a ping or close (it retries).
    reply_blocked: bool,
    /// A message (not a ping or pong) was read since the codec was made.
    busy: bool,
    /// The stream ended or failed; reading returns nothing more.
    ended: bool,
    /// permessage-deflate, when the client negotiated it (boxed: a client that does not costs 8
    /// bytes for it).
    compressed: Option<Box<Compressed>>,
    /// The rest of a frame written directly (see [`write_parked`](Self::write_parked)) that the
    /// socket took only part of: written before anything else, by the next `ready` or `flush`.
    tail: Option<Box<Bytes>>,
    /// The client's close frame was read: until this deadline, the codec's reply is flushed
    /// before [`recv`](Transport::recv) reports the close. Kept here, not in the `recv` future,
    /// which waits in every connection's task.
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn ws_error(e: WsError) -> TransportError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        WsError::Io(e) => match InflateError::from_io(&e) {
            // A compressed message that cannot be inflated, or inflates past the limit.
            Some(v) => TransportError::Violation { code: v.code, reason: v.reason.clone() },
            None => TransportError::Vanished(e),
        },
        // End of stream without a close frame: a phone that lost signal, not a broken protocol.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TransportError::Vanished(
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without a close frame"),
        ),
        WsError::Utf8 => TransportError::Violation { code: 1007, reason: "invalid UTF-8 in a text message".into() },
        // RFC 6455 5.2: the most significant bit of a 64-bit length must be 0. tungstenite
        // reports such a length as merely too big; it is a broken frame, not a large one.
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) if size as u64 > i64::MAX as u64 => {
            TransportError::Violation {
                code: 1002,
                reason: "protocol error: payload length with its top bit set".into(),
            }
        }
        WsError::Capacity(e) => TransportError::Violation { code: 1009, reason: format!("message too big: {e}") },
        WsError::Protocol(e) => TransportError::Violation { code: 1002, reason: format!("protocol error: {e}") },
        other => TransportError::Violation { code: 1002, reason: other.to_string() },
    }
}

/// `WouldBlock` from the socket means "not yet".
fn pending_on_block<T>(r: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match r {
        Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

// The errors are tungstenite's own, passed on as they come.
#[allow(clippy::result_large_err)]
impl WsTransport {
    /// A server-side WebSocket over `stream`, whose client already sent `leftover` (bytes after
    /// its upgrade request, usually none). `config`'s read buffer size is replaced by
    /// [`READ_BUFFER`] (none while parked).
    pub fn new(
        stream: ClientStream,
        leftover: Vec<u8>,
        config: Arc<WebSocketConfig>,
        pong_is_activity: bool,
        compressed: Option<Box<Compressed>>,
    ) -> Self {
        let mut t = Self {
            stream,
            ctx: None,
            config,
            seen: WsFrameTracker::default(),
            pong_is_activity,
            blocked: false,
            unflushed: false,
            parked: true,
            drained: true,
            reply_blocked: false,
            busy: false,
            ended: false,
            compressed,
            tail: None,
            closing: None,
        };
        if !leftover.is_empty() {
            t.activate(&leftover);
        }
        t
    }

    /// Lets the codec go as soon as it runs out of input holding nothing, as after a heartbeat
    /// answer, although the client sent messages: for a client whose messages are rare (a
    /// Pusher client's subscriptions and pings), whose buffers would otherwise stay until the
    /// next heartbeat. Its next message makes a codec again.
    pub fn release_when_drained(&mut self) {
        self.busy = false;
    }

    /// Whether the codec holds nothing: no frame or part of one or of a message read, nothing
    /// to write, and the connection open.
    fn holds_nothing(&self) -> bool {
        self.tail.is_none()
            && self.drained
            && !self.reply_blocked
            && !self.unflushed
            && !self.blocked
            && self.seen.at_rest()
            && self.can_write()
            && self.compressed.as_ref().is_none_or(|c| c.at_rest())
    }

    /// Replaces the codec by a fresh one without buffers (only when it holds nothing).
    fn park(&mut self) {
        self.ctx = None;
        self.parked = true;
        self.busy = false;
        if let Some(c) = &mut self.compressed {
            c.release();
        }
    }

    /// Empties a parked client's codec that wrote something, in place: its write buffer goes,
    /// the codec's own allocation stays (made again for every write to a client that only
    /// receives, it would cost one more allocation per write). It goes at the next heartbeat.
    fn reset_parked(&mut self) {
        if let Some(ctx) = &mut self.ctx {
            **ctx = WebSocketContext::new(Role::Server, Some(self.config.read_buffer_size(0)));
        }
        if let Some(c) = &mut self.compressed {
            c.release();
        }
    }

    /// Whether the codec can still write (a parked one can: it is fresh).
    fn can_write(&self) -> bool {
        self.ctx.as_ref().is_none_or(|c| c.can_write())
    }

    /// Gives a parked client a codec with a read buffer, starting with `data`.
    fn activate(&mut self, data: &[u8]) {
        // A buffer of at least READ_BUFFER from the start: `BytesMut` remembers the capacity it
        // started with, and replaces a buffer shared with a payload by one of that size.
        let mut part = Vec::with_capacity(READ_BUFFER.max(data.len()));
        match &mut self.compressed {
            // Rewritten first: the codec reads the plain frames through `SyncIo`.
            Some(c) => c.push(data),
            None => {
                part.extend_from_slice(data);
                self.seen.feed(data);
            }
        }
        let config = self.config.read_buffer_size(READ_BUFFER);
        let ctx = WebSocketContext::from_partially_read(part, Role::Server, Some(config));
        match &mut self.ctx {
            Some(old) => **old = ctx,
            None => self.ctx = Some(Box::new(ctx)),
        }
        self.parked = false;
        self.drained = false;
    }

    /// A parked client's bytes that are only heartbeat frames (see [`heartbeat_frames`]) are
    /// taken here, the codec left parked: making one for them costs a buffer and a fresh codec
    /// again once they are read, for every pong and ping of every client. A ping is answered at
    /// once on a plain socket; `None` leaves the bytes to a new codec (anything else, a socket
    /// that cannot take the pong now, TLS or compression).
    fn answer_heartbeat(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Option<Result<Message, WsError>> {
        if self.compressed.is_some() {
            return None;
        }
        let mut reply = [0u8; HEARTBEAT_REPLY];
        let len = heartbeat_frames(data, &mut reply)?;
        if len == 0 {
            // Pongs: the caller needs only to know that one came.
            return Some(Ok(Message::Pong(Bytes::new())));
        }
        if !matches!(self.stream, ClientStream::Plain(_)) {
            return None;
        }
        match Pin::new(&mut self.stream).poll_write(cx, &reply[..len]) {
            Poll::Ready(Ok(n)) if n == len => Some(Ok(Message::Ping(Bytes::new()))),
            // Nothing written: the codec answers, once the socket takes it.
            Poll::Pending => None,
            // Part of a frame went out, and nothing may follow it but the rest: a socket that
            // full is dropped (a write this small is taken whole or not at all in practice).
            Poll::Ready(Ok(_)) => {
                self.ended = true;
                Some(Err(WsError::Io(std::io::ErrorKind::WriteZero.into())))
            }
            Poll::Ready(Err(e)) => {
                self.ended = true;
                Some(Err(WsError::Io(e)))
            }
        }
    }

    /// Writes the gateway's empty ping to a parked client's plain socket directly, the codec
    /// left parked (it would take a write buffer for the two bytes, and be made anew after the
    /// flush). False when the codec must write it: not parked, TLS, or a socket that is full.
    fn ping_parked(&mut self, msg: &OutMessage) -> Result<bool, WsError> {
        let idle = self.parked && !self.unflushed && !self.blocked && self.can_write();
        let empty_ping = matches!(msg.message(), Message::Ping(p) if p.is_empty());
        if !(idle && empty_ping && matches!(self.stream, ClientStream::Plain(_))) {
            return Ok(false);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut self.stream).poll_write(&mut cx, &EMPTY_PING) {
            Poll::Ready(Ok(2)) => Ok(true),
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(_)) => Err(WsError::Io(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Err(e)) => Err(WsError::Io(e)),
        }
    }

    /// Writes a text or binary message to a parked client's plain socket directly, as one frame
    /// (its header and the shared payload in one vectored write), the codec left as it is:
    /// through the codec, a parked client's message costs a write buffer allocated, filled and
    /// freed and the codec made anew after the flush, for every client a broadcast reaches.
    /// Returns the payload's length when written (whole, or in part with the rest kept in
    /// `tail`), `None` when the codec must write it: not parked or holding anything, TLS,
    /// compression, a control frame, a payload over [`DIRECT_FRAME`], or a socket that takes
    /// none of it now.
    fn write_parked(&mut self, msg: &OutMessage) -> Result<Option<usize>, WsError> {
        let idle = self.parked && !self.unflushed && !self.blocked && self.tail.is_none() && self.can_write();
        if !idle || self.compressed.is_some() || !matches!(self.stream, ClientStream::Plain(_)) {
            return Ok(None);
        }
        let (opcode, payload): (u8, &[u8]) = match msg.message() {
            Message::Text(t) => (0x1, t.as_bytes()),
            Message::Binary(b) => (0x2, b),
            _ => return Ok(None),
        };
        if payload.len() > DIRECT_FRAME {
            return Ok(None);
        }
        let mut header = [0u8; 10];
        let head_len = frame_head(opcode, payload.len(), &mut header);
        let head = &header[..head_len];
        let len = head.len() + payload.len();
        let bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(payload)];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut self.stream).poll_write_vectored(&mut cx, &bufs) {
            Poll::Ready(Ok(n)) if n == len => Ok(Some(payload.len())),
            Poll::Pending => Ok(None),
            Poll::Ready(Ok(0)) => Err(WsError::Io(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                // Nothing may go out before the rest of this frame.
                let mut rest = Vec::with_capacity(len - n);
                rest.extend_from_slice(head.get(n..).unwrap_or_default());
                rest.extend_from_slice(&payload[n.saturating_sub(head.len())..]);
                self.tail = Some(Box::new(Bytes::from(rest)));
                self.unflushed = true;
                Ok(Some(payload.len()))
            }
            Poll::Ready(Err(e)) => Err(WsError::Io(e)),
        }
    }

    /// Writes the rest of a directly written frame, if any.
    fn poll_tail(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while let Some(tail) = &mut self.tail {
            match Pin::new(&mut self.stream).poll_write(cx, tail) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(WsError::Io(std::io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    tail.advance(n);
                    if tail.is_empty() {
                        self.tail = None;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WsError::Io(e))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Runs `f` with the codec and the socket as seen from this poll; also returns whether the
    /// socket refused a write.
    fn with_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocketContext, &mut SyncIo<'_, '_>) -> R,
    ) -> (R, bool) {
        let mut write_blocked = false;
        let mut io = SyncIo {
            stream: &mut self.stream,
            cx,
            seen: &mut self.seen,
            write_blocked: &mut write_blocked,
            compressed: self.compressed.as_deref_mut(),
        };
        // A parked client's codec is made when something is written (and dropped again once
        // that is flushed).
        let config = *self.config;
        let ctx = self
            .ctx
            .get_or_insert_with(|| Box::new(WebSocketContext::new(Role::Server, Some(config.read_buffer_size(0)))));
        let r = f(ctx, &mut io);
        (r, write_blocked)
    }

    /// The next frame the codec hands out; `None` once the stream ended or was closed.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.tail.is_some() {
            // The codec may answer a ping as it reads, and nothing may go out before the rest of
            // the frame: read once that is written.
            if let Err(e) = std::task::ready!(self.poll_tail(cx)) {
                self.ended = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
        if self.parked {
            if self.unflushed || self.blocked || !self.can_write() {
                // The parked codec holds output or a closing state: read through it, rather
                // than replace it.
                self.parked = false;
                self.drained = false;
            } else {
                let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); SCRATCH];
                let mut buf = ReadBuf::uninit(&mut scratch);
                match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        self.ended = true;
                        return Poll::Ready(Some(Err(WsError::Io(e))));
                    }
                    // At the end of the stream (nothing read) the codec reads the end again and
                    // reports it as it would have.
                    Poll::Ready(Ok(())) => match self.answer_heartbeat(cx, buf.filled()) {
                        Some(beat) => return Poll::Ready(Some(beat)),
                        None => self.activate(buf.filled()),
                    },
                }
            }
        }
        let (read, write_blocked) = self.with_io(cx, |ctx, io| ctx.read(io));
        self.reply_blocked = write_blocked;
        match read {
            Ok(msg) => {
                self.drained = false;
                self.busy |= matches!(msg, Message::Text(_) | Message::Binary(_));
                Poll::Ready(Some(Ok(msg)))
            }
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.drained = true;
                // Only pings and pongs since the codec was made: a heartbeat answer, not a
                // client at work.
                if !self.busy && self.holds_nothing() {
                    self.park();
                }
                Poll::Pending
            }
            Err(e) => {
                self.ended = true;
                if matches!(e, WsError::AlreadyClosed | WsError::ConnectionClosed) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(e)))
                }
            }
        }
    }

    /// The next message or sign of life; `None` when the client sent a close frame.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, TransportError>>> {
        loop {
            let item = match self.poll_message(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            };
            return Poll::Ready(Some(match item {
                Some(Ok(Message::Text(t))) => Ok(Incoming::Message(Payload { data: Bytes::from(t), binary: false })),
                Some(Ok(Message::Binary(b))) => Ok(Incoming::Message(Payload { data: b, binary: true })),
                // tungstenite answers pings on the next read or write.
                Some(Ok(Message::Ping(_))) => Ok(Incoming::Activity),
                Some(Ok(Message::Pong(_))) if self.pong_is_activity => Ok(Incoming::Activity),
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) => return Poll::Ready(None),
                None => Err(TransportError::Closed),
                Some(Err(e)) => Err(ws_error(e)),
            }));
        }
    }

    /// Writes out what the codec holds and flushes the socket; a connection the close handshake
    /// just ended counts as flushed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if let Err(e) = std::task::ready!(self.poll_tail(cx)) {
            return Poll::Ready(Err(e));
        }
        if self.ctx.is_none() {
            // Parked, and nothing handed to a codec since: what went out was written to the plain
            // socket directly (a heartbeat), which has nothing to flush; no codec is made for it.
            self.flushed(&Ok(()));
            return Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(pending_on_block(self.with_io(cx, |ctx, io| ctx.flush(io)).0));
        self.flushed(&r);
        Poll::Ready(match r {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }

    /// After a flush finished: nothing is blocked any more, and on success nothing is buffered,
    /// so a parked client's codec that wrote something is made anew (its write buffer keeps the
    /// capacity of the last burst otherwise; one that wrote nothing, as after a heartbeat ping
    /// written directly, has no buffer to drop).
    fn flushed(&mut self, r: &Result<(), WsError>) {
        self.blocked = false;
        if r.is_ok() {
            let wrote = std::mem::take(&mut self.unflushed);
            // A flush also writes any answer to a ping that the last read could not.
            self.reply_blocked = false;
            if wrote && self.parked && self.can_write() {
                self.reset_parked();
            }
        }
    }

    /// Writes out what a full socket left in the codec, if anything.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        std::task::ready!(self.poll_tail(cx))?;
        if !self.blocked {
            return Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(pending_on_block(self.with_io(cx, |ctx, io| ctx.flush(io)).0));
        self.flushed(&r);
        Poll::Ready(r)
    }

    /// Hands one message to the codec without waiting. The socket is polled with a no-op
    /// waker: a socket that cannot take the frame now leaves it in the codec's buffer, and the
    /// next `ready` or `flush`, which every caller awaits before the task sleeps, writes it with
    /// the task's waker.
    fn start_send(&mut self, msg: Message) -> Result<(), WsError> {
        self.unflushed = true;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.with_io(&mut cx, |ctx, io| ctx.write(io, msg)).0 {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Transport for WsTransport {
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, TransportError>> + Send {
        // Polled by hand, a reference and nothing else: this future sits in every connection's
        // task while it waits (awaiting `next()` kept room for a whole read result, 280 bytes;
        // an `async` body with the close reply's timeout, 72).
        std::future::poll_fn(move |cx| {
            if self.closing.is_none() {
                match std::task::ready!(self.poll_recv(cx)) {
                    Some(incoming) => return Poll::Ready(incoming),
                    // tungstenite queued the close reply; send it so the close is clean.
                    None => self.closing = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT))),
                }
            }
            let flushed = self.poll_flush(cx).is_ready();
            if !flushed && self.closing.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_pending()) {
                return Poll::Pending;
            }
            self.closing = None;
            Poll::Ready(Err(TransportError::Closed))
        })
    }

    async fn ready(&mut self) -> Result<(), TransportError> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await.map_err(ws_error)
    }

    fn feed(&mut self, msg: OutMessage) -> Result<usize, TransportError> {
        if self.ping_parked(&msg).map_err(ws_error)? {
            return Ok(0);
        }
        if let Some(len) = self.write_parked(&msg).map_err(ws_error)? {
            return Ok(len);
        }
        let (frame, len) = match &self.compressed {
            Some(c) => c.frame_for(&msg),
            None => (msg.message().clone(), msg.len()),
        };
        self.start_send(frame).map_err(ws_error)?;
        Ok(len)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await.map_err(ws_error)
    }

    fn release_idle(&mut self) {
        if (!self.parked || self.ctx.is_some()) && self.holds_nothing() {
            self.park();
        }
    }

    fn written(&self) -> bool {
        !self.unflushed && !self.blocked && self.tail.is_none()
    }

    fn at_rest(&self) -> bool {
        self.parked && self.ctx.is_none() && self.written()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let reason = fit_close_reason(reason);
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
            self.start_send(Message::Close(Some(frame)))?;
            std::future::poll_fn(|cx| self.poll_flush(cx)).await?;
            // Wait for the client's close frame (or its end of stream).
            while let Some(msg) = std::future::poll_fn(|cx| self.poll_message(cx)).await {
                msg?;
            }
            Ok::<_, WsError>(())
        })
        .await;
    }
}

/// The most bytes of reason a close frame carries: a control frame's payload is at most 125 bytes
/// (RFC 6455 §5.5), two of them the code.
pub(crate) const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut at a char boundary to fit in a close frame. A longer reason (a worker's
/// `close_client_with`, say) would make a frame the client must refuse, losing the close code too.
pub(crate) fn fit_close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A client of a `text`, `frame` or `tcp` listener.
pub(crate) struct StreamTransport {
    pub stream: ClientStream,
    pub framing: Framing,
    inbuf: BytesMut,
    outbuf: BytesMut,
}

impl StreamTransport {
    pub fn new(stream: ClientStream, framing: Framing) -> Self {
        Self { stream, framing, inbuf: BytesMut::new(), outbuf: BytesMut::new() }
    }
}

impl Transport for StreamTransport {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            match self.framing.decode(&mut self.inbuf) {
                Ok(Some(data)) => {
                    let binary = self.framing.protocol != crate::framing::StreamProtocol::Text;
                    return Ok(Incoming::Message(Payload { data, binary }));
                }
                Ok(None) => {}
                Err(e) => return Err(TransportError::Violation { code: 1009, reason: e.to_string() }),
            }
            // Grow only as needed: small reads for idle clients, bounded by the decoder's limit.
            if self.inbuf.capacity() - self.inbuf.len() < 512 {
                self.inbuf.reserve(4096);
            }
            match self.stream.read_buf(&mut self.inbuf).await {
                Ok(0) => return Err(TransportError::Closed),
                Ok(_) => {}
                Err(e) => return Err(TransportError::Vanished(e)),
            }
        }
    }

    async fn ready(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn feed(&mut self, msg: OutMessage) -> Result<usize, TransportError> {
        let data: &[u8] = match msg.message() {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            // WebSocket control frames have no meaning here.
            _ => return Ok(0),
        };
        self.framing.encode(data, &mut self.outbuf);
        Ok(data.len())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if !self.outbuf.is_empty() {
            self.stream.write_all(&self.outbuf).await.map_err(TransportError::Vanished)?;
            self.outbuf.clear();
            if self.outbuf.capacity() > 64 * 1024 {
                self.outbuf = BytesMut::new();
            }
        }
        self.stream.flush().await.map_err(TransportError::Vanished)
    }

    fn release_idle(&mut self) {
        // Decoded messages may share the input buffer; an empty one is replaced, not kept.
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
        if self.outbuf.is_empty() && self.outbuf.capacity() > 0 {
            self.outbuf = BytesMut::new();
        }
    }

    fn written(&self) -> bool {
        self.outbuf.is_empty()
    }

    fn at_rest(&self) -> bool {
        // The input buffer is made again for every read (see `recv`).
        self.outbuf.capacity() == 0 && self.inbuf.is_empty()
    }

    async fn close(&mut self, _code: u16, _reason: &str) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A client frame as a browser sends it: masked, FIN set.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        crate::test_frames::masked(0x80 | opcode, payload)
    }

    async fn expect_text(t: &mut WsTransport, want: &str) {
        match t.recv().await {
            Ok(Incoming::Message(p)) => {
                assert!(!p.binary);
                assert_eq!(p.data, want.as_bytes());
            }
            other => panic!("expected text {want:?}, got {other:?}"),
        }
    }

    /// Frames arriving with the upgrade request, many in one segment, one split across writes
    /// and one larger than the stack buffer all arrive whole; nothing stays buffered once they
    /// are taken; a reply is written and a close is answered.
    #[tokio::test]
    async fn frames_in_any_split_arrive_whole_and_leave_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut hello = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec();
        hello.extend(client_frame(1, b"first"));
        client.write_all(&hello).await.unwrap();
        let up = crate::upgrade::accept(ClientStream::Plain(server), &crate::upgrade::Policy::default()).await.unwrap();
        assert_eq!(up.request.path, "/ws");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(client.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(up.stream, up.leftover, Arc::new(config), false, None);
        expect_text(&mut t, "first").await;

        let mut burst = Vec::new();
        for i in 0..200 {
            burst.extend(client_frame(1, format!("burst {i}").as_bytes()));
        }
        client.write_all(&burst).await.unwrap();
        for i in 0..200 {
            expect_text(&mut t, &format!("burst {i}")).await;
        }
        assert!(matches!(t.poll_recv(&mut Context::from_waker(std::task::Waker::noop())), Poll::Pending));
        assert!(!t.parked, "a client at work keeps its buffers");
        t.release_idle();
        assert!(t.parked, "a burst taken whole leaves nothing in the codec: it is released at the heartbeat");

        let split = client_frame(1, b"split across two writes");
        client.write_all(&split[..3]).await.unwrap();
        client.flush().await.unwrap();
        let writer = tokio::spawn(async move {
            client.write_all(&split[3..]).await.unwrap();
            let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            client.write_all(&client_frame(2, &big)).await.unwrap();
            client
        });
        expect_text(&mut t, "split across two writes").await;
        match t.recv().await {
            Ok(Incoming::Message(p)) => {
                assert!(p.binary);
                assert_eq!(p.data.len(), 100_000);
                assert!(p.data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
            }
            other => panic!("expected the large binary message, got {other:?}"),
        }
        assert!(matches!(t.poll_recv(&mut Context::from_waker(std::task::Waker::noop())), Poll::Pending));
        t.release_idle();
        assert!(t.parked);
        let mut client = writer.await.unwrap();
        // A heartbeat answer alone takes no buffer: it is read without a codec.
        t.pong_is_activity = true;
        client.write_all(&client_frame(10, b"")).await.unwrap();
        assert!(matches!(t.recv().await, Ok(Incoming::Activity)));
        assert!(t.parked, "the pong was read without a codec");
        // A pong in the same read as a message is the codec's: it is released as soon as it ran
        // out of input after pongs only.
        let mut pongs = client_frame(10, b"");
        let split = pongs.len() + 3;
        pongs.extend(client_frame(10, b"two"));
        client.write_all(&pongs[..split]).await.unwrap();
        assert!(matches!(t.recv().await, Ok(Incoming::Activity)));
        assert!(!t.parked, "a pong and part of one: read by a codec");
        client.write_all(&pongs[split..]).await.unwrap();
        assert!(matches!(t.recv().await, Ok(Incoming::Activity)));
        assert!(matches!(t.poll_recv(&mut Context::from_waker(std::task::Waker::noop())), Poll::Pending));
        assert!(t.parked, "and released as soon as it ran out of input");

        t.ready().await.unwrap();
        assert_eq!(t.feed(Message::text("reply").into()).unwrap(), 5);
        t.flush().await.unwrap();
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x05reply");

        client.write_all(&client_frame(8, &1000u16.to_be_bytes())).await.unwrap();
        assert!(matches!(t.recv().await, Err(TransportError::Closed)));
        let mut close = [0u8; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 0x02, 0x03, 0xe8], "the close is answered with its code");
    }

    /// A client that compresses: its compressed message is read through a rewriting state that
    /// exists only while the codec is active and goes with the codec's buffers at the heartbeat,
    /// and a long reply goes out compressed (RSV1) in the bytes RFC 7692 prescribes.
    #[tokio::test]
    async fn a_compressed_client_keeps_no_inflate_state_once_idle() {
        use crate::deflate::{Compressed, Settings};
        use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
            )
            .await
            .unwrap();
        let policy =
            crate::upgrade::Policy { deflate: Some(Settings { threshold: 16, level: 6 }), ..Default::default() };
        let up = crate::upgrade::accept(ClientStream::Plain(server), &policy).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(client.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
            "{head}"
        );
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let compressed = Compressed::new(up.deflate.expect("negotiated"), metrics.clone(), 1 << 20);
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(up.stream, up.leftover, Arc::new(config), false, Some(Box::new(compressed)));
        let has_state = |t: &WsTransport| t.compressed.as_ref().unwrap().has_state();
        assert!(t.parked && !has_state(&t), "nothing before the first byte");

        let text = "compress me, compress me, compress me, compress me";
        let mut z = Compress::new(Compression::new(6), false);
        let mut payload = Vec::with_capacity(256);
        z.compress_vec(text.as_bytes(), &mut payload, FlushCompress::Sync).unwrap();
        payload.truncate(payload.len() - 4);
        let mut frame = client_frame(1, &payload);
        frame[0] |= 0x40; // RSV1: compressed
        client.write_all(&frame).await.unwrap();
        expect_text(&mut t, text).await;
        assert!(matches!(t.poll_recv(&mut Context::from_waker(std::task::Waker::noop())), Poll::Pending));
        assert!(!t.parked && has_state(&t), "a client at work keeps its buffers until the heartbeat");
        t.release_idle();
        assert!(t.parked && !has_state(&t), "idle: no inflate state, as an uncompressed client has no buffers");
        assert_eq!(metrics.deflate_messages_in.load(std::sync::atomic::Ordering::Relaxed), 1);

        t.ready().await.unwrap();
        assert!(t.feed(Message::text(text).into()).unwrap() < text.len(), "written compressed");
        assert_eq!(t.feed(Message::text("short").into()).unwrap(), 5, "below the threshold: as it is");
        t.flush().await.unwrap();
        let mut got = vec![0u8; 2 + payload.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], 0xc1, "text, FIN, RSV1");
        assert_eq!(&got[2..], &payload[..], "no context takeover: the client's own compressor gives the same bytes");
        let mut short = [0u8; 7];
        client.read_exact(&mut short).await.unwrap();
        assert_eq!(&short, b"\x81\x05short");
        let mut inflated = Vec::with_capacity(256);
        let mut input = got[2..].to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        Decompress::new(false).decompress_vec(&input, &mut inflated, FlushDecompress::Sync).unwrap();
        assert_eq!(inflated, text.as_bytes());
    }

    #[test]
    fn only_whole_masked_pings_and_pongs_are_heartbeat_frames() {
        let mut reply = [0u8; HEARTBEAT_REPLY];
        let pong = client_frame(10, b"");
        assert_eq!(heartbeat_frames(&pong, &mut reply), Some(0), "a pong: nothing to answer");
        let mut two = client_frame(9, b"hi");
        two.extend(client_frame(10, b"x"));
        two.extend(client_frame(9, b""));
        assert_eq!(heartbeat_frames(&two, &mut reply), Some(6));
        assert_eq!(&reply[..6], b"\x8a\x02hi\x8a\x00", "each ping answered with its payload, unmasked");
        // Anything else is the codec's: data, part of a frame, unmasked, fragmented, RSV bits,
        // a control frame too long, no room for the answers.
        let mut mixed = client_frame(10, b"");
        mixed.extend(client_frame(1, b"text"));
        assert_eq!(heartbeat_frames(&mixed, &mut reply), None);
        assert_eq!(heartbeat_frames(&pong[..pong.len() - 1], &mut reply), None);
        assert_eq!(heartbeat_frames(&[0x8a, 0x00], &mut reply), None);
        assert_eq!(heartbeat_frames(&crate::test_frames::masked(0x09, b""), &mut reply), None);
        assert_eq!(heartbeat_frames(&crate::test_frames::masked(0xca, b""), &mut reply), None);
        assert_eq!(heartbeat_frames(&crate::test_frames::masked(0x89, &[0; 126]), &mut reply), None);
        assert_eq!(heartbeat_frames(&[], &mut reply), None);
        let many: Vec<u8> = (0..5).flat_map(|_| client_frame(9, &[7; 125])).collect();
        assert_eq!(heartbeat_frames(&many, &mut reply), None, "5 answers of 127 bytes do not fit in 512");
    }

    /// A parked client's heartbeat costs it no codec: the gateway's ping is written directly,
    /// the client's pong is read and the codec stays parked, and the client's own ping is
    /// answered directly; the next message still reads as usual.
    #[tokio::test]
    async fn heartbeats_leave_a_parked_codec_parked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(ClientStream::Plain(server), Vec::new(), Arc::new(config), true, None);
        let noop = || Context::from_waker(std::task::Waker::noop());
        assert!(t.parked);

        t.ready().await.unwrap();
        assert_eq!(t.feed(Message::Ping(Bytes::new()).into()).unwrap(), 0);
        t.flush().await.unwrap();
        assert!(t.parked && !t.unflushed, "written directly");
        assert!(t.ctx.is_none(), "no codec made for a heartbeat, nor for its flush");
        let mut ping = [0u8; 2];
        client.read_exact(&mut ping).await.unwrap();
        assert_eq!(ping, EMPTY_PING);

        client.write_all(&client_frame(10, b"")).await.unwrap();
        assert!(matches!(t.recv().await, Ok(Incoming::Activity)), "a pong is activity");
        assert!(t.parked && t.ctx.is_none(), "read without a codec");
        assert!(matches!(t.poll_recv(&mut noop()), Poll::Pending));

        let mut pings = client_frame(9, b"are you there");
        pings.extend(client_frame(9, b""));
        client.write_all(&pings).await.unwrap();
        assert!(matches!(t.recv().await, Ok(Incoming::Activity)));
        assert!(t.parked);
        let mut pongs = [0u8; 17];
        client.read_exact(&mut pongs).await.unwrap();
        assert_eq!(&pongs, b"\x8a\x0dare you there\x8a\x00", "both pings answered");

        client.write_all(&client_frame(1, b"after the heartbeats")).await.unwrap();
        expect_text(&mut t, "after the heartbeats").await;
        assert!(!t.parked, "a message takes a codec");
        // A ping while a codec is active goes through it, in order after what was fed.
        assert_eq!(t.feed(Message::text("reply").into()).unwrap(), 5);
        t.feed(Message::Ping(Bytes::new()).into()).unwrap();
        t.flush().await.unwrap();
        let mut got = [0u8; 9];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x05reply\x89\x00");
    }

    /// A parked client that is written to gets each message as one frame written directly, and
    /// no codec (a broadcast made one per client, with a write buffer, and made it anew after
    /// the flush); a message too long for that goes through a codec, kept (emptied) until the
    /// heartbeat, and then there is none: an idle client's transport is 160 bytes, where the
    /// codec alone is 248.
    #[tokio::test]
    async fn a_parked_client_is_written_to_without_a_codec() {
        assert!(size_of::<WsTransport>() <= 160, "{} bytes", size_of::<WsTransport>());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(ClientStream::Plain(server), Vec::new(), Arc::new(config), true, None);
        assert!(t.parked && t.ctx.is_none(), "nothing before the first byte");
        let medium = vec![7u8; 300];
        for msg in [Message::text("news"), Message::binary(medium.clone())] {
            t.ready().await.unwrap();
            t.feed(msg.into()).unwrap();
        }
        t.flush().await.unwrap();
        assert!(t.parked && t.ctx.is_none(), "no codec made for them");
        let mut want = b"\x81\x04news\x82\x7e\x01\x2c".to_vec();
        want.extend_from_slice(&medium);
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);

        let long = "x".repeat(DIRECT_FRAME + 1);
        t.ready().await.unwrap();
        t.feed(Message::text(long.clone()).into()).unwrap();
        t.flush().await.unwrap();
        let mut got = vec![0u8; 4 + long.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..4], [0x81, 126, 0x40, 0x01]);
        assert_eq!(&got[4..], long.as_bytes());
        assert!(t.parked && t.ctx.is_some(), "a codec for the long one, kept, emptied, for the next write");
        t.release_idle();
        assert!(t.parked && t.ctx.is_none(), "gone at the heartbeat");
    }

    /// A client whose messages are rare (Pusher's) gives its codec up as soon as a message is
    /// answered and its input read, not at the next heartbeat; the next message makes one again.
    #[tokio::test]
    async fn a_codec_released_when_drained_goes_once_the_input_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(ClientStream::Plain(server), Vec::new(), Arc::new(config), false, None);
        let noop = || Context::from_waker(std::task::Waker::noop());
        for round in ["subscribe", "ping"] {
            client.write_all(&client_frame(1, round.as_bytes())).await.unwrap();
            expect_text(&mut t, round).await;
            t.ready().await.unwrap();
            t.feed(Message::text("answer").into()).unwrap();
            t.flush().await.unwrap();
            let mut got = [0u8; 8];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"\x81\x06answer");
            if round == "subscribe" {
                // Without the call, a client at work keeps its codec until the heartbeat.
                assert!(matches!(t.poll_recv(&mut noop()), Poll::Pending));
                assert!(!t.parked && t.ctx.is_some(), "kept without the call");
            }
            t.release_when_drained();
            assert!(matches!(t.poll_recv(&mut noop()), Poll::Pending));
            assert!(t.parked && t.ctx.is_none(), "{round}: released once drained");
        }
    }

    /// A frame written directly that the socket takes only in part keeps its rest, which goes
    /// out before anything else (the next message, the pong to a ping read meanwhile): every
    /// frame arrives whole and in order.
    #[tokio::test]
    async fn a_direct_write_taken_in_part_goes_out_whole_before_anything_else() {
        // Small buffers both ways, so the socket fills while the client does not read.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let mut client = client.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default().read_buffer_size(0).write_buffer_size(16 * 1024);
        let mut t = WsTransport::new(ClientStream::Plain(server), Vec::new(), Arc::new(config), true, None);
        // Larger than the socket's buffer: the kernel takes what fits and says how much.
        let payload = |i: usize| vec![i as u8; 16_000];
        let mut sent = 0;
        while t.tail.is_none() {
            assert!(!t.blocked && sent < 10_000, "the socket took no frame in part ({sent} whole)");
            t.feed(Message::binary(payload(sent)).into()).unwrap();
            sent += 1;
        }
        assert!(t.parked && t.ctx.is_none(), "still no codec");
        // The client pings now: the pong must wait for the rest of the frame.
        client.write_all(&client_frame(0x9, b"p")).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        // Reading writes the rest first: the codec's (or the parked path's) pong comes after it.
        match tokio::time::timeout(Duration::from_secs(10), t.recv()).await.expect("the ping") {
            Ok(Incoming::Activity) => {}
            other => panic!("expected the ping, got {other:?}"),
        }
        assert!(t.tail.is_none());
        t.ready().await.unwrap();
        t.feed(Message::text("last").into()).unwrap();
        t.flush().await.unwrap();
        drop(t);
        let all = reader.await.unwrap();
        let mut at = 0;
        for i in 0..sent {
            assert_eq!(all[at..at + 4], [0x82, 126, 0x3e, 0x80], "frame {i} of {sent}");
            assert_eq!(all[at + 4..at + 16_004], payload(i)[..], "frame {i} of {sent}");
            at += 16_004;
        }
        // The codec read the ping (the parked path is not taken while a frame is unfinished)
        // and writes its pong with its next write: after the next message here.
        let (pong, last) = (&b"\x8a\x01p"[..], &b"\x81\x04last"[..]);
        let rest = &all[at..];
        assert!(rest == [pong, last].concat() || rest == [last, pong].concat(), "after every frame: {rest:?}");
    }

    #[test]
    fn a_close_reason_is_cut_at_a_char_boundary_to_fit_a_close_frame() {
        assert_eq!(fit_close_reason("bye"), "bye");
        let exact = "a".repeat(MAX_CLOSE_REASON);
        assert_eq!(fit_close_reason(&exact), exact);
        assert_eq!(fit_close_reason(&"a".repeat(300)), exact);
        // 'é' is two bytes: 61 of them (122 bytes) fit, the 62nd would end at byte 124.
        assert_eq!(fit_close_reason(&"é".repeat(150)), "é".repeat(61));
    }
}
