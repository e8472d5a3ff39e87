//! What a client connection reads and writes, whatever its protocol: WebSocket, or one of the
//! TCP framings of [`framing`](crate::framing). The connection loop is written once against
//! [`Transport`].

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use gw_proto::Payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::framing::Framing;
use crate::stream::ClientStream;

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
    /// Buffers one outgoing message; returns its size in bytes.
    fn feed(&mut self, msg: Message) -> impl Future<Output = Result<usize, TransportError>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Closes gracefully: a close frame (WebSocket) or a flushed shutdown (TCP), bounded in time.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// A WebSocket client.
pub(crate) struct WsTransport {
    pub ws: WebSocketStream<ClientStream>,
    pub pong_is_activity: bool,
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

impl WsTransport {
    /// The next message or sign of life; `None` when the client sent a close frame.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, TransportError>>> {
        loop {
            let item = match self.ws.poll_next_unpin(cx) {
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
                let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, self.ws.flush())).await;
                Err(TransportError::Closed)
            }
        }
    }

    async fn feed(&mut self, msg: Message) -> Result<usize, TransportError> {
        let len = msg.len();
        self.ws.feed(msg).await.map_err(ws_error)?;
        Ok(len)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.ws.flush().await.map_err(ws_error)
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            self.ws.close(Some(frame)).await?;
            // Wait for the client's close frame (or its end of stream).
            while let Some(msg) = self.ws.next().await {
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

    async fn feed(&mut self, msg: Message) -> Result<usize, TransportError> {
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
