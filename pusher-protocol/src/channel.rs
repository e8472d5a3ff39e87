//! Channel names (Pusher's "Channel Naming Conventions"): letters, digits and `_ - = @ , . ;`,
//! at most [`Limits::max_channel_name`] bytes; the prefix says the kind. `#` is reserved for the
//! server: the only `#` name is `#server-to-user-{user id}`, the channel a signed-in connection
//! subscribes to in order to get what `send_to_user` sends it.

use std::fmt;

use crate::Limits;

/// The prefix of the channel a signed-in user's connections get `send_to_user` events on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's name makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Anyone who knows the name may subscribe.
    Public,
    /// `private-`: the subscription must be signed by the app's server.
    Private,
    /// `private-encrypted-`: signed like a private channel; event data is end-to-end encrypted
    /// by the publisher and relayed as it is.
    PrivateEncrypted,
    /// `presence-`: signed, with the member's `channel_data`; members see each other.
    Presence,
    /// `#server-to-user-{id}`: only a connection signed in as that user may subscribe.
    ServerToUser,
}

impl ChannelKind {
    /// Whether subscribing needs an `auth` signature.
    pub const fn requires_auth(self) -> bool {
        matches!(self, Self::Private | Self::PrivateEncrypted | Self::Presence)
    }

    /// Whether clients may send `client-` events on it (authorized channels only).
    pub const fn allows_client_events(self) -> bool {
        self.requires_auth()
    }

    /// Whether it is a presence channel.
    pub const fn is_presence(self) -> bool {
        matches!(self, Self::Presence)
    }
}

/// A valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than the limit.
    #[error("channel name is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("channel name has {ch:?} at byte {at}: only letters, digits and _ - = @ , . ; are allowed")]
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// The name starts with `#` but is not `#server-to-user-{user id}`.
    #[error("channel names starting with '#' are reserved (only \"#server-to-user-<user id>\" exists)")]
    Reserved,
}

impl ChannelName {
    /// Checks `name` against the naming rules and `limits`.
    pub fn parse(name: &str, limits: &Limits) -> Result<Self, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        if name.len() > limits.max_channel_name {
            return Err(ChannelError::TooLong { len: name.len(), max: limits.max_channel_name });
        }
        let rest = if let Some(user) = name.strip_prefix(SERVER_TO_USER_PREFIX) {
            if user.is_empty() {
                return Err(ChannelError::Reserved);
            }
            user
        } else {
            name
        };
        let offset = name.len() - rest.len();
        if let Some((at, ch)) = rest.char_indices().find(|&(_, c)| !is_name_char(c)) {
            return Err(if ch == '#' && at + offset == 0 {
                ChannelError::Reserved
            } else {
                ChannelError::InvalidChar { ch, at: at + offset }
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind its prefix gives it.
    pub fn kind(&self) -> ChannelKind {
        let n = self.as_str();
        if n.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if n.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if n.starts_with("private-") {
            ChannelKind::Private
        } else if n.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Whether it is a cache channel (`cache-`, `private-cache-`, `private-encrypted-cache-`,
    /// `presence-cache-`), which sends a new subscriber the last event published to it.
    pub fn is_cache(&self) -> bool {
        ["cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"]
            .iter()
            .any(|p| self.as_str().starts_with(p))
    }

    /// For a `#server-to-user-{id}` channel, the user id.
    pub fn server_to_user(&self) -> Option<&str> {
        self.as_str().strip_prefix(SERVER_TO_USER_PREFIX)
    }

    /// The name, taken out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether `c` may appear in a channel name (and in a signed-in user's id, which becomes part of
/// its `#server-to-user-` channel's name).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChannelName, ChannelError> {
        ChannelName::parse(s, &Limits::default())
    }

    #[test]
    fn accepts_the_documented_example_and_every_allowed_character() {
        assert_eq!(parse("foo-bar_1234@=,.;").unwrap().as_str(), "foo-bar_1234@=,.;");
        assert!(parse("AZaz09").is_ok());
    }

    #[test]
    fn kinds_follow_the_prefix() {
        let kind = |s| parse(s).unwrap().kind();
        assert_eq!(kind("my-channel"), ChannelKind::Public);
        assert_eq!(kind("private-x"), ChannelKind::Private);
        assert_eq!(kind("private-encrypted-x"), ChannelKind::PrivateEncrypted);
        assert_eq!(kind("presence-x"), ChannelKind::Presence);
        assert_eq!(kind("#server-to-user-42"), ChannelKind::ServerToUser);
        // Prefixes count only at the start.
        assert_eq!(kind("x-private-y"), ChannelKind::Public);
        assert_eq!(kind("privatex"), ChannelKind::Public);
        assert!(kind("private-x").requires_auth() && kind("presence-x").allows_client_events());
        assert!(!kind("public").allows_client_events() && !kind("#server-to-user-1").allows_client_events());
    }

    #[test]
    fn cache_channels_are_recognized_in_every_mode() {
        for name in ["cache-a", "private-cache-a", "private-encrypted-cache-a", "presence-cache-a"] {
            assert!(parse(name).unwrap().is_cache(), "{name}");
        }
        assert!(!parse("private-a-cache-b").unwrap().is_cache());
        assert_eq!(parse("presence-cache-a").unwrap().kind(), ChannelKind::Presence);
    }

    #[test]
    fn server_to_user_names_carry_the_user() {
        assert_eq!(parse("#server-to-user-a@b.c").unwrap().server_to_user(), Some("a@b.c"));
        assert_eq!(parse("private-x").unwrap().server_to_user(), None);
        assert_eq!(parse("#server-to-user-"), Err(ChannelError::Reserved));
        assert_eq!(parse("#other"), Err(ChannelError::Reserved));
        assert_eq!(parse("#server-to-user-a#b"), Err(ChannelError::InvalidChar { ch: '#', at: 17 }));
    }

    #[test]
    fn refuses_bad_characters_empty_and_long_names_precisely() {
        assert_eq!(parse(""), Err(ChannelError::Empty));
        assert_eq!(parse("a b"), Err(ChannelError::InvalidChar { ch: ' ', at: 1 }));
        assert_eq!(parse("caf\u{e9}"), Err(ChannelError::InvalidChar { ch: '\u{e9}', at: 3 }));
        assert_eq!(parse("a:b"), Err(ChannelError::InvalidChar { ch: ':', at: 1 }));
        assert_eq!(parse("a\0"), Err(ChannelError::InvalidChar { ch: '\0', at: 1 }));
        assert!(parse(&"a".repeat(200)).is_ok());
        assert_eq!(parse(&"a".repeat(201)), Err(ChannelError::TooLong { len: 201, max: 200 }));
        let msg = parse("a b").unwrap_err().to_string();
        assert!(msg.contains("' '") && msg.contains("byte 1"), "{msg}");
    }
}
