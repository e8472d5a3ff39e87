//! JSON bodies for the answers hyper writes by itself. A request whose head cannot be parsed
//! (400), whose head is too large (431) or whose URI is too long (414) never reaches the
//! application: hyper answers it with an empty body and closes. Every other error of this API is
//! `{"error": {...}}`, so a client's error handling should not need a case for these.
//!
//! hyper has no hook for those answers, so [`JsonErrors`] sits between it and the socket and
//! gives them a body on their way out: a 4xx head with `content-length: 0` is one of them (every
//! answer of the application carries a JSON body). Each accepted connection is wrapped in it (`serve.rs`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ApiError;

/// The longest head hyper writes for its own answers (status line, `content-length: 0`, `date`).
const MAX_BARE_HEAD: usize = 256;

/// A connection whose bare 4xx answers get a JSON body (see the module docs).
#[derive(Debug)]
pub struct JsonErrors<S> {
    inner: S,
    /// A rewritten answer still to be written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    /// Wraps one accepted connection.
    pub fn new(inner: S) -> Self {
        Self { inner, pending: None }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = with_body(buf) {
            // Taken whole; written from `pending` (now, and on the next write, flush or shutdown).
            this.pending = Some((answer, 0));
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (parts.next(), parts.next())
            && let Some(answer) = with_body(only)
        {
            this.pending = Some((answer, 0));
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(only.len()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// If `buf` is exactly one of hyper's own answers (a 4xx head with an empty body), the same
/// answer with a JSON body.
fn with_body(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() > MAX_BARE_HEAD || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let rest = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let code: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let empty = b"\r\ncontent-length: 0\r\n";
    let at = buf.windows(empty.len()).position(|w| w.eq_ignore_ascii_case(empty))?;
    let status = StatusCode::from_u16(code).ok().filter(StatusCode::is_client_error)?;
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is not valid HTTP/1.1 (its head could not be parsed)"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("too_large", "the request head is larger than this server takes (too many or too long header fields)")
        }
        StatusCode::URI_TOO_LONG => ("too_large", "the request URI is longer than this server takes"),
        _ => ("bad_request", "the request could not be handled"),
    };
    let body = serde_json::to_vec(&crate::error::ErrorBody { error: ApiError::new(status, code, message) }).ok()?;
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(&buf[..at]);
    out.extend_from_slice(
        format!("\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len()).as_bytes(),
    );
    out.extend_from_slice(&buf[at + empty.len()..]);
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const BARE: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";

    #[test]
    fn only_bare_client_errors_get_a_body() {
        let out = String::from_utf8(with_body(BARE).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((json["error"]["status"].as_u64(), json["error"]["code"].as_str()), (Some(431), Some("too_large")));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(with_body(bad).unwrap()).unwrap().contains("\"code\":\"bad_request\""));
        // Answers of the application, and anything else, pass unchanged.
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"{\"value\":1}",
            b"",
        ] {
            assert_eq!(with_body(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_rewritten_answer_reaches_the_peer_whole_and_the_rest_passes_through() {
        // A small pipe: the rewritten answer goes out over several writes.
        let (ours, mut peer) = tokio::io::duplex(16);
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut conn = JsonErrors::new(ours);
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
        conn.write_all(BARE).await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);
        let all = String::from_utf8(reading.await.unwrap()).unwrap();
        let (first, second) = all.split_at(all.find("HTTP/1.1 431").unwrap());
        assert_eq!(first, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        assert!(second.ends_with("}}"), "{second}");
    }
}
