//! The home of Pusher channels (docs/pusher.md §5): each channel of each app has one gateway,
//! chosen by rendezvous hashing over the gateways the registers list, that decides for the
//! whole cluster whether the channel is occupied and who its presence members are.
//!
//! Plain data, no IO: [`Homes::apply`] takes what a gateway said ([`PusherPeer`]'s to-home
//! messages) and returns what to send to which gateway and which cluster-wide transitions
//! happened ([`Out`]); the caller (`cluster.rs`) carries them out in order.

use std::collections::{BTreeSet, HashMap};

use gw_proto::PusherPeer;

/// The home of channel `channel` of app `app` among `gateways` (advertised addresses): the one
/// with the highest hash of (gateway, app, channel). A pure function: every gateway with the
/// same list finds the same home, and a gateway leaving moves only the channels it was home of.
pub(crate) fn home_of<'a>(gateways: &'a [String], app: &str, channel: &str) -> Option<&'a str> {
    gateways.iter().max_by_key(|g| (score(g, app, channel), g.as_str())).map(String::as_str)
}

/// FNV-1a over the three names (each ended by a 0 byte), then SplitMix64's finaliser: stable
/// across processes, builds and platforms (unlike the standard library's hasher).
fn score(gateway: &str, app: &str, channel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [gateway, app, channel] {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A transition of the whole cluster, for the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decided {
    Occupied { channel: String },
    Vacant { channel: String },
    Joined { channel: String, user_id: String },
    Left { channel: String, user_id: String },
}

impl Decided {
    /// As the webhook [`Decider`](super::decide::Decider) takes it.
    pub fn transition(&self) -> super::decide::Transition<'_> {
        use super::decide::Transition;
        match self {
            Self::Occupied { channel } => Transition::Occupied { channel },
            Self::Vacant { channel } => Transition::Vacant { channel },
            Self::Joined { channel, user_id } => Transition::Joined { channel, user_id },
            Self::Left { channel, user_id } => Transition::Left { channel, user_id },
        }
    }
}

/// What the home does after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Send this to the gateway at this address (maybe this one).
    To(String, PusherPeer),
    /// A cluster-wide transition of app `app` (its id).
    Decided { app: String, decided: Decided },
}

/// One user of a presence channel: where it is present, and its info (from its first join).
#[derive(Debug)]
struct User {
    id: String,
    info: Option<String>,
    gateways: BTreeSet<String>,
}

/// One channel as its home knows it.
#[derive(Debug, Default)]
struct Channel {
    /// The gateways with subscribers.
    occupied: BTreeSet<String>,
    /// The presence members, in joining order.
    users: Vec<User>,
}

impl Channel {
    /// The gateways that get member events: those where some member is present.
    fn holders(&self) -> BTreeSet<String> {
        self.users.iter().flat_map(|u| u.gateways.iter().cloned()).collect()
    }

    fn is_empty(&self) -> bool {
        self.occupied.is_empty() && self.users.is_empty()
    }
}

/// The channels this gateway is home of, by (app id, channel).
#[derive(Debug, Default)]
pub(crate) struct Homes {
    channels: HashMap<(String, String), Channel>,
}

