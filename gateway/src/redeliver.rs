//! At-least-once delivery of client events to workers: when a worker link dies, its
//! unacknowledged events go back to their clients' tasks, which send them to another worker
//! before anything newer, marked as redelivered. Events of clients that are already gone are
//! delivered directly, so their `on_close` still runs somewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use gw_proto::Event;

use crate::Gateway;
use crate::metrics::Metrics;
use crate::router::{LinkGone, WorkerLink};

/// Hands the unacknowledged events of a dead link back to their clients.
pub(crate) fn hand_back(gw: &Arc<Gateway>, link: &WorkerLink) {
    let events = link.take_retained();
    if !events.is_empty() {
        tracing::warn!(worker = %link.name, events = events.len(), "worker link lost with unacknowledged events; redelivering them");
        gw.state.metrics.redelivered.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    // Per client, in sequence order; the first event of each batch introduces the client.
    let mut by_client: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    for (mut e, info) in events {
        e.redelivered = true;
        let batch = by_client.entry(e.client).or_default();
        if batch.is_empty() {
            e.info = Some((*info).clone());
        }
        batch.push(e);
    }
    for (client, events) in by_client {
        let orphans = match gw.state.get(client) {
            Some(handle) => handle.hand_back(events).err(),
            None => Some(events),
        };
        if let Some(orphans) = orphans {
            tokio::spawn(deliver_orphans(gw.clone(), orphans));
        }
    }
    link.handed_off.cancel();
}

/// Delivers events of a client whose task has finished (its close event, typically).
pub(crate) async fn deliver_orphans(gw: Arc<Gateway>, events: Vec<Event>) {
    let Some(info) = events.iter().find_map(|e| e.info.clone()).map(Arc::new) else {
        tracing::error!("orphaned events without client info; dropping them");
        return;
    };
    let mut pending = std::collections::VecDeque::from(events);
    let deadline = tokio::time::Instant::now() + gw.config.worker_wait;
    let mut first = true;
    while let Some(mut event) = pending.pop_front() {
        let link = loop {
            if let Some(l) = gw.router.pick() {
                break l;
            }
            if tokio::time::timeout_at(deadline, gw.router.wait_for_worker()).await.is_err() {
                let lost = pending.len() as u64 + 1;
                gw.state.metrics.dropped_no_worker.fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(events = lost, "no worker to redeliver a closed client's events to");
                return;
            }
        };
        if first {
            // The new worker has never seen this client.
            event.info = Some((*info).clone());
        }
        match link.send_event(event, &info).await {
            Ok(_) => {
                first = false;
                Metrics::inc(&gw.state.metrics.events_sent);
            }
            Err(LinkGone(e)) => {
                pending.push_front(e);
                first = true;
            }
        }
    }
}
