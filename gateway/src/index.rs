//! The uid and group indexes of one gateway's clients, both directions of each (uid → clients and
//! client → uid, group → clients and client → groups), kept consistent by every operation here.
//!
//! The gateway keeps them under one lock, so a bind or join updates both directions atomically.
//! Empty sets are removed, so the number of keys is the number of live uids and groups. When a
//! uid or group appears on this gateway or disappears from it, the change goes to every link
//! watching the routing index ([`crate::index_feed`]), under the same lock, so a watcher's
//! snapshot and the changes after it never overlap or leave a hole.
//!
//! Memory per binding is kept small because a gateway holds hundreds of thousands of them: a
//! name is stored once (`Arc<str>`, shared by both directions), and a uid or group with a single
//! client holds it inline instead of in a set of its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gw_proto::IndexChange;

use crate::few::Few;
use crate::index_feed::Watcher;

/// The clients of one uid or group: one inline, more in a set.
#[derive(Debug)]
enum Members {
    One(u64),
    #[expect(
        clippy::box_collection,
        reason = "boxed, the enum is 16 bytes instead of 56: one per uid and group, held by hundreds of thousands"
    )]
    Many(Box<HashSet<u64>>),
}

impl Members {
    fn insert(&mut self, client: u64) {
        match self {
            Members::One(c) if *c == client => {}
            Members::One(c) => *self = Members::Many(Box::new(HashSet::from([*c, client]))),
            Members::Many(set) => {
                set.insert(client);
            }
        }
    }

