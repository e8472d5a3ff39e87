//! Server → client frames, encoded exactly as the protocol document shows them: `data` is a
//! JSON-encoded string ("double encoding") for `pusher:connection_established` and every
//! `pusher_internal:` event, an object for `pusher:error`, `pusher:signin_success`,
//! `pusher:ping` and `pusher:pong` (pysher reads the error's `code` from an object).
//!
//! A channel event is encoded once per publish and the same text goes to every subscriber.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::code::ErrorCode;
use crate::socket_id::SocketId;

/// The data of a channel event.
#[derive(Debug, Clone, Copy)]
pub enum EventData<'a> {
    /// A string (what the HTTP API publishes: `data` is always a string there), sent as a JSON
    /// string.
    Text(&'a str),
    /// JSON as a client wrote it (client events), sent unchanged.
    Json(&'a RawValue),
}

/// A presence member as sent to other members.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// Its user id.
    pub user_id: &'a str,
    /// What the app's server said about it (JSON text), if anything.
    pub user_info: Option<&'a RawValue>,
}

impl<'a> From<&'a crate::presence::Member> for MemberRef<'a> {
    fn from(m: &'a crate::presence::Member) -> Self {
        Self { user_id: &m.user_id, user_info: m.user_info.as_deref() }
    }
}

/// One frame for a client.
#[derive(Debug, Clone, Copy)]
pub enum ServerFrame<'a> {
    /// The first frame of a connection: its socket id and how long (seconds) the client may
    /// stay silent before it should ping.
    ConnectionEstablished {
        /// The connection's socket id.
        socket_id: SocketId,
        /// Seconds of inactivity after which the client should send `pusher:ping`.
        activity_timeout: u32,
    },
    /// `pusher:ping`: the client answers `pusher:pong`.
    Ping,
    /// `pusher:pong`: the answer to a client's `pusher:ping`.
    Pong,
    /// `pusher:error`. With a code from 4000 to 4299 the connection is closed right after with
    /// that code; errors about one subscription or event have no code.
    Error {
        /// The code, if any.
        code: Option<ErrorCode>,
        /// What went wrong.
        message: &'a str,
    },
    /// `pusher_internal:subscription_succeeded` for a channel that is not a presence channel.
    SubscriptionSucceeded {
        /// The channel.
        channel: &'a str,
    },
    /// `pusher_internal:subscription_succeeded` for a presence channel, with its members
    /// (each user once; the caller keeps them unique).
    PresenceSubscriptionSucceeded {
        /// The channel.
        channel: &'a str,
        /// Every member of the channel, cluster-wide, the subscriber included.
        members: &'a [MemberRef<'a>],
    },
    /// `pusher_internal:member_added`: a user's first connection joined the channel.
    MemberAdded {
        /// The channel.
        channel: &'a str,
        /// The user.
        member: MemberRef<'a>,
    },
    /// `pusher_internal:member_removed`: a user's last connection left the channel.
    MemberRemoved {
        /// The channel.
        channel: &'a str,
        /// The user's id.
        user_id: &'a str,
    },
    /// `pusher:signin_success`, echoing the `user_data` that was signed in with.
    SigninSuccess {
        /// The `user_data` string of the `pusher:signin`.
        user_data: &'a str,
    },
    /// An event on a channel: published through the HTTP API, or a client event relayed.
    Event {
        /// The channel.
        channel: &'a str,
        /// The event name.
        event: &'a str,
        /// The data, if any.
        data: Option<EventData<'a>>,
        /// For client events on presence channels: the sender's user id.
        user_id: Option<&'a str>,
    },
    /// `pusher_internal:subscription_count`: how many connections are subscribed.
    SubscriptionCount {
        /// The channel.
        channel: &'a str,
        /// Its subscriptions, cluster-wide.
        count: u64,
    },
    /// `pusher:cache_miss`: a cache channel had no event to give a new subscriber.
    CacheMiss {
        /// The channel.
        channel: &'a str,
    },
}

