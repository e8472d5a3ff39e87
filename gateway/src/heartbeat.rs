//! GatewayWorker's heartbeat on one shared timer: every `ping_interval` the gateway sends
//! `ping_data` to each client (a WebSocket ping frame when `ping_data` is empty; TCP clients get
//! nothing then) and closes the clients that sent nothing for `ping_not_response_limit`
//! intervals. One task walks all clients per tick, instead of a timer per connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use gw_proto::Protocol;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::state::{KillReason, Outbound};

pub(crate) async fn run(gw: Arc<Gateway>, stop: CancellationToken) {
    let interval = gw.config.ping_interval;
    if interval.is_zero() {
        return;
    }
    let limit_ms = interval.as_millis() as u64 * u64::from(gw.config.ping_not_response_limit);
    let data = gw.config.ping_data.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = gw.clock_ms();
        let mut closed = 0;
        for h in gw.state.handles() {
            if limit_ms > 0 && now.saturating_sub(h.last_active.load(Ordering::Relaxed)) > limit_ms {
                h.kill(KillReason::Heartbeat);
                closed += 1;
                continue;
            }
            let ping = match (h.info.protocol, data.is_empty()) {
                (Protocol::WebSocket, true) => Some(Message::Ping(Bytes::new())),
                (_, true) => None,
                (_, false) => Some(Message::text(data.clone())),
            };
            if let Some(m) = ping {
                // A client whose queue is full is busy receiving anyway.
                let _ = h.tx.try_send(Outbound::Control(m));
            }
        }
        if closed > 0 {
            tracing::info!(closed, "closed clients that stopped sending heartbeats");
        }
    }
}
