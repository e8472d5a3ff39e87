//! Webhooks ("Webhooks" in Pusher's server API docs): a POST of `{"time_ms": .., "events":
//! [..]}` to the app's URL, with `X-Pusher-Key` (the app key) and `X-Pusher-Signature` (hex
//! HMAC-SHA256 of the body with the app secret). Batched bodies carry several events.
//!
//! [`verify`] is what a receiver does (the official SDKs' `validate_webhook`): the tests use
//! it, and it documents exactly what our webhooks promise.

use serde::{Deserialize, Serialize};

use crate::hex;

/// The header naming the app key whose secret signed the body.
pub const KEY_HEADER: &str = "X-Pusher-Key";
/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Pusher-Signature";

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookEvent {
    /// The channel's first subscriber anywhere in the cluster arrived.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// The channel's last subscriber anywhere in the cluster left.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A client sent a `client-` event.
    ClientEvent {
        /// The channel.
        channel: String,
        /// The event name.
        event: String,
        /// The event's data as a string (a client's non-string data as its JSON text).
        data: String,
        /// The sender's socket id.
        socket_id: String,
        /// The sender's user id, on presence channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A client subscribed to a cache channel that had nothing cached.
    CacheMiss {
        /// The channel.
        channel: String,
    },
    /// A channel's subscription count changed.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// Its subscriptions now.
        subscription_count: u64,
    },
}

impl WebhookEvent {
    /// The event's `name`, for configuration filters and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChannelOccupied { .. } => "channel_occupied",
            Self::ChannelVacated { .. } => "channel_vacated",
            Self::MemberAdded { .. } => "member_added",
            Self::MemberRemoved { .. } => "member_removed",
            Self::ClientEvent { .. } => "client_event",
            Self::CacheMiss { .. } => "cache_miss",
            Self::SubscriptionCount { .. } => "subscription_count",
        }
    }
}

/// A webhook request's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookBody {
    /// When the webhook was made, in milliseconds since the epoch.
    pub time_ms: u64,
    /// Its events, oldest first.
    pub events: Vec<WebhookEvent>,
}

impl WebhookBody {
    /// The body's JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("strings and numbers serialize")
    }
}

/// The `X-Pusher-Signature` of `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(&hex::hmac_sha256(secret.as_bytes(), body))
}

/// The two headers a webhook request carries (plus `Content-Type: application/json`).
pub fn headers(key: &str, secret: &str, body: &[u8]) -> [(&'static str, String); 2] {
    [(KEY_HEADER, key.to_owned()), (SIGNATURE_HEADER, sign(secret, body))]
}

/// Why a receiver refuses a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// `X-Pusher-Key` is not the app's key.
    #[error("X-Pusher-Key is not this app's key")]
    WrongKey,
    /// `X-Pusher-Signature` is not the HMAC of the body.
    #[error("X-Pusher-Signature does not match the body")]
    BadSignature,
    /// The body is not a webhook body.
    #[error("invalid webhook body: {0}")]
    BadBody(String),
    /// `time_ms` is too far from the receiver's clock.
    #[error("webhook made at {time_ms} ms is more than {max_age_ms} ms away from now ({now_ms} ms)")]
    Stale {
        /// The body's `time_ms`.
        time_ms: u64,
        /// The receiver's clock.
        now_ms: u64,
        /// The tolerance.
        max_age_ms: u64,
    },
}

/// What a receiver checks (as the Python SDK's `validate_webhook`, which allows 300,000 ms):
/// the key, the signature, the body's form and its age.
pub fn verify(
    key: &str,
    secret: &str,
    key_header: &str,
    signature_header: &str,
    body: &[u8],
    now_ms: u64,
    max_age_ms: u64,
) -> Result<WebhookBody, WebhookError> {
    if key_header != key {
        return Err(WebhookError::WrongKey);
    }
    if !hex::matches(signature_header, &hex::hmac_sha256(secret.as_bytes(), body)) {
        return Err(WebhookError::BadSignature);
    }
    let parsed: WebhookBody = serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    if parsed.time_ms.abs_diff(now_ms) > max_age_ms {
        return Err(WebhookError::Stale { time_ms: parsed.time_ms, now_ms, max_age_ms });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> WebhookBody {
        WebhookBody {
            time_ms: 1_327_078_148_132,
            events: vec![
                WebhookEvent::ChannelOccupied { channel: "my-channel".into() },
                WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: "u1".into() },
                WebhookEvent::ClientEvent {
                    channel: "private-a".into(),
                    event: "client-x".into(),
                    data: r#"{"a":1}"#.into(),
                    socket_id: "1.2".into(),
                    user_id: None,
                },
            ],
        }
    }

    #[test]
    fn bodies_look_like_the_docs() {
        assert_eq!(
            body().encode(),
            r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"},{"name":"member_added","channel":"presence-a","user_id":"u1"},{"name":"client_event","channel":"private-a","event":"client-x","data":"{\"a\":1}","socket_id":"1.2"}]}"#
        );
        let v = WebhookBody {
            time_ms: 1,
            events: vec![WebhookEvent::SubscriptionCount { channel: "c".into(), subscription_count: 3 }],
        };
        assert_eq!(
            v.encode(),
            r#"{"time_ms":1,"events":[{"name":"subscription_count","channel":"c","subscription_count":3}]}"#
        );
        assert_eq!(
            body().events.iter().map(WebhookEvent::name).collect::<Vec<_>>(),
            ["channel_occupied", "member_added", "client_event"]
        );
    }

    #[test]
    fn signed_bodies_verify_and_tampered_ones_do_not() {
        let text = body().encode();
        let [(k, key), (s, sig)] = headers("key", "secret", text.as_bytes());
        assert_eq!((k, s), ("X-Pusher-Key", "X-Pusher-Signature"));
        let now = body().time_ms + 1000;
        assert_eq!(verify("key", "secret", &key, &sig, text.as_bytes(), now, 300_000), Ok(body()));
        assert_eq!(verify("key", "secret", "other", &sig, text.as_bytes(), now, 300_000), Err(WebhookError::WrongKey));
        assert_eq!(verify("key", "other", &key, &sig, text.as_bytes(), now, 300_000), Err(WebhookError::BadSignature));
        let tampered = text.replace("u1", "u2");
        assert_eq!(
            verify("key", "secret", &key, &sig, tampered.as_bytes(), now, 300_000),
            Err(WebhookError::BadSignature)
        );
        assert!(matches!(
            verify("key", "secret", &key, &sig, text.as_bytes(), now + 300_000, 300_000),
            Err(WebhookError::Stale { .. })
        ));
        let junk = b"not json";
        let junk_sig = sign("secret", junk);
        assert!(matches!(verify("key", "secret", "key", &junk_sig, junk, now, 300_000), Err(WebhookError::BadBody(_))));
    }
}
