//! The uid and group indexes of one gateway's clients, both directions of each (uid → clients and
//! client → uid, group → clients and client → groups), kept consistent by every operation here.
//!
//! The gateway keeps them under one lock, so a bind or join updates both directions atomically.
//! Empty sets are removed, so the number of keys is the number of live uids and groups.

use std::collections::{HashMap, HashSet};

/// Uid bindings and group memberships, by local client number.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    uid_of: HashMap<u64, String>,
    uids: HashMap<String, HashSet<u64>>,
    groups_of: HashMap<u64, HashSet<String>>,
    groups: HashMap<String, HashSet<u64>>,
}

impl Indexes {
    /// Binds `client` to `uid`, replacing its previous uid.
    pub fn bind_uid(&mut self, client: u64, uid: String) {
        self.unbind(client);
        self.uids.entry(uid.clone()).or_default().insert(client);
        self.uid_of.insert(client, uid);
    }

    /// Unbinds `client` from `uid`; a client bound to another uid keeps it.
    pub fn unbind_uid(&mut self, client: u64, uid: &str) {
        if self.uid_of.get(&client).is_some_and(|u| u == uid) {
            self.unbind(client);
        }
    }

    /// Adds `client` to `group`.
    pub fn join(&mut self, client: u64, group: String) {
        self.groups.entry(group.clone()).or_default().insert(client);
        self.groups_of.entry(client).or_default().insert(group);
    }

    /// Removes `client` from `group`.
    pub fn leave(&mut self, client: u64, group: &str) {
        if let Some(set) = self.groups.get_mut(group) {
            set.remove(&client);
            if set.is_empty() {
                self.groups.remove(group);
            }
        }
        if let Some(gs) = self.groups_of.get_mut(&client) {
            gs.remove(group);
            if gs.is_empty() {
                self.groups_of.remove(&client);
            }
        }
    }

    /// Dissolves `group`: every member leaves it.
    pub fn ungroup(&mut self, group: &str) {
        let Some(members) = self.groups.remove(group) else { return };
        for c in members {
            if let Some(gs) = self.groups_of.get_mut(&c) {
                gs.remove(group);
                if gs.is_empty() {
                    self.groups_of.remove(&c);
                }
            }
        }
    }

    /// Forgets a client that has gone: its uid and every group.
    pub fn forget(&mut self, client: u64) {
        self.unbind(client);
        for g in self.groups_of.remove(&client).into_iter().flatten() {
            if let Some(set) = self.groups.get_mut(&g) {
                set.remove(&client);
                if set.is_empty() {
                    self.groups.remove(&g);
                }
            }
        }
    }

    fn unbind(&mut self, client: u64) {
        if let Some(uid) = self.uid_of.remove(&client)
            && let Some(set) = self.uids.get_mut(&uid)
        {
            set.remove(&client);
            if set.is_empty() {
                self.uids.remove(&uid);
            }
        }
    }

    /// The uid `client` is bound to.
    pub fn uid_of(&self, client: u64) -> Option<&String> {
        self.uid_of.get(&client)
    }

    /// The groups `client` is in, in no particular order.
    pub fn groups_of(&self, client: u64) -> impl Iterator<Item = &String> {
        self.groups_of.get(&client).into_iter().flatten()
    }

    /// The clients bound to `uid`.
    pub fn uid_clients(&self, uid: &str) -> impl Iterator<Item = u64> + '_ {
        self.uids.get(uid).into_iter().flatten().copied()
    }

    /// The members of `group`.
    pub fn group_clients(&self, group: &str) -> impl Iterator<Item = u64> + '_ {
        self.groups.get(group).into_iter().flatten().copied()
    }

    /// How many clients are in `group`.
    pub fn group_size(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, HashSet::len)
    }

    /// The members of any of `groups`; a client in several of them comes once per group.
    pub fn members<'a>(&'a self, groups: &'a [String]) -> impl Iterator<Item = u64> + 'a {
        groups.iter().flat_map(|g| self.group_clients(g))
    }

    /// Every uid with at least one client, in no particular order.
    pub fn uids(&self) -> impl Iterator<Item = &String> {
        self.uids.keys()
    }

    /// Every group with at least one member, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// The distinct uids of `group`'s members, sorted.
    pub fn distinct_uids(&self, group: &str) -> Vec<String> {
        let mut uids: Vec<String> = self
            .group_clients(group)
            .filter_map(|c| self.uid_of.get(&c).cloned())
            .collect::<HashSet<_>>()
            .into_iter()
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
        assert_eq!(ix.uid_of(1).map(String::as_str), Some("bob"));
        ix.unbind_uid(1, "ann");
        assert_eq!(ix.uid_of(1).map(String::as_str), Some("bob"), "unbinding another uid changes nothing");
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
}
