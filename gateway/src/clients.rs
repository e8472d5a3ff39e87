//! The registry of one gateway's connected clients: their handles, their uid and group indexes,
//! and the counters. Commands ([`crate::commands`]) and queries ([`crate::queries`]) run on it.
//!
//! Client handles live in a map split into [`SHARDS`] shards by local number (lookups on every
//! send), so the heartbeat visits one slice of the clients by reading only that slice's shards
//! (a `DashMap` shards by hash, and the walk filtered the whole map for each of its 64 slices).
//! uid and group indexes live under one `RwLock` so a bind or join updates both directions
//! atomically. No lock is held across an `.await`; delivery to a client is a non-blocking
//! `try_send` into its bounded queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::client_handle::ClientHandle;
use crate::index::Indexes;
use crate::metrics::Metrics;

/// The connected clients of one gateway, their uid and group indexes, and the gateway's counters.
#[derive(Debug)]
pub struct Clients {
    clients: Shards,
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
            clients: Shards::new(),
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
        let mut out = Vec::with_capacity(self.client_count());
        for shard in self.clients.all() {
            out.extend(shard.values().cloned());
        }
        out
    }

    /// Calls `f` with each client of one slice of the heartbeat walk: the clients whose shard
    /// (local number modulo [`SHARDS`]) is `slice` modulo `slices`, so `slices` walks visit each
    /// client once, and a walk reads only its own shards. Each shard is read-locked while `f`
    /// runs on its clients: `f` must be short and must not touch this map.
    pub(crate) fn for_each_in_slice(&self, slice: u64, slices: u64, mut f: impl FnMut(&Arc<ClientHandle>)) {
        for shard in (slice..SHARDS as u64).step_by(slices.max(1) as usize) {
            self.clients.read(shard).values().for_each(&mut f);
        }
    }

    /// The local numbers of every connected client, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.clients.all().flat_map(|shard| shard.keys().copied().collect::<Vec<_>>())
    }

    /// Whether client `id` is connected here.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.clients.read(id).contains_key(&id)
    }

    pub(crate) fn insert(&self, handle: Arc<ClientHandle>) {
        self.clients.write(handle.id).insert(handle.id, handle);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Metrics::inc(&self.metrics.connections_total);
    }

    /// Removes a closed client from the map and every index.
    pub(crate) fn remove(&self, id: u64) {
        if self.clients.write(id).remove(&id).is_some() {
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.index_mut().forget(id);
    }

    /// Puts a resumed client's new connection in place of its held (or half-open) one: same id,
    /// so its uid and group entries stand as they are.
    pub(crate) fn replace(&self, handle: Arc<ClientHandle>) {
        self.clients.write(handle.id).insert(handle.id, handle);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `handle` is its client's current connection (not taken over by a resume).
    pub(crate) fn is_current(&self, handle: &Arc<ClientHandle>) -> bool {
        self.clients.read(handle.id).get(&handle.id).is_some_and(|h| Arc::ptr_eq(h, handle))
    }

    /// A client's connection ended while its state stays (held, or taken over by a resume).
    pub(crate) fn detach(&self) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes a client handed over to another gateway from the map, but not from the indexes:
    /// the senders that watch this gateway's index must not see its uid and groups leave here
    /// before they switched to the adopter (they would route a group send to neither gateway,
    /// the adopter applying what a sender sent before its switch to its other clients only).
    /// The gateway forwards every command by then, and exits soon after.
    pub(crate) fn remove_moved(&self, handle: &Arc<ClientHandle>) {
        let mut shard = self.clients.write(handle.id);
        if shard.get(&handle.id).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            shard.remove(&handle.id);
        }
    }

    /// Removes a client with recovery, if `handle` is still its current one, from the map and
    /// every index; its connection was counted out by [`detach`](Self::detach) or
    /// [`remove_closed`](Self::remove_closed).
    pub(crate) fn remove_handle(&self, handle: &Arc<ClientHandle>) {
        let removed = {
            let mut shard = self.clients.write(handle.id);
            let current = shard.get(&handle.id).is_some_and(|h| Arc::ptr_eq(h, handle));
            current && shard.remove(&handle.id).is_some()
        };
        if removed {
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
        self.clients.all().map(|shard| shard.values().map(|h| h.tx.len()).sum::<usize>()).sum()
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.all().map(|shard| shard.len()).sum()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.clients.read(id).get(&id).cloned()
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

/// Shards of the client map: a client's is its local number modulo this. Local numbers are
/// handed out in sequence, so the shards stay even; 64 is the most slices of the heartbeat walk
/// (`heartbeat::MAX_SLICES`), so each slice reads whole shards.
pub(crate) const SHARDS: usize = 64;

/// One shard of the client map.
type Shard = HashMap<u64, Arc<ClientHandle>>;

/// The client map, by local number.
#[derive(Debug)]
struct Shards(Box<[RwLock<Shard>]>);

impl Shards {
    fn new() -> Self {
        Self((0..SHARDS).map(|_| RwLock::default()).collect())
    }

    fn read(&self, id: u64) -> RwLockReadGuard<'_, Shard> {
        self.0[(id % SHARDS as u64) as usize].read().expect("client map lock")
    }

    fn write(&self, id: u64) -> RwLockWriteGuard<'_, Shard> {
        self.0[(id % SHARDS as u64) as usize].write().expect("client map lock")
    }

    /// Every shard in turn, each read-locked while the caller holds it.
    fn all(&self) -> impl Iterator<Item = RwLockReadGuard<'_, Shard>> {
        self.0.iter().map(|s| s.read().expect("client map lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send_queue::SendQueue;
    use gw_proto::{ClientInfo, Protocol};

    fn handle(id: u64) -> Arc<ClientHandle> {
        let info = ClientInfo {
            client_addr: "127.0.0.1:1".into(),
            gateway_addr: "127.0.0.1:2".into(),
            listener: "x".into(),
            protocol: Protocol::WebSocket,
        };
        Arc::new(ClientHandle::new(id, SendQueue::new(4), info, 0))
    }

    #[test]
    fn the_slices_of_any_walk_visit_every_client_once_and_only_their_own_shards() {
        let clients = Clients::new(1 << 20, false);
        for id in 0..1000 {
            clients.insert(handle(id));
        }
        clients.remove(500);
        for slices in [1, 2, 3, 7, 63, 64] {
            let mut seen = vec![0u32; 1000];
            for slice in 0..slices {
                clients.for_each_in_slice(slice, slices, |h| {
                    assert_eq!(h.id % SHARDS as u64 % slices, slice, "client {} in slice {slice} of {slices}", h.id);
                    seen[h.id as usize] += 1;
                });
            }
            assert!(seen.iter().enumerate().all(|(id, &n)| n == u32::from(id != 500)), "{slices} slices: {seen:?}");
        }
        assert_eq!(clients.client_count(), 999);
        assert_eq!(clients.handles().len(), 999);
        assert_eq!(clients.ids().count(), 999);
        assert!(clients.contains(499) && !clients.contains(500));
    }

    #[test]
    fn a_handle_is_removed_only_while_it_is_current() {
        let clients = Clients::new(1 << 20, false);
        let (old, new) = (handle(7), handle(7));
        clients.insert(old.clone());
        clients.replace(new.clone());
        assert!(!clients.is_current(&old) && clients.is_current(&new));
        clients.remove_handle(&old);
        assert!(clients.contains(7), "a resume took the id over: the old handle removes nothing");
        clients.remove_handle(&new);
        assert!(clients.get(7).is_none());
    }
}
