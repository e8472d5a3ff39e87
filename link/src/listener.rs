//! The one accept loop every daemon runs, on every listener it has (a gateway's public and
//! internal listeners, the GatewayWorker listeners, the register's, the HTTP API's, the control
//! socket): it never dies on an accept error, skips a connection reset before it was accepted,
//! and when the process is out of file descriptors it backs off (50 ms doubling to 1 s) instead
//! of spinning, optionally shedding pending clients with an answer instead of leaving them in
//! the backlog, and resumes by itself once descriptors are free.
//!
//! Also here: [`listen`], which binds with a backlog deep enough for a reconnect storm.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::fds::{self, SpareFd};

/// Pending connections the kernel may queue per listener (capped by `net.core.somaxconn`):
/// room for a reconnect storm, where tokio's default is 1024.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (host:port; the first address that binds wins) with [`LISTEN_BACKLOG`].
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
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
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address")))
}

/// A socket that accepts connections: TCP or Unix.
pub trait Listener: Send + Sync {
    /// An accepted connection.
    type Stream: Send + 'static;
    /// The peer's address.
    type Addr: Debug + Send + 'static;
    /// The next connection; cancel-safe.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Addr)>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, std::net::SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(UnixStream, tokio::net::unix::SocketAddr)>> + Send {
        UnixListener::accept(self)
    }
}

/// What a listener for the public needs to shed clients when the process is out of descriptors.
pub struct Shedding<'a, S> {
    /// The descriptor held back for this.
    pub spare: &'a SpareFd,
    /// Counts the clients refused this way.
    pub refused: &'a AtomicU64,
    /// Tells a refused client why, best effort and never blocking (a plain HTTP listener writes
    /// a 503); the connection is closed right after.
    pub refuse: &'a (dyn Fn(&S) + Send + Sync),
}

impl<S> Debug for Shedding<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shedding").field("refused", &self.refused).finish_non_exhaustive()
    }
}

impl<S> Shedding<'_, S> {
    /// Out of descriptors: frees the spare one, takes one pending client and closes it at once,
    /// so clients get an answer instead of waiting in the backlog. False when that was not
    /// possible (no spare, or still no descriptor), and the loop should back off.
    fn shed_one<L: Listener<Stream = S>>(&self, listener: &L) -> bool {
        use futures_util::FutureExt;
        // The connection must be closed inside `spend`, before the spare is taken back.
        let shed = self.spare.spend(|| match listener.accept().now_or_never() {
            Some(Ok((stream, addr))) => {
                (self.refuse)(&stream);
                drop(stream);
                Some(Ok(addr))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        });
        match shed {
            Some(Some(Ok(addr))) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = ?addr, "connection refused: out of file descriptors");
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

/// Accepts on `listener` until `shutdown`, handing each connection to `on_conn` (which spawns
/// what serves it: it must not wait). Accept errors never end the loop: a reset connection is
/// skipped, and when the process is out of descriptors (EMFILE, ENFILE) a listener with
/// `shed` sheds pending clients while one without leaves its peers in the backlog; both back off
/// (50 ms doubling to 1 s) instead of spinning, and resume by themselves once descriptors are
/// free. `name` labels the listener in the log lines.
pub async fn accept_loop<L: Listener>(
    listener: L,
    name: &str,
    shutdown: CancellationToken,
    shed: Option<Shedding<'_, L::Stream>>,
    mut on_conn: impl FnMut(L::Stream, L::Addr),
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
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
                        listener = name,
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
                        listener = name,
                        error = %e,
                        open_files = fds::open_descriptors(),
                        "out of file descriptors: {}",
                        if shed.is_some() { "refusing new clients until some close" } else { "peers wait in the backlog" }
                    );
                }
                exhausted += 1;
                if shed.as_ref().is_some_and(|s| s.shed_one(&listener)) {
                    continue;
                }
            }
            // Reset or aborted before we took it: nothing to serve, nothing to wait for.
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = name, error = %e, "connection gone before it was accepted");
                continue;
            }
            Err(e) => tracing::warn!(listener = name, error = %e, "accept failed; backing off"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Errors about one connection only (it was reset while waiting to be accepted).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_until_shutdown_on_tcp_and_unix_sockets() {
        let tcp = listen("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let looping = tokio::spawn({
            let stop = stop.clone();
            async move { accept_loop(tcp, "test", stop, None, move |s, _| drop(tx.send(s))).await }
        });
        let _c = TcpStream::connect(addr).await.unwrap();
        assert!(rx.recv().await.is_some());
        stop.cancel();
        looping.await.unwrap();

        let dir = std::env::temp_dir().join(format!("gw-link-accept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        let stop = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let looping = tokio::spawn({
            let stop = stop.clone();
            async move { accept_loop(unix, "test", stop, None, move |s, _| drop(tx.send(s))).await }
        });
        let _c = UnixStream::connect(&path).await.unwrap();
        assert!(rx.recv().await.is_some());
        stop.cancel();
        looping.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
