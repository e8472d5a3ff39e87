//! This gateway's subscribers per app and channel, for `channel_occupied` / `channel_vacated`:
//! a channel is occupied here from its first subscriber to its last one (docs/pusher.md §5, the
//! local count a gateway keeps and would tell a home about).
//!
//! Plain data, no IO: the connection task holds the gateway's lock around a change and hands
//! the transition on under it, so transitions of a channel leave in the order they happened.

use std::collections::{HashMap, HashSet};

/// Every channel of every app with subscribers on this gateway.
#[derive(Debug, Default)]
pub(crate) struct LocalChannels {
    channels: HashMap<(usize, String), HashSet<u64>>,
}

impl LocalChannels {
    /// Connection `client` subscribed to `channel` of app `app`; true when it is the channel's
    /// first subscriber here (a second subscribe of the same connection is nothing).
    pub fn subscribe(&mut self, app: usize, channel: &str, client: u64) -> bool {
        let subs = self.channels.entry((app, channel.to_string())).or_default();
        subs.insert(client) && subs.len() == 1
    }

    /// Connection `client` left `channel`; true when it was the channel's last subscriber here.
    pub fn unsubscribe(&mut self, app: usize, channel: &str, client: u64) -> bool {
        let key = (app, channel.to_string());
        let Some(subs) = self.channels.get_mut(&key) else { return false };
        if !subs.remove(&client) || !subs.is_empty() {
            return false;
        }
        self.channels.remove(&key);
        true
    }

    /// Every channel with subscribers here: (app, channel).
    pub fn channels(&self) -> impl Iterator<Item = (usize, &str)> {
        self.channels.keys().map(|(app, channel)| (*app, channel.as_str()))
    }

    /// The channel's subscribers here.
    #[cfg(test)]
    pub fn count(&self, app: usize, channel: &str) -> usize {
        self.channels.get(&(app, channel.to_string())).map_or(0, HashSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_and_last_out_are_the_transitions() {
        let mut c = LocalChannels::default();
        assert!(c.subscribe(0, "a", 1));
        assert!(!c.subscribe(0, "a", 1), "the same connection again");
        assert!(!c.subscribe(0, "a", 2));
        assert!(c.subscribe(1, "a", 3), "another app's channel");
        assert_eq!(c.count(0, "a"), 2);
        assert!(!c.unsubscribe(0, "a", 1));
        assert!(!c.unsubscribe(0, "a", 1), "twice is nothing");
        assert!(!c.unsubscribe(0, "b", 2), "never subscribed");
        assert!(c.unsubscribe(0, "a", 2));
        assert!(c.unsubscribe(1, "a", 3));
        assert!(c.channels.is_empty(), "an empty channel holds nothing");
    }
}
