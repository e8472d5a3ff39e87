//! The registry of one gateway's connected clients: their handles, their uid and group indexes,
//! and the counters. Commands ([`crate::commands`]) and queries ([`crate::queries`]) run on it.
//!
//! Client handles live in a sharded map (lookups on every send); uid and group indexes live under
//! one `RwLock` so a bind or join updates both directions atomically. No lock is held across an
//! `.await`; delivery to a client is a non-blocking `try_send` into its bounded queue.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use dashmap::DashMap;

use crate::client_handle::ClientHandle;
use crate::index::Indexes;
use crate::metrics::Metrics;

/// The connected clients of one gateway, their uid and group indexes, and the gateway's counters.
#[derive(Debug)]
pub struct Clients {
    clients: DashMap<u64, Arc<ClientHandle>>,
    index: RwLock<Indexes>,
    /// What the gateway did and dropped (shared with the compressed connections, which count
    /// what they inflate and deflate).
    pub metrics: Arc<Metrics>,
    /// Connection state recovery, when enabled (`[recovery]`).
    pub(crate) recovery: Option<Arc<crate::recovery::Hub>>,
    /// Bytes a client's send queue may hold.
    pub(crate) queue_bytes: usize,
    /// A full send queue drops the message and keeps the client (`slow_consumer = "drop"`)
    /// instead of disconnecting it.
    pub(crate) drop_slow: bool,
    /// How much state one client may have here.
    pub(crate) limits: StateLimits,
}

/// How much state one client may have at this gateway (see the `max_session_bytes` and
/// `max_groups_per_client` settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateLimits {
    /// Largest session, as JSON.
    pub max_session_bytes: usize,
    /// Most groups one client is a member of.
    pub max_groups_per_client: usize,
}

impl From<&gw_config::GatewayConfig> for StateLimits {
    fn from(c: &gw_config::GatewayConfig) -> Self {
        Self { max_session_bytes: c.max_session_bytes, max_groups_per_client: c.max_groups_per_client }
    }
}

impl Clients {
    pub(crate) fn new(queue_bytes: usize, drop_slow: bool) -> Self {
        Self {
            clients: DashMap::new(),
            index: RwLock::new(Indexes::default()),
            metrics: Arc::default(),
            recovery: None,
            queue_bytes,
            drop_slow,
            limits: StateLimits::from(&gw_config::GatewayConfig::default()),
        }
    }

    /// The same, with recovery (`None`: off).
    pub(crate) fn with_recovery(mut self, hub: Option<Arc<crate::recovery::Hub>>) -> Self {
        self.recovery = hub;
        self
    }

    /// The same, with these limits on each client's state.
    pub(crate) fn with_limits(mut self, limits: StateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Every client handle (for broadcasts and queries).
    pub(crate) fn handles(&self) -> Vec<Arc<ClientHandle>> {
        self.clients.iter().map(|e| e.value().clone()).collect()
    }

    /// The handles of the clients whose local number is `slice` modulo `slices` (one slice of
    /// the heartbeat walk).
    pub(crate) fn handles_in_slice(&self, slice: u64, slices: u64) -> Vec<Arc<ClientHandle>> {
        self.clients.iter().filter(|e| e.key() % slices == slice).map(|e| e.value().clone()).collect()
    }

    /// The local numbers of every connected client, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.clients.iter().map(|e| *e.key())
    }

    /// Whether client `id` is connected here.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.clients.contains_key(&id)
    }

    pub(crate) fn insert(&self, handle: Arc<ClientHandle>) {
        self.clients.insert(handle.id, handle);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&self.metrics.connections_total);
    }

    /// Removes a closed client from the map and every index.
    pub(crate) fn remove(&self, id: u64) {
        if self.clients.remove(&id).is_some() {
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.index_mut().forget(id);
    }

    /// Puts a resumed client's new connection in place of its held (or half-open) one: same id,
    /// so its uid and group entries stand as they are.
    pub(crate) fn replace(&self, handle: Arc<ClientHandle>) {
        self.clients.insert(handle.id, handle);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `handle` is its client's current connection (not taken over by a resume).
    pub(crate) fn is_current(&self, handle: &Arc<ClientHandle>) -> bool {
        self.clients.get(&handle.id).is_some_and(|e| Arc::ptr_eq(e.value(), handle))
    }

    /// A client's connection ended while its state stays (held, or taken over by a resume).
    pub(crate) fn detach(&self) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes a client with recovery, if `handle` is still its current one, from the map and
    /// every index; its connection was counted out by [`detach`](Self::detach) or
    /// [`remove_closed`](Self::remove_closed).
    pub(crate) fn remove_handle(&self, handle: &Arc<ClientHandle>) {
        if self.clients.remove_if(&handle.id, |_, h| Arc::ptr_eq(h, handle)).is_some() {
            self.index_mut().forget(handle.id);
        }
    }

    /// A client with recovery closed for good: its connection is counted out, and it leaves the
    /// map and the indexes unless a resume took its id over meanwhile.
    pub(crate) fn remove_closed(&self, handle: &Arc<ClientHandle>) {
        self.detach();
        self.remove_handle(handle);
    }

    /// Messages waiting in every client's send queue.
    pub fn queued_total(&self) -> usize {
        self.clients.iter().map(|e| e.value().tx.len()).sum()
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    /// The uid and group indexes, for reading.
    pub(crate) fn index(&self) -> RwLockReadGuard<'_, Indexes> {
        self.index.read().expect("index lock")
    }

    /// The uid and group indexes, for changing.
    pub(crate) fn index_mut(&self) -> RwLockWriteGuard<'_, Indexes> {
        self.index.write().expect("index lock")
    }
}
