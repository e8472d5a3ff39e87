//! The cumulative acknowledgement of one gateway link: which events are handled, and the one
//! small `Ack` frame that tells the gateway so for any number of them.
//!
//! Clients' events finish out of order (each client has its own task), so the watermark is the
//! highest `seq` such that every event up to it is handled. The gateway keeps every event above
//! it and hands those to another worker if this one dies.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_gateway_links::GatewayLink;
use gw_proto::ToGateway;
use tokio::sync::Notify;

/// Handled events of one link.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    state: Mutex<AckState>,
    moved: Notify,
}

#[derive(Debug, Default)]
struct AckState {
    watermark: u64,
    done_above: BTreeSet<u64>,
    sent: u64,
}

impl Acks {
    /// Records that event `seq` is handled.
    pub fn handled(&self, seq: u64) {
        let mut a = self.state.lock().expect("ack lock");
        if seq <= a.watermark {
            return;
        }
        a.done_above.insert(seq);
        let before = a.watermark;
        while a.done_above.first() == Some(&(a.watermark + 1)) {
            a.done_above.pop_first();
            a.watermark += 1;
        }
        if a.watermark > before {
            drop(a);
            self.moved.notify_one();
        }
    }

    /// The watermark to acknowledge, if it moved since the last call.
    pub fn take(&self) -> Option<u64> {
        let mut a = self.state.lock().expect("ack lock");
        (a.watermark > a.sent).then(|| {
            a.sent = a.watermark;
            a.watermark
        })
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
}
