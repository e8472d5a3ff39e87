//! The gateway's GatewayWorker-protocol listener: unmodified PHP `BusinessWorker`s,
//! `Lib\Gateway` calls and web backends' `GatewayClient`s talk to this gateway in
//! `GatewayProtocol.php`'s packets. Every command is adapted to the same internal operation our
//! own protocol uses (`Clients::execute` in `commands.rs`, `Clients::answer` in `queries.rs`),
//! and a PHP worker is a `WorkerLink` (`router.rs`) like a Rust one, so routing, sessions and
//! groups exist once.
//!
//! Each connection is a link on `gw_link`'s engine with a wire of its own (`wire.rs`: PHP's
//! packets, client events encoded for PHP), admitted like our own internal links (a cap on
//! unauthenticated connections, a deadline, failures budgeted and logged per address), and the
//! announcements to PHP-protocol registers run the same dial loop as ours.
//!
//! What PHP's protocol cannot carry: a PHP worker never acknowledges events, so its link
//! acknowledges each event once it is written to the worker's socket. A PHP worker that dies or
//! is reloaded loses the events it had read but not handled (at most once, as in GatewayWorker);
//! events not yet written go to another worker like any unacknowledged event.

mod announce;
mod conn;
mod events;
mod one_loop;
mod wire;

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use gw_config::GatewayGatewayWorker;
use gw_link::listener::accept_loop;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::one_loop::OneLoop;
use crate::{Gateway, GatewayError};

/// What every PHP connection of this gateway shares.
#[derive(Debug)]
pub(crate) struct PhpSide {
    pub gw: Arc<Gateway>,
    pub config: GatewayGatewayWorker,
    /// The advertised address, embedded in the client ids PHP code gets.
    pub advertise: SocketAddrV4,
    /// Added to local client numbers (mod 2^32) in PHP client ids, so ids of an earlier run of
    /// this gateway do not name this run's clients (PHP ids have only 32 bits for the connection).
    pub offset: u32,
    /// Bytes of large first packets that connections not authenticated yet hold (`conn.rs`).
    pub unauthenticated_bytes: AtomicUsize,
}

impl PhpSide {
    /// The PHP `connection_id` of local client `local`.
    pub fn connection_id(&self, local: u64) -> u32 {
        (local as u32).wrapping_add(self.offset)
    }

    /// The local client number a PHP `connection_id` names.
    pub fn local(&self, connection_id: u32) -> u64 {
        connection_id.wrapping_sub(self.offset) as u64
    }
}

/// Serves PHP peers on `listener` and announces it to the GatewayWorker-protocol registers until
/// `shutdown` (accepting) and `links_down` (the links, after the gateway closed its clients and
/// their close events are queued). The advertised address defaults to the listener's real address
/// (port 0 in tests). The receiver says how it ended.
///
/// Every PHP connection runs in one task (`one_loop.rs`), as PHP's gateway is one event loop, so
/// a web backend's calls on successive connections are handled in the order they arrived.
pub(crate) fn spawn(
    gw: Arc<Gateway>,
    config: GatewayGatewayWorker,
    listener: TcpListener,
    shutdown: CancellationToken,
    links_down: CancellationToken,
) -> oneshot::Receiver<Result<(), GatewayError>> {
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(serve(gw, config, listener, shutdown, links_down).await);
    });
    done_rx
}

async fn serve(
    gw: Arc<Gateway>,
    config: GatewayGatewayWorker,
    listener: TcpListener,
    shutdown: CancellationToken,
    links_down: CancellationToken,
) -> Result<(), GatewayError> {
    let local = listener.local_addr().map_err(GatewayError::Listener)?;
    let advertise = config.advertise.clone().unwrap_or_else(|| local.to_string());
    let advertise = advertise.parse::<SocketAddrV4>().map_err(|_| GatewayError::GatewayWorkerAdvertise(advertise))?;
    let side = Arc::new(PhpSide {
        gw,
        config,
        advertise,
        offset: (rand::random::<u32>() >> 8) << 8,
        unauthenticated_bytes: AtomicUsize::new(0),
    });
    tracing::info!(listen = %local, advertise = %advertise, "gateway listening for GatewayWorker (PHP) workers and clients");
    let tasks = TaskTracker::new();
    for register in side.config.registers.clone() {
        let span = tracing::info_span!("php_announce", register = %register);
        tasks.spawn(announce::keep_announcing(register, side.clone(), links_down.clone()).instrument(span));
    }
    let conns = OneLoop::start(&tasks);
    let mut next = 0u64;
    accept_loop(listener, "gatewayworker", shutdown, None, |stream, peer| {
        let Some(pending) = side.gw.admission.enter(peer, &side.gw.state.metrics.rejected_links_busy) else { return };
        next += 1;
        let span = tracing::info_span!("php_link", peer = %peer, link = next);
        conns.spawn(conn::serve(stream, pending, peer, side.clone(), links_down.clone()).instrument(span));
    })
    .await;
    drop(conns);
    links_down.cancelled().await;
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tasks.wait()).await;
    Ok(())
}
