//! A client socket, plain or TLS.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client connection's byte stream.
#[derive(Debug)]
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Bytes read from a client's socket that the WebSocket codec has not taken yet. Empty (and
/// holding no memory) whenever the codec has taken all that was read, which is the usual state of
/// an idle client.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    buf: Vec<u8>,
    /// How much of `buf` was already handed out.
    pos: usize,
}

impl ReadAhead {
    /// Starts with bytes that were read before the codec existed (the start of the first frame,
    /// sent right after the HTTP upgrade request).
    pub fn new(leftover: Vec<u8>) -> Self {
        Self { buf: leftover, pos: 0 }
    }

    /// Bytes of memory held (0 when nothing waits).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Copies what fits into `out`; frees the buffer once it is all handed out.
    fn take_into(&mut self, out: &mut [u8]) -> usize {
        let rest = &self.buf[self.pos..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            *self = Self::default();
        }
        n
    }
}

/// Largest read into the stack buffer of [`SyncIo`]. A codec read of at least this much goes
/// straight to the socket.
const SCRATCH: usize = 8 * 1024;

/// The blocking `Read`/`Write` view of a client socket that tungstenite's codec wants, for the
/// duration of one poll: `Pending` becomes `WouldBlock`, and the socket registers the polling
/// task's waker. Reads the codec asks for in small pieces (it keeps only a frame-sized buffer, so
/// an idle client holds no read buffer) are served from one larger read into a stack buffer, the
/// unread rest kept in the client's [`ReadAhead`], so a burst of frames still costs one system
/// call.
pub(crate) struct SyncIo<'a, 'b> {
    pub stream: &'a mut ClientStream,
    pub ahead: &'a mut ReadAhead,
    pub cx: &'a mut Context<'b>,
}

fn would_block<T>(poll: Poll<std::io::Result<T>>) -> std::io::Result<T> {
    match poll {
        Poll::Ready(r) => r,
        Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}

impl std::io::Read for SyncIo<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if !self.ahead.buf.is_empty() {
            return Ok(self.ahead.take_into(out));
        }
        if out.len() >= SCRATCH {
            let mut buf = ReadBuf::new(out);
            would_block(Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf))?;
            return Ok(buf.filled().len());
        }
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut buf = ReadBuf::uninit(&mut scratch);
        would_block(Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf))?;
        let read = buf.filled();
        let n = read.len().min(out.len());
        out[..n].copy_from_slice(&read[..n]);
        if read.len() > n {
            *self.ahead = ReadAhead::new(read[n..].to_vec());
        }
        Ok(n)
    }
}

impl std::io::Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        would_block(Pin::new(&mut *self.stream).poll_write(self.cx, buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        would_block(Pin::new(&mut *self.stream).poll_flush(self.cx))
    }
}
