//! What a client connection reads and writes, whatever its protocol: WebSocket, or one of the
//! TCP framings of [`framing`](crate::framing). The connection loop is written once against
//! [`Transport`].

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use gw_proto::Payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::framing::Framing;
use crate::stream::{ClientStream, ReadAhead, SyncIo};

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
    /// Buffers one outgoing message without waiting; returns its size in bytes.
    fn feed(&mut self, msg: Message) -> Result<usize, TransportError>;
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Closes gracefully: a close frame (WebSocket) or a flushed shutdown (TCP), bounded in time.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// A WebSocket client: tungstenite's sans-IO codec over the client socket, polled by the
/// connection task itself. No `tokio_tungstenite::WebSocketStream`: its two waker proxies (128
/// bytes per client) are not needed when one task does all the reading and writing, and here the
/// codec reads through [`SyncIo`], which lets its read buffer stay frame-sized (see
/// BENCHMARKS.md, idle).
pub(crate) struct WsTransport {
    stream: ClientStream,
    ahead: ReadAhead,
    ctx: WebSocketContext,
    pong_is_activity: bool,
    /// A write found the socket full; the frame is buffered in the codec, and the next write
    /// flushes first (as `tokio_tungstenite`'s `Sink::poll_ready` does).
    blocked: bool,
    /// The stream ended or failed; reading returns nothing more.
    ended: bool,
}

fn ws_error(e: WsError) -> TransportError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        WsError::Io(e) => TransportError::Vanished(e),
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

impl WsTransport {
    /// A server-side WebSocket over `stream`, whose client already sent `leftover` (bytes after
    /// its upgrade request, usually none).
    pub fn new(stream: ClientStream, leftover: Vec<u8>, config: WebSocketConfig, pong_is_activity: bool) -> Self {
        Self {
            stream,
            ahead: ReadAhead::new(leftover),
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            pong_is_activity,
            blocked: false,
            ended: false,
        }
    }

    /// Runs `f` with the codec and the socket as seen from this poll.
    fn with_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocketContext, &mut SyncIo<'_, '_>) -> R,
    ) -> R {
        let mut io = SyncIo { stream: &mut self.stream, ahead: &mut self.ahead, cx };
        f(&mut self.ctx, &mut io)
    }

    /// The next frame the codec hands out; `None` once the stream ended or was closed.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match pending_on_block(self.with_io(cx, |ctx, io| ctx.read(io))) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(msg)) => Poll::Ready(Some(Ok(msg))),
            Poll::Ready(Err(e)) => {
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
                Some(Ok(Message::Text(t))) => {
                    Ok(Incoming::Message(Payload { data: bytes::Bytes::from(t), binary: false }))
                }
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
        let r = std::task::ready!(pending_on_block(self.with_io(cx, |ctx, io| ctx.flush(io))));
        self.blocked = false;
        Poll::Ready(match r {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }

    /// Writes out what a full socket left in the codec, if anything.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if !self.blocked {
            return Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(pending_on_block(self.with_io(cx, |ctx, io| ctx.flush(io))));
        self.blocked = false;
        Poll::Ready(r)
    }

    /// Hands one message to the codec without waiting. The socket is polled with a no-op
    /// waker: a socket that cannot take the frame now leaves it in the codec's buffer, and the
    /// next `ready` or `flush`, which every caller awaits before the task sleeps, writes it with
    /// the task's waker.
    fn start_send(&mut self, msg: Message) -> Result<(), WsError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.with_io(&mut cx, |ctx, io| ctx.write(io, msg)) {
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
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        // Polled by hand: this future sits in every connection's task while it waits, and
        // awaiting `next()` here kept room for a whole read result in it (280 bytes instead of
        // about 40; see BENCHMARKS.md).
        match std::future::poll_fn(|cx| self.poll_recv(cx)).await {
            Some(incoming) => incoming,
            None => {
                // tungstenite queued the close reply; send it so the close is clean.
                let _ =
                    Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, std::future::poll_fn(|cx| self.poll_flush(cx)))).await;
                Err(TransportError::Closed)
            }
        }
    }

    async fn ready(&mut self) -> Result<(), TransportError> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await.map_err(ws_error)
    }

    fn feed(&mut self, msg: Message) -> Result<usize, TransportError> {
        let len = msg.len();
        self.start_send(msg).map_err(ws_error)?;
        Ok(len)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await.map_err(ws_error)
    }

    async fn close(&mut self, code: u16, reason: &str) {
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

    fn feed(&mut self, msg: Message) -> Result<usize, TransportError> {
        let data: &[u8] = match &msg {
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
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | opcode];
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
        f
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
        let mut t = WsTransport::new(up.stream, up.leftover, config, false);
        expect_text(&mut t, "first").await;

        let mut burst = Vec::new();
        for i in 0..200 {
            burst.extend(client_frame(1, format!("burst {i}").as_bytes()));
        }
        client.write_all(&burst).await.unwrap();
        for i in 0..200 {
            expect_text(&mut t, &format!("burst {i}")).await;
        }
        assert_eq!(t.ahead.held(), 0, "a burst taken whole leaves no read-ahead");

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
        assert_eq!(t.ahead.held(), 0);
        let mut client = writer.await.unwrap();

        t.ready().await.unwrap();
        assert_eq!(t.feed(Message::text("reply")).unwrap(), 5);
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
}
