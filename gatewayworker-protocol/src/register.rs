//! The register protocol of `Register.php`: one JSON object per line (Workerman's `Text`
//! protocol), an `event` field naming the message, the secret key in plain text.

use serde::{Deserialize, Serialize};

/// Longest line accepted; PHP's messages are a few hundred bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// A message to the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToRegister {
    /// A gateway announces its GatewayWorker-protocol address (`ip:port`).
    GatewayConnect {
        /// `ip:port` of its GatewayWorker-protocol listener.
        address: String,
        /// The register's `secretKey`, or empty.
        secret_key: String,
    },
    /// A BusinessWorker or GatewayClient asks for the gateway addresses.
    WorkerConnect {
        /// The register's `secretKey`, or empty.
        secret_key: String,
    },
    /// Heartbeat.
    Ping,
}

/// Why a line is not a register message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterLineError {
    /// Not a JSON object with an `event` key.
    #[error("not a JSON object with an \"event\": {0}")]
    BadJson(String),
    /// An event name the register does not know.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// `gateway_connect` without an address.
    #[error("gateway_connect without an address")]
    NoAddress,
}

#[derive(Deserialize)]
struct Raw {
    event: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    secret_key: Option<serde_json::Value>,
}

/// Parses one line (without its newline; a trailing `\r` is ignored, as PHP's `json_decode` does).
pub fn parse(line: &[u8]) -> Result<ToRegister, RegisterLineError> {
    let raw: Raw = serde_json::from_slice(line.trim_ascii()).map_err(|e| RegisterLineError::BadJson(e.to_string()))?;
    // PHP compares with `!==`: a key that is not a string never matches a configured one.
    let secret_key = match raw.secret_key {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => format!("\u{0}{other}"),
    };
    match raw.event.as_str() {
        "gateway_connect" => match raw.address {
            Some(address) if !address.is_empty() => Ok(ToRegister::GatewayConnect { address, secret_key }),
            _ => Err(RegisterLineError::NoAddress),
        },
        "worker_connect" => Ok(ToRegister::WorkerConnect { secret_key }),
        "ping" => Ok(ToRegister::Ping),
        other => Err(RegisterLineError::UnknownEvent(other.chars().take(100).collect())),
    }
}

#[derive(Serialize)]
struct Broadcast<'a> {
    event: &'static str,
    addresses: &'a [String],
}

/// The register's `broadcast_addresses` line, newline included.
pub fn broadcast_addresses(addresses: &[String]) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&Broadcast { event: "broadcast_addresses", addresses }).expect("strings serialize");
    line.push(b'\n');
    line
}

/// A gateway's `gateway_connect` line as `Gateway::registerAddress` sends it, newline included.
pub fn gateway_connect(address: &str, secret_key: &str) -> Vec<u8> {
    encode(&ToRegister::GatewayConnect { address: address.into(), secret_key: secret_key.into() })
}

/// A message to the register as PHP peers send it: one JSON line, newline included.
pub fn encode(msg: &ToRegister) -> Vec<u8> {
    let value = match msg {
        ToRegister::GatewayConnect { address, secret_key } => {
            serde_json::json!({"event": "gateway_connect", "address": address, "secret_key": secret_key})
        }
        ToRegister::WorkerConnect { secret_key } => {
            serde_json::json!({"event": "worker_connect", "secret_key": secret_key})
        }
        ToRegister::Ping => serde_json::json!({"event": "ping"}),
    };
    let mut line = serde_json::to_vec(&value).expect("strings serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_php_peers_send() {
        // BusinessWorker::connectToRegister and Gateway::registerAddress, byte for byte.
        assert_eq!(
            parse(br#"{"event":"worker_connect","secret_key":"k"}"#),
            Ok(ToRegister::WorkerConnect { secret_key: "k".into() })
        );
        assert_eq!(
            parse(br#"{"event":"gateway_connect", "address":"127.0.0.1:2900", "secret_key":""}"#),
            Ok(ToRegister::GatewayConnect { address: "127.0.0.1:2900".into(), secret_key: String::new() })
        );
        assert_eq!(parse(b"{\"event\":\"ping\"}\r"), Ok(ToRegister::Ping));
    }

    #[test]
    fn refuses_garbage_unknown_events_and_missing_addresses() {
        assert!(matches!(parse(b"GET / HTTP/1.1"), Err(RegisterLineError::BadJson(_))));
        assert!(matches!(parse(b"{}"), Err(RegisterLineError::BadJson(_))));
        assert_eq!(parse(br#"{"event":"x"}"#), Err(RegisterLineError::UnknownEvent("x".into())));
        assert_eq!(parse(br#"{"event":"gateway_connect"}"#), Err(RegisterLineError::NoAddress));
        let ToRegister::WorkerConnect { secret_key } = parse(br#"{"event":"worker_connect","secret_key":1}"#).unwrap()
        else {
            panic!()
        };
        assert_ne!(secret_key, "1");
    }

    #[test]
    fn what_peers_send_parses_back() {
        for msg in [
            ToRegister::GatewayConnect { address: "127.0.0.1:2900".into(), secret_key: "k".into() },
            ToRegister::WorkerConnect { secret_key: String::new() },
            ToRegister::Ping,
        ] {
            let line = encode(&msg);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse(&line[..line.len() - 1]), Ok(msg));
        }
        assert_eq!(encode(&ToRegister::Ping), b"{\"event\":\"ping\"}\n");
    }

    #[test]
    fn broadcast_is_one_json_line() {
        assert_eq!(
            broadcast_addresses(&["127.0.0.1:2900".into()]),
            b"{\"event\":\"broadcast_addresses\",\"addresses\":[\"127.0.0.1:2900\"]}\n"
        );
        assert_eq!(broadcast_addresses(&[]), b"{\"event\":\"broadcast_addresses\",\"addresses\":[]}\n");
    }
}
