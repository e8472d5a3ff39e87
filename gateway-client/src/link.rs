//! One authenticated link to one gateway: outbound queue, pending requests, and (for workers) the
//! cumulative acknowledgement of handled events.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gw_proto::{Query, Reply, ToGateway};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ClientError;

/// A live link to a gateway. Cheap to share (`Arc`); dropped from the client's table when the link
/// goes down, after which sends on it fail.
#[derive(Debug)]
pub struct GatewayLink {
    /// Unique per link incarnation within this process.
    pub(crate) id: u64,
    /// The gateway's advertised internal address.
    pub address: String,
    /// The gateway instance; client ids of other instances are not on this link.
    pub instance: u64,
    /// The gateway's node name.
    pub node: String,
    pub(crate) tx: mpsc::Sender<ToGateway>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_request: AtomicU64,
    acks: Mutex<AckState>,
    pub(crate) ack_ready: Notify,
    /// Cancelled when the link goes down.
    pub(crate) down: CancellationToken,
}

/// Tracks handled events so the acknowledgement is cumulative even though clients' events finish
/// out of order: the watermark is the highest `seq` such that every event up to it is handled.
#[derive(Debug, Default)]
struct AckState {
    watermark: u64,
    done_above: BTreeSet<u64>,
    sent: u64,
}

impl GatewayLink {
    pub(crate) fn new(id: u64, address: String, instance: u64, node: String, tx: mpsc::Sender<ToGateway>) -> Self {
        Self {
            id,
            address,
            instance,
            node,
            tx,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            acks: Mutex::new(AckState::default()),
            ack_ready: Notify::new(),
            down: CancellationToken::new(),
        }
    }

    /// Unique id of this link incarnation.
    pub fn link_id(&self) -> u64 {
        self.id
    }

    /// Queues a message, waiting while the link's queue is full.
    pub(crate) async fn send(&self, msg: ToGateway) -> Result<(), ClientError> {
        self.tx.send(msg).await.map_err(|_| ClientError::GatewayUnavailable(self.address.clone()))
    }

    /// Sends a query and waits for its reply, at most `deadline`.
    pub(crate) async fn request(&self, query: Query, deadline: Duration) -> Result<Reply, ClientError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let result = tokio::time::timeout(deadline, async {
            self.send(ToGateway::Request { id, query }).await?;
            rx.await.map_err(|_| ClientError::GatewayUnavailable(self.address.clone()))
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(ClientError::Timeout(self.address.clone()))
            }
        }
    }

    /// Hands a reply to its waiting request (if it has not timed out).
    pub(crate) fn resolve(&self, id: u64, reply: Reply) {
        if let Some(tx) = self.pending.lock().expect("pending lock").remove(&id) {
            let _ = tx.send(reply);
        }
    }

    /// Fails every waiting request (the link is down).
    pub(crate) fn fail_pending(&self) {
        self.pending.lock().expect("pending lock").clear();
    }

    /// Records that event `seq` is handled.
    pub fn handled(&self, seq: u64) {
        let mut a = self.acks.lock().expect("ack lock");
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
            self.ack_ready.notify_one();
        }
    }

    /// The watermark to acknowledge, if it moved since the last call.
    pub(crate) fn take_ack(&self) -> Option<u64> {
        let mut a = self.acks.lock().expect("ack lock");
        (a.watermark > a.sent).then(|| {
            a.sent = a.watermark;
            a.watermark
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_is_cumulative_over_out_of_order_completion() {
        let (tx, _rx) = mpsc::channel(1);
        let l = GatewayLink::new(1, "gw:1".into(), 1, "gw".into(), tx);
        l.handled(2);
        l.handled(3);
        assert_eq!(l.take_ack(), None, "1 is not handled yet");
        l.handled(1);
        assert_eq!(l.take_ack(), Some(3));
        assert_eq!(l.take_ack(), None, "nothing new");
        l.handled(5);
        l.handled(4);
        assert_eq!(l.take_ack(), Some(5));
        l.handled(2); // stale duplicate is ignored
        assert_eq!(l.take_ack(), None);
    }
}
