//! Presence and occupancy for the whole cluster (docs/pusher.md §5), the IO around
//! [`Homes`](super::home::Homes): which gateway is a channel's home, sending this gateway's
//! transitions to it (over the gateway-to-gateway links, or straight in when it is this one),
//! carrying out what a home decides, and the presence subscriptions waiting for their list.
//!
//! Order: a gateway's transitions of a channel leave under the lock that orders them
//! (`LocalPresence`'s, `LocalChannels`'), through one ordered outbox per peer; a home applies
//! them under its lock and queues what it decided, member events and member lists alike, on its
//! one ordered outbox to each gateway. So a gateway gets a channel's member list and member
//! events in the home's order, and a waiting connection joins the channel's group exactly when
//! its list arrives: it gets every event after the list, none before.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use gw_proto::{Command, Payload, PusherPeer, ToGateway};
use gw_pusher_protocol::ServerFrame;
use gw_pusher_protocol::server_frame::MemberRef;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::home::{Homes, Out, home_of};
use super::{Pusher, channel_group};
use crate::Gateway;

/// What a home answered a waiting presence subscription, when it is not the list (the list is
/// written to the client and its group joined where it arrives, in order).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The channel has `max` users and this one is not among them.
    Full { max: u32 },
}

/// A presence subscription waiting for its member list.
#[derive(Debug)]
struct Waiter {
    /// Tells this wait from a later one of the same connection and channel.
    seq: u64,
    /// Dropped when the list came (or the wait ended otherwise).
    answer: oneshot::Sender<Answer>,
}

/// This gateway's part in the cluster's presence and occupancy.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    /// Every gateway the registers list, this one included, sorted (empty until the first list:
    /// this gateway alone).
    gateways: Mutex<Vec<String>>,
    /// Serialises changes of the list (registers report on their own tasks).
    changes: Mutex<()>,
    /// The channels this gateway is home of.
    homes: Mutex<Homes>,
    /// Presence subscriptions waiting for their list: (client, app index, channel).
    waiters: Mutex<HashMap<(u64, usize, String), Waiter>>,
    next_wait: AtomicU64,
    /// Messages from other gateways about an app this gateway does not serve.
    pub ignored: AtomicU64,
}

impl Cluster {
    /// The home of `channel` of app `app_id`.
    fn home(&self, gw: &Gateway, app_id: &str, channel: &str) -> String {
        let list = self.gateways.lock().expect("gateways lock");
        home_of(&list, app_id, channel).unwrap_or(&gw.address).to_string()
    }

    /// Sends a to-home message about `channel` of app `app_id` to the channel's home.
    pub fn to_home(&self, gw: &Gateway, pusher: &Pusher, app_id: &str, channel: &str, msg: PusherPeer) {
        let home = self.home(gw, app_id, channel);
        self.send(gw, pusher, &home, msg);
    }

    fn send(&self, gw: &Gateway, pusher: &Pusher, to: &str, msg: PusherPeer) {
        if to == gw.address {
            match msg {
                m @ (PusherPeer::Occupied { .. }
                | PusherPeer::Vacant { .. }
                | PusherPeer::Join { .. }
                | PusherPeer::Leave { .. }) => self.at_home(gw, pusher, m),
                m => self.heard_from_home(gw, pusher, m),
            }
        } else {
            gw.mesh.to_peer(&gw.state.metrics, to, ToGateway::Pusher(msg));
        }
    }

    /// This gateway, as a channel's home, applies a gateway's message and carries out what it
    /// decided, in order, under the homes' lock.
    pub fn at_home(&self, gw: &Gateway, pusher: &Pusher, msg: PusherPeer) {
        let (PusherPeer::Occupied { app, .. }
        | PusherPeer::Vacant { app, .. }
        | PusherPeer::Join { app, .. }
        | PusherPeer::Leave { app, .. }) = &msg
        else {
            return;
        };
        if pusher.app_index(app).is_none() {
            self.ignore(app);
            return;
        }
        let max = |app: &str| pusher.app_index(app).map(|i| pusher.app(i).max_presence_members);
        let mut homes = self.homes.lock().expect("homes lock");
        let outs = homes.apply(msg, max);
        self.carry_out(gw, pusher, outs);
        drop(homes);
    }

