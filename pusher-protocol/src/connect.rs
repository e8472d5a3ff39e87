//! The WebSocket request of a Pusher client: `GET /app/{key}?protocol=7&client=js&version=8.4.0`.
//!
//! The request is checked before anything else is done for the connection; a refusal is a
//! [`ConnectError`] with the close code the client must get (after the WebSocket upgrade, so
//! libraries see the code and stop retrying where the protocol says they should).

use std::ops::RangeInclusive;

use crate::Limits;
use crate::code::ErrorCode;

/// The protocol versions this server speaks: 7 is 6 renamed, 5 and 6 differ from 7 only in
/// what the server sends on close, which we send for all three. pysher says 6, pusher-js 7.
pub const SUPPORTED_PROTOCOLS: RangeInclusive<u8> = 5..=7;

/// The version assumed when a client gives none (and the listener does not require one).
pub const DEFAULT_PROTOCOL: u8 = 7;

/// What a Pusher client asked for when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The app key from the path.
    pub app_key: String,
    /// The protocol version (one of [`SUPPORTED_PROTOCOLS`]).
    pub protocol: u8,
    /// The client library (`client`), for logs and metrics, cut to 64 characters.
    pub client: Option<String>,
    /// The library's version (`version`), cut to 64 characters.
    pub version: Option<String>,
}

/// Why a connection request is refused: the close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ConnectError {
    /// The close code.
    pub code: ErrorCode,
    /// The reason, for the close frame and the `pusher:error`.
    pub reason: String,
}

impl ConnectRequest {
    /// Checks the request's path (without the query) and query string (without the `?`).
    /// With `require_protocol`, a request without `protocol` is refused with 4008 instead of
    /// being served as protocol 7 (what Soketi and Reverb do; Pusher itself would fall back to
    /// protocol 1, which no server speaks any more).
    pub fn parse(path: &str, query: &str, require_protocol: bool, limits: &Limits) -> Result<Self, ConnectError> {
        let refuse = |code: ErrorCode, reason: String| ConnectError { code, reason };
        let app_key = path
            .strip_prefix("/app/")
            .filter(|key| !key.is_empty() && key.len() <= limits.max_app_key && key.bytes().all(is_key_byte))
            .ok_or_else(|| {
                let shown: String = path.chars().take(100).collect();
                refuse(ErrorCode::PathNotFound, format!("Path not found: {shown:?}, expected /app/<app key>"))
            })?;
        let mut protocol = None;
        let mut client = None;
        let mut version = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "protocol" => &mut protocol,
                "client" => &mut client,
                "version" => &mut version,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.chars().take(64).collect::<String>());
            }
        }
        let protocol = match protocol {
            None if require_protocol => {
                return Err(refuse(
                    ErrorCode::NoProtocolVersion,
                    "No protocol version supplied: add ?protocol=7".into(),
                ));
            }
            None => DEFAULT_PROTOCOL,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse(
                        ErrorCode::InvalidVersionFormat,
                        format!("Invalid version string format: protocol={p:?}"),
                    ));
                }
                match p.parse::<u8>() {
                    Ok(n) if SUPPORTED_PROTOCOLS.contains(&n) => n,
                    _ => {
                        let shown: String = p.chars().take(10).collect();
                        return Err(refuse(
                            ErrorCode::UnsupportedProtocolVersion,
                            format!(
                                "Unsupported protocol version: {shown} (this server speaks {} to {})",
                                SUPPORTED_PROTOCOLS.start(),
                                SUPPORTED_PROTOCOLS.end()
                            ),
                        ));
                    }
                }
            }
        };
        Ok(Self { app_key: app_key.to_owned(), protocol, client, version })
    }
}

/// App keys are URL-safe tokens; anything else is not a key of ours.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str, query: &str) -> Result<ConnectRequest, ConnectError> {
        ConnectRequest::parse(path, query, false, &Limits::default())
    }

    #[test]
    fn what_pusher_js_and_pysher_send() {
        let js = parse("/app/278d425bdf160c739803", "protocol=7&client=js&version=8.4.0&flash=false").unwrap();
        assert_eq!(
            js,
            ConnectRequest {
                app_key: "278d425bdf160c739803".into(),
                protocol: 7,
                client: Some("js".into()),
                version: Some("8.4.0".into()),
            }
        );
        let py = parse("/app/key", "client=PythonPusherClient&version=1.0.7&protocol=6").unwrap();
        assert_eq!((py.protocol, py.client.as_deref()), (6, Some("PythonPusherClient")));
    }

    #[test]
    fn protocol_rules() {
        assert_eq!(parse("/app/k", "").unwrap().protocol, 7);
        let strict = ConnectRequest::parse("/app/k", "", true, &Limits::default()).unwrap_err();
        assert_eq!(strict.code, ErrorCode::NoProtocolVersion);
        assert_eq!(parse("/app/k", "protocol=4").unwrap_err().code, ErrorCode::UnsupportedProtocolVersion);
        assert_eq!(parse("/app/k", "protocol=8").unwrap_err().code, ErrorCode::UnsupportedProtocolVersion);
        assert_eq!(parse("/app/k", "protocol=999").unwrap_err().code, ErrorCode::UnsupportedProtocolVersion);
        assert_eq!(parse("/app/k", "protocol=7.0").unwrap_err().code, ErrorCode::InvalidVersionFormat);
        assert_eq!(parse("/app/k", "protocol=+7").unwrap_err().code, ErrorCode::InvalidVersionFormat);
        assert_eq!(parse("/app/k", "protocol=").unwrap_err().code, ErrorCode::InvalidVersionFormat);
        assert_eq!(parse("/app/k", "protocol=5").unwrap().protocol, 5);
        assert_eq!(parse("/app/k", "protocol=6&protocol=1").unwrap().protocol, 6, "the first one counts");
        assert_eq!(
            parse("/app/k", "protocol=3").unwrap_err().reason,
            "Unsupported protocol version: 3 (this server speaks 5 to 7)"
        );
    }

    #[test]
    fn paths_other_than_app_key_are_not_found() {
        for bad in ["/", "/app", "/app/", "/apps/k", "/app/k/", "/app/k/x", "/app/k%20x", "app/k", "/app/k\u{e9}"] {
            assert_eq!(parse(bad, "protocol=7").unwrap_err().code, ErrorCode::PathNotFound, "{bad:?}");
        }
        assert!(parse(&format!("/app/{}", "k".repeat(200)), "").is_ok());
        assert_eq!(parse(&format!("/app/{}", "k".repeat(201)), "").unwrap_err().code, ErrorCode::PathNotFound);
        let e = parse(&format!("/{}", "x".repeat(1000)), "").unwrap_err();
        assert!(e.reason.len() < 200, "the path is cut in the reason: {}", e.reason);
    }

    #[test]
    fn client_and_version_are_cut() {
        let r = parse("/app/k", &format!("client={}&version=%E2%9C%93", "c".repeat(100))).unwrap();
        assert_eq!(r.client.unwrap().len(), 64);
        assert_eq!(r.version.as_deref(), Some("\u{2713}"));
    }
}