impl Homes {
    /// Applies a to-home message; `max_members` is the app's `max_presence_members` (none:
    /// unknown app, the message is ignored). From-home messages are not for a home: nothing.
    pub fn apply(&mut self, msg: PusherPeer, max_members: impl Fn(&str) -> Option<usize>) -> Vec<Out> {
        let mut out = Vec::new();
        match msg {
            PusherPeer::Occupied { gateway, app, channel, resync } => {
                if max_members(&app).is_none() {
                    return out;
                }
                let ch = self.channels.entry((app.clone(), channel.clone())).or_default();
                if ch.occupied.insert(gateway) && ch.occupied.len() == 1 && !resync {
                    out.push(Out::Decided { app, decided: Decided::Occupied { channel } });
                }
            }
            PusherPeer::Vacant { gateway, app, channel } => self.vacant(&gateway, app, channel, &mut out),
            PusherPeer::Join { gateway, app, channel, user_id, user_info, waiting, resync } => {
                let Some(max) = max_members(&app) else { return out };
                let ch = self.channels.entry((app.clone(), channel.clone())).or_default();
                if let Some(u) = ch.users.iter_mut().find(|u| u.id == user_id) {
                    u.gateways.insert(gateway.clone());
                } else if ch.users.len() >= max && !resync {
                    if let Some(client) = waiting {
                        let max = u32::try_from(max).unwrap_or(u32::MAX);
                        out.push(Out::To(
                            gateway,
                            PusherPeer::Full { app: app.clone(), channel: channel.clone(), client, max },
                        ));
                    }
                    if ch.is_empty() {
                        self.channels.remove(&(app, channel));
                    }
                    return out;
                } else {
                    let gateways = BTreeSet::from([gateway.clone()]);
                    ch.users.push(User { id: user_id.clone(), info: user_info.clone(), gateways });
                    if !resync {
                        for g in ch.holders() {
                            let (app, channel, user_id, user_info) =
                                (app.clone(), channel.clone(), user_id.clone(), user_info.clone());
                            out.push(Out::To(g, PusherPeer::MemberAdded { app, channel, user_id, user_info }));
                        }
                        let decided = Decided::Joined { channel: channel.clone(), user_id };
                        out.push(Out::Decided { app: app.clone(), decided });
                    }
                }
                if let Some(client) = waiting {
                    let members = ch.users.iter().map(|u| (u.id.clone(), u.info.clone())).collect();
                    out.push(Out::To(gateway, PusherPeer::Members { app, channel, client, members }));
                }
            }
            PusherPeer::Leave { gateway, app, channel, user_id } => {
                self.leave(&gateway, app, channel, &user_id, &mut out);
            }
            PusherPeer::MemberAdded { .. }
            | PusherPeer::MemberRemoved { .. }
            | PusherPeer::Members { .. }
            | PusherPeer::Full { .. } => {}
        }
        out
    }

    fn vacant(&mut self, gateway: &str, app: String, channel: String, out: &mut Vec<Out>) {
        let key = (app, channel);
        let Some(ch) = self.channels.get_mut(&key) else { return };
        if ch.occupied.remove(gateway) && ch.occupied.is_empty() {
            let (app, channel) = key.clone();
            out.push(Out::Decided { app, decided: Decided::Vacant { channel } });
        }
        if ch.is_empty() {
            self.channels.remove(&key);
        }
    }

    fn leave(&mut self, gateway: &str, app: String, channel: String, user_id: &str, out: &mut Vec<Out>) {
        let key = (app, channel);
        let Some(ch) = self.channels.get_mut(&key) else { return };
        let Some(at) = ch.users.iter().position(|u| u.id == user_id) else { return };
        if !ch.users[at].gateways.remove(gateway) || !ch.users[at].gateways.is_empty() {
            return;
        }
        ch.users.remove(at);
        let (app, channel) = &key;
        for g in ch.holders() {
            let (app, channel, user_id) = (app.clone(), channel.clone(), user_id.to_string());
            out.push(Out::To(g, PusherPeer::MemberRemoved { app, channel, user_id }));
        }
        let decided = Decided::Left { channel: channel.clone(), user_id: user_id.to_string() };
        out.push(Out::Decided { app: app.clone(), decided });
        if ch.is_empty() {
            self.channels.remove(&key);
        }
    }

    /// The gateway at `gateway` is no longer listed: every member present only there leaves
    /// and every channel occupied only there is vacated, once.
    pub fn gateway_gone(&mut self, gateway: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let keys: Vec<(String, String)> = self.channels.keys().cloned().collect();
        for (app, channel) in keys {
            let Some(ch) = self.channels.get_mut(&(app.clone(), channel.clone())) else { continue };
            let mut gone = Vec::new();
            for u in &mut ch.users {
                if u.gateways.remove(gateway) && u.gateways.is_empty() {
                    gone.push(u.id.clone());
                }
            }
            ch.users.retain(|u| !u.gateways.is_empty());
            // The member events go to the gateways still holding a member, the gone one not.
            let holders = ch.holders();
            for user_id in gone {
                for g in &holders {
                    let (app, channel, user_id) = (app.clone(), channel.clone(), user_id.clone());
                    out.push(Out::To(g.clone(), PusherPeer::MemberRemoved { app, channel, user_id }));
                }
                out.push(Out::Decided {
                    app: app.clone(),
                    decided: Decided::Left { channel: channel.clone(), user_id },
                });
            }
            self.vacant(gateway, app, channel, &mut out);
        }
        out
    }

