//! One authenticated link to one gateway: its outbound queue and the requests waiting for their
//! replies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gw_proto::{ClientId, Command, Query, Reply, ToGateway};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::SendError;
use crate::routing::Routing;

/// A live link to a gateway. Cheap to share (`Arc`); dropped from the table of
/// [`GatewayLinks`](crate::GatewayLinks) when the link goes down, after which sends on it fail.
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
    tx: mpsc::Sender<ToGateway>,
    /// Numbers the index writes queued here (see [`Routing::write`]).
    routing: Arc<Routing>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_request: AtomicU64,
    /// Cancelled when the link goes down.
    pub(crate) down: CancellationToken,
    /// The gateway's adoptions (`FromGateway::Adopted`): adoption number → the old gateway
    /// and instance whose clients carry those adopted locals on this link.
    adopted: RwLock<HashMap<u32, (String, u64)>>,
    /// This gateway handed its clients over and this process switched away from it: calls to
    /// every gateway skip it (it still sends what it owes on it, and reads).
    pub(crate) moved: AtomicBool,
    /// This gateway adopted another's clients since the link came up: the routing index sends
    /// it every uid and group call (its index did not list them when this process switched).
    pub(crate) adopter: AtomicBool,
}

impl GatewayLink {
    pub(crate) fn new(
        id: u64,
        address: String,
        instance: u64,
        node: String,
        tx: mpsc::Sender<ToGateway>,
        routing: Arc<Routing>,
    ) -> Self {
        Self {
            id,
            address,
            instance,
            node,
            tx,
            routing,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            down: CancellationToken::new(),
            adopted: RwLock::new(HashMap::new()),
            moved: AtomicBool::new(false),
            adopter: AtomicBool::new(false),
        }
    }

    /// The id of this gateway's client `local`: its own client, or one it adopted (which keeps
    /// the id its old gateway gave it).
    pub fn client_id(&self, local: u64) -> ClientId {
        if let Some((adoption, old)) = gw_proto::handover::split_adopted(local)
            && let Some((gateway, instance)) = self.adopted.read().expect("adopted lock").get(&adoption)
        {
            return ClientId::new(gateway.clone(), *instance, old);
        }
        ClientId::new(self.address.clone(), self.instance, local)
    }

    /// Records one of the gateway's adoptions.
    pub(crate) fn adopt(&self, adoption: u32, gateway: String, instance: u64) {
        self.adopted.write().expect("adopted lock").insert(adoption, (gateway, instance));
    }

    /// Whether this gateway adopted another's clients since the link came up.
    pub fn is_adopter(&self) -> bool {
        self.adopter.load(Ordering::Acquire)
    }

    /// Whether this process switched away from this gateway (it handed its clients over).
    pub fn is_moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    /// Unique id of this link incarnation within this process.
    pub fn link_id(&self) -> u64 {
        self.id
    }

    /// Queues a message on this link, behind everything queued before, waiting while the queue
    /// is full. [`SendError::Down`] once the link is down.
    pub async fn send(&self, msg: ToGateway) -> Result<(), SendError> {
        let permit = self.tx.reserve().await.map_err(|_| SendError::Down(self.address.clone()))?;
        self.queue(permit, msg);
        Ok(())
    }

    /// Queues a message only if there is room now; false if the queue is full or the link down.
    pub fn try_send(&self, msg: ToGateway) -> bool {
        match self.tx.try_reserve() {
            Ok(permit) => {
                self.queue(permit, msg);
                true
            }
            Err(_) => false,
        }
    }

    /// Queues `msg` in the place `permit` holds; an index write is numbered as it is queued, so
    /// the routing index can tell when the gateway has applied it.
    fn queue(&self, permit: mpsc::Permit<'_, ToGateway>, msg: ToGateway) {
        match &msg {
            ToGateway::Command(cmd) if cmd.is_index_write() => {
                let own = Routing::own_write(cmd);
                self.routing.write(self.id, own, || permit.send(msg));
            }
            _ => permit.send(msg),
        }
    }

    pub(crate) fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Queues a message of the link's own (a watch request) if there is room, without numbering.
    pub(crate) fn try_queue(&self, msg: ToGateway) -> bool {
        self.tx.try_send(msg).is_ok()
    }

    /// Sends a command to this gateway (for a command about one of its clients, the fast path:
    /// no client id to parse or resolve).
    pub async fn command(&self, cmd: Command) -> Result<(), SendError> {
        self.send(ToGateway::Command(cmd)).await
    }

    /// Resolves once the link is down.
    pub async fn closed(&self) {
        self.down.cancelled().await;
    }

    /// Sends a query and waits for its reply, at most `deadline`.
    pub async fn request(&self, query: Query, deadline: Duration) -> Result<Reply, SendError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let result = tokio::time::timeout(deadline, async {
            self.send(ToGateway::Request { id, query }).await?;
            rx.await.map_err(|_| SendError::Down(self.address.clone()))
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(SendError::Timeout(self.address.clone()))
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
}
