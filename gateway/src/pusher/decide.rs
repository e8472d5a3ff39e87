//! How the occupancy and member webhooks are decided (docs/pusher.md §5, §7).
//!
//! A gateway sees its own share of a channel; the channel's home gateway (`home.rs`) hears
//! every gateway's share and decides the cluster's [`Transition`]s (first subscriber anywhere,
//! last one gone, a user's first connection anywhere, their last one gone). The home hands each
//! to its [`Decider`], which says what the webhooks are: [`LocalDecider`], each of the home's
//! transitions is one webhook event, sent by the home's own dispatcher (where the linger of
//! `webhook_delay` applies). With one gateway, that gateway is every channel's home.

use std::sync::Arc;

use gw_pusher_protocol::webhook::WebhookEvent;
use tokio::sync::mpsc;

use super::webhook::{Counters, DropReason};

/// A change of a channel of one app for the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition<'a> {
    /// The channel's first subscriber anywhere.
    Occupied { channel: &'a str },
    /// The channel's last subscriber anywhere left.
    Vacant { channel: &'a str },
    /// The user's first connection in the presence channel anywhere.
    Joined { channel: &'a str, user_id: &'a str },
    /// The user's last connection in the presence channel anywhere left.
    Left { channel: &'a str, user_id: &'a str },
}

/// Turns the cluster's transitions, as a channel's home decides them, into webhook events.
/// Called under the homes' lock, so it must not block.
pub(crate) trait Decider: Send + Sync + std::fmt::Debug {
    /// A transition of `channel` of app `app` (index in `[[pusher.apps]]`).
    fn transition(&self, app: usize, t: Transition<'_>, sink: &WebhookSink);
}

/// Each of the home's transitions is a webhook event.
#[derive(Debug, Default)]
pub(crate) struct LocalDecider;

impl Decider for LocalDecider {
    fn transition(&self, app: usize, t: Transition<'_>, sink: &WebhookSink) {
        let event = match t {
            Transition::Occupied { channel } => WebhookEvent::ChannelOccupied { channel: channel.into() },
            Transition::Vacant { channel } => WebhookEvent::ChannelVacated { channel: channel.into() },
            Transition::Joined { channel, user_id } => {
                WebhookEvent::MemberAdded { channel: channel.into(), user_id: user_id.into() }
            }
            Transition::Left { channel, user_id } => {
                WebhookEvent::MemberRemoved { channel: channel.into(), user_id: user_id.into() }
            }
        };
        sink.send(app, event);
    }
}

/// Where webhook events go: the dispatcher's bounded input, never waited on (full: the event
/// is dropped and counted).
#[derive(Debug)]
pub(crate) struct WebhookSink {
    tx: Option<mpsc::Sender<(usize, WebhookEvent)>>,
    /// Per app, the events some webhook of it wants (in the order of `WEBHOOK_EVENTS`).
    wanted: Vec<[bool; gw_config::WEBHOOK_EVENTS.len()]>,
    counters: Arc<Counters>,
}

impl WebhookSink {
    /// A sink into `tx` for apps whose wanted events are `wanted` (`None`: no app has webhooks).
    pub fn new(
        tx: Option<mpsc::Sender<(usize, WebhookEvent)>>,
        wanted: Vec<[bool; gw_config::WEBHOOK_EVENTS.len()]>,
        counters: Arc<Counters>,
    ) -> Self {
        Self { tx, wanted, counters }
    }

    /// Whether some webhook of app `app` wants events named `name` (cheap; check before
    /// building an event).
    pub fn wants(&self, app: usize, name: &str) -> bool {
        let at = gw_config::WEBHOOK_EVENTS.iter().position(|n| *n == name);
        self.tx.is_some() && at.is_some_and(|at| self.wanted.get(app).is_some_and(|w| w[at]))
    }

    /// Hands `event` of app `app` to the dispatcher, if a webhook of the app wants it.
    pub fn send(&self, app: usize, event: WebhookEvent) {
        if !self.wants(app, event.name()) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send((app, event)) {
            let (mpsc::error::TrySendError::Full((app, event)) | mpsc::error::TrySendError::Closed((app, event))) = e;
            self.counters.drop_event(app, &event, DropReason::QueueFull);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gateway_turns_each_transition_into_its_webhook_and_a_full_input_counts_drops() {
        let counters = Arc::new(Counters::new(2));
        let (tx, mut rx) = mpsc::channel(2);
        let mut only_members = [false; 5];
        only_members[2] = true;
        let sink = WebhookSink::new(Some(tx), vec![[true; 5], only_members], counters.clone());
        let d = LocalDecider;
        d.transition(0, Transition::Occupied { channel: "a" }, &sink);
        d.transition(1, Transition::Occupied { channel: "a" }, &sink);
        d.transition(1, Transition::Joined { channel: "presence-a", user_id: "u" }, &sink);
        d.transition(0, Transition::Vacant { channel: "a" }, &sink);
        assert_eq!(rx.try_recv().unwrap(), (0, WebhookEvent::ChannelOccupied { channel: "a".into() }));
        assert_eq!(
            rx.try_recv().unwrap(),
            (1, WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: "u".into() }),
            "app 1 wants member_added only"
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(counters.dropped(0, "channel_vacated", DropReason::QueueFull), 1, "the input held 2");
        let none = WebhookSink::new(None, vec![[true; 5]], counters);
        assert!(!none.wants(0, "client_event"));
    }
}
