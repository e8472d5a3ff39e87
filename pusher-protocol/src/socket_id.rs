//! The socket id a Pusher connection is given in `pusher:connection_established`: two decimal
//! numbers joined by a dot, as every SDK validates it (`\A\d+\.\d+\z`).
//!
//! Ours are `{instance}.{local}`: the gateway instance (random per gateway start, announced to
//! every worker and gateway client on its links) and the connection's number on it, the two
//! numbers our client ids carry. So a socket id is never reused, and an HTTP publish that
//! excludes one (`socket_id`) knows the one gateway the exclusion concerns without a lookup.

use std::fmt;
use std::str::FromStr;

/// A connection's socket id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// The gateway instance that holds the connection.
    pub instance: u64,
    /// The connection's number within that instance.
    pub local: u64,
}

/// Why a string is not a socket id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id {0:?}: expected two decimal numbers joined by a dot, such as \"1234.5678\"")]
pub struct SocketIdError(pub String);

impl SocketId {
    /// The socket id of connection `local` of gateway instance `instance`.
    pub const fn new(instance: u64, local: u64) -> Self {
        Self { instance, local }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.instance, self.local)
    }
}

impl FromStr for SocketId {
    type Err = SocketIdError;

    /// Parses the canonical form only (no sign, no leading zero, each part within `u64`), so
    /// a socket id and its text are one-to-one: `"07.1"` would otherwise exclude socket `7.1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SocketIdError(s.chars().take(64).collect());
        let (a, b) = s.split_once('.').ok_or_else(err)?;
        Ok(Self { instance: part(a).ok_or_else(err)?, local: part(b).ok_or_else(err)? })
    }
}

/// One canonical decimal `u64`.
fn part(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for id in [SocketId::new(0, 0), SocketId::new(1234, 1234), SocketId::new(u64::MAX, 1)] {
            assert_eq!(id.to_string().parse::<SocketId>().unwrap(), id);
        }
        assert_eq!(SocketId::new(18_446_744_073_709_551_615, 7).to_string(), "18446744073709551615.7");
    }

    #[test]
    fn refuses_non_canonical_and_malformed_ids() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1",
            "1.2.3",
            "01.2",
            "1.02",
            "+1.2",
            "-1.2",
            "1. 2",
            "１.2",
            "18446744073709551616.1",
            "1.2\n",
            "a.b",
        ] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_names_the_expected_form_and_bounds_the_echo() {
        let e = "x".repeat(1000).parse::<SocketId>().unwrap_err();
        assert_eq!(e.0.len(), 64);
        assert!(e.to_string().contains("two decimal numbers"));
    }
}
