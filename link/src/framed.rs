//! Reading frames from a socket into a reusable buffer, in whatever framing the link's wire
//! format has: our length prefix by default, a PHP peer's packets or lines otherwise.

use bytes::BytesMut;
use gw_proto::{FrameDecoder, codec};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::LinkError;

/// How a byte stream splits into frames: one wire format's framing, sans-IO.
pub trait Framing: Send + 'static {
    /// One frame.
    type Frame: Send;

    /// Takes one complete frame off the front of `buf`, or `None` until one has fully arrived.
    /// A bad frame is an error: the stream cannot be resynchronised after it.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, LinkError>;
}

/// Our internal links' framing: a `u32` big-endian payload length, then the payload.
#[derive(Debug, Clone, Copy)]
pub struct LengthPrefixed(FrameDecoder);

impl LengthPrefixed {
    /// Frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self(FrameDecoder::new(max_frame))
    }
}

impl Framing for LengthPrefixed {
    type Frame = BytesMut;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LinkError> {
        Ok(self.0.decode(buf)?)
    }
}

/// Reads frames; the buffer starts small and grows only as frames need.
#[derive(Debug)]
pub struct FrameReader<R, F = LengthPrefixed> {
    inner: R,
    buf: BytesMut,
    framing: F,
}

impl<R: AsyncRead + Unpin, F: Framing> FrameReader<R, F> {
    /// Reads `framing`'s frames from `inner`, starting with bytes already read (`buf`).
    pub fn with_framing(inner: R, framing: F, buf: BytesMut) -> Self {
        Self { inner, buf, framing }
    }

    /// The next frame; `None` on a clean end of stream between frames. Cancel-safe: bytes
    /// already read stay in the buffer.
    pub async fn next(&mut self) -> Result<Option<F::Frame>, LinkError> {
        loop {
            if let Some(frame) = self.framing.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(LinkError::Truncated(self.buf.len())) };
            }
        }
    }

    /// The framing, to change its limits as a connection moves from one phase to the next.
    pub fn framing_mut(&mut self) -> &mut F {
        &mut self.framing
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads length-prefixed frames of at most `max_frame` bytes from `inner`.
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self::with_buffer(inner, max_frame, BytesMut::with_capacity(4096))
    }

    /// Continues reading length-prefixed frames from `inner` with bytes already buffered.
    pub fn with_buffer(inner: R, max_frame: usize, buf: BytesMut) -> Self {
        Self::with_framing(inner, LengthPrefixed::new(max_frame), buf)
    }

    /// The next frame payload; `None` on a clean end of stream between frames. Cancel-safe.
    pub async fn read_frame(&mut self) -> Result<Option<BytesMut>, LinkError> {
        self.next().await
    }

    /// The next frame decoded as `T`.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LinkError> {
        match self.read_frame().await? {
            Some(frame) => Ok(Some(codec::decode(&frame)?)),
            None => Ok(None),
        }
    }
}

impl<R, F> FrameReader<R, F> {
    /// Splits into the stream and any bytes read past the last frame.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}
