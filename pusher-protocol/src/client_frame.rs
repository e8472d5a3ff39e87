//! Client → server frames: one JSON object per WebSocket text message, `{"event": ..,
//! "channel"?: .., "data"?: ..}`.
//!
//! [`ClientFrame::decode`] takes the text of one message from an untrusted client and returns
//! the frame or a [`FrameError`] whose message can go back to the client as a `pusher:error`
//! (with no code: a bad frame does not end the connection). Limits are checked before anything
//! is copied: the frame's length first, then each name and the event data.
//!
//! Clients are not uniform, so the decoder accepts what the libraries in use send: `data` of a
//! `pusher:` event as an object (pusher-js, pysher) or as a string holding one; `pusher:ping`
//! with `{}`, `""` or no data; unknown `pusher:` events (newer or other servers' extensions) are
//! [`ClientFrame::Ignored`], not errors.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Limits;
use crate::channel::{ChannelError, ChannelName};

/// One frame a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `pusher:ping`: answer with `pusher:pong`.
    Ping,
    /// `pusher:pong`: the answer to a server's `pusher:ping`.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(Subscribe),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel to leave.
        channel: ChannelName,
    },
    /// `pusher:signin`: associate the connection with a user.
    Signin {
        /// `{key}:{signature}` of `socket_id::user::user_data`.
        auth: String,
        /// The user, JSON-encoded by the app's server (see [`crate::presence::parse_user_data`]).
        user_data: String,
    },
    /// A `client-` event to relay to the channel's other subscribers.
    ClientEvent(ClientEvent),
    /// A `pusher:` or `pusher_internal:` event this server does not act on; it is dropped and
    /// counted, not refused, so clients of newer protocol extensions keep working.
    Ignored {
        /// Its event name (at most [`Limits::max_event_name`] characters of it).
        event: String,
    },
}

/// A `pusher:subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The channel.
    pub channel: ChannelName,
    /// `{key}:{signature}` for private, encrypted and presence channels.
    pub auth: Option<String>,
    /// Presence channels: the member, JSON-encoded by the app's server, exactly as signed.
    pub channel_data: Option<String>,
}

/// A `client-` event.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    /// The event name, `client-` and more.
    pub event: String,
    /// The channel it is for.
    pub channel: ChannelName,
    /// Its data as the client wrote it (any JSON), relayed unchanged.
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for ClientEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
            && self.channel == other.channel
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

impl Eq for ClientEvent {}

