//! Serving HTTP(S) on the accept loop every daemon runs (`gw_link::accept`), with the limits an
//! API on the open network needs: a cap on open connections (in all and per address; over it a
//! client is answered 503 and closed at once, so descriptors are never exhausted by idle or
//! stalled clients), a deadline for the TLS handshake and for each request head (`header_timeout`,
//! which also closes a kept-alive connection idle that long), and a deadline for each body
//! (`body_timeout`, in the routes' guard). Refusals and timeouts are counted in `/metrics` and
//! logged at most once per 10 s with their number.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use gw_link::fds::SpareFd;
use gw_link::listener::{Shedding, accept_loop};
use gw_link::{ConnLimits, ConnSlot, Refusal, Throttle};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Api;

/// Largest request head (and read buffer) a connection may hold: 431 above it.
const MAX_HEAD: usize = 64 * 1024;

/// The rate-limited log lines of the server.
#[derive(Debug, Default)]
pub(crate) struct Throttles {
    pub refused: Throttle,
    pub head_timeout: Throttle,
    pub body_timeout: Throttle,
    pub tls: Throttle,
    pub unauthorized: Throttle,
}

/// Best effort, never blocking: tells a plain HTTP client why it is refused.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// Accepts on `listener` until `shutdown`, then lets requests in flight finish within the grace
/// period (idle connections close at once).
pub(crate) async fn serve(api: &Arc<Api>, listener: TcpListener, router: Router, shutdown: &CancellationToken) {
    let limits = Arc::new(ConnLimits::new(api.limits.max_connections, api.limits.max_connections_per_ip));
    let spare = SpareFd::new();
    let connections = TaskTracker::new();
    let refuse_plain = |s: &TcpStream| refuse(s);
    let refuse_tls = |_: &TcpStream| {};
    let shed = Shedding {
        spare: &spare,
        refused: &api.stats.rejected_fd_exhausted,
        refuse: if api.tls.is_some() { &refuse_tls } else { &refuse_plain },
    };
    accept_loop(listener, "http-api", shutdown.clone(), Some(shed), |stream, peer| {
        let slot = match limits.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (counter, limit) = match refusal {
                    Refusal::Total => (&api.stats.rejected_capacity, "max_connections"),
                    Refusal::PerIp => (&api.stats.rejected_per_ip, "max_connections_per_ip"),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = api.throttles.refused.hit() {
                    tracing::warn!(peer = %peer, refused = n, "HTTP connections refused: {limit} reached");
                }
                if api.tls.is_none() {
                    refuse(&stream);
                }
                return;
            }
        };
        let (api, router, shutdown) = (api.clone(), router.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot: ConnSlot = slot;
            connection(stream, peer, &api, router, &shutdown).await;
        });
    })
    .await;
    connections.close();
    if tokio::time::timeout(api.grace, connections.wait()).await.is_err() {
        tracing::warn!(grace = ?api.grace, "requests still in flight after the grace period; stopping anyway");
    }
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until the client leaves, a deadline
/// passes, or the server stops (the request in flight finishes first).
async fn connection(stream: TcpStream, peer: SocketAddr, api: &Api, router: Router, shutdown: &CancellationToken) {
    stream.set_nodelay(true).ok();
    api.stats.connections.fetch_add(1, Ordering::Relaxed);
    match &api.tls {
        None => http(stream, peer, api, router, shutdown).await,
        Some(acceptor) => match tokio::time::timeout(api.limits.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => http(tls, peer, api, router, shutdown).await,
            Ok(Err(e)) => {
                api.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                api.stats.tls_timeouts.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = api.throttles.tls.hit() {
                    tracing::info!(peer = %peer, connections = n, timeout = ?api.limits.header_timeout, "connections closed: TLS handshake not done in time");
                }
            }
        },
    }
    api.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn http<I>(io: I, peer: SocketAddr, api: &Api, router: Router, shutdown: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(api.limits.header_timeout).max_buf_size(MAX_HEAD);
    // hyper's own 400/414/431 answers get a JSON body on their way out, like every other error.
    let io = crate::bare_errors::JsonErrors::new(io);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match served {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            api.stats.head_timeouts.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = api.throttles.head_timeout.hit() {
                tracing::info!(
                    peer = %peer,
                    connections = n,
                    timeout = ?api.limits.header_timeout,
                    "connections closed: no complete request head in time (a stalled sender, or idle keep-alive)"
                );
            }
        }
        Err(e) => tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error"),
    }
}
