//! The end of a held client: when its window ends or its state is known lost, its `on_close`
//! is delivered (once, with its session) and it leaves the client map and the indexes. One
//! timer task for the whole gateway sleeps until the soonest deadline.

use std::sync::Arc;
use std::time::Duration;

use gw_proto::EventKind;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Hub, Phase, Reason};
use crate::binding::{Binding, ClientCx};
use crate::gateway::Gateway;

/// Releases held clients at their deadlines until `shutdown`.
pub(crate) async fn run_timer(gw: Arc<Gateway>, hub: Arc<Hub>, shutdown: CancellationToken) {
    loop {
        // Made before the deadline is read: a sooner deadline set after the read wakes it.
        let woken = hub.wake.notified();
        let next = hub.deadlines.lock().expect("deadlines lock").next_deadline();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = woken => continue,
            _ = sleep => {}
        }
        let due = hub.deadlines.lock().expect("deadlines lock").expired(tokio::time::Instant::now());
        for id in due {
            release(&gw, &hub, id);
        }
    }
}

/// Releases every held client (the gateway is stopping: in this phase their state does not
/// outlive the process, so their `on_close` runs now).
pub(crate) fn release_all(gw: &Arc<Gateway>, hub: &Arc<Hub>) {
    let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let all = hub.deadlines.lock().expect("deadlines lock").expired(far);
    for id in all {
        release(gw, hub, id);
    }
}

/// Ends held client `id`: its `on_close` goes to a worker (in a task the gateway waits for when
/// it stops), then it leaves the map and the indexes. A client resumed meanwhile is left alone.
pub(crate) fn release(gw: &Arc<Gateway>, hub: &Hub, id: u64) {
    let Some(handle) = gw.state.get(id) else { return };
    let Some(cell) = &handle.recovery else { return };
    let (reason, detail) = {
        let mut rec = cell.lock().expect("recovery lock");
        if rec.phase != Phase::Held {
            return;
        }
        hub.unhold(&gw.state.metrics, id, &rec);
        rec.phase = Phase::Released;
        rec.buffer = Default::default();
        rec.lost.take().map_or_else(|| (Reason::Expired, "the recovery window ended".into()), |lost| *lost)
    };
    let client_id = gw.client_id(id);
    tracing::debug!(client_id = %client_id, reason = reason.as_str(), %detail, "held client released");
    hub.tombstone(id, reason, detail);
    let span = tracing::debug_span!("released", client_id = %client_id);
    let gw2 = gw.clone();
    gw.tasks.spawn(
        async move {
            let gw = gw2;
            let never = CancellationToken::new();
            let mut binding = Binding::new(handle.info.clone());
            let cx = ClientCx { gw: &gw, handle: &handle, shutdown: &never };
            // Events handed back while it was held go first (the binding sends them before it).
            if let Err(e) = binding.dispatch(cx, EventKind::Close).await {
                tracing::warn!(reason = %e, "a released client's close event reached no worker");
            }
            binding.unbind();
            let leftovers = handle.redelivery.close();
            if !leftovers.is_empty() {
                crate::redeliver::spawn_orphans(&gw, handle.info.clone(), leftovers);
            }
            gw.state.remove_handle(&handle);
        }
        .instrument(span),
    );
}