    /// Forgets the channels `keep` says are no longer homed here (their new home rebuilds them
    /// from what the gateways re-send).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.channels.retain(|(app, channel), _| keep(app, channel));
    }

    /// The presence channels of app `app` held here (only `channel`, if given) with their users'
    /// ids in joining order, sorted by channel.
    pub fn members(&self, app: &str, channel: Option<&str>) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .channels
            .iter()
            .filter(|((a, c), ch)| a == app && channel.is_none_or(|want| want == c) && !ch.users.is_empty())
            .map(|((_, c), ch)| (c.clone(), ch.users.iter().map(|u| u.id.clone()).collect()))
            .collect();
        out.sort();
        out
    }

    /// How many channels this home holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Option<usize> = Some(2);

    fn join(gateway: &str, user: &str, waiting: Option<u64>) -> PusherPeer {
        PusherPeer::Join {
            gateway: gateway.into(),
            app: "1".into(),
            channel: "presence-a".into(),
            user_id: user.into(),
            user_info: Some(format!(r#"{{"n":"{user}"}}"#)),
            waiting,
            resync: false,
        }
    }

    fn leave(gateway: &str, user: &str) -> PusherPeer {
        PusherPeer::Leave {
            gateway: gateway.into(),
            app: "1".into(),
            channel: "presence-a".into(),
            user_id: user.into(),
        }
    }

    fn added_to(out: &[Out]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Out::To(g, PusherPeer::MemberAdded { .. }) => Some(g.as_str()),
                _ => None,
            })
            .collect()
    }

    fn removed_to(out: &[Out]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Out::To(g, PusherPeer::MemberRemoved { .. }) => Some(g.as_str()),
                _ => None,
            })
            .collect()
    }

    fn list(out: &[Out]) -> Vec<String> {
        out.iter()
            .find_map(|o| match o {
                Out::To(_, PusherPeer::Members { members, .. }) => Some(members.iter().map(|m| m.0.clone()).collect()),
                _ => None,
            })
            .expect("a member list")
    }

    #[test]
    fn a_user_on_two_gateways_is_added_once_and_removed_at_its_last_gateway() {
        let mut h = Homes::default();
        let out = h.apply(join("g1", "ann", Some(1)), |_| MAX);
        assert_eq!(added_to(&out), ["g1"]);
        assert_eq!(list(&out), ["ann"]);
        assert!(
            matches!(out.last(), Some(Out::To(g, PusherPeer::Members { client: 1, .. })) if g == "g1"),
            "list last"
        );
        let out = h.apply(join("g2", "bob", Some(2)), |_| MAX);
        assert_eq!(added_to(&out), ["g1", "g2"], "every holder, the joiner's gateway too");
        assert_eq!(list(&out), ["ann", "bob"]);
        let out = h.apply(join("g2", "ann", Some(3)), |_| MAX);
        assert!(added_to(&out).is_empty(), "ann is there already");
        assert!(!out.iter().any(|o| matches!(o, Out::Decided { .. })));
        assert_eq!(list(&out), ["ann", "bob"]);
        assert!(removed_to(&h.apply(leave("g1", "ann"), |_| MAX)).is_empty(), "still on g2");
        let out = h.apply(leave("g2", "ann"), |_| MAX);
        assert_eq!(removed_to(&out), ["g2"], "g1 holds no member any more");
        let decided = Decided::Left { channel: "presence-a".into(), user_id: "ann".into() };
        assert!(out.contains(&Out::Decided { app: "1".into(), decided }));
        assert!(h.apply(leave("g2", "ann"), |_| MAX).is_empty(), "twice is nothing");
        assert_eq!(h.members("1", None), [("presence-a".to_string(), vec!["bob".to_string()])]);
        assert_eq!(h.members("1", Some("presence-b")), []);
        assert_eq!(h.members("2", None), []);
        h.apply(leave("g2", "bob"), |_| MAX);
        assert_eq!(h.len(), 0, "an empty channel holds nothing");
    }

    #[test]
    fn occupancy_is_decided_once_and_a_resync_is_silent() {
        let mut h = Homes::default();
        let occ =
            |g: &str, resync| PusherPeer::Occupied { gateway: g.into(), app: "1".into(), channel: "c".into(), resync };
        let vac = |g: &str| PusherPeer::Vacant { gateway: g.into(), app: "1".into(), channel: "c".into() };
        assert_eq!(h.apply(occ("g1", false), |_| MAX).len(), 1);
        assert!(h.apply(occ("g2", false), |_| MAX).is_empty());
        assert!(h.apply(vac("g1"), |_| MAX).is_empty());
        let out = h.apply(vac("g2"), |_| MAX);
        assert_eq!(out, [Out::Decided { app: "1".into(), decided: Decided::Vacant { channel: "c".into() } }]);
        assert!(h.apply(occ("g1", true), |_| MAX).is_empty(), "re-sent after a move: already announced");
        assert!(h.apply(occ("g1", false), |_| None).is_empty(), "unknown app");
    }

    #[test]
    fn a_full_channel_refuses_new_users_and_a_gone_gateway_leaves_once() {
        let mut h = Homes::default();
        h.apply(join("g1", "ann", Some(1)), |_| MAX);
        h.apply(join("g2", "bob", Some(2)), |_| MAX);
        let out = h.apply(join("g2", "cid", Some(3)), |_| MAX);
        assert!(matches!(out.as_slice(), [Out::To(g, PusherPeer::Full { client: 3, max: 2, .. })] if g == "g2"));
        assert_eq!(list(&h.apply(join("g1", "bob", Some(4)), |_| MAX)), ["ann", "bob"], "a known user is no new one");
        h.apply(
            PusherPeer::Occupied { gateway: "g2".into(), app: "1".into(), channel: "presence-a".into(), resync: false },
            |_| MAX,
        );
        let out = h.gateway_gone("g2");
        assert!(removed_to(&out).is_empty(), "bob is still on g1");
        assert!(out.iter().any(|o| matches!(o, Out::Decided { decided: Decided::Vacant { .. }, .. })));
        let out = h.gateway_gone("g1");
        assert_eq!(out.iter().filter(|o| matches!(o, Out::Decided { decided: Decided::Left { .. }, .. })).count(), 2);
        assert_eq!(h.len(), 0);
    }

    mod property {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::super::*;

        /// What a gateway can tell a home, or a gateway leaving the list.
        #[derive(Debug, Clone)]
        enum Op {
            Join(usize, usize),
            Leave(usize, usize),
            Occupied(usize),
            Vacant(usize),
            Gone(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..3usize, 0..4usize).prop_map(|(g, u)| Op::Join(g, u)),
                (0..3usize, 0..4usize).prop_map(|(g, u)| Op::Leave(g, u)),
                (0..3usize).prop_map(Op::Occupied),
                (0..3usize).prop_map(Op::Vacant),
                (0..3usize).prop_map(Op::Gone),
            ]
        }

        fn gw(g: usize) -> String {
            format!("g{g}")
        }

        proptest! {
            /// Whatever the gateways say, in any order: each user is added when it is first
            /// present on some gateway and removed when it is present on none, alternating; the
            /// member events go to exactly the gateways holding a member; a member list is the
            /// set of present users; occupancy alternates and follows the truth.
            #[test]
            fn decisions_follow_the_cluster_truth(ops in proptest::collection::vec(op(), 1..120)) {
                let mut h = Homes::default();
                let ch = "presence-p".to_string();
                // The truth: per gateway, its present users and whether it has subscribers.
                let mut present: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
                let mut occupied: BTreeSet<usize> = BTreeSet::new();
                let mut added: BTreeMap<String, bool> = BTreeMap::new();
                let mut cluster_occupied = false;
                for (step, op) in ops.into_iter().enumerate() {
                    let msg = |kind: &Op| match *kind {
                        Op::Join(g, u) => Some(PusherPeer::Join {
                            gateway: gw(g), app: "1".into(), channel: ch.clone(), user_id: format!("u{u}"),
                            user_info: None, waiting: Some(step as u64), resync: false,
                        }),
                        Op::Leave(g, u) => Some(PusherPeer::Leave {
                            gateway: gw(g), app: "1".into(), channel: ch.clone(), user_id: format!("u{u}"),
                        }),
                        Op::Occupied(g) => Some(PusherPeer::Occupied {
                            gateway: gw(g), app: "1".into(), channel: ch.clone(), resync: false,
                        }),
                        Op::Vacant(g) => Some(PusherPeer::Vacant { gateway: gw(g), app: "1".into(), channel: ch.clone() }),
                        Op::Gone(_) => None,
                    };
                    let out = match (&op, msg(&op)) {
                        (Op::Gone(g), _) => h.gateway_gone(&gw(*g)),
                        (_, Some(m)) => h.apply(m, |_| Some(100)),
                        _ => unreachable!(),
                    };
                    match op {
                        Op::Join(g, u) => { present.entry(g).or_default().insert(u); }
                        Op::Leave(g, u) => { present.entry(g).or_default().remove(&u); }
                        Op::Occupied(g) => { occupied.insert(g); }
                        Op::Vacant(g) => { occupied.remove(&g); }
                        Op::Gone(g) => { present.remove(&g); occupied.remove(&g); }
                    }
                    let users: BTreeSet<String> = present.values().flatten().map(|u| format!("u{u}")).collect();
                    let holders: BTreeSet<String> =
                        present.iter().filter(|(_, us)| !us.is_empty()).map(|(g, _)| gw(*g)).collect();
                    let mut events_to: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                    for o in &out {
                        match o {
                            Out::Decided { decided: Decided::Joined { user_id, .. }, .. } => {
                                prop_assert!(!added.get(user_id).copied().unwrap_or(false), "{user_id} added twice");
                                added.insert(user_id.clone(), true);
                            }
                            Out::Decided { decided: Decided::Left { user_id, .. }, .. } => {
                                prop_assert!(added.get(user_id).copied().unwrap_or(false), "{user_id} removed unadded");
                                added.insert(user_id.clone(), false);
                                // Sent to the holders after the leave.
                                prop_assert_eq!(events_to.remove(user_id).unwrap_or_default(), holders.clone());
                            }
                            Out::Decided { decided: Decided::Occupied { .. }, .. } => {
                                prop_assert!(!cluster_occupied, "occupied twice");
                                cluster_occupied = true;
                            }
                            Out::Decided { decided: Decided::Vacant { .. }, .. } => {
                                prop_assert!(cluster_occupied, "vacated unoccupied");
                                cluster_occupied = false;
                            }
                            Out::To(g, PusherPeer::MemberAdded { user_id, .. } | PusherPeer::MemberRemoved { user_id, .. }) => {
                                events_to.entry(user_id.clone()).or_default().insert(g.clone());
                            }
                            Out::To(g, PusherPeer::Members { members, .. }) => {
                                let listed: BTreeSet<String> = members.iter().map(|m| m.0.clone()).collect();
                                prop_assert_eq!(&listed, &users, "the list is who is present");
                                prop_assert!(matches!(op, Op::Join(j, _) if gw(j) == *g), "the list to the joiner");
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    // What is left in events_to are additions: to the holders after the join.
                    for (_, to) in events_to {
                        prop_assert_eq!(to, holders.clone());
                    }
                    for u in 0..4 {
                        let id = format!("u{u}");
                        prop_assert_eq!(added.get(&id).copied().unwrap_or(false), users.contains(&id), "{} at step {}", id, step);
                    }
                    prop_assert_eq!(cluster_occupied, !occupied.is_empty());
                    prop_assert_eq!(h.len() == 0, users.is_empty() && occupied.is_empty(), "nothing kept for nothing");
                }
            }
        }
    }

    #[test]
    fn homes_are_spread_and_a_gateway_leaving_moves_only_its_own_channels() {
        let three: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:7000")).collect();
        let two = three[..2].to_vec();
        let mut per = HashMap::new();
        for i in 0..300 {
            let channel = format!("presence-{i}");
            let home = home_of(&three, "1", &channel).unwrap();
            *per.entry(home).or_insert(0) += 1;
            if home != three[2] {
                assert_eq!(home_of(&two, "1", &channel), Some(home), "only the leaver's channels move");
            }
        }
        assert!(per.values().all(|n| *n > 50), "spread: {per:?}");
        assert_eq!(home_of(&[], "1", "c"), None);
    }
}
