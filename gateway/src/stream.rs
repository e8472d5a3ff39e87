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

/// The blocking `Read`/`Write` view of a client socket that tungstenite's codec wants, for the
/// duration of one poll: `Pending` becomes `WouldBlock`, and the socket registers the polling
/// task's waker. It also tells the connection what the codec did, so it can drop the codec's
/// buffers while the client is idle: every byte read goes through `seen`, and `write_blocked`
/// is set when the socket could not take a write. For a client that compresses, what is read
/// goes through `compressed` first, which inflates its compressed messages into plain frames.
pub(crate) struct SyncIo<'a, 'b> {
    pub stream: &'a mut ClientStream,
    pub cx: &'a mut Context<'b>,
    pub seen: &'a mut crate::framing::WsFrameTracker,
    pub write_blocked: &'a mut bool,
    pub compressed: Option<&'a mut crate::deflate::Compressed>,
}

/// The socket's own bytes, for the rewriting of a compressed client's stream.
struct RawRead<'a, 'b> {
    stream: &'a mut ClientStream,
    cx: &'a mut Context<'b>,
}

impl std::io::Read for RawRead<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut buf = ReadBuf::new(out);
        would_block(Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

fn would_block<T>(poll: Poll<std::io::Result<T>>) -> std::io::Result<T> {
    match poll {
        Poll::Ready(r) => r,
        Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}

impl std::io::Read for SyncIo<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut raw = RawRead { stream: &mut *self.stream, cx: &mut *self.cx };
        let n = match self.compressed.as_deref_mut() {
            Some(c) => c.read(&mut raw, out)?,
            None => std::io::Read::read(&mut raw, out)?,
        };
        self.seen.feed(&out[..n]);
        Ok(n)
    }
}

impl std::io::Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = would_block(Pin::new(&mut *self.stream).poll_write(self.cx, buf));
        *self.write_blocked |= r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = would_block(Pin::new(&mut *self.stream).poll_flush(self.cx));
        *self.write_blocked |= r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
        r
    }
}
