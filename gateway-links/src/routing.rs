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

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gw_proto::{Command, IndexChange, IndexUpdate, ToGateway};

use crate::link::GatewayLink;

/// What a name the index routes by is: a uid or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A uid (`bind_uid`, `send_to_uid`, ...).
    Uid,
    /// A group (`join_group`, `send_to_group`, ...).
    Group,
}

/// The gateways (link ids) that hold one uid or group: usually one, inline.
#[derive(Debug)]
enum Holders {
    One(u64),
    Many(Vec<u64>),
}

impl Holders {
    fn add(&mut self, link: u64) {
        match self {
            Holders::One(l) if *l == link => {}
            Holders::One(l) => *self = Holders::Many(vec![*l, link]),
            Holders::Many(v) if v.contains(&link) => {}
            Holders::Many(v) => v.push(link),
        }
    }

    /// Removes `link`; true if no holder is left.
    fn remove(&mut self, link: u64) -> bool {
        match self {
            Holders::One(l) => *l == link,
            Holders::Many(v) => {
                v.retain(|l| *l != link);
                if let [only] = v[..] {
                    *self = Holders::One(only);
                }
                matches!(self, Holders::Many(v) if v.is_empty())
            }
        }
    }

    fn each(&self, mut f: impl FnMut(u64)) {
        match self {
            Holders::One(l) => f(*l),
            Holders::Many(v) => v.iter().copied().for_each(f),
        }
    }
}

/// Own writes one link keeps unconfirmed at most. Gateways confirm every write in their next
/// update, so this is reached only with a gateway that stopped sending them; past it the link
/// gets every call (as before its index arrived) until an update confirms the writes.
const OWN_LIMIT: usize = 65_536;

/// What this process knows of one link's gateway.
#[derive(Debug, Default)]
struct LinkRoutes {
    /// `WatchIndex` was queued on this link.
    watching: bool,
    /// The gateway's whole index has arrived: names it does not list, it does not hold.
    complete: bool,
    /// Index writes queued on this link since it started.
    written: u64,
    /// The highest `applied` the gateway has reported.
    applied: u64,
    /// The last write not recorded in `own` because it was full: until the gateway reports it
    /// applied, the index of this link cannot be trusted to route it.
    unrecorded: u64,
    /// This process's binds and joins on this link that the gateway has not yet reported
    /// applied: (write number, kind, name), oldest first.
    own: VecDeque<(u64, Kind, Box<str>)>,
}

/// The gateways (link ids) that hold each name.
type Held = HashMap<Box<str>, Holders>;
/// This process's unconfirmed writes of each name: (link, write number).
type Own = HashMap<Box<str>, Vec<(u64, u64)>>;

impl LinkRoutes {
    /// Whether a name this gateway does not hold (and this process did not write there) can be
    /// left out: its whole index has arrived and no write of ours is missing from `own`.
    fn trusted(&self) -> bool {
        self.complete && self.applied >= self.unrecorded
    }
}

#[derive(Debug, Default)]
struct Table {
    uids: Held,
    groups: Held,
    /// Own writes not yet confirmed, by name.
    own_uids: Own,
    own_groups: Own,
    links: HashMap<u64, LinkRoutes>,
}

impl Table {
    fn names(&mut self, kind: Kind) -> (&mut Held, &mut Own) {
        match kind {
            Kind::Uid => (&mut self.uids, &mut self.own_uids),
            Kind::Group => (&mut self.groups, &mut self.own_groups),
        }
    }

    /// Forgets everything `link`'s gateway said (not its own writes).
    fn forget_holdings(&mut self, link: u64) {
        self.uids.retain(|_, h| !h.remove(link));
        self.groups.retain(|_, h| !h.remove(link));
    }

    fn apply(&mut self, link: u64, change: IndexChange) {
        let (kind, name, on) = match change {
            IndexChange::UidOn(n) => (Kind::Uid, n, true),
            IndexChange::UidOff(n) => (Kind::Uid, n, false),
            IndexChange::GroupOn(n) => (Kind::Group, n, true),
            IndexChange::GroupOff(n) => (Kind::Group, n, false),
        };
        let (held, _) = self.names(kind);
        if on {
            match held.get_mut(name.as_str()) {
                Some(h) => h.add(link),
                None => {
                    held.insert(name.into_boxed_str(), Holders::One(link));
                }
            }
        } else if held.get_mut(name.as_str()).is_some_and(|h| h.remove(link)) {
            held.remove(name.as_str());
        }
    }

