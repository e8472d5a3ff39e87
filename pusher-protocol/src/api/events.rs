//! `POST /apps/{app_id}/events` (one event to up to 100 channels) and
//! `POST /apps/{app_id}/batch_events` (up to 10 events, one channel each): the JSON bodies the
//! SDKs send, checked into [`Trigger`] and [`BatchEvent`], and the answers.
//!
//! `data` is a string in every SDK; any other JSON value is taken as its JSON text, so the
//! subscribers always get a string, as from Pusher.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Limits;
use crate::api::channels::{ChannelAttributes, Info};
use crate::api::{ApiError, parse_json};
use crate::channel::ChannelName;
use crate::socket_id::SocketId;

/// One event to publish on one or more channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The event name.
    pub name: String,
    /// The data, as every subscriber gets it.
    pub data: String,
    /// The channels, each once, in the order given.
    pub channels: Vec<ChannelName>,
    /// The connection that does not get the event.
    pub socket_id: Option<SocketId>,
    /// The attributes to answer for each channel.
    pub info: Info,
}

/// One event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    /// The event name.
    pub name: String,
    /// The data.
    pub data: String,
    /// The channel.
    pub channel: ChannelName,
    /// The connection that does not get the event.
    pub socket_id: Option<SocketId>,
    /// The attributes to answer for the channel.
    pub info: Info,
}

#[derive(Deserialize)]
struct TriggerBody<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<BatchEventBody<'a>>,
}

#[derive(Deserialize)]
struct BatchEventBody<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    channel: String,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

impl Trigger {
    /// Checks the body of `POST /apps/{app_id}/events`.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, ApiError> {
        let b: TriggerBody<'_> = parse_json(body)?;
        let names = match (b.channels, b.channel) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give channels or channel, not both")),
            (Some(list), None) => list,
            (None, Some(one)) => vec![one],
            (None, None) => return Err(ApiError::bad_request("missing channels")),
        };
        if names.is_empty() {
            return Err(ApiError::bad_request("channels is empty"));
        }
        if names.len() > limits.max_event_channels {
            return Err(ApiError::bad_request(format!(
                "{} channels, over the limit of {} per event",
                names.len(),
                limits.max_event_channels
            )));
        }
        let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            let c = channel(n, limits).map_err(|e| ApiError::bad_request(format!("channels[{i}]: {e}")))?;
            if !channels.contains(&c) {
                channels.push(c);
            }
        }
        Ok(Self {
            name: event_name(b.name, "name", limits)?,
            data: data(b.data, "data", limits)?,
            channels,
            socket_id: socket_id(b.socket_id.as_deref(), "socket_id")?,
            info: info(b.info.as_deref(), "info")?,
        })
    }
}

impl BatchEvent {
    /// Checks the body of `POST /apps/{app_id}/batch_events`.
    pub fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<Self>, ApiError> {
        let b: BatchBody<'_> = parse_json(body)?;
        if b.batch.len() > limits.max_batch_events {
            return Err(ApiError::bad_request(format!(
                "{} events in the batch, over the limit of {}",
                b.batch.len(),
                limits.max_batch_events
            )));
        }
        b.batch
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(Self {
                    name: event_name(e.name, &format!("batch[{i}].name"), limits)?,
                    data: data(e.data, &format!("batch[{i}].data"), limits)?,
                    channel: channel(&e.channel, limits)
                        .map_err(|err| ApiError::bad_request(format!("batch[{i}].channel: {err}")))?,
                    socket_id: socket_id(e.socket_id.as_deref(), &format!("batch[{i}].socket_id"))?,
                    info: info(e.info.as_deref(), &format!("batch[{i}].info"))?,
                })
            })
            .collect()
    }
}

/// The answer to `events`: `{}`, or the attributes of each channel when `info` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TriggerAnswer {
    /// Per channel, its attributes; absent when no `info` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, ChannelAttributes>>,
}

/// The answer to `batch_events`: `{}`, or one attribute set per event, in order, when any
/// event asked for `info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchAnswer {
    /// Per event, the attributes of its channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<ChannelAttributes>>,
}

