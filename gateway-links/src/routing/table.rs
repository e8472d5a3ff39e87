//! The routing index as a plain table: which gateways (link ids) hold which uids and groups,
//! this process's own writes not yet confirmed, and which links a call must go to. No locks, no
//! links, no counters: [`Routing`](super::Routing) keeps it behind its lock and does the
//! queueing, and the rules (see the parent module) are unit tested here.

use std::collections::{HashMap, VecDeque};

use gw_proto::{IndexChange, IndexUpdate};

use super::Kind;

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
pub(super) const OWN_LIMIT: usize = 65_536;

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
pub(super) struct Table {
    uids: Held,
    groups: Held,
    /// Own writes not yet confirmed, by name.
    own_uids: Own,
    own_groups: Own,
    links: HashMap<u64, LinkRoutes>,
}

/// The links a call must go to, as [`Table::select`] chose them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Selected<L> {
    /// The links, in the order given.
    pub chosen: Vec<L>,
    /// One of them does not watch its gateway's index yet: ask it to.
    pub unwatched: bool,
}

/// How much the table holds, for [`RoutingStats`](super::RoutingStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub complete_links: u64,
    pub uids: u64,
    pub groups: u64,
}

impl Table {
    /// A link came up: it knows nothing of its gateway yet, so it gets every call.
    pub(super) fn link_up(&mut self, link: u64) {
        self.links.entry(link).or_default();
    }

    /// Asks `link` for its gateway's index through `ask` (which queues `WatchIndex` and says
    /// whether it could), unless it watches already or is not known.
    pub(super) fn watch(&mut self, link: u64, ask: impl FnOnce() -> bool) {
        if let Some(r) = self.links.get_mut(&link)
            && !r.watching
        {
            // A full queue: asked again on the next call.
            r.watching = ask();
        }
    }

    /// A link went down: what its gateway said and this process's unconfirmed writes on it go.
    pub(super) fn link_down(&mut self, link: u64) {
        self.links.remove(&link);
        self.forget_holdings(link);
        self.drop_own(link);
    }

    /// An index update from `link`'s gateway.
    pub(super) fn update(&mut self, link: u64, update: IndexUpdate) {
        let Some(routes) = self.links.get_mut(&link) else { return };
        if update.reset {
            routes.complete = false;
            self.forget_holdings(link);
        }
        for change in update.changes {
            self.apply(link, change);
        }
        if update.complete {
            self.links.get_mut(&link).expect("checked").complete = true;
        }
        self.confirm(link, update.applied);
    }

    /// Numbers an index write queued on `link` right after this (under the same lock, so the
    /// numbers follow queue order); a bind or join (`own`) counts as held there until confirmed.
    pub(super) fn write(&mut self, link: u64, own: Option<(Kind, Box<str>)>) {
        let Some(routes) = self.links.get_mut(&link) else { return };
        routes.written += 1;
        let n = routes.written;
        // Before the link watches, the snapshot it will get covers this write.
        if let Some((kind, name)) = own.filter(|_| routes.watching) {
            if routes.own.len() >= OWN_LIMIT {
                routes.unrecorded = n;
                return;
            }
            routes.own.push_back((n, kind, name.clone()));
            let (_, own) = self.names(kind);
            own.entry(name).or_default().push((link, n));
        }
    }