    /// Removes `client`; true if no member is left.
    fn remove(&mut self, client: u64) -> bool {
        match self {
            Members::One(c) => *c == client,
            Members::Many(set) => {
                set.remove(&client);
                match set.len() {
                    0 => true,
                    1 => {
                        let last = *set.iter().next().expect("one left");
                        *self = Members::One(last);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Members::One(c) => (Some(*c), None),
            Members::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Many(set) => set.len(),
        }
    }
}

/// Uid bindings and group memberships, by local client number.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    uid_of: HashMap<u64, Arc<str>>,
    uids: HashMap<Arc<str>, Members>,
    /// A client's groups: most clients are in none or one, held without an allocation.
    groups_of: HashMap<u64, Few<Arc<str>>>,
    groups: HashMap<Arc<str>, Members>,
    /// Links watching this gateway's routing index.
    watchers: Vec<Arc<Watcher>>,
}

impl Indexes {
    /// Binds `client` to `uid`, replacing its previous uid.
    pub fn bind_uid(&mut self, client: u64, uid: String) {
        if self.uid_of.get(&client).is_some_and(|u| **u == *uid) {
            return;
        }
        self.unbind(client);
        let uid: Arc<str> = match self.uids.get_key_value(uid.as_str()) {
            Some((key, _)) => key.clone(),
            None => {
                self.publish(IndexChange::UidOn(uid.clone()));
                Arc::from(uid)
            }
        };
        match self.uids.get_mut(&uid) {
            Some(members) => members.insert(client),
            None => {
                self.uids.insert(uid.clone(), Members::One(client));
            }
        }
        self.uid_of.insert(client, uid);
    }

    /// Unbinds `client` from `uid`; a client bound to another uid keeps it.
    pub fn unbind_uid(&mut self, client: u64, uid: &str) {
        if self.uid_of.get(&client).is_some_and(|u| **u == *uid) {
            self.unbind(client);
        }
    }

    /// Adds `client` to `group`.
    pub fn join(&mut self, client: u64, group: String) {
        let group: Arc<str> = match self.groups.get_key_value(group.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(group),
        };
        self.join_shared(client, group);
    }

    /// The name of `group` as the index keeps it, shared (`None` when the group is empty).
    pub fn group_name(&self, group: &str) -> Option<Arc<str>> {
        self.groups.get_key_value(group).map(|(key, _)| key.clone())
    }

    /// Adds `client` to `group`, whose name the caller shares: the index keeps that name when
    /// the group is new here (one copy for the index and the caller), its own otherwise.
    pub fn join_shared(&mut self, client: u64, group: Arc<str>) {
        let group: Arc<str> = match self.groups.get_key_value(&*group) {
            Some((key, _)) => key.clone(),
            None => {
                self.publish(IndexChange::GroupOn(group.to_string()));
                group
            }
        };
        let mine = self.groups_of.entry(client).or_default();
        if mine.iter().any(|g| *g == group) {
            return;
        }
        mine.push(group.clone());
        match self.groups.get_mut(&group) {
            Some(members) => members.insert(client),
            None => {
                self.groups.insert(group, Members::One(client));
            }
        }
    }

    /// Removes `client` from `group`.
    pub fn leave(&mut self, client: u64, group: &str) {
        let Some(mine) = self.groups_of.get_mut(&client) else { return };
        let Some(at) = mine.iter().position(|g| **g == *group) else { return };
        mine.swap_remove(at);
        if mine.is_empty() {
            self.groups_of.remove(&client);
        }
        self.remove_member(group, client);
    }

    /// Dissolves `group`: every member leaves it.
    pub fn ungroup(&mut self, group: &str) {
        let Some(members) = self.groups.remove(group) else { return };
        self.publish(IndexChange::GroupOff(group.to_string()));
        for c in members.iter() {
            if let Some(mine) = self.groups_of.get_mut(&c) {
                mine.retain(|g| **g != *group);
                if mine.is_empty() {
                    self.groups_of.remove(&c);
                }
            }
        }
    }

    /// Forgets a client that has gone: its uid and every group.
    pub fn forget(&mut self, client: u64) {
        self.unbind(client);
        for g in self.groups_of.remove(&client).map(|mut mine| mine.take()).into_iter().flatten() {
            self.remove_member(&g, client);
        }
    }

    fn unbind(&mut self, client: u64) {
        let Some(uid) = self.uid_of.remove(&client) else { return };
        if self.uids.get_mut(&uid).is_some_and(|m| m.remove(client)) {
            self.uids.remove(&uid);
            self.publish(IndexChange::UidOff(uid.to_string()));
        }
    }

    fn remove_member(&mut self, group: &str, client: u64) {
        if self.groups.get_mut(group).is_some_and(|m| m.remove(client)) {
            self.groups.remove(group);
            self.publish(IndexChange::GroupOff(group.to_string()));
        }
    }

    fn publish(&self, change: IndexChange) {
        for w in &self.watchers {
            w.push(change.clone());
        }
    }

    /// Starts sending this index's changes to `watcher` and returns every uid and group held now
    /// (as `On` changes), which the watcher must get before those changes. Called with the
    /// index locked for writing, so no change falls between the snapshot and the first delta.
    pub fn watch(&mut self, watcher: Arc<Watcher>) -> Vec<IndexChange> {
        watcher.clear();
        if !self.watchers.iter().any(|w| Arc::ptr_eq(w, &watcher)) {
            self.watchers.push(watcher);
        }
        self.snapshot()
    }

    /// Stops sending changes to `watcher`.
    pub fn unwatch(&mut self, watcher: &Arc<Watcher>) {
        self.watchers.retain(|w| !Arc::ptr_eq(w, watcher));
    }

    /// Every uid and group held now, as `On` changes.
    pub fn snapshot(&self) -> Vec<IndexChange> {
        let uids = self.uids.keys().map(|u| IndexChange::UidOn(u.to_string()));
        let groups = self.groups.keys().map(|g| IndexChange::GroupOn(g.to_string()));
        uids.chain(groups).collect()
    }

    /// The uid `client` is bound to.
    pub fn uid_of(&self, client: u64) -> Option<&str> {
        self.uid_of.get(&client).map(|u| &**u)
    }

    /// The groups `client` is in, in no particular order.
    pub fn groups_of(&self, client: u64) -> impl Iterator<Item = &str> {
        self.groups_of.get(&client).into_iter().flatten().map(|g| &**g)
    }

    /// How many groups `client` is a member of.
    pub fn group_count(&self, client: u64) -> usize {
        self.groups_of.get(&client).map_or(0, Few::len)
    }

    /// Whether `client` is a member of `group`.
    pub fn is_member(&self, client: u64, group: &str) -> bool {
        self.groups_of.get(&client).is_some_and(|mine| mine.iter().any(|g| **g == *group))
    }

    /// The clients bound to `uid`.
    pub fn uid_clients(&self, uid: &str) -> impl Iterator<Item = u64> + '_ {
        self.uids.get(uid).into_iter().flat_map(Members::iter)
    }

    /// The members of `group`.
    pub fn group_clients(&self, group: &str) -> impl Iterator<Item = u64> + '_ {
        self.groups.get(group).into_iter().flat_map(Members::iter)
    }