fn channel(name: &str, limits: &Limits) -> Result<ChannelName, crate::ChannelError> {
    ChannelName::parse(name, limits)
}

fn event_name(name: String, field: &str, limits: &Limits) -> Result<String, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("{field} is empty")));
    }
    if name.len() > limits.max_event_name {
        return Err(ApiError::bad_request(format!(
            "{field} is {} bytes long, over the limit of {}",
            name.len(),
            limits.max_event_name
        )));
    }
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(ApiError::bad_request(format!("{field}: event names starting with pusher: are reserved")));
    }
    Ok(name)
}

fn data(raw: &RawValue, field: &str, limits: &Limits) -> Result<String, ApiError> {
    let text = if raw.get().starts_with('"') {
        serde_json::from_str::<String>(raw.get()).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?
    } else {
        raw.get().to_owned()
    };
    if text.len() > limits.max_event_data {
        return Err(ApiError::too_large(format!(
            "{field} is {} bytes long, over the limit of {}",
            text.len(),
            limits.max_event_data
        )));
    }
    Ok(text)
}

fn socket_id(s: Option<&str>, field: &str) -> Result<Option<SocketId>, ApiError> {
    s.map(|s| s.parse().map_err(|e| ApiError::bad_request(format!("{field}: {e}")))).transpose()
}