    /// The links among `links` (`id` tells each one's id) a call about `names` must go to: every
    /// gateway that holds one of them, that this process wrote one of them to and has not had
    /// confirmed, or whose index cannot be trusted yet; and whether one of those does not watch.
    pub(super) fn select<L>(&self, kind: Kind, names: &[String], links: Vec<L>, id: impl Fn(&L) -> u64) -> Selected<L> {
        let (held, own) = match kind {
            Kind::Uid => (&self.uids, &self.own_uids),
            Kind::Group => (&self.groups, &self.own_groups),
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
        let mut unwatched = false;
        let chosen = links
            .into_iter()
            .filter(|l| match self.links.get(&id(l)) {
                Some(r) if r.trusted() => holders.contains(&id(l)),
                Some(r) => {
                    unwatched |= !r.watching;
                    true
                }
                None => true,
            })
            .collect();
        Selected { chosen, unwatched }
    }

    /// How much the table holds.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            complete_links: self.links.values().filter(|r| r.complete).count() as u64,
            uids: self.uids.len() as u64,
            groups: self.groups.len() as u64,
        }
    }

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

    fn table_with_links(ids: &[u64]) -> Table {
        let mut t = Table::default();
        for id in ids {
            t.link_up(*id);
            t.watch(*id, || true);
        }
        t
    }

    fn bind(uid: &str) -> Option<(Kind, Box<str>)> {
        Some((Kind::Uid, uid.into()))
    }

    fn join(group: &str) -> Option<(Kind, Box<str>)> {
        Some((Kind::Group, group.into()))
    }

    fn select(t: &Table, kind: Kind, names: &[&str], links: &[u64]) -> Selected<u64> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        t.select(kind, &names, links.to_vec(), |l| *l)
    }

    #[test]
    fn an_own_bind_holds_until_the_gateway_reports_it_applied_even_across_a_stale_off() {
        let mut t = table_with_links(&[1, 2]);
        t.update(1, update(0, true, vec![IndexChange::UidOn("ann".into())]));
        t.write(1, bind("ann"));
        // The gateway's last other client of ann left before our bind was applied.
        t.update(1, update(0, false, vec![IndexChange::UidOff("ann".into())]));
        assert_eq!(routes_of(&t, Kind::Uid, "ann"), vec![1], "our own bind still routes there");
        t.update(1, update(1, false, vec![IndexChange::UidOn("ann".into())]));
        assert_eq!(routes_of(&t, Kind::Uid, "ann"), vec![1]);
        assert!(t.own_uids.is_empty() && t.links[&1].own.is_empty(), "confirmed writes are dropped");
    }

    #[test]
    fn a_reset_replaces_one_gateways_holdings_and_a_link_down_forgets_them() {
        let mut t = table_with_links(&[1, 2]);
        t.update(1, update(0, true, vec![IndexChange::UidOn("a".into()), IndexChange::GroupOn("g".into())]));
        t.update(2, update(0, true, vec![IndexChange::UidOn("a".into())]));
        assert_eq!(routes_of(&t, Kind::Uid, "a"), vec![1, 2]);
        t.update(1, update(0, true, vec![IndexChange::UidOn("b".into())]));
        assert_eq!(routes_of(&t, Kind::Uid, "a"), vec![2]);
        assert_eq!(routes_of(&t, Kind::Group, "g"), Vec::<u64>::new());
        t.link_down(2);
        assert!(!t.uids.contains_key("a"), "no holder left");
        assert_eq!(t.uids.len(), 1);
    }

    #[test]
    fn a_link_whose_own_writes_overflow_is_not_trusted_until_they_are_confirmed() {
        let mut t = table_with_links(&[1]);
        t.update(1, update(0, true, vec![]));
        assert!(t.links[&1].trusted());
        for i in 0..=OWN_LIMIT {
            t.write(1, bind(&format!("u{i}")));
        }
        assert_eq!(t.links[&1].own.len(), OWN_LIMIT, "the list stops growing");
        assert!(!t.links[&1].trusted(), "the unrecorded write makes the link get every call");
        assert_eq!(select(&t, Kind::Uid, &["nobody"], &[1]).chosen, [1]);
        t.update(1, update(OWN_LIMIT as u64, false, vec![]));
        assert!(!t.links[&1].trusted(), "not before the last write is confirmed");
        t.update(1, update(OWN_LIMIT as u64 + 1, false, vec![]));
        assert!(t.links[&1].trusted() && t.own_uids.is_empty());
    }

    #[test]
    fn writes_before_watching_are_left_to_the_snapshot() {
        let mut t = Table::default();
        t.link_up(1);
        t.write(1, join("g"));
        assert_eq!(t.links[&1].written, 1, "counted, so later counts match the gateway's");
        assert!(t.own_groups.is_empty());
    }

    #[test]
    fn a_call_goes_to_the_holders_and_to_every_gateway_whose_index_is_not_complete() {
        let mut t = table_with_links(&[1, 2, 3]);
        t.update(1, update(0, true, vec![IndexChange::UidOn("a".into()), IndexChange::GroupOn("g".into())]));
        t.update(2, update(0, true, vec![IndexChange::UidOn("b".into())]));
        // 3's snapshot has not arrived: it gets every call (fallback); 4 is not known at all.
        t.update(3, IndexUpdate { applied: 0, reset: true, complete: false, changes: vec![] });
        let all = [1, 2, 3, 4];
        assert_eq!(select(&t, Kind::Uid, &["a"], &all), Selected { chosen: vec![1, 3, 4], unwatched: false });
        assert_eq!(select(&t, Kind::Uid, &["a", "b"], &all).chosen, [1, 2, 3, 4]);
        assert_eq!(select(&t, Kind::Group, &["g"], &all).chosen, [1, 3, 4], "groups and uids apart");
        assert_eq!(select(&t, Kind::Group, &["a"], &all).chosen, [3, 4]);
        // Once 3 is complete, a name nobody holds goes nowhere (a miss).
        t.update(3, update(0, false, vec![]));
        assert!(select(&t, Kind::Uid, &["nobody"], &[1, 2, 3]).chosen.is_empty());
        let counts = t.counts();
        assert_eq!((counts.complete_links, counts.uids, counts.groups), (3, 2, 1));
    }

    #[test]
    fn an_own_write_routes_there_before_the_gateway_reports_it() {
        let mut t = table_with_links(&[1, 2]);
        t.update(1, update(0, true, vec![]));
        t.update(2, update(0, true, vec![]));
        t.write(2, join("room"));
        assert_eq!(select(&t, Kind::Group, &["room"], &[1, 2]).chosen, [2], "read-your-writes");
        // Confirmed without the gateway holding it (the client left since): no longer routed.
        t.update(2, update(1, false, vec![]));
        assert!(select(&t, Kind::Group, &["room"], &[1, 2]).chosen.is_empty());
        // A link that went down takes its unconfirmed writes with it.
        t.write(1, join("room"));
        t.link_down(1);
        assert!(select(&t, Kind::Group, &["room"], &[2]).chosen.is_empty());
    }

    #[test]
    fn a_link_is_asked_to_watch_until_it_could_queue_the_request() {
        let mut t = Table::default();
        t.link_up(1);
        assert!(select(&t, Kind::Uid, &["a"], &[1]).unwatched);
        t.watch(1, || false); // its queue was full
        assert!(select(&t, Kind::Uid, &["a"], &[1]).unwatched);
        t.watch(1, || true);
        assert!(!select(&t, Kind::Uid, &["a"], &[1]).unwatched);
        t.watch(1, || panic!("asked again"));
        t.watch(9, || panic!("an unknown link is asked"));
    }
}