    fn carry_out(&self, gw: &Gateway, pusher: &Pusher, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::To(to, msg) => self.send(gw, pusher, &to, msg),
                Out::Decided { app, decided } => pusher.decide(&app, &decided),
            }
        }
    }

    /// A home's message for this gateway: member events to the channel's subscribers here, a
    /// member list to the connection waiting for it (which joins the channel's group now).
    pub fn heard_from_home(&self, gw: &Gateway, pusher: &Pusher, msg: PusherPeer) {
        let (PusherPeer::MemberAdded { app, channel, .. }
        | PusherPeer::MemberRemoved { app, channel, .. }
        | PusherPeer::Members { app, channel, .. }
        | PusherPeer::Full { app, channel, .. }) = &msg
        else {
            return;
        };
        let Some(index) = pusher.app_index(app) else {
            self.ignore(app);
            return;
        };
        let group = channel_group(app, channel);
        let payload = |frame: String| Payload { data: Bytes::from(frame), binary: false };
        match &msg {
            PusherPeer::MemberAdded { user_id, user_info, .. } => {
                let info = raw(user_info.as_deref());
                let member = MemberRef { user_id, user_info: info };
                let msg = payload(ServerFrame::MemberAdded { channel, member }.encode());
                gw.state.execute(Command::SendToGroups { groups: vec![group], msg, exclude: vec![] });
            }
            PusherPeer::MemberRemoved { user_id, .. } => {
                let msg = payload(ServerFrame::MemberRemoved { channel, user_id }.encode());
                gw.state.execute(Command::SendToGroups { groups: vec![group], msg, exclude: vec![] });
            }
            PusherPeer::Members { client, members, .. } => {
                let mut waiters = self.waiters.lock().expect("waiters lock");
                if waiters.remove(&(*client, index, channel.clone())).is_none() {
                    tracing::debug!(client, channel = %channel, "a member list for a connection no longer waiting");
                    return;
                }
                let list: Vec<MemberRef<'_>> = members
                    .iter()
                    .map(|(user_id, info)| MemberRef { user_id, user_info: raw(info.as_deref()) })
                    .collect();
                let msg = payload(ServerFrame::PresenceSubscriptionSucceeded { channel, members: &list }.encode());
                gw.state.execute(Command::SendToClients { clients: vec![*client], msg });
                gw.state.index_mut().join(*client, group);
            }
            PusherPeer::Full { client, max, .. } => {
                let waiter = self.waiters.lock().expect("waiters lock").remove(&(*client, index, channel.clone()));
                if let Some(w) = waiter {
                    let _ = w.answer.send(Answer::Full { max: *max });
                }
            }
            _ => {}
        }
    }

    /// The presence channels of app `app` homed here (only `channel`, if given) with their
    /// users' ids.
    pub fn members(&self, app: &str, channel: Option<&str>) -> Vec<(String, Vec<String>)> {
        self.homes.lock().expect("homes lock").members(app, channel)
    }

    /// A message from another gateway about app `app`, which this gateway does not serve
    /// (gateways with different `[pusher]` apps): counted, logged.
    fn ignore(&self, app: &str) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
        let shown: String = app.chars().take(64).collect();
        tracing::debug!(app = %shown, "a Pusher message from another gateway for an app not served here: ignored");
    }

    /// Connection `client` waits for the member list of `channel` of app `app`. Returns the
    /// wait's number and where an answer other than the list comes (closed when the list came).
    pub fn wait(&self, client: u64, app: usize, channel: &str) -> (u64, oneshot::Receiver<Answer>) {
        let seq = self.next_wait.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert((client, app, channel.to_string()), Waiter { seq, answer });
        (seq, rx)
    }

    /// Ends wait `seq` if it is still waiting (timed out, or the connection left the channel);
    /// true when it was.
    pub fn stop_waiting(&self, client: u64, app: usize, channel: &str, seq: Option<u64>) -> bool {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        let key = (client, app, channel.to_string());
        match waiters.get(&key) {
            Some(w) if seq.is_none_or(|s| s == w.seq) => waiters.remove(&key).is_some(),
            _ => false,
        }
    }

    /// The registers' gateway list changed (`others`: every gateway but this one). Gateways
    /// gone leave the channels this gateway is home of (their members are removed, their
    /// channels vacated, once); channels homed here no more are forgotten; this gateway's
    /// share of every channel whose home moved is re-sent to the new home, marked `resync`
    /// (already announced: the new home adds it silently).
    pub fn gateways_changed(&self, gw: &Gateway, pusher: &Pusher, others: BTreeSet<String>) {
        let _one_at_a_time = self.changes.lock().expect("changes lock");
        let mut new: Vec<String> = others.into_iter().collect();
        new.push(gw.address.clone());
        new.sort();
        new.dedup();
        let mut old = std::mem::replace(&mut *self.gateways.lock().expect("gateways lock"), new.clone());
        if old == new {
            return;
        }
        if old.is_empty() {
            old = vec![gw.address.clone()];
        }
        tracing::info!(gateways = new.len(), "the gateway list changed: Pusher channel homes follow");
        let home_in = |list: &[String], app: &str, channel: &str| home_of(list, app, channel).map(str::to_string);
        {
            let mut homes = self.homes.lock().expect("homes lock");
            for gone in old.iter().filter(|g| !new.contains(g)) {
                let outs = homes.gateway_gone(gone);
                self.carry_out(gw, pusher, outs);
            }
            homes.retain(|app, channel| home_in(&new, app, channel).as_deref() == Some(gw.address.as_str()));
        }
        let moved = |app: &str, channel: &str| {
            let (before, after) = (home_in(&old, app, channel), home_in(&new, app, channel));
            (before != after).then_some(after).flatten()
        };
        let mut resent = 0usize;
        {
            let channels = pusher.channels.lock().expect("channels lock");
            for (app, channel) in channels.channels() {
                let app_id = &pusher.app(app).id;
                if let Some(home) = moved(app_id, channel) {
                    let (gateway, app, channel) = (gw.address.clone(), app_id.clone(), channel.to_string());
                    self.send(gw, pusher, &home, PusherPeer::Occupied { gateway, app, channel, resync: true });
                    resent += 1;
                }
            }
        }
        {
            let presence = pusher.presence.lock().expect("presence lock");
            for (app, channel, user_id, info) in presence.users() {
                let app_id = &pusher.app(app).id;
                if let Some(home) = moved(app_id, channel) {
                    let msg = PusherPeer::Join {
                        gateway: gw.address.clone(),
                        app: app_id.clone(),
                        channel: channel.to_string(),
                        user_id: user_id.to_string(),
                        user_info: info.map(|i| i.get().to_string()),
                        waiting: None,
                        resync: true,
                    };
                    self.send(gw, pusher, &home, msg);
                    resent += 1;
                }
            }
        }
        tracing::debug!(resent, "this gateway's share of moved channels re-sent");
    }
}

/// A member's info as JSON (it was checked when the member joined; anything else is left out).
fn raw(info: Option<&str>) -> Option<&RawValue> {
    info.and_then(|i| serde_json::from_str::<&RawValue>(i).ok())
}
