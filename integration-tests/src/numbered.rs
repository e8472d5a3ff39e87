//! Numbered traffic: each client keeps a few numbered messages in flight and checks that every
//! answer comes back exactly once and in order, to prove reloads and restarts lose nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::WsClient;

/// Messages each client keeps in flight.
pub const IN_FLIGHT: usize = 4;

/// Sends `c{client}-{n}` for n = 0, 1, … over `ws` until `stop` is set, expecting each to be
/// answered as `{reply_prefix}c{client}-{n}` in order; returns how many it sent, and the client
/// (still open, so the caller can check nothing was disconnected).
pub async fn numbered_traffic(
    mut ws: WsClient,
    client: usize,
    stop: Arc<AtomicBool>,
    reply_prefix: String,
) -> (usize, WsClient) {
    let (mut sent, mut received) = (0usize, 0usize);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while !stopping && sent - received < IN_FLIGHT {
            ws.send(&format!("c{client}-{sent}")).await;
            sent += 1;
        }
        if stopping && received == sent {
            return (sent, ws);
        }
        let reply = ws.recv().await;
        assert_eq!(
            reply,
            format!("{reply_prefix}c{client}-{received}"),
            "client {client}: a message was lost, repeated or reordered"
        );
        received += 1;
    }
}
