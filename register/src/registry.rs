//! The gateway list and who is watching it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gw_proto::GatewayInfo;
use tokio::sync::watch;

/// Counters for `status` and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Gateways announced now.
    pub gateways: AtomicU64,
    /// Workers and clients subscribed now.
    pub subscribers: AtomicU64,
    /// Handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Failed handshakes from an address over its failed-handshake budget (served lean, not
    /// logged one by one).
    pub rate_limited: AtomicU64,
    /// Peers dropped for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Messages received from peers (announcements, subscriptions, heartbeats).
    pub messages: AtomicU64,
    /// Connections closed at accept because too many handshakes were pending.
    pub rejected_busy: AtomicU64,
}

impl RegistryStats {
    /// What the register's admission counts here.
    pub(crate) fn admission(&self) -> gw_link::Counters<'_> {
        gw_link::Counters {
            busy: &self.rejected_busy,
            failed: &self.handshake_failures,
            rate_limited: &self.rate_limited,
        }
    }
}

/// Gateways currently announced, keyed by the link that announced them, and a watch channel
/// carrying the deduplicated, sorted list to every subscriber.
#[derive(Debug)]
pub struct Registry {
    links: Mutex<BTreeMap<u64, GatewayInfo>>,
    next_link: AtomicU64,
    list: watch::Sender<Arc<Vec<GatewayInfo>>>,
    /// Counters.
    pub stats: RegistryStats,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            links: Mutex::new(BTreeMap::new()),
            next_link: AtomicU64::new(1),
            list: watch::channel(Arc::new(Vec::new())).0,
            stats: RegistryStats::default(),
        }
    }
}

impl Registry {
    /// Adds a gateway announced on a new link; returns the link key for [`remove`](Self::remove).
    pub fn announce(&self, info: GatewayInfo) -> u64 {
        let key = self.next_link.fetch_add(1, Ordering::Relaxed);
        let mut links = self.links.lock().expect("registry lock");
        if links.values().any(|g| g.address == info.address) {
            tracing::warn!(address = %info.address, name = %info.name, "two gateways announce the same address; check `advertise`");
        }
        links.insert(key, info);
        self.publish(&links);
        key
    }

    /// Removes the gateway of a closed link.
    pub fn remove(&self, key: u64) {
        let mut links = self.links.lock().expect("registry lock");
        if links.remove(&key).is_some() {
            self.publish(&links);
        }
    }

    fn publish(&self, links: &BTreeMap<u64, GatewayInfo>) {
        let mut list: Vec<GatewayInfo> = links.values().cloned().collect();
        list.sort();
        list.dedup_by(|a, b| a.address == b.address);
        self.stats.gateways.store(list.len() as u64, Ordering::Relaxed);
        self.list.send_replace(Arc::new(list));
    }

    /// The current list and its future changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<GatewayInfo>>> {
        self.list.subscribe()
    }

    /// The current list.
    pub fn gateways(&self) -> Arc<Vec<GatewayInfo>> {
        self.list.borrow().clone()
    }
}
