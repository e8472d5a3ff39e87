//! The cumulative acknowledgement of one gateway link: which events are handled, and the one
//! small `Ack` frame that tells the gateway so for any number of them.
//!
//! Clients' events finish out of order (each client has its own task), so the watermark is the
//! highest `seq` such that every event up to it is handled. The gateway keeps every event above
//! it and hands those to another worker if this one dies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_delivery::{AckWatermark, Marked};
use gw_gateway_links::GatewayLink;
use gw_proto::ToGateway;
use tokio::sync::Notify;

/// Handled events of one link (the rule: `gw_delivery::AckWatermark`), and the wake-up of the
/// task that acknowledges them.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    state: Mutex<AckWatermark>,
    moved: Notify,
}

impl Acks {
    /// Records that event `seq` is handled.
    pub fn handled(&self, seq: u64) {
        let marked = self.state.lock().expect("ack lock").handled(seq);
        if marked == Marked::Advanced {
            self.moved.notify_one();
        }
    }

    /// The watermark to acknowledge, if it moved since the last call.
    pub fn take(&self) -> Option<u64> {
        self.state.lock().expect("ack lock").take()
    }
}

/// Sends the watermark whenever it moves, at most every few milliseconds, until the link is
/// down: one small frame acknowledges any number of events.
pub(crate) async fn send_acks(acks: Arc<Acks>, link: Arc<GatewayLink>) {
    let ack = |seq| link.send(ToGateway::Ack { seq });
    loop {
        tokio::select! {
            _ = acks.moved.notified() => {}
            _ = link.closed() => return,
        }
        if let Some(seq) = acks.take()
            && ack(seq).await.is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Pick up whatever completed during the pause.
        if let Some(seq) = acks.take()
            && ack(seq).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_is_cumulative_over_out_of_order_completion() {
        let a = Acks::default();
        a.handled(2);
        a.handled(3);
        assert_eq!(a.take(), None, "1 is not handled yet");
        a.handled(1);
        assert_eq!(a.take(), Some(3));
        assert_eq!(a.take(), None, "nothing new");
        a.handled(5);
        a.handled(4);
        assert_eq!(a.take(), Some(5));
        a.handled(2); // stale duplicate is ignored
        assert_eq!(a.take(), None);
    }

    #[tokio::test]
    async fn the_sender_is_woken_only_when_the_watermark_moves() {
        let a = Acks::default();
        a.handled(2);
        let woken = || async { tokio::time::timeout(Duration::ZERO, a.moved.notified()).await.is_ok() };
        // A `Notify` keeps one permit: none was stored for an event above a gap.
        assert!(!woken().await, "woken while 1 holds the watermark back");
        a.handled(1);
        assert!(woken().await, "not woken when the watermark moved");
        a.handled(1);
        assert!(!woken().await, "woken by a repeat");
    }
}