    /// How many clients are in `group`.
    pub fn group_size(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, Members::len)
    }

    /// The members of any of `groups`; a client in several of them comes once per group.
    pub fn members<'a>(&'a self, groups: &'a [String]) -> impl Iterator<Item = u64> + 'a {
        groups.iter().flat_map(|g| self.group_clients(g))
    }

    /// Every uid with at least one client, in no particular order.
    pub fn uids(&self) -> impl Iterator<Item = &str> {
        self.uids.keys().map(|u| &**u)
    }

    /// Every group with at least one member, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(|g| &**g)
    }

    /// The distinct uids of `group`'s members, sorted.
    pub fn distinct_uids(&self, group: &str) -> Vec<String> {
        let mut uids: Vec<String> = self
            .group_clients(group)
            .filter_map(|c| self.uid_of(c))
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        uids.sort();
        uids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(it: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut v: Vec<u64> = it.collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn binding_a_new_uid_replaces_the_old_one_and_unbind_honours_its_uid() {
        let mut ix = Indexes::default();
        ix.bind_uid(1, "ann".into());
        ix.bind_uid(1, "bob".into());
        assert_eq!(sorted(ix.uid_clients("ann")), Vec::<u64>::new());
        assert_eq!(ix.uid_of(1), Some("bob"));
        ix.unbind_uid(1, "ann");
        assert_eq!(ix.uid_of(1), Some("bob"), "unbinding another uid changes nothing");
        ix.unbind_uid(1, "bob");
        assert_eq!(ix.uid_of(1), None);
        assert_eq!(ix.uids().count(), 0, "empty uids are removed");
    }

    #[test]
    fn leaving_ungrouping_and_forgetting_keep_both_directions_consistent() {
        let mut ix = Indexes::default();
        for c in 1..=3 {
            ix.join(c, "room".into());
        }
        ix.join(1, "room".into());
        assert_eq!(ix.group_size("room"), 3, "joining twice counts once");
        ix.join(1, "other".into());
        ix.bind_uid(1, "ann".into());
        ix.bind_uid(2, "ann".into());
        assert_eq!(ix.distinct_uids("room"), vec!["ann".to_string()]);
        ix.leave(3, "room");
        assert_eq!(sorted(ix.group_clients("room")), vec![1, 2]);
        assert_eq!(ix.groups_of(3).count(), 0);
        ix.forget(1);
        assert_eq!(sorted(ix.members(&["room".into(), "other".into()])), vec![2]);
        assert_eq!(sorted(ix.uid_clients("ann")), vec![2]);
        ix.ungroup("room");
        assert_eq!(ix.group_size("room"), 0);
        assert_eq!(ix.groups_of(2).count(), 0);
        assert_eq!(ix.groups().count(), 0, "empty groups are removed");
    }

    #[test]
    fn a_shared_group_name_is_the_index_s_own_one_copy_for_everyone() {
        let mut ix = Indexes::default();
        let name: Arc<str> = Arc::from("news");
        ix.join_shared(1, name.clone());
        let kept = ix.group_name("news").expect("joined");
        assert!(Arc::ptr_eq(&kept, &name), "a new group keeps the caller's name");
        drop(kept);
        ix.join(2, "news".into());
        let again: Arc<str> = Arc::from("news");
        ix.join_shared(3, again);
        assert!(ix.groups_of.values().all(|g| Arc::ptr_eq(&g.as_slice()[0], &name)), "every member holds the one");
        assert_eq!(sorted(ix.group_clients("news")), [1, 2, 3]);
        for c in [1, 2, 3] {
            ix.leave(c, "news");
        }
        assert_eq!(ix.group_name("news"), None);
        assert_eq!(Arc::strong_count(&name), 1, "nothing else holds it");
    }

    #[test]
    fn a_set_shrinks_back_to_one_inline_member_and_then_to_nothing() {
        let mut ix = Indexes::default();
        for c in [1, 2, 3] {
            ix.bind_uid(c, "u".into());
        }
        ix.forget(2);
        ix.forget(1);
        assert!(matches!(ix.uids.get("u"), Some(Members::One(3))));
        ix.forget(3);
        assert!(ix.uids.is_empty() && ix.uid_of.is_empty());
    }

    #[test]
    fn watchers_get_a_snapshot_then_only_appearances_and_disappearances() {
        let mut ix = Indexes::default();
        ix.bind_uid(1, "ann".into());
        ix.join(1, "room".into());
        let w = Arc::new(Watcher::default());
        let mut snapshot = ix.watch(w.clone());
        snapshot.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(snapshot, vec![IndexChange::GroupOn("room".into()), IndexChange::UidOn("ann".into())]);
        ix.bind_uid(2, "ann".into()); // ann was already here: no change
        ix.join(2, "room".into());
        ix.bind_uid(3, "bob".into());
        ix.forget(1);
        ix.forget(2); // ann and room gone
        ix.join(3, "x".into());
        ix.ungroup("x");
        ix.unwatch(&w);
        ix.bind_uid(4, "cy".into());
        assert_eq!(
            w.take().0,
            vec![
                IndexChange::UidOn("bob".into()),
                IndexChange::UidOff("ann".into()),
                IndexChange::GroupOff("room".into()),
                IndexChange::GroupOn("x".into()),
                IndexChange::GroupOff("x".into()),
            ]
        );
    }
}
