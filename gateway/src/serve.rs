//! Running a gateway: the sockets it serves, the accept loops and background tasks it starts, and
//! the order in which it stops (clients first, then the worker links once their events are
//! acknowledged). Every listener runs `gw_link`'s accept loop; the internal ones admit peers
//! through the gateway's one [`Admission`](gw_link::Admission).

use std::sync::Arc;
use std::time::Duration;

use gw_config::GatewayConfig;
use gw_link::listener::{Shedding, accept_loop, listen};
use gw_proto::ToGateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::GatewayError;
use crate::gateway::{Gateway, build};
use crate::metrics::Metrics;
use crate::{announce, client, gatewayworker, heartbeat, listener, peer};

/// How long a stopping gateway waits for its successor to say the hand-over is applied.
const HAND_OVER_DONE_WAIT: Duration = Duration::from_secs(3);

/// The sockets a gateway serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Public listeners for clients, in the order of `GatewayConfig::effective_listeners`.
    pub public: Vec<TcpListener>,
    /// Internal listener for business workers and gateway clients.
    pub internal: TcpListener,
    /// The `[gatewayworker]` listener for PHP BusinessWorkers and GatewayClients, when the
    /// configuration has that section.
    pub gatewayworker: Option<TcpListener>,
}

impl Listeners {
    /// Listeners for a gateway without a `[gatewayworker]` section.
    pub fn new(public: Vec<TcpListener>, internal: TcpListener) -> Self {
        Self { public, internal, gatewayworker: None }
    }

    /// Binds every listener the configuration names.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let bind = |addr: String, setting: String| async move {
            listen(&addr).await.map_err(|source| GatewayError::Bind { addr, setting, source })
        };
        let mut public = Vec::new();
        for l in config.effective_listeners() {
            let url = gw_config::parse_listener_url(&l.url)
                .map_err(|reason| GatewayError::ListenerUrl { url: l.url.clone(), reason })?;
            public.push(bind(url.addr.to_string(), l.url.clone()).await?);
        }
        let internal = bind(config.internal_listen.clone(), "internal_listen".into()).await?;
        let gatewayworker = match &config.gatewayworker {
            Some(php) => Some(bind(php.listen.clone(), "gatewayworker.listen".into()).await?),
            None => None,
        };
        Ok(Self { public, internal, gatewayworker })
    }
}

/// Runs a gateway until `shutdown` is cancelled, then stops gracefully: stop accepting, close
/// every client with a close frame (1001), deliver their close events to the workers, flush the
/// worker links, all within the grace period.
pub async fn run(config: GatewayConfig, listeners: Listeners, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let gw = build(config, &listeners)?;
    serve(gw, listeners, shutdown).await
}