    /// Drops `link`'s own writes numbered up to `applied`: the gateway's index has them now.
    fn confirm(&mut self, link: u64, applied: u64) {
        let Some(routes) = self.links.get_mut(&link) else { return };
        routes.applied = routes.applied.max(applied);
        let mut confirmed = Vec::new();
        while routes.own.front().is_some_and(|(n, _, _)| *n <= applied) {
            confirmed.push(routes.own.pop_front().expect("front exists"));
        }
        for (n, kind, name) in confirmed {
            let (_, own) = self.names(kind);
            if let Some(v) = own.get_mut(&name) {
                v.retain(|e| *e != (link, n));
                if v.is_empty() {
                    own.remove(&name);
                }
            }
        }
    }

    /// Drops every own write of `link` (it went down).
    fn drop_own(&mut self, link: u64) {
        for own in [&mut self.own_uids, &mut self.own_groups] {
            own.retain(|_, v| {
                v.retain(|(l, _)| *l != link);
                !v.is_empty()
            });
        }
    }
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

/// One process's routing index over all its gateway links.
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
        let routes = t.links.entry(link.id).or_default();
        if self.enabled && self.wanted.load(Ordering::Acquire) {
            routes.watching = link.try_queue(ToGateway::WatchIndex);
        }
    }

    /// A link went down: what its gateway said and this process's unconfirmed writes on it go.
    pub(crate) fn link_down(&self, link: u64) {
        let mut t = self.table();
        t.links.remove(&link);
        t.forget_holdings(link);
        t.drop_own(link);
    }

    /// An index update from `link`'s gateway.
    pub(crate) fn update(&self, link: u64, update: IndexUpdate) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table();
        if !t.links.contains_key(&link) {
            return;
        }
        if update.reset {
            t.forget_holdings(link);
            t.links.get_mut(&link).expect("checked").complete = false;
        }
        for change in update.changes {
            t.apply(link, change);
        }
        if update.complete {
            t.links.get_mut(&link).expect("checked").complete = true;
        }
        t.confirm(link, update.applied);
    }

    /// Queues an index write on `link` through `enqueue` (which must not wait), numbering it
    /// in the order it is queued; a bind or join counts as held there until confirmed.
    /// `own` is what [`own_write`](Self::own_write) made of the command.
    pub(crate) fn write(&self, link: u64, own: Option<(Kind, Box<str>)>, enqueue: impl FnOnce()) {
        let mut t = self.table();
        let Some(routes) = t.links.get_mut(&link) else {
            enqueue();
            return;
        };
        routes.written += 1;
        let n = routes.written;
        // Before the link watches, the snapshot it will get covers this write.
        if let Some((kind, name)) = own.filter(|_| routes.watching) {
            if routes.own.len() >= OWN_LIMIT {
                routes.unrecorded = n;
                enqueue();
                return;
            }
            routes.own.push_back((n, kind, name.clone()));
            let (_, own) = t.names(kind);
            own.entry(name).or_default().push((link, n));
        }
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

    /// The links among `links` a call about `names` must go to: every gateway that holds one
    /// of them, that this process wrote one of them to and has not had confirmed, or whose
    /// index is not complete. Starts watching where not yet.
    pub(crate) fn route(
        &self,
        links: Vec<std::sync::Arc<GatewayLink>>,
        kind: Kind,
        names: &[String],
    ) -> Vec<std::sync::Arc<GatewayLink>> {
        if !self.enabled {
            return links;
        }
        let total = links.len();
        let mut unwatched = false;
        let chosen: Vec<_> = {
            let t = self.table.read().expect("routing table lock");
            let (held, own) = match kind {
                Kind::Uid => (&t.uids, &t.own_uids),
                Kind::Group => (&t.groups, &t.own_groups),
            };
            let mut holders: Vec<u64> = Vec::new();
            for name in names {
                if let Some(h) = held.get(name.as_str()) {
                    h.each(|l| holders.push(l));
                }
                if let Some(v) = own.get(name.as_str()) {
                    holders.extend(v.iter().map(|(l, _)| *l));
                }
            }
            links
                .into_iter()
                .filter(|l| match t.links.get(&l.id) {
                    Some(r) if r.trusted() => holders.contains(&l.id),
                    Some(r) => {
                        unwatched |= !r.watching;
                        true
                    }
                    None => true,
                })
                .collect()
        };
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
    fn watch_all(&self, links: &[std::sync::Arc<GatewayLink>]) {
        self.wanted.store(true, Ordering::Release);
        let mut t = self.table();
        for link in links {
            if let Some(r) = t.links.get_mut(&link.id)
                && !r.watching
            {
                // A full queue: asked again on the next call.
                r.watching = link.try_queue(ToGateway::WatchIndex);
            }
        }
    }

    /// What the index holds and did.
    pub(crate) fn stats(&self) -> RoutingStats {
        let t = self.table.read().expect("routing table lock");
        RoutingStats {
            enabled: self.enabled,
            complete_links: t.links.values().filter(|r| r.complete).count() as u64,
            uids: t.uids.len() as u64,
            groups: t.groups.len() as u64,
            routed: self.routed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes_of(t: &Table, kind: Kind, name: &str) -> Vec<u64> {
        let (held, own) = match kind {
            Kind::Uid => (&t.uids, &t.own_uids),
            Kind::Group => (&t.groups, &t.own_groups),
        };
        let mut v = Vec::new();
        if let Some(h) = held.get(name) {
            h.each(|l| v.push(l));
        }
        v.extend(own.get(name).into_iter().flatten().map(|(l, _)| *l));
        v.sort_unstable();
        v.dedup();
        v
    }

    fn update(applied: u64, reset: bool, changes: Vec<IndexChange>) -> IndexUpdate {
        IndexUpdate { applied, reset, complete: true, changes }
    }

    fn routing_with_links(ids: &[u64]) -> Routing {
        let r = Routing::new(true);
        for id in ids {
            r.table().links.insert(*id, LinkRoutes { watching: true, ..Default::default() });
        }
        r
    }

    #[test]
    fn an_own_bind_holds_until_the_gateway_reports_it_applied_even_across_a_stale_off() {
        let r = routing_with_links(&[1, 2]);
        r.update(1, update(0, true, vec![IndexChange::UidOn("ann".into())]));
        let mut queued = 0;
        let own = Routing::own_write(&Command::BindUid { client: 9, uid: "ann".into() });
        r.write(1, own, || queued += 1);
        assert_eq!(queued, 1);
        // The gateway's last other client of ann left before our bind was applied.
        r.update(1, update(0, false, vec![IndexChange::UidOff("ann".into())]));
        assert_eq!(routes_of(&r.table(), Kind::Uid, "ann"), vec![1], "our own bind still routes there");
        r.update(1, update(1, false, vec![IndexChange::UidOn("ann".into())]));
        let t = r.table();
        assert_eq!(routes_of(&t, Kind::Uid, "ann"), vec![1]);
        assert!(t.own_uids.is_empty() && t.links[&1].own.is_empty(), "confirmed writes are dropped");
    }

    #[test]
    fn a_reset_replaces_one_gateways_holdings_and_a_link_down_forgets_them() {
        let r = routing_with_links(&[1, 2]);
        r.update(1, update(0, true, vec![IndexChange::UidOn("a".into()), IndexChange::GroupOn("g".into())]));
        r.update(2, update(0, true, vec![IndexChange::UidOn("a".into())]));
        assert_eq!(routes_of(&r.table(), Kind::Uid, "a"), vec![1, 2]);
        r.update(1, update(0, true, vec![IndexChange::UidOn("b".into())]));
        assert_eq!(routes_of(&r.table(), Kind::Uid, "a"), vec![2]);
        assert_eq!(routes_of(&r.table(), Kind::Group, "g"), Vec::<u64>::new());
        r.link_down(2);
        let t = r.table();
        assert!(!t.uids.contains_key("a"), "no holder left");
        assert_eq!(t.uids.len(), 1);
    }

    #[test]
    fn a_link_whose_own_writes_overflow_is_not_trusted_until_they_are_confirmed() {
        let r = routing_with_links(&[1]);
        r.update(1, update(0, true, vec![]));
        assert!(r.table().links[&1].trusted());
        for i in 0..=OWN_LIMIT {
            r.write(1, Routing::own_write(&Command::BindUid { client: 1, uid: format!("u{i}") }), || {});
        }
        let t = r.table();
        assert_eq!(t.links[&1].own.len(), OWN_LIMIT, "the list stops growing");
        assert!(!t.links[&1].trusted(), "the unrecorded write makes the link get every call");
        drop(t);
        r.update(1, update(OWN_LIMIT as u64, false, vec![]));
        assert!(!r.table().links[&1].trusted(), "not before the last write is confirmed");
        r.update(1, update(OWN_LIMIT as u64 + 1, false, vec![]));
        let t = r.table();
        assert!(t.links[&1].trusted() && t.own_uids.is_empty());
    }

    #[test]
    fn writes_before_watching_are_left_to_the_snapshot() {
        let r = Routing::new(true);
        r.table().links.insert(1, LinkRoutes::default());
        r.write(1, Routing::own_write(&Command::JoinGroup { client: 1, group: "g".into() }), || {});
        let t = r.table();
        assert_eq!(t.links[&1].written, 1, "counted, so later counts match the gateway's");
        assert!(t.own_groups.is_empty());
    }
}
