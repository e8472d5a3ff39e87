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