/// [`run`] with state built by [`build`], so callers can observe it.
pub async fn serve(gw: Arc<Gateway>, listeners: Listeners, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let first_public =
        listeners.public.first().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        name = %gw.config.name,
        public = %first_public,
        listeners = ?gw.listener_urls(),
        internal = %gw.internal,
        advertise = %gw.address,
        "gateway listening"
    );
    let clients_down = gw.clients_down.clone();
    let links_down = CancellationToken::new();
    let clients = gw.client_tasks.clone();
    let links = TaskTracker::new();

    // PHP GatewayWorker's protocol, in one task. Its links stay up until the
    // gateway has closed its clients, so PHP workers get their close events too.
    let php = match (listeners.gatewayworker, gw.config.gatewayworker.clone()) {
        (Some(socket), Some(config)) => {
            Some(gatewayworker::spawn(gw.clone(), config, socket, shutdown.clone(), links_down.clone()))
        }
        _ => None,
    };
    announce::spawn_all(&gw, &links_down, &links);
    let internal = accept_loop(listeners.internal, "internal", shutdown.clone(), None, {
        let gw = gw.clone();
        let links_down = links_down.clone();
        let links = links.clone();
        move |stream, addr| {
            if let Some(pending) = gw.admission.enter(addr, &gw.state.metrics.rejected_links_busy) {
                links.spawn(peer::serve(stream, pending, addr, gw.clone(), links_down.clone()));
            }
        }
    });
    let heartbeat = tokio::spawn(
        heartbeat::run(gw.state.clone(), gw.clock, heartbeat::Settings::from(&gw.config), clients_down.clone())
            .instrument(tracing::debug_span!("heartbeat")),
    );
    let recovery = gw.state.recovery.clone().map(|hub| {
        tokio::spawn(
            crate::recovery::release::run_timer(gw.clone(), hub, clients_down.clone())
                .instrument(tracing::debug_span!("recovery")),
        )
    });
    // Pusher webhooks: stopped after the clients closed, so their last events go out too.
    let webhooks_down = CancellationToken::new();
    let webhooks = crate::pusher::spawn_webhooks(&gw, webhooks_down.clone(), gw.config.grace_period);
    let refusers: Vec<_> = gw
        .listeners
        .iter()
        .map(|spec| {
            let spec = spec.clone();
            move |stream: &tokio::net::TcpStream| listener::refuse(&spec, stream)
        })
        .collect();
    let mut public = Vec::new();
    for ((socket, spec), refuse) in listeners.public.into_iter().zip(gw.listeners.clone()).zip(&refusers) {
        let (gw2, clients_down, clients) = (gw.clone(), clients_down.clone(), clients.clone());
        let shed = Shedding { spare: &gw.spare_fd, refused: &gw.state.metrics.rejected_fd_exhausted, refuse };
        public.push(accept_loop(socket, "public", shutdown.clone(), Some(shed), move |stream, addr| {
            let gw = &gw2;
            let slot = match gw.limits.acquire(addr.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    let counter = match refusal {
                        gw_link::Refusal::Total => &gw.state.metrics.rejected_total_limit,
                        gw_link::Refusal::PerIp => &gw.state.metrics.rejected_ip_limit,
                    };
                    Metrics::inc(counter);
                    tracing::debug!(peer = %addr, ?refusal, "connection refused: limit reached");
                    listener::refuse(&spec, &stream);
                    return;
                }
            };
            let span = tracing::debug_span!("conn", peer = %addr);
            client::spawn(&clients, span, stream, addr, spec.clone(), gw.clone(), clients_down.clone(), slot);
        }));
    }
    tokio::join!(internal, futures_util::future::join_all(public));

    tracing::info!(clients = gw.state.client_count(), "gateway stopping: closing clients");
    let deadline = tokio::time::Instant::now() + gw.config.grace_period;
    // With recovery, and another gateway to take them, clients that asked for recovery are
    // closed with 1012 and held, to be handed over (`crate::handover`). PHP workers cannot
    // switch to another gateway: with their listener on, held clients end here as before.
    let successor = match gw.state.recovery.is_some() && gw.gatewayworker.is_none() {
        true => {
            gw.handover.begin(true);
            crate::handover::move_out::announce(&gw).await
        }
        false => None,
    };
    let handing_over = successor.is_some();
    gw.handover.begin(handing_over);
    gw.stop_clients();
    clients.close();
    // Handing over, the held clients are shipped as they are held (`ship` waits for those
    // still closing), not once every connection task has ended: a slow handshake or a relayed
    // client's search must not keep them from their successor, where they are coming back.
    let all_closed = || async {
        if tokio::time::timeout_at(deadline, clients.wait()).await.is_err() {
            tracing::warn!("grace period over with clients still closing; dropping them");
        }
    };
    if !handing_over {
        all_closed().await;
    }
    // Held clients go to another gateway; those that cannot end here, their close events now.
    let mut forwarder = None;
    if let (Some(timer), Some(hub)) = (recovery, gw.state.recovery.clone()) {
        let _ = timer.await;
        if let Some(link) = successor {
            forwarder = Some((crate::handover::move_out::ship(&gw, &hub, link.clone(), deadline).await, link));
            all_closed().await;
        }
        crate::recovery::release::release_all(&gw, &hub);
    }
    webhooks_down.cancel();
    // The clients' close events are on their way to the workers, whose on_close handlers
    // usually answer through this gateway (a "left the room" to the others): keep the links up
    // until every event is acknowledged, i.e. its handler returned and its commands arrived.
    // Closed clients' leftover events (handed back by a worker that died) are on their way too.
    gw.tasks.close();
    let acknowledged = async {
        gw.tasks.wait().await;
        while gw.unacknowledged() > 0 && gw.worker_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout_at(deadline, acknowledged).await.is_err() {
        tracing::warn!(events = gw.unacknowledged(), "grace period over with events not acknowledged by workers");
    }
    heartbeat.abort();
    links_down.cancel();
    links.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), links.wait()).await;
    if let Some(php) = php {
        php.await.unwrap_or(Ok(()))?;
    }
    if let Some(webhooks) = webhooks {
        let _ = webhooks.await;
    }
    // Everything forwarded to the gateway that took the clients over goes before its link closes.
    if let Some(out) = gw.handover.forwarding() {
        out.close();
    }
    if let Some((forwarder, link)) = &mut forwarder {
        let _ = tokio::time::timeout(Duration::from_secs(3), forwarder).await;
        // The successor says when all of it is applied: closing the link (and exiting) before
        // it read everything could cut the tail off (a reset discards what it has not read).
        let done = link.send(ToGateway::HandOverEnd { instance: gw.instance }).await
            && tokio::time::timeout(HAND_OVER_DONE_WAIT, link.hand_over_done(gw.instance)).await.unwrap_or(false);
        if done {
            tracing::info!("the successor applied the whole hand-over");
        } else {
            tracing::warn!("the successor did not confirm the hand-over in time: its tail may be lost");
        }
    }
    gw.mesh.down.cancel();
    // The hand-over's tail (its last part, the forwarded commands and the ends of their streams)
    // may still be queued for the successor: the link writes it all before it closes, and the
    // process must not exit first (the successor would wait forever for those ends, and its
    // adopted clients would get nothing from the senders that switched).
    if let Some((_, link)) = forwarder {
        let _ = tokio::time::timeout(Duration::from_secs(3), link.closed()).await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}
