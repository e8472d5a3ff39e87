//! The routing index: which gateways hold which uids and groups, so uid and group calls go only
//! to the gateways that hold them instead of to every gateway.
//!
//! Each gateway sends, on every link that asks (`WatchIndex`), a snapshot of the uids and groups
//! it holds and then each one that appears or disappears. A sender asks on its first uid or group
//! call, not before, so a process that never makes one keeps no index. The rules (also in the
//! README, "Routing index"):
//!
//! - **Fallback.** A gateway whose snapshot has not fully arrived (the link just started, or the
//!   sender just began watching) gets every uid and group call, as without the index.
//! - **Read-your-writes.** A bind or join this process sent on a link counts as held by that
//!   gateway at once, until the gateway's updates report that write applied (`applied` counts
//!   the index writes received on the link, in order). So a send after this process's own
//!   `bind_uid` or `join_group` reaches the client, wherever it is connected.
//! - **Other senders' writes** are visible once the gateway's update about them arrives: one
//!   internal one-way trip after the gateway applied the write, for as long as the link keeps up.
//! - **Misses.** A call whose uids or groups no gateway holds goes nowhere, and is counted
//!   ([`RoutingStats::misses`]).
//!
//! A gateway holding a uid is recorded once per uid (not per client), so the index grows with
//! the number of distinct uids and groups per gateway and their churn, not with sends.

mod table;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gw_proto::{Command, IndexUpdate, ToGateway};

use crate::link::GatewayLink;
use table::{Counts, Selected, Table};

/// What a name the index routes by is: a uid or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A uid (`bind_uid`, `send_to_uid`, ...).
    Uid,
    /// A group (`join_group`, `send_to_group`, ...).
    Group,
}

/// Counters of what the routing index did, for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// The index is switched on (`routing_index` in the link config).
    pub enabled: bool,
    /// Links whose gateway's whole index has arrived.
    pub complete_links: u64,
    /// Distinct uids known to be held by some gateway.
    pub uids: u64,
    /// Distinct groups known to be held by some gateway.
    pub groups: u64,
    /// Uid and group calls routed by the index.
    pub routed: u64,
    /// Gateway messages the index saved (gateways a routed call skipped).
    pub skipped: u64,
    /// Routed calls that went to no gateway: no gateway holds any of their uids or groups.
    pub misses: u64,
    /// Index updates received from gateways.
    pub updates: u64,
}

/// One process's routing index over all its gateway links: the [`Table`] behind a lock, and
/// the counters.
#[derive(Debug)]
pub(crate) struct Routing {
    enabled: bool,
    /// A uid or group call was made: links ask for the index as they come up.
    wanted: AtomicBool,
    table: RwLock<Table>,
    routed: AtomicU64,
    skipped: AtomicU64,
    misses: AtomicU64,
    updates: AtomicU64,
}

impl Routing {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            wanted: AtomicBool::new(false),
            table: RwLock::new(Table::default()),
            routed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            updates: AtomicU64::new(0),
        }
    }

    fn table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().expect("routing table lock")
    }

    /// A link came up (before anything else is queued on it): asks for its gateway's index if
    /// this process routes by it already.
    pub(crate) fn link_up(&self, link: &GatewayLink) {
        let mut t = self.table();
        t.link_up(link.id);
        if self.enabled && self.wanted.load(Ordering::Acquire) {
            t.watch(link.id, || link.try_queue(ToGateway::WatchIndex));
        }
    }

    /// A link went down: what its gateway said and this process's unconfirmed writes on it go.
    pub(crate) fn link_down(&self, link: u64) {
        self.table().link_down(link);
    }

    /// An index update from `link`'s gateway.
    pub(crate) fn update(&self, link: u64, update: IndexUpdate) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.table().update(link, update);
    }

    /// Queues an index write on `link` through `enqueue` (which must not wait), numbering it
    /// in the order it is queued; a bind or join counts as held there until confirmed.
    /// `own` is what [`own_write`](Self::own_write) made of the command.
    pub(crate) fn write(&self, link: u64, own: Option<(Kind, Box<str>)>, enqueue: impl FnOnce()) {
        let mut t = self.table();
        t.write(link, own);
        // Under the lock: the write numbers follow queue order.
        enqueue();
    }

    /// The uid or group an index write makes this gateway hold (binds and joins; the others only
    /// remove, and routing to a gateway that no longer holds a name costs a message, not a miss).
    pub(crate) fn own_write(cmd: &Command) -> Option<(Kind, Box<str>)> {
        match cmd {
            Command::BindUid { uid, .. } => Some((Kind::Uid, uid.as_str().into())),
            Command::JoinGroup { group, .. } => Some((Kind::Group, group.as_str().into())),
            _ => None,
        }
    }

    /// The links among `links` a call about `names` must go to ([`Table::select`]). Starts
    /// watching where not yet.
    pub(crate) fn route(&self, links: Vec<Arc<GatewayLink>>, kind: Kind, names: &[String]) -> Vec<Arc<GatewayLink>> {
        if !self.enabled {
            return links;
        }
        let total = links.len();
        // A gateway that adopted another's clients (a graceful stop, issue 25) gets every call:
        // its index did not list them when this process switched to it.
        let adopters: Vec<Arc<GatewayLink>> = links.iter().filter(|l| l.is_adopter()).cloned().collect();
        let Selected { mut chosen, unwatched } =
            self.table.read().expect("routing table lock").select(kind, names, links, |l| l.id);
        for a in adopters {
            if !chosen.iter().any(|c| c.id == a.id) {
                chosen.push(a);
            }
        }
        if unwatched || !self.wanted.load(Ordering::Relaxed) {
            self.watch_all(&chosen);
        }
        self.routed.fetch_add(1, Ordering::Relaxed);
        self.skipped.fetch_add((total - chosen.len()) as u64, Ordering::Relaxed);
        if chosen.is_empty() {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }

    /// Asks every link in `links` that does not watch yet for its gateway's index, and every
    /// link that comes up from now on.
    fn watch_all(&self, links: &[Arc<GatewayLink>]) {
        self.wanted.store(true, Ordering::Release);
        let mut t = self.table();
        for link in links {
            t.watch(link.id, || link.try_queue(ToGateway::WatchIndex));
        }
    }

    /// What the index holds and did.
    pub(crate) fn stats(&self) -> RoutingStats {
        let Counts { complete_links, uids, groups } = self.table.read().expect("routing table lock").counts();
        RoutingStats {
            enabled: self.enabled,
            complete_links,
            uids,
            groups,
            routed: self.routed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
        }
    }
}
