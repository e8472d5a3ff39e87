//! Listening and accepting: listeners with a deep backlog, and accept loops that survive errors,
//! shed clients when the process is out of file descriptors and back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fds::{self, SpareFd};
use crate::listener;
use crate::metrics::Metrics;

/// Pending connections the kernel may queue per listener (capped by `net.core.somaxconn`):
/// room for a reconnect storm, where tokio's default is 1024.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (host:port; the first address that binds wins) with [`LISTEN_BACKLOG`].
pub(crate) async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As std and tokio do on Unix: restart without waiting out TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to no address")))
}

/// Best effort, never blocking: tells a plain HTTP (WebSocket) client why it is refused.
pub(crate) fn refuse(spec: &listener::ListenerSpec, stream: &tokio::net::TcpStream) {
    if spec.protocol == gw_proto::Protocol::WebSocket && spec.tls.is_none() {
        let _ = stream.try_write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

/// What a public accept loop needs to shed clients when the process is out of descriptors.
pub(crate) struct Shedding<'a> {
    /// The descriptor held back for this.
    pub spare: &'a SpareFd,
    /// Counts the clients refused this way.
    pub refused: &'a AtomicU64,
    /// The listener, to tell its clients why they are refused.
    pub spec: Arc<listener::ListenerSpec>,
}

impl Shedding<'_> {
    /// Out of descriptors: frees the spare one, takes one pending client and closes it at once,
    /// so clients get an answer instead of waiting in the backlog. False when that was not
    /// possible (no spare, or still no descriptor), and the loop should back off.
    fn shed_one(&self, listener: &TcpListener) -> bool {
        use futures_util::FutureExt;
        // The connection must be closed inside `spend`, before the spare is taken back.
        let shed = self.spare.spend(|| match listener.accept().now_or_never() {
            Some(Ok((stream, addr))) => {
                refuse(&self.spec, &stream);
                drop(stream);
                Some(Ok(addr))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        });
        match shed {
            Some(Some(Ok(addr))) => {
                Metrics::inc(self.refused);
                tracing::debug!(peer = %addr, "connection refused: out of file descriptors");
                true
            }
            // Nothing pending after all.
            Some(None) => true,
            Some(Some(Err(_))) => false,
            None => {
                self.spare.refill();
                false
            }
        }
    }
}

/// Accepts until shutdown. Accept errors never end the loop: a reset connection is skipped, and
/// when the process is out of descriptors (EMFILE, ENFILE) a public listener sheds pending
/// clients while an internal one leaves its peers in the backlog; both back off (50 ms doubling
/// to 1 s) instead of spinning, and resume by themselves once descriptors are free.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shutdown: CancellationToken,
    shed: Option<Shedding<'_>>,
    mut on_conn: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let kind = if shed.is_some() { "public" } else { "internal" };
    let mut backoff = FIRST_BACKOFF;
    // Failures in the current episode of descriptor exhaustion, logged at its start and end.
    let mut exhausted: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                if exhausted > 0 {
                    tracing::info!(
                        listener = kind,
                        failed_accepts = exhausted,
                        "file descriptors available again; accepting"
                    );
                    exhausted = 0;
                }
                backoff = FIRST_BACKOFF;
                on_conn(stream, addr);
                continue;
            }
            Err(e) if fds::is_exhaustion(&e) => {
                if exhausted == 0 {
                    tracing::warn!(
                        listener = kind,
                        error = %e,
                        open_files = fds::open_descriptors(),
                        "out of file descriptors: {}",
                        if shed.is_some() { "refusing new clients until some close" } else { "internal peers wait in the backlog" }
                    );
                }
                exhausted += 1;
                if shed.as_ref().is_some_and(|s| s.shed_one(&listener)) {
                    continue;
                }
            }
            Err(e) => tracing::warn!(listener = kind, error = %e, "accept failed; backing off"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