fn info(s: Option<&str>, field: &str) -> Result<Info, ApiError> {
    s.map_or(Ok(Info::default()), |s| {
        Info::parse(s).map_err(|e| ApiError::bad_request(format!("{field}: {}", e.message)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(body: &str) -> Result<Trigger, ApiError> {
        Trigger::parse(body.as_bytes(), &Limits::default())
    }

    fn batch(body: &str) -> Result<Vec<BatchEvent>, ApiError> {
        BatchEvent::parse_batch(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn the_docs_example_body() {
        let t = trigger(r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#).unwrap();
        assert_eq!(t.name, "foo");
        assert_eq!(t.data, r#"{"some":"data"}"#);
        assert_eq!(t.channels.iter().map(ChannelName::as_str).collect::<Vec<_>>(), ["project-3"]);
        assert_eq!((t.socket_id, t.info), (None, Info::default()));
    }

    #[test]
    fn channel_socket_id_info_and_non_string_data() {
        let t = trigger(r#"{"name":"e","channel":"a","data":{"x":1},"socket_id":"12.34","info":"subscription_count"}"#)
            .unwrap();
        assert_eq!(t.channels.len(), 1);
        assert_eq!(t.data, r#"{"x":1}"#);
        assert_eq!(t.socket_id, Some(SocketId::new(12, 34)));
        assert!(t.info.subscription_count && !t.info.user_count);
        // A channel named twice gets the event once.
        assert_eq!(trigger(r#"{"name":"e","channels":["a","b","a"],"data":""}"#).unwrap().channels.len(), 2);
    }

    #[test]
    fn trigger_refusals_name_the_field_and_the_limit() {
        let err = |b: &str| trigger(b).unwrap_err();
        let hundred_and_one: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
        let e = err(&format!(r#"{{"name":"e","data":"","channels":[{}]}}"#, hundred_and_one.join(",")));
        assert_eq!((e.status, e.message.as_str()), (400, "101 channels, over the limit of 100 per event"));
        let e = err(&format!(r#"{{"name":"e","channel":"a","data":"{}"}}"#, "x".repeat(10 * 1024 + 1)));
        assert_eq!((e.status, e.message.as_str()), (413, "data is 10241 bytes long, over the limit of 10240"));
        assert_eq!(
            err(r#"{"name":"e","data":"","channels":["a b"]}"#).message,
            "channels[0]: channel name has ' ' at byte 1: only letters, digits and _ - = @ , . ; are allowed"
        );
        assert_eq!(err(r#"{"name":"e","data":"","channels":[]}"#).message, "channels is empty");
        assert_eq!(err(r#"{"name":"e","data":""}"#).message, "missing channels");
        assert_eq!(
            err(r#"{"name":"e","data":"","channel":"a","channels":["b"]}"#).message,
            "give channels or channel, not both"
        );
        assert_eq!(err(r#"{"name":"","data":"","channel":"a"}"#).message, "name is empty");
        assert_eq!(
            err(r#"{"name":"pusher:x","data":"","channel":"a"}"#).message,
            "name: event names starting with pusher: are reserved"
        );
        assert!(
            err(r#"{"name":"e","data":"","channel":"a","socket_id":"1"}"#)
                .message
                .starts_with("socket_id: invalid socket_id \"1\"")
        );
        assert_eq!(
            err(r#"{"name":"e","data":"","channel":"a","info":"user_count,bogus"}"#).message,
            "info: unknown attribute \"bogus\" (known: user_count, subscription_count, cache)"
        );
        assert!(err(r#"{"data":"","channel":"a"}"#).message.starts_with("invalid JSON body: missing field `name`"));
        assert!(
            err(r#"{"name":"e","data":"","channels":["a",1]}"#)
                .message
                .starts_with("invalid JSON body at channels[1]: invalid type: integer `1`")
        );
        assert!(
            err(r#"{"name":"e","data":"","channel":"a"} x"#)
                .message
                .starts_with("invalid JSON body: trailing characters")
        );
        assert!(err("").message.starts_with("invalid JSON body: EOF"));
    }

    #[test]
    fn batches() {
        let b = batch(r#"{"batch":[{"channel":"a","name":"e","data":"1"},{"channel":"private-b","name":"f","data":"2","socket_id":"1.2","info":"subscription_count"}]}"#).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[1].channel.as_str(), b[1].name.as_str(), b[1].data.as_str()), ("private-b", "f", "2"));
        assert_eq!(b[1].socket_id, Some(SocketId::new(1, 2)));
        assert!(batch(r#"{"batch":[]}"#).unwrap().is_empty());
        let eleven: Vec<String> = (0..11).map(|i| format!(r#"{{"channel":"c","name":"e{i}","data":""}}"#)).collect();
        assert_eq!(
            batch(&format!(r#"{{"batch":[{}]}}"#, eleven.join(","))).unwrap_err().message,
            "11 events in the batch, over the limit of 10"
        );
        assert_eq!(
            batch(r##"{"batch":[{"channel":"c","name":"e","data":""},{"channel":"#x","name":"e","data":""}]}"##)
                .unwrap_err()
                .message,
            "batch[1].channel: channel names starting with '#' are reserved (only \"#server-to-user-<user id>\" exists)"
        );
        assert!(
            batch(r#"{"batch":[{"name":"e","data":""}]}"#)
                .unwrap_err()
                .message
                .starts_with("invalid JSON body at batch[0]: missing field `channel`")
        );
        let e = batch(&format!(r#"{{"batch":[{{"channel":"c","name":"e","data":"{}"}}]}}"#, "x".repeat(10241)))
            .unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (413, "batch[0].data is 10241 bytes long, over the limit of 10240"));
    }

    #[test]
    fn answers() {
        assert_eq!(serde_json::to_string(&TriggerAnswer::default()).unwrap(), "{}");
        let mut channels = BTreeMap::new();
        channels
            .insert("presence-a".to_string(), ChannelAttributes { user_count: Some(2), subscription_count: Some(3) });
        channels.insert("b".to_string(), ChannelAttributes::default());
        assert_eq!(
            serde_json::to_string(&TriggerAnswer { channels: Some(channels) }).unwrap(),
            r#"{"channels":{"b":{},"presence-a":{"user_count":2,"subscription_count":3}}}"#
        );
        let batch = BatchAnswer {
            batch: Some(vec![
                ChannelAttributes { user_count: None, subscription_count: Some(1) },
                ChannelAttributes::default(),
            ]),
        };
        assert_eq!(serde_json::to_string(&batch).unwrap(), r#"{"batch":[{"subscription_count":1},{}]}"#);
    }
}
