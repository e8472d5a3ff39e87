//! At-least-once delivery of client events to workers: when a worker link dies, its
//! unacknowledged events go back to their clients' tasks, which send them to another worker
//! before anything newer, marked as redelivered (see `binding.rs`). Events of clients that are
//! already gone ("orphans") are delivered by a background task of their own, so their `on_close`
//! still runs somewhere; the gateway waits for those tasks when it stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gw_proto::{ClientInfo, Event};
use tracing::Instrument;

use crate::binding::Binding;
use crate::gateway::Gateway;
use crate::router::WorkerLink;

/// Hands the unacknowledged events of a dead link back to their clients.
pub(crate) fn hand_back(gw: &Arc<Gateway>, link: &WorkerLink) {
    let events = link.take_retained();
    if !events.is_empty() {
        tracing::warn!(worker = %link.name, events = events.len(), "worker link lost with unacknowledged events; redelivering them");
        gw.state.metrics.redelivered.fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    // Per client, in sequence order. The next worker meets the client on the first of them (the
    // binding introduces it), so an event's own info is not needed any more.
    let mut by_client: BTreeMap<u64, (Arc<ClientInfo>, Vec<Event>)> = BTreeMap::new();
    for (mut e, info) in events {
        e.redelivered = true;
        e.info = None;
        by_client.entry(e.client).or_insert_with(|| (info, Vec::new())).1.push(e);
    }
    for (client, (info, events)) in by_client {
        let orphans = match gw.state.get(client) {
            Some(handle) => handle.redelivery.hand_back(events).err(),
            None => Some(events),
        };
        if let Some(orphans) = orphans {
            spawn_orphans(gw, info, orphans);
        }
    }
    link.handed_off.cancel();
}

/// Before a resumed client's first event: where its earlier connection's unacknowledged
/// events are. On a worker that still takes events: that link, and the last one's number, for
/// the resumed connection to bind to (its events follow them in order). On one that is gone
/// or draining: waits (up to the hand-back wait) until they were handed back (to the resumed
/// connection, which sends them before anything newer) or acknowledged. A worker link that
/// died unnoticed (its gateway frozen, say) would otherwise hand them back after newer ones.
pub(crate) async fn earlier_events(gw: &Gateway, client: u64) -> Option<(Arc<WorkerLink>, u64)> {
    let earlier: Vec<(Arc<WorkerLink>, u64)> =
        gw.router.links().into_iter().filter_map(|link| link.last_retained_of(client).map(|seq| (link, seq))).collect();
    let (live, settling): (Vec<_>, Vec<_>) = earlier.into_iter().partition(|(link, _)| link.usable());
    if !settling.is_empty() {
        let settled = async {
            for (link, seq) in settling {
                let mut acked = link.acked();
                tokio::select! {
                    _ = acked.wait_for(|a| *a >= seq) => {}
                    () = link.handed_off.cancelled() => {}
                }
            }
        };
        if tokio::time::timeout(crate::binding::HAND_BACK_WAIT, settled).await.is_err() {
            tracing::debug!(
                client,
                "a resumed client's earlier events were neither acknowledged nor handed back in time"
            );
        }
    }
    live.into_iter().max_by_key(|(_, seq)| *seq)
}

/// Delivers, in the background, events of a client whose task has finished (its close event,
/// typically). The task is tracked, so the gateway waits for it when it stops.
pub(crate) fn spawn_orphans(gw: &Arc<Gateway>, info: Arc<ClientInfo>, events: Vec<Event>) {
    let Some(client) = events.first().map(|e| e.client) else { return };
    let span = tracing::info_span!("orphans", client_id = %gw.client_id(client), events = events.len());
    gw.tasks.spawn(deliver_orphans(gw.clone(), info, events).instrument(span));
}

/// Sends `events` to any worker, waiting for one up to the hold time; what no worker takes by
/// then is counted as dropped (`no_worker`).
async fn deliver_orphans(gw: Arc<Gateway>, info: Arc<ClientInfo>, events: Vec<Event>) {
    let deadline = tokio::time::Instant::now() + gw.config.worker_wait;
    let mut binding = Binding::new(info);
    if let Err(lost) = binding.deliver(&gw.router, &gw.state.metrics, events, deadline).await {
        gw.state.metrics.dropped_no_worker.fetch_add(lost.len() as u64, Ordering::Relaxed);
        tracing::warn!(events = lost.len(), "no worker to redeliver a closed client's events to");
    }
}