#[derive(Serialize)]
struct Out<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Established {
    socket_id: String,
    activity_timeout: u32,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: Option<u16>,
    message: &'a str,
}

#[derive(Serialize)]
struct Presence<'a> {
    presence: PresenceList<'a>,
}

#[derive(Serialize)]
struct PresenceList<'a> {
    ids: Ids<'a>,
    hash: Hash<'a>,
    count: usize,
}

struct Ids<'a>(&'a [MemberRef<'a>]);
struct Hash<'a>(&'a [MemberRef<'a>]);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| m.user_id))
    }
}

impl Serialize for Hash<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for m in self.0 {
            map.serialize_entry(m.user_id, &m.user_info)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct MemberData<'a> {
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_info: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct SigninData<'a> {
    user_data: &'a str,
}

#[derive(Serialize)]
struct CountData {
    subscription_count: u64,
}

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventData::Text(t) => s.serialize_str(t),
            EventData::Json(raw) => raw.serialize(s),
        }
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("strings, numbers and raw JSON serialize")
}

fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: Option<D>, user_id: Option<&str>) -> String {
    json(&Out { event, channel, data, user_id })
}

impl ServerFrame<'_> {
    /// The frame's text.
    pub fn encode(&self) -> String {
        let empty = || Some(serde_json::Map::new());
        match *self {
            ServerFrame::ConnectionEstablished { socket_id, activity_timeout } => frame(
                "pusher:connection_established",
                None,
                Some(json(&Established { socket_id: socket_id.to_string(), activity_timeout })),
                None,
            ),
            ServerFrame::Ping => frame("pusher:ping", None, empty(), None),
            ServerFrame::Pong => frame("pusher:pong", None, empty(), None),
            ServerFrame::Error { code, message } => {
                frame("pusher:error", None, Some(ErrorData { code: code.map(ErrorCode::code), message }), None)
            }
            ServerFrame::SubscriptionSucceeded { channel } => {
                frame("pusher_internal:subscription_succeeded", Some(channel), Some("{}"), None)
            }
            ServerFrame::PresenceSubscriptionSucceeded { channel, members } => {
                let list = PresenceList { ids: Ids(members), hash: Hash(members), count: members.len() };
                frame(
                    "pusher_internal:subscription_succeeded",
                    Some(channel),
                    Some(json(&Presence { presence: list })),
                    None,
                )
            }
            ServerFrame::MemberAdded { channel, member } => {
                let data = MemberData { user_id: member.user_id, user_info: member.user_info };
                frame("pusher_internal:member_added", Some(channel), Some(json(&data)), None)
            }
            ServerFrame::MemberRemoved { channel, user_id } => frame(
                "pusher_internal:member_removed",
                Some(channel),
                Some(json(&MemberData { user_id, user_info: None })),
                None,
            ),
            ServerFrame::SigninSuccess { user_data } => {
                frame("pusher:signin_success", None, Some(SigninData { user_data }), None)
            }
            ServerFrame::Event { channel, event, data, user_id } => frame(event, Some(channel), data, user_id),
            ServerFrame::SubscriptionCount { channel, count } => frame(
                "pusher_internal:subscription_count",
                Some(channel),
                Some(json(&CountData { subscription_count: count })),
                None,
            ),
            ServerFrame::CacheMiss { channel } => frame::<()>("pusher:cache_miss", Some(channel), None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn connection_established_is_double_encoded() {
        let f = ServerFrame::ConnectionEstablished { socket_id: SocketId::new(123, 456), activity_timeout: 120 };
        assert_eq!(
            f.encode(),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#
        );
    }

    #[test]
    fn errors_carry_an_object_with_a_code_or_null() {
        let e = ServerFrame::Error { code: Some(ErrorCode::AppNotFound), message: "Application does not exist" };
        assert_eq!(
            e.encode(),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}"#
        );
        let e = ServerFrame::Error { code: None, message: "say \"why\"" };
        assert_eq!(e.encode(), r#"{"event":"pusher:error","data":{"code":null,"message":"say \"why\""}}"#);
    }

    #[test]
    fn ping_pong_and_signin_success() {
        assert_eq!(ServerFrame::Ping.encode(), r#"{"event":"pusher:ping","data":{}}"#);
        assert_eq!(ServerFrame::Pong.encode(), r#"{"event":"pusher:pong","data":{}}"#);
        assert_eq!(
            ServerFrame::SigninSuccess { user_data: r#"{"id":"1"}"# }.encode(),
            r#"{"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"1\"}"}}"#
        );
    }

    #[test]
    fn subscription_succeeded_plain_and_presence() {
        assert_eq!(
            ServerFrame::SubscriptionSucceeded { channel: "news" }.encode(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"news","data":"{}"}"#
        );
        let info = raw(r#"{"name":"Phil"}"#);
        let members =
            [MemberRef { user_id: "11", user_info: Some(&info) }, MemberRef { user_id: "7\"", user_info: None }];
        let text = ServerFrame::PresenceSubscriptionSucceeded { channel: "presence-a", members: &members }.encode();
        let outer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(outer["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(outer["channel"], "presence-a");
        let inner: serde_json::Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            inner,
            serde_json::json!({"presence": {"ids": ["11", "7\""], "hash": {"11": {"name": "Phil"}, "7\"": null}, "count": 2}})
        );
        assert_eq!(
            outer["data"].as_str().unwrap(),
            r#"{"presence":{"ids":["11","7\""],"hash":{"11":{"name":"Phil"},"7\"":null},"count":2}}"#
        );
    }

    #[test]
    fn members_added_and_removed() {
        let info = raw(r#"{ "name" : "Phil" }"#);
        let added = ServerFrame::MemberAdded {
            channel: "presence-a",
            member: MemberRef { user_id: "1", user_info: Some(&info) },
        };
        assert_eq!(
            added.encode(),
            r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"1\",\"user_info\":{ \"name\" : \"Phil\" }}"}"#
        );
        let bare =
            ServerFrame::MemberAdded { channel: "presence-a", member: MemberRef { user_id: "1", user_info: None } };
        assert_eq!(
            bare.encode(),
            r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"1\"}"}"#
        );
        assert_eq!(
            ServerFrame::MemberRemoved { channel: "presence-a", user_id: "1" }.encode(),
            r#"{"event":"pusher_internal:member_removed","channel":"presence-a","data":"{\"user_id\":\"1\"}"}"#
        );
    }

    #[test]
    fn channel_events_from_the_api_and_from_clients() {
        let api = ServerFrame::Event {
            channel: "news",
            event: "update",
            data: Some(EventData::Text(r#"{"a":1}"#)),
            user_id: None,
        };
        assert_eq!(api.encode(), r#"{"event":"update","channel":"news","data":"{\"a\":1}"}"#);
        let d = raw(r#"{"typing":true}"#);
        let relay = ServerFrame::Event {
            channel: "presence-a",
            event: "client-typing",
            data: Some(EventData::Json(&d)),
            user_id: Some("42"),
        };
        assert_eq!(
            relay.encode(),
            r#"{"event":"client-typing","channel":"presence-a","data":{"typing":true},"user_id":"42"}"#
        );
    }

    #[test]
    fn subscription_count_and_cache_miss() {
        assert_eq!(
            ServerFrame::SubscriptionCount { channel: "news", count: 3 }.encode(),
            r#"{"event":"pusher_internal:subscription_count","channel":"news","data":"{\"subscription_count\":3}"}"#
        );
        assert_eq!(
            ServerFrame::CacheMiss { channel: "cache-a" }.encode(),
            r#"{"event":"pusher:cache_miss","channel":"cache-a"}"#
        );
    }
}
