//! This gateway's presence members: per app and presence channel, each user with the
//! connections it is subscribed with and the `user_info` of its first one. A user is added when
//! its first connection joins and removed when its last one leaves, whatever the number of
//! connections in between: those are the transitions this gateway tells the channel's home
//! (docs/pusher.md §5, `cluster.rs`), which decides for the cluster.
//!
//! Plain data, no IO: the connection task holds the gateway's lock around a change and the
//! frames it sends because of it, so subscribers see events in the order of the changes.

use std::collections::HashMap;

use gw_pusher_protocol::presence::Member;
#[cfg(test)]
use gw_pusher_protocol::server_frame::MemberRef;
use serde_json::value::RawValue;

/// One user in one channel.
#[derive(Debug)]
struct Present {
    /// Local client numbers of its connections, in joining order.
    clients: Vec<u64>,
    info: Option<Box<RawValue>>,
}

/// One presence channel's users, in joining order (the member list's order).
#[derive(Debug, Default)]
struct Channel {
    users: Vec<(String, Present)>,
}

/// What a join did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The user's first connection here: the others get `member_added`.
    Added,
    /// Another connection of a user already present (or the same one again): no event.
    Again,
}

/// The channel has `max` users and this one is not among them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full {
    pub max: usize,
}

/// Every presence channel of every app on this gateway.
#[derive(Debug, Default)]
pub(crate) struct LocalPresence {
    channels: HashMap<(usize, String), Channel>,
}

impl LocalPresence {
    /// Adds connection `client` of `member` to `channel` of app `app`.
    pub fn join(&mut self, app: usize, channel: &str, client: u64, member: Member, max: usize) -> Result<Joined, Full> {
        let ch = self.channels.entry((app, channel.to_string())).or_default();
        if let Some((_, p)) = ch.users.iter_mut().find(|(u, _)| *u == member.user_id) {
            if !p.clients.contains(&client) {
                p.clients.push(client);
            }
            return Ok(Joined::Again);
        }
        if ch.users.len() >= max {
            if ch.users.is_empty() {
                self.channels.remove(&(app, channel.to_string()));
            }
            return Err(Full { max });
        }
        ch.users.push((member.user_id, Present { clients: vec![client], info: member.user_info }));
        Ok(Joined::Added)
    }

    /// Removes connection `client` of `user_id` from the channel; true when that was the user's
    /// last connection there (the others get `member_removed`).
    pub fn leave(&mut self, app: usize, channel: &str, client: u64, user_id: &str) -> bool {
        let key = (app, channel.to_string());
        let Some(ch) = self.channels.get_mut(&key) else { return false };
        let Some(at) = ch.users.iter().position(|(u, _)| u == user_id) else { return false };
        let clients = &mut ch.users[at].1.clients;
        let before = clients.len();
        clients.retain(|c| *c != client);
        if clients.len() == before || !clients.is_empty() {
            return false;
        }
        ch.users.remove(at);
        if ch.users.is_empty() {
            self.channels.remove(&key);
        }
        true
    }

    /// The members of a channel, each user once, in joining order.
    #[cfg(test)]
    pub fn members(&self, app: usize, channel: &str) -> Vec<MemberRef<'_>> {
        self.channels
            .get(&(app, channel.to_string()))
            .map(|ch| ch.users.iter().map(|(u, p)| MemberRef { user_id: u, user_info: p.info.as_deref() }).collect())
            .unwrap_or_default()
    }

    /// Every user present here: (app, channel, user id, its info).
    pub fn users(&self) -> impl Iterator<Item = (usize, &str, &str, Option<&RawValue>)> {
        self.channels.iter().flat_map(|((app, channel), ch)| {
            ch.users.iter().map(move |(u, p)| (*app, channel.as_str(), u.as_str(), p.info.as_deref()))
        })
    }

    /// The user's `user_info`, if it is present.
    #[cfg(test)]
    pub fn member(&self, app: usize, channel: &str, user_id: &str) -> Option<MemberRef<'_>> {
        let ch = self.channels.get(&(app, channel.to_string()))?;
        ch.users.iter().find(|(u, _)| u == user_id).map(|(u, p)| MemberRef { user_id: u, user_info: p.info.as_deref() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, info: &str) -> Member {
        Member { user_id: id.into(), user_info: Some(RawValue::from_string(info.into()).unwrap()) }
    }

    fn ids(p: &LocalPresence, channel: &str) -> Vec<String> {
        p.members(0, channel).iter().map(|m| m.user_id.to_string()).collect()
    }

    #[test]
    fn a_user_with_two_connections_is_added_once_and_removed_once() {
        let mut p = LocalPresence::default();
        assert_eq!(p.join(0, "presence-a", 1, member("ann", r#"{"n":1}"#), 100), Ok(Joined::Added));
        assert_eq!(p.join(0, "presence-a", 2, member("ann", r#"{"n":2}"#), 100), Ok(Joined::Again));
        assert_eq!(p.join(0, "presence-a", 3, member("bob", "{}"), 100), Ok(Joined::Added));
        assert_eq!(ids(&p, "presence-a"), ["ann", "bob"]);
        assert_eq!(p.member(0, "presence-a", "ann").unwrap().user_info.unwrap().get(), r#"{"n":1}"#, "first info kept");
        assert!(!p.leave(0, "presence-a", 1, "ann"), "ann is still there on 2");
        assert!(!p.leave(0, "presence-a", 1, "ann"), "a second leave of the same connection is nothing");
        assert!(p.leave(0, "presence-a", 2, "ann"));
        assert!(!p.leave(0, "presence-a", 2, "ann"));
        assert_eq!(ids(&p, "presence-a"), ["bob"]);
        assert!(p.leave(0, "presence-a", 3, "bob"));
        assert!(p.channels.is_empty(), "an empty channel holds nothing");
    }

    #[test]
    fn apps_and_channels_are_apart_and_a_full_channel_refuses_new_users_only() {
        let mut p = LocalPresence::default();
        p.join(0, "presence-a", 1, member("ann", "{}"), 2).unwrap();
        p.join(0, "presence-a", 2, member("bob", "{}"), 2).unwrap();
        assert_eq!(p.join(0, "presence-a", 3, member("cid", "{}"), 2), Err(Full { max: 2 }));
        assert_eq!(
            p.join(0, "presence-a", 3, member("ann", "{}"), 2),
            Ok(Joined::Again),
            "a known user is no new member"
        );
        assert_eq!(p.join(1, "presence-a", 4, member("cid", "{}"), 2), Ok(Joined::Added), "another app");
        assert_eq!(p.join(0, "presence-b", 4, member("cid", "{}"), 2), Ok(Joined::Added), "another channel");
        assert_eq!(ids(&p, "presence-b"), ["cid"]);
    }
}