/// Why a client frame is refused. The `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than [`Limits::max_frame`].
    #[error("message is {len} bytes long, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame is not a JSON object with a string `event`.
    #[error("invalid message: {0}")]
    Malformed(String),
    /// A `pusher:` event's `data` is missing or not what the event needs.
    #[error("invalid {event} data: {reason}")]
    BadData {
        /// The event.
        event: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A channel name is invalid.
    #[error("invalid channel: {0}")]
    Channel(#[from] ChannelError),
    /// An event name is over [`Limits::max_event_name`].
    #[error("event name is {len} bytes long, over the limit of {max}")]
    EventNameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A client event's data is over [`Limits::max_event_data`].
    #[error("client event data is {len} bytes long, over the limit of {max}")]
    DataTooLarge {
        /// Its length (JSON text).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An event that is neither `pusher:` nor `client-` (Pusher's wording).
    #[error("Client event rejected - event name must start with client-: {0:?}")]
    NotClientEvent(String),
    /// A client event without a channel.
    #[error("Client event rejected - no channel given for {0:?}")]
    NoChannel(String),
    /// A client event on a public or server-to-user channel (Pusher's wording).
    #[error("Client event rejected - only supported on private and presence channels: {0:?}")]
    ChannelNotAuthorized(String),
}

/// The envelope, borrowed from the frame's text.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Serialize)]
struct SubscribeData {
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel_data: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct UnsubscribeData {
    channel: String,
}

#[derive(Deserialize, Serialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

impl ClientFrame {
    /// Decodes one client message.
    pub fn decode(text: &str, limits: &Limits) -> Result<Self, FrameError> {
        if text.len() > limits.max_frame {
            return Err(FrameError::TooLarge { len: text.len(), max: limits.max_frame });
        }
        if !text.trim_start().starts_with('{') {
            return Err(FrameError::Malformed("expected a JSON object".into()));
        }
        let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
        let event = env.event.as_ref();
        let channel = |name: &str| ChannelName::parse(name, limits).map_err(FrameError::Channel);
        Ok(match event {
            "pusher:ping" => ClientFrame::Ping,
            "pusher:pong" => ClientFrame::Pong,
            "pusher:subscribe" => {
                let d: SubscribeData = data("pusher:subscribe", env.data)?;
                ClientFrame::Subscribe(Subscribe {
                    channel: channel(&d.channel)?,
                    auth: d.auth,
                    channel_data: d.channel_data,
                })
            }
            "pusher:unsubscribe" => {
                let d: UnsubscribeData = data("pusher:unsubscribe", env.data)?;
                ClientFrame::Unsubscribe { channel: channel(&d.channel)? }
            }
            "pusher:signin" => {
                let d: SigninData = data("pusher:signin", env.data)?;
                ClientFrame::Signin { auth: d.auth, user_data: d.user_data }
            }
            _ if event.starts_with("pusher:") || event.starts_with("pusher_internal:") => {
                ClientFrame::Ignored { event: event.chars().take(limits.max_event_name).collect() }
            }
            _ => {
                let cut = || event.chars().take(limits.max_event_name).collect::<String>();
                if !event.starts_with("client-") {
                    return Err(FrameError::NotClientEvent(cut()));
                }
                if event.len() > limits.max_event_name {
                    return Err(FrameError::EventNameTooLong { len: event.len(), max: limits.max_event_name });
                }
                let name = env.channel.ok_or_else(|| FrameError::NoChannel(cut()))?;
                let channel = channel(&name)?;
                if !channel.kind().allows_client_events() {
                    return Err(FrameError::ChannelNotAuthorized(channel.into_string()));
                }
                if let Some(d) = env.data
                    && d.get().len() > limits.max_event_data
                {
                    return Err(FrameError::DataTooLarge { len: d.get().len(), max: limits.max_event_data });
                }
                ClientFrame::ClientEvent(ClientEvent {
                    event: event.to_owned(),
                    channel,
                    data: env.data.map(RawValue::to_owned),
                })
            }
        })
    }

    /// The frame as a client sends it (what tests and Rust clients write; decoding it gives
    /// the frame back).
    pub fn encode(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a, D: Serialize> {
            event: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<D>,
        }
        fn json<D: Serialize>(event: &str, channel: Option<&str>, data: Option<D>) -> String {
            serde_json::to_string(&Out { event, channel, data }).expect("strings and raw JSON serialize")
        }
        let empty = Some(serde_json::Map::new());
        match self {
            ClientFrame::Ping => json("pusher:ping", None, empty),
            ClientFrame::Pong => json("pusher:pong", None, empty),
            ClientFrame::Subscribe(s) => json(
                "pusher:subscribe",
                None,
                Some(SubscribeData {
                    channel: s.channel.to_string(),
                    auth: s.auth.clone(),
                    channel_data: s.channel_data.clone(),
                }),
            ),
            ClientFrame::Unsubscribe { channel } => {
                json("pusher:unsubscribe", None, Some(UnsubscribeData { channel: channel.to_string() }))
            }
            ClientFrame::Signin { auth, user_data } => {
                json("pusher:signin", None, Some(SigninData { auth: auth.clone(), user_data: user_data.clone() }))
            }
            ClientFrame::ClientEvent(e) => json(&e.event, Some(e.channel.as_str()), e.data.as_deref()),
            ClientFrame::Ignored { event } => json::<()>(event, None, None),
        }
    }
}

/// A `pusher:` event's data: an object, or a string holding one.
fn data<T: DeserializeOwned>(event: &'static str, raw: Option<&RawValue>) -> Result<T, FrameError> {
    let bad = |reason: String| FrameError::BadData { event, reason };
    let raw = raw.ok_or_else(|| bad("no data".into()))?;
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&inner).map_err(|e| bad(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<ClientFrame, FrameError> {
        ClientFrame::decode(s, &Limits::default())
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s, &Limits::default()).unwrap()
    }

    #[test]
    fn pings_and_pongs_in_every_form_clients_send() {
        for s in [
            r#"{"event":"pusher:ping","data":{}}"#,
            r#"{"event":"pusher:ping","data":""}"#,
            r#"{"event":"pusher:ping"}"#,
            r#" {"event":"pusher:ping","data":null} "#,
        ] {
            assert_eq!(decode(s), Ok(ClientFrame::Ping), "{s}");
        }
        assert_eq!(decode(r#"{"event":"pusher:pong","data":{}}"#), Ok(ClientFrame::Pong));
    }

    #[test]
    fn subscribe_as_pusher_js_sends_it() {
        let f = decode(
            r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\"user_id\":1}","channel":"presence-a"}}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe(Subscribe {
                channel: ch("presence-a"),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":1}"#.into()),
            })
        );
        // Public: no auth; null fields are absent fields; data may come as a JSON string.
        let public = ClientFrame::Subscribe(Subscribe { channel: ch("news"), auth: None, channel_data: None });
        assert_eq!(decode(r#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#), Ok(public.clone()));
        assert_eq!(decode(r#"{"event":"pusher:subscribe","data":{"channel":"news","auth":null}}"#), Ok(public.clone()));
        assert_eq!(decode(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"news\"}"}"#), Ok(public));
    }

    #[test]
    fn unsubscribe_and_signin() {
        assert_eq!(
            decode(r#"{"event":"pusher:unsubscribe","data":{"channel":"news"}}"#),
            Ok(ClientFrame::Unsubscribe { channel: ch("news") })
        );
        assert_eq!(
            decode(r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#),
            Ok(ClientFrame::Signin { auth: "k:s".into(), user_data: r#"{"id":"1"}"#.into() })
        );
    }

    #[test]
    fn client_events_keep_their_data_as_written() {
        let f = decode(r#"{"event":"client-typing","channel":"private-room","data":{ "who" : "ann" }}"#).unwrap();
        let ClientFrame::ClientEvent(e) = f else { panic!("{f:?}") };
        assert_eq!((e.event.as_str(), e.channel.as_str()), ("client-typing", "private-room"));
        assert_eq!(e.data.unwrap().get(), r#"{ "who" : "ann" }"#);
        let f = decode(r#"{"event":"client-x","channel":"presence-room","data":"text"}"#).unwrap();
        assert!(matches!(f, ClientFrame::ClientEvent(e) if e.data.as_ref().unwrap().get() == r#""text""#));
    }

    #[test]
    fn client_events_are_refused_where_pusher_refuses_them() {
        let err = |s: &str| decode(s).unwrap_err();
        assert_eq!(
            err(r#"{"event":"client-x","channel":"news","data":1}"#),
            FrameError::ChannelNotAuthorized("news".into())
        );
        assert_eq!(
            err(r##"{"event":"client-x","channel":"#server-to-user-1","data":1}"##),
            FrameError::ChannelNotAuthorized("#server-to-user-1".into())
        );
        assert_eq!(
            err(r#"{"event":"my-event","channel":"private-a","data":1}"#),
            FrameError::NotClientEvent("my-event".into())
        );
        assert_eq!(err(r#"{"event":"client-x","data":1}"#), FrameError::NoChannel("client-x".into()));
        let long = format!(r#"{{"event":"client-{}","channel":"private-a"}}"#, "x".repeat(200));
        assert_eq!(err(&long), FrameError::EventNameTooLong { len: 207, max: 200 });
        let big = format!(r#"{{"event":"client-x","channel":"private-a","data":"{}"}}"#, "x".repeat(10 * 1024));
        assert_eq!(err(&big), FrameError::DataTooLarge { len: 10 * 1024 + 2, max: 10 * 1024 });
        assert_eq!(
            err(r#"{"event":"client-x","channel":"private-a b"}"#).to_string(),
            "invalid channel: channel name has ' ' at byte 9: only letters, digits and _ - = @ , . ; are allowed"
        );
    }

    #[test]
    fn unknown_pusher_events_are_ignored_not_refused() {
        assert_eq!(
            decode(r#"{"event":"pusher:enable_delta_compression","data":{}}"#),
            Ok(ClientFrame::Ignored { event: "pusher:enable_delta_compression".into() })
        );
        assert_eq!(
            decode(r#"{"event":"pusher_internal:member_added","channel":"x","data":"{}"}"#),
            Ok(ClientFrame::Ignored { event: "pusher_internal:member_added".into() })
        );
    }

    #[test]
    fn garbage_gets_a_precise_error() {
        let msg = |s: &str| decode(s).unwrap_err().to_string();
        assert_eq!(msg("ping"), "invalid message: expected a JSON object");
        assert_eq!(msg("[1]"), "invalid message: expected a JSON object");
        assert_eq!(msg(""), "invalid message: expected a JSON object");
        assert!(msg(r#"{"data":{}}"#).starts_with("invalid message: missing field `event`"));
        assert!(msg(r#"{"event":5}"#).starts_with("invalid message: invalid type: integer `5`, expected a string"));
        assert!(msg(r#"{"event":"pusher:ping""#).starts_with("invalid message: EOF while parsing"));
        assert!(msg(r#"{"event":"a","event":"b"}"#).contains("duplicate field `event`"));
        assert_eq!(msg(r#"{"event":"pusher:subscribe"}"#), "invalid pusher:subscribe data: no data");
        assert!(
            msg(r#"{"event":"pusher:subscribe","data":{}}"#)
                .starts_with("invalid pusher:subscribe data: missing field `channel`")
        );
        assert!(
            msg(r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","channel_data":{"user_id":1}}}"#)
                .starts_with("invalid pusher:subscribe data: invalid type: map, expected a string"),
        );
        assert!(
            msg(r#"{"event":"pusher:signin","data":"not json"}"#).starts_with("invalid pusher:signin data: expected")
        );
        let limits = Limits::default();
        let huge = format!(r#"{{"event":"pusher:ping","data":"{}"}}"#, "x".repeat(limits.max_frame));
        assert_eq!(decode(&huge), Err(FrameError::TooLarge { len: huge.len(), max: limits.max_frame }));
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let deep = format!("{}{}", "[".repeat(15_000), "]".repeat(15_000));
        let f = decode(&format!(r#"{{"event":"client-x","channel":"private-a","data":{{"a":{deep}}}}}"#));
        assert!(matches!(f, Err(FrameError::DataTooLarge { .. })), "{f:?}");
        let f = decode(&format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"a","extra":{deep}}}}}"#));
        assert!(matches!(f, Ok(ClientFrame::Subscribe(_))), "{f:?}");
        let f = decode(&format!(r#"{{"event":"pusher:ping","extra":{deep}}}"#));
        assert_eq!(f, Ok(ClientFrame::Ping));
    }

    #[test]
    fn encode_then_decode_gives_the_frame_back() {
        let frames = [
            ClientFrame::Ping,
            ClientFrame::Pong,
            ClientFrame::Subscribe(Subscribe {
                channel: ch("presence-a"),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":"\u00e9\"1"}"#.into()),
            }),
            ClientFrame::Subscribe(Subscribe { channel: ch("news"), auth: None, channel_data: None }),
            ClientFrame::Unsubscribe { channel: ch("news") },
            ClientFrame::Signin { auth: "k:s".into(), user_data: r#"{"id":"1"}"#.into() },
            ClientFrame::ClientEvent(ClientEvent {
                event: "client-x".into(),
                channel: ch("private-a"),
                data: Some(RawValue::from_string(r#"{"a":[1,2.5,"\n"]}"#.into()).unwrap()),
            }),
            ClientFrame::ClientEvent(ClientEvent { event: "client-x".into(), channel: ch("private-a"), data: None }),
            ClientFrame::Ignored { event: "pusher:whatever".into() },
        ];
        for f in frames {
            assert_eq!(decode(&f.encode()), Ok(f.clone()), "{}", f.encode());
        }
        assert_eq!(ClientFrame::Ping.encode(), r#"{"event":"pusher:ping","data":{}}"#);
    }
}
