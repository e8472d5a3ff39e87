//! Reading frames from a socket into a reusable buffer.

use bytes::BytesMut;
use gw_proto::{FrameDecoder, codec};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::LinkError;

/// Reads length-prefixed frames; the buffer starts small and grows only as frames need.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max_frame` bytes from `inner`.
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self { inner, buf: BytesMut::with_capacity(4096), decoder: FrameDecoder::new(max_frame) }
    }

    /// The next frame payload; `None` on a clean end of stream between frames. Cancel-safe: bytes
    /// already read stay in the buffer.
    pub async fn read_frame(&mut self) -> Result<Option<BytesMut>, LinkError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
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

    /// The next frame decoded as `T`.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LinkError> {
        match self.read_frame().await? {
            Some(frame) => Ok(Some(codec::decode(&frame)?)),
            None => Ok(None),
        }
    }
}

impl<R> FrameReader<R> {
    /// Splits into the stream and any bytes read past the last frame.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// Continues reading from `inner` with bytes already buffered.
    pub fn with_buffer(inner: R, max_frame: usize, buf: BytesMut) -> Self {
        Self { inner, buf, decoder: FrameDecoder::new(max_frame) }
    }
}
