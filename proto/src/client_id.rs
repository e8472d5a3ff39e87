//! Client ids: opaque to applications, routable by anyone.
//!
//! A client id names the gateway that holds the connection (its advertised internal address, which
//! may be a hostname or IPv6), that gateway's instance (random per start) and a per-instance
//! counter. So any worker or gateway client can route to it without a lookup, and an id is never
//! reused, also across gateway restarts (GatewayWorker's ids are reused; ours are not).
//!
//! Text form: `<base64url(address)>.<instance hex>.<counter hex>`, URL- and JSON-safe.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use std::{fmt, str::FromStr};

/// A parsed client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The gateway's advertised internal address.
    pub gateway: String,
    /// The gateway instance (random per gateway start).
    pub instance: u64,
    /// The connection number within that instance.
    pub local: u64,
}

/// Why a string is not a client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client id {id:?}: {reason}")]
pub struct ClientIdError {
    /// The string that failed to parse.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ClientId {
    /// The id of connection `local` of gateway instance `instance` at internal address `gateway`.
    pub fn new(gateway: impl Into<String>, instance: u64, local: u64) -> Self {
        Self { gateway: gateway.into(), instance, local }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}.{:x}", URL_SAFE_NO_PAD.encode(self.gateway.as_bytes()), self.instance, self.local)
    }
}

impl FromStr for ClientId {
    type Err = ClientIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ClientIdError { id: s.chars().take(200).collect(), reason };
        if s.len() > 600 {
            return Err(err("too long"));
        }
        let mut parts = s.split('.');
        let (Some(addr), Some(instance), Some(local), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("expected three dot-separated parts"));
        };
        let addr = URL_SAFE_NO_PAD.decode(addr).map_err(|_| err("gateway part is not base64url"))?;
        let gateway = String::from_utf8(addr).map_err(|_| err("gateway part is not UTF-8"))?;
        if gateway.is_empty() {
            return Err(err("empty gateway address"));
        }
        let hex = |p: &str| {
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u64::from_str_radix(p, 16).ok()
            }
        };
        let instance = hex(instance).ok_or_else(|| err("instance part is not hex"))?;
        let local = hex(local).ok_or_else(|| err("counter part is not hex"))?;
        Ok(Self { gateway, instance, local })
    }
}

/// In JSON and other serde formats a client id is its text form.
impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_ipv4_ipv6_and_hostnames() {
        for addr in ["127.0.0.1:2900", "[::1]:2900", "[2001:db8::7]:1", "gateway-1:2900", "gw.example.com:9"] {
            let id = ClientId::new(addr, 0xdead_beef_0123_4567, 42);
            let text = id.to_string();
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{text}");
            assert_eq!(text.parse::<ClientId>().unwrap(), id);
        }
    }

    #[test]
    fn same_counter_on_another_instance_is_another_id() {
        let a = ClientId::new("gw:1", 1, 7).to_string();
        let b = ClientId::new("gw:1", 2, 7).to_string();
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_ids_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "expected three dot-separated parts"),
            ("abc", "expected three dot-separated parts"),
            ("a.b.c.d", "expected three dot-separated parts"),
            ("!!!.1.2", "gateway part is not base64url"),
            (".1.2", "empty gateway address"),
            ("Z3c6MQ.xyz.2", "instance part is not hex"),
            ("Z3c6MQ.1.", "counter part is not hex"),
            ("Z3c6MQ.1.11111111111111111", "counter part is not hex"),
        ] {
            let err = bad.parse::<ClientId>().unwrap_err();
            assert_eq!(err.reason, why, "{bad}");
        }
        assert!("x".repeat(1000).parse::<ClientId>().is_err());
    }
}
